-- Every paid answer is paid once and kept.
--
-- The statement that books an attempt's credits in `credit_usage` now also inserts its `fetches`
-- row, as `pending`, in the same transaction; the attempt's result completes that row. So every
-- credit booked has its archived attempt, even when the process dies with the request in flight
-- (the maintenance job turns such rows into `abandoned` once they are clearly orphaned), and for
-- any UTC day sum(fetches.credits) equals credit_usage.credits_used.

ALTER TABLE fetches DROP CONSTRAINT fetches_outcome_known;
ALTER TABLE fetches ADD CONSTRAINT fetches_outcome_known CHECK (outcome IN (
    'ok', 'rate_limited', 'http_error', 'timeout', 'network_error',
    'api_error', 'invalid_payload', 'auth_error', 'store_error', 'pending', 'abandoned'));

COMMENT ON COLUMN fetches.outcome IS 'ok | rate_limited (429) | http_error (other non-2xx, redirects included) | timeout | network_error (refused, reset, truncated transfer) | api_error (code != 0) | invalid_payload (unparseable, unexpected or meaningless body) | auth_error (401/403) | store_error (a valid-looking response the database refused; body kept as text) | pending (credits booked, request in flight) | abandoned (the process ended with the request in flight; the provider may have answered)';

-- The answer arrived after the entry's lease had passed to another worker (or the entry was
-- removed): its data is stored all the same (idempotently), only the watchlist bookkeeping is left
-- to the lease holder. Such an answer may have been bought twice.
ALTER TABLE fetches ADD COLUMN lease_lost boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN fetches.lease_lost IS 'true: the answer came back after this worker lost the lease; data stored, bookkeeping left to the holder. Count these to see credits possibly spent twice.';

-- What validation dropped from an otherwise valid response (see the README, "Validation rules").
ALTER TABLE fetches ADD COLUMN warnings text[];
COMMENT ON COLUMN fetches.warnings IS 'Parts of the response that validation dropped, one sentence each; NULL when none.';

COMMENT ON COLUMN fetches.credits IS 'Credits this attempt cost: the configured price when the request reached the provider, 0 when it never did (DNS, refused connection, TLS failure). sum(credits) per UTC day equals credit_usage.credits_used.';

-- Finding orphaned pending rows without scanning the archive.
CREATE INDEX fetches_pending_idx ON fetches (requested_at) WHERE outcome = 'pending';
