//! Read-only queries behind `soundtrend status` and `soundtrend watch list`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::domain::{ClipId, Period, Region};

#[derive(Debug, Serialize)]
pub struct EntryCounts {
    pub total: i64,
    pub enabled: i64,
    pub due_now: i64,
    /// Due for more than an hour: the worker is behind, stopped or blocked.
    pub overdue: i64,
    pub leased: i64,
    pub disabled: i64,
}

#[derive(Debug, Serialize)]
pub struct ProviderReport {
    pub provider: String,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_failure: Option<String>,
    pub credits_used_today: i64,
    pub requests_today: i64,
    pub budget_exhausted_at: Option<DateTime<Utc>>,
    pub paused_until: Option<DateTime<Utc>>,
    pub auth_failed_at: Option<DateTime<Utc>>,
    pub auth_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DisabledEntry {
    pub clip_id: String,
    pub region: String,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RecentError {
    pub fetch_id: i64,
    pub requested_at: DateTime<Utc>,
    pub provider: String,
    pub clip_id: String,
    pub region: String,
    pub outcome: String,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct WatchRow {
    pub clip_id: ClipId,
    pub region: Region,
    pub period: Option<Period>,
    /// Seconds; months count as 30 days (how Postgres converts an interval to seconds).
    pub poll_interval_secs: f64,
    pub enabled: bool,
    /// NULL when the stored value is outside what a timestamp here can hold (never a panic).
    pub next_due_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub last_error: Option<String>,
    pub disabled_reason: Option<String>,
}

pub async fn entry_counts(pool: &PgPool) -> Result<EntryCounts, sqlx::Error> {
    sqlx::query_as!(
        EntryCounts,
        r#"SELECT count(*) AS "total!",
                count(*) FILTER (WHERE enabled) AS "enabled!",
                count(*) FILTER (WHERE enabled AND next_due_at <= now()) AS "due_now!",
                count(*) FILTER (WHERE enabled AND next_due_at <= now() - interval '1 hour')
                    AS "overdue!",
                count(*) FILTER (WHERE lease_token IS NOT NULL AND lease_expires_at > now())
                    AS "leased!",
                count(*) FILTER (WHERE NOT enabled) AS "disabled!"
         FROM watchlist"#
    )
    .fetch_one(pool)
    .await
}

/// One line per provider that has a quota row or fetches. The latest success and failure are
/// found by walking the `requested_at` index backwards, not by scanning the archive.
pub async fn providers(
    pool: &PgPool,
    today: NaiveDate,
) -> Result<Vec<ProviderReport>, sqlx::Error> {
    sqlx::query_as!(
        ProviderReport,
        r#"SELECT p.provider AS "provider!",
                ok.requested_at AS "last_success_at?",
                bad.requested_at AS "last_failure_at?",
                bad.outcome || ': ' || COALESCE(bad.error, '') AS "last_failure?",
                COALESCE(cu.credits_used, 0)::int8 AS "credits_used_today!",
                COALESCE(cu.requests, 0)::int8 AS "requests_today!",
                cu.exhausted_at AS "budget_exhausted_at?",
                NULLIF(q.paused_until, 'epoch') AS "paused_until?",
                q.auth_failed_at AS "auth_failed_at?", q.auth_error AS "auth_error?"
         FROM (SELECT provider FROM provider_quota) p
         LEFT JOIN provider_quota q ON q.provider = p.provider
         LEFT JOIN credit_usage cu ON cu.provider = p.provider AND cu.day = $1
         LEFT JOIN LATERAL (SELECT requested_at FROM fetches f
                            WHERE f.provider = p.provider AND f.outcome = 'ok'
                            ORDER BY requested_at DESC LIMIT 1) ok ON true
         LEFT JOIN LATERAL (SELECT requested_at, outcome, error FROM fetches f
                            WHERE f.provider = p.provider AND f.outcome NOT IN ('ok', 'pending')
                            ORDER BY requested_at DESC LIMIT 1) bad ON true
         ORDER BY p.provider"#,
        today,
    )
    .fetch_all(pool)
    .await
}

pub async fn disabled(pool: &PgPool, limit: i64) -> Result<Vec<DisabledEntry>, sqlx::Error> {
    sqlx::query_as!(
        DisabledEntry,
        "SELECT clip_id, region, COALESCE(disabled_reason, 'paused') AS reason FROM watchlist
         WHERE NOT enabled ORDER BY clip_id, region LIMIT $1",
        limit,
    )
    .fetch_all(pool)
    .await
}

pub async fn recent_errors(pool: &PgPool, limit: i64) -> Result<Vec<RecentError>, sqlx::Error> {
    sqlx::query_as!(
        RecentError,
        "SELECT id AS fetch_id, requested_at, provider, clip_id, region, outcome, error FROM fetches
         WHERE outcome NOT IN ('ok', 'pending') ORDER BY requested_at DESC LIMIT $1",
        limit,
    )
    .fetch_all(pool)
    .await
}

pub async fn watch_rows(
    pool: &PgPool,
    include_disabled: bool,
    limit: i64,
) -> Result<Vec<WatchRow>, sqlx::Error> {
    sqlx::query_as!(
        WatchRow,
        r#"SELECT clip_id AS "clip_id: ClipId", region AS "region: Region",
                period AS "period: Period",
                extract(epoch FROM poll_interval)::float8 AS "poll_interval_secs!", enabled,
                CASE WHEN isfinite(next_due_at) AND next_due_at < '10000-01-01'
                     THEN next_due_at END AS next_due_at,
                CASE WHEN isfinite(last_success_at) AND last_success_at < '10000-01-01'
                     THEN last_success_at END AS last_success_at,
                consecutive_failures, last_error, disabled_reason
         FROM watchlist WHERE enabled OR $1
         ORDER BY next_due_at, clip_id, region LIMIT $2"#,
        include_disabled,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// Row counts per table for one clip (what `quickstart` shows landed).
pub async fn rows_per_table(
    db: impl sqlx::PgExecutor<'_>,
    clip_id: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT 'sounds' AS "table!", count(*) AS "n!" FROM sounds WHERE clip_id = $1
         UNION ALL SELECT 'sound_snapshots', count(*) FROM sound_snapshots WHERE clip_id = $1
         UNION ALL SELECT 'trend_points', count(*) FROM trend_points WHERE clip_id = $1
         UNION ALL SELECT 'audience_countries', count(*) FROM audience_countries WHERE clip_id = $1
         UNION ALL SELECT 'audience_interests', count(*) FROM audience_interests WHERE clip_id = $1
         UNION ALL SELECT 'fetches', count(*) FROM fetches WHERE clip_id = $1"#,
        clip_id
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.table, r.n)).collect())
}
