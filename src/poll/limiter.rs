//! Rate limiting: this process's own pace (a `governor` limiter) and the quota every instance
//! shares in Postgres (`store::quota`): the request rate, the provider's pauses and the daily
//! credit budget. A grant books the request's credits and its pending `fetches` row.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::backoff::with_db_retry;
use super::health::ProviderHealth;
use super::outcome::SkipReason;
use crate::clock::Clock;
use crate::provider::ProviderKind;
use crate::store::fetches::Booked;
use crate::store::quota::{self, Grant, QuotaParams};
use crate::store::StoreError;
use crate::telemetry::metrics as m;

/// What the shared quota said to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Send it: its credits and pending row are booked, its lease extended.
    Granted(Booked),
    /// Not yet: ask again after this long (short enough to wait for with the lease held).
    Wait(Duration),
    /// Do not send it now; nothing was booked.
    Refused(SkipReason),
}

#[derive(Debug)]
pub struct Limiter {
    pool: PgPool,
    local: DefaultDirectRateLimiter,
    quota: QuotaParams,
    lease_ttl: Duration,
    health: Arc<ProviderHealth>,
    clock: Arc<dyn Clock>,
}

impl Limiter {
    pub fn new(
        pool: PgPool,
        quota: QuotaParams,
        lease_ttl: Duration,
        health: Arc<ProviderHealth>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let burst = NonZeroU32::new(quota.burst.max(1)).expect("non-zero");
        let local_quota = Quota::with_period(quota.emission_interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Self {
            pool,
            local: RateLimiter::direct(local_quota),
            quota,
            lease_ttl,
            health,
            clock,
        }
    }

    pub fn provider(&self) -> ProviderKind {
        self.quota.provider
    }

    pub fn credits_per_request(&self) -> u32 {
        self.quota.credits_per_request
    }

    /// How long a grant extends the lease by.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// The longest a poll may wait (for the quota or before a retry) while holding its lease: a
    /// quarter of the lease, leaving the rest for the request and the write.
    pub fn longest_wait(&self) -> Duration {
        self.lease_ttl / 4
    }

    /// How many requests the shared quota allows within half a lease: claiming more entries
    /// ahead than that would leave some waiting for quota past their lease.
    pub fn requests_per_half_lease(&self) -> u32 {
        let per_lease = (self.lease_ttl / 2).as_secs_f64()
            / self.quota.emission_interval.as_secs_f64().max(1e-9)
            + f64::from(self.quota.burst);
        // Finite and at least 1 after the clamp, so the cast cannot wrap.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = per_lease.clamp(1.0, f64::from(u32::MAX)) as u32;
        n
    }

    /// Waits for both the local and the shared rate limit and books the request (credits, pending
    /// `fetches` row and a fresh lease, in one statement): whatever the waits took, a request is
    /// only sent for an entry whose lease is ours for a whole `lease_ttl` more. `Err(reason)`
    /// when the request must not be sent.
    pub async fn acquire(
        &self,
        booking: &quota::Attempt<'_>,
        cancel: &CancellationToken,
    ) -> Result<Result<Booked, SkipReason>, StoreError> {
        // The local limiter paces this process once per request; the shared quota below may
        // make it wait again, without taking a second local slot.
        tokio::select! {
            () = self.local.until_ready() => {}
            () = cancel.cancelled() => return Ok(Err(SkipReason::ShuttingDown)),
        }
        loop {
            match self.take(booking, cancel).await? {
                Admission::Granted(booked) => return Ok(Ok(booked)),
                Admission::Refused(why) => return Ok(Err(why)),
                Admission::Wait(d) => {
                    tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        () = cancel.cancelled() => return Ok(Err(SkipReason::ShuttingDown)),
                    }
                }
            }
        }
    }

    /// Asks the shared quota once. A wait longer than [`Self::longest_wait`] is a refusal: the
    /// entry is due again when it ends, and this process stops claiming until then.
    pub async fn take(
        &self,
        booking: &quota::Attempt<'_>,
        cancel: &CancellationToken,
    ) -> Result<Admission, StoreError> {
        if cancel.is_cancelled() {
            return Ok(Admission::Refused(SkipReason::ShuttingDown));
        }
        if self.health.is_credentials_rejected() {
            return Ok(Admission::Refused(SkipReason::CredentialsRejected));
        }
        let day = self.clock.today();
        let grant = with_db_retry(cancel, || {
            quota::take(&self.pool, &self.quota, day, booking)
        })
        .await?;
        Ok(match grant {
            Grant::Granted {
                credits_used_today,
                fetch_id,
            } => {
                m::credits_today(self.provider(), credits_used_today);
                Admission::Granted(Booked { fetch_id, day })
            }
            Grant::LeaseLost => Admission::Refused(SkipReason::LeaseLost),
            Grant::EntryPaused => Admission::Refused(SkipReason::EntryPaused),
            Grant::Wait(d) if d > self.longest_wait() => {
                self.note_pause(d);
                Admission::Refused(SkipReason::ProviderPaused { wait: d })
            }
            Grant::Wait(d) => Admission::Wait(d),
            Grant::BudgetExhausted { used, budget } => {
                let first_here = self.health.note_budget_exhausted(day);
                let first_anywhere = with_db_retry(cancel, || {
                    quota::mark_exhausted(&self.pool, self.provider(), day)
                })
                .await?;
                if first_here || first_anywhere {
                    warn!(provider = %self.provider(), credits_used = used, daily_credit_budget = budget, day = %day,
                        "The daily credit budget is spent; polling pauses until the next UTC day.");
                }
                Admission::Refused(SkipReason::BudgetExhausted { used, budget })
            }
        })
    }

    /// Shares a provider pause with every instance: nobody sends before `wait` has passed.
    pub async fn share_pause(
        &self,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        with_db_retry(cancel, || quota::pause(&self.pool, self.provider(), wait)).await
    }

    /// Remembers a provider pause so this process stops claiming; logs when a pause starts.
    pub fn note_pause(&self, wait: Duration) {
        if self.health.note_pause(wait) {
            warn!(provider = %self.provider(), wait_s = wait.as_secs_f64(),
                "The provider asked to wait longer than a poll may hold its lease; this process pauses claims until then.");
        }
    }
}
