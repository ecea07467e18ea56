//! The trend history tables: a pair's windows from `trend_observations` (written by `ingest` in
//! the poll's own statement), its stitched `trend_index` and `trend_pairs` row, and the monthly
//! partitions.
//!
//! Every write of a window re-stitches the whole pair inside the poll's transaction, under a
//! transaction-scoped advisory lock on the pair, so two instances (or a poll and a replay) never
//! stitch the same pair from different sets of windows, and the index is never stale.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::stitch::{stitch, IndexDay, Window};

/// The advisory-lock key of a (clip, region) pair (FNV-1a of `clip/region`).
pub fn pair_lock_key(clip_id: &str, region: &str) -> i64 {
    let hash = format!("{clip_id}/{region}")
        .bytes()
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
    hash as i64
}

/// The statement that opens a poll's transaction already holding the pair's lock (one round trip).
pub fn begin_locked(clip_id: &str, region: &str) -> String {
    format!(
        "BEGIN; SELECT pg_advisory_xact_lock({})",
        pair_lock_key(clip_id, region)
    )
}

/// Takes the pair's advisory lock until the end of the current transaction.
pub async fn lock_pair(conn: &mut PgConnection, clip_id: &str, region: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(pair_lock_key(clip_id, region))
        .execute(conn)
        .await?;
    Ok(())
}

/// Re-stitches the pair from its windows (those up to fetch `up_to` when given) and writes the
/// index rows that changed, naming `changed_by`. The caller holds the pair's lock. Returns the
/// rows inserted, changed or deleted.
pub async fn restitch(
    conn: &mut PgConnection,
    clip_id: &str,
    region: &str,
    up_to: Option<i64>,
    changed_by: i64,
) -> sqlx::Result<u64> {
    let windows = windows(&mut *conn, clip_id, region, up_to).await?;
    let days = stitch(&windows);
    write_index(conn, clip_id, region, &days, changed_by).await
}

/// fetch_id, observed_at, day numbers, values.
type StoredWindow = (i64, DateTime<Utc>, Vec<i32>, Vec<f64>);

/// Every stored window of the pair.
pub async fn windows(
    db: impl PgExecutor<'_>,
    clip_id: &str,
    region: &str,
    up_to: Option<i64>,
) -> sqlx::Result<Vec<Window>> {
    let rows: Vec<StoredWindow> = sqlx::query_as(
        "SELECT fetch_id, observed_at,
                array_agg((ts AT TIME ZONE 'UTC')::date - DATE '1970-01-01' ORDER BY ts),
                array_agg(value ORDER BY ts)
         FROM trend_observations
         WHERE clip_id = $1 AND region = $2 AND ($3::int8 IS NULL OR fetch_id <= $3)
         GROUP BY fetch_id, observed_at",
    )
    .bind(clip_id)
    .bind(region)
    .bind(up_to)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(fetch_id, observed_at, days, values)| {
            let mut points: Vec<(i32, f64)> = days.into_iter().zip(values).collect();
            // Two points on one UTC day (a provider glitch): the later one counts.
            points.reverse();
            points.dedup_by_key(|p| p.0);
            points.reverse();
            Window {
                fetch_id,
                observed_at: observed_at.timestamp_micros(),
                points,
            }
        })
        .collect())
}

/// Upserts the rows that differ from what is stored and deletes days no window covers any more.
pub async fn write_index(
    db: impl PgExecutor<'_>,
    clip_id: &str,
    region: &str,
    days: &[IndexDay],
    changed_by: i64,
) -> sqlx::Result<u64> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch is a date");
    let date = |d: i32| epoch + chrono::Duration::days(i64::from(d));
    let changed: i64 = sqlx::query_scalar(
        "WITH new AS (
             SELECT * FROM UNNEST($3::date[], $4::float8[], $5::float8[], $6::float8[], $7::int4[],
                                  $8::int4[], $9::int8[])
                 AS u(day, index_value, index_low, index_high, segment, windows, fetch_id)
         ),
         gone AS (
             DELETE FROM trend_index
             WHERE clip_id = $1 AND region = $2 AND day <> ALL($3::date[])
             RETURNING 1
         ),
         up AS (
             INSERT INTO trend_index AS cur (clip_id, region, day, index_value, index_low,
                                             index_high, segment, windows, fetch_id, changed_by)
             SELECT $1, $2, day, index_value, index_low, index_high, segment, windows, fetch_id, $10
             FROM new
             ON CONFLICT (clip_id, region, day) DO UPDATE SET
                 index_value = EXCLUDED.index_value, index_low = EXCLUDED.index_low,
                 index_high = EXCLUDED.index_high, segment = EXCLUDED.segment,
                 windows = EXCLUDED.windows, fetch_id = EXCLUDED.fetch_id,
                 changed_by = EXCLUDED.changed_by
             WHERE (cur.index_value, cur.index_low, cur.index_high, cur.segment, cur.windows,
                    cur.fetch_id)
                   IS DISTINCT FROM
                   (EXCLUDED.index_value, EXCLUDED.index_low, EXCLUDED.index_high,
                    EXCLUDED.segment, EXCLUDED.windows, EXCLUDED.fetch_id)
             RETURNING 1
         ),
         pair AS (
             INSERT INTO trend_pairs AS cur (clip_id, region, first_day, last_day, segments,
                                             changed_by)
             SELECT $1, $2, min(day), max(day), max(segment), $10 FROM new HAVING count(*) > 0
             ON CONFLICT (clip_id, region) DO UPDATE SET
                 first_day = EXCLUDED.first_day, last_day = EXCLUDED.last_day,
                 segments = EXCLUDED.segments, changed_by = EXCLUDED.changed_by
             WHERE (cur.first_day, cur.last_day, cur.segments)
                   IS DISTINCT FROM (EXCLUDED.first_day, EXCLUDED.last_day, EXCLUDED.segments)
             RETURNING 1
         ),
         pair_gone AS (
             DELETE FROM trend_pairs
             WHERE clip_id = $1 AND region = $2 AND cardinality($3::date[]) = 0
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM gone)",
    )
    .bind(clip_id)
    .bind(region)
    .bind(days.iter().map(|d| date(d.day)).collect::<Vec<_>>())
    .bind(days.iter().map(|d| d.index_value).collect::<Vec<_>>())
    .bind(days.iter().map(|d| d.index_low).collect::<Vec<_>>())
    .bind(days.iter().map(|d| d.index_high).collect::<Vec<_>>())
    .bind(days.iter().map(|d| d.segment).collect::<Vec<_>>())
    .bind(days.iter().map(|d| d.windows).collect::<Vec<_>>())
    .bind(days.iter().map(|d| d.fetch_id).collect::<Vec<_>>())
    .bind(changed_by)
    .fetch_one(db)
    .await?;
    Ok(changed as u64)
}

/// Creates the monthly partitions of `trend_observations` from last month to `months_ahead`
/// months after this one (UTC) that do not exist yet; returns how many it created.
pub async fn ensure_partitions(db: impl PgExecutor<'_>, months_ahead: i32) -> sqlx::Result<i32> {
    sqlx::query_scalar(
        "SELECT trend_observations_ensure_partitions(
             ((now() AT TIME ZONE 'UTC')::date - 31), $1 + 2)",
    )
    .bind(months_ahead)
    .fetch_one(db)
    .await
}
