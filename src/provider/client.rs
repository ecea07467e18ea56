//! The HTTP client: one request per call, classified into an [`Attempt`].

use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use reqwest::header::RETRY_AFTER;
use url::Url;

use super::error::{parse_retry_after, ProviderError};
use super::wire::{Envelope, MusicDetail};
use super::{Credentials, ProviderKind};
use crate::clock::Clock;
use crate::domain::{ClipId, Period, Region};

/// The longest provider text (business message, redirect target) kept in logs and columns.
const MAX_MESSAGE_CHARS: usize = 300;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub base_url: Url,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub user_agent: String,
    /// Bodies larger than this are refused rather than buffered: the real payload is a few KiB.
    pub max_body_bytes: usize,
}

/// One HTTP client for one provider.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    kind: ProviderKind,
    endpoint: Url,
    http: reqwest::Client,
    credentials: Credentials,
    request_timeout: Duration,
    max_body_bytes: usize,
}

/// What one API attempt produced: everything `fetches` records, plus the parsed detail when it
/// succeeded.
#[derive(Debug)]
pub struct Attempt {
    pub requested_at: DateTime<Utc>,
    pub duration: Duration,
    pub http_status: Option<u16>,
    pub body: Option<Bytes>,
    pub request_id: Option<String>,
    pub api_code: Option<i64>,
    pub api_message: Option<String>,
    pub result: Result<MusicDetail, ProviderError>,
}

impl ProviderClient {
    pub fn new(
        kind: ProviderKind,
        credentials: Credentials,
        options: &ClientOptions,
    ) -> Result<Self, String> {
        let endpoint = options
            .base_url
            .join(kind.path().trim_start_matches('/'))
            .map_err(|e| format!("cannot build the endpoint URL: {e}"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(options.user_agent.clone())
            .pool_idle_timeout(Duration::from_mins(1))
            // A redirect is an answer we did not ask for: following it would archive another
            // host's body as the provider's. It is recorded as an http_error with its Location.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            kind,
            endpoint,
            http,
            credentials,
            request_timeout: options.request_timeout,
            max_body_bytes: options.max_body_bytes,
        })
    }

    /// See [`Credentials::fingerprint`].
    #[must_use]
    pub fn key_fingerprint(&self) -> String {
        self.credentials.fingerprint()
    }

