//! Views: the analysts' views on a year of history (`sound_daily` for one sound, the whole
//! `sound_rising` list), and the storage `trend_observations` takes per pair per year.

use std::fmt::Write as _;
use std::time::Instant;

use soundtrend::web::pages::{html, Filter, Overview, SoundPage};

use crate::common::{ms, percentile, FreshDatabase};

pub struct ViewsArgs {
    pub pairs: i32,
    pub days: i32,
    /// Pairs whose year of daily period-7 windows is written to `trend_observations` for the
    /// storage figure.
    pub storage_pairs: i32,
}

pub async fn run(args: &ViewsArgs) -> anyhow::Result<String> {
    let db = crate::common::database("views").await?;
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
        // Every column, so the planner cannot drop the joins behind them.
        let rows = sqlx::query(
            "SELECT * FROM sound_daily WHERE clip_id = $1 AND region = $2 ORDER BY day",
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
    // The live pages: one sound's page (data and HTML), and the overview.
    let mut sound_pages = Vec::new();
    for k in 0..25 {
        let clip = soundtrend::domain::ClipId::parse(&format!(
            "{}",
            8_000_000_000_000_000_000u64 + (k * 397 % args.pairs) as u64
        ))?;
        let t = Instant::now();
        let page = SoundPage::load(&db.pool, &clip, &Filter::default())
            .await?
            .ok_or_else(|| anyhow::anyhow!("no page for {clip}"))?;
        let html = html::sound_page(&page).into_string();
        sound_pages.push(t.elapsed());
        anyhow::ensure!(
            page.regions.iter().map(|r| r.index.len()).sum::<usize>() >= args.days as usize,
            "the page shows {} days",
            page.regions.iter().map(|r| r.index.len()).sum::<usize>()
        );
        anyhow::ensure!(html.contains("<polyline"), "no chart drawn");
    }
    let mut overview_pages = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let o = Overview::load(&db.pool, &Filter::default(), chrono::Utc::now()).await?;
        let _ = html::overview_page(&o).into_string();
        overview_pages.push(t.elapsed());
    }
    let mut rising = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let rows = sqlx::query("SELECT * FROM sound_rising")
            .fetch_all(&db.pool)
            .await?;
        rising.push(t.elapsed());
        anyhow::ensure!(
            rows.len() == args.pairs as usize,
            "sound_rising: {} rows",
            rows.len()
        );
    }
    let index_bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('trend_index')")
        .fetch_one(&db.pool)
        .await?;
    let index_per_pair_year =
        index_bytes as f64 / f64::from(args.pairs.max(1)) * 365.0 / f64::from(args.days.max(1));
    let (per_pair_year, windows_per_pair_year) =
        storage_per_pair_year(&db, args.storage_pairs).await?;
    let restitch = restitch_cost(&db, args.storage_pairs).await?;
    // BENCH_KEEP_DB=1 keeps the database for EXPLAIN ANALYZE by hand.
    if std::env::var_os("BENCH_KEEP_DB").is_none() {
        db.drop_now().await?;
    }

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
        ms(percentile(&mut daily, 50.0)),
        ms(percentile(&mut daily, 100.0))
    )?;
    writeln!(
        out,
        "| whole `sound_rising` ({} rows) | {:.0} ms | {:.0} ms | < 2000 ms |",
        args.pairs,
        ms(percentile(&mut rising, 50.0)),
        ms(percentile(&mut rising, 100.0))
    )?;
    writeln!(
        out,
        "| one sound's live page, read and rendered (`/sounds/{{clip_id}}`, {} days) | {:.1} ms | {:.1} ms | < 100 ms |",
        args.days,
        ms(percentile(&mut sound_pages, 50.0)),
        ms(percentile(&mut sound_pages, 100.0))
    )?;
    writeln!(
        out,
        "| the overview page (`/`, rising top 50 of {} pairs) | {:.0} ms | {:.0} ms | |",
        args.pairs,
        ms(percentile(&mut overview_pages, 50.0)),
        ms(percentile(&mut overview_pages, 100.0))
    )?;
    writeln!(
        out,
        "\n`trend_observations`, daily period-7 polls for a year ({} pairs measured): **{:.0} KiB per pair per year** (heap, TOAST and indexes; 2,555 rows).",
        args.storage_pairs,
        per_pair_year / 1024.0
    )?;
    writeln!(
        out,
        "`trend_index` (one row per day): **{:.0} KiB per pair per year**.",
        index_per_pair_year / 1024.0
    )?;
    writeln!(
        out,
        "`trend_windows` (the same windows, one row each, read by the stitch): **{:.0} KiB per pair per year**.",
        windows_per_pair_year / 1024.0
    )?;
    writeln!(
        out,
        "\nRe-stitching one pair with a year of daily windows (365 windows) inside a poll's transaction: \
         **{:.1} ms** when every index row changes (a new peak), **{:.1} ms** when none does \
         (of which: reading the windows {:.2} ms, the fit {:.2} ms, writing the index {:.2} ms).",
        restitch.rewrite,
        restitch.unchanged,
        restitch.read,
        restitch.fit,
        restitch.write,
    )?;
    Ok(out)
}

