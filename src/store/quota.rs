//! The quota every instance shares: GCRA for the request rate, a per-day ledger for credits.
//! Both live in Postgres, so N instances together stay within the configured numbers.

use std::time::Duration;

use chrono::NaiveDate;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::provider::ProviderKind;

#[derive(Debug, Clone, Copy)]
pub struct QuotaParams {
    pub provider: ProviderKind,
    /// 1 / `requests_per_second`.
    pub emission_interval: Duration,
    pub burst: u32,
    pub credits_per_request: u32,
    /// None: unlimited.
    pub daily_budget: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Grant {
    /// Send now: the request's credits are booked, its `fetches` row exists as `pending`
    /// (`fetch_id`), and the entry's lease runs for at least a whole lease from now.
    Granted {
        credits_used_today: i64,
        fetch_id: i64,
    },
    /// Not yet: try again after this long (rate limit, or a provider's Retry-After).
    Wait(Duration),
    /// The day's budget is spent.
    BudgetExhausted { used: i64, budget: i64 },
    /// The entry's lease is no longer ours (expired and re-claimed, or the entry was removed):
    /// nothing was booked, nothing may be sent.
    LeaseLost,
    /// An analyst paused the entry (`enabled = false`) while its poll waited: nothing was booked.
    EntryPaused,
    /// The provider rejected these credentials (any instance saw it): nothing was booked.
    AuthFailed,
    /// The circuit breaker is open, or its one probe is in flight: not before this long.
    Down(Duration),
}

/// The attempt a grant is for: its `fetches` row is inserted with the booking, and its lease
/// checked and extended in the same statement.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub clip_id: &'a str,
    pub region: &'a str,
    pub period: i16,
    /// 1 for the first try of a poll.
    pub attempt: i16,
    /// The claim's token; None for a clip polled ad hoc that is not on the watchlist.
    pub lease: Option<Uuid>,
    pub lease_ttl: Duration,
    /// Fingerprint of the credentials the request would carry (see `store::health`).
    pub key: &'a str,
}

pub async fn ensure_provider(
    db: impl PgExecutor<'_>,
    provider: ProviderKind,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO provider_quota (provider) VALUES ($1) ON CONFLICT DO NOTHING",
        provider.as_str()
    )
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
    a: &Attempt<'_>,
) -> Result<Grant, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH l AS (
    -- The lease must still be ours: a paid request is only sent for an entry we hold, and
    -- only while it is enabled.
    SELECT enabled FROM watchlist
    WHERE clip_id = $7 AND region = $8 AND lease_token = $9
    FOR UPDATE
),
q AS (
    SELECT tat, paused_until, open_until, probe_until, auth_failed_at, auth_key,
           clock_timestamp() AS now
    FROM provider_quota WHERE provider = $1 FOR UPDATE
),
d AS (
    SELECT now, paused_until,
           -- The breaker: closed, or open with its rest over and no probe in flight (this
           -- request is then the probe, fenced below by probe_until).
           (open_until IS NULL OR (open_until <= now AND COALESCE(probe_until <= now, true)))
             AS breaker_ok,
           open_until IS NOT NULL AS probing,
           GREATEST(open_until, probe_until) - now AS down_for,
           (auth_failed_at IS NULL OR auth_key IS DISTINCT FROM $13) AS auth_ok,
           GREATEST(tat, now) + make_interval(secs => $2) AS new_tat,
           paused_until <= now
             AND GREATEST(tat, now) + make_interval(secs => $2)
                 <= now + make_interval(secs => $2 * $3) AS rate_ok,
           ($9::uuid IS NULL OR EXISTS (SELECT 1 FROM l)) AS lease_ok,
           ($9::uuid IS NULL OR COALESCE((SELECT enabled FROM l), true)) AS enabled
    FROM q
),
c AS (
    INSERT INTO credit_usage AS cu (provider, day, credits_used, requests, budget)
    SELECT $1, $4, $5, 1, $6 FROM d
    WHERE d.rate_ok AND d.lease_ok AND d.enabled AND d.breaker_ok AND d.auth_ok
      AND ($6::int IS NULL OR $5 <= $6)
    ON CONFLICT (provider, day) DO UPDATE SET
        credits_used = cu.credits_used + EXCLUDED.credits_used,
        requests = cu.requests + 1,
        budget = EXCLUDED.budget
    WHERE EXCLUDED.budget IS NULL OR cu.credits_used + EXCLUDED.credits_used <= EXCLUDED.budget
    RETURNING credits_used
),
u AS (
    UPDATE provider_quota SET tat = d.new_tat,
        probe_until = CASE WHEN d.probing THEN d.now + make_interval(secs => $12)
                           ELSE probe_until END
    FROM d
    WHERE provider = $1 AND EXISTS (SELECT 1 FROM c)
    RETURNING 1
),
e AS (
    -- The request about to be sent, and its write, fit in the extended lease.
    UPDATE watchlist SET
        lease_expires_at = GREATEST(lease_expires_at, now() + make_interval(secs => $12)),
        next_due_at = GREATEST(next_due_at, now() + make_interval(secs => $12))
    WHERE clip_id = $7 AND region = $8 AND lease_token = $9 AND EXISTS (SELECT 1 FROM c)
    RETURNING 1
),
pending AS (
    -- Booked credits and their archived attempt are one transaction.
    INSERT INTO fetches (clip_id, region, period, provider, requested_at, duration_ms,
                         outcome, attempt, credits)
    SELECT $7, $8, $10, $1, d.now, 0, 'pending', $11, $5 FROM d
    WHERE EXISTS (SELECT 1 FROM c)
    RETURNING id
)
SELECT d.rate_ok AS "rate_ok!", d.lease_ok AS "lease_ok!", d.enabled AS "enabled!",
       d.breaker_ok AS "breaker_ok!", d.auth_ok AS "auth_ok!",
       EXTRACT(epoch FROM d.down_for)::float8 AS down_secs,
       (SELECT credits_used FROM c)::int8 AS granted_used,
       (SELECT id FROM pending) AS fetch_id,
       (SELECT credits_used FROM credit_usage WHERE provider = $1 AND day = $4)::int8 AS used,
       EXTRACT(epoch FROM GREATEST(d.paused_until - d.now,
           d.new_tat - make_interval(secs => $2 * $3) - d.now))::float8 AS wait_secs
