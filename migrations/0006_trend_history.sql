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

-- One row per (clip_id, region) with a stitched history: where it starts and ends. Kept by the
-- same statement that writes trend_index; lets sound_rising visit every pair without scanning
-- the whole index.
CREATE TABLE trend_pairs (
    clip_id      text    NOT NULL,
    region       text    NOT NULL,
    first_day    date    NOT NULL,
    last_day     date    NOT NULL,
    segments     integer NOT NULL,
    changed_by   bigint  NOT NULL REFERENCES fetches (id),
    PRIMARY KEY (clip_id, region)
);

COMMENT ON TABLE trend_pairs IS 'One row per (clip_id, region) with a stitched history in trend_index: its first and last covered day and how many segments it has.';

-- ---------------------------------------------------------------------------------------------
-- Views for analysts.
-- ---------------------------------------------------------------------------------------------

-- Every threshold sound_rising uses, in one place. Change them here (CREATE OR REPLACE VIEW in a
-- new migration), never in the query.
CREATE VIEW sound_rising_thresholds AS
SELECT 5.0::float8   AS min_baseline,        -- index points: growth is measured against at least this
       50.0::float8  AS emerging_growth_7d,  -- % over 7 days, from under emerging_from points
       10.0::float8  AS emerging_from,       -- index points 7 days before
       20.0::float8  AS rising_growth_7d,    -- % over 7 days
       90.0::float8  AS peaking_index,       -- index points: at or near the segment's high
       -20.0::float8 AS declining_growth_7d; -- % over 7 days

COMMENT ON VIEW sound_rising_thresholds IS 'The thresholds behind sound_rising.stage and its growth figures, in one place. Stages are tested in this order: emerging (index 7 days ago < emerging_from and growth_7d >= emerging_growth_7d), rising (growth_7d >= rising_growth_7d), peaking (index >= peaking_index), declining (growth_7d <= declining_growth_7d), flat (everything else).';
COMMENT ON COLUMN sound_rising_thresholds.min_baseline IS 'Index points. Growth % = (now - then) / GREATEST(then, min_baseline) * 100, so a move from 1 to 2 is not +100 %.';
COMMENT ON COLUMN sound_rising_thresholds.emerging_growth_7d IS 'Percent over 7 days for a sound coming from (almost) nothing to count as emerging.';
COMMENT ON COLUMN sound_rising_thresholds.emerging_from IS 'Index points: below this 7 days ago counts as "from nothing".';
COMMENT ON COLUMN sound_rising_thresholds.rising_growth_7d IS 'Percent over 7 days from which a sound is rising.';
COMMENT ON COLUMN sound_rising_thresholds.peaking_index IS 'Index points (0-100) from which a sound that is no longer rising is peaking.';
COMMENT ON COLUMN sound_rising_thresholds.declining_growth_7d IS 'Percent over 7 days at or below which a sound is declining.';

CREATE VIEW sound_daily AS
SELECT i.clip_id,
       i.region,
       i.day,
       i.index_value,
       i.index_low,
       i.index_high,
       i.segment,
       i.windows,
       p.value        AS window_value,
       p.period       AS window_period,
       s.rank,
       s.rank_diff,
       s.current_popularity,
       s.popular_days,
       s.fetch_id     AS snapshot_fetch_id,
       i.fetch_id,
       i.changed_by
FROM trend_index i
LEFT JOIN trend_points p
       ON p.clip_id = i.clip_id AND p.region = i.region
      AND p.ts = i.day::timestamp AT TIME ZONE 'UTC'
LEFT JOIN LATERAL (
    SELECT x.rank, x.rank_diff, x.current_popularity, x.popular_days, x.fetch_id
    FROM sound_snapshots x
    WHERE x.clip_id = i.clip_id AND x.region = i.region
      AND x.observed_at >= i.day::timestamp AT TIME ZONE 'UTC'
      AND x.observed_at < (i.day + 1)::timestamp AT TIME ZONE 'UTC'
    ORDER BY x.observed_at DESC
    LIMIT 1
) s ON true;