const REGIONS: [&str; 8] = ["US", "GB", "DE", "FR", "BR", "JP", "KR", "MX"];

/// A year of daily polls per pair: fetches, snapshots, `trend_points`, `trend_index`, `trend_pairs`.
async fn load_history(db: &FreshDatabase, pairs: i32, days: i32) -> anyhow::Result<()> {
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
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(pairs)
            .bind(days)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    sqlx::query("ANALYZE").execute(&db.pool).await?;
    Ok(())
}

/// Bytes of `trend_observations` (every partition: heap, TOAST, indexes) and of `trend_windows`
/// per pair per year of daily period-7 windows.
async fn storage_per_pair_year(db: &FreshDatabase, pairs: i32) -> anyhow::Result<(f64, f64)> {
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
    sqlx::query(
        "INSERT INTO trend_windows (fetch_id, clip_id, region, period, observed_at, days, vals)
         SELECT fetch_id, min(clip_id), min(region), 7, min(observed_at),
                array_agg((ts AT TIME ZONE 'UTC')::date - DATE '1970-01-01' ORDER BY ts),
                array_agg(value ORDER BY ts)
         FROM trend_observations GROUP BY fetch_id",
    )
    .execute(&db.pool)
    .await?;
    sqlx::query("VACUUM ANALYZE trend_observations")
        .execute(&db.pool)
        .await?;
    sqlx::query("VACUUM ANALYZE trend_windows")
        .execute(&db.pool)
        .await?;
    let (bytes, rows): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(pg_total_relation_size(relid))::int8
                 FROM pg_partition_tree('trend_observations')),
                (SELECT count(*) FROM trend_observations)",
    )
    .fetch_one(&db.pool)
    .await?;
    let windows: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('trend_windows')")
        .fetch_one(&db.pool)
        .await?;
    let points_per_year = 365.0 * 7.0;
    let per_point = bytes as f64 / rows.max(1) as f64;
    let per_window = windows as f64 / (rows.max(1) as f64 / 7.0);
    Ok((per_point * points_per_year, per_window * 365.0))
}

/// Median time to re-stitch one pair with a year of daily period-7 windows (365 windows, 2,555
/// observations) inside a transaction, as a poll does: (every index row rewritten, none changed).
async fn restitch_cost(db: &FreshDatabase, pairs: i32) -> anyhow::Result<Restitch> {
    let (mut rewrite, mut unchanged) = (Vec::new(), Vec::new());
    let (mut read, mut fit, mut write) = (Vec::new(), Vec::new(), Vec::new());
    for p in 0..pairs.min(20) {
        let clip = format!("{}", 8_000_000_000_000_000_000u64 + p as u64);
        let region = REGIONS[p as usize % REGIONS.len()];
        let mut tx = db.pool.begin().await?;
        soundtrend::store::trend::lock_pair(&mut tx, &clip, region).await?;
        for times in [&mut rewrite, &mut unchanged] {
            let t = Instant::now();
            soundtrend::store::trend::restitch(&mut tx, &clip, region, None, 1).await?;
            times.push(t.elapsed());
        }
        // The unchanged re-stitch once more, part by part.
        let t = Instant::now();
        let windows = soundtrend::store::trend::windows(&mut *tx, &clip, region, None).await?;
        read.push(t.elapsed());
        // The fit is pure CPU and short: timed over repeats, so the median is not the scheduler's.
        let mut days = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            days = soundtrend::normalize::stitch::stitch(&windows);
            fit.push(t.elapsed());
        }
        let t = Instant::now();
        soundtrend::store::trend::write_index(&mut *tx, &clip, region, &days, 1).await?;
        write.push(t.elapsed());
        tx.commit().await?;
    }
    Ok(Restitch {
        rewrite: ms(percentile(&mut rewrite, 50.0)),
        unchanged: ms(percentile(&mut unchanged, 50.0)),
        read: ms(percentile(&mut read, 50.0)),
        fit: ms(percentile(&mut fit, 50.0)),
        write: ms(percentile(&mut write, 50.0)),
    })
}

/// Medians, in ms, of re-stitching a pair with a year of windows, and of the parts of the
/// unchanged case: reading the windows, the fit (pure CPU), writing the index rows.
struct Restitch {
    rewrite: f64,
    unchanged: f64,
    read: f64,
    fit: f64,
    write: f64,
}
