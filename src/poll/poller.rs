//! One poll of one watchlist entry, composed from the three pieces of the poll path: the
//! [`FetchStep`] (rate limit, request, retries), `normalize`, and the [`Writer`], one set of them
//! per provider (a [`Lane`]). A poll tries the entry's providers in order and hands over to the
//! next when one is out (down, rate limited, out of budget, rejecting the credentials). The
//! daemon and `soundtrend poll` both use this; it knows nothing about scheduling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::fetch::{Ended, Fetched};
use super::lane::{Lane, LaneSpec, PollOptions};
use super::outcome::{report, Timings};
pub use super::outcome::{PollOutcome, SkipReason};

mod ending;
use crate::clock::Clock;
use crate::domain::{ClipId, Period, Region};
use crate::normalize::{normalize, Observation};
use crate::provider::{ProviderClient, ProviderError, ProviderKind};
use crate::store::health::{self, Availability, Standing};
use crate::store::ingest::Written;
use crate::store::quota::QuotaParams;
use crate::store::watchlist::Claimed;
use crate::store::StoreError;
use crate::telemetry::metrics as m;

#[derive(Debug)]
pub struct Poller {
    pool: PgPool,
    /// In order of preference; never empty.
    lanes: Vec<Lane>,
    clock: Arc<dyn Clock>,
}

impl Poller {
    /// A poller for one provider.
    pub fn new(
        pool: PgPool,
        client: ProviderClient,
        quota: QuotaParams,
        opts: PollOptions,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::with_lanes(
            pool,
            vec![LaneSpec {
                client,
                quota,
                opts,
            }],
            clock,
        )
    }

    /// A poller for several providers, `lanes` in order of preference.
    ///
    /// # Panics
    /// When `lanes` is empty or names a provider twice (config validation refuses both).
    pub fn with_lanes(pool: PgPool, lanes: Vec<LaneSpec>, clock: Arc<dyn Clock>) -> Self {
        assert!(!lanes.is_empty(), "a poller needs a provider");
        let lanes: Vec<Lane> = lanes
            .into_iter()
            .map(|spec| Lane::new(&pool, spec, &clock))
            .collect();
        for (i, lane) in lanes.iter().enumerate() {
            assert!(
                lanes[..i].iter().all(|l| l.kind != lane.kind),
                "{} is configured twice",
                lane.kind
            );
        }
        Self { pool, lanes, clock }
    }

    /// The providers, in order of preference.
    #[must_use]
    pub fn providers(&self) -> Vec<ProviderKind> {
        self.lanes.iter().map(|l| l.kind).collect()
    }

    /// Each provider's shared quota, in order.
    #[must_use]
    pub fn quotas(&self) -> Vec<QuotaParams> {
        self.lanes.iter().map(|l| *l.limiter.quota()).collect()
    }

    /// The preferred provider (the first in the order).
    #[must_use]
    pub fn provider(&self) -> ProviderKind {
        self.lanes[0].kind
    }

    fn lane(&self, kind: ProviderKind) -> Option<&Lane> {
        self.lanes.iter().find(|l| l.kind == kind)
    }

    /// Reads every provider's shared state (one statement) and returns the providers this process
    /// may send to now, in order: what the scheduler claims work for.
    pub async fn refresh_health(&self) -> Result<Vec<ProviderKind>, StoreError> {
        let rows = health::snapshot(&self.pool, self.clock.today()).await?;
        for row in rows {
            if let Some(lane) = self.lane(row.provider) {
                lane.limiter.observe(row);
            }
        }
        Ok(self.usable_providers())
    }

    /// Whether a lane saw something since the last read that may have changed the shared state
    /// (then the last read must not be trusted).
    #[must_use]
    pub fn health_is_stale(&self) -> bool {
        self.lanes.iter().any(|l| l.limiter.is_stale())
    }

    /// The providers usable as last read, in order.
    #[must_use]
    pub fn usable_providers(&self) -> Vec<ProviderKind> {
        self.lanes
            .iter()
            .filter(|l| l.limiter.usable())
            .map(|l| l.kind)
            .collect()
    }

    /// Each provider's state as last read (providers not read yet are left out).
    #[must_use]
    pub fn standings(&self) -> Vec<Standing> {
        self.lanes
            .iter()
            .filter_map(|l| l.limiter.standing())
            .collect()
    }

    /// The earliest time a provider that is out now may be used again, if any will by itself.
    #[must_use]
    pub fn next_usable_at(&self) -> Option<DateTime<Utc>> {
        self.standings()
            .into_iter()
            .filter_map(|s| match s.availability {
                Availability::OutUntil(t) => Some(t),
                _ => None,
            })
            .min()
    }

