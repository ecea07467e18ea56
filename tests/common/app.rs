//! [`TestApp`]: what every integration test starts from, in the spirit of zero-to-production's
//! `spawn_app`: a database of its own and a fake provider of its own, and typed questions about
//! what the daemon wrote (the SQL stays here, the tests say what they mean).

use std::time::Duration;

use sqlx::PgPool;

use soundtrend::config::Settings;
use soundtrend::provider::fake::FakeProvider;
use soundtrend::testkit::FreshDatabase;

/// The Postgres image used when no `DATABASE_URL` is given (pinned for reproducibility).
const POSTGRES_IMAGE: (&str, &str) = ("postgres", "16.4-alpine");

/// A fresh, migrated database (dropped when the test ends, even when it panics) and a lenient
/// fake provider that records every request.
pub struct TestApp {
    pub pool: PgPool,
    /// The test database's URL.
    pub url: String,
    /// Both dialects, any clip; see `soundtrend::provider::fake`.
    pub provider: FakeProvider,
    _db: FreshDatabase,
}

impl TestApp {
    pub async fn spawn() -> Self {
        let server = server_url().await;
        let db = FreshDatabase::create(&server, "soundtrend_test")
            .await
            .unwrap_or_else(|e| panic!("no test database on {server}: {e:#}"));
        let provider = FakeProvider::start()
            .await
            .expect("the fake provider starts");
        TestApp {
            pool: db.pool.clone(),
            url: db.url.clone(),
            provider,
            _db: db,
        }
    }

    /// Settings tuned for tests against this app's database (see [`super::settings`]).
    pub fn settings(&self) -> Settings {
        super::settings(&self.url)
    }

