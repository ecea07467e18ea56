//! How a poll that stored nothing is recorded: handed over to the next provider (its last
//! attempt archived, rejected credentials taken out), or ended (the failure and the entry's
//! backoff written, or the lease given back).

use tokio_util::sync::CancellationToken;

use super::{PollOutcome, Poller, SkipReason};
use crate::domain::Period;
use crate::poll::fetch::Ended;
use crate::poll::lane::{Lane, PollOptions};
use crate::poll::write::FailureKind;
use crate::provider::ProviderError;
use crate::store::watchlist::Claimed;
use crate::store::StoreError;

impl Poller {
    /// A provider could not take the poll, and the next one will: archives its last attempt (if
    /// there was one) and, for rejected credentials, takes the provider out. The entry and its
    /// lease stay as they are.
    pub(super) async fn hand_over(
        &self,
        lane: &Lane,
        entry: &Claimed,
        period: Period,
        ended: Ended,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        let Ended::Failed { fetched, error, .. } = ended else {
            return Ok(());
        };
        lane.writer
            .retried(entry, period, &fetched, &error, cancel)
            .await?;
        if matches!(error, ProviderError::Auth { .. }) {
            self.reject_credentials(lane, &error, cancel).await?;
        }
        Ok(())
    }

    /// Takes the provider out for every instance holding these credentials; logs it once.
    async fn reject_credentials(
        &self,
        lane: &Lane,
        error: &ProviderError,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        if lane
            .limiter
            .reject_credentials(&error.to_string(), cancel)
            .await?
        {
            let vars = lane.kind.credential_env_vars().join(", ");
            tracing::error!(provider = %lane.kind, error = %error,
                "The provider rejected the credentials; no instance with them polls it until a key change (or the row in provider_quota is cleared). Check {vars}.");
        }
        Ok(())
    }

    /// Records how a poll that stored nothing ended, and gives the lease back when it was not
    /// used up.
    pub(super) async fn end(
        &self,
        lane: &Lane,
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
                    SkipReason::ProviderPaused { wait } | SkipReason::ProviderDown { wait } => {
                        chrono::Duration::from_std(*wait)
                            .ok()
                            .map(|w| self.clock.now() + w)
                    }
                    _ => None,
                };
                self.release(entry, due_at, cancel).await?;
                why
            }
            Ended::Failed { fetched, error, .. } if matches!(error, ProviderError::Auth { .. }) => {
                lane.writer
                    .retried(entry, period, &fetched, &error, cancel)
                    .await?;
                self.reject_credentials(lane, &error, cancel).await?;
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
                    not_found: means_not_found(&lane.opts, &error),
                };
                let disabled = lane
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
}

/// The provider's ways of saying "no such clip", as configured.
fn means_not_found(opts: &PollOptions, error: &ProviderError) -> bool {
    let ProviderError::Api { code, message } = error else {
        return false;
    };
    let message = message.to_lowercase();
    opts.not_found_codes.contains(code)
        || opts
            .not_found_messages
            .iter()
            .any(|m| !m.is_empty() && message.contains(m))
}
