//! One poll of one watchlist entry: quota → fetch → normalize → transactional write, with the
//! retries a paid, flaky API calls for. The daemon and `soundtrend poll` both use this; it knows
//! nothing about scheduling.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::{ClipId, Period, Region};
use crate::normalize::{normalize, Observation};
use crate::provider::{Attempt, ProviderClient, ProviderError, ProviderKind};
use crate::store::fetches::{AttemptContext, Booked, FetchRecord};
use crate::store::ingest::{self, FailureBookkeeping, Written};
use crate::store::quota::{self, Grant, QuotaParams};
use crate::store::watchlist::{self, Claimed};
use crate::store::{self, StoreError};
use crate::telemetry::metrics as m;

/// The knobs of a poll, taken from [`Settings`].
#[derive(Debug, Clone)]
pub struct PollOptions {
    pub default_period: Period,
    pub max_attempts: u32,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    pub max_retry_after: Duration,
    pub jitter: f64,
    pub failure_backoff: Duration,
    pub not_found_codes: Vec<i64>,
    pub not_found_messages: Vec<String>,
    pub disable_after_not_found: u32,
    /// The claim's lease: a poll never waits so long that its lease could run out.
    pub lease_ttl: Duration,
}

impl PollOptions {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            default_period: s.poll.default_period,
            max_attempts: s.provider.max_attempts,
            retry_base_delay: s.provider.retry_base_delay,
            retry_max_delay: s.provider.retry_max_delay,
            max_retry_after: s.provider.max_retry_after,
            jitter: s.poll.jitter,
            failure_backoff: s.poll.failure_backoff,
            not_found_codes: s.provider.not_found_codes.clone(),
            not_found_messages: s
                .provider
                .not_found_messages
                .iter()
                .map(|m| m.to_lowercase())
                .collect(),
            disable_after_not_found: s.provider.disable_after_not_found.get(),
            lease_ttl: s.poll.lease_ttl,
        }
    }
}

/// How one poll ended.
#[derive(Debug)]
pub enum PollOutcome {
    Stored {
        period: Period,
        written: Written,
        attempts: u32,
    },
    Failed {
        period: Period,
        error: ProviderError,
        attempts: u32,
        disabled: bool,
    },
    /// Nothing was polled, the lease was given back: see the reason.
    Skipped(SkipReason),
}

#[derive(Debug, Clone, PartialEq)]
pub enum SkipReason {
    /// The provider rejected our credentials earlier; no credits are burnt on a bad key.
    CredentialsRejected,
    BudgetExhausted {
        used: i64,
        budget: i64,
    },
    ShuttingDown,
    /// The entry's lease was no longer ours when the quota was to be booked (it expired and
    /// was re-claimed, or the entry was removed): nothing was sent or paid.
    LeaseLost,
    /// The provider asked every instance to wait longer than a poll may hold its lease; the
    /// entry is due again when the pause ends.
    ProviderPaused {
        wait: Duration,
    },
    /// An analyst paused the entry while its poll waited; the lease was given back unpaid.
    EntryPaused,
    /// The row cannot be polled (it was disabled with the reason).
    InvalidEntry(String),
}

/// Why the process stopped polling a provider, as health reports it.
#[derive(Debug, Default)]
pub struct ProviderState {
    pub auth_rejected: AtomicBool,
    pub auth_error: Mutex<Option<String>>,
    pub budget_exhausted_on: Mutex<Option<NaiveDate>>,
    /// Until when the provider asked us (all instances) to stay away, as last seen here.
    pub paused_until: Mutex<Option<Instant>>,
    pub last_success: Mutex<Option<DateTime<Utc>>>,
}

#[derive(Debug)]
pub struct Poller {
    pool: PgPool,
    client: ProviderClient,
    quota: QuotaParams,
    local: DefaultDirectRateLimiter,
    opts: PollOptions,
    clock: Arc<dyn Clock>,
    pub state: ProviderState,
}

