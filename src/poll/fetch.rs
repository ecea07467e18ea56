//! Fetching with retry: each attempt asks the [`Limiter`] for a booked request, sends it, and a
//! failure worth retrying waits and tries again. `backon` drives the loop; a provider's
//! `Retry-After` replaces the drawn delay in its `adjust` hook, so each decision draws exactly one
//! delay, and that delay is both the pause shared with every instance (on a 429) and the sleep.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::Retryable;
use tokio_util::sync::CancellationToken;

use super::backoff::Policy;
use super::limiter::Limiter;
use super::outcome::{SkipReason, Timings};
use super::write::Writer;
use crate::clock::Clock;
use crate::domain::{ClipId, Period, Region};
use crate::provider::{Attempt, ProviderClient, ProviderError};
use crate::store::fetches::Booked;
use crate::store::quota;
use crate::store::watchlist::Claimed;
use crate::store::StoreError;
use crate::telemetry::metrics as m;

/// A sent request: what came back, the booking it was sent under, and which try it was.
#[derive(Debug)]
pub struct Fetched {
    pub attempt: Attempt,
    pub booked: Booked,
    /// 1 for the first try of a poll.
    pub number: u32,
}

/// How fetching ended without an answer to store.
#[derive(Debug)]
pub enum Ended {
    /// The last attempt failed and is not retried: not worth it, retries spent, or the wait it
    /// calls for outlasts what a poll may hold its lease for. `wait` is that wait (zero for an
    /// error not worth retrying): the entry is not due again before it ends.
    Failed {
        /// Boxed: an attempt carries its parsed answer, which is large.
        fetched: Box<Fetched>,
        error: ProviderError,
        wait: Duration,
    },
    /// Nothing more was sent (see the reason); the last failed attempt, if any, is archived.
    Skipped(SkipReason),
}

/// The retry knobs of a poll.
#[derive(Debug, Clone)]
pub struct RetryOptions {
    pub max_attempts: u32,
    /// Delays between attempts when the provider gives none.
    pub delays: Policy,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

#[derive(Debug)]
pub struct FetchStep {
    client: ProviderClient,
    limiter: Arc<Limiter>,
    writer: Writer,
    opts: RetryOptions,
    /// Stamps each request's `requested_at`.
    clock: Arc<dyn Clock>,
}

impl FetchStep {
    pub fn new(
        client: ProviderClient,
        limiter: Arc<Limiter>,
        writer: Writer,
        opts: RetryOptions,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            client,
            limiter,
            writer,
            opts,
            clock,
        }
    }

    /// Sends the request for `entry` until it is answered or fetching ends. Errors are only
    /// database failures; the provider's are [`Ended::Failed`].
    #[tracing::instrument(skip_all, fields(clip_id = %entry.clip_id, region = %entry.region, period = period.days()), err)]
    pub async fn fetch(
        &self,
        entry: &Claimed,
        (clip_id, region): (&ClipId, &Region),
        period: Period,
        timings: &mut Timings,
        cancel: &CancellationToken,
    ) -> Result<Result<Fetched, Ended>, StoreError> {
        let between = Arc::new(Between {
            limiter: self.limiter.clone(),
            writer: self.writer.clone(),
            entry: entry.clone(),
            period,
            cancel: cancel.clone(),
            state: Mutex::default(),
        });
        let sleeper = {
            let between = between.clone();
            move |wait| {
                let between = between.clone();
                async move { between.sleep(wait).await }
            }
        };
        let tried = (|| self.attempt(&between, (clip_id, region)))
            .retry(self.opts.delays.delays())
            .when(|stop| matches!(stop, Stop::Provider(e) if e.is_retryable()))
            .adjust(|stop, drawn| self.decide(&between, stop, drawn))
            .notify(|_, _| m::retry(self.limiter.provider()))
            .sleep(sleeper)
            .await;
        let state = std::mem::take(&mut *between.lock());
        timings.wait += state.timings.wait;
        timings.request += state.timings.request;
        let error = match tried {
            Ok(fetched) => return Ok(Ok(fetched)),
            Err(Stop::Store(e)) => return Err(e),
            Err(Stop::Skipped(why)) => return Ok(Err(Ended::Skipped(why))),
            Err(Stop::Provider(error)) => error,
        };
        let fetched = state
            .failed
            .expect("a provider error leaves its attempt behind");
        let wait = if error.is_retryable() {
            state.wait
        } else {
            Duration::ZERO
        };
        if let ProviderError::RateLimited { .. } = error {
            self.limiter.share_pause(wait, cancel).await?;
            // A wait longer than a poll may hold its lease ends the poll; the shared pause keeps
            // every instance away until then, and this one stops claiming.
            if wait > self.limiter.longest_wait() {
                self.limiter.note_pause(wait);
            }
        }
        Ok(Err(Ended::Failed {
            fetched: Box::new(fetched),
            error,
            wait,
        }))
    }