COMMENT ON VIEW sound_daily IS 'One row per (clip_id, region, day) covered by any window: the stitched index, the raw value of the newest window covering the day, and the snapshot taken that UTC day if there was a poll.';
COMMENT ON COLUMN sound_daily.index_value IS '0-100 stitched level; 100 = the highest day of the segment. Compare within one segment only.';
COMMENT ON COLUMN sound_daily.index_low IS 'Lower end of the rounding band around index_value.';
COMMENT ON COLUMN sound_daily.index_high IS 'Upper end of the rounding band around index_value.';
COMMENT ON COLUMN sound_daily.segment IS 'Levels are comparable within one segment, never across.';
COMMENT ON COLUMN sound_daily.windows IS 'How many provider windows covered the day.';
COMMENT ON COLUMN sound_daily.window_value IS 'The provider''s raw value for the day from the newest window covering it (trend_points.value): relative to that window''s maximum, NOT comparable across days.';
COMMENT ON COLUMN sound_daily.window_period IS 'Length in days (7, 30, 120) of the window window_value came from.';
COMMENT ON COLUMN sound_daily.rank IS 'The provider''s chart rank in the newest snapshot taken this UTC day (NULL: no poll that day, or unranked).';
COMMENT ON COLUMN sound_daily.rank_diff IS 'The provider''s rank change in that snapshot.';
COMMENT ON COLUMN sound_daily.current_popularity IS 'The provider''s current_popularity in that snapshot.';
COMMENT ON COLUMN sound_daily.popular_days IS 'The provider''s popular_days in that snapshot.';
COMMENT ON COLUMN sound_daily.snapshot_fetch_id IS 'The fetch of that snapshot (fetches.id).';
COMMENT ON COLUMN sound_daily.fetch_id IS 'The newest fetch whose window covers the day.';
COMMENT ON COLUMN sound_daily.changed_by IS 'The fetch whose poll last changed the index row.';

CREATE VIEW sound_rising AS
SELECT p.clip_id,
       p.region,
       p.last_day                                        AS day,
       now_.index_value,
       now_.segment,
       100 * (now_.index_value - d1.index_value) / GREATEST(d1.index_value, t.min_baseline) AS growth_1d,
       100 * (now_.index_value - d3.index_value) / GREATEST(d3.index_value, t.min_baseline) AS growth_3d,
       100 * (now_.index_value - d7.index_value) / GREATEST(d7.index_value, t.min_baseline) AS growth_7d,
       w.slope_7d,
       r.rank,
       r.rank_then - r.rank                              AS rank_change_7d,
       (r.rank_then - r.rank)::float8 / NULLIF(r.days, 0) AS rank_velocity,
       o.days_observed,
       o.days_expected,
       CASE
           WHEN d7.index_value < t.emerging_from
            AND 100 * (now_.index_value - d7.index_value) / GREATEST(d7.index_value, t.min_baseline)
                >= t.emerging_growth_7d THEN 'emerging'
           WHEN 100 * (now_.index_value - d7.index_value) / GREATEST(d7.index_value, t.min_baseline)
                >= t.rising_growth_7d THEN 'rising'
           WHEN now_.index_value >= t.peaking_index THEN 'peaking'
           WHEN 100 * (now_.index_value - d7.index_value) / GREATEST(d7.index_value, t.min_baseline)
                <= t.declining_growth_7d THEN 'declining'
           ELSE 'flat'
       END                                               AS stage
FROM trend_pairs p
CROSS JOIN sound_rising_thresholds t
JOIN trend_index now_
  ON now_.clip_id = p.clip_id AND now_.region = p.region AND now_.day = p.last_day
LEFT JOIN trend_index d1
  ON d1.clip_id = p.clip_id AND d1.region = p.region AND d1.day = p.last_day - 1
 AND d1.segment = now_.segment
