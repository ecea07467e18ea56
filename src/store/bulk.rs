//! Bulk writes for `soundtrend replay` (and the group commit's rows): a batch of archived answers,
//! normalized, written in the caller's transaction.
//!
//! - The tables keyed by the fetch (`sound_snapshots`, `trend_windows`, `trend_observations`)
//!   take their rows by `COPY` when none of the batch's fetches has rows yet ([`write`]), and
//!   otherwise by `COPY` into staging tables and a set-based merge that changes only the rows
//!   that differ ([`merge`]).
//! - The audience lists are keyed by pair and content, so a batch's lists are often stored
//!   already: one insert of the batch's distinct lists that skips those ([`insert_lists`]).
//! - `sounds` and `trend_points` are shared with other fetches: one set-based upsert each, with
//!   the live write's rule (the newest observation wins, `first_seen_at` is the earliest), so a
//!   batch leaves what writing its fetches one by one would.
//!
//! The index is not touched here: `replay` rebuilds it afterwards, pair by pair
//! ([`super::rebuild`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use super::ingest::AudienceColumns;
use super::trend;
use crate::normalize::lists::{self, ListId};
use crate::normalize::{AudienceRow, Normalized};
use crate::provider::Outcome;

// Column lists as macros, so the statements below are `&'static str` built by `concat!`.
macro_rules! snapshot_columns {
    () => {
        "fetch_id, clip_id, region, period, observed_at, country_code, rank, rank_diff, \
         on_list_times, popular_days, current_popularity, like_count, liked, disliked, \
         trend_points, audience_ages, related_items, countries_list, interests_list"
    };
}
macro_rules! window_columns {
    () => {
        "fetch_id, clip_id, region, period, observed_at, days, vals"
    };
}
macro_rules! observation_columns {
    () => {
        "fetch_id, clip_id, region, period, ts, value, observed_at"
    };
}

/// One archived answer that normalizes, with the identity its rows carry.
#[derive(Debug)]
pub struct Replayed<'a> {
    pub fetch_id: i64,
    pub clip_id: &'a str,
    pub region: &'a str,
    pub period: i16,
    pub observed_at: DateTime<Utc>,
    pub rows: &'a Normalized,
}

/// Rows written per table, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkWritten {
    pub snapshots: u64,
    pub observations: u64,
    pub countries: u64,
    pub interests: u64,
    /// Rows of `sounds`, `sound_snapshots`, `trend_points`, `trend_windows` and
    /// `trend_observations` this write inserted, updated or deleted (a merge leaves rows that are
    /// already right alone; audience lists are content-addressed and not counted).
    pub changed: u64,
}

impl BulkWritten {
    /// Rows written to the data tables, counted as the live write counts them: per fetch, its
    /// sound and snapshot, its trend points and both audience lists.
    #[must_use]
    pub fn rows(&self) -> u64 {
        2 * self.snapshots + self.observations + self.countries + self.interests
    }
}