    /// One attempt: a booked request, sent. A failed one is left in `between` for the sleep
    /// (which archives it) or for the caller (which records the poll's failure).
    async fn attempt(
        &self,
        between: &Between,
        (clip_id, region): (&ClipId, &Region),
    ) -> Result<Fetched, Stop> {
        let (number, broken) = {
            let mut s = between.lock();
            s.tries += 1;
            s.wait = Duration::ZERO;
            (s.tries, s.broken.take())
        };
        if let Some(e) = broken {
            return Err(Stop::Store(e));
        }
        let entry = &between.entry;
        let booking = quota::Attempt {
            clip_id: entry.clip_id.as_str(),
            region: entry.region.as_str(),
            period: between.period.days(),
            attempt: i16::try_from(number).unwrap_or(i16::MAX),
            lease: entry.lease_token,
            lease_ttl: self.limiter.lease_ttl(),
            key: self.limiter.key(),
        };
        let provider = self.limiter.provider();
        let asked = Instant::now();
        let acquired = self.limiter.acquire(&booking, &between.cancel).await;
        let waited = asked.elapsed();
        between.lock().timings.wait += waited;
        let booked = match acquired {
            Ok(Ok(booked)) => booked,
            Ok(Err(why)) => return Err(Stop::Skipped(why)),
            Err(e) => return Err(Stop::Store(e)),
        };
        m::quota_wait(provider, waited);
        let attempt = self
            .client
            .fetch(clip_id, region, between.period, self.clock.as_ref())
            .await;
        between.lock().timings.request += attempt.duration;
        m::request(provider, &attempt);
        let error = attempt.result.as_ref().err().cloned();
        if error.as_ref().is_none_or(ProviderError::reached_provider) {
            m::credits_spent(provider, self.limiter.credits_per_request());
        }
        if let Err(e) = self.limiter.report(error.as_ref(), &between.cancel).await {
            // The answer is paid for and must still be stored; the breaker's count is not worth
            // losing it over, so the poll goes on and the next report catches up.
            tracing::warn!(provider = %provider, error = %e, "Could not record the provider's health.");
        }
        let fetched = Fetched {
            attempt,
            booked,
            number,
        };
        match error {
            None => Ok(fetched),
            Some(error) => {
                between.lock().failed = Some(fetched);
                Err(Stop::Provider(error))
            }
        }
    }

    /// backon's `adjust` hook: see [`decide`]. Remembers the decided wait, which a poll that
    /// ends here still needs (the entry's not-before, a 429's shared pause).
    fn decide(&self, between: &Between, stop: &Stop, drawn: Option<Duration>) -> Option<Duration> {
        let Stop::Provider(error) = stop else {
            return None;
        };
        let mut s = between.lock();
        let last = s.tries >= self.opts.max_attempts;
        let (wait, retry) = decide(error, drawn, &self.opts, last, self.limiter.longest_wait());
        s.wait = wait;
        retry.then_some(wait)
    }
}