LEFT JOIN trend_index d3
  ON d3.clip_id = p.clip_id AND d3.region = p.region AND d3.day = p.last_day - 3
 AND d3.segment = now_.segment
LEFT JOIN trend_index d7
  ON d7.clip_id = p.clip_id AND d7.region = p.region AND d7.day = p.last_day - 7
 AND d7.segment = now_.segment
CROSS JOIN LATERAL (
    SELECT regr_slope(x.index_value, x.day - p.last_day) AS slope_7d
    FROM trend_index x
    WHERE x.clip_id = p.clip_id AND x.region = p.region
      AND x.day > p.last_day - 7 AND x.day <= p.last_day AND x.segment = now_.segment
) w
LEFT JOIN LATERAL (
    SELECT latest.rank, earlier.rank AS rank_then,
           EXTRACT(epoch FROM latest.observed_at - earlier.observed_at) / 86400 AS days
    FROM (SELECT s.rank, s.observed_at FROM sound_snapshots s
          WHERE s.clip_id = p.clip_id AND s.region = p.region
          ORDER BY s.observed_at DESC LIMIT 1) latest
    LEFT JOIN LATERAL (
          SELECT s.rank, s.observed_at FROM sound_snapshots s
          WHERE s.clip_id = p.clip_id AND s.region = p.region
            AND s.observed_at <= latest.observed_at - interval '7 days'
          ORDER BY s.observed_at DESC LIMIT 1) earlier ON true
) r ON true
CROSS JOIN LATERAL (
    SELECT count(DISTINCT (s.observed_at AT TIME ZONE 'UTC')::date)::int AS days_observed,
           LEAST(28, p.last_day - p.first_day + 1)::int            AS days_expected
    FROM sound_snapshots s
    WHERE s.clip_id = p.clip_id AND s.region = p.region
      AND s.observed_at > (p.last_day - 27)::timestamp AT TIME ZONE 'UTC'
      AND s.observed_at < (p.last_day + 2)::timestamp AT TIME ZONE 'UTC'
) o
ORDER BY growth_7d DESC NULLS LAST, growth_3d DESC NULLS LAST, p.clip_id, p.region;

COMMENT ON VIEW sound_rising IS 'One row per (clip_id, region) as of its latest stitched day, fastest risers first (growth_7d descending). Thresholds: sound_rising_thresholds.';
COMMENT ON COLUMN sound_rising.day IS 'The latest day of the pair''s stitched index.';
COMMENT ON COLUMN sound_rising.index_value IS '0-100 stitched level on that day.';
COMMENT ON COLUMN sound_rising.segment IS 'The segment of that day; growth is only measured within it (NULL growth across a segment break).';
COMMENT ON COLUMN sound_rising.growth_1d IS 'Percent change of the index over 1 day, against at least sound_rising_thresholds.min_baseline points.';
COMMENT ON COLUMN sound_rising.growth_3d IS 'Percent change of the index over 3 days, same baseline rule.';
COMMENT ON COLUMN sound_rising.growth_7d IS 'Percent change of the index over 7 days, same baseline rule. The sort key.';
COMMENT ON COLUMN sound_rising.slope_7d IS 'Least-squares slope of the index over the last 7 days, in index points per day.';
COMMENT ON COLUMN sound_rising.rank IS 'Chart rank in the newest snapshot.';
COMMENT ON COLUMN sound_rising.rank_change_7d IS 'Places climbed since the newest snapshot at least 7 days older (positive = up the chart).';
COMMENT ON COLUMN sound_rising.rank_velocity IS 'Places climbed per day over that span (positive = up), as Chartmetric defines rank velocity.';
COMMENT ON COLUMN sound_rising.days_observed IS 'UTC days with a successful poll in the 28 days up to the latest day (+1, the poll day).';
COMMENT ON COLUMN sound_rising.days_expected IS 'Days in that span the pair has had history for (at most 28): with daily polling, days_observed should equal it.';
COMMENT ON COLUMN sound_rising.stage IS 'emerging | rising | peaking | declining | flat, by sound_rising_thresholds.';

