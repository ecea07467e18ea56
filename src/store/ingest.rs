//! Writing a poll's result. A success is one transaction: the pair's advisory lock (sent with
//! `BEGIN`); the fetch row ([`fetches::record`]); ONE statement for the sound upsert, the snapshot,
//! the trend upserts, the window (`trend_windows`, `trend_observations`), both audience lists and
//! the watchlist bookkeeping, with every list bound as an array and expanded by `UNNEST`, which also
//! returns the pair's earlier windows; and the re-stitched `trend_index` rows of the pair (see
//! [`super::trend`]). Nothing can be half-written.
//!
//! Bookkeeping is fenced on the lease: when the entry's `lease_token` is no longer ours, the data
//! is still stored (a paid answer is never thrown away) but the watchlist row is left alone.

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, PgPool, Postgres, Row};
use uuid::Uuid;

use super::fetches::{self, FetchRecord};
use super::{trend, StoreError};
use crate::normalize::Normalized;

/// What a successful write stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    pub fetch_id: i64,
    pub trend_points: i64,
    pub countries: i64,
    pub interests: i64,
    /// The answer came back after the lease was lost: stored, bookkeeping left to the holder.
    pub lease_lost: bool,
}

impl Written {
    /// Rows written to the data tables: sound, snapshot, trend points, audiences.
    pub fn rows(&self) -> i64 {
        2 + self.trend_points + self.countries + self.interests
    }
}

/// The derived-table CTEs shared by a live poll and a replay. They read the fetch id from a CTE
/// named `f` and the observation from $1 clip_id, $2 region, $3 period, $5 observed_at.
static DERIVED_CTES: LazyLock<String> = LazyLock::new(|| {
    DERIVED_CTES_TEMPLATE.replace("{sound_metadata_update}", &sound_metadata_update())
});

/// `col = CASE WHEN <the excluded row is the newer observation> THEN EXCLUDED.col ELSE cur.col END`
/// for every metadata column of `sounds`.
fn sound_metadata_update() -> String {
    const COLUMNS: [&str; 13] = [
        "song_id",
        "title",
        "author",
        "url_title",
        "duration",
        "cover",
        "link",
        "music_url",
        "if_cml",
        "is_search",
        "promoted",
        "last_seen_at",
        "last_fetch_id",
    ];
    const NEWER: &str =
        "(cur.last_seen_at, cur.last_fetch_id) <= (EXCLUDED.last_seen_at, EXCLUDED.last_fetch_id)";
    COLUMNS
        .iter()
        .map(|c| format!("        {c} = CASE WHEN {NEWER} THEN EXCLUDED.{c} ELSE cur.{c} END"))
        .collect::<Vec<_>>()
        .join(",\n")
}

