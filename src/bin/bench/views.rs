//! Views: the analysts' views on a year of history (`sound_daily` for one sound, the whole
//! `sound_rising` list), and the storage `trend_observations` takes per pair per year.

use std::fmt::Write as _;
use std::time::Instant;

use crate::common::{ms, percentile, BenchDb};

pub struct ViewsArgs {
    pub pairs: i32,
    pub days: i32,
    /// Pairs whose year of daily period-7 windows is written to `trend_observations` for the
    /// storage figure.
    pub storage_pairs: i32,
}

pub async fn run(args: &ViewsArgs) -> anyhow::Result<String> {
    let db = BenchDb::create("views").await?;
    let started = Instant::now();
    load_history(&db, args.pairs, args.days).await?;
    let load = started.elapsed();

    let mut daily = Vec::new();
    for k in 0..25 {
        let clip = format!(
            "{}",
            8_000_000_000_000_000_000u64 + (k * 397 % args.pairs) as u64
        );
        let region = REGIONS[(k * 397 % args.pairs) as usize % REGIONS.len()];
        let t = Instant::now();
        let rows: Vec<(chrono::NaiveDate, f64)> = sqlx::query_as(
            "SELECT day, index_value FROM sound_daily
             WHERE clip_id = $1 AND region = $2 ORDER BY day",
        )
        .bind(&clip)
        .bind(region)
        .fetch_all(&db.pool)
        .await?;
        daily.push(t.elapsed());
        anyhow::ensure!(
            rows.len() == args.days as usize,
            "sound_daily: {} rows",
            rows.len()
        );
    }
    let mut rising = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let rows: Vec<(String, String, Option<f64>, String)> =
            sqlx::query_as("SELECT clip_id, region, growth_7d, stage FROM sound_rising")
                .fetch_all(&db.pool)
                .await?;
        rising.push(t.elapsed());
        anyhow::ensure!(
            rows.len() == args.pairs as usize,
            "sound_rising: {} rows",
            rows.len()
        );
    }
    let per_pair_year = storage_per_pair_year(&db, args.storage_pairs).await?;
    db.drop_now().await?;

    let mut out = String::new();
    writeln!(
        out,
        "## Views: {} pairs × {} days (loaded in {:.0} s)\n",
        args.pairs,
        args.days,
        load.as_secs_f64()
    )?;
    writeln!(out, "| query | p50 | max | target |\n|---|---:|---:|---:|")?;
    writeln!(
        out,
        "| one sound's `sound_daily` ({} rows) | {:.1} ms | {:.1} ms | < 20 ms |",
        args.days,
        ms(percentile(&mut daily, 0.5)),
        ms(percentile(&mut daily, 1.0))
    )?;
    writeln!(
        out,
        "| whole `sound_rising` ({} rows) | {:.0} ms | {:.0} ms | < 2000 ms |",
        args.pairs,
        ms(percentile(&mut rising, 0.5)),
        ms(percentile(&mut rising, 1.0))
    )?;
    writeln!(
        out,
        "\n`trend_observations`, daily period-7 polls for a year ({} pairs measured): **{:.0} KiB per pair per year** (heap, TOAST and indexes; 2,555 rows).",
        args.storage_pairs,
        per_pair_year / 1024.0
    )?;
    Ok(out)
}

const REGIONS: [&str; 8] = ["US", "GB", "DE", "FR", "BR", "JP", "KR", "MX"];

