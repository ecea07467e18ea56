//! A local stand-in for both providers: `soundtrend demo-server`, the quick start, the integration
//! tests and the benchmarks all talk to this one server.
//!
//! It answers the "trending music detail" endpoint in the `KeyAPI` and the `EchoTik` dialect with
//! responses shaped exactly like the providers' documented sample (see [`response`]), trend
//! windows ending yesterday (UTC). It records every request it receives as a [`Hit`] and can be
//! told to misbehave the ways the real providers do ([`Faults`]: 429 with Retry-After, slow
//! answers), also while it runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use chrono::Utc;
use serde_json::json;
use tokio::task::JoinHandle;

use super::ProviderKind;

mod payload;
pub use payload::{response, trend, SAMPLE_CLIP_ID, SAMPLE_RESPONSE};

/// A running fake provider. Cloning it gives another handle on the same server.
#[derive(Clone)]
pub struct FakeProvider {
    /// The base URL to configure as `provider.base_url`, with a trailing slash.
    pub base: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// One request as the fake provider received it.
#[derive(Debug, Clone)]
pub struct Hit {
    /// When the request arrived (before any delay or refusal).
    pub at: Instant,
    /// The dialect, from the path the request was sent to.
    pub kind: ProviderKind,
    pub clip_id: String,
    pub region: String,
    /// The `period` query parameter as sent (empty when absent).
    pub period: String,
    /// The `Authorization` header as sent, if any.
    pub authorization: Option<String>,
    /// Answered 429 rather than with data.
    pub limited: bool,
    /// Answered with this HTTP status (see [`Faults::status`]) rather than with data.
    pub failed_with: Option<u16>,
}

/// How the fake provider misbehaves. All off by default; change them with
/// [`FakeProvider::set_faults`], also while requests are in flight.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer this many requests with 429 and `Retry-After: retry_after_secs`.
    pub rate_limit_next: usize,
    /// The `Retry-After` (seconds) that every 429 carries.
    pub retry_after_secs: u64,
    /// When set, only this clip is rate limited (`rate_limit_next` counts its requests only).
    pub limited_clip: Option<String>,
    /// Answer every request with 429 until this instant.
    pub limited_until: Option<Instant>,
    /// Hold every response this long.
    pub delay: Duration,
    /// When set, only this clip is held for `delay`.
    pub slow_clip: Option<String>,
    /// Answer every request with this HTTP status and the provider's error envelope while set:
    /// 503 for an outage, 401 for a revoked key.
    pub status: Option<u16>,
}

/// Options fixed when the server starts.
#[derive(Default)]
pub struct FakeProviderBuilder {
    strict: bool,
    forget_hits: bool,
    bodies: HashMap<String, Bytes>,
}

struct Shared {
    strict: bool,
    forget_hits: bool,
    bodies: HashMap<String, Bytes>,
    hits: Mutex<Vec<Hit>>,
    faults: Mutex<Faults>,
}

impl FakeProvider {
    #[must_use]
    pub fn builder() -> FakeProviderBuilder {
        FakeProviderBuilder::default()
    }

    /// A lenient fake provider on a free loopback port: any request gets generated data.
    pub async fn start() -> std::io::Result<Self> {
        Self::builder().start().await
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order.
    #[must_use]
    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.shared.hits).clone()
    }

    #[must_use]
    pub fn hit_count(&self) -> usize {
        lock(&self.shared.hits).len()
    }

    /// Requests answered with data (not 429) per (clip, region): what was paid for with data.
    #[must_use]
    pub fn answered(&self) -> HashMap<(String, String), usize> {
        let mut per_pair = HashMap::new();
        for h in lock(&self.shared.hits)
            .iter()
            .filter(|h| !h.limited && h.failed_with.is_none())
        {
            *per_pair
                .entry((h.clip_id.clone(), h.region.clone()))
                .or_default() += 1;
        }
        per_pair
    }

    /// Changes how the server misbehaves from the next request on.
    pub fn set_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut lock(&self.shared.faults));
    }
}

impl FakeProviderBuilder {
    /// Behave like the real API toward a misconfigured client: refuse requests without
    /// credentials in the provider's scheme (401) and answer invalid parameters with the
    /// provider's error envelope. Any credentials in the right scheme are accepted.
    #[must_use]
    pub fn strict(mut self) -> Self {
        self.strict = true;
        self
    }

    /// Keep no [`Hit`]s, for a server that runs for hours (`demo-server`).
    #[must_use]
    pub fn forget_hits(mut self) -> Self {
        self.forget_hits = true;
        self
    }

    /// Answer these clips with these exact bodies (prepared ahead, so serving them costs no
    /// serialisation); other clips get generated data.
    #[must_use]
    pub fn bodies(mut self, bodies: HashMap<String, Bytes>) -> Self {
        self.bodies = bodies;
        self
    }

