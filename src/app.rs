//! Wiring shared by the commands: database, provider client, poller.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::clock::Clock;
use crate::config::{DatabaseSettings, ProviderSettings, Settings};
use crate::poll::{LaneSpec, PollOptions, Poller, WorkerOptions};
use crate::provider::{ClientOptions, Credentials, ProviderClient, ProviderKind};
use crate::store::{self, quota::QuotaParams};

/// A failure that ends the process with a specific exit code and one line on stderr.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Fatal {
    pub code: u8,
    pub message: String,
}

pub mod exit {
    pub const RUNTIME: u8 = 1;
    pub const CONFIG: u8 = 2;
    pub const POLL_FAILED: u8 = 3;
    pub const CREDENTIALS: u8 = 4;
    pub const BUDGET: u8 = 5;
}

pub fn fatal(code: u8, message: impl Into<String>) -> anyhow::Error {
    Fatal {
        code,
        message: message.into(),
    }
    .into()
}

/// A clip id given on the command line; a bad one exits 2 naming it.
pub fn clip_arg(raw: &str) -> anyhow::Result<crate::domain::ClipId> {
    crate::domain::ClipId::parse(raw).map_err(|e| fatal(exit::CONFIG, e.to_string()))
}

/// An optional region given on the command line; a bad one exits 2 naming it.
pub fn region_arg(raw: Option<&str>) -> anyhow::Result<Option<crate::domain::Region>> {
    raw.map(crate::domain::Region::parse)
        .transpose()
        .map_err(|e| fatal(exit::CONFIG, e.to_string()))
}

