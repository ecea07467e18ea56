//! One typed `Settings`, read from `config.toml` and overridden from the environment.
//!
//! Every key can be set as `SOUNDTREND__<SECTION>__<KEY>` (e.g.
//! `SOUNDTREND__PROVIDER__REQUESTS_PER_SECOND=5`); `DATABASE_URL` overrides `database.url`.
//! Secrets never live here: provider credentials come only from the environment (see
//! [`crate::provider::Credentials`]). A bad value fails at start-up with one line naming the key.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use url::Url;

use crate::domain::Period;
use crate::provider::ProviderKind;

const ENV_PREFIX: &str = "SOUNDTREND__";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub provider: ProviderSettings,
    pub poll: PollSettings,
    pub daemon: DaemonSettings,
    pub retention: RetentionSettings,
    pub admin: AdminSettings,
    pub log: LogSettings,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// May hold a password, so it is a secret; [`DatabaseSettings::redacted_url`] is loggable.
    pub url: SecretString,
    pub max_connections: u32,
    #[serde(deserialize_with = "human_duration")]
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderSettings {
    pub name: ProviderKind,
    /// Empty: the provider's public API.
    pub base_url: String,
    pub user_agent: String,
    #[serde(deserialize_with = "human_duration")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "human_duration")]
    pub request_timeout: Duration,
    pub requests_per_second: f64,
    pub burst: u32,
    /// 0: the provider's price (KeyAPI 2, EchoTik 1).
    pub credits_per_request: u32,
    /// 0: unlimited.
    pub daily_credit_budget: u32,
    pub max_attempts: u32,
    #[serde(deserialize_with = "human_duration")]
    pub retry_base_delay: Duration,
    #[serde(deserialize_with = "human_duration")]
    pub retry_max_delay: Duration,
    #[serde(deserialize_with = "human_duration")]
    pub max_retry_after: Duration,
    pub not_found_codes: Vec<i64>,
    pub not_found_messages: Vec<String>,
    pub disable_after_not_found: u32,
    /// Responses larger than this are refused unread (the real payload is a few KiB).
    pub max_body_bytes: usize,
    /// Allows an `http://` base URL to a host other than loopback (the key then travels in
    /// cleartext). Off: plain HTTP is only accepted to 127.0.0.0/8, ::1 and localhost.
    pub allow_insecure_http: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollSettings {
    #[serde(deserialize_with = "period")]
    pub default_period: Period,
    pub concurrency: usize,
    pub claim_batch: u32,
    #[serde(deserialize_with = "human_duration")]
    pub lease_ttl: Duration,
    pub jitter: f64,
    #[serde(deserialize_with = "human_duration")]
    pub failure_backoff: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    pub tick_cron: String,
    pub maintenance_cron: String,
    #[serde(deserialize_with = "human_duration")]
    pub shutdown_grace: Duration,
    pub instance_name: String,
    #[serde(deserialize_with = "human_duration")]
    pub database_retry_max: Duration,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// 0: keep raw bodies forever.
    pub raw_body_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Empty: no admin endpoint.
    pub listen: String,
    #[serde(deserialize_with = "human_duration")]
    pub ready_max_success_age: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://postgres@127.0.0.1:5432/soundtrend".to_owned()),
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            name: ProviderKind::KeyApi,
            base_url: String::new(),
            user_agent: concat!("soundtrend/", env!("CARGO_PKG_VERSION")).to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            requests_per_second: 1.0,
            burst: 1,
            credits_per_request: 0,
            daily_credit_budget: 0,
            max_attempts: 4,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(15 * 60),
            not_found_codes: Vec::new(),
            not_found_messages: vec!["not found".into(), "not exist".into()],
            disable_after_not_found: 3,
            max_body_bytes: 1024 * 1024,
            allow_insecure_http: false,
        }
    }
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            default_period: Period::Days120,
            concurrency: 4,
            claim_batch: 50,
            lease_ttl: Duration::from_secs(5 * 60),
            jitter: 0.1,
            failure_backoff: Duration::from_secs(60),
        }
    }
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            tick_cron: "*/10 * * * * *".into(),
            maintenance_cron: "0 * * * * *".into(),
            shutdown_grace: Duration::from_secs(30),
            instance_name: String::new(),
            database_retry_max: Duration::from_secs(30),
        }
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9187".into(),
            ready_max_success_age: Duration::from_secs(2 * 24 * 3600),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

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
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }
}

