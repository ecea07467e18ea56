//! `soundtrend run`: the long-lived worker process.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::app;
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::poll::{Worker, WorkerOptions};

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let lanes = app::lanes(&settings)?;
    let opts = WorkerOptions::from_settings(&settings);
    let endpoints: Vec<String> = settings
        .provider_lanes()
        .iter()
        .map(|p| format!("{}={}", p.name, p.endpoint()))
        .collect();
    let cancel = CancellationToken::new();
    app::spawn_signal_handler(cancel.clone());
    let pool = tokio::select! {
        pool = app::database_when_reachable(&settings.database, opts.database_retry_max) => pool?,
        () = cancel.cancelled() => return Ok(()),
    };
    let poller = app::poller(pool.clone(), lanes, Arc::new(SystemClock)).await?;
    let admin = crate::web::admin::start(&settings.admin, pool.clone(), poller.clone()).await?;
    info!(providers = %endpoints.join(" "), database = %settings.database.redacted_url(),
        admin = admin.map_or_else(|| "disabled".into(), |a| a.to_string()), "soundtrend is running.");
    if let Some(w) = crate::config::database_tls_warning(secrecy::ExposeSecret::expose_secret(
        &settings.database.url,
    )) {
        tracing::warn!("{w}");
    }
    let worker = Worker::new(poller, opts);
    let summary = worker.run(cancel).await?;
    info!(
        stored = summary.stored,
        failed = summary.failed,
        skipped = summary.skipped,
        rows = summary.rows,
        "Stopped."
    );
    Ok(())
}
