//! One poll of one watchlist entry, composed from the three pieces of the poll path: the
//! [`FetchStep`] (rate limit, request, retries), `normalize`, and the [`Writer`]. The daemon and
//! `soundtrend poll` both use this; it knows nothing about scheduling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::backoff::Policy;
use super::fetch::{Ended, FetchStep, Fetched, RetryOptions};
use super::health::ProviderHealth;
use super::limiter::Limiter;
use super::outcome::{report, Timings};
pub use super::outcome::{PollOutcome, SkipReason};
use super::write::{FailureKind, Writer};
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::{ClipId, Period, Region};
use crate::normalize::{normalize, Observation};
use crate::provider::{ProviderClient, ProviderError, ProviderKind};
use crate::store::ingest::Written;
use crate::store::quota::QuotaParams;
use crate::store::watchlist::Claimed;
use crate::store::StoreError;
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
    #[must_use]
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

#[derive(Debug)]
pub struct Poller {
    pool: PgPool,
    provider: ProviderKind,
    limiter: Arc<Limiter>,
    fetch: FetchStep,
    writer: Writer,
    health: Arc<ProviderHealth>,
    opts: PollOptions,
    clock: Arc<dyn Clock>,
}

impl Poller {
    pub fn new(
        pool: PgPool,
        client: ProviderClient,
        quota: QuotaParams,
        opts: PollOptions,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let provider = client.kind();
        let health = Arc::new(ProviderHealth::default());
        let credits = quota.credits_per_request;
        let limiter = Arc::new(Limiter::new(
            pool.clone(),
            quota,
            opts.lease_ttl,
            health.clone(),
            clock.clone(),
        ));
        let writer = Writer::new(pool.clone(), provider, credits, &opts, health.clone());
        let retry = RetryOptions {
            max_attempts: opts.max_attempts,
            delays: Policy::jittered(opts.retry_base_delay, opts.retry_max_delay),
            max_retry_after: opts.max_retry_after,
        };
        Self {
            fetch: FetchStep::new(client, limiter.clone(), writer.clone(), retry),
            pool,
            provider,
            limiter,
            writer,
            health,
            opts,
            clock,
        }
    }

    #[must_use]
    pub fn provider(&self) -> ProviderKind {
        self.provider
    }

    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    #[must_use]
    pub fn lease_ttl(&self) -> Duration {
        self.opts.lease_ttl
    }

    /// Why this process stopped polling the provider, and when it last stored an answer.
    #[must_use]
    pub fn health(&self) -> &ProviderHealth {
        &self.health
    }

    /// See [`Limiter::requests_per_half_lease`].
    #[must_use]
    pub fn requests_per_half_lease(&self) -> u32 {
        self.limiter.requests_per_half_lease()
    }

    /// True while this process must not claim work for this provider (rejected credentials, a
    /// provider pause, or the day's budget spent).
    #[must_use]
    pub fn is_blocked(&self) -> bool {
        self.health.is_blocked(self.clock.today())
    }

    /// When the provider's pause (as this process knows it) ends, if one is in force.
    #[must_use]
    pub fn pause_ends_at(&self) -> Option<DateTime<Utc>> {
        self.health.pause_ends_at(self.clock.now())
    }

    /// Gives a claimed entry back unpolled, due again at `due_at` (None: keeps its due time).
    pub async fn release(
        &self,
        entry: &Claimed,
        due_at: Option<DateTime<Utc>>,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        self.writer.release(entry, due_at, cancel).await
    }

