//! The admin endpoint of `soundtrend run`: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (database reachable, credentials not rejected, a recent success).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use crate::config::Settings;
use crate::poller::Poller;

/// Installs the global Prometheus recorder once per process and returns its handle.
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("soundtrend_request_duration_seconds".into()),
            &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
        )
        .context("cannot configure the metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

#[derive(Clone)]
struct AdminState {
    metrics: PrometheusHandle,
    pool: PgPool,
    poller: Arc<Poller>,
    started: chrono::DateTime<Utc>,
    max_success_age: Duration,
}

/// Starts the endpoint when `admin.listen` is set; returns the bound address.
pub async fn start(
    settings: &Settings,
    pool: PgPool,
    poller: Arc<Poller>,
) -> anyhow::Result<Option<SocketAddr>> {
    if settings.admin.listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = settings
        .admin
        .listen
        .parse()
        .context("config key `admin.listen`")?;
    let state = AdminState {
        metrics: recorder()?,
        pool,
        poller,
        started: Utc::now(),
        max_success_age: settings.admin.ready_max_success_age,
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("config key `admin.listen`: cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Some(bound))
}

async fn metrics(State(s): State<AdminState>) -> String {
    s.metrics.render()
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, String) {
    let mut problems = Vec::new();
    let db = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&s.pool),
    )
    .await;
    if !matches!(db, Ok(Ok(_))) {
        problems.push("database unreachable".to_owned());
    }
    if s.poller.state.auth_rejected.load(Ordering::Relaxed) {
        let why = s
            .poller
            .state
            .auth_error
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_default();
        problems.push(format!("provider rejected the credentials: {why}"));
    }
    let last = s
        .poller
        .state
        .last_success
        .lock()
        .expect("lock")
        .unwrap_or(s.started);
    let age = (Utc::now() - last).to_std().unwrap_or_default();
    if age > s.max_success_age {
        problems.push(format!("no successful poll for {}s", age.as_secs()));
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}