FROM d"#,
        p.provider.as_str(),
        p.emission_interval.as_secs_f64(),
        f64::from(p.burst),
        day,
        i32::try_from(p.credits_per_request).unwrap_or(i32::MAX),
        p.daily_budget.map(|b| i32::try_from(b).unwrap_or(i32::MAX)),
        a.clip_id,
        a.region,
        a.lease,
        a.period,
        a.attempt,
        a.lease_ttl.as_secs_f64(),
        a.key,
    )
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        // The provider row is missing (a fresh database that skipped ensure_provider).
        return Ok(Grant::Wait(Duration::from_millis(100)));
    };
    if !row.lease_ok {
        return Ok(Grant::LeaseLost);
    }
    if !row.enabled {
        return Ok(Grant::EntryPaused);
    }
    if let (Some(used), Some(fetch_id)) = (row.granted_used, row.fetch_id) {
        return Ok(Grant::Granted {
            credits_used_today: used,
            fetch_id,
        });
    }
    if !row.auth_ok {
        return Ok(Grant::AuthFailed);
    }
    if !row.breaker_ok {
        return Ok(Grant::Down(secs(row.down_secs)));
    }
    if row.rate_ok {
        return Ok(Grant::BudgetExhausted {
            used: row.used.unwrap_or(0),
            budget: i64::from(p.daily_budget.unwrap_or(0)),
        });
    }
    Ok(Grant::Wait(secs(row.wait_secs)))
}

/// A wait the database computed, as a `Duration` between 1 ms and an hour.
fn secs(s: Option<f64>) -> Duration {
    let s = s.unwrap_or(0.0);
    Duration::from_secs_f64(if s.is_finite() { s } else { 0.0 }.clamp(0.001, 3600.0))
}

/// Marks the day's budget as spent (once; later calls keep the first time). Returns true the
/// first time, so the caller logs it once across all instances.
pub async fn mark_exhausted(
    db: impl PgExecutor<'_>,
    provider: ProviderKind,
    day: NaiveDate,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "INSERT INTO credit_usage AS cu (provider, day, exhausted_at) VALUES ($1, $2, now())
         ON CONFLICT (provider, day) DO UPDATE SET exhausted_at = now()
         WHERE cu.exhausted_at IS NULL",
        provider.as_str(),
        day,
    )
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
    sqlx::query!(
        "UPDATE provider_quota
         SET paused_until = GREATEST(paused_until, clock_timestamp() + make_interval(secs => $2))
         WHERE provider = $1",
        provider.as_str(),
        retry_after.as_secs_f64(),
    )
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
    let row = sqlx::query!(
        "SELECT credits_used, requests FROM credit_usage WHERE provider = $1 AND day = $2",
        provider.as_str(),
        day,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map_or((0, 0), |r| {
        (i64::from(r.credits_used), i64::from(r.requests))
    }))
}
