//! Replay: `soundtrend replay` (the library function the command runs) over an archive of N
//! fetches, against `COPY` of the very rows it wrote into the same tables and indexes.
//!
//! The archive: N / `fetches_per_pair` pairs, each polled daily for `fetches_per_pair` days with a
//! 7-day window (both dialects), loaded into `fetches` by COPY (setup, not timed). Then:
//! 1. replay into empty derived tables (what a rebuild after `TRUNCATE` does);
//! 2. replay again over them, unchanged (a replay after an index change, or a repeated one): it
//!    compares and keeps;
//! 3. replay over rows that all differ (what a replay after a normalizer change meets): every
//!    stored row aged first, untimed, so it rewrites them all;
//! 4. the COPY limit: every derived row replay wrote, copied out and loaded by `COPY` into a
//!    fresh database holding the same fetches, one transaction.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use soundtrend::cli::replay::{replay, ReplayFilter, ReplaySummary};
use soundtrend::provider::ProviderKind;
use sqlx::PgPool;

use crate::common::{esc, postgres_cpu_s, proc_stats};

pub struct ReplayArgs {
    pub fetches: Vec<usize>,
    pub fetches_per_pair: usize,
    pub batch: i64,
}

/// Every table replay writes, in an order `COPY` can load them (parents first).
const DERIVED: [&str; 9] = [
    "sounds",
    "sound_snapshots",
    "trend_points",
    "trend_windows",
    "trend_observations",
    "audience_country_lists",
    "audience_interest_lists",
    "trend_index",
    "trend_pairs",
];

pub async fn run(args: &ReplayArgs) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "## Replay ({} fetches per pair, period 7, batch {})\n",
        args.fetches_per_pair, args.batch
    )?;
    writeln!(out, "| fetches | run | wall (rows + index pass) | fetches/s | rows/s | pairs re-stitched | bench CPU s | postgres CPU s | COPY rows/s | ratio to COPY |")?;
    writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for &n in &args.fetches {
        let db = crate::common::database("replay").await?;
        archive(&db.pool, n, args.fetches_per_pair).await?;
        let mut runs = Vec::new();
        for run in [
            "into empty tables",
            "over its own rows",
            "over rows that all differ",
        ] {
            if run == "over rows that all differ" {
                age_rows(&db.pool).await?;
            }
            let (summary, wall, cpu, db_cpu) = timed(&db.pool, args.batch).await?;
            runs.push((run, summary, wall, cpu, db_cpu));
        }
        let rows = derived_rows(&db.pool).await?;
        let (copy_rows, copy_wall) = copy_limit(&db.pool).await?;
        anyhow::ensure!(
            copy_rows == rows,
            "COPY loaded {copy_rows} rows, replay wrote {rows}"
        );
        let copy_rate = copy_rows as f64 / copy_wall.as_secs_f64();
        for (run, summary, wall, cpu, db_cpu) in runs {
            let rate = rows as f64 / wall.as_secs_f64();
            writeln!(
                out,
                "| {n} | {run} | {:.1} s ({:.1} + {:.1}) | {:.0} | {rate:.0} | {} | {cpu:.1} | {db_cpu:.1} | {copy_rate:.0} | **{:.2}** |",
                wall.as_secs_f64(),
                summary.rows_pass.as_secs_f64(),
                summary.index_pass.as_secs_f64(),
                summary.fetches as f64 / wall.as_secs_f64(),
                summary.pairs,
                rate / copy_rate,
            )?;
            eprintln!(
                "replay N={n} {run}: {rate:.0} rows/s, COPY {copy_rate:.0} rows/s ({:.2})",
                rate / copy_rate
            );
        }
        db.drop_now().await?;
    }
    writeln!(
        out,
        "\nRows count every derived table replay writes (sounds, sound_snapshots, trend_points, \
         trend_windows, trend_observations, audience_country_lists, audience_interest_lists, \
         trend_index, trend_pairs): the same rows COPY loads, in one transaction, into a fresh database with the \
         same fetches, schema, indexes and foreign keys. Replay's figure includes reading and \
         parsing the archived bodies, normalizing and re-stitching every pair."
    )?;
    Ok(out)
}

/// Makes every stored row differ from what replay derives, as if an older normalizer had written
/// them (a value in each snapshot, window, observation, daily point and sound), then vacuums, as
/// autovacuum would have since: replay has to rewrite every row. Not timed.
async fn age_rows(pool: &PgPool) -> anyhow::Result<()> {
    for sql in [
        "UPDATE sound_snapshots SET rank = coalesce(rank, 0) + 1",
        "UPDATE trend_windows SET vals[1] = vals[1] / 2",
        "UPDATE trend_observations SET value = value / 2",
        "UPDATE trend_points SET value = value / 2",
        "UPDATE sounds SET title = coalesce(title, '') || ' (old)'",
        "VACUUM ANALYZE sound_snapshots, trend_windows, trend_observations, trend_points, sounds",
    ] {
        sqlx::query(sql).execute(pool).await?;
    }
    Ok(())
}