    /// One number from `sql`: for questions no typed helper below asks.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// [`Self::count`] with `$1` bound to `d` in seconds.
    async fn count_beyond(&self, sql: &'static str, d: Duration) -> i64 {
        sqlx::query_scalar(sql)
            .bind(d.as_secs_f64())
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn watch(&self, clip: &str, region: &str) {
        sqlx::query("INSERT INTO watchlist (clip_id, region) VALUES ($1, $2)")
            .bind(clip)
            .bind(region)
            .execute(&self.pool)
            .await
            .expect("insert watchlist row");
    }

    /// Watches `n` distinct entries (clip ids 1001.., region US).
    pub async fn watch_many(&self, n: usize) {
        sqlx::query("INSERT INTO watchlist (clip_id, region) SELECT (1000 + g)::text, 'US' FROM generate_series(1, $1) g")
            .bind(n as i32)
            .execute(&self.pool)
            .await
            .expect("insert watchlist rows");
    }

    /// Entries on the watchlist.
    pub async fn watched(&self) -> i64 {
        self.count("SELECT count(*) FROM watchlist").await
    }

    /// Entries polled successfully at least once.
    pub async fn polled_entries(&self) -> i64 {
        self.count("SELECT count(*) FROM watchlist WHERE last_success_at IS NOT NULL")
            .await
    }

    /// Entries whose lease is held (expired or not).
    pub async fn leases_held(&self) -> i64 {
        self.count("SELECT count(*) FROM watchlist WHERE lease_token IS NOT NULL")
            .await
    }

    /// Entries nobody holds that are due now.
    pub async fn idle_due_entries(&self) -> i64 {
        self.count(
            "SELECT count(*) FROM watchlist WHERE lease_token IS NULL AND next_due_at <= now()",
        )
        .await
    }

    /// Entries nobody holds that are not due again until more than `after` from now.
    pub async fn idle_entries_due_after(&self, after: Duration) -> i64 {
        self.count_beyond(
            "SELECT count(*) FROM watchlist
             WHERE lease_token IS NULL AND next_due_at > now() + make_interval(secs => $1)",
            after,
        )
        .await
    }

    /// Entries nobody holds that were polled successfully at least once.
    pub async fn idle_polled_entries(&self) -> i64 {
        self.count(
            "SELECT count(*) FROM watchlist WHERE lease_token IS NULL AND last_success_at IS NOT NULL",
        )
        .await
    }

    /// Entries enabled (polled on schedule).
    pub async fn enabled_entries(&self) -> i64 {
        self.count("SELECT count(*) FROM watchlist WHERE enabled")
            .await
    }

    /// Entries disabled (paused by hand, or the clip does not exist).
    pub async fn disabled_entries(&self) -> i64 {
        self.count("SELECT count(*) FROM watchlist WHERE NOT enabled")
            .await
    }

    /// Providers whose shared pause (a 429's Retry-After) lasts more than `beyond` from now.
    pub async fn providers_paused_beyond(&self, beyond: Duration) -> i64 {
        self.count_beyond(
            "SELECT count(*) FROM provider_quota
             WHERE paused_until > now() + make_interval(secs => $1)",
            beyond,
        )
        .await
    }

    /// Whether every lease on the watchlist has expired (true when none is held).
    pub async fn all_leases_expired(&self) -> bool {
        self.count(
            "SELECT count(*) FROM watchlist WHERE lease_token IS NOT NULL AND lease_expires_at > now()",
        )
        .await
            == 0
    }

    /// Whether some session on this database is waiting on `LISTEN` (the daemon's wake-up).
    pub async fn has_listener(&self) -> bool {
        self.count(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN %'",
        )
        .await
            > 0
    }

    /// Attempts archived in `fetches`, whatever their outcome.
    pub async fn fetches(&self) -> i64 {
        self.count("SELECT count(*) FROM fetches").await
    }

    /// Attempts archived with `outcome` (`ok`, `rate_limited`, `invalid_payload`, ...).
    pub async fn fetches_with_outcome(&self, outcome: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM fetches WHERE outcome = $1")
            .bind(outcome)
            .fetch_one(&self.pool)
            .await
            .expect("count fetches by outcome")
    }

    /// Rows in `sound_snapshots`.
    pub async fn snapshots(&self) -> i64 {
        self.count("SELECT count(*) FROM sound_snapshots").await
    }

    /// Rows in `sound_snapshots` for `region`.
    pub async fn snapshots_in(&self, region: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM sound_snapshots WHERE region = $1")
            .bind(region)
            .fetch_one(&self.pool)
            .await
            .expect("count snapshots by region")
    }

    /// Rows in `trend_points`.
    pub async fn trend_points(&self) -> i64 {
        self.count("SELECT count(*) FROM trend_points").await
    }

    /// Rows in `trend_observations`, every partition.
    pub async fn observations(&self) -> i64 {
        self.count("SELECT count(*) FROM trend_observations").await
    }

    /// Rows in `trend_observations`' default partition (days no monthly partition covers).
    pub async fn observations_in_default_partition(&self) -> i64 {
        self.count("SELECT count(*) FROM trend_observations_default")
            .await
    }

    /// Rows in `audience_countries`.
    pub async fn audience_countries(&self) -> i64 {
        self.count("SELECT count(*) FROM audience_countries").await
    }

    /// Rows in the data tables (everything but fetches and watchlist).
    pub async fn data_rows(&self) -> i64 {
        self.count(
            "SELECT (SELECT count(*) FROM sounds) + (SELECT count(*) FROM sound_snapshots)
                  + (SELECT count(*) FROM trend_points) + (SELECT count(*) FROM audience_countries)
                  + (SELECT count(*) FROM audience_interests)",
        )
        .await
    }

    /// Credits booked in the ledger, all days together.
    pub async fn credits_booked(&self) -> i64 {
        self.count("SELECT COALESCE(sum(credits_used), 0) FROM credit_usage")
            .await
    }

    /// Every credit booked has its archived attempt: sum(fetches.credits) equals the ledger.
    pub async fn assert_ledger_equals_archive(&self) {
        let archived = self
            .count("SELECT COALESCE(sum(credits), 0) FROM fetches")
            .await;
        let booked = self.credits_booked().await;
        assert_eq!(
            archived, booked,
            "sum(fetches.credits) equals the credit ledger"
        );
    }
}

/// `DATABASE_URL` when set, else a Postgres started with testcontainers, else a panic that says how
/// to provide one.
async fn server_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        if !url.is_empty() {
            return url;
        }
    }
    container_url().await
}

async fn container_url() -> String {
    use testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{ContainerAsync, GenericImage, ImageExt};
    use tokio::sync::OnceCell;

    // One container per test binary; every test still gets its own database inside it.
    static CONTAINER: OnceCell<Result<(ContainerAsync<GenericImage>, String), String>> =
        OnceCell::const_new();
    let started = CONTAINER
        .get_or_init(|| async {
            let image = GenericImage::new(POSTGRES_IMAGE.0, POSTGRES_IMAGE.1)
                .with_exposed_port(5432.tcp())
                .with_wait_for(WaitFor::message_on_stderr(
                    "database system is ready to accept connections",
                ))
                .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust");
            match tokio::time::timeout(Duration::from_mins(2), image.start()).await {
                Ok(Ok(c)) => {
                    let port = c
                        .get_host_port_ipv4(5432)
                        .await
                        .map_err(|e| e.to_string())?;
                    // The image logs "ready" once before its init restart; wait for the real one.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok((c, format!("postgres://postgres@127.0.0.1:{port}/postgres")))
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out after 120 s starting the container".into()),
            }
        })
        .await;
    match started {
        Ok((_, url)) => url.clone(),
        Err(e) => panic!(
            "no test database: DATABASE_URL is not set and Postgres could not be started with testcontainers ({e}). \
             Set DATABASE_URL to a Postgres server this test may create databases on \
             (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres), run scripts/test.sh \
             (starts a local cluster), or start Docker."
        ),
    }
}
