-- Two providers, one pipeline: a per-entry provider choice, and each provider's health shared by
-- every instance (a circuit breaker and rejected credentials) beside its quota row.

-- NULL: follow providers.order. A named provider is the only one that entry is polled with.
ALTER TABLE watchlist ADD COLUMN provider text;
ALTER TABLE watchlist ADD CONSTRAINT watchlist_provider_keyapi_echotik_or_null
    CHECK (provider IN ('keyapi', 'echotik'));
COMMENT ON COLUMN watchlist.provider IS 'keyapi or echotik: poll this entry only with that provider. NULL (the default): the first usable provider in providers.order.';

-- Analysts type 'KeyAPI' or ' echotik '; store the canonical form (the CHECK still refuses others).
CREATE OR REPLACE FUNCTION soundtrend_watchlist_canonicalize() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.region := upper(btrim(NEW.region));
    NEW.clip_id := btrim(NEW.clip_id);
    NEW.provider := nullif(lower(btrim(NEW.provider)), '');
    RETURN NEW;
END
$$;

DROP TRIGGER watchlist_canonicalize ON watchlist;
CREATE TRIGGER watchlist_canonicalize
    BEFORE INSERT OR UPDATE OF clip_id, region, provider ON watchlist
    FOR EACH ROW EXECUTE FUNCTION soundtrend_watchlist_canonicalize();

-- The circuit breaker. Transport failures and 5xx answers count up consecutive_failures; at the
-- configured number the provider is down until open_until, then one request (the probe, fenced by
-- probe_until) may go; a success anywhere resets everything.
ALTER TABLE provider_quota
    ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0,
    -- How many times in a row the breaker opened (each failed probe doubles the rest).
    ADD COLUMN opens integer NOT NULL DEFAULT 0,
    ADD COLUMN open_until timestamptz,
    ADD COLUMN probe_until timestamptz,
    ADD COLUMN last_failure_at timestamptz,
    ADD COLUMN last_failure text,
    ADD COLUMN last_success_at timestamptz,
    -- Which credentials were rejected (a SHA-256 prefix, never the secret): an instance started
    -- with other credentials may try again.
    ADD COLUMN auth_key text,
    ADD CONSTRAINT provider_quota_counts_not_negative
        CHECK (consecutive_failures >= 0 AND opens >= 0);

COMMENT ON TABLE provider_quota IS 'One row per provider, shared by every instance: the rate limiter (tat, paused_until), the circuit breaker (consecutive_failures, open_until, probe_until) and rejected credentials (auth_failed_at).';
COMMENT ON COLUMN provider_quota.open_until IS 'Set while the circuit breaker is open (provider down): no request before this; then one probe.';
COMMENT ON COLUMN provider_quota.auth_key IS 'Fingerprint of the credentials the provider rejected; the provider stays out for instances with those credentials until a success or a key change.';
