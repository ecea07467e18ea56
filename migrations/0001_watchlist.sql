-- The watchlist: what analysts want tracked. Analysts write to it with plain SQL, so every rule the
-- daemon relies on is a named constraint here, and its name says the rule.
--
--   INSERT INTO watchlist (clip_id, region) VALUES ('6703723351497508865', 'US');
--
-- is all it takes; everything else has a default.

CREATE TABLE watchlist (
    clip_id              text        NOT NULL,
    region               text        NOT NULL,
    -- NULL: soundtrend picks 7, 30 or 120 per poll so that no trend day is missed.
    period               smallint,
    poll_interval        interval    NOT NULL DEFAULT '1 day',
    enabled              boolean     NOT NULL DEFAULT true,
    added_at             timestamptz NOT NULL DEFAULT now(),
    next_due_at          timestamptz NOT NULL DEFAULT now(),
    last_polled_at       timestamptz,
    last_success_at      timestamptz,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    last_error           text,
    -- How many polls in a row the provider said the clip does not exist; past the configured
    -- limit the entry is disabled and disabled_reason says why.
    not_found_count      integer     NOT NULL DEFAULT 0,
    disabled_reason      text,
    -- Lease: a worker that claimed the entry owns it until lease_expires_at. Results are written
    -- only while lease_token still matches, so a worker that lost its lease cannot write.
    lease_owner          text,
    lease_token          uuid,
    lease_expires_at     timestamptz,

    PRIMARY KEY (clip_id, region),
    CONSTRAINT watchlist_clip_id_digits_only
        CHECK (clip_id ~ '^[0-9]{1,32}$'),
    -- ISO 3166-1 alpha-2, the region codes TikTok uses. A single regular expression rather than an
    -- array or a function: Postgres re-reads CHECK expressions for every statement that writes the
    -- table, and one string constant is the cheapest thing to re-read (see docs/benchmarks.md).
    CONSTRAINT watchlist_region_iso3166_alpha2_upper_case
        CHECK (region ~ '^(?:AD|AE|AF|AG|AI|AL|AM|AO|AQ|AR|AS|AT|AU|AW|AX|AZ|BA|BB|BD|BE|BF|BG|BH|'
                       'BI|BJ|BL|BM|BN|BO|BQ|BR|BS|BT|BV|BW|BY|BZ|CA|CC|CD|CF|CG|CH|CI|CK|CL|CM|CN|'
                       'CO|CR|CU|CV|CW|CX|CY|CZ|DE|DJ|DK|DM|DO|DZ|EC|EE|EG|EH|ER|ES|ET|FI|FJ|FK|FM|'
                       'FO|FR|GA|GB|GD|GE|GF|GG|GH|GI|GL|GM|GN|GP|GQ|GR|GS|GT|GU|GW|GY|HK|HM|HN|HR|'
                       'HT|HU|ID|IE|IL|IM|IN|IO|IQ|IR|IS|IT|JE|JM|JO|JP|KE|KG|KH|KI|KM|KN|KP|KR|KW|'
                       'KY|KZ|LA|LB|LC|LI|LK|LR|LS|LT|LU|LV|LY|MA|MC|MD|ME|MF|MG|MH|MK|ML|MM|MN|MO|'
                       'MP|MQ|MR|MS|MT|MU|MV|MW|MX|MY|MZ|NA|NC|NE|NF|NG|NI|NL|NO|NP|NR|NU|NZ|OM|PA|'
                       'PE|PF|PG|PH|PK|PL|PM|PN|PR|PS|PT|PW|PY|QA|RE|RO|RS|RU|RW|SA|SB|SC|SD|SE|SG|'
                       'SH|SI|SJ|SK|SL|SM|SN|SO|SR|SS|ST|SV|SX|SY|SZ|TC|TD|TF|TG|TH|TJ|TK|TL|TM|TN|'
                       'TO|TR|TT|TV|TW|TZ|UA|UG|UM|US|UY|UZ|VA|VC|VE|VG|VI|VN|VU|WF|WS|YE|YT|ZA|ZM|'
                       'ZW)$'),
    CONSTRAINT watchlist_period_7_30_or_120_or_null
        CHECK (period IN (7, 30, 120)),
    CONSTRAINT watchlist_poll_interval_at_least_1_minute
        CHECK (poll_interval >= interval '1 minute'),
    CONSTRAINT watchlist_consecutive_failures_not_negative
        CHECK (consecutive_failures >= 0)
);

COMMENT ON TABLE watchlist IS 'Sounds to track: one row per (clip_id, region). Insert with SQL; soundtrend polls each row when next_due_at has passed.';
COMMENT ON COLUMN watchlist.region IS 'ISO 3166-1 alpha-2 code. Lower case and surrounding spaces are accepted and stored upper-cased.';
COMMENT ON COLUMN watchlist.period IS 'Trend window in days: 7, 30 or 120; NULL lets soundtrend choose the smallest window that covers the time since the last successful poll.';

-- Analysts type 'us' or ' US '; store the canonical form instead of refusing it. Runs before the
-- CHECK constraints, so 'xx' is still refused by watchlist_region_iso3166_alpha2_upper_case.
CREATE FUNCTION soundtrend_watchlist_canonicalize() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.region := upper(btrim(NEW.region));
    NEW.clip_id := btrim(NEW.clip_id);
    RETURN NEW;
END
$$;

CREATE TRIGGER watchlist_canonicalize
    BEFORE INSERT OR UPDATE OF clip_id, region ON watchlist
    FOR EACH ROW EXECUTE FUNCTION soundtrend_watchlist_canonicalize();

-- A new or re-enabled row wakes running daemons at once. A hint only: notifications are lost
-- across reconnects, so the periodic tick stays the source of truth.
CREATE FUNCTION soundtrend_watchlist_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('soundtrend_watchlist', NEW.clip_id || ':' || NEW.region);
    RETURN NULL;
END
$$;

CREATE TRIGGER watchlist_notify_insert
    AFTER INSERT ON watchlist
    FOR EACH ROW EXECUTE FUNCTION soundtrend_watchlist_notify();

CREATE TRIGGER watchlist_notify_enable
    AFTER UPDATE OF enabled, next_due_at ON watchlist
    FOR EACH ROW WHEN (NEW.enabled AND NEW.next_due_at <= now()
                       AND (NOT OLD.enabled OR OLD.next_due_at > now()))
    EXECUTE FUNCTION soundtrend_watchlist_notify();

-- The claim query: enabled rows whose due time has passed, oldest first.
CREATE INDEX watchlist_due_idx ON watchlist (next_due_at) WHERE enabled;
-- Rescue of expired leases.
CREATE INDEX watchlist_lease_idx ON watchlist (lease_expires_at) WHERE lease_token IS NOT NULL;