/// A year of daily polls per pair: fetches, snapshots, trend_points, trend_index, trend_pairs.
async fn load_history(db: &BenchDb, pairs: i32, days: i32) -> anyhow::Result<()> {
    let mut tx = db.pool.begin().await?;
    // Bulk load: foreign keys are known to hold, their triggers are skipped.
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await?;
    let common = "FROM generate_series(0, $1 - 1) p, generate_series(0, $2 - 1) d";
    let clip = "(8000000000000000000 + p)::text";
    let region = "('{US,GB,DE,FR,BR,JP,KR,MX}'::text[])[p % 8 + 1]";
    let day = "(DATE '2025-01-01' + d)";
    let id = "(p::int8 * $2 + d + 1)";
    let statements = [
        format!(
            "INSERT INTO fetches (id, clip_id, region, period, provider, requested_at, duration_ms,
                                  outcome) OVERRIDING SYSTEM VALUE
             SELECT {id}, {clip}, {region}, 7, 'keyapi',
                    ({day} + 1)::timestamp AT TIME ZONE 'UTC' + interval '12 hours', 1, 'ok' {common}"
        ),
        format!(
            "INSERT INTO sound_snapshots (fetch_id, clip_id, region, period, observed_at, rank,
                                          rank_diff, popular_days, current_popularity, trend_points)
             SELECT {id}, {clip}, {region}, 7,
                    ({day} + 1)::timestamp AT TIME ZONE 'UTC' + interval '12 hours',
                    1 + (p * 7 + d) % 500, (p + d) % 21 - 10, d, 0.5, 7 {common}"
        ),
        format!(
            "INSERT INTO trend_points (clip_id, region, ts, value, fetch_id, period, observed_at)
             SELECT {clip}, {region}, {day}::timestamp AT TIME ZONE 'UTC',
                    round((0.5 + 0.5 * sin(d / 9.0 + p))::numeric, 2), {id}, 7, now() {common}"
        ),
        format!(
            "INSERT INTO trend_index (clip_id, region, day, index_value, index_low, index_high,
                                      segment, windows, fetch_id, changed_by)
             SELECT {clip}, {region}, {day}, v, v * 0.99, v * 1.01, 1, 7, {id}, {id}
             FROM generate_series(0, $1 - 1) p, generate_series(0, $2 - 1) d,
                  LATERAL (SELECT round((50 + 49 * sin(d / 20.0 + p))::numeric, 2)::float8 AS v) v"
        ),
        format!(
            "INSERT INTO trend_pairs (clip_id, region, first_day, last_day, segments, changed_by)
             SELECT {clip}, {region}, DATE '2025-01-01', DATE '2025-01-01' + $2 - 1, 1,
                    p::int8 * $2 + $2
             FROM generate_series(0, $1 - 1) p WHERE $2 > 0"
        ),
    ];
    for sql in &statements {
        sqlx::query(sql)
            .bind(pairs)
            .bind(days)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    sqlx::query("ANALYZE").execute(&db.pool).await?;
    Ok(())
}

/// Bytes of `trend_observations` (every partition: heap, TOAST, indexes) per pair per year of
/// daily period-7 windows.
async fn storage_per_pair_year(db: &BenchDb, pairs: i32) -> anyhow::Result<f64> {
    sqlx::query("SELECT trend_observations_ensure_partitions(DATE '2024-12-01', 14)")
        .execute(&db.pool)
        .await?;
    // One window of 7 days per pair per day, from the fetch of that day.
    sqlx::query(
        "INSERT INTO trend_observations (fetch_id, clip_id, region, period, ts, value, observed_at)
         SELECT f.id, f.clip_id, f.region, 7,
                ((f.requested_at AT TIME ZONE 'UTC')::date - k)::timestamp AT TIME ZONE 'UTC',
                round(random()::numeric, 2), f.requested_at
         FROM fetches f, generate_series(1, 7) k
         WHERE f.clip_id::numeric < 8000000000000000000 + $1",
    )
    .bind(pairs)
    .execute(&db.pool)
    .await?;
    sqlx::query("VACUUM ANALYZE trend_observations")
        .execute(&db.pool)
        .await?;
    let (bytes, rows): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(pg_total_relation_size(relid))::int8
                 FROM pg_partition_tree('trend_observations')),
                (SELECT count(*) FROM trend_observations)",
    )
    .fetch_one(&db.pool)
    .await?;
    let windows_per_year = 365.0 * 7.0;
    Ok(bytes as f64 / rows.max(1) as f64 * windows_per_year)
}
