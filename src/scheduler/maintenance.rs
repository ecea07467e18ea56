//! The maintenance job of `soundtrend run`: lease tidying, retention, backlog gauges.

use sqlx::PgPool;
use tracing::info;

use crate::poller::Poller;
use crate::store::{self, fetches, watchlist};
use crate::telemetry::metrics as m;

/// The maintenance job: tidies expired leases, applies retention, refreshes backlog gauges.
pub async fn maintain(
    pool: &PgPool,
    poller: &Poller,
    retention_days: u32,
) -> Result<(), sqlx::Error> {
    let cleared = watchlist::clear_expired_leases(pool).await?;
    if cleared > 0 {
        info!(
            cleared,
            "Cleared expired leases (their entries are due again)."
        );
    }
    if retention_days > 0 {
        let pruned = fetches::prune_bodies(pool, retention_days).await?;
        if pruned > 0 {
            info!(
                pruned,
                retention_days, "Pruned raw response bodies past retention."
            );
        }
    }
    let (due, overdue, leased): (i64, f64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE next_due_at <= now() AND lease_token IS NULL),
                COALESCE(EXTRACT(epoch FROM now() - min(next_due_at) FILTER (WHERE lease_token IS NULL)), 0)::float8,
                count(*) FILTER (WHERE lease_token IS NOT NULL AND lease_expires_at > now())
         FROM watchlist WHERE enabled AND (next_due_at <= now() OR lease_token IS NOT NULL)",
    )
    .fetch_one(pool)
    .await?;
    m::backlog(due, overdue.max(0.0), leased);
    let (used, _) = store::quota::usage(pool, poller.provider(), poller.clock().today()).await?;
    m::credits_today(poller.provider(), used);
    Ok(())
}