/// A database URL with its password hidden, wherever libpq lets it hide: the user-info part
/// and the `password` / `sslpassword` query parameters.
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

/// A configuration problem, always naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

fn key_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_owned(),
        message: message.into(),
    }
}

impl Settings {
    /// Reads `path` (a missing file is fine unless `required`), applies the environment, checks
    /// every value.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::from_sources(&text, &path.display().to_string(), &env)
    }

    /// The pure core of [`Settings::load`]: TOML text plus environment pairs.
    pub fn from_sources(
        toml_text: &str,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml_text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: origin.to_owned(),
                    message: e.message().to_owned(),
                })?;
        for (name, value) in env {
            if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
                apply_env_override(&mut table, name, rest, value)?;
            }
        }
        if let Some((_, url)) = env
            .iter()
            .find(|(k, v)| k == "DATABASE_URL" && !v.is_empty())
        {
            let db = table
                .entry("database")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(db) = db {
                db.insert("url".into(), toml::Value::String(url.clone()));
            }
        }
        let settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                key_error(&key, e.into_inner().message().to_owned())
            })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let db = self.database.url.expose_secret();
        if !(db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            return Err(key_error(
                "database.url",
                "must be a postgres:// URL (or set DATABASE_URL)",
            ));
        }
        if self.database.max_connections < 2 {
            return Err(key_error("database.max_connections", "must be at least 2"));
        }
        if !self.provider.base_url.is_empty() {
            match Url::parse(&self.provider.base_url) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u) if u.scheme() == "http" => {
                    if !is_loopback(&u) && !self.provider.allow_insecure_http {
                        return Err(key_error(
                            "provider.base_url",
                            format!(
                                "{:?} is plain http to a host other than this machine, which would send the API key in cleartext; use https:// (or set provider.allow_insecure_http = true)",
                                self.provider.base_url
                            ),
                        ));
                    }
                }
                _ => {
                    return Err(key_error(
                        "provider.base_url",
                        format!(
                        "{:?} is not an http(s) URL; leave it empty for the provider's public API",
                        self.provider.base_url
                    ),
                    ))
                }
            }
        }
        let p = &self.provider;
        if !(p.requests_per_second.is_finite() && (1e-4..=1e9).contains(&p.requests_per_second)) {
            return Err(key_error(
                "provider.requests_per_second",
                "must be a number between 0.0001 and 1000000000, e.g. 1.5",
            ));
        }
        if !(1024..=256 * 1024 * 1024).contains(&p.max_body_bytes) {
            return Err(key_error(
                "provider.max_body_bytes",
                "must be between 1024 and 268435456 (bytes), e.g. 1048576",
            ));
        }
        if p.burst == 0 {
            return Err(key_error("provider.burst", "must be at least 1"));
        }
        if p.max_attempts == 0 || p.max_attempts > 20 {
            return Err(key_error(
                "provider.max_attempts",
                "must be between 1 and 20",
            ));
        }
        if p.request_timeout.is_zero() {
            return Err(key_error(
                "provider.request_timeout",
                "must be greater than 0s",
            ));
        }
        if p.connect_timeout.is_zero() {
            return Err(key_error(
                "provider.connect_timeout",
                "must be greater than 0s",
            ));
        }
        if p.retry_max_delay < p.retry_base_delay {
            return Err(key_error(
                "provider.retry_max_delay",
                "must not be smaller than provider.retry_base_delay",
            ));
        }
        if p.disable_after_not_found == 0 {
            return Err(key_error(
                "provider.disable_after_not_found",
                "must be at least 1",
            ));
        }
        let poll = &self.poll;
        if poll.concurrency == 0 || poll.concurrency > 1024 {
            return Err(key_error("poll.concurrency", "must be between 1 and 1024"));
        }
        if poll.claim_batch == 0 || poll.claim_batch > 10_000 {
            return Err(key_error("poll.claim_batch", "must be between 1 and 10000"));
        }
        if !(0.0..=0.5).contains(&poll.jitter) {
            return Err(key_error(
                "poll.jitter",
                "must be between 0 and 0.5 (a fraction of poll_interval)",
            ));
        }
        if poll.lease_ttl < p.request_timeout * 2 {
            return Err(key_error(
                "poll.lease_ttl",
                format!(
                    "must be at least twice provider.request_timeout ({:?}) so a lease outlives a slow request",
                    p.request_timeout
                ),
            ));
        }
        let slot = Duration::from_secs_f64(1.0 / p.requests_per_second);
        if poll.lease_ttl < slot * 8 {
            return Err(key_error(
                "poll.lease_ttl",
                format!(
                    "must be at least 8 request slots ({:?} at provider.requests_per_second = {}) so a poll never waits out its lease",
                    slot * 8,
                    p.requests_per_second
                ),
            ));
        }
        for (key, expr) in [
            ("daemon.tick_cron", &self.daemon.tick_cron),
            ("daemon.maintenance_cron", &self.daemon.maintenance_cron),
        ] {
            validate_cron(expr).map_err(|m| key_error(key, m))?;
        }
        if !self.admin.listen.is_empty() && self.admin.listen.parse::<SocketAddr>().is_err() {
            return Err(key_error(
                "admin.listen",
                format!(
                    "{:?} is not an address such as 127.0.0.1:9187 (empty disables it)",
                    self.admin.listen
                ),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(key_error(
                "log.level",
                format!(
                    "{:?} is not a level or filter such as info or soundtrend=debug",
                    self.log.level
                ),
            ));
        }
        Ok(())
    }

    /// The provider's base URL: the configured one, or the provider's public API.
    pub fn base_url(&self) -> Url {
        let raw = if self.provider.base_url.is_empty() {
            self.provider.name.default_base_url()
        } else {
            &self.provider.base_url
        };
        let mut url = Url::parse(raw).expect("validated at load");
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        url
    }

    /// Credits one request to `kind` costs: the configured figure, or the provider's price.
    pub fn credits_per_request(&self, kind: ProviderKind) -> u32 {
        match self.provider.credits_per_request {
            0 => kind.default_credits_per_request(),
            n => n,
        }
    }
}

