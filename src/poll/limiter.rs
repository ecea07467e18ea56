//! Rate limiting and admission for one provider: this process's own pace (a `governor` limiter)
//! and what every instance shares in Postgres: the quota (`store::quota`: the request rate, the
//! provider's pauses, the daily credit budget) and the provider's health (`store::health`: the
//! circuit breaker, rejected credentials). A grant books the request's credits and its pending
//! `fetches` row; every answer or outage is reported back to the breaker.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::backoff::with_db_retry;
use super::batcher::QuotaBatcher;
use super::health::ProviderHealth;
use super::outcome::SkipReason;
use crate::clock::Clock;
use crate::provider::{ProviderError, ProviderKind};
use crate::store::fetches::Booked;
use crate::store::health::{
    self, Availability, Breaker, ProviderState, Snapshot, Standing, Transition,
};
use crate::store::quota::{self, Grant, QuotaParams};
use crate::store::StoreError;
use crate::telemetry::metrics as m;

/// What the shared quota said to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Send it after this long (its slot; zero for now): its credits and pending row are booked,
    /// its lease extended.
    Granted(Booked, Duration),
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
    breaker: Breaker,
    /// Fingerprint of this process's credentials for the provider.
    key: String,
    health: Arc<ProviderHealth>,
    clock: Arc<dyn Clock>,
    /// The provider's shared state as last read; None before the first read.
    latest: Mutex<Option<Snapshot>>,
    /// The shared row may hold failures or rejected credentials to clear on the next answer.
    /// True at start (a previous run may have left them) and after any failure or read that
    /// says so; false once a success has cleared them, so a healthy provider's answers cost no
    /// extra statement.
    suspect: AtomicBool,
    /// Something this process saw since the last read may have changed the shared state (a
    /// failure, a pause, rejected credentials, a spent budget): the next claim round reads it
    /// again instead of trusting the last read.
    stale: AtomicBool,
    /// Gathers concurrent requests for the shared quota into blocks.
    batcher: Arc<QuotaBatcher>,
}

/// What a [`Limiter`] is built from, besides the pool and the clock.
#[derive(Debug, Clone)]
pub struct LimiterParams {
    pub quota: QuotaParams,
    pub lease_ttl: Duration,
    pub breaker: Breaker,
    pub key: String,
}

