//! Shared test helpers: a fresh Postgres database per test, a local mock of both providers'
//! dialects, raw TCP fault servers, and a poller wired to them.
#![allow(dead_code)]

pub mod bin;

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use soundtrend::clock::{Clock, SystemClock};
use soundtrend::config::Settings;
use soundtrend::poll::{PollOptions, Poller};
use soundtrend::provider::{ClientOptions, Credentials, ProviderClient, ProviderKind};
use soundtrend::store::{self, quota::QuotaParams};

pub const CLIP: &str = "6703723351497508865";
pub const SAMPLE: &str = include_str!("../fixtures/keyapi_sample.json");
pub const ECHOTIK_SAMPLE: &str = include_str!("../fixtures/echotik_sample.json");
pub const API_KEY: &str = "test-key-5f1c9a";
pub const ECHO_USER: &str = "ana";
pub const ECHO_PASSWORD: &str = "test-pass-77b2";

/// The Postgres image used when no DATABASE_URL is given (pinned for reproducibility).
const POSTGRES_IMAGE: (&str, &str) = ("postgres", "16.4-alpine");

/// A database of its own for one test, dropped when the test ends (even when it panics).
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let server = server_url().await;
        let name = format!("soundtrend_test_{}", uuid::Uuid::new_v4().simple());
        let admin_url = with_database(&server, "postgres");
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test Postgres at {admin_url}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = with_database(&server, &name);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .expect("connect to test database");
        store::migrate(&pool).await.expect("migrations apply");
        TestDb {
            pool,
            url,
            admin_url,
            name,
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn watch(&self, clip: &str, region: &str) {
        sqlx::query("INSERT INTO watchlist (clip_id, region) VALUES ($1, $2)")
            .bind(clip)
            .bind(region)
            .execute(&self.pool)
            .await
            .expect("insert watchlist row");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside async context; a short-lived runtime on its own thread does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut c) = PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

fn with_database(server: &str, db: &str) -> String {
    let mut url = url::Url::parse(server).expect("DATABASE_URL is a URL");
    url.set_path(&format!("/{db}"));
    url.to_string()
}

/// `DATABASE_URL` when set, else a Postgres started with testcontainers, else a panic that says how
/// to provide one.
async fn server_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        if !url.is_empty() {
            return url;
        }
    }
    container_url().await
}