async fn timed(pool: &PgPool, batch: i64) -> anyhow::Result<(ReplaySummary, Duration, f64, f64)> {
    let cpu0 = proc_stats(std::process::id()).cpu_s;
    let db0 = postgres_cpu_s();
    let started = Instant::now();
    let summary = replay(pool, &ReplayFilter::default(), batch, false).await?;
    let wall = started.elapsed();
    anyhow::ensure!(summary.skipped == 0, "replay skipped {}", summary.skipped);
    Ok((
        summary,
        wall,
        proc_stats(std::process::id()).cpu_s - cpu0,
        postgres_cpu_s() - db0,
    ))
}

/// N archived answers: pair p polled on days 0..per, each a 7-day window ending that day.
async fn archive(pool: &PgPool, n: usize, per: usize) -> anyhow::Result<()> {
    let first = Utc::now().date_naive() - chrono::Duration::days(per as i64 + 1);
    let mut data = String::new();
    for i in 0..n {
        let (pair, day) = (i / per, i % per);
        let clip = format!("{}", 7_100_000_000_000_000_000u64 + pair as u64);
        let region = ["US", "GB", "DE", "FR", "BR", "JP", "KR", "MX"][pair % 8];
        let kind = if pair % 2 == 0 {
            ProviderKind::KeyApi
        } else {
            ProviderKind::EchoTik
        };
        let last: NaiveDate = first + chrono::Duration::days(day as i64);
        let body = soundtrend::provider::fake::response(kind, &clip, region, 7, last);
        let at = last.and_hms_opt(12, 0, 0).expect("noon").and_utc();
        let _ = writeln!(
            data,
            "{clip}\t{region}\t7\t{}\t{}\t120\t200\tok\t1\t2\t{}",
            kind.as_str(),
            at.to_rfc3339(),
            esc(&body.to_string())
        );
    }
    // Fetch ids in (day, pair) order would be the live order; (pair, day) is as good for replay,
    // which reads in id order and re-stitches each pair once.
    let mut conn = pool.acquire().await?;
    let mut copy = conn
        .copy_in_raw(
            "COPY fetches (clip_id, region, period, provider, requested_at, duration_ms, \
             http_status, outcome, attempt, credits, body_json) FROM STDIN",
        )
        .await?;
    copy.send(data.as_bytes()).await?;
    copy.finish().await?;
    sqlx::query("ANALYZE fetches").execute(&mut *conn).await?;
    Ok(())
}

async fn derived_rows(pool: &PgPool) -> anyhow::Result<i64> {
    let mut rows = 0;
    for table in DERIVED {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(pool)
                .await?;
        rows += n;
    }
    Ok(rows)
}

/// Copies every derived row out of `from` (not timed) and loads it by COPY into a fresh database
/// that already holds the same fetches; returns (rows, time of the load).
async fn copy_limit(from: &PgPool) -> anyhow::Result<(i64, Duration)> {
    let to = crate::common::database("replay_copy").await?;
    let mut src = from.acquire().await?;
    let mut dst = to.pool.acquire().await?;
    let out = |table: &str| format!("COPY (SELECT * FROM {table}) TO STDOUT (FORMAT binary)");
    let into = |table: &str| format!("COPY {table} FROM STDIN (FORMAT binary)");
    let fetches = copy_out(&mut src, &out("fetches")).await?;
    // `fetches.id` is GENERATED ALWAYS: the load keeps the ids (the derived rows point at them).
    sqlx::query("ALTER TABLE fetches ALTER COLUMN id SET GENERATED BY DEFAULT")
        .execute(&mut *dst)
        .await?;
    let mut copy = dst.copy_in_raw(&into("fetches")).await?;
    copy.send(fetches.as_slice()).await?;
    copy.finish().await?;
    let mut tables = Vec::new();
    for table in DERIVED {
        tables.push((table, copy_out(&mut src, &out(table)).await?));
    }
    drop(src);

    let started = Instant::now();
    let mut tx = sqlx::Connection::begin(&mut *dst).await?;
    let mut rows = 0;
    for (table, data) in &tables {
        let mut copy = tx.copy_in_raw(&into(table)).await?;
        copy.send(data.as_slice()).await?;
        rows += copy.finish().await?;
    }
    tx.commit().await?;
    let elapsed = started.elapsed();
    drop(dst);
    to.drop_now().await?;
    Ok((i64::try_from(rows)?, elapsed))
}

async fn copy_out(conn: &mut sqlx::PgConnection, statement: &str) -> anyhow::Result<Vec<u8>> {
    use futures_util::TryStreamExt;
    let mut stream = conn.copy_out_raw(statement).await?;
    let mut buf = Vec::new();
    while let Some(chunk) = stream.try_next().await? {
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}
