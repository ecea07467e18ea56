//! The one-pass `trend_index` rebuild behind `soundtrend replay` and the group commit: for a
//! chunk of pairs at once, take their locks (in key order, so it never deadlocks with another
//! rebuild or group; a lone live poll holds one pair's lock only), read their windows, index rows
//! and `trend_pairs` rows in one statement each, work out in memory what re-stitching after each
//! replayed fetch ([`PairIndex::after_steps`]) or each written answer
//! ([`PairIndex::after_writes`]) leaves, and write only the rows that differ, in one statement.

use std::collections::HashMap;

use chrono::NaiveDate;
use sqlx::PgConnection;

use super::trend::{assemble, pair_lock_key};
use crate::normalize::history::{PairIndex, PairRange, StampedDay};
use crate::normalize::stitch::{IndexDay, Window};

/// One pair to rebuild and its fetches: replayed (ascending), or written live (in commit order).
#[derive(Debug, Clone)]
pub struct PairSteps {
    pub clip_id: String,
    pub region: String,
    pub steps: Vec<i64>,
}

type Pair = (String, String);

/// Rebuilds the index of every pair in `pairs` (one transaction is the caller's). Returns the
/// index rows inserted, changed or deleted.
pub async fn rebuild_pairs(conn: &mut PgConnection, pairs: &[PairSteps]) -> sqlx::Result<u64> {
    lock_pairs(conn, pairs).await?;
    restitch_with(conn, pairs, PairIndex::after_steps).await
}

/// Re-stitches every pair in `pairs` after the live write of its `steps` (in commit order, all
/// already in `trend_windows`), as [`super::ingest::record_success`] does for one answer: every
/// window stored counts, and rows that change are stamped with the fetch that changed them. The
/// caller holds the pairs' locks ([`lock_pairs`]) since before it wrote the windows.
pub async fn restitch_written(conn: &mut PgConnection, pairs: &[PairSteps]) -> sqlx::Result<u64> {
    restitch_with(conn, pairs, PairIndex::after_writes).await
}

/// Takes the advisory lock of every pair in `pairs` for the transaction, in key order, so that
/// two such calls never deadlock (a live poll holds one pair's lock only).
pub async fn lock_pairs(conn: &mut PgConnection, pairs: &[PairSteps]) -> sqlx::Result<()> {
    let mut keys: Vec<i64> = pairs
        .iter()
        .map(|p| pair_lock_key(&p.clip_id, &p.region))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(k) FROM (SELECT k FROM UNNEST($1::int8[]) AS k ORDER BY k) s",
        &keys
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(())
}

/// Reads the pairs' windows and index, works out each pair's index with `after` and writes the
/// rows that differ.
async fn restitch_with(
    conn: &mut PgConnection,
    pairs: &[PairSteps],
    after: fn(PairIndex, &[Window], &[i64]) -> PairIndex,
) -> sqlx::Result<u64> {
    let clips: Vec<&str> = pairs.iter().map(|p| p.clip_id.as_str()).collect();
    let regions: Vec<&str> = pairs.iter().map(|p| p.region.as_str()).collect();
    let windows = read_windows(conn, &clips, &regions).await?;
    let mut stored = read_index(conn, &clips, &regions).await?;
    let mut changes = Changes::default();
    for p in pairs {
        let key = (p.clip_id.clone(), p.region.clone());
        let before = stored.remove(&key).unwrap_or_default();
        let ws = windows.get(&key).map_or(&[][..], Vec::as_slice);
        let after = after(before.clone(), ws, &p.steps);
        changes.add(&p.clip_id, &p.region, &before, &after);
    }
    changes.write(conn).await
}