const DERIVED_CTES_TEMPLATE: &str = r#"
s AS (
    INSERT INTO sounds AS cur (clip_id, song_id, title, author, url_title, duration, cover, link,
                               music_url, if_cml, is_search, promoted, first_seen_at,
                               last_seen_at, last_fetch_id)
    SELECT $1, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $5, $5, f.id FROM f
    -- The newest observation's metadata wins and first_seen_at is the earliest, whatever order
    -- concurrent polls and replays arrive in, so a replay rebuilds exactly what live polls wrote.
    ON CONFLICT (clip_id) DO UPDATE SET
        first_seen_at = LEAST(cur.first_seen_at, EXCLUDED.first_seen_at),
{sound_metadata_update}
    RETURNING 1
),
snap AS (
    INSERT INTO sound_snapshots AS cur (fetch_id, clip_id, region, period, observed_at,
        country_code, rank, rank_diff, on_list_times, popular_days, current_popularity,
        like_count, liked, disliked, trend_points, audience_ages, related_items)
    SELECT f.id, $1, $2, $3, $5, $28, $29, $30, $31, $32, $33, $34, $35, $36,
           cardinality($39::timestamptz[]), $37, $38
    FROM f
    ON CONFLICT (fetch_id) DO UPDATE SET
        country_code = EXCLUDED.country_code, rank = EXCLUDED.rank,
        rank_diff = EXCLUDED.rank_diff, on_list_times = EXCLUDED.on_list_times,
        popular_days = EXCLUDED.popular_days, current_popularity = EXCLUDED.current_popularity,
        like_count = EXCLUDED.like_count, liked = EXCLUDED.liked, disliked = EXCLUDED.disliked,
        trend_points = EXCLUDED.trend_points, audience_ages = EXCLUDED.audience_ages,
        related_items = EXCLUDED.related_items
    RETURNING 1
),
t AS (
    INSERT INTO trend_points AS cur (clip_id, region, ts, value, fetch_id, period, observed_at)
    SELECT $1, $2, u.ts, u.value, f.id, $3, $5
    FROM f, UNNEST($39::timestamptz[], $40::float8[]) AS u(ts, value)
    ON CONFLICT (clip_id, region, ts) DO UPDATE SET
        value = EXCLUDED.value, fetch_id = EXCLUDED.fetch_id,
        period = EXCLUDED.period, observed_at = EXCLUDED.observed_at
    -- The newest window wins the days it covers; an older one never overwrites a newer one.
    WHERE (cur.observed_at, cur.fetch_id) <= (EXCLUDED.observed_at, EXCLUDED.fetch_id)
    RETURNING 1
),
tw AS (
    -- The window as one row: what trend_index is stitched from.
    INSERT INTO trend_windows AS cur (fetch_id, clip_id, region, period, observed_at, days, vals)
    SELECT f.id, $1, $2, $3, $5, $51::int4[], $52::float8[] FROM f
    ON CONFLICT (clip_id, region, fetch_id) DO UPDATE SET
        observed_at = EXCLUDED.observed_at, days = EXCLUDED.days, vals = EXCLUDED.vals
    RETURNING 1
),
o AS (
    -- Every point of the window, append-only: the history trend_index is stitched from.
    INSERT INTO trend_observations (fetch_id, clip_id, region, period, ts, value, observed_at)
    SELECT f.id, $1, $2, $3, u.ts, u.value, $5
    FROM f, UNNEST($39::timestamptz[], $40::float8[]) AS u(ts, value)
    ON CONFLICT DO NOTHING
    RETURNING 1
),
ac AS (
    INSERT INTO audience_countries AS cur (fetch_id, position, clip_id, region, observed_at,
                                           country_code, country_name, provider_id, score)
    SELECT f.id, u.position, $1, $2, $5, u.code, u.name, u.pid, u.score
    FROM f, UNNEST($41::int2[], $42::text[], $43::text[], $44::text[], $45::float8[])
         AS u(position, pid, code, name, score)
    ON CONFLICT (fetch_id, position) DO UPDATE SET
        country_code = EXCLUDED.country_code, country_name = EXCLUDED.country_name,
        provider_id = EXCLUDED.provider_id, score = EXCLUDED.score
    RETURNING 1
),
ai AS (
    INSERT INTO audience_interests AS cur (fetch_id, position, clip_id, region, observed_at,
                                           interest_id, label, name, score)
    SELECT f.id, u.position, $1, $2, $5, u.iid, u.label, u.name, u.score
    FROM f, UNNEST($46::int2[], $47::text[], $48::text[], $49::text[], $50::float8[])
         AS u(position, iid, label, name, score)
    ON CONFLICT (fetch_id, position) DO UPDATE SET
        interest_id = EXCLUDED.interest_id, label = EXCLUDED.label, name = EXCLUDED.name,
        score = EXCLUDED.score
    RETURNING 1
)"#;

const DERIVED_SELECT: &str = r#"
SELECT f.id, (SELECT count(*) FROM t), (SELECT count(*) FROM ac), (SELECT count(*) FROM ai)
FROM f"#;

/// The live poll's result row also carries the pair's stored windows as of the statement's start
/// (so without this fetch's own), read under the pair's lock taken with `BEGIN`: one round trip
/// less than reading them apart.
const SUCCESS_SELECT: &str = r#"
SELECT f.id, (SELECT count(*) FROM t), (SELECT count(*) FROM ac), (SELECT count(*) FROM ai),
       h.fetch_ids, h.observed, h.days, h.vals
FROM f LEFT JOIN LATERAL (
    SELECT array_agg(w.fetch_id) AS fetch_ids, array_agg(w.observed_at) AS observed,
           array_agg(d.day) AS days, array_agg(d.val) AS vals
    FROM (SELECT fetch_id, observed_at, days, vals FROM trend_windows
          WHERE clip_id = $1 AND region = $2 ORDER BY fetch_id) w,
         LATERAL unnest(w.days, w.vals) AS d(day, val)
) h ON true"#;

/// A live poll's data: the fetch row was written just before in the same transaction ($53); the
/// watchlist bookkeeping applies only while the lease ($15) is still ours.
static SUCCESS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"WITH f AS (SELECT $53::bigint AS id),
w AS (
    UPDATE watchlist SET
        last_polled_at = $5, last_success_at = $5, consecutive_failures = 0,
        not_found_count = 0, last_error = NULL,
        next_due_at = now() + poll_interval * (1 + $16::float8 * (2 * random() - 1)),
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
    WHERE clip_id = $1 AND region = $2 AND lease_token = $15
    RETURNING 1
),
pq AS (
    UPDATE provider_quota SET auth_failed_at = NULL, auth_error = NULL
    WHERE provider = $4 AND auth_failed_at IS NOT NULL
    RETURNING 1
),{derived}{SUCCESS_SELECT}"#,
        derived = DERIVED_CTES.as_str()
    )
});

