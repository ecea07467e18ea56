//! Writing a failed poll: its last attempt ([`fetches::record`]) and, while the lease is ours,
//! the entry's failure count, backoff and not-found streak, in one transaction.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::fetches::{self, FetchRecord};

/// How a failed poll moves its watchlist entry.
#[derive(Debug, Clone)]
pub struct FailureBookkeeping {
    /// Base of the exponential backoff: the entry is due again after
    /// `failure_backoff * 2^(failures - 1)`, capped at its `poll_interval`.
    pub failure_backoff: Duration,
    /// Not due again before this (a provider's Retry-After that outlasts the poll).
    pub not_before: Duration,
    /// The provider said the clip does not exist.
    pub not_found: bool,
    /// Disable the entry once `not_found_count` reaches this.
    pub disable_after_not_found: u32,
}

/// Records the final failed attempt of a poll and, if the lease is still ours, counts the failure
/// on the entry, in one transaction. Returns whether the entry is now disabled.
pub async fn record_failure(
    db: &PgPool,
    fetch: &FetchRecord<'_>,
    lease: Option<Uuid>,
    book: &FailureBookkeeping,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    fetches::record(&mut *tx, fetch, lease).await?;
    let disabled = sqlx::query_scalar!(
        r#"UPDATE watchlist SET
    last_polled_at = $3,
    -- Bounded by watchlist_consecutive_failures_at_most_1000000: never overflows.
    consecutive_failures = LEAST(consecutive_failures + 1, 1000000),
    last_error = $4::text,
    next_due_at = now() + GREATEST(
        LEAST(poll_interval,
              make_interval(secs => $6::float8 * power(2, LEAST(consecutive_failures, 30)))),
        make_interval(secs => $9::float8)),
    not_found_count = CASE WHEN $7 THEN LEAST(not_found_count + 1, 1000000) ELSE 0 END,
    enabled = enabled AND NOT ($7 AND not_found_count + 1 >= $8),
    disabled_reason = CASE WHEN $7 AND not_found_count + 1 >= $8
        THEN format('the provider said the clip does not exist %s polls in a row: %s',
                    not_found_count + 1, $4)
        ELSE disabled_reason END,
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
WHERE clip_id = $1 AND region = $2 AND lease_token = $5
RETURNING NOT enabled AS "disabled!""#,
        fetch.clip_id,
        fetch.region,
        fetch.requested_at,
        fetch.error.as_deref(),
        lease,
        book.failure_backoff.as_secs_f64(),
        book.not_found,
        i32::try_from(book.disable_after_not_found).unwrap_or(i32::MAX),
        book.not_before.as_secs_f64(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(disabled.unwrap_or(false))
}