/// The database server did not answer (as opposed to refusing us).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// Like [`database`], but waits for an unreachable server instead of failing, retrying with a
/// backoff capped at `retry_max` (`daemon.database_retry_max`): the daemon is started by service
/// managers that may start it before Postgres.
pub async fn database_when_reachable(
    db: &DatabaseSettings,
    retry_max: Duration,
) -> anyhow::Result<PgPool> {
    let mut delays = crate::poll::backoff::database_wait(retry_max).delays();
    let mut logged = false;
    loop {
        match database(db).await {
            Err(e) if e.downcast_ref::<Unreachable>().is_some() => {
                if !logged {
                    tracing::warn!(error = %e, "The database is unreachable; waiting for it.");
                    logged = true;
                }
                let delay = delays.next().expect("backoff delays never end");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

/// Connects, creating the database when the server is up but the database does not exist yet,
/// and applies pending migrations (safe with several instances: sqlx takes an advisory lock).
pub async fn database(db: &DatabaseSettings) -> anyhow::Result<PgPool> {
    ensure_database(db).await?;
    let pool = store::pool(db).context("config key `database.url` is not a valid Postgres URL")?;
    store::migrate(&pool)
        .await
        .with_context(|| format!("cannot apply migrations to {}", db.redacted_url()))?;
    Ok(pool)
}

async fn ensure_database(db: &DatabaseSettings) -> anyhow::Result<()> {
    let url = db.redacted_url();
    let options: PgConnectOptions = db
        .url
        .expose_secret()
        .parse()
        .context("config key `database.url` is not a valid Postgres URL")?;
    let connect = |o: PgConnectOptions| async move {
        tokio::time::timeout(db.connect_timeout, o.connect()).await
    };
    match connect(options.clone()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("3D000") => {
            let name = options.get_database().unwrap_or("soundtrend").to_owned();
            tokio::time::timeout(
                db.connect_timeout,
                store::create_database(db.url.expose_secret()),
            )
            .await
            .map_err(|_| anyhow::anyhow!("timed out connecting to {url}"))?
            .with_context(|| format!("database {name:?} does not exist and cannot be created"))?;
            tracing::info!(database = %name, "Created the database.");
            Ok(())
        }
        Ok(Err(e)) if store::is_connection_error(&e) => Err(anyhow::Error::new(Unreachable(format!(
            "cannot connect to {url}: {e}; is Postgres running? (set DATABASE_URL or database.url)"
        )))),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("cannot connect to {url}"))),
        Err(_) => Err(anyhow::Error::new(Unreachable(format!(
            "timed out after {:?} connecting to {url}; is Postgres running? (set DATABASE_URL or database.url)",
            db.connect_timeout
        )))),
    }
}

/// Drops the database `db` points at, closing its connections first. `Ok(false)` when it did
/// not exist. Used by `quickstart --reset` on the demo database only.
pub async fn drop_database(db: &DatabaseSettings) -> anyhow::Result<bool> {
    let url = db.redacted_url();
    let options: PgConnectOptions = db
        .url
        .expose_secret()
        .parse()
        .context("config key `database.url` is not a valid Postgres URL")?;
    let name = options
        .get_database()
        .context("the database URL names no database")?
        .to_owned();
    tokio::time::timeout(
        db.connect_timeout,
        store::drop_database(db.url.expose_secret()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out connecting to {url}"))?
    .with_context(|| format!("cannot drop database {name:?}"))
}

/// The provider client for `p` at `base_url` with `credentials`.
pub fn client(
    p: &ProviderSettings,
    base_url: url::Url,
    credentials: Credentials,
) -> anyhow::Result<ProviderClient> {
    let options = ClientOptions {
        base_url,
        connect_timeout: p.connect_timeout,
        request_timeout: p.request_timeout,
        user_agent: p.user_agent.clone(),
        max_body_bytes: p.max_body_bytes,
    };
    ProviderClient::new(p.name, credentials, &options).map_err(|e| fatal(exit::CONFIG, e))
}

/// Credentials for `kind`, or an error that says which variables to set.
pub fn credentials(kind: ProviderKind) -> anyhow::Result<Credentials> {
    match Credentials::from_env(kind) {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(fatal(
            exit::CREDENTIALS,
            format!(
                "no credentials for provider {kind}: set {} in the environment (or run `soundtrend quickstart` to try soundtrend without them)",
                kind.credential_env_vars().join(" and ")
            ),
        )),
        Err(m) => Err(fatal(exit::CREDENTIALS, m)),
    }
}

#[must_use]
pub fn quota_params(p: &ProviderSettings) -> QuotaParams {
    QuotaParams {
        provider: p.name,
        emission_interval: Duration::from_secs_f64(1.0 / p.requests_per_second),
        burst: p.burst.get(),
        credits_per_request: p.credits(),
        daily_budget: p.daily_budget(),
    }
}

/// Every provider in force, in order, with its client (credentials from the environment): a
/// provider without credentials is an error naming the variables to set.
pub fn lanes(settings: &Settings) -> anyhow::Result<Vec<LaneSpec>> {
    settings
        .provider_lanes()
        .iter()
        .map(|p| {
            let client = client(p, p.endpoint(), credentials(p.name)?)?;
            Ok(LaneSpec {
                client,
                quota: quota_params(p),
                opts: PollOptions::for_provider(settings, p),
            })
        })
        .collect()
}

/// The poller over `lanes`, with each provider's shared quota row in place.
pub async fn poller(
    pool: PgPool,
    lanes: Vec<LaneSpec>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<Poller>> {
    for lane in &lanes {
        store::quota::ensure_provider(&pool, lane.client.kind())
            .await
            .context("cannot prepare the provider quota row")?;
    }
    Ok(Arc::new(Poller::with_lanes(pool, lanes, clock)))
}

/// Claims one entry for an ad-hoc poll (`soundtrend poll --clip-id`, quickstart) as the worker
/// `opts` describes (its owner name, suffixed with `purpose`, and its lease). A pair that is not
/// on the watchlist is polled all the same, without a lease or watchlist bookkeeping; a pair
/// another worker is polling right now is an error.
pub async fn claim_for_one_poll(
    opts: &WorkerOptions,
    pool: &PgPool,
    purpose: &str,
    clip_id: &crate::domain::ClipId,
    region: &crate::domain::Region,
) -> anyhow::Result<crate::store::watchlist::Claimed> {
    use crate::store::watchlist;
    let owner = format!("{}-{purpose}", opts.owner);
    match watchlist::claim_one(
        pool,
        &owner,
        clip_id.as_str(),
        region.as_str(),
        opts.lease_ttl,
    )
    .await?
    {
        Ok(Some(entry)) => Ok(entry),
        Ok(None) => Ok(watchlist::Claimed {
            clip_id: clip_id.clone(),
            region: region.clone(),
            period: None,
            poll_interval_secs: 0.0,
            last_success_at: None,
            consecutive_failures: 0,
            lease_token: None,
            provider: None,
        }),
        Err(holder) => Err(fatal(
            exit::RUNTIME,
            format!("{clip_id}/{region} is being polled by {holder} right now; try again shortly"),
        )),
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM, so commands drain and release their leases.
pub fn spawn_signal_handler(token: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("Received a shutdown signal.");
        token.cancel();
    });
}
