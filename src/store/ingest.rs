//! Writing a poll's answer (a failed poll is [`super::failure`]'s). It is one transaction: the
//! pair's advisory lock (sent with `BEGIN`); the fetch row ([`fetches::record`]); ONE statement
//! for the sound upsert, the snapshot, the trend upserts, the window (`trend_windows`,
//! `trend_observations`), both audience lists and the watchlist bookkeeping, with every list
//! bound as an array and expanded by `UNNEST`, which also returns the pair's earlier windows; and
//! the re-stitched `trend_index` rows of the pair (see [`super::trend`]). Nothing can be
//! half-written.
//!
//! Bookkeeping is fenced on the lease: when the entry's `lease_token` is no longer ours, the data
//! is still stored (a paid answer is never thrown away) but the watchlist row is left alone.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::fetches::{self, FetchRecord};
use super::{trend, StoreError};
use crate::normalize::stitch::Window;
use crate::normalize::{lists, AudienceRow, Normalized};

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
    #[must_use]
    pub fn rows(&self) -> i64 {
        2 + self.trend_points + self.countries + self.interests
    }
}

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
    let data = write_data(
        &mut tx,
        recorded.fetch_id,
        fetch,
        rows,
        Some(Live { lease, jitter }),
    )
    .await?;
    let mut windows = data.earlier_windows;
    windows.push(trend::new_window(
        recorded.fetch_id,
        fetch.requested_at,
        &rows.trend,
    ));
    trend::write_stitched(
        &mut *tx,
        fetch.clip_id,
        fetch.region,
        &windows,
        recorded.fetch_id,
    )
    .await?;
    let written = Written {
        lease_lost: !recorded.lease_held,
        ..data.written
    };
    tx.commit().await?;
    Ok(written)
}

/// A live poll's extras: its lease fences the watchlist bookkeeping; `jitter` spreads the next due.
struct Live {
    lease: Option<Uuid>,
    jitter: f64,
}

/// What [`write_data`] stored, and the pair's windows stored before it (live polls only).
struct DataWritten {
    written: Written,
    earlier_windows: Vec<Window>,
}