/// Where a poll's time went: `wait` for the rate limit, the shared quota and retry backoff;
/// `request` in the HTTP attempts themselves. The rest of `latency_ms` is the database.
#[derive(Debug, Default, Clone, Copy)]
struct Timings {
    wait: Duration,
    request: Duration,
}

impl Poller {
    pub fn new(
        pool: PgPool,
        client: ProviderClient,
        quota: QuotaParams,
        opts: PollOptions,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let burst = NonZeroU32::new(quota.burst.max(1)).expect("non-zero");
        let local_quota = Quota::with_period(quota.emission_interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Self {
            pool,
            client,
            quota,
            local: RateLimiter::direct(local_quota),
            opts,
            clock,
            state: ProviderState::default(),
        }
    }

    pub fn provider(&self) -> ProviderKind {
        self.client.kind()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn lease_ttl(&self) -> Duration {
        self.opts.lease_ttl
    }

    /// How many requests this provider's shared quota allows within half a lease: claiming more
    /// entries ahead than that would leave some waiting for quota past their lease.
    pub fn requests_per_half_lease(&self) -> u32 {
        let per_lease = (self.opts.lease_ttl / 2).as_secs_f64()
            / self.quota.emission_interval.as_secs_f64().max(1e-9)
            + f64::from(self.quota.burst);
        // Finite and at least 1 after the clamp, so the cast cannot wrap.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = per_lease.clamp(1.0, f64::from(u32::MAX)) as u32;
        n
    }

    /// True while this process must not claim work for this provider (rejected credentials, or
    /// the day's budget spent).
    pub fn is_blocked(&self) -> bool {
        if self.state.auth_rejected.load(Ordering::Relaxed) {
            return true;
        }
        if matches!(*self.state.paused_until.lock().expect("lock"), Some(t) if t > Instant::now()) {
            return true;
        }
        let today = self.clock.today();
        matches!(*self.state.budget_exhausted_on.lock().expect("lock"), Some(d) if d == today)
    }

    /// The window to ask for: the entry's own, or the smallest one covering the days since its last
    /// success, so no day is missed after downtime.
    pub fn choose_period(&self, entry: &Claimed) -> Period {
        if let Some(p) = entry.period.and_then(|d| Period::from_days(d.into()).ok()) {
            return p;
        }
        match entry.last_success_at {
            None => self.opts.default_period,
            Some(last) => {
                let elapsed = (self.clock.now() - last).num_seconds().max(0);
                // +1: the day of the last success itself may have changed since.
                let days = (elapsed + 86_399) / 86_400 + 1;
                Period::smallest_covering(days)
            }
        }
    }

    /// Polls one claimed entry to its end. Errors are only database failures the caller should
    /// back off on; everything the provider does is a [`PollOutcome`].
    pub async fn poll(
        &self,
        entry: &Claimed,
        period_override: Option<Period>,
        cancel: &CancellationToken,
    ) -> Result<PollOutcome, StoreError> {
        let started = Instant::now();
        let (clip_id, region) = match (ClipId::parse(&entry.clip_id), Region::parse(&entry.region))
        {
            (Ok(c), Ok(r)) => (c, r),
            (Err(e), _) | (_, Err(e)) => {
                let reason = format!("cannot poll this entry: {e}");
                if let Some(token) = entry.lease_token {
                    watchlist::disable_with_error(
                        &self.pool,
                        &entry.clip_id,
                        &entry.region,
                        token,
                        &reason,
                    )
                    .await?;
                }
                warn!(clip_id = %entry.clip_id, region = %entry.region, %reason, "Disabled a watchlist entry that cannot be polled.");
                return Ok(PollOutcome::Skipped(SkipReason::InvalidEntry(reason)));
            }
        };
        let period = period_override.unwrap_or_else(|| self.choose_period(entry));
        let mut timings = Timings::default();
        let outcome = self
            .poll_inner(entry, &clip_id, &region, period, &mut timings, cancel)
            .await?;
        self.report(entry, period, &outcome, started.elapsed(), timings);
        Ok(outcome)
    }

    async fn poll_inner(
        &self,
        entry: &Claimed,
        clip_id: &ClipId,
        region: &Region,
        period: Period,
        timings: &mut Timings,
        cancel: &CancellationToken,
    ) -> Result<PollOutcome, StoreError> {
        let lease = entry.lease_token;
        let provider = self.provider();
        for attempt_no in 1..=self.opts.max_attempts {
            let asked = Instant::now();
            let acquired = self.acquire(entry, period, attempt_no, cancel).await?;
            let waited = asked.elapsed();
            timings.wait += waited;
            let booked = match acquired {
                Ok(booked) => {
                    m::quota_wait(provider, waited);
                    booked
                }
                // Not ours any more: nothing to give back, nothing was paid.
                Err(SkipReason::LeaseLost) => {
                    return Ok(PollOutcome::Skipped(SkipReason::LeaseLost))
                }
                Err(skip) => {
                    self.release(entry, &skip).await?;
                    return Ok(PollOutcome::Skipped(skip));
                }
            };
            let attempt = self.client.fetch(clip_id, region, period).await;
            timings.request += attempt.duration;
            m::request(provider, &attempt);
            if attempt
                .result
                .as_ref()
                .err()
                .is_none_or(ProviderError::reached_provider)
            {
                m::credits_spent(provider, self.quota.credits_per_request);
            }

            let error = match &attempt.result {
                Ok(detail) => {
                    let obs = Observation {
                        clip_id: clip_id.clone(),
                        region: region.clone(),
                        period,
                        observed_at: attempt.requested_at,
                    };
                    match normalize(detail, &obs) {
                        Ok(rows) => {
                            let mut record =
                                self.record(&attempt, entry, period, attempt_no, booked, None);
                            record.warnings =
                                rows.warnings.iter().map(ToString::to_string).collect();
                            if !record.warnings.is_empty() {
                                rows.warnings.iter().for_each(|w| m::validation(w.rule));
                                warn!(clip_id = %clip_id, region = %region, period = period.days(),
                                    warnings = %record.warnings.join("; "),
                                    "Stored a response with parts dropped.");
                            }
                            let written = self
                                .with_db_retry(cancel, || {
                                    ingest::record_success(
                                        &self.pool,
                                        &record,
                                        &rows,
                                        lease,
                                        self.opts.jitter,
                                    )
                                })
                                .await;
                            match written {
                                Ok(w) => {
                                    m::rows_written(&w);
                                    if w.lease_lost {
                                        m::answer_after_lease_lost(provider);
                                        warn!(clip_id = %clip_id, region = %region, fetch_id = w.fetch_id,
                                            "Stored an answer that came back after the lease was lost; another worker may have paid for it too.");
                                    }
                                    *self.state.last_success.lock().expect("lock") =
                                        Some(attempt.requested_at);
                                    return Ok(PollOutcome::Stored {
                                        period,
                                        written: w,
                                        attempts: attempt_no,
                                    });
                                }
                                Err(e) if e.is_connection_error() => return Err(e),
                                // The database refused what the provider sent (an encoding, a
                                // constraint, an overflow): the paid answer is archived as a
                                // store_error and the entry backs off like any failure, so a
                                // poison entry is never bought again once per lease.
                                Err(e) => ProviderError::Unstorable(e.to_string()),
                            }
                        }
                        Err(e) => {
                            m::validation(e.rule());
                            ProviderError::InvalidPayload(e.to_string())
                        }
                    }
                }
                Err(e) => e.clone(),
            };

            if let ProviderError::Auth { .. } = error {
                let record = self.record(&attempt, entry, period, attempt_no, booked, Some(&error));
                return self
                    .stop_on_rejected_credentials(entry, &record, &error)
                    .await;
            }
            if let ProviderError::RateLimited { retry_after } = &error {
                let pause = retry_after
                    .unwrap_or_else(|| self.backoff(attempt_no))
                    .min(self.opts.max_retry_after);
                self.with_db_retry(cancel, || async {
                    quota::pause(&self.pool, provider, pause)
                        .await
                        .map_err(StoreError::from)
                })
                .await?;
            }
            let last = attempt_no == self.opts.max_attempts;
            let wait = error
                .retry_after()
                .map(|d| d.min(self.opts.max_retry_after))
                .unwrap_or_else(|| self.backoff(attempt_no));
            // A wait longer than a poll may hold its lease ends the poll; the entry is due again
            // after the wait (and the shared pause keeps every instance away until then).
            let too_long = wait > self.longest_wait();
            if too_long && matches!(error, ProviderError::RateLimited { .. }) {
                self.note_pause(wait);
            }
            if error.is_retryable() && !last && !too_long {
                m::retry(provider);
                let record = self.record(&attempt, entry, period, attempt_no, booked, Some(&error));
                self.with_db_retry(cancel, || async {
                    store::fetches::record(&self.pool, &record, None)
                        .await
                        .map(|_| ())
                        .map_err(StoreError::from)
                })
                .await?;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {
                        timings.wait += wait;
                        continue;
                    }
                    _ = cancel.cancelled() => {
                        self.release(entry, &SkipReason::ShuttingDown).await?;
                        return Ok(PollOutcome::Skipped(SkipReason::ShuttingDown));
                    }
                }
            }
            let not_found = self.means_not_found(&error);
            let record = self.record(&attempt, entry, period, attempt_no, booked, Some(&error));
            let book = FailureBookkeeping {
                failure_backoff: self.opts.failure_backoff,
                not_before: if error.is_retryable() {
                    wait
                } else {
                    Duration::ZERO
                },
                not_found,
                disable_after_not_found: self.opts.disable_after_not_found,
            };
            let disabled = self
                .with_db_retry(cancel, || async {
                    ingest::record_failure(&self.pool, &record, lease, &book)
                        .await
                        .map_err(StoreError::from)
                })
                .await?;
            if disabled {
                warn!(clip_id = %clip_id, region = %region, error = %error,
                    "Disabled a watchlist entry: the provider keeps saying the clip does not exist.");
            }
            return Ok(PollOutcome::Failed {
                period,
                error,
                attempts: attempt_no,
                disabled,
            });
        }
        unreachable!("max_attempts is at least 1 and every iteration returns or continues")
    }

    /// Waits for both the local and the shared rate limit and books the request's credits, its
    /// pending `fetches` row and a fresh lease in one statement: whatever the waits took, a
    /// request is only sent for an entry whose lease is ours for a whole `lease_ttl` more.
    /// `Err(reason)` when the poll must not go ahead.
    async fn acquire(
        &self,
        entry: &Claimed,
        period: Period,
        attempt_no: u32,
        cancel: &CancellationToken,
    ) -> Result<Result<Booked, SkipReason>, StoreError> {
        // The local limiter paces this process once per request; the shared quota below may
        // make it wait again, without taking a second local slot.
        tokio::select! {
            _ = self.local.until_ready() => {}
            _ = cancel.cancelled() => return Ok(Err(SkipReason::ShuttingDown)),
        }
        let booking = quota::Attempt {
            clip_id: &entry.clip_id,
            region: &entry.region,
            period: period.days(),
            attempt: i16::try_from(attempt_no).unwrap_or(i16::MAX),
            lease: entry.lease_token,
            lease_ttl: self.opts.lease_ttl,
        };
        loop {
            if cancel.is_cancelled() {
                return Ok(Err(SkipReason::ShuttingDown));
            }
            if self.state.auth_rejected.load(Ordering::Relaxed) {
                return Ok(Err(SkipReason::CredentialsRejected));
            }
            let day = self.clock.today();
            let grant = self
                .with_db_retry(cancel, || async {
                    quota::take(&self.pool, &self.quota, day, &booking)
                        .await
                        .map_err(StoreError::from)
                })
                .await?;
            match grant {
                Grant::Granted {
                    credits_used_today,
                    fetch_id,
                } => {
                    m::credits_today(self.provider(), credits_used_today);
                    return Ok(Ok(Booked { fetch_id, day }));
                }
                Grant::LeaseLost => return Ok(Err(SkipReason::LeaseLost)),
                Grant::EntryPaused => return Ok(Err(SkipReason::EntryPaused)),
                Grant::Wait(d) if d > self.longest_wait() => {
                    self.note_pause(d);
                    return Ok(Err(SkipReason::ProviderPaused { wait: d }));
                }
                Grant::Wait(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = cancel.cancelled() => return Ok(Err(SkipReason::ShuttingDown)),
                    }
                }
                Grant::BudgetExhausted { used, budget } => {
                    let first_here = {
                        let mut on = self.state.budget_exhausted_on.lock().expect("lock");
                        let first = *on != Some(day);
                        *on = Some(day);
                        first
                    };
                    let first_anywhere =
                        quota::mark_exhausted(&self.pool, self.provider(), day).await?;
                    if first_here || first_anywhere {
                        warn!(provider = %self.provider(), credits_used = used, daily_credit_budget = budget, day = %day,
                            "The daily credit budget is spent; polling pauses until the next UTC day.");
                    }
                    return Ok(Err(SkipReason::BudgetExhausted { used, budget }));
                }
            }
        }
    }

