//! The paid "trending music detail" endpoint, in both providers' dialects.
//!
//! Which provider and how it authenticates live here; how we call the API lives in `client`; how
//! we read the body in [`wire`]; what went wrong is classified in [`error`]. The client makes
//! exactly one HTTP request per [`ProviderClient::fetch`]: retries, quota and credits are the
//! poller's business.

mod client;
pub mod error;
pub mod fake;
pub mod wire;

use std::fmt;
use std::str::FromStr;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use secrecy::{ExposeSecret, SecretString};

pub use client::{parse_response, Attempt, ClientOptions, ProviderClient};
pub use error::{parse_retry_after, Outcome, ProviderError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    KeyApi,
    EchoTik,
}

impl ProviderKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyApi => "keyapi",
            Self::EchoTik => "echotik",
        }
    }

    #[must_use]
    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::KeyApi => "https://api.keyapi.ai",
            Self::EchoTik => "https://open.echotik.live",
        }
    }

    #[must_use]
    pub fn path(self) -> &'static str {
        match self {
            Self::KeyApi => "/v1/tiktok/trending/music/detail",
            Self::EchoTik => "/api/v3/realtime/trending/popular/music/detail",
        }
    }

    /// The `message` a successful response carries. Informational only: success is `code == 0`.
    #[must_use]
    pub fn success_message(self) -> &'static str {
        match self {
            Self::KeyApi => "success",
            Self::EchoTik => "ok",
        }
    }

    /// Credits one request costs, as the provider's price list says (`KeyAPI`: 2).
    #[must_use]
    pub fn default_credits_per_request(self) -> u32 {
        match self {
            Self::KeyApi => 2,
            Self::EchoTik => 1,
        }
    }

    /// The environment variables that hold this provider's secrets.
    #[must_use]
    pub fn credential_env_vars(self) -> &'static [&'static str] {
        match self {
            Self::KeyApi => &["KEYAPI_API_KEY"],
            Self::EchoTik => &["ECHOTIK_USERNAME", "ECHOTIK_PASSWORD"],
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "keyapi" => Ok(Self::KeyApi),
            "echotik" => Ok(Self::EchoTik),
            other => Err(format!(
                "unknown provider {other:?}: expected \"keyapi\" or \"echotik\""
            )),
        }
    }
}

/// Secrets, read only from the environment. `Debug` never shows them.
#[derive(Clone)]
pub enum Credentials {
    Bearer(SecretString),
    Basic {
        username: String,
        password: SecretString,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Credentials::Bearer([REDACTED])"),
            Self::Basic { username, .. } => {
                write!(f, "Credentials::Basic({username}:[REDACTED])")
            }
        }
    }
}

impl Credentials {
    /// The provider's credentials from the environment, or `None` when they are not set at all.
    pub fn from_env(kind: ProviderKind) -> Result<Option<Self>, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match kind {
            ProviderKind::KeyApi => Ok(var("KEYAPI_API_KEY")
                .map(|k| Self::Bearer(SecretString::from(k.trim().to_owned())))),
            ProviderKind::EchoTik => match (var("ECHOTIK_USERNAME"), var("ECHOTIK_PASSWORD")) {
                (Some(username), Some(password)) => Ok(Some(Self::Basic {
                    username: username.trim().to_owned(),
                    password: SecretString::from(password),
                })),
                (None, None) => Ok(None),
                (Some(_), None) => {
                    Err("ECHOTIK_USERNAME is set but ECHOTIK_PASSWORD is not: set both".into())
                }
                (None, Some(_)) => {
                    Err("ECHOTIK_PASSWORD is set but ECHOTIK_USERNAME is not: set both".into())
                }
            },
        }
    }

    /// A fingerprint of the secret (a SHA-256 prefix), so the database can remember which
    /// credentials a provider rejected without holding them.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        match self {
            Self::Bearer(key) => h.update(key.expose_secret().as_bytes()),
            Self::Basic { username, password } => {
                h.update(username.as_bytes());
                h.update([0]);
                h.update(password.expose_secret().as_bytes());
            }
        }
        h.finalize()[..8].iter().fold(String::new(), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        })
    }

    fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::Bearer(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                    .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
                value.set_sensitive(true);
                req.header(AUTHORIZATION, value)
            }
            Self::Basic { username, password } => {
                req.basic_auth(username, Some(password.expose_secret()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_in_debug_output() {
        let c = Credentials::Basic {
            username: "ana".into(),
            password: SecretString::from("hunter2-very-secret".to_owned()),
        };
        let b = Credentials::Bearer(SecretString::from("sk-live-abcdef".to_owned()));
        let shown = format!("{c:?} {b:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("sk-live"), "{shown}");
    }
}