    /// Starts on a free loopback port.
    pub async fn start(self) -> std::io::Result<FakeProvider> {
        let (provider, _task) = self.serve("127.0.0.1:0".parse().expect("address")).await?;
        Ok(provider)
    }

    /// Starts on `addr` (port 0 picks a free port); the task serves until aborted or the
    /// runtime ends.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<(FakeProvider, JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            strict: self.strict,
            forget_hits: self.forget_hits,
            bodies: self.bodies,
            hits: Mutex::default(),
            faults: Mutex::default(),
        });
        let app = Router::new()
            .route(
                ProviderKind::KeyApi.path(),
                get(|s, h, q| answer(ProviderKind::KeyApi, s, h, q)),
            )
            .route(
                ProviderKind::EchoTik.path(),
                get(|s, h, q| answer(ProviderKind::EchoTik, s, h, q)),
            )
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let provider = FakeProvider {
            base: format!("http://{addr}/"),
            addr,
            shared,
        };
        Ok((provider, task))
    }
}

/// A poisoned lock only means another request panicked; the data is still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn answer(
    kind: ProviderKind,
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| q.get(name).cloned().unwrap_or_default();
    let mut hit = Hit {
        at: Instant::now(),
        kind,
        clip_id: param("clip_id"),
        region: param("region"),
        period: param("period"),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        limited: false,
        failed_with: None,
    };
    let (limited, retry_after, delay, status) = {
        let mut f = lock(&shared.faults);
        let concerns = |only: &Option<String>| only.as_ref().is_none_or(|c| *c == hit.clip_id);
        let window = f.limited_until.is_some_and(|until| hit.at < until);
        let counted = f.rate_limit_next > 0 && concerns(&f.limited_clip);
        if counted {
            f.rate_limit_next -= 1;
        }
        let delay = if concerns(&f.slow_clip) {
            f.delay
        } else {
            Duration::ZERO
        };
        (window || counted, f.retry_after_secs, delay, f.status)
    };
    hit.limited = limited;
    hit.failed_with = status.filter(|_| !limited);
    if !shared.forget_hits {
        lock(&shared.hits).push(hit.clone());
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if limited {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after.to_string())],
            "rate limited",
        )
            .into_response();
    }
    if let Some(status) = hit.failed_with {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let body = json!({"code": status.as_u16(), "message": status.canonical_reason()});
        return (status, axum::Json(body)).into_response();
    }
    if shared.strict {
        if let Some(refusal) = refuse(kind, &headers, &hit) {
            return refusal;
        }
    }
    if let Some(body) = shared.bodies.get(&hit.clip_id) {
        return ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response();
    }
    let clip_id = if hit.clip_id.is_empty() {
        SAMPLE_CLIP_ID
    } else {
        &hit.clip_id
    };
    let region = if hit.region.is_empty() {
        "US"
    } else {
        &hit.region
    };
    let period: i64 = hit.period.parse().unwrap_or(7);
    let yesterday = Utc::now().date_naive() - chrono::Duration::days(1);
    axum::Json(response(kind, clip_id, region, period, yesterday)).into_response()
}

/// What the real API answers a request with missing credentials or invalid parameters.
fn refuse(kind: ProviderKind, headers: &HeaderMap, hit: &Hit) -> Option<Response> {
    let scheme = match kind {
        ProviderKind::KeyApi => "Bearer ",
        ProviderKind::EchoTik => "Basic ",
    };
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(scheme) && v.len() > scheme.len());
    if !authorized {
        let body = json!({"code": 401, "message": "unauthorized"});
        return Some((StatusCode::UNAUTHORIZED, axum::Json(body)).into_response());
    }
    let period_ok = hit.period.is_empty() || ["7", "30", "120"].contains(&hit.period.as_str());
    let clip_ok = hit.clip_id.bytes().all(|b| b.is_ascii_digit());
    if period_ok && clip_ok {
        return None;
    }
    let body = json!({"code": 40001, "message": "invalid parameter", "data": null});
    Some(axum::Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_strict_fake_refuses_missing_credentials_and_records_the_request() {
        let fake = FakeProvider::builder().strict().start().await.unwrap();
        let url = format!("{}{}", fake.base, &ProviderKind::KeyApi.path()[1..]);

        let refused = reqwest::get(format!("{url}?clip_id=1&region=US&period=7"))
            .await
            .unwrap();
        let answered = reqwest::Client::new()
            .get(format!("{url}?clip_id=1&region=US&period=7"))
            .bearer_auth("k")
            .send()
            .await
            .unwrap();

        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(answered.status(), StatusCode::OK);
        let hits = fake.hits();
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[1].authorization.as_deref(), Some("Bearer k"));
        assert_eq!(
            (hits[1].clip_id.as_str(), hits[1].period.as_str()),
            ("1", "7")
        );
    }
}