    async fn stop_on_rejected_credentials(
        &self,
        entry: &Claimed,
        record: &FetchRecord<'_>,
        error: &ProviderError,
    ) -> Result<PollOutcome, StoreError> {
        store::fetches::record(&self.pool, record, None).await?;
        let first = !self.state.auth_rejected.swap(true, Ordering::SeqCst);
        *self.state.auth_error.lock().expect("lock") = Some(error.to_string());
        if first {
            quota::mark_auth_failed(&self.pool, self.provider(), &error.to_string()).await?;
            let vars = self.provider().credential_env_vars().join(", ");
            error!(provider = %self.provider(), error = %error,
                "The provider rejected the credentials; this process stops polling it until restarted. Check {vars}.");
        }
        self.release(entry, &SkipReason::CredentialsRejected)
            .await?;
        Ok(PollOutcome::Skipped(SkipReason::CredentialsRejected))
    }

    async fn release(&self, entry: &Claimed, why: &SkipReason) -> Result<(), StoreError> {
        let due_at = match why {
            SkipReason::ProviderPaused { wait } => chrono::Duration::from_std(*wait)
                .ok()
                .map(|w| self.clock.now() + w),
            _ => None,
        };
        if let Some(token) = entry.lease_token {
            watchlist::release(&self.pool, &entry.clip_id, &entry.region, token, due_at).await?;
        }
        Ok(())
    }

