//! The `watchlist` table: claiming due entries under a lease, releasing them, and the
//! conveniences behind `soundtrend watch`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::types::PgInterval;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::{ClipId, Period, Region};
use crate::provider::ProviderKind;

/// A watchlist entry this worker holds a lease on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub clip_id: ClipId,
    pub region: Region,
    pub period: Option<Period>,
    pub poll_interval_secs: f64,
    pub last_success_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    /// None for a clip polled ad hoc that is not on the watchlist.
    pub lease_token: Option<Uuid>,
    /// The provider this entry is pinned to; None follows the configured order.
    pub provider: Option<ProviderKind>,
}

/// Claims up to `limit` due entries, oldest due first, in one short statement committed before
/// any HTTP call. A claimed entry's `next_due_at` moves to the lease expiry, so an entry whose
/// worker died becomes due again by itself when the lease runs out; the new claim gets a new
/// token, which fences out any late write of the old worker.
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    owner: &str,
    limit: u32,
    lease_ttl: Duration,
    providers: &[ProviderKind],
) -> Result<Vec<Claimed>, sqlx::Error> {
    let providers: Vec<&str> = providers.iter().map(|p| p.as_str()).collect();
    sqlx::query_file_as!(
        Claimed,
        "src/store/sql/claim_due.sql",
        i64::from(limit),
        owner,
        lease_ttl.as_secs_f64(),
        &providers as &[&str]
    )
    .fetch_all(db)
    .await
}

/// Whether any enabled entry is due and not leased: work that waits when no provider is usable.
pub async fn any_due(db: impl PgExecutor<'_>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM watchlist
            WHERE enabled AND next_due_at <= now()
              AND (lease_token IS NULL OR lease_expires_at <= now())) AS "due!""#
    )
    .fetch_one(db)
    .await
}

/// The claim statement ($1 limit, $2 owner, $3 lease seconds, $4 usable providers), public so the benchmark can
/// `EXPLAIN` exactly what the worker runs.
pub const CLAIM_DUE_SQL: &str = include_str!("sql/claim_due.sql");