/// Writes the rows of `batch` (fetch ids unique) by `COPY`, into tables that hold no rows of its
/// fetches (else [`merge`]).
pub async fn write(
    conn: &mut PgConnection,
    batch: &[Replayed<'_>],
) -> Result<BulkWritten, sqlx::Error> {
    if batch.is_empty() {
        return Ok(BulkWritten::default());
    }
    let lists = Lists::of(batch);
    let [snapshots, windows, observations] = copy_fetch_rows(conn, TABLES, batch, &lists).await?;
    let upserted = lists_and_upserts(conn, batch, &lists).await?;
    Ok(BulkWritten {
        snapshots,
        observations,
        changed: snapshots + windows + observations + upserted,
        ..lists.entries()
    })
}

/// Writes the rows of `batch` over what the fetches in `keys` derived before, changing only what
/// differs, and returns what the batch derives (as [`write`] counts it).
///
/// A replay over stored rows mostly meets rows it would write again byte for byte (same
/// normalizer: a replay after an index change, a repeated or overlapping replay) or a few columns
/// changed (a normalizer change). Deleting and rewriting every row costs a dead tuple, an index
/// entry in every index and WAL per row; here the new rows go by `COPY` into staging tables private
/// to the connection, one statement deletes the stored rows of `keys` that no staged row equals
/// (changed, or no longer derived), and one inserts the staged rows not stored. A stored row that
/// equals its staged row is left alone, so a replay that changes nothing writes (almost) nothing.
/// Every fetch of `keys` ends up with exactly the rows [`write`] would give it after deleting its
/// rows: `keys` lists every fetch of the batch, also those that no longer normalize, whose rows
/// all go.
pub async fn merge(
    conn: &mut PgConnection,
    batch: &[Replayed<'_>],
    keys: &FetchKeys,
) -> Result<BulkWritten, sqlx::Error> {
    sqlx::raw_sql(STAGING).execute(&mut *conn).await?;
    let lists = Lists::of(batch);
    let [snapshots, _, observations] = copy_fetch_rows(conn, STAGED, batch, &lists).await?;
    let mut changed = 0;
    for statement in [DELETE_CHANGED, INSERT_MISSING] {
        let rows: i64 = sqlx::query_scalar(statement)
            .bind(&keys.ids)
            .bind(&keys.clips)
            .fetch_one(&mut *conn)
            .await?;
        changed += count(rows);
    }
    sqlx::raw_sql("SET LOCAL enable_nestloop TO DEFAULT")
        .execute(&mut *conn)
        .await?;
    changed += lists_and_upserts(conn, batch, &lists).await?;
    Ok(BulkWritten {
        snapshots,
        observations,
        changed,
        ..lists.entries()
    })
}

/// The fetches a [`merge`] rewrites, and their clips (`trend_windows` is keyed by pair first).
#[derive(Debug, Default)]
pub struct FetchKeys {
    pub ids: Vec<i64>,
    pub clips: Vec<String>,
}

/// One staging table per fetch-keyed table, with its columns, private to the connection and
/// emptied at every commit; created by the first merge on a connection. (A column added to a
/// table later and not written by replay would make every stored row differ from its staged one:
/// slower, never wrong, since the insert names its columns.)
///
/// Nested loops are off until the merge statements are done (`merge` restores the server's
/// setting): both join batch-sized sets, which hashing does in one pass over each side, but the
/// planner knows neither side's size (staging tables have no statistics) and, guessing small,
/// compared every stored row with every staged one: seconds per batch instead of milliseconds.
const STAGING: &str = "SET LOCAL client_min_messages = warning;
SET LOCAL enable_nestloop = off;
CREATE TEMP TABLE IF NOT EXISTS replay_snapshots (LIKE sound_snapshots) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS replay_windows (LIKE trend_windows) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS replay_observations (LIKE trend_observations) ON COMMIT DELETE ROWS;";

/// The stored rows of the fetches `$1` (of the clips `$2`) that no staged row equals,
/// column for column. A daily point of one of these fetches goes when the fetch no longer has an
/// observation that day (a changed value is the upsert's to set).
const DELETE_CHANGED: &str = "
WITH s AS (
    DELETE FROM sound_snapshots t WHERE t.fetch_id = ANY($1)
      AND NOT EXISTS (SELECT FROM replay_snapshots s
                      WHERE s.fetch_id = t.fetch_id AND s IS NOT DISTINCT FROM t)
    RETURNING 1
),
w AS (
    -- By the key's first column too, for the index (with a join to the keys instead, the
    -- planner compared every window with every staged one).
    DELETE FROM trend_windows t WHERE t.clip_id = ANY($2) AND t.fetch_id = ANY($1)
      AND NOT EXISTS (SELECT FROM replay_windows s
                      WHERE s.clip_id = t.clip_id AND s.region = t.region
                        AND s.fetch_id = t.fetch_id AND s IS NOT DISTINCT FROM t)
    RETURNING 1
),
o AS (
    DELETE FROM trend_observations t WHERE t.fetch_id = ANY($1)
      AND NOT EXISTS (SELECT FROM replay_observations s
                      WHERE s.fetch_id = t.fetch_id AND s.ts = t.ts
                        AND s IS NOT DISTINCT FROM t)
    RETURNING 1
),
p AS (
    DELETE FROM trend_points t WHERE t.fetch_id = ANY($1)
      AND NOT EXISTS (SELECT FROM replay_observations s
                      WHERE s.fetch_id = t.fetch_id AND s.ts = t.ts)
    RETURNING 1
)
SELECT (SELECT count(*) FROM s) + (SELECT count(*) FROM w) + (SELECT count(*) FROM o)
     + (SELECT count(*) FROM p)";

/// The staged rows not stored (after [`DELETE_CHANGED`], a stored row with the key is equal);
/// stored rows are looked up among the batch's fetches `$1` (of the clips `$2`) only.
const INSERT_MISSING: &str = concat!(
    "WITH s AS (INSERT INTO sound_snapshots (",
    snapshot_columns!(),
    ") SELECT ",
    snapshot_columns!(),
    " FROM replay_snapshots s WHERE NOT EXISTS (
         SELECT FROM sound_snapshots t WHERE t.fetch_id = ANY($1) AND t.fetch_id = s.fetch_id)
         RETURNING 1),
     w AS (INSERT INTO trend_windows (",
    window_columns!(),
    ") SELECT ",
    window_columns!(),
    " FROM replay_windows s WHERE NOT EXISTS (
         SELECT FROM trend_windows t
         WHERE t.clip_id = ANY($2) AND t.fetch_id = ANY($1)
           AND t.clip_id = s.clip_id AND t.region = s.region AND t.fetch_id = s.fetch_id)
         RETURNING 1),
     o AS (INSERT INTO trend_observations (",
    observation_columns!(),
    ") SELECT ",
    observation_columns!(),
    " FROM replay_observations s WHERE NOT EXISTS (
         SELECT FROM trend_observations t
         WHERE t.fetch_id = ANY($1) AND t.fetch_id = s.fetch_id AND t.ts = s.ts)
         RETURNING 1)
     SELECT (SELECT count(*) FROM s) + (SELECT count(*) FROM w) + (SELECT count(*) FROM o)"
);

