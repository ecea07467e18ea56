//! The daemon's named UTC cron jobs, run by `tokio-cron-scheduler` in every instance (each job is
//! idempotent, so N instances running it N times is harmless):
//!
//! - **poll tick** (`daemon.tick_cron`): wakes the worker to claim due entries;
//! - **maintenance** (`daemon.maintenance_cron`): orphaned `pending` attempts, expired leases,
//!   raw-body retention, the backlog and credit gauges;
//! - **partitions** (daily 00:07): the months ahead of `trend_observations`.
//!
//! A job that fails logs a warning and runs again on its next schedule; it never stops the daemon.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::warn;

use super::maintenance::{self, create_partitions, maintain};
use super::Poller;
use crate::config::{CronExpr, Settings};
use crate::telemetry::metrics as m;

/// When the jobs run and what maintenance keeps, taken from [`Settings`].
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// `daemon.tick_cron`.
    pub tick_cron: CronExpr,
    /// `daemon.maintenance_cron`.
    pub maintenance_cron: CronExpr,
    /// `retention.raw_body_days` (0: raw bodies are kept forever).
    pub raw_body_days: u32,
}

impl JobsConfig {
    #[must_use]
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            tick_cron: s.daemon.tick_cron.clone(),
            maintenance_cron: s.daemon.maintenance_cron.clone(),
            raw_body_days: s.retention.raw_body_days,
        }
    }
}

/// Starts the scheduler with the three jobs.
pub async fn start(
    pool: PgPool,
    poller: Arc<Poller>,
    config: &JobsConfig,
    wake: Arc<Notify>,
) -> anyhow::Result<JobScheduler> {
    let scheduler = JobScheduler::new()
        .await
        .context("cannot start the scheduler")?;
    let tick = Job::new_async(config.tick_cron.as_str(), move |_id, _sched| {
        let wake = wake.clone();
        Box::pin(async move { wake.notify_one() })
    })
    .with_context(|| {
        format!(
            "config key `daemon.tick_cron`: cannot schedule {:?}",
            config.tick_cron
        )
    })?;
    scheduler
        .add(tick)
        .await
        .context("cannot schedule the poll tick")?;

    let retention_days = config.raw_body_days;
    let (maintenance_pool, partitions_pool) = (pool.clone(), pool);
    add_logged(
        &scheduler,
        "maintenance",
        config.maintenance_cron.as_str(),
        move || {
            let (pool, poller) = (maintenance_pool.clone(), poller.clone());
            async move { maintain(&pool, &poller, retention_days).await }
        },
    )
    .await
    .context("config key `daemon.maintenance_cron`")?;
    add_logged(
        &scheduler,
        "partitions",
        maintenance::PARTITIONS_CRON,
        move || {
            let pool = partitions_pool.clone();
            async move { create_partitions(&pool).await }
        },
    )
    .await?;
    scheduler
        .start()
        .await
        .context("cannot start the scheduler")?;
    Ok(scheduler)
}

/// Adds a job named `name` whose failure is counted and logged, never fatal.
async fn add_logged<F, Fut, E>(
    scheduler: &JobScheduler,
    name: &'static str,
    cron: &str,
    run: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let run = Arc::new(run);
    let job = Job::new_async(cron, move |_id, _sched| {
        let run = run.clone();
        Box::pin(async move {
            if let Err(e) = run().await {
                m::db_error();
                warn!(job = name, error = %e, "A scheduled job failed; it runs again on its next schedule.");
            }
        })
    })
    .with_context(|| format!("cannot schedule the {name} job at {cron:?}"))?;
    scheduler
        .add(job)
        .await
        .with_context(|| format!("cannot schedule the {name} job"))?;
    Ok(())
}
