//! Shared benchmark plumbing: throwaway databases, a fast local provider, process statistics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use soundtrend::provider::ProviderKind;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

/// The Postgres server benchmarks create their databases on: DATABASE_URL or the local default.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn with_database(server: &str, db: &str) -> String {
    let mut url = url::Url::parse(server).expect("DATABASE_URL is a URL");
    url.set_path(&format!("/{db}"));
    url.to_string()
}

/// A fresh, migrated database, dropped by [`BenchDb::drop_now`].
pub struct BenchDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

impl BenchDb {
    pub async fn create(tag: &str) -> anyhow::Result<Self> {
        let server = server_url();
        let name = format!("soundtrend_bench_{tag}_{}", std::process::id());
        let mut admin = PgConnection::connect(&with_database(&server, "postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        let url = with_database(&server, &name);
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .connect(&url)
            .await?;
        soundtrend::store::migrate(&pool).await?;
        Ok(Self { pool, url, name })
    }

    pub async fn drop_now(self) -> anyhow::Result<()> {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&with_database(&server_url(), "postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

/// What the fast provider does besides answering.
#[derive(Default)]
pub struct ServerControl {
    /// Arrival time of every request.
    pub arrivals: Mutex<Vec<Instant>>,
    /// While set and in the future, answer 429 with this Retry-After (seconds); the times the
    /// 429s were sent are kept in `throttled`.
    pub throttle_until: Mutex<Option<(Instant, u64)>>,
    pub throttled: Mutex<Vec<Instant>>,
}

/// A local provider answering both dialects from pre-generated bodies (by clip_id), or from the
/// demo generator for clips it has no body for. Serialisation is done before timing starts.
#[derive(Clone)]
pub struct FastServer {
    pub base: String,
    pub control: Arc<ServerControl>,
}

type Bodies = Arc<HashMap<String, Bytes>>;

impl FastServer {
    pub async fn start(bodies: HashMap<String, Bytes>) -> anyhow::Result<Self> {
        let control = Arc::new(ServerControl::default());
        let state = (Arc::new(bodies) as Bodies, control.clone());
        let app = Router::new()
            .route(
                ProviderKind::KeyApi.path(),
                get(|s, q| answer(ProviderKind::KeyApi, s, q)),
            )
            .route(
                ProviderKind::EchoTik.path(),
                get(|s, q| answer(ProviderKind::EchoTik, s, q)),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base: format!("http://{addr}/"),
            control,
        })
    }
}

async fn answer(
    kind: ProviderKind,
    State((bodies, control)): State<(Bodies, Arc<ServerControl>)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let now = Instant::now();
    control.arrivals.lock().expect("lock").push(now);
    if let Some((until, retry_after)) = *control.throttle_until.lock().expect("lock") {
        if now < until {
            control.throttled.lock().expect("lock").push(now);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after.to_string())],
                "slow down",
            )
                .into_response();
        }
    }
    let clip = q.get("clip_id").map(String::as_str).unwrap_or_default();
    let body = match bodies.get(clip) {
        Some(b) => b.clone(),
        None => {
            let region = q.get("region").map(String::as_str).unwrap_or("US");
            let period: i64 = q.get("period").and_then(|p| p.parse().ok()).unwrap_or(7);
            let day = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
            Bytes::from(
                soundtrend::cli::demo::response(kind, clip, region, period, day).to_string(),
            )
        }
    };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// CPU seconds (user + system) and peak RSS (KiB) of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

pub fn proc_stats(pid: u32) -> ProcStats {
    let ticks = 100.0; // USER_HZ on Linux
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let cpu = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    ProcStats {
        // utime and stime are fields 14 and 15 (1-based) of stat, i.e. 11 and 12 after the name.
        cpu_s: (cpu(11) + cpu(12)) / ticks,
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
    }
}

/// CPU seconds used so far by every `postgres` process on the machine (the database's share).
pub fn postgres_cpu_s() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "postgres")
                .unwrap_or(false)
        })
        .map(|pid| proc_stats(pid).cpu_s)
        .sum()
}

/// The p-th percentile (0..=100) of `values`, nearest rank.
pub fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil().max(1.0) as usize;
    values[rank.min(values.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The most arrivals within any `window` (sliding, anchored at each arrival).
pub fn max_in_window(times: &[Instant], window: Duration) -> usize {
    let mut t = times.to_vec();
    t.sort_unstable();
    let (mut best, mut start) = (0, 0);
    for end in 0..t.len() {
        while t[end].duration_since(t[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// The `soundtrend` binary built next to this benchmark.
pub fn soundtrend_binary() -> anyhow::Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("soundtrend");
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build both binaries first (cargo build --release --bins)",
        bin.display()
    );
    Ok(bin)
}
