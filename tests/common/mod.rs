//! The test harness: a [`TestApp`] with a fresh Postgres database and the shared fake provider
//! (`soundtrend::provider::fake`), typed questions about the database, [`eventually`] for
//! conditions that take time, and the odds and ends the fault tests need (wiremock mounts, raw TCP
//! fault servers).
#![allow(dead_code)]

mod app;
pub mod bin;

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub use app::TestApp;
#[allow(unused_imports)]
pub use soundtrend::provider::fake::{FakeProvider, Faults, Hit};

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

/// Waits until `done` holds, checking every 20 ms; fails the test naming `what` after `within`.
pub async fn eventually(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `probe` gives `expected`; fails the test with the last value seen after `within`.
pub async fn eventually_eq<T: PartialEq + std::fmt::Debug>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> T,
    expected: T,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = probe().await;
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {got:?}, expected {expected:?} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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
    s.poll.lease_ttl = Duration::from_mins(1);
    s.poll.failure_backoff = Duration::from_mins(1);
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
    soundtrend::app::quota_params(&soundtrend::config::ProviderSettings {
        name: kind,
        ..settings.provider.clone()
    })
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

/// Claims `clip`/`region` (which must be on the watchlist) and polls it once.
pub async fn poll(
    app: &TestApp,
    poller: &Poller,
    clip: &str,
    region: &str,
    period: Option<soundtrend::domain::Period>,
) -> soundtrend::poll::PollOutcome {
    let entry =
        store::watchlist::claim_one(&app.pool, "test", clip, region, Duration::from_mins(1))
            .await
            .unwrap()
            .unwrap()
            .expect("entry is on the watchlist");
    poller
        .poll(&entry, period, &tokio_util::sync::CancellationToken::new())
        .await
        .expect("poll records")
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

/// Answers the given clip with a generated window (see `soundtrend::provider::fake::response`).
pub async fn mount_generated(
    server: &MockServer,
    kind: ProviderKind,
    clip: &str,
    region: &str,
    period: i64,
    last_day: chrono::NaiveDate,
) {
    let body = soundtrend::provider::fake::response(kind, clip, region, period, last_day);
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

pub fn worker_options(settings: &Settings, owner: &str) -> soundtrend::poll::WorkerOptions {
    let mut o = soundtrend::poll::WorkerOptions::from_settings(settings);
    owner.clone_into(&mut o.owner);
    o
}

/// A worker polling the `KeyAPI` dialect at `base` with a poller of its own, as one instance would.
pub async fn keyapi_worker(
    settings: &Settings,
    db: &TestApp,
    base: &str,
    owner: &str,
) -> soundtrend::poll::Worker {
    soundtrend::poll::Worker::new(
        poller(settings, &db.pool, ProviderKind::KeyApi, base).await,
        worker_options(settings, owner),
    )
}

/// `/metrics`, `/healthz` and `/readyz` on a free loopback port, for a `KeyAPI` poller that
/// never gets to poll (its base URL answers nothing).
pub async fn start_admin(db: &TestApp) -> std::net::SocketAddr {
    let mut s = settings(&db.url);
    s.admin.listen = Some(([127, 0, 0, 1], 0).into());
    let poller = poller(&s, &db.pool, ProviderKind::KeyApi, "http://127.0.0.1:9/").await;
    soundtrend::web::admin::start(&s.admin, db.pool.clone(), poller)
        .await
        .expect("the admin endpoint starts")
        .expect("listening")
}