async fn container_url() -> String {
    use testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{ContainerAsync, GenericImage, ImageExt};
    use tokio::sync::OnceCell;

    // One container per test binary; every test still gets its own database inside it.
    static CONTAINER: OnceCell<Result<(ContainerAsync<GenericImage>, String), String>> =
        OnceCell::const_new();
    let started = CONTAINER
        .get_or_init(|| async {
            let image = GenericImage::new(POSTGRES_IMAGE.0, POSTGRES_IMAGE.1)
                .with_exposed_port(5432.tcp())
                .with_wait_for(WaitFor::message_on_stderr(
                    "database system is ready to accept connections",
                ))
                .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust");
            match tokio::time::timeout(Duration::from_secs(120), image.start()).await {
                Ok(Ok(c)) => {
                    let port = c
                        .get_host_port_ipv4(5432)
                        .await
                        .map_err(|e| e.to_string())?;
                    // The image logs "ready" once before its init restart; wait for the real one.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok((c, format!("postgres://postgres@127.0.0.1:{port}/postgres")))
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out after 120 s starting the container".into()),
            }
        })
        .await;
    match started {
        Ok((_, url)) => url.clone(),
        Err(e) => panic!(
            "no test database: DATABASE_URL is not set and Postgres could not be started with testcontainers ({e}). \
             Set DATABASE_URL to a Postgres server this test may create databases on \
             (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres), run scripts/test.sh \
             (starts a local cluster), or start Docker."
        ),
    }
}

/// Settings tuned for tests: fast retries, no waiting on quota unless a test asks for it.
pub fn settings(db_url: &str) -> Settings {
    let mut s = Settings::default();
    s.database.url = db_url.to_owned().into();
    s.provider.requests_per_second = 1000.0;
    s.provider.burst = std::num::NonZeroU32::new(100).unwrap();
    s.provider.retry_base_delay = Duration::from_millis(10);
    s.provider.retry_max_delay = Duration::from_millis(50);
    s.provider.request_timeout = Duration::from_millis(1500);
    s.provider.connect_timeout = Duration::from_millis(500);
    s.poll.lease_ttl = Duration::from_secs(60);
    s.poll.failure_backoff = Duration::from_secs(60);
    s
}

pub fn credentials(kind: ProviderKind) -> Credentials {
    match kind {
        ProviderKind::KeyApi => Credentials::Bearer(SecretString::from(API_KEY.to_owned())),
        ProviderKind::EchoTik => Credentials::Basic {
            username: ECHO_USER.into(),
            password: SecretString::from(ECHO_PASSWORD.to_owned()),
        },
    }
}

pub fn client(settings: &Settings, kind: ProviderKind, base: &str) -> ProviderClient {
    let mut base = url::Url::parse(base).expect("base url");
    if !base.path().ends_with('/') {
        let p = format!("{}/", base.path());
        base.set_path(&p);
    }
    let options = ClientOptions {
        base_url: base,
        connect_timeout: settings.provider.connect_timeout,
        request_timeout: settings.provider.request_timeout,
        user_agent: "soundtrend-tests".into(),
        max_body_bytes: settings.provider.max_body_bytes,
    };
    ProviderClient::new(kind, credentials(kind), &options).expect("client")
}

pub fn quota(settings: &Settings, kind: ProviderKind) -> QuotaParams {
    soundtrend::app::quota_params(settings, kind)
}

pub async fn poller(
    settings: &Settings,
    pool: &PgPool,
    kind: ProviderKind,
    base: &str,
) -> Arc<Poller> {
    poller_with_clock(settings, pool, kind, base, Arc::new(SystemClock)).await
}

pub async fn poller_with_clock(
    settings: &Settings,
    pool: &PgPool,
    kind: ProviderKind,
    base: &str,
    clock: Arc<dyn Clock>,
) -> Arc<Poller> {
    store::quota::ensure_provider(pool, kind)
        .await
        .expect("quota row");
    Arc::new(Poller::new(
        pool.clone(),
        client(settings, kind, base),
        quota(settings, kind),
        PollOptions::from_settings(settings),
        clock,
    ))
}

/// The sample body in `kind`'s dialect, with `f` applied to the JSON first.
pub fn sample_with(kind: ProviderKind, f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(match kind {
        ProviderKind::KeyApi => SAMPLE,
        ProviderKind::EchoTik => ECHOTIK_SAMPLE,
    })
    .unwrap();
    f(&mut v);
    v.to_string()
}

/// Mounts a 200 response with `body` on `kind`'s path for every clip.
pub async fn mount_body(server: &MockServer, kind: ProviderKind, status: u16, body: String) {
    Mock::given(method("GET"))
        .and(path(kind.path()))
        .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/json"))
        .mount(server)
        .await;
}

pub async fn mount_sample(server: &MockServer, kind: ProviderKind) {
    mount_body(server, kind, 200, sample_with(kind, |_| {})).await;
}

/// Answers the given clip with a generated window (see `soundtrend::cli::demo::response`).
pub async fn mount_generated(
    server: &MockServer,
    kind: ProviderKind,
    clip: &str,
    region: &str,
    period: i64,
    last_day: chrono::NaiveDate,
) {
    let body = soundtrend::cli::demo::response(kind, clip, region, period, last_day);
    Mock::given(method("GET"))
        .and(path(kind.path()))
        .and(query_param("clip_id", clip))
        .and(query_param("region", region))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

/// What a raw TCP fault server does with each connection.
#[derive(Debug, Clone, Copy)]
pub enum RawFault {
    /// Accept, read the request, close without a byte (the client sees a reset/EOF).
    CloseImmediately,
    /// Send headers promising more body than is sent, then close mid-body.
    TruncatedTransfer,
}

/// A server that misbehaves below HTTP; returns its base URL.
pub async fn raw_fault_server(fault: RawFault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                match fault {
                    RawFault::CloseImmediately => {
                        let _ = sock.set_zero_linger();
                    }
                    RawFault::TruncatedTransfer => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n";
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.write_all(&SAMPLE.as_bytes()[..200]).await;
                        let _ = sock.flush().await;
                    }
                }
                drop(sock);
            });
        }
    });
    format!("http://{addr}/")
}

/// Every credit booked has its archived attempt: sum(fetches.credits) equals the ledger.
pub async fn assert_ledger_equals_archive(db: &TestDb) {
    assert_eq!(
        db.count(
            "SELECT COALESCE((SELECT sum(credits) FROM fetches), 0)
                  - COALESCE((SELECT sum(credits_used) FROM credit_usage), 0)"
        )
        .await,
        0,
        "sum(fetches.credits) equals the credit ledger"
    );
}

/// Rows in the data tables (everything but fetches and watchlist).
pub async fn data_rows(db: &TestDb) -> i64 {
    db.count(
        "SELECT (SELECT count(*) FROM sounds) + (SELECT count(*) FROM sound_snapshots)
              + (SELECT count(*) FROM trend_points) + (SELECT count(*) FROM audience_countries)
              + (SELECT count(*) FROM audience_interests)",
    )
    .await
}

/// A provider stand-in that timestamps every request (both dialects, any clip), for the quota
/// and scheduling tests. Behaviour can be switched while it runs.
#[derive(Clone)]
pub struct RecordingServer {
    pub base: String,
    pub log: Arc<std::sync::Mutex<Vec<Hit>>>,
    pub behaviour: Arc<std::sync::Mutex<Behaviour>>,
}