/// Gathers planner statistics for the tables a replay joins against its batches, where they have
/// none or are stale by autovacuum's own default rule (10 % of the rows changed since): a replay
/// right after a bulk load, or on a server whose autovacuum is off or behind, would otherwise
/// plan its merges on guesses (a `= ANY` of 5,000 ids guessed to match the whole table). Returns
/// the tables (partitions) analyzed.
pub async fn analyze_stale(pool: &sqlx::PgPool) -> sqlx::Result<Vec<String>> {
    let stale = sqlx::query_scalar!(
        r#"SELECT format('%I.%I', schemaname, relname) AS "name!"
           FROM pg_stat_user_tables
           WHERE (relid = ANY(ARRAY['sound_snapshots', 'trend_windows', 'trend_points']::regclass[])
                  OR relid IN (SELECT inhrelid FROM pg_inherits
                               WHERE inhparent = 'trend_observations'::regclass))
             AND ((coalesce(last_analyze, last_autoanalyze) IS NULL
                   AND n_live_tup + n_mod_since_analyze > 0)
                  OR n_mod_since_analyze > 0.1 * n_live_tup + 50)
           ORDER BY 1"#
    )
    .fetch_all(pool)
    .await?;
    for table in &stale {
        sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {table}")))
            .execute(pool)
            .await?;
    }
    Ok(stale)
}

/// Writes the same rows as [`write`], by ONE statement of `UNNEST` inserts instead of a `COPY`
/// per table (then the lists and the shared upserts, as [`write`] does), for the few answers of
/// a group commit: `COPY` costs a round trip per table, and
/// sqlx sends its end-of-data in a packet of its own that waits for the server's delayed ACK
/// (some 40 ms, Nagle's algorithm) — nothing against a batch of thousands, everything against
/// a handful.
pub async fn insert(
    conn: &mut PgConnection,
    batch: &[Replayed<'_>],
) -> Result<BulkWritten, sqlx::Error> {
    if batch.is_empty() {
        return Ok(BulkWritten::default());
    }
    let each =
        |f: fn(&Replayed<'_>) -> Option<i32>| -> Vec<Option<i32>> { batch.iter().map(f).collect() };
    let json = |f: fn(&Normalized) -> Option<&Value>| -> Vec<Option<String>> {
        batch
            .iter()
            .map(|r| f(r.rows).map(ToString::to_string))
            .collect()
    };
    let windows: Vec<(String, String)> = batch
        .iter()
        .map(|r| {
            let w = trend::new_window(r.fetch_id, r.observed_at, &r.rows.trend);
            (
                literal(w.points.iter().map(|p| p.0)),
                literal(w.points.iter().map(|p| p.1)),
            )
        })
        .collect();
    let points = Flat::of(batch, |r| r.rows.trend.iter().map(|t| (t.ts, t.value)));
    let lists = Lists::of(batch);
    let r = sqlx::query!(
        r#"
WITH a AS (
    SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int2[], $5::timestamptz[])
        AS a(fetch_id, clip_id, region, period, observed_at)
),
snap AS (
    INSERT INTO sound_snapshots (fetch_id, clip_id, region, period, observed_at, country_code,
        rank, rank_diff, on_list_times, popular_days, current_popularity, like_count, liked,
        disliked, trend_points, audience_ages, related_items, countries_list, interests_list)
    SELECT u.fetch_id, a.clip_id, a.region, a.period, a.observed_at, u.country_code, u.rank,
           u.rank_diff, u.on_list_times, u.popular_days, u.current_popularity, u.like_count,
           u.liked::jsonb, u.disliked::jsonb, u.trend_points, u.audience_ages::jsonb,
           u.related_items::jsonb, u.countries_list, u.interests_list
    FROM UNNEST($1::int8[], $6::text[], $7::int4[], $8::int4[], $9::int4[], $10::int4[],
                $11::float8[], $12::int8[], $13::text[], $14::text[], $15::int4[], $16::text[],
                $17::text[], $23::bytea[], $24::bytea[])
        AS u(fetch_id, country_code, rank, rank_diff, on_list_times, popular_days,
             current_popularity, like_count, liked, disliked, trend_points, audience_ages,
             related_items, countries_list, interests_list)
    JOIN a USING (fetch_id)
    RETURNING 1
),
tw AS (
    INSERT INTO trend_windows (fetch_id, clip_id, region, period, observed_at, days, vals)
    SELECT a.fetch_id, a.clip_id, a.region, a.period, a.observed_at, u.days::int4[],
           u.vals::float8[]
    FROM UNNEST($1::int8[], $18::text[], $19::text[]) AS u(fetch_id, days, vals)
    JOIN a USING (fetch_id)
    RETURNING 1
),
o AS (
    INSERT INTO trend_observations (fetch_id, clip_id, region, period, ts, value, observed_at)
    SELECT a.fetch_id, a.clip_id, a.region, a.period, u.ts, u.value, a.observed_at
    FROM UNNEST($20::int8[], $21::timestamptz[], $22::float8[]) AS u(fetch_id, ts, value)
    JOIN a USING (fetch_id)
    RETURNING 1
)
-- Data-modifying CTEs run to completion whether read or not (tw is not).
SELECT (SELECT count(*) FROM snap) AS "snapshots!", (SELECT count(*) FROM o) AS "observations!"
"#,
        &batch.iter().map(|r| r.fetch_id).collect::<Vec<_>>(),
        &batch.iter().map(|r| r.clip_id).collect::<Vec<_>>() as _,
        &batch.iter().map(|r| r.region).collect::<Vec<_>>() as _,
        &batch.iter().map(|r| r.period).collect::<Vec<_>>(),
        &batch.iter().map(|r| r.observed_at).collect::<Vec<_>>(),
        &batch
            .iter()
            .map(|r| r.rows.snapshot.country_code.as_deref())
            .collect::<Vec<_>>() as _,
        &each(|r| r.rows.snapshot.rank) as _,
        &each(|r| r.rows.snapshot.rank_diff) as _,
        &each(|r| r.rows.snapshot.on_list_times) as _,
        &each(|r| r.rows.snapshot.popular_days) as _,
        &batch
            .iter()
            .map(|r| r.rows.snapshot.current_popularity)
            .collect::<Vec<_>>() as _,
        &batch
            .iter()
            .map(|r| r.rows.snapshot.like_count)
            .collect::<Vec<_>>() as _,
        &json(|n| n.snapshot.liked.as_ref()) as _,
        &json(|n| n.snapshot.disliked.as_ref()) as _,
        &each(|r| i32::try_from(r.rows.trend.len()).ok()) as _,
        &json(|n| n.snapshot.audience_ages.as_ref()) as _,
        &json(|n| n.snapshot.related_items.as_ref()) as _,
        &windows.iter().map(|w| w.0.as_str()).collect::<Vec<_>>() as _,
        &windows.iter().map(|w| w.1.as_str()).collect::<Vec<_>>() as _,
        &points.fetch_id,
        &points.values.iter().map(|p| p.0).collect::<Vec<_>>(),
        &points.values.iter().map(|p| p.1).collect::<Vec<_>>(),
        &lists.snapshot_ids(|ids| ids.0.as_ref()) as _,
        &lists.snapshot_ids(|ids| ids.1.as_ref()) as _,
    )
    .fetch_one(&mut *conn)
    .await?;
    let upserted = lists_and_upserts(conn, batch, &lists).await?;
    Ok(BulkWritten {
        snapshots: count(r.snapshots),
        observations: count(r.observations),
        // A window per snapshot.
        changed: 2 * count(r.snapshots) + count(r.observations) + upserted,
        ..lists.entries()
    })
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `{1,2,3}`: an array as Postgres reads it from text (floats in Rust's exact shortest form).
fn literal<T: Display>(items: impl Iterator<Item = T>) -> String {
    let mut s = String::from("{");
    for (i, v) in items.enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{v}");
    }
    s.push('}');
    s
}

/// Per-answer lists flattened into parallel arrays, each element with its answer's fetch id.
struct Flat<T> {
    fetch_id: Vec<i64>,
    values: Vec<T>,
}

impl<T> Flat<T> {
    fn of<'b, I: Iterator<Item = T>>(
        batch: &'b [Replayed<'b>],
        items: impl Fn(&'b Replayed<'b>) -> I,
    ) -> Self {
        let mut out = Flat {
            fetch_id: Vec::new(),
            values: Vec::new(),
        };
        for r in batch {
            for v in items(r) {
                out.fetch_id.push(r.fetch_id);
                out.values.push(v);
            }
        }
        out
    }
}

