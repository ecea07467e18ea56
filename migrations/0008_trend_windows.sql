-- Trend history, second step (0006 is merged and never edited): a compact copy of every window for
-- the stitch, and no foreign-key checks on the trend tables' write path.

-- Every successful window as one row: what trend_index is stitched from. A poll re-stitches its pair
-- from every window the pair has; reading them here is one index range scan on one table, where the
-- month-partitioned trend_observations costs a probe (and planning) per partition.
CREATE TABLE trend_windows (
    clip_id      text               NOT NULL,
    region       text               NOT NULL,
    fetch_id     bigint             NOT NULL,
    period       smallint           NOT NULL,
    observed_at  timestamptz        NOT NULL,
    days         integer[]          NOT NULL,
    vals         double precision[] NOT NULL,
    PRIMARY KEY (clip_id, region, fetch_id),
    CONSTRAINT trend_windows_one_value_per_day CHECK (cardinality(days) = cardinality(vals))
);

COMMENT ON TABLE trend_windows IS 'Every successful window as one row, the input of the stitch behind trend_index. Analysts read trend_observations instead.';
COMMENT ON COLUMN trend_windows.days IS 'Days since 1970-01-01 (UTC), ascending, one per day.';
COMMENT ON COLUMN trend_windows.vals IS 'The provider''s values for those days, relative to this window (max 1).';

-- Every fetch_id / changed_by in the trend tables names a fetches.id written in the same transaction
-- (a poll's or a replay's); these tables are soundtrend's to write, never an analyst's, so the
-- references are not enforced: 23 foreign-key checks per poll were a tenth of the write path.
ALTER TABLE trend_observations DROP CONSTRAINT trend_observations_fetch_fk;
ALTER TABLE trend_index DROP CONSTRAINT trend_index_fetch_id_fkey;
ALTER TABLE trend_index DROP CONSTRAINT trend_index_changed_by_fkey;
ALTER TABLE trend_pairs DROP CONSTRAINT trend_pairs_changed_by_fkey;

-- Analysts read a sound's windows by time; the stitch no longer reads this table.
DROP INDEX trend_observations_pair_idx;
CREATE INDEX trend_observations_pair_idx ON trend_observations (clip_id, region, ts);

-- sound_rising, unchanged in meaning: the latest day of each pair is now read by a primary-key probe
-- per pair instead of a hash join over all of trend_index (1.1 s → a fraction of it at 10,000
-- pairs × 365 days). Comments on the view and its columns stay as 0006 set them.
CREATE OR REPLACE VIEW sound_rising AS
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
CROSS JOIN LATERAL (
    -- LIMIT 1 keeps this a per-pair primary-key probe rather than a hash join over the whole index.
    SELECT x.index_value, x.segment FROM trend_index x
    WHERE x.clip_id = p.clip_id AND x.region = p.region AND x.day = p.last_day
    LIMIT 1
) now_
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
