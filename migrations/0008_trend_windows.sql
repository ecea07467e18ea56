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