/// An answer's country and interest list ids.
type ListIds = (Option<ListId>, Option<ListId>);

/// The audience lists of a batch: each answer's two list ids, and each distinct list once.
struct Lists<'a> {
    /// Per answer, in batch order: its country and interest list ids.
    ids: Vec<ListIds>,
    /// The distinct lists, in id order (so two writers meet shared lists in the same order).
    countries: BTreeMap<ListId, &'a [AudienceRow]>,
    interests: BTreeMap<ListId, &'a [AudienceRow]>,
    /// Entries over every answer: the rows the `audience_*` views show for the batch.
    entries: (u64, u64),
}

impl<'a> Lists<'a> {
    fn of(batch: &'a [Replayed<'a>]) -> Self {
        let mut out = Lists {
            ids: Vec::with_capacity(batch.len()),
            countries: BTreeMap::new(),
            interests: BTreeMap::new(),
            entries: (0, 0),
        };
        for r in batch {
            let (c, i) = (&r.rows.countries, &r.rows.interests);
            let ids = (
                lists::list_id(r.clip_id, r.region, c),
                lists::list_id(r.clip_id, r.region, i),
            );
            if let Some(id) = ids.0 {
                out.countries.insert(id, c);
            }
            if let Some(id) = ids.1 {
                out.interests.insert(id, i);
            }
            out.entries.0 += c.len() as u64;
            out.entries.1 += i.len() as u64;
            out.ids.push(ids);
        }
        out
    }

    /// One list id per answer, for the snapshots: `which` picks countries (`.0`) or interests.
    fn snapshot_ids(&self, which: fn(&ListIds) -> Option<&ListId>) -> Vec<Option<&[u8]>> {
        self.ids
            .iter()
            .map(|ids| which(ids).map(|id| &id[..]))
            .collect()
    }

    fn entries(&self) -> BulkWritten {
        BulkWritten {
            countries: self.entries.0,
            interests: self.entries.1,
            ..BulkWritten::default()
        }
    }
}

/// A set of distinct lists flattened into one array per column, an entry per element.
#[derive(Default)]
struct ListColumns<'a> {
    list_id: Vec<&'a [u8]>,
    entries: AudienceColumns<'a>,
}

