//! The admin endpoint of `soundtrend run`: `/metrics` (Prometheus text), `/healthz` (the process
//! answers), `/readyz` (database reachable, a usable provider, a recent success), and the live
//! pages `/` and `/sounds/{clip_id}` (see `web::pages`).
//!
//! It may face a network, so it defends itself: a client gets [`HEADER_READ_TIMEOUT`] to send
//! its request head and [`CONNECTION_LIFETIME`] in all, at most [`MAX_CONNECTIONS`] are served
//! at once (the rest wait in the kernel's backlog), and `/readyz` probes the database at most
//! once per [`READY_PROBE_EVERY`] whatever the request rate, so scrapes never compete with polls
//! for the shared pool.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::sync::Semaphore;

use secrecy::SecretString;

use super::{auth, pages};
use crate::app::{exit, fatal};
use crate::config::AdminSettings;
use crate::poll::Poller;
use crate::store::health::{Availability, ProviderState};

pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECTION_LIFETIME: Duration = Duration::from_mins(1);
pub const MAX_CONNECTIONS: usize = 32;
pub const READY_PROBE_EVERY: Duration = Duration::from_secs(5);

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
        .set_buckets_for_metric(
            Matcher::Full("soundtrend_quota_wait_seconds".into()),
            &[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0],
        )
        .context("cannot configure the metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    // The recorder keeps every histogram sample until a scrape or an upkeep drains it; a daemon
    // nobody scrapes (or with `admin.listen` off) would grow by each sample (the 30-minute soak
    // measured about 6 bytes per poll). Drain it periodically, off the runtime.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(METRICS_UPKEEP_EVERY);
            upkeep.run_upkeep();
        })
        .context("cannot start the metrics upkeep thread")?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// How often histogram samples are folded into their buckets when no scrape does it.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct AdminState {
    metrics: PrometheusHandle,
    pool: PgPool,
    poller: Arc<Poller>,
    started: chrono::DateTime<Utc>,
    max_success_age: Duration,
    /// The last database probe: when, and whether it answered.
    db_probe: Arc<tokio::sync::Mutex<Option<(std::time::Instant, bool)>>>,
}

/// Starts the endpoint when `admin.listen` is set, with the token from the environment (see
/// [`auth`]); returns the bound address.
pub async fn start(
    settings: &AdminSettings,
    pool: PgPool,
    poller: Arc<Poller>,
) -> anyhow::Result<Option<SocketAddr>> {
    start_with_token(settings, pool, poller, auth::token_from_env()).await
}

/// [`start`] with the token given (None: no token configured).
pub async fn start_with_token(
    settings: &AdminSettings,
    pool: PgPool,
    poller: Arc<Poller>,
    token: Option<SecretString>,
) -> anyhow::Result<Option<SocketAddr>> {
    // Parsed at load; None is `admin.listen = ""`.
    let Some(addr) = settings.listen else {
        return Ok(None);
    };
    auth::check_bind(addr, token.as_ref()).map_err(|m| fatal(exit::CONFIG, m))?;
    let handle = recorder()?;
    for quota in poller.quotas() {
        crate::telemetry::metrics::register(quota.provider);
        crate::telemetry::metrics::limits(&quota);
    }
    let state = AdminState {
        metrics: handle,
        pool,
        started: poller.clock().now(),
        poller,
        max_success_age: settings.ready_max_success_age,
        db_probe: Arc::default(),
    };
    // Everything but the probes asks for the token when one is configured.
    let mut guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(overview_page))
        .route("/sounds/{clip_id}", get(sound_page));
    let mut open = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    if let Some(token) = token {
        guarded = guarded.route_layer(axum::middleware::from_fn_with_state(
            token.clone(),
            auth::require_token,
        ));
        open = open.route(
            "/login",
            get(auth::login_form).post(auth::login).with_state(token),
        );
    }
    let app = open.merge(guarded).with_state(state);
    // A taken or forbidden address is the configuration's to fix: exit 2, naming the key.
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        fatal(
            exit::CONFIG,
            format!("config key `admin.listen`: cannot listen on {addr}: {e}; set another address, or \"\" to disable the endpoint"),
        )
    })?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, app));
    Ok(Some(bound))
}

/// Accepts connections one permit at a time and serves each with the timeouts above.
async fn serve(listener: tokio::net::TcpListener, app: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "The admin endpoint could not accept a connection.");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

/// Whether the database answered, probing it only when the last probe is older than
/// [`READY_PROBE_EVERY`]; concurrent requests wait for the one probe in flight.
async fn database_answers(s: &AdminState) -> bool {
    let mut last = s.db_probe.lock().await;
    if let Some((at, ok)) = *last {
        if at.elapsed() < READY_PROBE_EVERY {
            return ok;
        }
    }
    let ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), crate::store::ping(&s.pool),).await,
        Ok(Ok(()))
    );
    *last = Some((std::time::Instant::now(), ok));
    ok
}

/// `/`: the overview, rendered from the database on each request.
async fn overview_page(State(s): State<AdminState>) -> Response {
    let filter = pages::Filter::default();
    match pages::Overview::load(&s.pool, &filter, s.poller.clock().now()).await {
        Ok(o) => Html(pages::html::overview_page(&o).into_string()).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// `/sounds/{clip_id}`: one sound, all its regions.
async fn sound_page(State(s): State<AdminState>, Path(clip_id): Path<String>) -> Response {
    let Ok(clip_id) = crate::domain::ClipId::parse(&clip_id) else {
        return (StatusCode::NOT_FOUND, "no such sound\n").into_response();
    };
    match pages::SoundPage::load(&s.pool, &clip_id, &pages::Filter::default()).await {
        Ok(Some(page)) => Html(pages::html::sound_page(&page).into_string()).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no data for this sound yet\n").into_response(),
        Err(e) => unavailable(&e),
    }
}

fn unavailable(e: &sqlx::Error) -> Response {
    tracing::warn!(error = %e, "A page could not be read from the database.");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the database did not answer\n",
    )
        .into_response()
}

async fn metrics(State(s): State<AdminState>) -> String {
    s.metrics.render()
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, String) {
    let mut problems = Vec::new();
    if !database_answers(&s).await {
        problems.push("database unreachable".to_owned());
    } else if let Err(e) = s.poller.refresh_health().await {
        problems.push(format!("cannot read the providers' state: {e}"));
    }
    // Not ready when no provider can take work; each one that is out says why.
    let standings = s.poller.standings();
    let out: Vec<String> = standings
        .iter()
        .filter(|st| st.availability != Availability::Usable)
        .map(|st| {
            let why = match st.state {
                ProviderState::AuthFailed => " (the provider rejected the credentials)",
                ProviderState::BudgetSpent => " (the daily credit budget is spent)",
                ProviderState::Down => " (circuit breaker open)",
                _ => " (asked to wait: 429)",
            };
            let until = match st.availability {
                Availability::OutUntil(t) => {
                    format!(" until {}", t.format("%Y-%m-%d %H:%M:%S UTC"))
                }
                _ => String::new(),
            };
            format!("{} {}{why}{until}", st.provider, st.state)
        })
        .collect();
    if !out.is_empty() && out.len() == standings.len() {
        problems.push(format!("no usable provider ({})", out.join(", ")));
    }
    let last = s.poller.last_success().unwrap_or(s.started);
    let age = (s.poller.clock().now() - last).to_std().unwrap_or_default();
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
