//! What a poll reports: how it ended ([`PollOutcome`]), why it was skipped ([`SkipReason`]),
//! where its time went, and the one log line that says all of it.

use std::time::Duration;

use tracing::{info, warn};

use crate::domain::Period;
use crate::provider::{ProviderError, ProviderKind};
use crate::store::ingest::Written;
use crate::store::watchlist::Claimed;
use crate::telemetry::metrics as m;

/// How one poll ended.
#[derive(Debug)]
pub enum PollOutcome {
    Stored {
        period: Period,
        written: Written,
        attempts: u32,
        /// Which provider answered.
        provider: ProviderKind,
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
    /// The provider's circuit breaker is open (or its one probe is in flight): not before
    /// `wait`. The entry goes to the next provider in the order, if there is one.
    ProviderDown {
        wait: Duration,
    },
    /// No configured provider may take the entry now (the ones it may use are down, out of
    /// budget or rejecting the credentials): it waits, unpaid.
    NoUsableProvider,
}

impl SkipReason {
    /// About the provider, not the entry: the next provider in the order may take the entry.
    #[must_use]
    pub fn fails_over(&self) -> bool {
        matches!(
            self,
            Self::CredentialsRejected
                | Self::BudgetExhausted { .. }
                | Self::ProviderPaused { .. }
                | Self::ProviderDown { .. }
        )
    }
}

/// Where a poll's time went: `wait` for the rate limit, the shared quota and retry backoff;
/// `request` in the HTTP attempts themselves. The rest of `latency_ms` is the database.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    pub wait: Duration,
    pub request: Duration,
}

/// The poll log line (one per poll, with every id and where the time went) and its metric.
pub(super) fn report(
    provider: ProviderKind,
    entry: &Claimed,
    period: Period,
    outcome: &PollOutcome,
    latency: Duration,
    timings: Timings,
) {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let (latency_ms, wait_ms, request_ms) = (ms(latency), ms(timings.wait), ms(timings.request));
    match outcome {
        PollOutcome::Stored {
            written, attempts, ..
        } => {
            m::poll(provider, "ok");
            info!(clip_id = %entry.clip_id, region = %entry.region, period = period.days(), outcome = "ok", provider = %provider,
                latency_ms, wait_ms, request_ms, attempts, rows = written.rows(), fetch_id = written.fetch_id, "Polled.");
        }
        PollOutcome::Failed {
            error,
            attempts,
            disabled,
            ..
        } => {
            m::poll(provider, error.outcome().as_str());
            warn!(clip_id = %entry.clip_id, region = %entry.region, period = period.days(), provider = %provider,
                outcome = error.outcome().as_str(), latency_ms, wait_ms, request_ms, attempts, rows = 0, disabled, error = %error, "Poll failed.");
        }
        PollOutcome::Skipped(reason) => {
            info!(clip_id = %entry.clip_id, region = %entry.region, period = period.days(), outcome = "skipped",
                latency_ms, wait_ms, request_ms, rows = 0, reason = ?reason, "Poll skipped.");
        }
    }
}