async fn read_windows(
    conn: &mut PgConnection,
    clips: &[&str],
    regions: &[&str],
) -> sqlx::Result<HashMap<Pair, Vec<Window>>> {
    let rows = sqlx::query!(
        r#"SELECT w.clip_id, w.region, w.fetch_id, w.observed_at, w.days, w.vals
           FROM trend_windows w
           JOIN UNNEST($1::text[], $2::text[]) AS p(clip_id, region)
             ON w.clip_id = p.clip_id AND w.region = p.region
           ORDER BY w.clip_id, w.region, w.fetch_id"#,
        clips as _,
        regions as _,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out: HashMap<Pair, Vec<Window>> = HashMap::new();
    for r in rows {
        let n = r.days.len();
        let mut w = assemble(vec![r.fetch_id; n], vec![r.observed_at; n], r.days, r.vals);
        out.entry((r.clip_id, r.region))
            .or_default()
            .extend(w.pop());
    }
    Ok(out)
}

async fn read_index(
    conn: &mut PgConnection,
    clips: &[&str],
    regions: &[&str],
) -> sqlx::Result<HashMap<Pair, PairIndex>> {
    let days = sqlx::query!(
        r#"SELECT t.clip_id, t.region, t.day, t.index_value, t.index_low, t.index_high,
                  t.segment, t.windows, t.fetch_id, t.changed_by
           FROM trend_index t
           JOIN UNNEST($1::text[], $2::text[]) AS p(clip_id, region)
             ON t.clip_id = p.clip_id AND t.region = p.region"#,
        clips as _,
        regions as _,
    )
    .fetch_all(&mut *conn)
    .await?;
    let ranges = sqlx::query!(
        r#"SELECT t.clip_id, t.region, t.first_day, t.last_day, t.segments, t.changed_by
           FROM trend_pairs t
           JOIN UNNEST($1::text[], $2::text[]) AS p(clip_id, region)
             ON t.clip_id = p.clip_id AND t.region = p.region"#,
        clips as _,
        regions as _,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out: HashMap<Pair, PairIndex> = HashMap::new();
    for r in days {
        let day = day_number(r.day);
        out.entry((r.clip_id, r.region)).or_default().days.insert(
            day,
            StampedDay {
                day: IndexDay {
                    day,
                    index_value: r.index_value,
                    index_low: r.index_low,
                    index_high: r.index_high,
                    segment: r.segment,
                    windows: r.windows,
                    fetch_id: r.fetch_id,
                },
                changed_by: r.changed_by,
            },
        );
    }
    for r in ranges {
        out.entry((r.clip_id, r.region)).or_default().range = Some(PairRange {
            first_day: day_number(r.first_day),
            last_day: day_number(r.last_day),
            segments: r.segments,
            changed_by: r.changed_by,
        });
    }
    Ok(out)
}

/// What differs between the stored and the rebuilt index of the chunk's pairs, by column.
#[derive(Debug, Default)]
struct Changes {
    gone: (Vec<String>, Vec<String>, Vec<NaiveDate>),
    up_pair: (Vec<String>, Vec<String>),
    up: Vec<StampedDay>,
    ranges_gone: (Vec<String>, Vec<String>),
    ranges_pair: (Vec<String>, Vec<String>),
    ranges: Vec<PairRange>,
}

impl Changes {
    fn add(&mut self, clip: &str, region: &str, before: &PairIndex, after: &PairIndex) {
        for day in before.days.keys().filter(|d| !after.days.contains_key(d)) {
            self.gone.0.push(clip.to_owned());
            self.gone.1.push(region.to_owned());
            self.gone.2.push(date(*day));
        }
        for (day, row) in &after.days {
            if before.days.get(day) != Some(row) {
                self.up_pair.0.push(clip.to_owned());
                self.up_pair.1.push(region.to_owned());
                self.up.push(row.clone());
            }
        }
        match (&before.range, &after.range) {
            (Some(_), None) => {
                self.ranges_gone.0.push(clip.to_owned());
                self.ranges_gone.1.push(region.to_owned());
            }
            (b, Some(a)) if b.as_ref() != Some(a) => {
                self.ranges_pair.0.push(clip.to_owned());
                self.ranges_pair.1.push(region.to_owned());
                self.ranges.push(*a);
            }
            _ => {}
        }
    }

    async fn write(self, conn: &mut PgConnection) -> sqlx::Result<u64> {
        let up = &self.up;
        let changed = sqlx::query_scalar!(
            r#"WITH gone AS (
                 DELETE FROM trend_index t
                 USING UNNEST($1::text[], $2::text[], $3::date[]) AS g(clip_id, region, day)
                 WHERE t.clip_id = g.clip_id AND t.region = g.region AND t.day = g.day
                 RETURNING 1
               ),
               up AS (
                 INSERT INTO trend_index AS cur (clip_id, region, day, index_value, index_low,
                                                 index_high, segment, windows, fetch_id, changed_by)
                 SELECT * FROM UNNEST($4::text[], $5::text[], $6::date[], $7::float8[],
                                      $8::float8[], $9::float8[], $10::int4[], $11::int4[],
                                      $12::int8[], $13::int8[])
                 ON CONFLICT (clip_id, region, day) DO UPDATE SET
                     index_value = EXCLUDED.index_value, index_low = EXCLUDED.index_low,
                     index_high = EXCLUDED.index_high, segment = EXCLUDED.segment,
                     windows = EXCLUDED.windows, fetch_id = EXCLUDED.fetch_id,
                     changed_by = EXCLUDED.changed_by
                 RETURNING 1
               ),
               ranges_gone AS (
                 DELETE FROM trend_pairs t
                 USING UNNEST($14::text[], $15::text[]) AS g(clip_id, region)
                 WHERE t.clip_id = g.clip_id AND t.region = g.region
                 RETURNING 1
               ),
               ranges AS (
                 INSERT INTO trend_pairs AS cur (clip_id, region, first_day, last_day, segments,
                                                 changed_by)
                 SELECT * FROM UNNEST($16::text[], $17::text[], $18::date[], $19::date[],
                                      $20::int4[], $21::int8[])
                 ON CONFLICT (clip_id, region) DO UPDATE SET
                     first_day = EXCLUDED.first_day, last_day = EXCLUDED.last_day,
                     segments = EXCLUDED.segments, changed_by = EXCLUDED.changed_by
                 RETURNING 1
               )
               -- Data-modifying CTEs run to completion whether read or not.
               SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM gone) AS "changed!""#,
            &self.gone.0,
            &self.gone.1,
            &self.gone.2,
            &self.up_pair.0,
            &self.up_pair.1,
            &up.iter().map(|r| date(r.day.day)).collect::<Vec<_>>(),
            &up.iter().map(|r| r.day.index_value).collect::<Vec<_>>(),
            &up.iter().map(|r| r.day.index_low).collect::<Vec<_>>(),
            &up.iter().map(|r| r.day.index_high).collect::<Vec<_>>(),
            &up.iter().map(|r| r.day.segment).collect::<Vec<_>>(),
            &up.iter().map(|r| r.day.windows).collect::<Vec<_>>(),
            &up.iter().map(|r| r.day.fetch_id).collect::<Vec<_>>(),
            &up.iter().map(|r| r.changed_by).collect::<Vec<_>>(),
            &self.ranges_gone.0,
            &self.ranges_gone.1,
            &self.ranges_pair.0,
            &self.ranges_pair.1,
            &self
                .ranges
                .iter()
                .map(|r| date(r.first_day))
                .collect::<Vec<_>>(),
            &self
                .ranges
                .iter()
                .map(|r| date(r.last_day))
                .collect::<Vec<_>>(),
            &self.ranges.iter().map(|r| r.segments).collect::<Vec<_>>(),
            &self.ranges.iter().map(|r| r.changed_by).collect::<Vec<_>>(),
        )
        .fetch_one(conn)
        .await?;
        Ok(changed as u64)
    }
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch is a date")
}

fn day_number(d: NaiveDate) -> i32 {
    i32::try_from((d - epoch()).num_days()).unwrap_or(i32::MAX)
}

fn date(day: i32) -> NaiveDate {
    epoch() + chrono::Duration::days(i64::from(day))
}