    /// Before an operator's explicit poll: credentials a provider rejected earlier get one more
    /// try (the operator may have fixed the account without changing the key).
    pub async fn forgive_credentials(&self) -> Result<(), StoreError> {
        for lane in &self.lanes {
            health::forgive_credentials(&self.pool, lane.kind, lane.limiter.key()).await?;
        }
        Ok(())
    }

    /// When this process last stored an answer, from any provider.
    #[must_use]
    pub fn last_success(&self) -> Option<DateTime<Utc>> {
        self.lanes
            .iter()
            .filter_map(|l| l.health.last_success())
            .max()
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
        self.lanes[0].opts.lease_ttl
    }

    /// See [`Limiter::requests_per_half_lease`]: the most any provider in the order allows.
    #[must_use]
    pub fn requests_per_half_lease(&self) -> u32 {
        self.lanes
            .iter()
            .map(|l| l.limiter.requests_per_half_lease())
            .max()
            .unwrap_or(1)
    }

    /// Gives a claimed entry back unpolled, due again at `due_at` (None: keeps its due time).
    pub async fn release(
        &self,
        entry: &Claimed,
        due_at: Option<DateTime<Utc>>,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        self.lanes[0].writer.release(entry, due_at, cancel).await
    }

    /// The window to ask for: the entry's own, or the smallest one covering the days since its last
    /// success, so no day is missed after downtime.
    #[must_use]
    pub fn choose_period(&self, entry: &Claimed) -> Period {
        if let Some(p) = entry.period {
            return p;
        }
        match entry.last_success_at {
            None => self.lanes[0].opts.default_period,
            Some(last) => {
                let elapsed = (self.clock.now() - last).num_seconds().max(0);
                // +1: the day of the last success itself may have changed since.
                let days = (elapsed + 86_399) / 86_400 + 1;
                Period::smallest_covering(days)
            }
        }
    }

    /// The lanes a poll of `entry` tries, in order: the one it is pinned to, or every provider
    /// in the order, those the last read says are out left out (unless all are: the quota
    /// statement has the last word).
    fn candidates(&self, entry: &Claimed) -> Vec<&Lane> {
        if let Some(kind) = entry.provider {
            return self.lane(kind).into_iter().collect();
        }
        let usable: Vec<&Lane> = self.lanes.iter().filter(|l| l.limiter.usable()).collect();
        if usable.is_empty() {
            self.lanes.iter().collect()
        } else {
            usable
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
        let lanes = self.candidates(entry);
        let mut outcome = PollOutcome::Skipped(SkipReason::NoUsableProvider);
        let mut provider = entry.provider.unwrap_or_else(|| self.provider());
        for (i, lane) in lanes.iter().enumerate() {
            provider = lane.kind;
            let fetched = lane
                .fetch
                .fetch(entry, (clip_id, region), period, &mut timings, cancel)
                .await?;
            let ended = match fetched {
                Ok(fetched) => match self
                    .store(lane, entry, (clip_id, region), period, &fetched, cancel)
                    .await?
                {
                    Ok(written) => {
                        outcome = PollOutcome::Stored {
                            period,
                            written,
                            attempts: fetched.number,
                            provider: lane.kind,
                        };
                        break;
                    }
                    // Neither is worth retrying: the same answer would be bought again.
                    Err(error) => Ended::Failed {
                        fetched: Box::new(fetched),
                        error,
                        wait: Duration::ZERO,
                    },
                },
                Err(ended) => ended,
            };
            let next = lanes.get(i + 1);
            if let (Some(next), true) = (next, Lane::hands_over(&ended)) {
                self.hand_over(lane, entry, period, ended, cancel).await?;
                m::failover(lane.kind);
                tracing::debug!(clip_id = %clip_id, region = %region, from = %lane.kind, to = %next.kind,
                    "Handing the poll over to the next provider.");
                continue;
            }
            outcome = self.end(lane, entry, period, ended, cancel).await?;
            break;
        }
        if let PollOutcome::Skipped(SkipReason::NoUsableProvider) = outcome {
            self.release(entry, self.next_usable_at(), cancel).await?;
        }
        report(
            provider,
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
        lane: &Lane,
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
                lane.writer
                    .success(entry, period, fetched, &Arc::new(rows), cancel)
                    .await
            }
            Err(e) => {
                m::validation(e.rule());
                Ok(Err(ProviderError::InvalidPayload(e.to_string())))
            }
        }
    }
}
