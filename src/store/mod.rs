//! Everything that speaks SQL. Each file owns one group of tables; the rest of the crate calls
//! typed functions and never writes SQL of its own.

pub mod archive;
pub mod bulk;
pub mod failure;
pub mod fetches;
pub mod group;
pub mod health;
pub mod ingest;
pub mod pages;
pub mod quota;
pub mod rebuild;
pub mod report;
pub mod slots;
pub mod sound;
pub mod trend;
mod types;
pub mod watchlist;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::DatabaseSettings;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// True when the database itself is unreachable (as opposed to a query being refused).
    #[must_use]
    pub fn is_connection_error(&self) -> bool {
        match self {
            StoreError::Database(e) => is_connection_error(e),
        }
    }

    /// True when running the same work again may succeed: the database is unreachable, or it
    /// rolled the whole transaction back for a deadlock (40P01) or a serialization failure
    /// (40001), as when a quota block and a lone take meet on a lease that changed hands.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(e) => is_connection_error(e) || is_rolled_back_to_retry(e),
        }
    }
}

/// True when Postgres rolled the whole transaction back for a deadlock (40P01) or a
/// serialization failure (40001): nothing of it stayed, and running it again may succeed.
#[must_use]
pub fn is_rolled_back_to_retry(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .is_some_and(|c| c == "40P01" || c == "40001")
}

#[must_use]
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        // 57P01 admin_shutdown (pg_terminate_backend, restart), 57P02/57P03, 08xxx connection.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// A pool that does not block start-up when the database is down: connections are made lazily
/// and every acquire waits at most `connect_timeout`.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.url.expose_secret().parse()?;
    let options = options.application_name("soundtrend");
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.connect_timeout)
        .idle_timeout(Some(Duration::from_mins(5)))
        .connect_lazy_with(options))
}

/// One round trip to the database (the readiness probe).
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT 1 AS one").fetch_one(pool).await?;
    Ok(())
}

/// Creates the database `url` names (connecting to the server's maintenance database).
pub async fn create_database(url: &str) -> Result<(), sqlx::Error> {
    sqlx::Postgres::create_database(url).await
}

/// Drops the database `url` names, closing its connections first. `Ok(false)` when it did not
/// exist.
pub async fn drop_database(url: &str) -> Result<bool, sqlx::Error> {
    if !sqlx::Postgres::database_exists(url).await? {
        return Ok(false);
    }
    sqlx::Postgres::force_drop_database(url).await?;
    Ok(true)
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
