//! One provider's part of the poll path (a [`Lane`]): its client behind the fetch step, its
//! limiter (quota, credits, circuit breaker) and its writer, with the knobs of a poll taken from
//! `[poll]` and that provider's section ([`PollOptions`]).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::backoff::Policy;
use super::fetch::{Ended, FetchStep, RetryOptions};
use super::health::ProviderHealth;
use super::limiter::{Limiter, LimiterParams};
use super::write::Writer;
use crate::clock::Clock;
use crate::config::{ProviderSettings, Settings};
use crate::domain::Period;
use crate::provider::{ProviderClient, ProviderKind};
use crate::store::health::Breaker;
use crate::store::quota::QuotaParams;

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
    pub breaker: Breaker,
    /// Most answers committed in one transaction; 1: each alone.
    pub commit_group: usize,
}

impl PollOptions {
    /// The options of the first provider in force (the only one with a `[provider]` section).
    #[must_use]
    pub fn from_settings(s: &Settings) -> Self {
        let first = s.provider_lanes().into_iter().next().unwrap_or_default();
        Self::for_provider(s, &first)
    }

    /// `[poll]` with one provider's retry, not-found and breaker keys.
    #[must_use]
    pub fn for_provider(s: &Settings, p: &ProviderSettings) -> Self {
        Self {
            default_period: s.poll.default_period,
            max_attempts: p.max_attempts,
            retry_base_delay: p.retry_base_delay,
            retry_max_delay: p.retry_max_delay,
            max_retry_after: p.max_retry_after,
            jitter: s.poll.jitter,
            failure_backoff: s.poll.failure_backoff,
            not_found_codes: p.not_found_codes.clone(),
            not_found_messages: p
                .not_found_messages
                .iter()
                .map(|m| m.to_lowercase())
                .collect(),
            disable_after_not_found: p.disable_after_not_found.get(),
            lease_ttl: s.poll.lease_ttl,
            breaker: Breaker {
                failures: p.breaker_failures.get(),
                cooldown: p.breaker_cooldown,
                cooldown_max: p.breaker_cooldown_max,
            },
            commit_group: s.poll.commit_group,
        }
    }
}

/// What one provider's lane is built from.
#[derive(Debug)]
pub struct LaneSpec {
    pub client: ProviderClient,
    pub quota: QuotaParams,
    pub opts: PollOptions,
}

/// One provider's part of the poll path.
#[derive(Debug)]
pub(super) struct Lane {
    pub(super) kind: ProviderKind,
    pub(super) limiter: Arc<Limiter>,
    pub(super) fetch: FetchStep,
    pub(super) writer: Writer,
    pub(super) health: Arc<ProviderHealth>,
    pub(super) opts: PollOptions,
}

impl Lane {
    pub(super) fn new(pool: &PgPool, spec: LaneSpec, clock: &Arc<dyn Clock>) -> Self {
        let LaneSpec {
            client,
            quota,
            opts,
        } = spec;
        let kind = client.kind();
        let health = Arc::new(ProviderHealth::default());
        let credits = quota.credits_per_request;
        let params = LimiterParams {
            quota,
            lease_ttl: opts.lease_ttl,
            breaker: opts.breaker,
            key: client.key_fingerprint(),
        };
        let limiter = Arc::new(Limiter::new(
            pool.clone(),
            params,
            health.clone(),
            clock.clone(),
        ));
        let writer = Writer::new(pool.clone(), kind, credits, &opts, health.clone());
        let retry = RetryOptions {
            max_attempts: opts.max_attempts,
            delays: Policy::jittered(opts.retry_base_delay, opts.retry_max_delay),
            max_retry_after: opts.max_retry_after,
        };
        Self {
            kind,
            fetch: FetchStep::new(
                client,
                limiter.clone(),
                writer.clone(),
                retry,
                clock.clone(),
            ),
            limiter,
            writer,
            health,
            opts,
        }
    }

    /// Whether a poll that ended this way on this provider may go on with the next one.
    pub(super) fn hands_over(ended: &Ended) -> bool {
        match ended {
            Ended::Skipped(why) => why.fails_over(),
            Ended::Failed { error, .. } => error.fails_over(),
        }
    }
}