/// The one statement behind every stored answer, readable top to bottom: the sound upsert, the
/// snapshot, the trend upserts, the window (`trend_windows`, `trend_observations`), both audience
/// lists, and, for a live poll, the watchlist bookkeeping (fenced on the lease) and the provider's
/// auth flag. Every list is bound as an array and expanded by `UNNEST`. A live poll's result also
/// carries the pair's stored windows as of the statement's start (so without this fetch's own),
/// read under the pair's lock taken with `BEGIN`: one round trip less than reading them apart.
/// Every write is an idempotent upsert keyed on the fetch, so a replay rebuilds exactly what the
/// live poll wrote.
async fn write_data(
    conn: &mut PgConnection,
    fetch_id: i64,
    fetch: &FetchRecord<'_>,
    rows: &Normalized,
    live: Option<Live>,
) -> Result<DataWritten, sqlx::Error> {
    let (s, n) = (&rows.sound, &rows.snapshot);
    let trend_ts: Vec<DateTime<Utc>> = rows.trend.iter().map(|t| t.ts).collect();
    let trend_values: Vec<f64> = rows.trend.iter().map(|t| t.value).collect();
    let countries = AudienceColumns::of(&rows.countries);
    let interests = AudienceColumns::of(&rows.interests);
    let countries_list = lists::list_id(fetch.clip_id, fetch.region, &rows.countries);
    let interests_list = lists::list_id(fetch.clip_id, fetch.region, &rows.interests);
    let window = trend::new_window(0, fetch.requested_at, &rows.trend);
    let (window_days, window_values): (Vec<i32>, Vec<f64>) = window.points.into_iter().unzip();
    let (is_live, lease, jitter) = live.map_or((false, None, 0.0), |l| (true, l.lease, l.jitter));
    let r = sqlx::query!(
        r#"
WITH w AS (
    -- Bookkeeping only while the lease ($8) is still ours: a late answer is stored all the same
    -- (a paid answer is never thrown away), its entry is left to the lease holder.
    UPDATE watchlist SET
        last_polled_at = $5, last_success_at = $5, consecutive_failures = 0,
        not_found_count = 0, last_error = NULL,
        next_due_at = now() + poll_interval * (1 + $9::float8 * (2 * random() - 1)),
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
    WHERE $7 AND clip_id = $1 AND region = $2 AND lease_token = $8
    RETURNING 1
),
pq AS (
    -- A provider that answers has working credentials again.
    UPDATE provider_quota SET auth_failed_at = NULL, auth_error = NULL
    WHERE $7 AND provider = $4 AND auth_failed_at IS NOT NULL
    RETURNING 1
),
s AS (
    INSERT INTO sounds AS cur (clip_id, song_id, title, author, url_title, duration, cover, link,
                               music_url, if_cml, is_search, promoted, first_seen_at,
                               last_seen_at, last_fetch_id)
    VALUES ($1, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $5, $5, $6)
    -- The newest observation's metadata wins and first_seen_at is the earliest, whatever order
    -- concurrent polls and replays arrive in, so a replay rebuilds exactly what live polls wrote:
    -- each column takes the new value when this observation ($5, $6) is not older than the stored.
    ON CONFLICT (clip_id) DO UPDATE SET
        first_seen_at = LEAST(cur.first_seen_at, EXCLUDED.first_seen_at),
        song_id = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= ($5, $6)
            THEN EXCLUDED.song_id ELSE cur.song_id END,
        title = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= ($5, $6)
            THEN EXCLUDED.title ELSE cur.title END,
        author = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= ($5, $6)
            THEN EXCLUDED.author ELSE cur.author END,
        url_title = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= ($5, $6)
            THEN EXCLUDED.url_title ELSE cur.url_title END,
        duration = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= ($5, $6)
            THEN EXCLUDED.duration ELSE cur.duration END,
        cover = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= ($5, $6)
            THEN EXCLUDED.cover ELSE cur.cover END,
        link = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= ($5, $6)
            THEN EXCLUDED.link ELSE cur.link END,
        music_url = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= ($5, $6)
            THEN EXCLUDED.music_url ELSE cur.music_url END,
        if_cml = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= ($5, $6)
            THEN EXCLUDED.if_cml ELSE cur.if_cml END,
        is_search = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= ($5, $6)
            THEN EXCLUDED.is_search ELSE cur.is_search END,
        promoted = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= ($5, $6)
            THEN EXCLUDED.promoted ELSE cur.promoted END,
        last_seen_at = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= ($5, $6)
            THEN EXCLUDED.last_seen_at ELSE cur.last_seen_at END,
        last_fetch_id = CASE WHEN (cur.last_seen_at, cur.last_fetch_id) <= ($5, $6)
            THEN EXCLUDED.last_fetch_id ELSE cur.last_fetch_id END
    RETURNING 1
),
snap AS (
    INSERT INTO sound_snapshots AS cur (fetch_id, clip_id, region, period, observed_at,
        country_code, rank, rank_diff, on_list_times, popular_days, current_popularity,
        like_count, liked, disliked, trend_points, audience_ages, related_items,
        countries_list, interests_list)
    VALUES ($6, $1, $2, $3, $5, $21, $22, $23, $24, $25, $26, $27, $28, $29,
            cardinality($32::timestamptz[]), $30, $31, $46, $47)
    ON CONFLICT (fetch_id) DO UPDATE SET
        countries_list = EXCLUDED.countries_list, interests_list = EXCLUDED.interests_list,
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
    SELECT $1, $2, u.ts, u.value, $6, $3, $5
    FROM UNNEST($32::timestamptz[], $33::float8[]) AS u(ts, value)
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
    VALUES ($6, $1, $2, $3, $5, $44::int4[], $45::float8[])
    ON CONFLICT (clip_id, region, fetch_id) DO UPDATE SET
        observed_at = EXCLUDED.observed_at, days = EXCLUDED.days, vals = EXCLUDED.vals
    RETURNING 1
),
o AS (
    -- Every point of the window, append-only: the history analysts read trend_index against.
    INSERT INTO trend_observations (fetch_id, clip_id, region, period, ts, value, observed_at)
    SELECT $6, $1, $2, $3, u.ts, u.value, $5
    FROM UNNEST($32::timestamptz[], $33::float8[]) AS u(ts, value)
    ON CONFLICT DO NOTHING
    RETURNING 1
),
ac AS (
    -- A list is stored once per pair and content (its id is their digest): a repeat of a stored
    -- list adds nothing but the snapshot's reference.
    INSERT INTO audience_country_lists (list_id, position, provider_id, country_code,
                                        country_name, score)
    SELECT $46, u.position, u.pid, u.code, u.name, u.score
    FROM UNNEST($34::int2[], $35::text[], $36::text[], $37::text[], $38::float8[])
         AS u(position, pid, code, name, score)
    ON CONFLICT (list_id, position) DO NOTHING
),
ai AS (
    INSERT INTO audience_interest_lists (list_id, position, interest_id, label, name, score)
    SELECT $47, u.position, u.iid, u.label, u.name, u.score
    FROM UNNEST($39::int2[], $40::text[], $41::text[], $42::text[], $43::float8[])
         AS u(position, iid, label, name, score)
    ON CONFLICT (list_id, position) DO NOTHING
)
-- Data-modifying CTEs run to completion whether read or not (ac and ai are not).
SELECT (SELECT count(*) FROM t) AS "trend_points!",
       h.fetch_ids, h.observed, h.days, h.vals
FROM (SELECT 1) one LEFT JOIN LATERAL (
    SELECT array_agg(w.fetch_id) AS fetch_ids, array_agg(w.observed_at) AS observed,
           array_agg(d.day) AS days, array_agg(d.val) AS vals
    FROM (SELECT fetch_id, observed_at, days, vals FROM trend_windows
          WHERE $7 AND clip_id = $1 AND region = $2 ORDER BY fetch_id) w,
         LATERAL unnest(w.days, w.vals) AS d(day, val)
) h ON true
"#,
        fetch.clip_id,
        fetch.region,
        fetch.period,
        fetch.provider.as_str(),
        fetch.requested_at,
        fetch_id,
        is_live,
        lease,
        jitter,
        s.song_id,
        s.title,
        s.author,
        s.url_title,
        s.duration,
        s.cover,
        s.link,
        s.music_url,
        s.if_cml,
        s.is_search,
        s.promoted,
        n.country_code,
        n.rank,
        n.rank_diff,
        n.on_list_times,
        n.popular_days,
        n.current_popularity,
        n.like_count,
        n.liked,
        n.disliked,
        n.audience_ages,
        n.related_items,
        &trend_ts,
        &trend_values,
        &countries.position,
        &countries.provider_id as _,
        &countries.code as _,
        &countries.name as _,
        &countries.score as _,
        &interests.position,
        &interests.provider_id as _,
        &interests.code as _,
        &interests.name as _,
        &interests.score as _,
        &window_days,
        &window_values,
        countries_list.as_ref().map(|id| &id[..]),
        interests_list.as_ref().map(|id| &id[..]),
    )
    .fetch_one(conn)
    .await?;
    Ok(DataWritten {
        written: Written {
            fetch_id,
            trend_points: r.trend_points,
            countries: count(&rows.countries),
            interests: count(&rows.interests),
            lease_lost: false,
        },
        earlier_windows: trend::assemble(
            r.fetch_ids.unwrap_or_default(),
            r.observed.unwrap_or_default(),
            r.days.unwrap_or_default(),
            r.vals.unwrap_or_default(),
        ),
    })
}

/// Entries of an audience list: the rows `audience_countries` / `audience_interests` show for it.
fn count(list: &[AudienceRow]) -> i64 {
    i64::try_from(list.len()).unwrap_or(i64::MAX)
}

/// Audience entries as one array per column, for `UNNEST` (here one list; in
/// [`super::bulk`] a batch's distinct lists).
#[derive(Default)]
pub(super) struct AudienceColumns<'a> {
    pub(super) position: Vec<i16>,
    pub(super) provider_id: Vec<Option<&'a str>>,
    pub(super) code: Vec<Option<&'a str>>,
    pub(super) name: Vec<Option<&'a str>>,
    pub(super) score: Vec<Option<f64>>,
}

impl<'a> AudienceColumns<'a> {
    fn of(list: &'a [AudienceRow]) -> Self {
        let mut out = Self::default();
        for e in list {
            out.push(e);
        }
        out
    }

    pub(super) fn push(&mut self, e: &'a AudienceRow) {
        self.position.push(e.position);
        self.provider_id.push(e.provider_id.as_deref());
        self.code.push(e.code.as_deref());
        self.name.push(e.name.as_deref());
        self.score.push(e.score);
    }
}
