-- One row per API attempt, successful or not: the audit log of what was paid for and the raw
-- archive every derived table can be rebuilt from (`soundtrend replay`) without spending credits.

CREATE TABLE fetches (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clip_id       text        NOT NULL,
    region        text        NOT NULL,
    period        smallint    NOT NULL,
    provider      text        NOT NULL,
    requested_at  timestamptz NOT NULL,
    duration_ms   integer     NOT NULL,
    -- NULL when no HTTP response arrived (timeout, refused or reset connection).
    http_status   smallint,
    outcome       text        NOT NULL,
    error         text,
    -- The provider's business code and message when the body had them.
    api_code      bigint,
    api_message   text,
    request_id    text,
    -- 1 for the first try of a poll, 2 for its first retry, ...
    attempt       smallint    NOT NULL DEFAULT 1,
    credits       smallint    NOT NULL DEFAULT 0,
    -- The raw body: jsonb when it parses as JSON, text otherwise. Both NULL when there was no body
    -- or retention pruned it (body_pruned_at says when).
    body_json     jsonb,
    body_text     text,
    body_pruned_at timestamptz,

    CONSTRAINT fetches_provider_known CHECK (provider IN ('keyapi', 'echotik')),
    CONSTRAINT fetches_period_7_30_or_120 CHECK (period IN (7, 30, 120)),
    CONSTRAINT fetches_outcome_known CHECK (outcome IN (
        'ok', 'rate_limited', 'http_error', 'timeout', 'network_error',
        'api_error', 'invalid_payload', 'auth_error')),
    CONSTRAINT fetches_body_json_or_text CHECK (body_json IS NULL OR body_text IS NULL)
);

COMMENT ON TABLE fetches IS 'One row per API attempt with its outcome and raw response body.';
COMMENT ON COLUMN fetches.outcome IS 'ok | rate_limited (429) | http_error (other non-2xx) | timeout | network_error (refused, reset, truncated transfer) | api_error (code != 0) | invalid_payload (unparseable or unexpected body) | auth_error (401/403)';

CREATE INDEX fetches_clip_region_time_idx ON fetches (clip_id, region, requested_at DESC);
CREATE INDEX fetches_requested_at_idx ON fetches (requested_at);

-- Raw bodies are a few KiB of JSON each and get TOAST-compressed; lz4 costs a fraction of the CPU
-- of the default pglz. Servers built without lz4 keep the default.
DO $$
BEGIN
    ALTER TABLE fetches ALTER COLUMN body_json SET COMPRESSION lz4;
    ALTER TABLE fetches ALTER COLUMN body_text SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value OR undefined_object THEN
    RAISE NOTICE 'lz4 is not available; raw bodies use the default compression';
END
$$;
