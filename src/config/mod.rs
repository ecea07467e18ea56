//! One typed `Settings`, read from `config.toml` and overridden from the environment.
//!
//! Layers, later ones winning: the `Default` impls below, the TOML file, every
//! `SOUNDTREND__<SECTION>__<KEY>` variable (e.g. `SOUNDTREND__PROVIDER__REQUESTS_PER_SECOND=5`),
//! then `DATABASE_URL` for `database.url`. Secrets never live here: provider credentials come
//! only from the environment (see [`crate::provider::Credentials`]). Values are parsed into their
//! types at load ([`Url`], [`SocketAddr`], [`CronExpr`], durations), and a bad one fails at
//! start-up with one line naming the key.

mod checks;
mod database;
mod load;
mod types;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::domain::Period;
use crate::provider::ProviderKind;

pub use database::{database_tls_warning, is_loopback, redact_url};
pub use load::ConfigError;
pub use types::{CronExpr, LogFilter};

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub database: DatabaseSettings,
    /// The single-provider form. Ignored when [`Settings::providers`] is set (both at once is
    /// refused at load); use [`Settings::provider_lanes`] to read whichever is in force.
    pub provider: ProviderSettings,
    /// Several providers with failover (`[providers]`); None when the file has no such section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub providers: Option<ProvidersSettings>,
    pub poll: PollSettings,
    pub daemon: DaemonSettings,
    pub retention: RetentionSettings,
    pub admin: AdminSettings,
    pub log: LogSettings,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// May hold a password, so it is a secret; [`DatabaseSettings::redacted_url`] is loggable
    /// and is what serializing shows.
    #[serde(serialize_with = "types::redacted")]
    pub url: SecretString,
    /// At least 2: one connection listens for watchlist notifications.
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderSettings {
    pub name: ProviderKind,
    /// None (empty in TOML): the provider's public API; see [`Settings::base_url`].
    #[serde(with = "types::empty_is_none")]
    pub base_url: Option<Url>,
    pub user_agent: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub requests_per_second: f64,
    pub burst: NonZeroU32,
    /// 0: the provider's price (`KeyAPI` 2, `EchoTik` 1).
    pub credits_per_request: u32,
    /// 0: unlimited.
    pub daily_credit_budget: u32,
    /// 1 to 20, checked at load.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    pub not_found_codes: Vec<i64>,
    pub not_found_messages: Vec<String>,
    pub disable_after_not_found: NonZeroU32,
    /// Responses larger than this are refused unread (the real payload is a few KiB).
    pub max_body_bytes: usize,
    /// Allows an `http://` base URL to a host other than loopback (the key then travels in
    /// cleartext). Off: plain HTTP is only accepted to 127.0.0.0/8, `::1` and localhost.
    pub allow_insecure_http: bool,
    /// The circuit breaker, shared by every instance: this many transport or 5xx failures in a
    /// row mark the provider down.
    pub breaker_failures: NonZeroU32,
    /// How long a down provider rests before one probe request; doubles after each failed
    /// probe, up to `breaker_cooldown_max`.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown_max: Duration,
}

