//! Watchlist scale: claim and bookkeeping latency with up to 10⁶ entries, the claim's plan, and
//! the RSS of a real `soundtrend run` against such a watchlist.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use soundtrend::provider::ProviderKind;
use soundtrend::store::watchlist;

use crate::common::{ms, percentile, proc_stats, soundtrend_binary, FakeProvider, FreshDatabase};

pub struct ScaleArgs {
    pub sizes: Vec<usize>,
    pub daemon_seconds: u64,
}

const ROUNDS: usize = 200;
/// The claim as a worker configured with both providers, both usable, runs it.
const BOTH: [ProviderKind; 2] = [ProviderKind::KeyApi, ProviderKind::EchoTik];

pub async fn run(args: &ScaleArgs) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut plans = String::new();
    writeln!(out, "## Watchlist scale\n")?;
    writeln!(out, "| entries | claim 100: median | claim 100: p99 | lease release: median | p99 | failure write + bookkeeping: median | p99 | daemon peak RSS | daemon RSS at end |")?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for &n in &args.sizes {
        let db = crate::common::database("scale").await?;
        // Due times spread over ±1 day: about half the entries are due.
        sqlx::query(
            "INSERT INTO watchlist (clip_id, region, period, next_due_at)
             SELECT (10000000 + g)::text, (ARRAY['US','GB','DE','FR','BR','JP'])[1 + g % 6], 7,
                    now() + (random() * 2 - 1) * interval '1 day'
             FROM generate_series(1, $1) g",
        )
        .bind(n as i64)
        .execute(&db.pool)
        .await?;
        sqlx::query("VACUUM ANALYZE watchlist")
            .execute(&db.pool)
            .await?;

        let (mut claims, mut releases, mut writes) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let t = Instant::now();
            let claimed =
                watchlist::claim_due(&db.pool, "bench", 100, Duration::from_mins(5), &BOTH).await?;
            claims.push(t.elapsed());
            for (i, c) in claimed.iter().enumerate() {
                let token = c.lease_token.expect("claimed entries have a lease");
                if i == 0 && round % 2 == 0 {
                    let t = Instant::now();
                    failure_write(&db.pool, c, token).await?;
                    writes.push(t.elapsed());
                } else if i < 5 {
                    let t = Instant::now();
                    watchlist::release(
                        &db.pool,
                        c.clip_id.as_str(),
                        c.region.as_str(),
                        token,
                        None,
                    )
                    .await?;
                    releases.push(t.elapsed());
                }
            }
            // Put the rest back as they were: due.
            watchlist::release_owner(&db.pool, "bench").await?;
        }

        if n == *args.sizes.iter().max().unwrap_or(&n) {
            let mut tx = db.pool.begin().await?;
            let explain = format!("EXPLAIN (ANALYZE, BUFFERS) {}", watchlist::CLAIM_DUE_SQL);
            let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
                .bind(100i64)
                .bind("bench")
                .bind(300.0f64)
                .bind(BOTH.map(ProviderKind::as_str).to_vec())
                .fetch_all(&mut *tx)
                .await?;
            tx.rollback().await?;
            let plan = lines.join("\n");
            let seq = if plan.contains("Seq Scan on watchlist") {
                "**uses a sequential scan**"
            } else {
                "index scan, no sequential scan"
            };
            writeln!(
                plans,
                "\nClaim plan at {n} entries ({seq}):\n\n```\n{plan}\n```"
            )?;
        }

        let (peak, end) = daemon_rss(&db, args.daemon_seconds).await?;
        writeln!(
            out,
            "| {n} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} MiB | {:.1} MiB |",
            ms(percentile(&mut claims, 50.0)),
            ms(percentile(&mut claims, 99.0)),
            ms(percentile(&mut releases, 50.0)),
            ms(percentile(&mut releases, 99.0)),
            ms(percentile(&mut writes, 50.0)),
            ms(percentile(&mut writes, 99.0)),
            peak as f64 / 1024.0,
            end as f64 / 1024.0,
        )?;
        eprintln!(
            "scale N={n}: claim median {:.2} ms",
            ms(percentile(&mut claims, 50.0))
        );
        db.drop_now().await?;
    }
    writeln!(out, "\n{ROUNDS} rounds per size; each round claims 100 due entries (the worker's statement), then releases them.")?;
    writeln!(out, "The daemon ran `soundtrend run` for {} s against the watchlist and a local provider at 200 requests/s.", args.daemon_seconds)?;
    out.push_str(&plans);
    Ok(out)
}

/// The failure path's write: the fetch row plus the fenced bookkeeping update, one statement.
async fn failure_write(
    pool: &sqlx::PgPool,
    c: &watchlist::Claimed,
    token: uuid::Uuid,
) -> anyhow::Result<()> {
    use soundtrend::provider::{Outcome, ProviderKind};
    use soundtrend::store::failure::{record_failure, FailureBookkeeping};
    use soundtrend::store::fetches::FetchRecord;
    let record = FetchRecord {
        duration_ms: 5,
        http_status: Some(503),
        error: Some("unexpected HTTP 503 from the provider".into()),
        credits: 2,
        ..FetchRecord::new(
            c.clip_id.as_str(),
            c.region.as_str(),
            7,
            ProviderKind::KeyApi,
            chrono::Utc::now(),
            Outcome::HttpError,
        )
    };
    let book = FailureBookkeeping {
        failure_backoff: Duration::from_mins(1),
        not_before: Duration::ZERO,
        not_found: false,
        disable_after_not_found: 3,
    };
    record_failure(pool, &record, Some(token), &book).await?;
    Ok(())
}

/// Runs the real daemon against the watchlist for `seconds`; returns (peak, final) RSS in KiB.
async fn daemon_rss(db: &FreshDatabase, seconds: u64) -> anyhow::Result<(u64, u64)> {
    let server = FakeProvider::start().await?;
    let mut child = Command::new(soundtrend_binary()?)
        .env_remove("KEYAPI_API_KEY")
        .env("KEYAPI_API_KEY", "bench-key")
        .env("DATABASE_URL", &db.url)
        .env("SOUNDTREND__PROVIDER__BASE_URL", &server.base)
        .env("SOUNDTREND__PROVIDER__REQUESTS_PER_SECOND", "200")
        .env("SOUNDTREND__PROVIDER__BURST", "10")
        .env("SOUNDTREND__POLL__CONCURRENCY", "8")
        .env("SOUNDTREND__ADMIN__LISTEN", "")
        .env("SOUNDTREND__DAEMON__TICK_CRON", "* * * * * *")
        .env("RUST_LOG", "warn")
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut last = proc_stats(pid);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        last = proc_stats(pid);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let stop = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > stop {
            let _ = child.kill();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.wait();
    Ok((last.peak_rss_kib, last.rss_kib))
}