    #[must_use]
    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    #[must_use]
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Makes one request and classifies what came back, stamped with `clock`'s time as it
    /// leaves. Never fails: a failure is an [`Attempt`] whose `result` says what went wrong.
    pub async fn fetch(
        &self,
        clip_id: &ClipId,
        region: &Region,
        period: Period,
        clock: &dyn Clock,
    ) -> Attempt {
        let requested_at = clock.now();
        let started = Instant::now();
        let mut url = self.endpoint.clone();
        url.query_pairs_mut()
            .append_pair("period", &period.to_string())
            .append_pair("region", region.as_str())
            .append_pair("clip_id", clip_id.as_str());
        let request = self.credentials.apply(self.http.get(url));

        let mut attempt = Attempt {
            requested_at,
            duration: Duration::ZERO,
            http_status: None,
            body: None,
            request_id: None,
            api_code: None,
            api_message: None,
            result: Err(ProviderError::Network("no response".into())),
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                attempt.result = Err(self.classify_transport(&e));
                attempt.duration = started.elapsed();
                return attempt;
            }
        };
        let status = response.status().as_u16();
        attempt.http_status = Some(status);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let header_request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| bounded_text(v, MAX_MESSAGE_CHARS));
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| bounded_text(&String::from_utf8_lossy(v.as_bytes()), MAX_MESSAGE_CHARS));
        let body = read_body(response, self.max_body_bytes).await;
        attempt.duration = started.elapsed();
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                attempt.result = Err(match e {
                    BodyError::Transport(e) => self.classify_transport(&e),
                    BodyError::TooLarge => ProviderError::InvalidPayload(format!(
                        "response body larger than {} bytes (provider.max_body_bytes)",
                        self.max_body_bytes
                    )),
                });
                attempt.request_id = header_request_id;
                return attempt;
            }
        };
        let envelope = serde_json::from_slice::<Envelope>(&body);
        let envelope = envelope.map(|mut env| {
            // The provider's words reach logs and `last_error`: bounded, one line, no escapes.
            env.message = env.message.map(|m| bounded_text(&m, MAX_MESSAGE_CHARS));
            env.request_id = env.request_id.map(|r| bounded_text(&r, MAX_MESSAGE_CHARS));
            env
        });
        if let Ok(env) = &envelope {
            attempt.request_id.clone_from(&env.request_id);
            attempt.api_code = env.code;
            attempt.api_message.clone_from(&env.message);
        }
        attempt.request_id = attempt.request_id.take().or(header_request_id);
        attempt.body = (!body.is_empty()).then_some(body);
        attempt.result = if (300..400).contains(&status) {
            Err(ProviderError::Redirect { status, location })
        } else {
            classify(status, retry_after, envelope)
        };
        attempt
    }

    /// The endpoint as errors show it: no user-info and no query, so nothing secret (the
    /// credentials travel in a header anyway) and no clip id.
    #[must_use]
    pub fn shown_endpoint(&self) -> String {
        let mut url = self.endpoint.clone();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
        url.to_string()
    }

    fn classify_transport(&self, e: &reqwest::Error) -> ProviderError {
        // reqwest's Display names the whole URL (with the query); the cause chain is what
        // explains the failure, and the shown endpoint says where it happened.
        let endpoint = self.shown_endpoint();
        let mut cause = String::new();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        let with_cause = |what: &str| {
            if cause.is_empty() {
                format!("{what} ({endpoint})")
            } else {
                format!("{what} ({endpoint}): {cause}")
            }
        };
        // Before the timeout check: a connect that timed out never sent the request either.
        if e.is_connect() {
            return ProviderError::Unreached(with_cause("connection failed"));
        }
        if e.is_timeout() {
            return ProviderError::Timeout(self.request_timeout);
        }
        let what = if e.is_body() || e.is_decode() {
            "response body interrupted"
        } else {
            "request failed"
        };
        ProviderError::Network(with_cause(what))
    }
}

enum BodyError {
    Transport(reqwest::Error),
    TooLarge,
}