CREATE VIEW audience_country_share AS
SELECT a.fetch_id,
       a.clip_id,
       a.region,
       a.observed_at,
       a.position,
       a.country_code,
       a.country_name,
       a.score,
       a.score / NULLIF(tot.total, 0)                    AS share,
       prev.fetch_id                                    AS previous_fetch_id,
       a.score / NULLIF(tot.total, 0) - prev.share      AS share_change
FROM audience_countries a
CROSS JOIN LATERAL (SELECT sum(x.score) AS total FROM audience_countries x
                    WHERE x.fetch_id = a.fetch_id) tot
LEFT JOIN LATERAL (
    SELECT s.fetch_id,
           (SELECT y.score FROM audience_countries y
            WHERE y.fetch_id = s.fetch_id AND y.country_code = a.country_code
            ORDER BY y.position LIMIT 1)
           / NULLIF((SELECT sum(z.score) FROM audience_countries z WHERE z.fetch_id = s.fetch_id), 0)
               AS share
    FROM sound_snapshots s
    WHERE s.clip_id = a.clip_id AND s.region = a.region
      AND s.observed_at < a.observed_at
    ORDER BY s.observed_at DESC
    LIMIT 1
) prev ON true;

COMMENT ON VIEW audience_country_share IS 'Per snapshot (fetch_id), each listed audience country''s share of the listed total, and its change since the previous snapshot of the same (clip_id, region).';
COMMENT ON COLUMN audience_country_share.share IS 'score / sum of the scores the provider listed in this snapshot (0-1). The provider lists its top countries only, so shares are of the listed total, not of all listeners.';
COMMENT ON COLUMN audience_country_share.previous_fetch_id IS 'The previous snapshot of the same pair (fetches.id); NULL for the first.';
COMMENT ON COLUMN audience_country_share.share_change IS 'share minus the same country''s share in the previous snapshot (share points, -1..1); NULL when the country was not listed then or there is no previous snapshot.';

CREATE VIEW audience_interest_share AS
SELECT a.fetch_id,
       a.clip_id,
       a.region,
       a.observed_at,
       a.position,
       a.interest_id,
       a.name,
       a.score,
       a.score / NULLIF(tot.total, 0)                    AS share,
       prev.fetch_id                                    AS previous_fetch_id,
       a.score / NULLIF(tot.total, 0) - prev.share      AS share_change
FROM audience_interests a
CROSS JOIN LATERAL (SELECT sum(x.score) AS total FROM audience_interests x
                    WHERE x.fetch_id = a.fetch_id) tot
LEFT JOIN LATERAL (
    SELECT s.fetch_id,
           (SELECT y.score FROM audience_interests y
            WHERE y.fetch_id = s.fetch_id AND y.interest_id = a.interest_id
            ORDER BY y.position LIMIT 1)
           / NULLIF((SELECT sum(z.score) FROM audience_interests z WHERE z.fetch_id = s.fetch_id), 0)
               AS share
    FROM sound_snapshots s
    WHERE s.clip_id = a.clip_id AND s.region = a.region
      AND s.observed_at < a.observed_at
    ORDER BY s.observed_at DESC
    LIMIT 1
) prev ON true;

COMMENT ON VIEW audience_interest_share IS 'Per snapshot (fetch_id), each listed audience interest''s share of the listed total, and its change since the previous snapshot of the same (clip_id, region).';
COMMENT ON COLUMN audience_interest_share.share IS 'score / sum of the scores the provider listed in this snapshot (0-1): a share of the listed interests, not of all listeners.';
COMMENT ON COLUMN audience_interest_share.previous_fetch_id IS 'The previous snapshot of the same pair (fetches.id); NULL for the first.';
COMMENT ON COLUMN audience_interest_share.share_change IS 'share minus the same interest''s share in the previous snapshot (share points); NULL when it was not listed then or there is no previous snapshot.';
