//! Throwaway databases for the integration tests and the benchmarks: a fresh, migrated database
//! on a given Postgres server, dropped when it is no longer needed (even after a panic).
//!
//! Choosing the server is the caller's business: the tests fall back to testcontainers, the
//! benchmarks to a local default. Test-only dependencies stay out of the library.

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

/// How long to wait for the server before saying it is not there, rather than hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A migrated database of its own, dropped by [`FreshDatabase::drop_now`] or, failing that, when
/// the value is dropped.
pub struct FreshDatabase {
    pub pool: PgPool,
    /// The URL of this database (the server's URL with the database name as its path).
    pub url: String,
    pub name: String,
    admin_url: String,
    dropped: bool,
}

impl FreshDatabase {
    /// Creates `<prefix>_<random>` on the server at `server_url` (any database on it will do for
    /// the URL's path) and applies the migrations.
    pub async fn create(server_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let admin_url = with_database(server_url, "postgres")?;
        let mut admin = connect(&admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        let url = with_database(server_url, &name)?;
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect(&url)
            .await
            .with_context(|| format!("cannot connect to the new database {name}"))?;
        let mut db = FreshDatabase {
            pool,
            url,
            name,
            admin_url,
            dropped: false,
        };
        if let Err(e) = crate::store::migrate(&db.pool).await {
            db.dropped = true;
            let _ = drop_database(&db.admin_url, &db.name).await;
            return Err(e).context("migrations do not apply");
        }
        Ok(db)
    }

    /// Closes the pool and drops the database, reporting what went wrong.
    pub async fn drop_now(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        self.pool.close().await;
        drop_database(&self.admin_url, &self.name).await
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside async context: a short-lived runtime on its own thread cleans up.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let _ = rt.block_on(drop_database(&admin_url, &name));
        })
        .join();
    }
}

/// `server` with its database (the URL's path) replaced by `db`.
pub fn with_database(server: &str, db: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(server)
        .with_context(|| format!("the database server URL {server:?} is not a URL"))?;
    url.set_path(&format!("/{db}"));
    Ok(url.to_string())
}

async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    let shown = without_password(url);
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
        Ok(connected) => {
            connected.with_context(|| format!("cannot connect to Postgres at {shown}"))
        }
        Err(_) => anyhow::bail!(
            "cannot connect to Postgres at {shown}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ),
    }
}

/// The URL as it may be shown in a message.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "<unparseable database url>".into(),
    }
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .with_context(|| format!("cannot drop database {name}"))?;
    Ok(())
}