async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Bytes, BodyError> {
    // A declared length over the cap is refused before a byte is read.
    if response
        .content_length()
        .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(BodyError::TooLarge);
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Provider text made safe for a log line or a column: at most `max` characters, control
/// characters (newlines, ANSI escapes, NUL) escaped, so a hostile message cannot forge log lines.
pub fn bounded_text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What a body with this status means, exactly as [`ProviderClient::fetch`] reads it (without
/// headers): the parser the fuzz target and property tests drive.
pub fn parse_response(status: u16, body: &[u8]) -> Result<MusicDetail, ProviderError> {
    classify(status, None, serde_json::from_slice::<Envelope>(body))
}

/// Turns status and body into the detail or a classified error. Pure, so it is unit-tested.
fn classify(
    status: u16,
    retry_after: Option<Duration>,
    envelope: Result<Envelope, serde_json::Error>,
) -> Result<MusicDetail, ProviderError> {
    match status {
        429 => return Err(ProviderError::RateLimited { retry_after }),
        401 | 403 => return Err(ProviderError::Auth { status }),
        200..=299 => {}
        _ => return Err(ProviderError::Http { status }),
    }
    let envelope = envelope.map_err(|e| ProviderError::InvalidPayload(describe_json_error(&e)))?;
    let code = envelope
        .code
        .ok_or_else(|| ProviderError::InvalidPayload("response has no `code`".into()))?;
    if code != 0 {
        return Err(ProviderError::Api {
            code,
            message: envelope.message.unwrap_or_default(),
        });
    }
    let data = envelope
        .data
        .filter(|d| !d.is_null())
        .ok_or_else(|| ProviderError::InvalidPayload("response has no `data`".into()))?;
    let detail: MusicDetail = serde_json::from_value(data)
        .map_err(|e| ProviderError::InvalidPayload(format!("in `data`: {e}")))?;
    if detail.sound.is_none() {
        return Err(ProviderError::InvalidPayload(
            "response has no `data.sound`".into(),
        ));
    }
    Ok(detail)
}

fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => format!("truncated JSON ({e})"),
        Category::Syntax => format!("malformed JSON ({e})"),
        Category::Data => format!("unexpected JSON shape ({e})"),
        Category::Io => format!("unreadable body ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(body: &str) -> Result<Envelope, serde_json::Error> {
        serde_json::from_str(body)
    }

    #[test]
    fn the_endpoint_errors_show_carries_no_user_info_and_no_query() {
        let options = ClientOptions {
            base_url: "https://proxy-user:proxy-pw@proxy.example/api/?token=t0k"
                .parse()
                .unwrap(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            user_agent: "test".into(),
            max_body_bytes: 1024,
        };
        let key = Credentials::Bearer(secrecy::SecretString::from("k".to_owned()));
        let client = ProviderClient::new(ProviderKind::KeyApi, key, &options).unwrap();

        let shown = client.shown_endpoint();

        assert!(shown.starts_with("https://proxy.example/api/"), "{shown}");
        assert!(
            !shown.contains("proxy-pw") && !shown.contains("proxy-user"),
            "{shown}"
        );
        assert!(!shown.contains("t0k"), "{shown}");
    }

    #[test]
    fn a_429_is_rate_limited_with_its_retry_after() {
        let r = classify(429, Some(Duration::from_secs(3)), env("{}"));
        assert_eq!(
            r.unwrap_err(),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn non_zero_code_is_a_business_error_with_code_and_message() {
        let r = classify(
            200,
            None,
            env(r#"{"code": 40004, "message": "clip not found", "data": null}"#),
        );
        assert_eq!(
            r.unwrap_err(),
            ProviderError::Api {
                code: 40004,
                message: "clip not found".into()
            }
        );
    }

    #[test]
    fn truncated_json_is_an_invalid_payload() {
        let r = classify(200, None, env(r#"{"code": 0, "data": {"sou"#));
        match r.unwrap_err() {
            ProviderError::InvalidPayload(m) => assert!(m.contains("truncated"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_sound_or_code_is_an_invalid_payload() {
        assert!(matches!(
            classify(200, None, env(r#"{"code": 0, "data": {}}"#)),
            Err(ProviderError::InvalidPayload(_))
        ));
        assert!(matches!(
            classify(200, None, env(r#"{"data": {"sound": {}}}"#)),
            Err(ProviderError::InvalidPayload(_))
        ));
        assert!(matches!(
            classify(
                200,
                None,
                env(r#"{"code": 0, "data": {"sound": {"trend": 5}}}"#)
            ),
            Err(ProviderError::InvalidPayload(_))
        ));
    }

    #[test]
    fn provider_text_is_bounded_and_kept_on_one_line() {
        assert_eq!(bounded_text("not found", 300), "not found");
        assert_eq!(
            bounded_text("a\nFAKE LOG\u{1b}[31m\0", 300),
            "a\\nFAKE LOG\\u{1b}[31m\\u{0}"
        );
        let long = "x".repeat(10_000);
        assert_eq!(bounded_text(&long, 300).chars().count(), 301);
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(
            classify(401, None, env("{}")).unwrap_err(),
            ProviderError::Auth { status: 401 }
        );
        assert_eq!(
            classify(403, None, env("{}")).unwrap_err(),
            ProviderError::Auth { status: 403 }
        );
        assert_eq!(
            classify(502, None, env("{}")).unwrap_err(),
            ProviderError::Http { status: 502 }
        );
        assert_eq!(
            classify(404, None, env("{}")).unwrap_err(),
            ProviderError::Http { status: 404 }
        );
    }
}