/// The scheduler takes 6-field cron (seconds first) in UTC.
fn validate_cron(expr: &str) -> Result<(), String> {
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "{expr:?} has {fields} fields; expected 6 (sec min hour day month weekday), e.g. \"*/10 * * * * *\""
        ));
    }
    Ok(())
}

fn apply_env_override(
    table: &mut toml::Table,
    name: &str,
    rest: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let parts: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if parts.len() != 2 || parts.iter().any(String::is_empty) {
        return Err(key_error(
            name,
            "environment overrides are named SOUNDTREND__<SECTION>__<KEY>, e.g. SOUNDTREND__PROVIDER__BURST",
        ));
    }
    let section = table
        .entry(parts[0].clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(section) = section else {
        return Err(key_error(&parts[0], "must be a table"));
    };
    section.insert(parts[1].clone(), env_value(value));
    Ok(())
}

/// Environment values are text; read them as the TOML value they spell (`5`, `1.5`, `true`,
/// `[1, 2]`) and fall back to a string.
fn env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    doc.parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn human_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let raw = String::deserialize(d)?;
    humantime::parse_duration(raw.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "{raw:?} is not a duration ({e}); write it like \"30s\", \"5m\" or \"1day\""
        ))
    })
}

fn period<'de, D: Deserializer<'de>>(d: D) -> Result<Period, D::Error> {
    let days = i64::deserialize(d)?;
    Period::from_days(days).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_sources(toml, "test.toml", &env)
    }

    #[test]
    fn the_shipped_config_file_loads_and_matches_the_defaults() {
        let shipped = include_str!("../config.toml");
        let s = load(shipped, &[]).unwrap();
        let d = Settings::default();
        assert_eq!(s.provider.name, d.provider.name);
        assert_eq!(
            s.provider.requests_per_second,
            d.provider.requests_per_second
        );
        assert_eq!(s.poll.lease_ttl, d.poll.lease_ttl);
        assert_eq!(s.poll.default_period, d.poll.default_period);
        assert_eq!(s.daemon.tick_cron, d.daemon.tick_cron);
        assert_eq!(s.admin.listen, d.admin.listen);
        assert_eq!(s.database.redacted_url(), d.database.redacted_url());
    }

    #[test]
    fn environment_overrides_the_file() {
        let s = load(
            "[provider]\nname = \"keyapi\"\nburst = 3\n",
            &[
                ("SOUNDTREND__PROVIDER__NAME", "echotik"),
                ("SOUNDTREND__PROVIDER__REQUESTS_PER_SECOND", "2.5"),
                ("SOUNDTREND__PROVIDER__BASE_URL", "http://127.0.0.1:9/"),
                ("DATABASE_URL", "postgres://u:pw@db/x"),
            ],
        )
        .unwrap();
        assert_eq!(s.provider.name, ProviderKind::EchoTik);
        assert_eq!(s.provider.burst, 3);
        assert_eq!(s.provider.requests_per_second, 2.5);
        assert_eq!(s.base_url().as_str(), "http://127.0.0.1:9/");
        assert_eq!(s.database.redacted_url(), "postgres://u:REDACTED@db/x");
    }

    #[test]
    fn passwords_in_the_query_string_are_redacted_too() {
        let r = redact_url("postgres://u@db/x?password=hunter2&sslmode=require");
        assert!(!r.contains("hunter2"), "{r}");
        assert!(
            r.contains("password=REDACTED") && r.contains("sslmode=require"),
            "{r}"
        );
        let r = redact_url("postgres://u:pw@db/x?sslpassword=k");
        assert!(!r.contains("pw@") && !r.contains("=k"), "{r}");
    }

    #[test]
    fn a_remote_database_without_tls_is_warned_about() {
        assert!(database_tls_warning("postgres://u@db.example.com/x").is_some());
        assert!(database_tls_warning("postgres://u@db.example.com/x?sslmode=prefer").is_some());
        assert!(
            database_tls_warning("postgres://u@db.example.com/x?sslmode=verify-full").is_none()
        );
        assert!(database_tls_warning("postgres://u@127.0.0.1:5432/x").is_none());
        assert!(database_tls_warning("postgres://u@localhost/x").is_none());
        assert!(database_tls_warning("postgres:///x?host=/run/postgresql").is_none());
    }

    #[test]
    fn plain_http_is_refused_unless_the_host_is_this_machine() {
        let e = load("[provider]\nbase_url = \"http://api.example.com/\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("provider.base_url"), "{e}");
        assert!(e.to_string().contains("cleartext"), "{e}");
        for ok in [
            "http://127.0.0.1:9/",
            "http://localhost:8080/",
            "http://[::1]:9/",
        ] {
            load(&format!("[provider]\nbase_url = \"{ok}\"\n"), &[]).unwrap();
        }
        load(
            "[provider]\nbase_url = \"http://mock:80/\"\nallow_insecure_http = true\n",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn extreme_rates_and_body_caps_are_refused_not_panicked_on() {
        for rps in ["1e-30", "5e-20", "1e12"] {
            let e = load(&format!("[provider]\nrequests_per_second = {rps}\n"), &[]).unwrap_err();
            assert!(
                e.to_string().contains("provider.requests_per_second"),
                "{e}"
            );
        }
        let e = load("[provider]\nmax_body_bytes = 10\n", &[]).unwrap_err();
        assert!(e.to_string().contains("provider.max_body_bytes"), "{e}");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let e = load("[provider]\nrequests_per_second = 0\n", &[]).unwrap_err();
        assert!(
            e.to_string().contains("provider.requests_per_second"),
            "{e}"
        );
        let e = load("[provider]\nname = \"tiktok\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("provider.name"), "{e}");
        let e = load("[poll]\nlease_ttl = \"soon\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("poll.lease_ttl"), "{e}");
        let e = load("[poll]\ndefault_period = 14\n", &[]).unwrap_err();
        assert!(e.to_string().contains("poll.default_period"), "{e}");
        let e = load("[provider]\nbrust = 2\n", &[]).unwrap_err();
        assert!(e.to_string().contains("brust"), "{e}");
        let e = load("", &[("SOUNDTREND__POLL__CONCURRENCY", "many")]).unwrap_err();
        assert!(e.to_string().contains("poll.concurrency"), "{e}");
        let e = load("[provider]\nrequests_per_second = 0.01\n", &[]).unwrap_err();
        assert!(e.to_string().contains("poll.lease_ttl"), "{e}");
        let e = load("[daemon]\ntick_cron = \"* * * * *\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("daemon.tick_cron"), "{e}");
    }

    #[test]
    fn debug_output_hides_the_database_password() {
        let s = load("", &[("DATABASE_URL", "postgres://u:s3cr3t-pass@db/x")]).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cr3t-pass"), "{shown}");
    }
}