/// The retry decision for a retryable failure, given the one delay backon drew: the wait is the
/// provider's `Retry-After` (capped) when it sent one, else the drawn delay. Retry only if this
/// was not the `last` attempt and the wait fits in what a poll may hold its lease for.
fn decide(
    error: &ProviderError,
    drawn: Option<Duration>,
    opts: &RetryOptions,
    last: bool,
    longest_wait: Duration,
) -> (Duration, bool) {
    let wait = error
        .retry_after()
        .map(|d| d.min(opts.max_retry_after))
        .or(drawn)
        .unwrap_or_default();
    (wait, !last && wait <= longest_wait)
}

/// Why backon stopped (or was asked to retry).
#[derive(Debug)]
enum Stop {
    Provider(ProviderError),
    Skipped(SkipReason),
    Store(StoreError),
}

/// What the attempts, backon's hooks and the sleep between attempts share. Owned, because
/// backon's sleeper must be `'static`.
struct Between {
    limiter: Arc<Limiter>,
    writer: Writer,
    entry: Claimed,
    period: Period,
    cancel: CancellationToken,
    state: Mutex<BetweenState>,
}

#[derive(Default)]
struct BetweenState {
    tries: u32,
    /// The last failed attempt, not archived yet.
    failed: Option<Fetched>,
    /// The wait decided for the last failure.
    wait: Duration,
    /// A store error met between attempts; the next attempt ends the poll with it.
    broken: Option<StoreError>,
    timings: Timings,
}

impl Between {
    fn lock(&self) -> std::sync::MutexGuard<'_, BetweenState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Between two attempts: shares a 429's pause (the decided `wait` itself), archives the failed
    /// attempt, then sleeps `wait` or until shutdown (the next attempt then stops).
    async fn sleep(&self, wait: Duration) {
        let Some(fetched) = self.lock().failed.take() else {
            return;
        };
        let error = fetched
            .attempt
            .result
            .as_ref()
            .err()
            .cloned()
            .expect("only failed attempts are retried");
        let archived = async {
            if let ProviderError::RateLimited { .. } = error {
                self.limiter.share_pause(wait, &self.cancel).await?;
            }
            let (entry, period) = (&self.entry, self.period);
            self.writer
                .retried(entry, period, &fetched, &error, &self.cancel)
                .await
        };
        if let Err(e) = archived.await {
            self.lock().broken = Some(e);
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => self.lock().timings.wait += wait,
            () = self.cancel.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn opts() -> RetryOptions {
        RetryOptions {
            max_attempts: 3,
            delays: Policy::jittered(S, 10 * S),
            max_retry_after: 60 * S,
        }
    }

    fn rate_limited(retry_after: Option<Duration>) -> ProviderError {
        ProviderError::RateLimited { retry_after }
    }

    #[test]
    fn without_retry_after_the_drawn_delay_is_the_wait() {
        let got = decide(&rate_limited(None), Some(3 * S), &opts(), false, 30 * S);
        assert_eq!(got, (3 * S, true));
    }

    #[test]
    fn a_retry_after_replaces_the_drawn_delay_and_is_capped() {
        let got = decide(
            &rate_limited(Some(7 * S)),
            Some(3 * S),
            &opts(),
            false,
            30 * S,
        );
        assert_eq!(got, (7 * S, true));
        let got = decide(
            &rate_limited(Some(3600 * S)),
            Some(3 * S),
            &opts(),
            false,
            900 * S,
        );
        assert_eq!(got, (60 * S, true));
    }

    #[test]
    fn a_wait_longer_than_a_poll_may_hold_its_lease_ends_the_retries_but_is_kept() {
        let got = decide(
            &rate_limited(Some(40 * S)),
            Some(3 * S),
            &opts(),
            false,
            30 * S,
        );
        assert_eq!(got, (40 * S, false));
    }

    #[test]
    fn the_last_attempt_is_not_retried_but_its_wait_still_counts() {
        let got = decide(
            &ProviderError::Http { status: 503 },
            Some(2 * S),
            &opts(),
            true,
            30 * S,
        );
        assert_eq!(got, (2 * S, false));
    }
}
