-- Claims up to $1 due entries for owner $2 under a lease of $3 seconds, oldest due first, among
-- the entries that may be polled with one of the providers $4 (usable now): those that follow the
-- order (provider NULL) and those pinned to one of them.
-- Kept in its own file so the scale benchmark can EXPLAIN exactly what the worker runs.
WITH due AS (
    SELECT clip_id, region FROM watchlist
    WHERE enabled AND next_due_at <= now()
      -- A live lease is never taken over, even when an analyst made the entry due (resume, an
      -- UPDATE of next_due_at): its holder may be mid-request.
      AND (lease_token IS NULL OR lease_expires_at <= now())
      AND (provider IS NULL OR provider = ANY($4::text[]))
      AND cardinality($4::text[]) > 0
    ORDER BY next_due_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE watchlist w SET
    lease_owner = $2, lease_token = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => $3),
    next_due_at = now() + make_interval(secs => $3)
FROM due WHERE w.clip_id = due.clip_id AND w.region = due.region
-- Analysts write these columns by hand, so nothing read here may be able to make the decode
-- fail or panic: timestamps outside what chrono holds read as NULL (the constraints of migration
-- 0005 already refuse them; this is the second line of defence for a row written before it).
RETURNING w.clip_id AS "clip_id: ClipId", w.region AS "region: Region",
    w.period AS "period: Period",
    extract(epoch FROM w.poll_interval)::float8 AS "poll_interval_secs!",
    CASE WHEN isfinite(w.last_success_at) AND w.last_success_at < '10000-01-01'
         THEN w.last_success_at END AS last_success_at,
    w.consecutive_failures, w.lease_token AS "lease_token?",
    w.provider AS "provider: ProviderKind"