    /// The window to ask for: the entry's own, or the smallest one covering the days since its last
    /// success, so no day is missed after downtime.
    #[must_use]
    pub fn choose_period(&self, entry: &Claimed) -> Period {
        if let Some(p) = entry.period {
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
    #[tracing::instrument(skip_all, fields(clip_id = %entry.clip_id, region = %entry.region, period), err)]
    pub async fn poll(
        &self,
        entry: &Claimed,
        period_override: Option<Period>,
        cancel: &CancellationToken,
    ) -> Result<PollOutcome, StoreError> {
        let started = Instant::now();
        // Parsed at the store boundary: the watchlist's CHECKs and the domain types accept the
        // same values (tests/hostile.rs checks the region list), so a claimed entry is valid.
        let (clip_id, region) = (&entry.clip_id, &entry.region);
        let period = period_override.unwrap_or_else(|| self.choose_period(entry));
        tracing::Span::current().record("period", period.days());
        let mut timings = Timings::default();
        let fetched = self
            .fetch
            .fetch(entry, (clip_id, region), period, &mut timings, cancel)
            .await?;
        let outcome = match fetched {
            Ok(fetched) => match self
                .store(entry, (clip_id, region), period, &fetched, cancel)
                .await?
            {
                Ok(written) => PollOutcome::Stored {
                    period,
                    written,
                    attempts: fetched.number,
                },
                // Neither is worth retrying: the same answer would be bought again.
                Err(error) => {
                    let wait = Duration::ZERO;
                    let ended = Ended::Failed {
                        fetched: Box::new(fetched),
                        error,
                        wait,
                    };
                    self.end(entry, period, ended, cancel).await?
                }
            },
            Err(ended) => self.end(entry, period, ended, cancel).await?,
        };
        report(
            self.provider,
            entry,
            period,
            &outcome,
            started.elapsed(),
            timings,
        );
        Ok(outcome)
    }

    /// Normalizes an answer and writes it. `Ok(Err(_))`: the answer did not validate, or the
    /// database refused it; the poll then fails with it.
    async fn store(
        &self,
        entry: &Claimed,
        (clip_id, region): (&ClipId, &Region),
        period: Period,
        fetched: &Fetched,
        cancel: &CancellationToken,
    ) -> Result<Result<Written, ProviderError>, StoreError> {
        let Ok(detail) = &fetched.attempt.result else {
            unreachable!("the fetch step hands over answered attempts only")
        };
        let obs = Observation {
            clip_id: clip_id.clone(),
            region: region.clone(),
            period,
            observed_at: fetched.attempt.requested_at,
        };
        match normalize(detail, &obs) {
            Ok(rows) => {
                self.writer
                    .success(entry, period, fetched, &rows, cancel)
                    .await
            }
            Err(e) => {
                m::validation(e.rule());
                Ok(Err(ProviderError::InvalidPayload(e.to_string())))
            }
        }
    }

    /// Records how a poll that stored nothing ended, and gives the lease back when it was not
    /// used up.
    async fn end(
        &self,
        entry: &Claimed,
        period: Period,
        ended: Ended,
        cancel: &CancellationToken,
    ) -> Result<PollOutcome, StoreError> {
        let skip = match ended {
            // Not ours any more: nothing to give back, nothing was paid.
            Ended::Skipped(SkipReason::LeaseLost) => SkipReason::LeaseLost,
            Ended::Skipped(why) => {
                let due_at = match &why {
                    SkipReason::ProviderPaused { wait } => chrono::Duration::from_std(*wait)
                        .ok()
                        .map(|w| self.clock.now() + w),
                    _ => None,
                };
                self.release(entry, due_at, cancel).await?;
                why
            }
            Ended::Failed { fetched, error, .. } if matches!(error, ProviderError::Auth { .. }) => {
                self.writer
                    .credentials_rejected(entry, period, &fetched, &error, cancel)
                    .await?;
                self.release(entry, None, cancel).await?;
                SkipReason::CredentialsRejected
            }
            Ended::Failed {
                fetched,
                error,
                wait,
            } => {
                let kind = FailureKind {
                    not_before: wait,
                    not_found: self.means_not_found(&error),
                };
                let disabled = self
                    .writer
                    .failure(entry, period, &fetched, &error, kind, cancel)
                    .await?;
                return Ok(PollOutcome::Failed {
                    period,
                    error,
                    attempts: fetched.number,
                    disabled,
                });
            }
        };
        Ok(PollOutcome::Skipped(skip))
    }

    /// The provider's ways of saying "no such clip", as configured.
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
}
