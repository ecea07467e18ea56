//! One sound as `soundtrend show` and `soundtrend export` read it: its metadata, its stitched
//! daily series (the `sound_daily` view), its newest audience and where the data came from.
//! Read-only.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug)]
pub struct Sound {
    pub title: Option<String>,
    pub author: Option<String>,
    pub duration: Option<i32>,
    pub link: Option<String>,
}

/// One day of the stitched series, with the raw value of the newest window that covered it.
#[derive(Debug, Clone, Serialize)]
pub struct Day {
    pub clip_id: String,
    pub region: String,
    pub day: NaiveDate,
    /// 0–100, comparable within one segment only.
    pub index_value: f64,
    pub index_low: f64,
    pub index_high: f64,
    pub segment: i32,
    pub windows: i32,
    /// The provider's value relative to its own window (max 1); NULL when no window value is kept.
    pub window_value: Option<f64>,
    pub window_period: Option<i16>,
    pub fetch_id: i64,
}

/// One entry of an audience list (a country or an interest) of one fetch.
#[derive(Debug)]
pub struct AudienceEntry {
    pub position: i16,
    pub code: Option<String>,
    pub name: Option<String>,
    pub score: Option<f64>,
}

/// The newest successful fetch behind what is shown, and how many there are.
#[derive(Debug)]
pub struct Provenance {
    pub fetch_id: i64,
    pub provider: String,
    pub requested_at: DateTime<Utc>,
    pub region: String,
    pub period: i16,
    pub ok_fetches: i64,
}

pub async fn sound(pool: &PgPool, clip_id: &str) -> Result<Option<Sound>, sqlx::Error> {
    sqlx::query_as!(
        Sound,
        "SELECT title, author, duration, link FROM sounds WHERE clip_id = $1",
        clip_id
    )
    .fetch_optional(pool)
    .await
}

/// The stitched daily series of a clip, per region (all regions when `region` is None), oldest
/// first; with `last_days`, only the days up to that many before each region's newest day.
pub async fn daily(
    pool: &PgPool,
    clip_id: &str,
    region: Option<&str>,
    last_days: Option<i32>,
) -> Result<Vec<Day>, sqlx::Error> {
    sqlx::query_as!(
        Day,
        r#"SELECT d.clip_id AS "clip_id!", d.region AS "region!", d.day AS "day!",
                d.index_value AS "index_value!", d.index_low AS "index_low!",
                d.index_high AS "index_high!", d.segment AS "segment!", d.windows AS "windows!",
                d.window_value, d.window_period::int2 AS window_period, d.fetch_id AS "fetch_id!"
         FROM sound_daily d
         JOIN trend_pairs p USING (clip_id, region)
         WHERE d.clip_id = $1
           AND ($2::text IS NULL OR d.region = $2)
           AND ($3::int IS NULL OR d.day > p.last_day - $3)
         ORDER BY d.region, d.day"#,
        clip_id,
        region,
        last_days,
    )
    .fetch_all(pool)
    .await
}

/// The newest successful fetch of the clip (in `region` when given).
pub async fn provenance(
    pool: &PgPool,
    clip_id: &str,
    region: Option<&str>,
) -> Result<Option<Provenance>, sqlx::Error> {
    sqlx::query_as!(
        Provenance,
        r#"SELECT id AS fetch_id, provider, requested_at, region, period,
                count(*) OVER () AS "ok_fetches!"
         FROM fetches
         WHERE clip_id = $1 AND outcome = 'ok' AND ($2::text IS NULL OR region = $2)
         ORDER BY requested_at DESC, id DESC
         LIMIT 1"#,
        clip_id,
        region,
    )
    .fetch_optional(pool)
    .await
}

/// The first `limit` top countries of one fetch.
pub async fn countries(
    pool: &PgPool,
    fetch_id: i64,
    limit: i64,
) -> Result<Vec<AudienceEntry>, sqlx::Error> {
    sqlx::query_as!(
        AudienceEntry,
        r#"SELECT position AS "position!", country_code AS code, country_name AS name, score
         FROM audience_countries WHERE fetch_id = $1 ORDER BY position LIMIT $2"#,
        fetch_id,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// The first `limit` top interests of one fetch.
pub async fn interests(
    pool: &PgPool,
    fetch_id: i64,
    limit: i64,
) -> Result<Vec<AudienceEntry>, sqlx::Error> {
    sqlx::query_as!(
        AudienceEntry,
        r#"SELECT position AS "position!", interest_id AS code, name, score
         FROM audience_interests WHERE fetch_id = $1 ORDER BY position LIMIT $2"#,
        fetch_id,
        limit,
    )
    .fetch_all(pool)
    .await
}
