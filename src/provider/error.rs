//! Every way an API attempt can fail, classified once here so the poller, the store and the
//! metrics agree on what happened.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProviderError {
    #[error("rate limited by the provider (HTTP 429{})", fmt_retry_after(*.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    #[error("the provider rejected the credentials (HTTP {status})")]
    Auth { status: u16 },
    #[error("unexpected HTTP {status} from the provider")]
    Http { status: u16 },
    /// Redirects are never followed (see the client); the target is kept for the record.
    #[error("the provider redirected (HTTP {status}) to {}; redirects are not followed", .location.as_deref().unwrap_or("nowhere"))]
    Redirect {
        status: u16,
        location: Option<String>,
    },
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("network error: {0}")]
    Network(String),
    /// The request never left this machine: DNS failure, refused connection, TLS failure before
    /// anything was sent. The provider cannot bill it, so it costs no credits.
    #[error("could not reach the provider: {0}")]
    Unreached(String),
    #[error("provider error code {code}: {message}")]
    Api { code: i64, message: String },
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// The provider answered and the answer looked valid, but the database refused its rows (a
    /// constraint, an encoding, an overflow). Not the provider's fault, but retrying within the
    /// poll would buy the same refusal again.
    #[error("the database refused the response: {0}")]
    Unstorable(String),
}

/// The value stored in `fetches.outcome` and used as the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    RateLimited,
    HttpError,
    Timeout,
    NetworkError,
    ApiError,
    InvalidPayload,
    AuthError,
    StoreError,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::RateLimited,
        Outcome::HttpError,
        Outcome::Timeout,
        Outcome::NetworkError,
        Outcome::ApiError,
        Outcome::InvalidPayload,
        Outcome::AuthError,
        Outcome::StoreError,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::RateLimited => "rate_limited",
            Outcome::HttpError => "http_error",
            Outcome::Timeout => "timeout",
            Outcome::NetworkError => "network_error",
            Outcome::ApiError => "api_error",
            Outcome::InvalidPayload => "invalid_payload",
            Outcome::AuthError => "auth_error",
            Outcome::StoreError => "store_error",
        }
    }
}

impl ProviderError {
    #[must_use]
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::RateLimited { .. } => Outcome::RateLimited,
            Self::Auth { .. } => Outcome::AuthError,
            Self::Http { .. } | Self::Redirect { .. } => Outcome::HttpError,
            Self::Timeout(_) => Outcome::Timeout,
            Self::Network(_) | Self::Unreached(_) => Outcome::NetworkError,
            Self::Api { .. } => Outcome::ApiError,
            Self::InvalidPayload(_) => Outcome::InvalidPayload,
            Self::Unstorable(_) => Outcome::StoreError,
        }
    }

    /// Worth trying again within the same poll: the provider or the network had a bad moment.
    /// Business errors, bad payloads and rejected credentials would only burn credits.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Timeout(_) | Self::Network(_) | Self::Unreached(_) => {
                true
            }
            Self::Http { status } => *status >= 500 || *status == 408,
            Self::Auth { .. }
            | Self::Api { .. }
            | Self::InvalidPayload(_)
            | Self::Unstorable(_)
            | Self::Redirect { .. } => false,
        }
    }

    /// Counts against the provider's health (its circuit breaker): it is down or unreachable, as
    /// opposed to answering, even with an error, or asking us to slow down.
    #[must_use]
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Network(_) | Self::Unreached(_) => true,
            Self::Http { status } => *status >= 500,
            _ => false,
        }
    }

    /// Another provider may answer where this one did not: an outage, a rate limit, or rejected
    /// credentials. An answer about the clip itself (a business error, a bad payload) would be
    /// the same from any provider selling the same data, so it does not fail over.
    #[must_use]
    pub fn fails_over(&self) -> bool {
        self.is_outage() || matches!(self, Self::RateLimited { .. } | Self::Auth { .. })
    }

    /// Whether the request reached the provider (and so may be billed): everything but an
    /// attempt that never got a connection.
    #[must_use]
    pub fn reached_provider(&self) -> bool {
        !matches!(self, Self::Unreached(_))
    }

    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

fn fmt_retry_after(d: Option<Duration>) -> String {
    d.map(|d| format!(", retry after {}s", d.as_secs_f64()))
        .unwrap_or_default()
}

/// The longest `Retry-After` read from a header; `provider.max_retry_after` caps it further.
const RETRY_AFTER_CEILING: Duration = Duration::from_hours(168);

/// Parses `Retry-After`: delay-seconds or an HTTP date, relative to `now`, clamped to a week. A
/// date in the past means "now" (zero); garbage (negative, NaN) means "not given".
#[must_use]
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_nan() || secs < 0.0 {
            return None;
        }
        // `1e20` or `inf` does not fit a Duration: it means "a very long time", i.e. the ceiling.
        let d = Duration::try_from_secs_f64(secs).unwrap_or(RETRY_AFTER_CEILING);
        return Some(d.min(RETRY_AFTER_CEILING));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(RETRY_AFTER_CEILING),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn retry_after_is_read_as_seconds_or_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", SystemTime::now()), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn huge_retry_after_values_are_clamped_not_panicked_on() {
        let now = SystemTime::now();
        for v in ["1e20", "inf", "1e308", "99999999999999999999"] {
            assert_eq!(parse_retry_after(v, now), Some(RETRY_AFTER_CEILING), "{v}");
        }
        assert_eq!(parse_retry_after("NaN", now), None);
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(ProviderError::RateLimited { retry_after: None }.is_retryable());
        assert!(ProviderError::Http { status: 503 }.is_retryable());
        assert!(ProviderError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(ProviderError::Network("reset".into()).is_retryable());
        assert!(!ProviderError::Http { status: 404 }.is_retryable());
        assert!(!ProviderError::Auth { status: 401 }.is_retryable());
        assert!(!ProviderError::InvalidPayload("x".into()).is_retryable());
        assert!(!ProviderError::Api {
            code: 1,
            message: "no".into()
        }
        .is_retryable());
    }

    #[test]
    fn each_error_maps_to_its_outcome_label() {
        assert_eq!(
            ProviderError::Auth { status: 403 }.outcome().as_str(),
            "auth_error"
        );
        assert_eq!(
            ProviderError::Http { status: 500 }.outcome().as_str(),
            "http_error"
        );
        assert_eq!(
            ProviderError::RateLimited { retry_after: None }
                .outcome()
                .as_str(),
            "rate_limited"
        );
    }
}
