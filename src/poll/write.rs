//! Storing what a poll got: the answer, a failed attempt, the final failure, rejected
//! credentials, and giving a lease back. Every call goes through the same database retry, so a
//! paid answer never depends on which write happened to meet a blip.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::backoff::with_db_retry;
use super::committer::Committer;
use super::fetch::Fetched;
use super::health::ProviderHealth;
use crate::domain::Period;
use crate::normalize::Normalized;
use crate::provider::{ProviderError, ProviderKind};
use crate::store::failure::{self, FailureBookkeeping};
use crate::store::fetches::{self, AttemptContext, FetchRecord};
use crate::store::group::Answer;
use crate::store::ingest::{self, Written};
use crate::store::watchlist::{self, Claimed};
use crate::store::StoreError;
use crate::telemetry::metrics as m;

/// How a failed poll moves its entry, besides what [`FailureBookkeeping`] takes from config.
#[derive(Debug, Clone, Copy)]
pub struct FailureKind {
    /// Not due again before this (a wait the poll could not sit out with its lease).
    pub not_before: Duration,
    /// The provider said the clip does not exist.
    pub not_found: bool,
}

/// Cheap to clone: the pool and the health are shared.
#[derive(Debug, Clone)]
pub struct Writer {
    pool: PgPool,
    provider: ProviderKind,
    credits_per_request: u32,
    jitter: f64,
    failure_backoff: Duration,
    disable_after_not_found: u32,
    health: Arc<ProviderHealth>,
    /// None when `poll.commit_group` is 1.
    committer: Option<Arc<Committer>>,
}

impl Writer {
    pub fn new(
        pool: PgPool,
        provider: ProviderKind,
        credits_per_request: u32,
        opts: &super::PollOptions,
        health: Arc<ProviderHealth>,
    ) -> Self {
        let committer = (opts.commit_group > 1)
            .then(|| Arc::new(Committer::new(pool.clone(), opts.commit_group)));
        Self {
            pool,
            provider,
            credits_per_request,
            jitter: opts.jitter,
            failure_backoff: opts.failure_backoff,
            disable_after_not_found: opts.disable_after_not_found,
            health,
            committer,
        }
    }

    /// Writes an answer and its rows: in a group with the answers finishing meanwhile, or alone
    /// when there are none or their group failed. `Ok(Err(Unstorable))` when the database
    /// refused what the provider sent (an encoding, a constraint, an overflow): the caller then
    /// archives the paid answer as a failure, so a poison entry backs off instead of being
    /// bought once per lease.
    #[tracing::instrument(skip_all, fields(clip_id = %entry.clip_id, region = %entry.region, period = period.days()), err)]
    pub async fn success(
        &self,
        entry: &Claimed,
        period: Period,
        fetched: &Fetched,
        rows: &Arc<Normalized>,
        cancel: &CancellationToken,
    ) -> Result<Result<Written, ProviderError>, StoreError> {
        let mut record = self.record(entry, period, fetched, None);
        record.warnings = rows.warnings.iter().map(ToString::to_string).collect();
        if !record.warnings.is_empty() {
            rows.warnings.iter().for_each(|w| m::validation(w.rule));
            warn!(clip_id = %entry.clip_id, region = %entry.region, period = period.days(),
                warnings = %record.warnings.join("; "), "Stored a response with parts dropped.");
        }
        let lease = entry.lease_token;
        let grouped = match (
            &self.committer,
            Answer::of(&record, rows.clone(), lease, self.jitter),
        ) {
            (Some(committer), Some(answer)) => committer.commit(answer).await,
            _ => None,
        };
        let written = match grouped {
            Some(w) => Ok(w),
            None => {
                with_db_retry(cancel, || {
                    ingest::record_success(&self.pool, &record, rows, lease, self.jitter)
                })
                .await
            }
        };
        let w = match written {
            Ok(w) => w,
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => return Ok(Err(ProviderError::Unstorable(e.to_string()))),
        };
        m::rows_written(&w);
        if w.lease_lost {
            m::answer_after_lease_lost(self.provider);
            warn!(clip_id = %entry.clip_id, region = %entry.region, fetch_id = w.fetch_id,
                "Stored an answer that came back after the lease was lost; another worker may have paid for it too.");
        }
        self.health.note_success(fetched.attempt.requested_at);
        Ok(Ok(w))
    }

    /// Archives an attempt that is about to be retried, or handed over to the next provider
    /// (its pending row gets its outcome); the entry itself is not touched.
    pub async fn retried(
        &self,
        entry: &Claimed,
        period: Period,
        fetched: &Fetched,
        error: &ProviderError,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        let record = self.record(entry, period, fetched, Some(error));
        with_db_retry(cancel, || fetches::record(&self.pool, &record, None))
            .await
            .map(drop)
    }

    /// Archives a poll's last attempt and counts the failure on its entry. Returns whether the
    /// entry is now disabled.
    #[tracing::instrument(skip_all, fields(clip_id = %entry.clip_id, region = %entry.region, period = period.days()), err)]
    pub async fn failure(
        &self,
        entry: &Claimed,
        period: Period,
        fetched: &Fetched,
        error: &ProviderError,
        kind: FailureKind,
        cancel: &CancellationToken,
    ) -> Result<bool, StoreError> {
        let record = self.record(entry, period, fetched, Some(error));
        let book = FailureBookkeeping {
            failure_backoff: self.failure_backoff,
            not_before: kind.not_before,
            not_found: kind.not_found,
            disable_after_not_found: self.disable_after_not_found,
        };
        let disabled = with_db_retry(cancel, || {
            failure::record_failure(&self.pool, &record, entry.lease_token, &book)
        })
        .await?;
        if disabled {
            warn!(clip_id = %entry.clip_id, region = %entry.region, error = %error,
                "Disabled a watchlist entry: the provider keeps saying the clip does not exist.");
        }
        Ok(disabled)
    }

    /// Gives an entry's lease back unpolled, due again at `due_at` (None: keeps its due time).
    /// The one place a lease is released early; an ad-hoc entry has no lease to give back.
    pub async fn release(
        &self,
        entry: &Claimed,
        due_at: Option<DateTime<Utc>>,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        let Some(token) = entry.lease_token else {
            return Ok(());
        };
        with_db_retry(cancel, || {
            watchlist::release(
                &self.pool,
                entry.clip_id.as_str(),
                entry.region.as_str(),
                token,
                due_at,
            )
        })
        .await
        .map(drop)
    }

    fn record<'a>(
        &self,
        entry: &'a Claimed,
        period: Period,
        fetched: &'a Fetched,
        error: Option<&ProviderError>,
    ) -> FetchRecord<'a> {
        let ctx = AttemptContext {
            clip_id: entry.clip_id.as_str(),
            region: entry.region.as_str(),
            period: period.days(),
            provider: self.provider,
            try_number: fetched.number,
            credits: self.credits_per_request,
        };
        let mut record = FetchRecord::from_attempt(&fetched.attempt, ctx, error);
        record.booked = Some(fetched.booked);
        record
    }
}
