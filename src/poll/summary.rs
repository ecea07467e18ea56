//! Totals of a worker's run ([`Summary`]), for the CLI's summary line and the benchmarks.

use std::time::Duration;

use super::{PollOutcome, Poller, SkipReason};
use crate::store::health::ProviderState;

/// Totals of a run, for the CLI's summary line.
#[derive(Debug, Default, Clone, PartialEq)]
#[allow(clippy::struct_excessive_bools)] // independent flags, one per reason the run stopped short
pub struct Summary {
    pub stored: u64,
    pub failed: u64,
    pub skipped: u64,
    pub rows: i64,
    pub auth_rejected: bool,
    pub budget_exhausted: bool,
    /// The provider asked for a pause longer than a poll may wait.
    pub provider_paused: bool,
    /// A provider's circuit breaker was open, or no provider could take an entry.
    pub provider_down: bool,
    /// Per-poll latencies, when [`WorkerOptions::record_latencies`](super::WorkerOptions::record_latencies) is on.
    pub latencies: Vec<Duration>,
}

impl Summary {
    /// Due work waited because no provider could take it: says why, as a skipped poll would.
    pub(super) fn note_waiting(&mut self, poller: &Poller) {
        for standing in poller.standings() {
            match standing.state {
                ProviderState::AuthFailed => self.auth_rejected = true,
                ProviderState::BudgetSpent => self.budget_exhausted = true,
                ProviderState::Down => self.provider_down = true,
                ProviderState::Degraded => self.provider_paused = true,
                ProviderState::Healthy => {}
            }
        }
    }

    pub(super) fn add(&mut self, outcome: &PollOutcome) {
        match outcome {
            PollOutcome::Stored { written, .. } => {
                self.stored += 1;
                self.rows += written.rows();
            }
            PollOutcome::Failed { .. } => self.failed += 1,
            PollOutcome::Skipped(reason) => {
                self.skipped += 1;
                match reason {
                    SkipReason::CredentialsRejected => self.auth_rejected = true,
                    SkipReason::BudgetExhausted { .. } => self.budget_exhausted = true,
                    SkipReason::ProviderPaused { .. } => self.provider_paused = true,
                    SkipReason::ProviderDown { .. } | SkipReason::NoUsableProvider => {
                        self.provider_down = true;
                    }
                    _ => {}
                }
            }
        }
    }
}