impl Limiter {
    pub fn new(
        pool: PgPool,
        params: LimiterParams,
        health: Arc<ProviderHealth>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let LimiterParams {
            quota,
            lease_ttl,
            breaker,
            key,
        } = params;
        let burst = NonZeroU32::new(quota.burst.max(1)).expect("non-zero");
        let local_quota = Quota::with_period(quota.emission_interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Self {
            batcher: Arc::new(QuotaBatcher::new(pool.clone(), quota, key.clone())),
            pool,
            local: RateLimiter::direct(local_quota),
            quota,
            lease_ttl,
            breaker,
            key,
            health,
            clock,
            latest: Mutex::new(None),
            suspect: AtomicBool::new(true),
            stale: AtomicBool::new(true),
        }
    }

    /// Takes in the provider's shared state, as read by the scheduler for a claim round.
    pub fn observe(&self, snapshot: Snapshot) {
        let state = snapshot.state(Some(&self.key));
        if state != ProviderState::Healthy {
            self.suspect.store(true, Ordering::Relaxed);
        }
        m::provider_state(self.provider(), state);
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(snapshot);
        self.stale.store(false, Ordering::Relaxed);
    }

    /// Whether this process saw something since the last read that may have changed the
    /// provider's shared state.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// The provider's state as last read; None before the first read.
    pub fn standing(&self) -> Option<Standing> {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        Some(
            latest
                .as_ref()?
                .standing(Some(&self.key), self.longest_wait()),
        )
    }

    /// Whether the last read says this process may send to the provider (true before any read:
    /// the quota statement has the last word anyway).
    pub fn usable(&self) -> bool {
        self.standing()
            .is_none_or(|s| s.availability == Availability::Usable)
    }

    /// Reports what a request to the provider came to, for the circuit breaker every instance
    /// shares: an outage counts towards opening it; an answer (even a business error) closes it.
    /// A 429 and rejected credentials are handled by the pause and `reject_credentials`.
    pub async fn report(
        &self,
        error: Option<&ProviderError>,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        if error.is_some() {
            self.stale.store(true, Ordering::Relaxed);
        }
        let transition = match error {
            Some(e) if e.is_outage() => {
                self.suspect.store(true, Ordering::Relaxed);
                let message = e.to_string();
                Some(
                    with_db_retry(cancel, || {
                        health::record_failure(&self.pool, self.provider(), &self.breaker, &message)
                    })
                    .await?,
                )
            }
            Some(ProviderError::RateLimited { .. } | ProviderError::Auth { .. }) => None,
            _ if self.suspect.swap(false, Ordering::Relaxed) => {
                with_db_retry(cancel, || {
                    health::record_success(&self.pool, self.provider())
                })
                .await?
            }
            _ => None,
        };
        if let Some(t) = transition.filter(|t| t.changed()) {
            self.log_transition(t, error);
        }
        Ok(())
    }

    /// Marks the credentials rejected for every instance holding them. Returns true when this
    /// report marked it, so it is logged once.
    pub async fn reject_credentials(
        &self,
        message: &str,
        cancel: &CancellationToken,
    ) -> Result<bool, StoreError> {
        self.suspect.store(true, Ordering::Relaxed);
        self.stale.store(true, Ordering::Relaxed);
        let first = with_db_retry(cancel, || {
            health::mark_auth_failed(&self.pool, self.provider(), &self.key, message)
        })
        .await?;
        if first {
            m::provider_state(self.provider(), ProviderState::AuthFailed);
        }
        Ok(first)
    }

    /// One line per change of the shared state, by the instance whose report changed it: WARN
    /// when the provider goes out or comes back, INFO between healthy and degraded.
    fn log_transition(&self, t: Transition, error: Option<&ProviderError>) {
        m::provider_state(self.provider(), t.after);
        let serious = |s| !matches!(s, ProviderState::Healthy | ProviderState::Degraded);
        let error = error.map(ToString::to_string).unwrap_or_default();
        if serious(t.before) || serious(t.after) {
            warn!(provider = %self.provider(), from = %t.before, to = %t.after, error = %error,
                "Provider state changed.");
        } else {
            info!(provider = %self.provider(), from = %t.before, to = %t.after, error = %error,
                "Provider state changed.");
        }
    }

    /// The shared quota's parameters (rate, burst, price, budget).
    pub fn quota(&self) -> &QuotaParams {
        &self.quota
    }

    pub fn provider(&self) -> ProviderKind {
        self.quota.provider
    }

    /// See [`Limiter::key`]: the fingerprint of this process's credentials.
    pub fn key(&self) -> &str {
        &self.key
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
                Admission::Granted(booked, slot) => {
                    // The slot is at most `slots::HORIZON` away, and booked: it is sent, even
                    // during a shutdown (its write gets the grace period).
                    if !slot.is_zero() {
                        tokio::time::sleep(slot).await;
                    }
                    return Ok(Ok(booked));
                }
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
        let day = self.clock.today();
        let (grant, slot) = match self.batcher.take(day, booking).await {
            Some(taken) => taken,
            None => (
                with_db_retry(cancel, || {
                    quota::take(&self.pool, &self.quota, day, booking)
                })
                .await?,
                Duration::ZERO,
            ),
        };
        if !matches!(
            grant,
            Grant::Granted { .. } | Grant::LeaseLost | Grant::EntryPaused | Grant::Wait(_)
        ) {
            self.stale.store(true, Ordering::Relaxed);
        }
        Ok(match grant {
            Grant::Granted {
                credits_used_today,
                fetch_id,
            } => {
                m::credits_today(self.provider(), credits_used_today);
                Admission::Granted(Booked { fetch_id, day }, slot)
            }
            Grant::LeaseLost => Admission::Refused(SkipReason::LeaseLost),
            Grant::EntryPaused => Admission::Refused(SkipReason::EntryPaused),
            Grant::AuthFailed => Admission::Refused(SkipReason::CredentialsRejected),
            Grant::Down(wait) => Admission::Refused(SkipReason::ProviderDown { wait }),
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
        self.stale.store(true, Ordering::Relaxed);
        with_db_retry(cancel, || quota::pause(&self.pool, self.provider(), wait)).await
    }

    /// Remembers a provider pause so this process stops claiming; logs when a pause starts.
    pub fn note_pause(&self, wait: Duration) {
        self.stale.store(true, Ordering::Relaxed);
        if self.health.note_pause(wait) {
            warn!(provider = %self.provider(), wait_s = wait.as_secs_f64(),
                "The provider asked to wait longer than a poll may hold its lease; this process pauses claims until then.");
        }
    }
}