/// Replay: the fetch row exists ($53); only the derived tables are written.
static REPLAY_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"WITH f AS (SELECT $53::bigint AS id),{derived}{DERIVED_SELECT}"#,
        derived = DERIVED_CTES.as_str()
    )
});

/// Writes a successful poll and re-stitches the pair's `trend_index`, in one transaction. `lease`
/// is the claim's token (None for a clip not on the watchlist). A paid answer is never thrown
/// away: when the lease was lost meanwhile, the data is stored all the same (every write is an
/// idempotent upsert) and only the watchlist bookkeeping is left to the lease holder;
/// [`Written::lease_lost`] says so.
pub async fn record_success(
    db: &PgPool,
    fetch: &FetchRecord<'_>,
    rows: &Normalized,
    lease: Option<Uuid>,
    jitter: f64,
) -> Result<Written, StoreError> {
    let mut tx = db
        .begin_with(trend::begin_locked(fetch.clip_id, fetch.region))
        .await?;
    let recorded = fetches::record(&mut *tx, fetch, lease).await?;
    let query =
        bind_all(sqlx::query(&SUCCESS_SQL), fetch, rows, lease, jitter).bind(recorded.fetch_id);
    let row = query.fetch_one(&mut *tx).await?;
    let mut written = written(&row)?;
    written.lease_lost = !recorded.lease_held;
    let mut windows = trend::assemble(
        row.try_get::<Option<Vec<i64>>, _>(4)?.unwrap_or_default(),
        row.try_get::<Option<Vec<chrono::DateTime<chrono::Utc>>>, _>(5)?
            .unwrap_or_default(),
        row.try_get::<Option<Vec<i32>>, _>(6)?.unwrap_or_default(),
        row.try_get::<Option<Vec<f64>>, _>(7)?.unwrap_or_default(),
    );
    windows.push(trend::new_window(
        written.fetch_id,
        fetch.requested_at,
        &rows.trend,
    ));
    trend::write_stitched(
        &mut *tx,
        fetch.clip_id,
        fetch.region,
        &windows,
        written.fetch_id,
    )
    .await?;
    tx.commit().await?;
    Ok(written)
}

/// Rewrites the derived rows of an archived fetch and re-stitches its pair from the windows up
/// to it, as the live poll did (see `soundtrend replay`). Runs inside the caller's transaction.
pub async fn replay_derived(
    conn: &mut PgConnection,
    fetch_id: i64,
    fetch: &FetchRecord<'_>,
    rows: &Normalized,
) -> Result<Written, sqlx::Error> {
    trend::lock_pair(&mut *conn, fetch.clip_id, fetch.region).await?;
    let query = bind_all(sqlx::query(&REPLAY_SQL), fetch, rows, None, 0.0).bind(fetch_id);
    let written = written(&query.fetch_one(&mut *conn).await?)?;
    trend::restitch(conn, fetch.clip_id, fetch.region, Some(fetch_id), fetch_id).await?;
    Ok(written)
}

fn written(row: &PgRow) -> Result<Written, sqlx::Error> {
    Ok(Written {
        fetch_id: row.try_get(0)?,
        trend_points: row.try_get(1)?,
        countries: row.try_get(2)?,
        interests: row.try_get(3)?,
        lease_lost: false,
    })
}

/// How a failed poll moves its watchlist entry.
#[derive(Debug, Clone)]
pub struct FailureBookkeeping {
    /// Base of the exponential backoff: the entry is due again after
    /// `failure_backoff * 2^(failures - 1)`, capped at its poll_interval.
    pub failure_backoff: Duration,
    /// Not due again before this (a provider's Retry-After that outlasts the poll).
    pub not_before: Duration,
    /// The provider said the clip does not exist.
    pub not_found: bool,
    /// Disable the entry once `not_found_count` reaches this.
    pub disable_after_not_found: u32,
}

