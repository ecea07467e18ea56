-- Trend history analysts can trust: every window kept (trend_observations), one stitched index per
-- (clip_id, region) (trend_index), and the views analysts query (sound_daily, sound_rising,
-- audience_country_share, audience_interest_share).

-- Every point of every successful window, append-only. The provider's values are relative to their
-- own window (its maximum is 1), so a value is only meaningful next to the rest of its window: this
-- table keeps whole windows, where trend_points keeps only the newest value per day.
-- Partitioned by month of `ts`; partitions are created ahead by trend_observations_ensure_partitions
-- (called below and by the daemon's daily maintenance job); the default partition only catches
-- what falls outside them and is emptied into the right partition when that partition is created.
CREATE TABLE trend_observations (
    fetch_id     bigint           NOT NULL,
    clip_id      text             NOT NULL,
    region       text             NOT NULL,
    period       smallint         NOT NULL,
    ts           timestamptz      NOT NULL,
    value        double precision NOT NULL,
    observed_at  timestamptz      NOT NULL,
    PRIMARY KEY (fetch_id, ts),
    CONSTRAINT trend_observations_fetch_fk FOREIGN KEY (fetch_id) REFERENCES fetches (id),
    CONSTRAINT trend_observations_period_7_30_or_120 CHECK (period IN (7, 30, 120))
) PARTITION BY RANGE (ts);

COMMENT ON TABLE trend_observations IS 'Every daily point of every successful window, append-only (partitioned by month of ts). value is relative to its own window (the window''s maximum is 1, rounded to 2 decimals): compare values only within one fetch_id.';
COMMENT ON COLUMN trend_observations.value IS 'The provider''s value, relative to the window of fetch_id (max 1); carries ±0.005 rounding.';
COMMENT ON COLUMN trend_observations.period IS 'Window length in days (7, 30 or 120).';

CREATE INDEX trend_observations_pair_idx ON trend_observations (clip_id, region, fetch_id);

CREATE TABLE trend_observations_default PARTITION OF trend_observations DEFAULT;

-- Creates the monthly partitions of trend_observations for `months` months from the month of
-- `first_month` (UTC), skipping those that exist; rows the default partition holds for a new
-- month move into it. Returns how many partitions it created.
CREATE FUNCTION trend_observations_ensure_partitions(first_month date, months integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    created integer := 0;
    month_start date;
    lo timestamptz;
    hi timestamptz;
    name text;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        month_start := (date_trunc('month', first_month) + make_interval(months => i))::date;
        name := 'trend_observations_' || to_char(month_start, 'YYYY_MM');
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        lo := month_start::timestamp AT TIME ZONE 'UTC';
        hi := (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        EXECUTE format('CREATE TABLE %I (LIKE trend_observations INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
        EXECUTE format('WITH moved AS (DELETE FROM trend_observations_default WHERE ts >= %L AND ts < %L RETURNING *)
                        INSERT INTO %I SELECT * FROM moved', lo, hi, name);
        EXECUTE format('ALTER TABLE trend_observations ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       name, lo, hi);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

COMMENT ON FUNCTION trend_observations_ensure_partitions(date, integer) IS 'Creates missing monthly partitions of trend_observations (UTC months) from first_month for `months` months; returns how many it created.';

-- A year back (a replay of old fetches, 120-day windows) and three months ahead.
SELECT trend_observations_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 365, 16);

-- The stitched series: one row per (clip_id, region, day) for every day any window covered. Levels
-- are comparable across every day of one segment; a new segment starts where a window could not be
-- linked to the history (see the README, "Trend history for analysts").
CREATE TABLE trend_index (
    clip_id      text             NOT NULL,
    region       text             NOT NULL,
    day          date             NOT NULL,
    index_value  double precision NOT NULL,
    index_low    double precision NOT NULL,
    index_high   double precision NOT NULL,
    segment      integer          NOT NULL,
    windows      integer          NOT NULL,
    fetch_id     bigint           NOT NULL REFERENCES fetches (id),
    changed_by   bigint           NOT NULL REFERENCES fetches (id),
    PRIMARY KEY (clip_id, region, day),
    CONSTRAINT trend_index_band CHECK (index_low <= index_value AND index_value <= index_high),
    CONSTRAINT trend_index_0_100 CHECK (index_value BETWEEN 0 AND 100),
    CONSTRAINT trend_index_windows_positive CHECK (windows > 0)
);

COMMENT ON TABLE trend_index IS 'The stitched daily series per (clip_id, region): every window the provider returned, fitted onto one scale. Comparable across days of one segment, never across segments.';
COMMENT ON COLUMN trend_index.index_value IS '0–100: the day''s level relative to the highest day of its segment so far (100). Earlier days change when a new peak arrives; their ratios do not.';
COMMENT ON COLUMN trend_index.index_low IS 'Lower end of the band the provider''s ±0.005 rounding leaves around index_value (same 0–100 scale).';
COMMENT ON COLUMN trend_index.index_high IS 'Upper end of the rounding band around index_value (same 0–100 scale; may exceed 100).';
COMMENT ON COLUMN trend_index.segment IS '1, 2, …: levels are comparable within one segment only. A new segment starts where a window shares no usable days with the history.';
COMMENT ON COLUMN trend_index.windows IS 'How many provider windows covered the day.';
COMMENT ON COLUMN trend_index.fetch_id IS 'The newest fetch whose window covers the day (fetches.id).';
COMMENT ON COLUMN trend_index.changed_by IS 'The fetch whose poll (or replay) last changed this row (fetches.id).';
