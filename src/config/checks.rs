//! The domain checks serde cannot express: ranges, and keys that only make sense together.

use std::time::Duration;

use secrecy::ExposeSecret;

use super::load::key_error;
use super::{is_loopback, ConfigError, ProviderSettings, Settings};

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
        if let Some(providers) = &self.providers {
            let order = providers.order();
            ensure(!order.is_empty(), "providers.order", || {
                "names no provider; write e.g. order = [\"keyapi\", \"echotik\"]".into()
            })?;
            for (i, kind) in order.iter().enumerate() {
                ensure(!order[..i].contains(kind), "providers.order", || {
                    format!("lists {kind} twice; name each provider once")
                })?;
            }
        }
        for p in self.provider_lanes() {
            let prefix = self.provider_key(p.name);
            check_provider(&p, &prefix)?;
            self.check_poll(&p, &prefix)?;
        }
        self.check_poll_alone()
    }

    fn check_poll_alone(&self) -> Result<(), ConfigError> {
        let poll = &self.poll;
        ensure(
            (1..=1024).contains(&poll.concurrency),
            "poll.concurrency",
            || "must be between 1 and 1024".into(),
        )?;
        ensure(
            (1..=1000).contains(&poll.commit_group),
            "poll.commit_group",
            || "must be between 1 and 1000 (1 writes every answer in its own transaction)".into(),
        )?;
        ensure(
            (1..=10_000).contains(&poll.claim_batch),
            "poll.claim_batch",
            || "must be between 1 and 10000".into(),
        )?;
        ensure((0.0..=0.5).contains(&poll.jitter), "poll.jitter", || {
            "must be between 0 and 0.5 (a fraction of poll_interval)".into()
        })
    }

    /// The lease must fit each provider's slowest request and its rate.
    fn check_poll(&self, p: &ProviderSettings, prefix: &str) -> Result<(), ConfigError> {
        let poll = &self.poll;
        ensure(
            poll.lease_ttl >= p.request_timeout * 2,
            "poll.lease_ttl",
            || {
                format!(
                "must be at least twice {prefix}.request_timeout ({:?}) so a lease outlives a slow request",
                p.request_timeout
            )
            },
        )?;
        // Range-checked before, so this division is finite and the slot fits in a Duration.
        let slot = Duration::from_secs_f64(1.0 / p.requests_per_second);
        ensure(poll.lease_ttl >= slot * 8, "poll.lease_ttl", || {
            format!(
                "must be at least 8 request slots ({:?} at {prefix}.requests_per_second = {}) so a poll never waits out its lease",
                slot * 8,
                p.requests_per_second
            )
        })
    }
}

/// One provider's keys; `prefix` is where they live (`provider` or `providers.<name>`).
fn check_provider(p: &ProviderSettings, prefix: &str) -> Result<(), ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    if let Some(u) = &p.base_url {
        ensure(
            matches!(u.scheme(), "http" | "https"),
            &key("base_url"),
            || {
                format!(
                    "{:?} is not an http(s) URL; leave it empty for the provider's public API",
                    u.as_str()
                )
            },
        )?;
        ensure(
            u.scheme() == "https" || is_loopback(u) || p.allow_insecure_http,
            &key("base_url"),
            || {
                format!(
                    "{:?} is plain http to a host other than this machine, which would send the API key in cleartext; use https:// (or set {prefix}.allow_insecure_http = true)",
                    u.as_str()
                )
            },
        )?;
    }
    ensure(
        p.requests_per_second.is_finite() && (1e-4..=1e9).contains(&p.requests_per_second),
        &key("requests_per_second"),
        || "must be a number between 0.0001 and 1000000000, e.g. 1.5".into(),
    )?;
    ensure(
        (1024..=256 * 1024 * 1024).contains(&p.max_body_bytes),
        &key("max_body_bytes"),
        || "must be between 1024 and 268435456 (bytes), e.g. 1048576".into(),
    )?;
    ensure(
        (1..=20).contains(&p.max_attempts),
        &key("max_attempts"),
        || "must be between 1 and 20".into(),
    )?;
    for (name, d) in [
        ("request_timeout", p.request_timeout),
        ("connect_timeout", p.connect_timeout),
        ("breaker_cooldown", p.breaker_cooldown),
    ] {
        ensure(!d.is_zero(), &key(name), || {
            "must be greater than 0s, e.g. \"30s\"".into()
        })?;
    }
    ensure(
        p.retry_max_delay >= p.retry_base_delay,
        &key("retry_max_delay"),
        || format!("must not be smaller than {prefix}.retry_base_delay"),
    )?;
    ensure(
        p.breaker_cooldown_max >= p.breaker_cooldown,
        &key("breaker_cooldown_max"),
        || format!("must not be smaller than {prefix}.breaker_cooldown"),
    )
}