#[derive(Debug, Clone)]
pub struct Hit {
    pub at: std::time::Instant,
    pub clip_id: String,
    pub region: String,
    pub period: String,
    /// Answered 429 rather than with data.
    pub limited: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Answer this many requests with 429 and `Retry-After: retry_after_secs`.
    pub rate_limit_next: usize,
    pub retry_after_secs: u64,
    /// Hold every response this long.
    pub delay: Duration,
    /// When set, only this clip is rate limited (`rate_limit_next` counts its requests only).
    pub limited_clip: Option<String>,
    /// When set, only this clip is held for `delay`.
    pub slow_clip: Option<String>,
}

impl RecordingServer {
    pub async fn start() -> Self {
        use axum::extract::{Query, State};
        use axum::response::IntoResponse;
        use std::collections::HashMap;

        let log: Arc<std::sync::Mutex<Vec<Hit>>> = Arc::default();
        let behaviour: Arc<std::sync::Mutex<Behaviour>> = Arc::default();
        type St = (
            Arc<std::sync::Mutex<Vec<Hit>>>,
            Arc<std::sync::Mutex<Behaviour>>,
        );
        async fn handle(
            kind: ProviderKind,
            State((log, behaviour)): State<St>,
            Query(q): Query<HashMap<String, String>>,
        ) -> axum::response::Response {
            let mut hit = Hit {
                at: std::time::Instant::now(),
                clip_id: q.get("clip_id").cloned().unwrap_or_default(),
                region: q.get("region").cloned().unwrap_or_default(),
                period: q.get("period").cloned().unwrap_or_default(),
                limited: false,
            };
            let (limited, retry_after, delay) = {
                let mut b = behaviour.lock().unwrap();
                let this = |only: &Option<String>| only.as_ref().is_none_or(|c| *c == hit.clip_id);
                let limited = b.rate_limit_next > 0 && this(&b.limited_clip);
                if limited {
                    b.rate_limit_next -= 1;
                }
                let delay = if this(&b.slow_clip) {
                    b.delay
                } else {
                    Duration::ZERO
                };
                (limited, b.retry_after_secs, delay)
            };
            hit.limited = limited;
            log.lock().unwrap().push(hit.clone());
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if limited {
                return (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", retry_after.to_string())],
                    "rate limited",
                )
                    .into_response();
            }
            let period: i64 = hit.period.parse().unwrap_or(7);
            let yesterday = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
            axum::Json(soundtrend::cli::demo::response(
                kind,
                &hit.clip_id,
                &hit.region,
                period,
                yesterday,
            ))
            .into_response()
        }
        let app = axum::Router::new()
            .route(
                ProviderKind::KeyApi.path(),
                axum::routing::get(|s, q| handle(ProviderKind::KeyApi, s, q)),
            )
            .route(
                ProviderKind::EchoTik.path(),
                axum::routing::get(|s, q| handle(ProviderKind::EchoTik, s, q)),
            )
            .with_state((log.clone(), behaviour.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RecordingServer {
            base: format!("http://{addr}/"),
            log,
            behaviour,
        }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.log.lock().unwrap().clone()
    }

    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap());
    }
}

/// The most requests seen in any window of `window` (sliding, anchored at each request).
pub fn max_in_window(hits: &[Hit], window: Duration) -> usize {
    let mut times: Vec<_> = hits.iter().map(|h| h.at).collect();
    times.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// Inserts `n` distinct watchlist entries (clip ids 1000.., region US).
pub async fn watch_many(db: &TestDb, n: usize) {
    sqlx::query("INSERT INTO watchlist (clip_id, region) SELECT (1000 + g)::text, 'US' FROM generate_series(1, $1) g")
        .bind(n as i32)
        .execute(&db.pool)
        .await
        .expect("insert watchlist rows");
}

pub fn worker_options(settings: &Settings, owner: &str) -> soundtrend::poll::WorkerOptions {
    let mut o = soundtrend::poll::WorkerOptions::from_settings(settings);
    o.owner = owner.to_owned();
    o
}

/// A worker polling the KeyAPI dialect at `base` with a poller of its own, as one instance would.
pub async fn keyapi_worker(
    settings: &Settings,
    db: &TestDb,
    base: &str,
    owner: &str,
) -> soundtrend::poll::Worker {
    soundtrend::poll::Worker::new(
        poller(settings, &db.pool, ProviderKind::KeyApi, base).await,
        worker_options(settings, owner),
    )
}

/// `/metrics`, `/healthz` and `/readyz` on a free loopback port, for a KeyAPI poller that
/// never gets to poll (its base URL answers nothing).
pub async fn start_admin(db: &TestDb) -> std::net::SocketAddr {
    let mut s = settings(&db.url);
    s.admin.listen = Some(([127, 0, 0, 1], 0).into());
    let poller = poller(&s, &db.pool, ProviderKind::KeyApi, "http://127.0.0.1:9/").await;
    soundtrend::web::admin::start(&s, db.pool.clone(), poller)
        .await
        .expect("the admin endpoint starts")
        .expect("listening")
}