/// Records the final failed attempt of a poll and, if the lease is still ours, counts the failure
/// on the entry, in one transaction. Returns whether the entry is now disabled.
pub async fn record_failure(
    db: &PgPool,
    fetch: &FetchRecord<'_>,
    lease: Option<Uuid>,
    book: &FailureBookkeeping,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    fetches::record(&mut *tx, fetch, lease).await?;
    let disabled: Option<bool> = sqlx::query_scalar(
        r#"UPDATE watchlist SET
    last_polled_at = $3,
    -- Bounded by watchlist_consecutive_failures_at_most_1000000: never overflows.
    consecutive_failures = LEAST(consecutive_failures + 1, 1000000),
    last_error = $4,
    next_due_at = now() + GREATEST(
        LEAST(poll_interval,
              make_interval(secs => $6::float8 * power(2, LEAST(consecutive_failures, 30)))),
        make_interval(secs => $9::float8)),
    not_found_count = CASE WHEN $7 THEN LEAST(not_found_count + 1, 1000000) ELSE 0 END,
    enabled = enabled AND NOT ($7 AND not_found_count + 1 >= $8),
    disabled_reason = CASE WHEN $7 AND not_found_count + 1 >= $8
        THEN format('the provider said the clip does not exist %s polls in a row: %s',
                    not_found_count + 1, $4)
        ELSE disabled_reason END,
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
WHERE clip_id = $1 AND region = $2 AND lease_token = $5
RETURNING NOT enabled"#,
    )
    .bind(fetch.clip_id)
    .bind(fetch.region)
    .bind(fetch.requested_at)
    .bind(fetch.error.as_deref())
    .bind(lease)
    .bind(book.failure_backoff.as_secs_f64())
    .bind(book.not_found)
    .bind(i32::try_from(book.disable_after_not_found).unwrap_or(i32::MAX))
    .bind(book.not_before.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(disabled.unwrap_or(false))
}

fn bind_all<'q>(
    q: Query<'q, Postgres, PgArguments>,
    fetch: &'q FetchRecord<'q>,
    rows: &'q Normalized,
    lease: Option<Uuid>,
    jitter: f64,
) -> Query<'q, Postgres, PgArguments> {
    let s = &rows.sound;
    let n = &rows.snapshot;
    let trend_ts: Vec<_> = rows.trend.iter().map(|t| t.ts).collect();
    let trend_values: Vec<f64> = rows.trend.iter().map(|t| t.value).collect();
    let col = |list: &'q [crate::normalize::AudienceRow]| {
        (
            list.iter().map(|r| r.position).collect::<Vec<i16>>(),
            list.iter()
                .map(|r| r.provider_id.as_deref())
                .collect::<Vec<_>>(),
            list.iter().map(|r| r.code.as_deref()).collect::<Vec<_>>(),
            list.iter().map(|r| r.name.as_deref()).collect::<Vec<_>>(),
            list.iter().map(|r| r.score).collect::<Vec<Option<f64>>>(),
        )
    };
    let (c_pos, c_id, c_code, c_name, c_score) = col(&rows.countries);
    let (i_pos, i_id, i_label, i_name, i_score) = col(&rows.interests);
    let window = trend::new_window(0, fetch.requested_at, &rows.trend);
    let (window_days, window_values): (Vec<i32>, Vec<f64>) = window.points.into_iter().unzip();
    q.bind(fetch.clip_id)
        .bind(fetch.region)
        .bind(fetch.period)
        .bind(fetch.provider.as_str())
        .bind(fetch.requested_at)
        .bind(fetch.duration_ms)
        .bind(fetch.http_status)
        .bind(fetch.api_code)
        .bind(fetch.api_message)
        .bind(fetch.request_id)
        .bind(fetch.attempt)
        .bind(fetch.credits)
        .bind(fetch.body_json)
        .bind(fetch.body_text.as_deref())
        .bind(lease)
        .bind(jitter)
        .bind(s.song_id.as_deref())
        .bind(s.title.as_deref())
        .bind(s.author.as_deref())
        .bind(s.url_title.as_deref())
        .bind(s.duration)
        .bind(s.cover.as_deref())
        .bind(s.link.as_deref())
        .bind(s.music_url.as_deref())
        .bind(s.if_cml)
        .bind(s.is_search)
        .bind(s.promoted)
        .bind(n.country_code.as_deref())
        .bind(n.rank)
        .bind(n.rank_diff)
        .bind(n.on_list_times)
        .bind(n.popular_days)
        .bind(n.current_popularity)
        .bind(n.like_count)
        .bind(n.liked.as_ref())
        .bind(n.disliked.as_ref())
        .bind(n.audience_ages.as_ref())
        .bind(n.related_items.as_ref())
        .bind(trend_ts)
        .bind(trend_values)
        .bind(c_pos)
        .bind(c_id)
        .bind(c_code)
        .bind(c_name)
        .bind(c_score)
        .bind(i_pos)
        .bind(i_id)
        .bind(i_label)
        .bind(i_name)
        .bind(i_score)
        .bind(window_days)
        .bind(window_values)
}
