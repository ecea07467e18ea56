//! The database URL is a secret: how it is shown (password hidden) and when it is a risk.

use std::fmt;

use secrecy::ExposeSecret;
use url::Url;

use super::DatabaseSettings;

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl DatabaseSettings {
    /// The URL with any password replaced, safe for logs and errors.
    #[must_use]
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }
}

/// A database URL with its password hidden, wherever libpq lets it hide: the user-info part
/// and the `password` / `sslpassword` query parameters.
#[must_use]
pub fn redact_url(raw: &str) -> String {
    let Ok(mut u) = Url::parse(raw) else {
        return "<unparseable database url>".into();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("REDACTED"));
    }
    let secret = |k: &str| matches!(k.to_ascii_lowercase().as_str(), "password" | "sslpassword");
    if u.query_pairs().any(|(k, _)| secret(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "REDACTED".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// A warning for a database URL whose connection could be read or redirected on the way: a
/// remote host without `sslmode` of `require`, `verify-ca` or `verify-full` (libpq's default,
/// `prefer`, falls back to cleartext silently). None for loopback and Unix sockets.
pub fn database_tls_warning(raw: &str) -> Option<String> {
    let u = Url::parse(raw).ok()?;
    let socket = u.host_str().is_none_or(str::is_empty)
        || u.query_pairs()
            .any(|(k, v)| k == "host" && v.starts_with('/'));
    if socket || is_loopback(&u) {
        return None;
    }
    let mode = u
        .query_pairs()
        .find(|(k, _)| k == "sslmode")
        .map_or_else(|| "prefer".to_owned(), |(_, v)| v.into_owned());
    if matches!(mode.as_str(), "require" | "verify-ca" | "verify-full") {
        return None;
    }
    Some(format!(
        "the database at {} is remote and sslmode={mode}: the connection may be unencrypted; add ?sslmode=verify-full (with sslrootcert=...) to database.url",
        u.host_str().unwrap_or_default()
    ))
}

/// True for a URL whose host is this machine: plain HTTP there never crosses a network.
#[must_use]
pub fn is_loopback(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        // Non-special schemes (postgres://) keep IP hosts as opaque text.
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}