impl<'a> ListColumns<'a> {
    fn of(lists: &'a BTreeMap<ListId, &'a [AudienceRow]>) -> Self {
        let mut out = ListColumns::default();
        for (id, list) in lists {
            for e in *list {
                out.list_id.push(&id[..]);
                out.entries.push(e);
            }
        }
        out
    }
}

/// Stores the batch's distinct lists, skipping those the pair has stored already (same id, same
/// content). Lists are keyed by pair, and live and group writes hold the pair's lock, so they
/// never wait on each other here. Replay's writers take no pair locks: two of them meet shared
/// lists in id order (no deadlock between them); a replay beside a running daemon can deadlock
/// with a live poll of the same pair, as on `sounds` and `trend_points` before: Postgres aborts
/// one, and whichever write it was is written again (the live write, or the replay's batch).
async fn insert_lists(conn: &mut PgConnection, lists: &Lists<'_>) -> sqlx::Result<()> {
    if lists.countries.is_empty() && lists.interests.is_empty() {
        return Ok(());
    }
    let (c, i) = (
        ListColumns::of(&lists.countries),
        ListColumns::of(&lists.interests),
    );
    let (ce, ie) = (&c.entries, &i.entries);
    sqlx::query!(
        r#"
WITH ac AS (
    INSERT INTO audience_country_lists (list_id, position, provider_id, country_code,
                                        country_name, score)
    SELECT * FROM UNNEST($1::bytea[], $2::int2[], $3::text[], $4::text[], $5::text[],
                         $6::float8[])
    ON CONFLICT (list_id, position) DO NOTHING
)
INSERT INTO audience_interest_lists (list_id, position, interest_id, label, name, score)
SELECT * FROM UNNEST($7::bytea[], $8::int2[], $9::text[], $10::text[], $11::text[], $12::float8[])
ON CONFLICT (list_id, position) DO NOTHING
"#,
        &c.list_id as _,
        &ce.position,
        &ce.provider_id as _,
        &ce.code as _,
        &ce.name as _,
        &ce.score as _,
        &i.list_id as _,
        &ie.position,
        &ie.provider_id as _,
        &ie.code as _,
        &ie.name as _,
        &ie.score as _,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the audience-list entries no snapshot names any more, and returns how many
/// (countries, interests). A replay leaves such lists behind when today's rules derive a list
/// with a new id (a normalizer change) or take a fetch's snapshot away (an invalidated body);
/// no view shows them.
///
/// Every writer inserts the lists it names (`ON CONFLICT DO NOTHING` when stored) in its own
/// transaction, in or after the statement that writes the snapshot, and an insert holds ROW
/// EXCLUSIVE on the table until commit. SHARE ROW EXCLUSIVE waits for those writers to commit
/// (so their snapshots are seen) and makes later ones wait until this commits (so they insert
/// again what this deleted): no committed snapshot ever names a missing list. One table per
/// transaction: holding one lock while waiting for the other could deadlock with a writer that
/// takes them in the other order (the group insert's statement does).
pub async fn delete_unreferenced_lists(pool: &sqlx::PgPool) -> sqlx::Result<(u64, u64)> {
    let countries = delete_locked(
        pool,
        sqlx::query!("LOCK TABLE audience_country_lists IN SHARE ROW EXCLUSIVE MODE"),
        sqlx::query!(
            "DELETE FROM audience_country_lists l
             WHERE NOT EXISTS (SELECT 1 FROM sound_snapshots s WHERE s.countries_list = l.list_id)"
        ),
    )
    .await?;
    let interests = delete_locked(
        pool,
        sqlx::query!("LOCK TABLE audience_interest_lists IN SHARE ROW EXCLUSIVE MODE"),
        sqlx::query!(
            "DELETE FROM audience_interest_lists l
             WHERE NOT EXISTS (SELECT 1 FROM sound_snapshots s WHERE s.interests_list = l.list_id)"
        ),
    )
    .await?;
    Ok((countries, interests))
}

type Statement<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Runs `lock`, then `delete`, in one transaction; returns the rows deleted.
async fn delete_locked(
    pool: &sqlx::PgPool,
    lock: Statement<'_>,
    delete: Statement<'_>,
) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    lock.execute(&mut *tx).await?;
    let deleted = delete.execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

/// Re-labels archived attempts after re-validation; their bodies and credits stay as they were.
pub async fn set_outcomes(
    conn: &mut PgConnection,
    changes: &[(i64, Outcome, Option<String>)],
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = changes.iter().map(|c| c.0).collect();
    let outcomes: Vec<&str> = changes.iter().map(|c| c.1.as_str()).collect();
    let errors: Vec<Option<&str>> = changes.iter().map(|c| c.2.as_deref()).collect();
    sqlx::query!(
        "UPDATE fetches f SET outcome = u.outcome, error = u.error
         FROM UNNEST($1::int8[], $2::text[], $3::text[]) AS u(id, outcome, error)
         WHERE f.id = u.id",
        &ids,
        &outcomes as _,
        &errors as _,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The `COPY` statements of the three fetch-keyed tables, in [`copy_fetch_rows`]'s order:
/// snapshots, windows, observations.
type FetchCopies = [&'static str; 3];

macro_rules! copy_statements {
    ($snapshots:literal, $windows:literal, $observations:literal) => {
        [
            concat!(
                "COPY ",
                $snapshots,
                " (",
                snapshot_columns!(),
                ") FROM STDIN"
            ),
            concat!("COPY ", $windows, " (", window_columns!(), ") FROM STDIN"),
            concat!(
                "COPY ",
                $observations,
                " (",
                observation_columns!(),
                ") FROM STDIN"
            ),
        ]
    };
}

/// Into the tables themselves ([`write`]).
const TABLES: FetchCopies =
    copy_statements!("sound_snapshots", "trend_windows", "trend_observations");
/// Into the staging tables of [`merge`].
const STAGED: FetchCopies =
    copy_statements!("replay_snapshots", "replay_windows", "replay_observations");

/// Copies the batch's snapshots, windows and observations with `statements`; returns the rows
/// copied per table.
async fn copy_fetch_rows(
    conn: &mut PgConnection,
    statements: FetchCopies,
    batch: &[Replayed<'_>],
    lists: &Lists<'_>,
) -> sqlx::Result<[u64; 3]> {
    let [snaps, wins, obs] = statements;
    Ok([
        copy(conn, snaps, &snapshots(batch, lists)).await?,
        copy(conn, wins, &windows(batch)).await?,
        copy(conn, obs, &observations(batch)).await?,
    ])
}

/// What every bulk write ends with: the batch's distinct lists, then the shared upserts.
/// Returns the sounds and points inserted or changed.
async fn lists_and_upserts(
    conn: &mut PgConnection,
    batch: &[Replayed<'_>],
    lists: &Lists<'_>,
) -> sqlx::Result<u64> {
    insert_lists(conn, lists).await?;
    Ok(upsert_sounds(conn, batch).await? + upsert_trend_points(conn, batch).await?)
}

async fn copy(conn: &mut PgConnection, statement: &str, data: &CopyText) -> sqlx::Result<u64> {
    if data.rows == 0 {
        return Ok(0);
    }
    let mut sink = conn.copy_in_raw(statement).await?;
    sink.send(data.buf.as_bytes()).await?;
    sink.finish().await
}

fn snapshots(batch: &[Replayed<'_>], lists: &Lists<'_>) -> CopyText {
    let mut c = CopyText::default();
    for (r, ids) in batch.iter().zip(&lists.ids) {
        let n = &r.rows.snapshot;
        c.head(r);
        c.opt(n.country_code.as_deref());
        c.opt(n.rank);
        c.opt(n.rank_diff);
        c.opt(n.on_list_times);
        c.opt(n.popular_days);
        c.opt(n.current_popularity);
        c.opt(n.like_count);
        c.json(n.liked.as_ref());
        c.json(n.disliked.as_ref());
        c.val(r.rows.trend.len());
        c.json(n.audience_ages.as_ref());
        c.json(n.related_items.as_ref());
        c.bytes(ids.0.as_ref());
        c.bytes(ids.1.as_ref());
        c.end();
    }
    c
}

fn windows(batch: &[Replayed<'_>]) -> CopyText {
    let mut c = CopyText::default();
    for r in batch {
        let w = trend::new_window(r.fetch_id, r.observed_at, &r.rows.trend);
        c.head(r);
        c.array(w.points.iter().map(|p| p.0));
        c.array(w.points.iter().map(|p| p.1));
        c.end();
    }
    c
}

fn observations(batch: &[Replayed<'_>]) -> CopyText {
    let mut c = CopyText::default();
    for r in batch {
        for t in &r.rows.trend {
            c.val(r.fetch_id);
            c.opt(Some(r.clip_id));
            c.opt(Some(r.region));
            c.val(r.period);
            c.ts(t.ts);
            c.val(t.value);
            c.ts(r.observed_at);
            c.end();
        }
    }
    c
}

/// One upsert for the batch's sounds: per clip, the batch's newest observation with its earliest
/// first sighting, applied with the live write's newest-wins rule.
/// Returns the sounds inserted or changed.
async fn upsert_sounds<'a>(conn: &mut PgConnection, batch: &[Replayed<'a>]) -> sqlx::Result<u64> {
    let mut newest: HashMap<&str, (&Replayed<'a>, DateTime<Utc>)> = HashMap::new();
    for r in batch {
        let e = newest.entry(r.clip_id).or_insert((r, r.observed_at));
        e.1 = e.1.min(r.observed_at);
        if (r.observed_at, r.fetch_id) > (e.0.observed_at, e.0.fetch_id) {
            e.0 = r;
        }
    }
    let mut rows: Vec<_> = newest.into_values().collect();
    // A fixed order, so two writers touching the same sounds lock them in the same order.
    rows.sort_by_key(|(r, _)| r.clip_id);
    let col = |f: fn(&Replayed<'a>) -> Option<&'a str>| -> Vec<Option<&'a str>> {
        rows.iter().map(|(r, _)| f(r)).collect()
    };
    let flag = |f: fn(&Replayed<'a>) -> Option<bool>| -> Vec<Option<bool>> {
        rows.iter().map(|(r, _)| f(r)).collect()
    };
    let clip: Vec<&str> = rows.iter().map(|(r, _)| r.clip_id).collect();
    let duration: Vec<Option<i32>> = rows.iter().map(|(r, _)| r.rows.sound.duration).collect();
    let first_seen: Vec<DateTime<Utc>> = rows.iter().map(|(_, first)| *first).collect();
    let last_seen: Vec<DateTime<Utc>> = rows.iter().map(|(r, _)| r.observed_at).collect();
    let fetch: Vec<i64> = rows.iter().map(|(r, _)| r.fetch_id).collect();
    sqlx::query!(
        r#"
INSERT INTO sounds AS cur (clip_id, song_id, title, author, url_title, duration, cover, link,
                           music_url, if_cml, is_search, promoted, first_seen_at, last_seen_at,
                           last_fetch_id)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[],
                     $7::text[], $8::text[], $9::text[], $10::bool[], $11::bool[], $12::bool[],
                     $13::timestamptz[], $14::timestamptz[], $15::int8[])
-- The rule of the live write (store/ingest.rs): each column takes the new value when this
-- observation is not older than the stored one; first_seen_at is the earliest.
ON CONFLICT (clip_id) DO UPDATE SET
    first_seen_at = LEAST(cur.first_seen_at, EXCLUDED.first_seen_at),
    song_id = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
        THEN EXCLUDED.song_id ELSE cur.song_id END,
    title = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
        THEN EXCLUDED.title ELSE cur.title END,
    author = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
        THEN EXCLUDED.author ELSE cur.author END,
    url_title = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
        THEN EXCLUDED.url_title ELSE cur.url_title END,
    duration = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
        THEN EXCLUDED.duration ELSE cur.duration END,
    cover = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
        THEN EXCLUDED.cover ELSE cur.cover END,
    link = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
        THEN EXCLUDED.link ELSE cur.link END,
    music_url = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
        THEN EXCLUDED.music_url ELSE cur.music_url END,
    if_cml = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
        THEN EXCLUDED.if_cml ELSE cur.if_cml END,
    is_search = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
        THEN EXCLUDED.is_search ELSE cur.is_search END,
    promoted = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
        THEN EXCLUDED.promoted ELSE cur.promoted END,
    last_seen_at = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
        THEN EXCLUDED.last_seen_at ELSE cur.last_seen_at END,
    last_fetch_id = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
        THEN EXCLUDED.last_fetch_id ELSE cur.last_fetch_id END
-- Only where that changes the row: a replay over its own rows leaves them as they are.
WHERE EXCLUDED.first_seen_at < cur.first_seen_at
   OR ((cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)
       AND (cur.song_id, cur.title, cur.author, cur.url_title, cur.duration, cur.cover, cur.link,
            cur.music_url, cur.if_cml, cur.is_search, cur.promoted, cur.last_seen_at,
            cur.last_fetch_id)
           IS DISTINCT FROM
           (EXCLUDED.song_id, EXCLUDED.title, EXCLUDED.author, EXCLUDED.url_title,
            EXCLUDED.duration, EXCLUDED.cover, EXCLUDED.link, EXCLUDED.music_url,
            EXCLUDED.if_cml, EXCLUDED.is_search, EXCLUDED.promoted, EXCLUDED.last_seen_at,
            EXCLUDED.last_fetch_id))
"#,
        &clip as _,
        &col(|r| r.rows.sound.song_id.as_deref()) as _,
        &col(|r| r.rows.sound.title.as_deref()) as _,
        &col(|r| r.rows.sound.author.as_deref()) as _,
        &col(|r| r.rows.sound.url_title.as_deref()) as _,
        &duration as _,
        &col(|r| r.rows.sound.cover.as_deref()) as _,
        &col(|r| r.rows.sound.link.as_deref()) as _,
        &col(|r| r.rows.sound.music_url.as_deref()) as _,
        &flag(|r| r.rows.sound.if_cml) as _,
        &flag(|r| r.rows.sound.is_search) as _,
        &flag(|r| r.rows.sound.promoted) as _,
        &first_seen,
        &last_seen,
        &fetch,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// One upsert for the batch's daily points: per (clip, region, day) the batch's newest window,
/// which replaces the stored point only when it is not older (the live write's rule).
/// Returns the points inserted or changed.
async fn upsert_trend_points(conn: &mut PgConnection, batch: &[Replayed<'_>]) -> sqlx::Result<u64> {
    type Point<'a> = (
        &'a str,
        &'a str,
        DateTime<Utc>,
        f64,
        i64,
        i16,
        DateTime<Utc>,
    );
    let mut newest: HashMap<(&str, &str, DateTime<Utc>), Point<'_>> = HashMap::new();
    for r in batch {
        for t in &r.rows.trend {
            let p = (
                r.clip_id,
                r.region,
                t.ts,
                t.value,
                r.fetch_id,
                r.period,
                r.observed_at,
            );
            newest
                .entry((r.clip_id, r.region, t.ts))
                .and_modify(|old| {
                    if (p.6, p.4) > (old.6, old.4) {
                        *old = p;
                    }
                })
                .or_insert(p);
        }
    }
    let mut points: Vec<Point<'_>> = newest.into_values().collect();
    points.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    sqlx::query!(
        r#"
INSERT INTO trend_points AS cur (clip_id, region, ts, value, fetch_id, period, observed_at)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::int8[],
                     $6::int2[], $7::timestamptz[])
ON CONFLICT (clip_id, region, ts) DO UPDATE SET
    value = EXCLUDED.value, fetch_id = EXCLUDED.fetch_id,
    period = EXCLUDED.period, observed_at = EXCLUDED.observed_at
WHERE (cur.observed_at, cur.fetch_id) <= (EXCLUDED.observed_at, EXCLUDED.fetch_id)
  -- and only where that changes the row: a replay over its own rows leaves them as they are.
  AND (cur.value, cur.fetch_id, cur.period, cur.observed_at)
      IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.fetch_id, EXCLUDED.period, EXCLUDED.observed_at)
"#,
        &points.iter().map(|p| p.0).collect::<Vec<_>>() as _,
        &points.iter().map(|p| p.1).collect::<Vec<_>>() as _,
        &points.iter().map(|p| p.2).collect::<Vec<_>>(),
        &points.iter().map(|p| p.3).collect::<Vec<_>>(),
        &points.iter().map(|p| p.4).collect::<Vec<_>>(),
        &points.iter().map(|p| p.5).collect::<Vec<_>>(),
        &points.iter().map(|p| p.6).collect::<Vec<_>>(),
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// Rows in Postgres' `COPY` text format: tab-separated, `\N` for NULL, backslash escapes.
#[derive(Debug, Default)]
struct CopyText {
    buf: String,
    rows: u64,
    /// Whether the next field starts a row (no tab before it).
    at_start: bool,
}

impl CopyText {
    /// The columns every fetch-keyed row starts with: fetch, clip, region, period, `observed_at`.
    fn head(&mut self, r: &Replayed<'_>) {
        self.val(r.fetch_id);
        self.opt(Some(r.clip_id));
        self.opt(Some(r.region));
        self.val(r.period);
        self.ts(r.observed_at);
    }

    fn sep(&mut self) {
        if self.at_start || self.buf.is_empty() || self.buf.ends_with('\n') {
            self.at_start = false;
        } else {
            self.buf.push('\t');
        }
    }

    fn val(&mut self, v: impl Display) {
        self.sep();
        // Numbers only: their Display needs no escaping, and f64's is the shortest exact one.
        let _ = write!(self.buf, "{v}");
    }

    fn opt<T: CopyField>(&mut self, v: Option<T>) {
        self.sep();
        match v {
            None => self.buf.push_str("\\N"),
            Some(v) => v.put(&mut self.buf),
        }
    }

    /// To the microsecond, truncated as sqlx's binary encoding truncates (Postgres would round
    /// more digits), so a live answer's time reads the same in every table whichever way it went.
    fn ts(&mut self, t: DateTime<Utc>) {
        self.sep();
        self.buf
            .push_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true));
    }

    fn bytes(&mut self, v: Option<&ListId>) {
        self.opt(v.map(lists::hex).as_deref());
    }

    fn json(&mut self, v: Option<&Value>) {
        self.opt(v.map(ToString::to_string).as_deref());
    }

    /// A one-dimensional array of numbers: `{1,2,3}`.
    fn array<T: Display>(&mut self, items: impl Iterator<Item = T>) {
        self.sep();
        self.buf.push('{');
        for (i, v) in items.enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            let _ = write!(self.buf, "{v}");
        }
        self.buf.push('}');
    }

    fn end(&mut self) {
        self.buf.push('\n');
        self.rows += 1;
        self.at_start = true;
    }
}

/// A value as one `COPY` text field.
trait CopyField {
    fn put(self, buf: &mut String);
}

impl CopyField for &str {
    fn put(self, buf: &mut String) {
        for ch in self.chars() {
            match ch {
                '\\' => buf.push_str("\\\\"),
                '\t' => buf.push_str("\\t"),
                '\n' => buf.push_str("\\n"),
                '\r' => buf.push_str("\\r"),
                c => buf.push(c),
            }
        }
    }
}

macro_rules! copy_number {
    ($($t:ty),*) => {$(
        impl CopyField for $t {
            fn put(self, buf: &mut String) {
                let _ = write!(buf, "{self}");
            }
        }
    )*};
}
copy_number!(i16, i32, i64, f64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_null_is_backslash_n() {
        let mut c = CopyText::default();
        c.opt(Some("a\tb\\c\nd\re"));
        c.opt(None::<&str>);
        c.val(1.5);
        c.end();
        c.array([1, 2].into_iter());
        c.end();
        assert_eq!(c.buf, "a\\tb\\\\c\\nd\\re\t\\N\t1.5\n{1,2}\n");
        assert_eq!(c.rows, 2);
    }

    #[test]
    fn floats_are_written_exactly() {
        for v in [0.1 + 0.2, 1e-7, 123_456.789_012_345_67, f64::MIN_POSITIVE] {
            let mut c = CopyText::default();
            c.val(v);
            assert_eq!(c.buf.parse::<f64>().unwrap(), v);
        }
    }

    #[test]
    fn times_are_truncated_to_the_microsecond_as_the_binary_encoding_does() {
        let t = DateTime::parse_from_rfc3339("2026-12-07T06:33:24.805128999Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut c = CopyText::default();
        c.ts(t);
        assert_eq!(c.buf, "2026-12-07T06:33:24.805128Z");
    }
}
