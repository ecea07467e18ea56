//! Reading the layers with `figment`, and turning what goes wrong into one line naming the key.

use std::path::Path;

use figment::error::Kind;
use figment::providers::{Data, Env, Format, Toml};
use figment::Figment;

use super::Settings;

/// Every key can be set as `SOUNDTREND__<SECTION>__<KEY>`.
const ENV_PREFIX: &str = "SOUNDTREND__";
/// The variable every Postgres tool reads; it overrides `database.url`.
const DATABASE_URL: &str = "DATABASE_URL";

/// A configuration problem, always naming the key (or the file, when it does not parse).
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

pub(super) fn key_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_owned(),
        message: message.into(),
    }
}

impl Settings {
    /// Reads `path` (a missing file is fine unless `required`), applies the environment, checks
    /// every value.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let file = match std::fs::metadata(path) {
            Ok(_) => Some(Toml::file_exact(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
            Err(source) => {
                return Err(ConfigError::Read {
                    path: origin,
                    source,
                })
            }
        };
        Self::from_layers(file, ENV_PREFIX, DATABASE_URL, &origin)
    }

    /// The core of [`Settings::load`], with the environment's names as parameters so tests can
    /// use variables of their own. Defaults need no layer: every struct is `#[serde(default)]`.
    pub(super) fn from_layers(
        file: Option<Data<Toml>>,
        env_prefix: &str,
        database_var: &str,
        origin: &str,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(file);
        }
        figment = figment.merge(Env::prefixed(env_prefix).split("__"));
        // An empty DATABASE_URL is how shells unset it; it must not blank the configured URL.
        if std::env::var_os(database_var).is_some_and(|v| !v.is_empty()) {
            figment = figment.merge(
                Env::raw()
                    .only(&[database_var])
                    .map(|_| "database.url".into()),
            );
        }
        refuse_mixed_provider_forms(&figment)?;
        let settings: Settings = figment
            .extract()
            .map_err(|e| one_line(&e, env_prefix, database_var, origin))?;
        settings.validate()?;
        Ok(settings)
    }
}

/// `[provider]` and `[providers]` describe the same thing two ways; taking either silently would
/// poll with settings the user did not mean. A `name` under `[providers.<name>]` would contradict
/// the section's own name.
fn refuse_mixed_provider_forms(figment: &Figment) -> Result<(), ConfigError> {
    if figment.find_value("providers").is_ok() && figment.find_value("provider").is_ok() {
        return Err(key_error(
            "providers",
            "cannot be used together with [provider]; move the [provider] keys under [providers.<name>] and delete [provider] (and any SOUNDTREND__PROVIDER__ variables)",
        ));
    }
    for kind in ["keyapi", "echotik"] {
        let key = format!("providers.{kind}.name");
        if figment.find_value(&key).is_ok() {
            return Err(key_error(
                &key,
                format!("no such key; the section [providers.{kind}] is already {kind}'s"),
            ));
        }
    }
    Ok(())
}

/// The first of figment's errors as one line: the dotted key, what is wrong, where it was set.
fn one_line(e: &figment::Error, env_prefix: &str, database_var: &str, origin: &str) -> ConfigError {
    let mut path = e.path.clone();
    let message = match &e.kind {
        Kind::UnknownField(field, expected) => {
            // figment usually puts the unknown key on the path already; make sure it is there.
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!("no such key; this section has {}", expected.join(", "))
        }
        Kind::InvalidValue(actual, expected) if expected == "a duration" => {
            format!("found {actual}, which is not a duration; write it like \"30s\", \"5m\" or \"1day\"")
        }
        Kind::InvalidValue(actual, expected) if expected.starts_with("a nonzero") => {
            format!("found {actual}; must be at least 1")
        }
        Kind::Message(m) => m.clone(),
        other => other.to_string(),
    };
    if path.is_empty() {
        // No key: the file itself did not parse. TOML errors draw the line in several more.
        let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().unwrap_or_default();
        let last = lines.rfind(|l| !l.contains('|')).unwrap_or_default();
        return ConfigError::Syntax {
            path: origin.to_owned(),
            message: [first, last].join(" ").trim().to_owned(),
        };
    }
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|md| md.name.contains("environment"));
    let key = path.join(".");
    let source = if !from_env {
        format!("in {origin}")
    } else if e
        .metadata
        .as_ref()
        .is_some_and(|md| md.name.contains(env_prefix))
    {
        let name = format!("{env_prefix}{}", path.join("__").to_ascii_uppercase());
        if path.len() >= 2 {
            format!("set by {name}")
        } else {
            // An unknown section: figment does not keep the rest of the variable's name.
            format!("set by a variable named {name}__<KEY>")
        }
    } else {
        format!("set by {database_var}")
    };
    super::load::key_error(&key, format!("{message} ({source})"))
}
