//! Every backoff in soundtrend: one capped exponential [`Policy`], the named policies that use it,
//! and the database retry the poll path wraps each store call in. A policy's delays are an
//! iterator, so it plugs into `backon` as is and loops that sleep by hand draw from the same one.

use std::future::Future;
use std::time::Duration;

use backon::Retryable;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::store::StoreError;
use crate::telemetry::metrics as m;

/// Retrying a store call while the database is unreachable: a paid answer must survive a blip.
pub const DATABASE_WRITE: Policy =
    Policy::fixed(Duration::from_millis(200), Duration::from_secs(5));
/// How long a store call on the poll path keeps retrying before its error is returned.
pub const DATABASE_WRITE_GIVE_UP: Duration = Duration::from_mins(1);
/// Waiting for an unreachable database: at start-up (`app`) and between claims (`scheduler`).
/// The cap is `daemon.database_retry_max`, see [`database_wait`].
pub const DATABASE_WAIT_FIRST: Duration = Duration::from_millis(500);
/// Reconnecting the watchlist `LISTEN` after the connection or the `LISTEN` failed.
pub const LISTEN_RECONNECT: Policy =
    Policy::fixed(Duration::from_millis(500), Duration::from_secs(30));

/// The database-wait policy, capped by the configured `daemon.database_retry_max`.
#[must_use]
pub fn database_wait(cap: Duration) -> Policy {
    Policy::fixed(DATABASE_WAIT_FIRST, cap)
}

/// Capped exponential backoff: the n-th delay is `first * 2^(n-1)`, at most `max`. With jitter
/// ("full jitter", as a poll's retries use it) the n-th delay is drawn uniformly from
/// `[first, that]`, so instances that failed together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub first: Duration,
    pub max: Duration,
    pub jitter: bool,
}

impl Policy {
    /// Without jitter: for waits on our own infrastructure, where nobody else is synchronized.
    #[must_use]
    pub const fn fixed(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            jitter: false,
        }
    }

    /// With full jitter: for retries against the provider.
    #[must_use]
    pub const fn jittered(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            jitter: true,
        }
    }

    /// The delays, endless; each `next()` draws exactly one.
    #[must_use]
    pub fn delays(self) -> Delays {
        Delays {
            policy: self,
            taken: 0,
        }
    }
}

/// The delays of a [`Policy`]; a `backon` backoff by virtue of being an iterator of durations.
#[derive(Debug, Clone)]
pub struct Delays {
    policy: Policy,
    taken: u32,
}

impl Delays {
    /// The n-th delay's ceiling (n from 1): `first * 2^(n-1)`, capped at `max`.
    fn ceiling(&self, n: u32) -> Duration {
        let Policy { first, max, .. } = self.policy;
        first
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(max)
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.taken = self.taken.saturating_add(1);
        let cap = self.ceiling(self.taken);
        let first = self.policy.first;
        if !self.policy.jitter || cap <= first {
            return Some(cap);
        }
        let secs = rand::rng().random_range(first.as_secs_f64()..=cap.as_secs_f64());
        Some(Duration::from_secs_f64(secs))
    }
}

/// Runs a store call, retrying it with [`DATABASE_WRITE`] while the database is unreachable, for
/// at most [`DATABASE_WRITE_GIVE_UP`] and never after `cancel`. Every store call on the poll path
/// goes through here, so none is more fragile than another.
pub async fn with_db_retry<T, E, F, Fut>(cancel: &CancellationToken, op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    StoreError: From<E>,
{
    let give_up = std::time::Instant::now() + DATABASE_WRITE_GIVE_UP;
    let mut op = op;
    let op = move || {
        let fut = op();
        async move { fut.await.map_err(StoreError::from) }
    };
    op.retry(DATABASE_WRITE.delays())
        .when(|e: &StoreError| {
            e.is_retryable() && std::time::Instant::now() < give_up && !cancel.is_cancelled()
        })
        .notify(|e, _| {
            m::db_error();
            warn!(error = %e, "The database is unreachable or rolled the transaction back; retrying the write.");
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_fixed_policy_doubles_up_to_its_cap() {
        let got: Vec<_> = Policy::fixed(100 * MS, 500 * MS).delays().take(5).collect();
        assert_eq!(got, [100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]);
    }

    #[test]
    fn the_listen_reconnect_delay_grows() {
        let got: Vec<_> = LISTEN_RECONNECT.delays().take(8).collect();
        assert!(got.windows(2).all(|w| w[0] <= w[1]), "{got:?}");
        assert!(got[1] > got[0]);
        assert_eq!(got[7], Duration::from_secs(30));
    }

    #[test]
    fn jittered_delays_stay_between_the_first_delay_and_the_ceiling() {
        let policy = Policy::jittered(10 * MS, 50 * MS);
        for _ in 0..200 {
            let got: Vec<_> = policy.delays().take(6).collect();
            assert_eq!(got[0], 10 * MS);
            for (i, d) in got.iter().enumerate() {
                let ceiling = (10 * MS * (1 << i)).min(50 * MS);
                assert!(*d >= 10 * MS && *d <= ceiling, "delay {i} was {d:?}");
            }
        }
    }

    #[test]
    fn a_huge_attempt_number_saturates_instead_of_overflowing() {
        let mut d = Policy::fixed(Duration::from_secs(1), Duration::from_hours(1)).delays();
        assert_eq!(d.nth(1000), Some(Duration::from_hours(1)));
    }
}
