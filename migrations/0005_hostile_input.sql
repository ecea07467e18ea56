-- The database refuses what the daemon cannot hold. Analysts write `watchlist` by hand, so every
-- value the daemon later computes with is bounded here: timestamps are finite and before year
-- 10000 (chrono and `now() + interval` overflow past that), intervals and counters have ceilings
-- far above any real use, so `counter + 1` and `now() + poll_interval` can never overflow.
--
-- Rows that already break a rule are repaired first (the smallest change that makes them valid),
-- so the migration applies to any existing database.

UPDATE watchlist SET next_due_at = now()
WHERE NOT isfinite(next_due_at) OR next_due_at >= '10000-01-01';
UPDATE watchlist SET added_at = now()
WHERE NOT isfinite(added_at) OR added_at >= '10000-01-01';
UPDATE watchlist SET last_polled_at = NULL
WHERE NOT isfinite(last_polled_at) OR last_polled_at >= '10000-01-01';
UPDATE watchlist SET last_success_at = NULL
WHERE NOT isfinite(last_success_at) OR last_success_at >= '10000-01-01';
UPDATE watchlist SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
WHERE NOT isfinite(lease_expires_at) OR lease_expires_at >= '10000-01-01';
UPDATE watchlist SET poll_interval = interval '10 years' WHERE poll_interval > interval '10 years';
UPDATE watchlist SET consecutive_failures = 1000000 WHERE consecutive_failures > 1000000;
UPDATE watchlist SET not_found_count = 0 WHERE not_found_count < 0;
UPDATE watchlist SET not_found_count = 1000000 WHERE not_found_count > 1000000;

ALTER TABLE watchlist
    ADD CONSTRAINT watchlist_next_due_at_finite_before_year_10000
        CHECK (isfinite(next_due_at) AND next_due_at < '10000-01-01'),
    ADD CONSTRAINT watchlist_added_at_finite_before_year_10000
        CHECK (isfinite(added_at) AND added_at < '10000-01-01'),
    ADD CONSTRAINT watchlist_last_polled_at_finite_before_year_10000
        CHECK (isfinite(last_polled_at) AND last_polled_at < '10000-01-01'),
    ADD CONSTRAINT watchlist_last_success_at_finite_before_year_10000
        CHECK (isfinite(last_success_at) AND last_success_at < '10000-01-01'),
    ADD CONSTRAINT watchlist_lease_expires_at_finite_before_year_10000
        CHECK (isfinite(lease_expires_at) AND lease_expires_at < '10000-01-01'),
    ADD CONSTRAINT watchlist_poll_interval_at_most_10_years
        CHECK (poll_interval <= interval '10 years'),
    ADD CONSTRAINT watchlist_consecutive_failures_at_most_1000000
        CHECK (consecutive_failures <= 1000000),
    ADD CONSTRAINT watchlist_not_found_count_between_0_and_1000000
        CHECK (not_found_count BETWEEN 0 AND 1000000);

-- A paid response that the store could not take (a constraint, an encoding Postgres refuses, an
-- overflow) is still archived, as `store_error`, with its body as text: every credit spent leaves a
-- trace, and the entry backs off like any other failure instead of being bought again per lease.
ALTER TABLE fetches DROP CONSTRAINT fetches_outcome_known;
ALTER TABLE fetches ADD CONSTRAINT fetches_outcome_known CHECK (outcome IN (
    'ok', 'rate_limited', 'http_error', 'timeout', 'network_error',
    'api_error', 'invalid_payload', 'auth_error', 'store_error'));

COMMENT ON COLUMN fetches.outcome IS 'ok | rate_limited (429) | http_error (other non-2xx, redirects included) | timeout | network_error (refused, reset, truncated transfer) | api_error (code != 0) | invalid_payload (unparseable or unexpected body) | auth_error (401/403) | store_error (a valid-looking response the database refused; body kept as text)';
