//! The trend history tables: a pair's windows from `trend_windows` (written by `ingest` in the
//! poll's own statement, with the same points in `trend_observations` for analysts), its stitched
//! `trend_index` and `trend_pairs` row, and the monthly partitions of `trend_observations`.
//!
//! Every write of a window re-stitches the whole pair inside the poll's transaction, under a
//! transaction-scoped advisory lock on the pair, so two instances (or a poll and a replay) never
//! stitch the same pair from different sets of windows, and the index is never stale.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::normalize::stitch::{stitch, IndexDay, Window};
use crate::normalize::TrendRow;

/// The advisory-lock key of a (clip, region) pair (FNV-1a of `clip/region`).
#[must_use]
pub fn pair_lock_key(clip_id: &str, region: &str) -> i64 {
    let hash = format!("{clip_id}/{region}")
        .bytes()
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
    hash as i64
}

/// The statement that opens a poll's transaction already holding the pair's lock (one round trip).
/// The only SQL built at run time: the key is an `i64` formatted by Rust, nothing from outside.
#[must_use]
pub fn begin_locked(clip_id: &str, region: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!(
        "BEGIN; SELECT pg_advisory_xact_lock({})",
        pair_lock_key(clip_id, region)
    ))
}

/// Takes the pair's advisory lock until the end of the current transaction.
pub async fn lock_pair(conn: &mut PgConnection, clip_id: &str, region: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock($1)",
        pair_lock_key(clip_id, region)
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// Re-stitches the pair from its stored windows (those up to fetch `up_to` when given) and writes
/// the index rows that changed, naming `changed_by`. The caller holds the pair's lock. Returns the
/// rows inserted, changed or deleted.
pub async fn restitch(
    conn: &mut PgConnection,
    clip_id: &str,
    region: &str,
    up_to: Option<i64>,
    changed_by: i64,
) -> sqlx::Result<u64> {
    let windows = windows(&mut *conn, clip_id, region, up_to).await?;
    write_stitched(conn, clip_id, region, &windows, changed_by).await
}

/// Stitches `windows` (every window of the pair) and writes the index rows that changed.
pub async fn write_stitched(
    db: impl PgExecutor<'_>,
    clip_id: &str,
    region: &str,
    windows: &[Window],
    changed_by: i64,
) -> sqlx::Result<u64> {
    write_index(db, clip_id, region, &stitch(windows), changed_by).await
}

/// Every stored window of the pair.
pub async fn windows(
    db: impl PgExecutor<'_>,
    clip_id: &str,
    region: &str,
    up_to: Option<i64>,
) -> sqlx::Result<Vec<Window>> {
    let r = sqlx::query!(
        r#"SELECT COALESCE(array_agg(w.fetch_id), '{}') AS "fetch_ids!",
                COALESCE(array_agg(w.observed_at), '{}') AS "observed!",
                COALESCE(array_agg(d.day), '{}') AS "days!",
                COALESCE(array_agg(d.val), '{}') AS "vals!"
         FROM (SELECT fetch_id, observed_at, days, vals FROM trend_windows
               WHERE clip_id = $1 AND region = $2 AND ($3::int8 IS NULL OR fetch_id <= $3)
               ORDER BY fetch_id) w,
              LATERAL unnest(w.days, w.vals) AS d(day, val)"#,
        clip_id,
        region,
        up_to,
    )
    .fetch_one(db)
    .await?;
    Ok(assemble(r.fetch_ids, r.observed, r.days, r.vals))
}

/// Windows from stored points ordered by `fetch_id`, then day, as [`windows`] reads them.
#[must_use]
pub fn assemble(
    fetch_ids: Vec<i64>,
    observed: Vec<DateTime<Utc>>,
    days: Vec<i32>,
    values: Vec<f64>,
) -> Vec<Window> {
    let mut out: Vec<Window> = Vec::new();
    for (((fetch_id, at), day), value) in fetch_ids.into_iter().zip(observed).zip(days).zip(values)
    {
        match out.last_mut() {
            Some(w) if w.fetch_id == fetch_id => {
                // Two points on one UTC day (a provider glitch): the later one counts.
                if w.points.last().is_some_and(|p| p.0 == day) {
                    w.points.pop();
                }
                w.points.push((day, value));
            }
            _ => out.push(Window {
                fetch_id,
                observed_at: at.timestamp_micros(),
                points: vec![(day, value)],
            }),
        }
    }
    out
}

/// The window a poll writes to `trend_windows`: one point per timestamp (the first), ordered by
/// time, the later point of a UTC day.
#[must_use]
pub fn new_window(fetch_id: i64, observed_at: DateTime<Utc>, trend: &[TrendRow]) -> Window {
    let mut points: Vec<(DateTime<Utc>, f64)> = trend.iter().map(|t| (t.ts, t.value)).collect();
    points.sort_by_key(|p| p.0);
    points.dedup_by_key(|p| p.0);
    let epoch = DateTime::<Utc>::UNIX_EPOCH.date_naive();
    let mut w = assemble(
        vec![fetch_id; points.len()],
        vec![observed_at; points.len()],
        points
            .iter()
            .map(|p| (p.0.date_naive() - epoch).num_days() as i32)
            .collect(),
        points.iter().map(|p| p.1).collect(),
    );
    w.pop().unwrap_or(Window {
        fetch_id,
        observed_at: observed_at.timestamp_micros(),
        points: Vec::new(),
    })
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
    let changed = sqlx::query_scalar!(
        r#"WITH new AS (
             SELECT * FROM UNNEST($3::date[], $4::float8[], $5::float8[], $6::float8[], $7::int4[],
                                  $8::int4[], $9::int8[])
                 AS u(day, index_value, index_low, index_high, segment, windows, fetch_id)
         ),
         gone AS (
             -- An anti-join, not `day <> ALL($3)`: that compares every stored day with every
             -- new one, a year of history squared.
             DELETE FROM trend_index t
             WHERE t.clip_id = $1 AND t.region = $2
               AND NOT EXISTS (SELECT 1 FROM new WHERE new.day = t.day)
             RETURNING 1
         ),
         changed AS (
             -- Only the days that differ reach the upsert: ON CONFLICT locks every row it finds,
             -- changed or not, and most of a mature pair's days do not change in a poll. The
             -- pair's advisory lock (held by the caller) keeps this read current, so the upsert
             -- needs no second comparison.
             SELECT new.* FROM new
             LEFT JOIN trend_index cur
                 ON cur.clip_id = $1 AND cur.region = $2 AND cur.day = new.day
             WHERE (cur.index_value, cur.index_low, cur.index_high, cur.segment, cur.windows,
                    cur.fetch_id)
                   IS DISTINCT FROM
                   (new.index_value, new.index_low, new.index_high, new.segment, new.windows,
                    new.fetch_id)
         ),
         up AS (
             INSERT INTO trend_index AS cur (clip_id, region, day, index_value, index_low,
                                             index_high, segment, windows, fetch_id, changed_by)
             SELECT $1, $2, day, index_value, index_low, index_high, segment, windows, fetch_id, $10
             FROM changed
             ON CONFLICT (clip_id, region, day) DO UPDATE SET
                 index_value = EXCLUDED.index_value, index_low = EXCLUDED.index_low,
                 index_high = EXCLUDED.index_high, segment = EXCLUDED.segment,
                 windows = EXCLUDED.windows, fetch_id = EXCLUDED.fetch_id,
                 changed_by = EXCLUDED.changed_by
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
         SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM gone) AS "changed!""#,
        clip_id,
        region,
        &days.iter().map(|d| date(d.day)).collect::<Vec<_>>(),
        &days.iter().map(|d| d.index_value).collect::<Vec<_>>(),
        &days.iter().map(|d| d.index_low).collect::<Vec<_>>(),
        &days.iter().map(|d| d.index_high).collect::<Vec<_>>(),
        &days.iter().map(|d| d.segment).collect::<Vec<_>>(),
        &days.iter().map(|d| d.windows).collect::<Vec<_>>(),
        &days.iter().map(|d| d.fetch_id).collect::<Vec<_>>(),
        changed_by,
    )
    .fetch_one(db)
    .await?;
    Ok(changed as u64)
}

/// Creates the monthly partitions of `trend_observations` from last month to `months_ahead`
/// months after this one (UTC) that do not exist yet; returns how many it created.
pub async fn ensure_partitions(db: impl PgExecutor<'_>, months_ahead: i32) -> sqlx::Result<i32> {
    sqlx::query_scalar!(
        r#"SELECT trend_observations_ensure_partitions(
             ((now() AT TIME ZONE 'UTC')::date - 31), $1 + 2) AS "created!""#,
        months_ahead,
    )
    .fetch_one(db)
    .await
}
