//! The quota every instance shares: GCRA for the request rate, a per-day ledger for credits.
//! Both live in Postgres, so N instances together stay within the configured numbers.

use std::time::Duration;

use chrono::NaiveDate;
use sqlx::{PgExecutor, Row};

use crate::provider::ProviderKind;

#[derive(Debug, Clone, Copy)]
pub struct QuotaParams {
    pub provider: ProviderKind,
    /// 1 / requests_per_second.
    pub emission_interval: Duration,
    pub burst: u32,
    pub credits_per_request: u32,
    /// None: unlimited.
    pub daily_budget: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Grant {
    /// Send now; the request's credits are already booked.
    Granted { credits_used_today: i64 },
    /// Not yet: try again after this long (rate limit, or a provider's Retry-After).
    Wait(Duration),
    /// The day's budget is spent.
    BudgetExhausted { used: i64, budget: i64 },
}

pub async fn ensure_provider(
    db: impl PgExecutor<'_>,
    provider: ProviderKind,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO provider_quota (provider) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(provider.as_str())
        .execute(db)
        .await?;
    Ok(())
}

/// Takes one request's worth of rate and credits, atomically, for all instances. `day` is the
/// caller's current UTC day (an injectable clock, so tests can move to tomorrow); the rate uses the
/// database's clock, the one clock every instance shares.
pub async fn take(
    db: impl PgExecutor<'_>,
    p: &QuotaParams,
    day: NaiveDate,
) -> Result<Grant, sqlx::Error> {
    let row = sqlx::query(
        r#"WITH q AS (
    SELECT tat, paused_until, clock_timestamp() AS now
    FROM provider_quota WHERE provider = $1 FOR UPDATE
),
d AS (
    SELECT now, paused_until,
           GREATEST(tat, now) + make_interval(secs => $2) AS new_tat,
           paused_until <= now
             AND GREATEST(tat, now) + make_interval(secs => $2)
                 <= now + make_interval(secs => $2 * $3) AS rate_ok
    FROM q
),
c AS (
    INSERT INTO credit_usage AS cu (provider, day, credits_used, requests, budget)
    SELECT $1, $4, $5, 1, $6 FROM d WHERE d.rate_ok AND ($6::int IS NULL OR $5 <= $6)
    ON CONFLICT (provider, day) DO UPDATE SET
        credits_used = cu.credits_used + EXCLUDED.credits_used,
        requests = cu.requests + 1,
        budget = EXCLUDED.budget
    WHERE EXCLUDED.budget IS NULL OR cu.credits_used + EXCLUDED.credits_used <= EXCLUDED.budget
    RETURNING credits_used
),
u AS (
    UPDATE provider_quota SET tat = d.new_tat FROM d
    WHERE provider = $1 AND EXISTS (SELECT 1 FROM c)
    RETURNING 1
)
SELECT d.rate_ok,
       (SELECT credits_used FROM c)::int8 AS granted_used,
       (SELECT credits_used FROM credit_usage WHERE provider = $1 AND day = $4)::int8 AS used,
       EXTRACT(epoch FROM GREATEST(d.paused_until - d.now,
           d.new_tat - make_interval(secs => $2 * $3) - d.now))::float8 AS wait_secs
FROM d"#,
    )
    .bind(p.provider.as_str())
    .bind(p.emission_interval.as_secs_f64())
    .bind(f64::from(p.burst))
    .bind(day)
    .bind(i32::try_from(p.credits_per_request).unwrap_or(i32::MAX))
    .bind(p.daily_budget.map(|b| i32::try_from(b).unwrap_or(i32::MAX)))
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        // The provider row is missing (a fresh database that skipped ensure_provider).
        return Ok(Grant::Wait(Duration::from_millis(100)));
    };
    let rate_ok: bool = row.try_get("rate_ok")?;
    if let Some(used) = row.try_get::<Option<i64>, _>("granted_used")? {
        return Ok(Grant::Granted {
            credits_used_today: used,
        });
    }
    if rate_ok {
        let used: Option<i64> = row.try_get("used")?;
        return Ok(Grant::BudgetExhausted {
            used: used.unwrap_or(0),
            budget: i64::from(p.daily_budget.unwrap_or(0)),
        });
    }
    let wait: f64 = row.try_get::<Option<f64>, _>("wait_secs")?.unwrap_or(0.0);
    Ok(Grant::Wait(Duration::from_secs_f64(
        wait.clamp(0.001, 3600.0),
    )))
}

/// Marks the day's budget as spent (once; later calls keep the first time). Returns true the
/// first time, so the caller logs it once across all instances.
pub async fn mark_exhausted(
    db: impl PgExecutor<'_>,
    provider: ProviderKind,
    day: NaiveDate,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO credit_usage AS cu (provider, day, exhausted_at) VALUES ($1, $2, now())
         ON CONFLICT (provider, day) DO UPDATE SET exhausted_at = now()
         WHERE cu.exhausted_at IS NULL",
    )
    .bind(provider.as_str())
    .bind(day)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A 429: nobody sends to this provider before `retry_after` has passed.
pub async fn pause(
    db: impl PgExecutor<'_>,
    provider: ProviderKind,
    retry_after: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE provider_quota
         SET paused_until = GREATEST(paused_until, clock_timestamp() + make_interval(secs => $2))
         WHERE provider = $1",
    )
    .bind(provider.as_str())
    .bind(retry_after.as_secs_f64())
    .execute(db)
    .await?;
    Ok(())
}

pub async fn mark_auth_failed(
    db: impl PgExecutor<'_>,
    provider: ProviderKind,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE provider_quota SET auth_failed_at = now(), auth_error = $2 WHERE provider = $1",
    )
    .bind(provider.as_str())
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

/// Credits used today and the request count, for status and metrics.
pub async fn usage(
    db: impl PgExecutor<'_>,
    provider: ProviderKind,
    day: NaiveDate,
) -> Result<(i64, i64), sqlx::Error> {
    let row: Option<(i32, i32)> = sqlx::query_as(
        "SELECT credits_used, requests FROM credit_usage WHERE provider = $1 AND day = $2",
    )
    .bind(provider.as_str())
    .bind(day)
    .fetch_optional(db)
    .await?;
    Ok(row
        .map(|(c, r)| (i64::from(c), i64::from(r)))
        .unwrap_or((0, 0)))
}
