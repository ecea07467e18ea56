//! What the report and the live pages show beyond `store::sound`: the rising list, credits per
//! day, a sound's regions with their rank history, and its audience against the snapshot before.
//! Read-only.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

use crate::domain::{ClipId, Region};

/// One row of `sound_rising`, with the sound's title.
#[derive(Debug, Clone)]
pub struct Rising {
    pub clip_id: ClipId,
    pub region: Region,
    pub title: Option<String>,
    pub author: Option<String>,
    pub day: NaiveDate,
    pub index_value: f64,
    pub growth_7d: Option<f64>,
    pub rank: Option<i32>,
    pub rank_change_7d: Option<i32>,
    pub stage: String,
}

/// The rising list, fastest risers first, filtered like the report (`since`: latest day on or
/// after it).
pub async fn rising(
    pool: &PgPool,
    clip_id: Option<&str>,
    region: Option<&str>,
    since: Option<NaiveDate>,
    limit: i64,
) -> Result<Vec<Rising>, sqlx::Error> {
    sqlx::query_as!(
        Rising,
        r#"SELECT r.clip_id AS "clip_id!: ClipId", r.region AS "region!: Region",
                  s.title, s.author, r.day AS "day!", r.index_value AS "index_value!",
                  r.growth_7d, r.rank, r.rank_change_7d, r.stage AS "stage!"
           FROM sound_rising r
           LEFT JOIN sounds s USING (clip_id)
           WHERE ($1::text IS NULL OR r.clip_id = $1)
             AND ($2::text IS NULL OR r.region = $2)
             AND ($3::date IS NULL OR r.day >= $3)
           LIMIT $4"#,
        clip_id,
        region,
        since,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// Credits spent per provider and UTC day, from `since` on.
#[derive(Debug, Clone)]
pub struct CreditsDay {
    pub provider: String,
    pub day: NaiveDate,
    pub credits_used: i32,
    pub requests: i32,
}

pub async fn credits_per_day(
    pool: &PgPool,
    since: NaiveDate,
) -> Result<Vec<CreditsDay>, sqlx::Error> {
    sqlx::query_as!(
        CreditsDay,
        "SELECT provider, day, credits_used, requests FROM credit_usage
         WHERE day >= $1 ORDER BY day, provider",
        since,
    )
    .fetch_all(pool)
    .await
}

/// The sounds to show: every clip with a stitched history, filtered, newest activity first.
pub async fn clips(
    pool: &PgPool,
    clip_id: Option<&str>,
    region: Option<&str>,
    since: Option<NaiveDate>,
    limit: i64,
) -> Result<Vec<ClipId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT clip_id AS "clip_id!: ClipId" FROM trend_pairs
           WHERE ($1::text IS NULL OR clip_id = $1)
             AND ($2::text IS NULL OR region = $2)
             AND ($3::date IS NULL OR last_day >= $3)
           GROUP BY clip_id
           ORDER BY max(last_day) DESC, clip_id
           LIMIT $4"#,
        clip_id,
        region,
        since,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// A sound's metadata for its page.
#[derive(Debug, Clone)]
pub struct SoundMeta {
    pub title: Option<String>,
    pub author: Option<String>,
    pub cover: Option<String>,
    pub link: Option<String>,
    pub duration: Option<i32>,
}

pub async fn sound_meta(pool: &PgPool, clip_id: &str) -> Result<Option<SoundMeta>, sqlx::Error> {
    sqlx::query_as!(
        SoundMeta,
        "SELECT title, author, cover, link, duration FROM sounds WHERE clip_id = $1",
        clip_id,
    )
    .fetch_optional(pool)
    .await
}

/// One snapshot's rank in one region.
#[derive(Debug, Clone)]
pub struct RankPoint {
    pub region: Region,
    pub observed_at: DateTime<Utc>,
    pub rank: i32,
}

pub async fn rank_history(
    pool: &PgPool,
    clip_id: &str,
    region: Option<&str>,
    since: Option<NaiveDate>,
) -> Result<Vec<RankPoint>, sqlx::Error> {
    sqlx::query_as!(
        RankPoint,
        r#"SELECT region AS "region: Region", observed_at, rank AS "rank!"
           FROM sound_snapshots
           WHERE clip_id = $1 AND rank IS NOT NULL
             AND ($2::text IS NULL OR region = $2)
             AND ($3::date IS NULL OR observed_at >= $3::timestamp AT TIME ZONE 'UTC')
           ORDER BY region, observed_at"#,
        clip_id,
        region,
        since,
    )
    .fetch_all(pool)
    .await
}

/// The newest successful fetch of a pair and the one before it, for "change since".
#[derive(Debug, Clone)]
pub struct LatestFetches {
    pub region: Region,
    pub newest: i64,
    pub provider: String,
    pub requested_at: DateTime<Utc>,
    pub previous: Option<i64>,
}

pub async fn latest_fetches(
    pool: &PgPool,
    clip_id: &str,
    region: Option<&str>,
) -> Result<Vec<LatestFetches>, sqlx::Error> {
    sqlx::query_as!(
        LatestFetches,
        r#"SELECT region AS "region!: Region", id AS "newest!", provider AS "provider!",
                  requested_at AS "requested_at!", previous
           FROM (SELECT region, id, provider, requested_at,
                        lead(id) OVER w AS previous, row_number() OVER w AS n
                 FROM fetches
                 WHERE clip_id = $1 AND outcome = 'ok' AND ($2::text IS NULL OR region = $2)
                 WINDOW w AS (PARTITION BY region ORDER BY requested_at DESC, id DESC)) f
           WHERE n = 1
           ORDER BY region"#,
        clip_id,
        region,
    )
    .fetch_all(pool)
    .await
}