/// `[providers]`: every provider soundtrend may use, in order of preference.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProvidersSettings {
    /// Preference; a provider left out is not used. Empty: the sections present, `KeyAPI` first.
    #[serde(default)]
    pub order: Vec<ProviderKind>,
    /// Each section takes every key of `[provider]` except `name`, which the section's name is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyapi: Option<ProviderSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echotik: Option<ProviderSettings>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollSettings {
    #[serde(with = "types::period_days")]
    pub default_period: Period,
    /// 1 to 1024, checked at load.
    pub concurrency: usize,
    /// 1 to 10000, checked at load.
    pub claim_batch: u32,
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    pub jitter: f64,
    #[serde(with = "humantime_serde")]
    pub failure_backoff: Duration,
    /// Most answers written in one transaction (1: each alone); 1 to 1000, checked at load.
    pub commit_group: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    pub tick_cron: CronExpr,
    pub maintenance_cron: CronExpr,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub instance_name: String,
    #[serde(with = "humantime_serde")]
    pub database_retry_max: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// 0: keep raw bodies forever.
    pub raw_body_days: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// None (empty in TOML or the environment): no admin endpoint.
    #[serde(with = "types::empty_is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(with = "humantime_serde")]
    pub ready_max_success_age: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: LogFilter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
            base_url: None,
            user_agent: concat!("soundtrend/", env!("CARGO_PKG_VERSION")).to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            requests_per_second: 1.0,
            burst: NonZeroU32::MIN,
            credits_per_request: 0,
            daily_credit_budget: 0,
            max_attempts: 4,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_mins(1),
            max_retry_after: Duration::from_mins(15),
            not_found_codes: Vec::new(),
            not_found_messages: vec!["not found".into(), "not exist".into()],
            disable_after_not_found: NonZeroU32::new(3).expect("3 is not zero"),
            max_body_bytes: 1024 * 1024,
            allow_insecure_http: false,
            breaker_failures: NonZeroU32::new(5).expect("5 is not zero"),
            breaker_cooldown: Duration::from_secs(30),
            breaker_cooldown_max: Duration::from_mins(10),
        }
    }
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            default_period: Period::Days120,
            concurrency: 4,
            claim_batch: 50,
            lease_ttl: Duration::from_mins(5),
            jitter: 0.1,
            failure_backoff: Duration::from_mins(1),
            commit_group: 64,
        }
    }
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            tick_cron: CronExpr::from_static("*/10 * * * * *"),
            maintenance_cron: CronExpr::from_static("0 * * * * *"),
            shutdown_grace: Duration::from_secs(30),
            instance_name: String::new(),
            database_retry_max: Duration::from_secs(30),
        }
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9187))),
            ready_max_success_age: Duration::from_hours(48),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: LogFilter::from_static("info"),
        }
    }
}

impl Settings {
    /// The providers in force, in order of preference, each with its `name` set: the
    /// `[providers]` sections in `providers.order`, or the single `[provider]`.
    #[must_use]
    pub fn provider_lanes(&self) -> Vec<ProviderSettings> {
        let Some(providers) = &self.providers else {
            return vec![self.provider.clone()];
        };
        providers
            .order()
            .into_iter()
            .map(|kind| {
                let mut p = providers.section(kind).cloned().unwrap_or_default();
                p.name = kind;
                p
            })
            .collect()
    }

    /// The config key prefix of `kind`'s settings (`provider` or `providers.keyapi`), for messages.
    #[must_use]
    pub fn provider_key(&self, kind: ProviderKind) -> String {
        match self.providers {
            Some(_) => format!("providers.{kind}"),
            None => "provider".into(),
        }
    }
}

impl ProvidersSettings {
    /// `order`, or when it is empty the providers that have a section, `KeyAPI` first.
    #[must_use]
    pub fn order(&self) -> Vec<ProviderKind> {
        if !self.order.is_empty() {
            return self.order.clone();
        }
        [ProviderKind::KeyApi, ProviderKind::EchoTik]
            .into_iter()
            .filter(|k| self.section(*k).is_some())
            .collect()
    }

    #[must_use]
    pub fn section(&self, kind: ProviderKind) -> Option<&ProviderSettings> {
        match kind {
            ProviderKind::KeyApi => self.keyapi.as_ref(),
            ProviderKind::EchoTik => self.echotik.as_ref(),
        }
    }
}

impl ProviderSettings {
    /// The base URL, ending in `/` so relative paths join under it: the configured one, or the
    /// provider's public API.
    #[must_use]
    pub fn endpoint(&self) -> Url {
        let mut url = match &self.base_url {
            Some(u) => u.clone(),
            None => Url::parse(self.name.default_base_url())
                .expect("a provider's public API URL parses"),
        };
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        url
    }

    /// Credits one request costs: the configured figure, or the provider's price.
    #[must_use]
    pub fn credits(&self) -> u32 {
        match self.credits_per_request {
            0 => self.name.default_credits_per_request(),
            n => n,
        }
    }

    /// None: unlimited.
    #[must_use]
    pub fn daily_budget(&self) -> Option<u32> {
        (self.daily_credit_budget > 0).then_some(self.daily_credit_budget)
    }
}
