//! Config values that are parsed, not just stored: a cron expression the scheduler accepts, a
//! log filter `tracing` accepts, and the serde glue for keys whose empty string means "none".

use std::fmt;
use std::str::FromStr;

use croner::parser::{CronParser, Seconds};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::Period;

/// A 6-field cron expression (sec min hour day month weekday, UTC), checked by the parser
/// `tokio-cron-scheduler` itself uses, so one that loads is one the scheduler takes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CronExpr(String);

impl CronExpr {
    /// The expression as written, for `Job::new_async`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For literals in this crate (defaults, tests): panics on a bad expression.
    pub(crate) fn from_static(expr: &'static str) -> Self {
        expr.parse().expect("a literal cron expression parses")
    }
}

impl FromStr for CronExpr {
    type Err = String;

    fn from_str(expr: &str) -> Result<Self, Self::Err> {
        // Mirrors `tokio_cron_scheduler::Job::new_async` (0.15, without its `english` feature):
        // seconds required, day-of-month and weekday both apply.
        CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expr)
            .map(|_| Self(expr.to_owned()))
            .map_err(|e| {
                format!(
                    "{expr:?} is not a cron expression the scheduler accepts ({e}); write 6 fields, sec min hour day month weekday, e.g. \"*/10 * * * * *\""
                )
            })
    }
}

impl TryFrom<String> for CronExpr {
    type Error = String;

    fn try_from(expr: String) -> Result<Self, Self::Error> {
        expr.parse()
    }
}

impl From<CronExpr> for String {
    fn from(c: CronExpr) -> Self {
        c.0
    }
}

/// Shown as the plain string, so messages quoting it read as before.
impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A level or `tracing` filter directive (`info`, `soundtrend=debug,warn`), checked at load by
/// the same parser the subscriber uses.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LogFilter(String);

impl LogFilter {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_static(filter: &'static str) -> Self {
        filter.parse().expect("a literal log filter parses")
    }
}

impl FromStr for LogFilter {
    type Err = String;

    fn from_str(filter: &str) -> Result<Self, Self::Err> {
        match tracing_subscriber::EnvFilter::try_new(filter) {
            Ok(_) => Ok(Self(filter.to_owned())),
            Err(e) => Err(format!(
                "{filter:?} is not a level or filter ({e}); write e.g. info or soundtrend=debug"
            )),
        }
    }
}

impl TryFrom<String> for LogFilter {
    type Error = String;

    fn try_from(filter: String) -> Result<Self, Self::Error> {
        filter.parse()
    }
}

impl From<LogFilter> for String {
    fn from(l: LogFilter) -> Self {
        l.0
    }
}

impl fmt::Debug for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serializes the database URL with its password hidden: a secret never leaves as text.
pub(super) fn redacted<S: Serializer>(url: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    s.serialize_str(&super::redact_url(url.expose_secret()))
}

/// An optional value written as a string, the empty string meaning none (`admin.listen = ""`
/// disables the endpoint; `provider.base_url = ""` means the provider's public API).
pub(super) mod empty_is_none {
    use super::{fmt, Deserialize, Deserializer, FromStr, Serializer};

    #[allow(clippy::ref_option)] // the signature `serialize_with` requires
    pub fn serialize<T: fmt::Display, S: Serializer>(
        v: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr + Example,
        T::Err: fmt::Display,
        D: Deserializer<'de>,
    {
        let raw = String::deserialize(d)?;
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        raw.parse().map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "{raw:?} is not {} ({e}); {}",
                T::EXAMPLE,
                T::EMPTY_MEANS
            ))
        })
    }

    /// What a good value looks like, and what leaving it empty does, for the error message.
    pub trait Example {
        const EXAMPLE: &'static str;
        const EMPTY_MEANS: &'static str;
    }

    impl Example for std::net::SocketAddr {
        const EXAMPLE: &'static str = "an address such as 127.0.0.1:9187";
        const EMPTY_MEANS: &'static str = "leave it empty to disable the endpoint";
    }

    impl Example for url::Url {
        const EXAMPLE: &'static str = "an http(s) URL such as https://api.keyapi.ai";
        const EMPTY_MEANS: &'static str = "leave it empty for the provider's public API";
    }
}

/// `poll.default_period` is written as its number of days: 7, 30 or 120.
pub(super) mod period_days {
    use super::{Deserialize, Deserializer, Period, Serializer};

    #[allow(clippy::trivially_copy_pass_by_ref)] // the signature `serialize_with` requires
    pub fn serialize<S: Serializer>(p: &Period, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(i64::from(p.days()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Period, D::Error> {
        let days = i64::deserialize(d)?;
        Period::from_days(days).map_err(serde::de::Error::custom)
    }
}