/// Claims one entry whatever its due time (`soundtrend poll --clip-id`). `Ok(None)` when the
/// pair is not on the watchlist; `Err(owner)` when another worker holds a live lease on it.
pub async fn claim_one(
    pool: &PgPool,
    owner: &str,
    clip_id: &str,
    region: &str,
    lease_ttl: Duration,
) -> Result<Result<Option<Claimed>, String>, sqlx::Error> {
    let claimed = sqlx::query_as!(
        Claimed,
        r#"UPDATE watchlist w SET
            lease_owner = $3, lease_token = gen_random_uuid(),
            lease_expires_at = now() + make_interval(secs => $4),
            next_due_at = GREATEST(next_due_at, now() + make_interval(secs => $4))
        WHERE clip_id = $1 AND region = $2
          AND (lease_token IS NULL OR lease_expires_at <= now())
        -- The same columns, and the same guards, as claim_due.sql.
        RETURNING w.clip_id AS "clip_id: ClipId", w.region AS "region: Region",
    w.period AS "period: Period",
            extract(epoch FROM w.poll_interval)::float8 AS "poll_interval_secs!",
            CASE WHEN isfinite(w.last_success_at) AND w.last_success_at < '10000-01-01'
                 THEN w.last_success_at END AS last_success_at,
            w.consecutive_failures, w.lease_token AS "lease_token?",
            w.provider AS "provider: ProviderKind""#,
        clip_id,
        region,
        owner,
        lease_ttl.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await?;
    if let Some(c) = claimed {
        return Ok(Ok(Some(c)));
    }
    let holder = sqlx::query_scalar!(
        "SELECT lease_owner FROM watchlist WHERE clip_id = $1 AND region = $2",
        clip_id,
        region,
    )
    .fetch_optional(pool)
    .await?;
    Ok(match holder {
        None => Ok(None),
        Some(owner) => Err(owner.unwrap_or_else(|| "another worker".into())),
    })
}

/// Gives a lease back without counting a failure; the entry is due again at `due_at` (now when
/// `None`). Used on shutdown, when the budget or the credentials stop a poll before it ran.
pub async fn release(
    db: impl PgExecutor<'_>,
    clip_id: &str,
    region: &str,
    token: Uuid,
    due_at: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE watchlist SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
             next_due_at = COALESCE($4, now())
         WHERE clip_id = $1 AND region = $2 AND lease_token = $3",
        clip_id,
        region,
        token,
        due_at,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Releases every lease `owner` still holds (the end of a graceful shutdown).
pub async fn release_owner(db: impl PgExecutor<'_>, owner: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE watchlist SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
             next_due_at = now()
         WHERE lease_owner = $1 AND lease_token IS NOT NULL",
        owner,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Clears the lease columns of entries whose lease expired. Correctness does not depend on it
/// (an expired entry is due anyway); it keeps `lease_owner` truthful for people reading the table.
pub async fn clear_expired_leases(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE watchlist SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
         WHERE lease_token IS NOT NULL AND lease_expires_at < now()",
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Adds an entry, or updates its period and interval when it is already watched.
pub async fn upsert(
    db: impl PgExecutor<'_>,
    clip_id: &str,
    region: &str,
    period: Option<i16>,
    poll_interval: Option<Duration>,
) -> Result<bool, sqlx::Error> {
    let interval = poll_interval.map(|d| PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    });
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO watchlist (clip_id, region, period, poll_interval)
         VALUES ($1, $2, $3, COALESCE($4, interval '1 day'))
         ON CONFLICT (clip_id, region) DO UPDATE SET
             period = EXCLUDED.period,
             poll_interval = COALESCE($4, watchlist.poll_interval)
         RETURNING (xmax = 0) AS "inserted!""#,
        clip_id,
        region,
        period,
        interval,
    )
    .fetch_one(db)
    .await?;
    Ok(inserted)
}

/// Pins an entry to one provider, or (None) lets it follow the configured order.
pub async fn pin_provider(
    db: impl PgExecutor<'_>,
    clip_id: &str,
    region: &str,
    provider: Option<ProviderKind>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE watchlist SET provider = $3 WHERE clip_id = $1 AND region = $2",
        clip_id,
        region,
        provider.map(ProviderKind::as_str),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Pauses or resumes an entry; resuming clears a `disabled_reason` and makes it due now.
pub async fn set_enabled(
    db: impl PgExecutor<'_>,
    clip_id: &str,
    region: &str,
    enabled: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE watchlist SET enabled = $3,
             disabled_reason = CASE WHEN $3 THEN NULL ELSE disabled_reason END,
             not_found_count = CASE WHEN $3 THEN 0 ELSE not_found_count END,
             next_due_at = CASE WHEN $3 THEN LEAST(next_due_at, now()) ELSE next_due_at END
         WHERE clip_id = $1 AND region = $2",
        clip_id,
        region,
        enabled,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stops watching; the data already collected stays.
pub async fn remove(
    db: impl PgExecutor<'_>,
    clip_id: &str,
    region: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM watchlist WHERE clip_id = $1 AND region = $2",
        clip_id,
        region,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The watchlist's backlog, for the metrics operators watch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Enabled entries due now and not leased.
    pub due: i64,
    /// How long the oldest of them has been due, in seconds (0 when none is).
    pub overdue_secs: f64,
    /// Entries under a live lease.
    pub leased: i64,
}

pub async fn backlog(db: impl PgExecutor<'_>) -> Result<Backlog, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE next_due_at <= now() AND lease_token IS NULL) AS "due!",
                COALESCE(EXTRACT(epoch FROM now() - min(next_due_at)
                    FILTER (WHERE lease_token IS NULL)), 0)::float8 AS "overdue!",
                count(*) FILTER (WHERE lease_token IS NOT NULL AND lease_expires_at > now())
                    AS "leased!"
         FROM watchlist WHERE enabled AND (next_due_at <= now() OR lease_token IS NOT NULL)"#
    )
    .fetch_one(db)
    .await?;
    Ok(Backlog {
        due: row.due,
        overdue_secs: row.overdue.max(0.0),
        leased: row.leased,
    })
}