    /// When the provider's pause (as this process knows it) ends, if one is in force.
    pub fn pause_ends_at(&self) -> Option<DateTime<Utc>> {
        let until = (*self.state.paused_until.lock().expect("lock"))?;
        let left = until.checked_duration_since(Instant::now())?;
        chrono::Duration::from_std(left)
            .ok()
            .map(|d| self.clock.now() + d)
    }

    /// The longest a poll may wait (for the quota or before a retry) while holding its lease: a
    /// quarter of the lease, leaving the rest for the request and the write.
    fn longest_wait(&self) -> Duration {
        self.opts.lease_ttl / 4
    }

    /// Remembers a provider pause so this process stops claiming; logs when a pause starts.
    fn note_pause(&self, wait: Duration) {
        let now = Instant::now();
        let until = now + wait;
        let mut paused = self.state.paused_until.lock().expect("lock");
        let already = paused.is_some_and(|t| t > now);
        if paused.is_none_or(|t| t < until) {
            *paused = Some(until);
        }
        if !already {
            warn!(provider = %self.provider(), wait_s = wait.as_secs_f64(),
                "The provider asked to wait longer than a poll may hold its lease; this process pauses claims until then.");
        }
    }

    fn record<'a>(
        &self,
        attempt: &'a Attempt,
        entry: &'a Claimed,
        period: Period,
        attempt_no: u32,
        booked: Booked,
        error: Option<&ProviderError>,
    ) -> FetchRecord<'a> {
        let ctx = AttemptContext {
            clip_id: &entry.clip_id,
            region: &entry.region,
            period: period.days(),
            provider: self.provider(),
            try_number: attempt_no,
            credits: self.quota.credits_per_request,
        };
        let mut record = FetchRecord::from_attempt(attempt, ctx, error);
        record.booked = Some(booked);
        record
    }

    /// Capped exponential backoff with full jitter: uniform in [base, min(max, base * 2^(n-1))].
    fn backoff(&self, attempt_no: u32) -> Duration {
        let base = self.opts.retry_base_delay;
        let cap = base
            .saturating_mul(1u32 << (attempt_no.saturating_sub(1)).min(16))
            .min(self.opts.retry_max_delay);
        if cap <= base {
            return cap;
        }
        let secs = rand::rng().random_range(base.as_secs_f64()..=cap.as_secs_f64());
        Duration::from_secs_f64(secs)
    }

    fn means_not_found(&self, error: &ProviderError) -> bool {
        let ProviderError::Api { code, message } = error else {
            return false;
        };
        let message = message.to_lowercase();
        self.opts.not_found_codes.contains(code)
            || self
                .opts
                .not_found_messages
                .iter()
                .any(|m| !m.is_empty() && message.contains(m))
    }

    /// Retries a database write while the database is unreachable, so a paid response is not
    /// thrown away over a blip. Gives up after about a minute or on shutdown.
    async fn with_db_retry<T, F, Fut>(
        &self,
        cancel: &CancellationToken,
        mut op: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut delay = Duration::from_millis(200);
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            match op().await {
                Err(e)
                    if e.is_connection_error()
                        && Instant::now() < give_up
                        && !cancel.is_cancelled() =>
                {
                    m::db_error();
                    warn!(error = %e, "The database is unreachable; retrying the write.");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    fn report(
        &self,
        entry: &Claimed,
        period: Period,
        outcome: &PollOutcome,
        latency: Duration,
        timings: Timings,
    ) {
        let provider = self.provider();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (latency_ms, wait_ms, request_ms) =
            (ms(latency), ms(timings.wait), ms(timings.request));
        match outcome {
            PollOutcome::Stored {
                written, attempts, ..
            } => {
                m::poll(provider, "ok");
                info!(clip_id = %entry.clip_id, region = %entry.region, period = period.days(), outcome = "ok",
                    latency_ms, wait_ms, request_ms, attempts, rows = written.rows(), fetch_id = written.fetch_id, "Polled.");
            }
            PollOutcome::Failed {
                error,
                attempts,
                disabled,
                ..
            } => {
                m::poll(provider, error.outcome().as_str());
                warn!(clip_id = %entry.clip_id, region = %entry.region, period = period.days(),
                    outcome = error.outcome().as_str(), latency_ms, wait_ms, request_ms, attempts, rows = 0, disabled, error = %error, "Poll failed.");
            }
            PollOutcome::Skipped(reason) => {
                info!(clip_id = %entry.clip_id, region = %entry.region, period = period.days(), outcome = "skipped",
                    latency_ms, wait_ms, request_ms, rows = 0, reason = ?reason, "Poll skipped.");
            }
        }
    }
}
