//! The maintenance jobs of `soundtrend run`: lease tidying, retention, backlog gauges; and the
//! daily partition job that creates `trend_observations` partitions ahead.

use sqlx::PgPool;
use tracing::info;

use crate::poll::Poller;
use crate::store::{self, fetches, watchlist};
use crate::telemetry::metrics as m;

/// The youngest a `pending` attempt is taken for orphaned.
const ORPHANED_AFTER: std::time::Duration = std::time::Duration::from_mins(15);

/// The maintenance job: tidies expired leases, applies retention, refreshes backlog gauges.
pub async fn maintain(
    pool: &PgPool,
    poller: &Poller,
    retention_days: u32,
) -> Result<(), sqlx::Error> {
    // A pending attempt older than this cannot still be in flight (the lease and the request
    // timeout are far shorter): its process died.
    let abandoned =
        fetches::abandon_orphans(pool, ORPHANED_AFTER.max(poller.lease_ttl() * 2)).await?;
    if abandoned > 0 {
        tracing::warn!(
            abandoned,
            "Marked attempts whose process died with the request in flight as abandoned (their credits stay booked)."
        );
    }
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
    let store::watchlist::Backlog {
        due,
        overdue_secs: overdue,
        leased,
    } = store::watchlist::backlog(pool).await?;
    m::backlog(due, overdue.max(0.0), leased);
    for provider in poller.providers() {
        let (used, _) = store::quota::usage(pool, provider, poller.clock().today()).await?;
        m::credits_today(provider, used);
    }
    Ok(())
}

/// When the partition job runs: daily at 00:07 UTC (tokio-cron-scheduler runs in UTC).
pub const PARTITIONS_CRON: &str = "0 7 0 * * *";
/// Months of `trend_observations` partitions kept ready after the current one.
pub const PARTITION_MONTHS_AHEAD: i32 = 3;

/// The partition job: creates the monthly `trend_observations` partitions that do not exist yet,
/// from last month to [`PARTITION_MONTHS_AHEAD`] months ahead.
pub async fn create_partitions(pool: &PgPool) -> Result<(), sqlx::Error> {
    let created = store::trend::ensure_partitions(pool, PARTITION_MONTHS_AHEAD).await?;
    if created > 0 {
        info!(created, "Created trend_observations partitions ahead.");
    }
    Ok(())
}
