//! The domain checks serde cannot express: ranges, and keys that only make sense together.

use std::time::Duration;

use secrecy::ExposeSecret;

use super::load::key_error;
use super::{is_loopback, ConfigError, Settings};

/// Fails with the first bad key, if `check` is false.
fn ensure(check: bool, key: &str, message: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if check {
        Ok(())
    } else {
        Err(key_error(key, message()))
    }
}

impl Settings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let db = self.database.url.expose_secret();
        ensure(
            db.starts_with("postgres://") || db.starts_with("postgresql://"),
            "database.url",
            || "must be a postgres:// URL (or set DATABASE_URL)".into(),
        )?;
        ensure(
            self.database.max_connections >= 2,
            "database.max_connections",
            || "must be at least 2 (one connection listens for watchlist changes)".into(),
        )?;
        self.check_provider()?;
        self.check_poll()
    }

    fn check_provider(&self) -> Result<(), ConfigError> {
        let p = &self.provider;
        if let Some(u) = &p.base_url {
            ensure(
                matches!(u.scheme(), "http" | "https"),
                "provider.base_url",
                || {
                    format!(
                        "{:?} is not an http(s) URL; leave it empty for the provider's public API",
                        u.as_str()
                    )
                },
            )?;
            ensure(
                u.scheme() == "https" || is_loopback(u) || p.allow_insecure_http,
                "provider.base_url",
                || {
                    format!(
                    "{:?} is plain http to a host other than this machine, which would send the API key in cleartext; use https:// (or set provider.allow_insecure_http = true)",
                    u.as_str()
                )
                },
            )?;
        }
        ensure(
            p.requests_per_second.is_finite() && (1e-4..=1e9).contains(&p.requests_per_second),
            "provider.requests_per_second",
            || "must be a number between 0.0001 and 1000000000, e.g. 1.5".into(),
        )?;
        ensure(
            (1024..=256 * 1024 * 1024).contains(&p.max_body_bytes),
            "provider.max_body_bytes",
            || "must be between 1024 and 268435456 (bytes), e.g. 1048576".into(),
        )?;
        ensure(
            (1..=20).contains(&p.max_attempts),
            "provider.max_attempts",
            || "must be between 1 and 20".into(),
        )?;
        for (key, d) in [
            ("provider.request_timeout", p.request_timeout),
            ("provider.connect_timeout", p.connect_timeout),
        ] {
            ensure(!d.is_zero(), key, || {
                "must be greater than 0s, e.g. \"30s\"".into()
            })?;
        }
        ensure(
            p.retry_max_delay >= p.retry_base_delay,
            "provider.retry_max_delay",
            || "must not be smaller than provider.retry_base_delay".into(),
        )
    }

    fn check_poll(&self) -> Result<(), ConfigError> {
        let (poll, p) = (&self.poll, &self.provider);
        ensure(
            (1..=1024).contains(&poll.concurrency),
            "poll.concurrency",
            || "must be between 1 and 1024".into(),
        )?;
        ensure(
            (1..=10_000).contains(&poll.claim_batch),
            "poll.claim_batch",
            || "must be between 1 and 10000".into(),
        )?;
        ensure((0.0..=0.5).contains(&poll.jitter), "poll.jitter", || {
            "must be between 0 and 0.5 (a fraction of poll_interval)".into()
        })?;
        ensure(
            poll.lease_ttl >= p.request_timeout * 2,
            "poll.lease_ttl",
            || {
                format!(
                "must be at least twice provider.request_timeout ({:?}) so a lease outlives a slow request",
                p.request_timeout
            )
            },
        )?;
        // Range-checked above, so this division is finite and the slot fits in a Duration.
        let slot = Duration::from_secs_f64(1.0 / p.requests_per_second);
        ensure(poll.lease_ttl >= slot * 8, "poll.lease_ttl", || {
            format!(
                "must be at least 8 request slots ({:?} at provider.requests_per_second = {}) so a poll never waits out its lease",
                slot * 8,
                p.requests_per_second
            )
        })
    }
}
