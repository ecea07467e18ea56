//! Trend history: every window kept, one stitched index, measured against a known truth.
//!
//! A synthetic provider knows the true daily popularity of every (clip, region) on every absolute
//! day (peaks, flat spells, zeros, day-to-day noise) and answers each request as the real API
//! does: the window's values divided by the window's maximum, rounded to 2 decimals, in the
//! documented response shape. The test polls it day by day through the real poll path.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{Duration, NaiveDate};
use common::*;
use serde_json::{json, Value};
use soundtrend::clock::OffsetClock;
use soundtrend::domain::Period;
use soundtrend::poll::PollOutcome;
use soundtrend::provider::ProviderKind;
use soundtrend::store::watchlist::Claimed;
use tokio_util::sync::CancellationToken;

const PAIRS: usize = 10;
const REGIONS: [&str; 3] = ["US", "GB", "DE"];

fn day0() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
}

fn pair(p: usize) -> (String, &'static str) {
    (
        format!("{}", 7_100_000_000_000_000_000u64 + p as u64),
        REGIONS[p % 3],
    )
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// The true popularity of pair `p` on absolute day `d` (days since `day0`).
fn truth(p: usize, d: i64) -> f64 {
    let x = d as f64;
    let pf = p as f64;
    // Pair 9 goes silent for 12 days: windows inside the spell are all zeros, so the history
    // after it cannot be linked to the history before it (a new segment).
    if p == 9 && (128..140).contains(&d) {
        return 0.0;
    }
    // Short true zeros inside otherwise linked history.
    if p % 4 == 1 && (60..63).contains(&d) {
        return 0.0;
    }
    // A flat spell.
    if p.is_multiple_of(3) && (135..150).contains(&d) {
        return 3.0 + pf / 10.0;
    }
    let bump = |at: f64, height: f64, width: f64| height * (-((x - at) / width).powi(2)).exp();
    let level = (1.0 + pf / 3.0) * (1.0 + 0.4 * (x / 11.0 + pf).sin())
        + bump(40.0 + 7.0 * pf, 6.0 + pf, 4.0)
        + bump(125.0 + 3.0 * pf, 4.0 + 2.0 * pf, 3.0)
        + bump(158.0 - 2.0 * pf, 3.0, 6.0);
    let noise = 0.97 + 0.06 * (hash(&format!("{p}:{d}")) % 1000) as f64 / 1000.0;
    level * noise
}

/// The provider's answer: the window ending `last_day`, relative to its own maximum, 2 decimals.
fn window(p: usize, period: i64, last: i64) -> Vec<Value> {
    let days: Vec<i64> = (last - period + 1..=last).collect();
    let max = days.iter().map(|&d| truth(p, d)).fold(0.0, f64::max);
    days.iter()
        .map(|&d| {
            let v = if max > 0.0 { truth(p, d) / max } else { 0.0 };
            let ts = (day0() + Duration::days(d))
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp();
            json!({"time": ts, "value": (v * 100.0).round() / 100.0})
        })
        .collect()
}

/// The synthetic provider's "yesterday" and its clip → pair map.
type ProviderState = (Arc<Mutex<i64>>, Arc<HashMap<String, usize>>);

/// A local provider answering from [`truth`]; `last_day` is the test's "yesterday".
struct Synthetic {
    base: String,
    last_day: Arc<Mutex<i64>>,
}

impl Synthetic {
    async fn start() -> Self {
        use axum::extract::{Query, State};
        let last_day = Arc::new(Mutex::new(0i64));
        let index: HashMap<String, usize> = (0..PAIRS).map(|p| (pair(p).0, p)).collect();
        let state = (last_day.clone(), Arc::new(index));
        let app = axum::Router::new()
            .route(
                ProviderKind::KeyApi.path(),
                axum::routing::get(
                    |State((last, index)): State<ProviderState>,
                     Query(q): Query<HashMap<String, String>>| async move {
                        let clip = q.get("clip_id").cloned().unwrap_or_default();
                        let region = q.get("region").cloned().unwrap_or_default();
                        let period: i64 = q.get("period").and_then(|v| v.parse().ok()).unwrap_or(7);
                        let p = index[&clip];
                        let last_day = *last.lock().unwrap();
                        let mut body = soundtrend::provider::fake::response(
                            ProviderKind::KeyApi,
                            &clip,
                            &region,
                            period,
                            day0() + Duration::days(last_day),
                        );
                        body["data"]["sound"]["trend"] = Value::Array(window(p, period, last_day));
                        axum::Json(body)
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Synthetic {
            base: format!("http://{addr}/"),
            last_day,
        }
    }
}

/// (last day, period) of every poll: a period-120 start, daily period-7 polls, a 10-day gap, a
/// period-30 poll, daily period-7 polls again: 50 days.
fn schedule() -> Vec<(i64, Period)> {
    let mut polls = vec![(119, Period::Days120)];
    polls.extend((120..150).map(|d| (d, Period::Days7)));
    polls.push((160, Period::Days30));
    polls.extend((161..170).map(|d| (d, Period::Days7)));
    polls
}

/// Polls every pair through the real poll path, day by day, as scheduled.
async fn poll_history(app: &TestApp) {
    let provider = Synthetic::start().await;
    let settings = settings(&app.url);
    let clock = Arc::new(OffsetClock::new());
    let poller = poller_with_clock(
        &settings,
        &app.pool,
        ProviderKind::KeyApi,
        &provider.base,
        clock.clone(),
    )
    .await;
    let cancel = CancellationToken::new();
    let mut previous = None;
    for (last_day, period) in schedule() {
        if let Some(prev) = previous {
            clock.advance(Duration::days(last_day - prev));
        }
        previous = Some(last_day);
        *provider.last_day.lock().unwrap() = last_day;
        for p in 0..PAIRS {
            let (clip_id, region) = pair(p);
            let entry = Claimed {
                clip_id: clip_id.parse().unwrap(),
                region: region.parse().unwrap(),
                period: None,
                poll_interval_secs: 86_400.0,
                last_success_at: None,
                consecutive_failures: 0,
                lease_token: None,
                provider: None,
            };
            let outcome = poller.poll(&entry, Some(period), &cancel).await.unwrap();
            assert!(matches!(outcome, PollOutcome::Stored { .. }), "{outcome:?}");
        }
    }
}

/// (day number since day0, value) of a table's series for pair p.
async fn series(app: &TestApp, sql: &str, p: usize) -> Vec<(i64, f64, i32)> {
    let (clip, region) = pair(p);
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(clip)
        .bind(region)
        .bind(day0())
        .fetch_all(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Days some window shows at ≥ 10 % of its maximum.
async fn measurable_days(app: &TestApp, p: usize) -> Vec<i64> {
    series(
        app,
        "SELECT ((ts AT TIME ZONE 'UTC')::date - $3)::int8, max(value), 0
         FROM trend_observations WHERE clip_id = $1 AND region = $2
         GROUP BY 1 HAVING max(value) >= 0.10 ORDER BY 1",
        p,
    )
    .await
    .into_iter()
    .map(|(d, _, _)| d)
    .collect()
}

/// Relative errors against the truth after one scale factor per group (least squares in logs).
fn errors(p: usize, points: &[(i64, f64, i32)], measurable: &[i64]) -> Vec<f64> {
    let mut groups: BTreeMap<i32, Vec<(f64, f64)>> = BTreeMap::new();
    for &(d, v, g) in points {
        if measurable.binary_search(&d).is_ok() {
            groups.entry(g).or_default().push((v, truth(p, d)));
        }
    }
    let mut out = Vec::new();
    for pts in groups.values() {
        let logs: Vec<f64> = pts
            .iter()
            .filter(|(v, _)| *v > 0.0)
            .map(|(v, t)| (t / v).ln())
            .collect();
        let scale = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
        out.extend(pts.iter().map(|(v, t)| (v * scale - t).abs() / t));
    }
    out
}

fn median_and_max(mut e: Vec<f64>) -> (f64, f64) {
    e.sort_by(f64::total_cmp);
    (e[e.len() / 2], *e.last().unwrap())
}

async fn index_rows(
    app: &TestApp,
) -> Vec<(String, String, NaiveDate, f64, f64, f64, i32, i32, i64, i64)> {
    sqlx::query_as(
        "SELECT clip_id, region, day, index_value, index_low, index_high, segment, windows,
                fetch_id, changed_by
         FROM trend_index ORDER BY clip_id, region, day",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_stitched_index_matches_the_truth_and_trend_points_read_naively_does_not() {
    let app = TestApp::spawn().await;
    poll_history(&app).await;

    let mut index_errors = Vec::new();
    let mut naive_errors = Vec::new();
    for p in 0..PAIRS {
        let measurable = measurable_days(&app, p).await;
        let index = series(
            &app,
            "SELECT (day - $3)::int8, index_value, segment FROM trend_index
             WHERE clip_id = $1 AND region = $2 ORDER BY day",
            p,
        )
        .await;
        let naive = series(
            &app,
            "SELECT ((ts AT TIME ZONE 'UTC')::date - $3)::int8, value, 1 FROM trend_points
             WHERE clip_id = $1 AND region = $2 ORDER BY ts",
            p,
        )
        .await;
        assert_eq!(
            index.len(),
            170,
            "pair {p}: one row per covered day, no holes"
        );
        index_errors.extend(errors(p, &index, &measurable));
        naive_errors.extend(errors(p, &naive, &measurable));
    }
    let (index_median, index_max) = median_and_max(index_errors.clone());
    let (naive_median, naive_max) = median_and_max(naive_errors);
    println!(
        "trend_index vs truth over {} days: median {:.2} %, max {:.2} %",
        index_errors.len(),
        100.0 * index_median,
        100.0 * index_max
    );
    println!(
        "trend_points (naive) vs truth: median {:.2} %, max {:.2} %",
        100.0 * naive_median,
        100.0 * naive_max
    );
    assert!(index_median <= 0.01, "median {index_median}");
    assert!(index_max <= 0.05, "max {index_max}");
    assert!(naive_median > index_median);

    let segments: Vec<(String, i32)> =
        sqlx::query_as("SELECT clip_id, max(segment) FROM trend_index GROUP BY 1 ORDER BY 1")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    for (p, (_, n)) in segments.iter().enumerate() {
        let expected = if p == 9 { 2 } else { 1 };
        assert!(*n >= expected, "pair {p}: {n} segments");
        if p != 9 {
            assert_eq!(*n, 1, "pair {p} links throughout");
        }
    }
}

#[tokio::test]
async fn replay_after_truncating_the_derived_tables_rebuilds_the_very_same_index() {
    let app = TestApp::spawn().await;
    poll_history(&app).await;
    let live = index_rows(&app).await;
    let observations = app.observations().await;
    assert_eq!(observations, PAIRS as i64 * (120 + 30 * 7 + 30 + 9 * 7));

    sqlx::query(
        "TRUNCATE trend_index, trend_pairs, trend_windows, trend_observations, trend_points, sound_snapshots,
                  audience_country_lists, audience_interest_lists, sounds",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    soundtrend::cli::replay::replay(
        &app.pool,
        &soundtrend::cli::replay::ReplayFilter::default(),
        37,
        false,
    )
    .await
    .unwrap();

    assert_eq!(app.observations().await, observations);
    assert_eq!(index_rows(&app).await, live);
}

/// Writes the scheduled windows of pairs 0..3 straight through `record_success`, in `order`.
async fn write_windows(app: &TestApp, order: &[(i64, Period)]) {
    use soundtrend::domain::{ClipId, Region};
    use soundtrend::normalize::{normalize, Observation};
    use soundtrend::provider::wire::{Envelope, MusicDetail};
    use soundtrend::provider::Outcome;
    use soundtrend::store::fetches::FetchRecord;
    use soundtrend::store::ingest::record_success;

    for (n, &(last_day, period)) in order.iter().enumerate() {
        for p in 0..3 {
            let (clip, region) = pair(p);
            let mut body = soundtrend::provider::fake::response(
                ProviderKind::KeyApi,
                &clip,
                region,
                i64::from(period.days()),
                day0() + Duration::days(last_day),
            );
            body["data"]["sound"]["trend"] =
                Value::Array(window(p, i64::from(period.days()), last_day));
            let raw = body.to_string();
            let env: Envelope = serde_json::from_value(body).unwrap();
            let detail: MusicDetail = serde_json::from_value(env.data.unwrap()).unwrap();
            let at = chrono::Utc::now() + Duration::seconds(n as i64);
            let obs = Observation {
                clip_id: ClipId::parse(&clip).unwrap(),
                region: Region::parse(region).unwrap(),
                period,
                observed_at: at,
            };
            let rows = normalize(&detail, &obs).unwrap();
            let record = FetchRecord {
                duration_ms: 1,
                http_status: Some(200),
                api_code: Some(0),
                credits: 2,
                body_json: Some(&raw),
                ..FetchRecord::new(
                    &clip,
                    region,
                    period.days(),
                    ProviderKind::KeyApi,
                    at,
                    Outcome::Ok,
                )
            };
            record_success(&app.pool, &record, &rows, None, 0.0)
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn windows_arriving_out_of_order_give_the_same_index() {
    let (forward, backward) = (TestApp::spawn().await, TestApp::spawn().await);
    let order = schedule();
    let mut reversed = order.clone();
    reversed.reverse();
    reversed.swap(2, 20);
    write_windows(&forward, &order).await;
    write_windows(&backward, &reversed).await;

    let levels = |app: &TestApp| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_as::<_, (String, NaiveDate, f64, f64, f64, i32, i32)>(
                "SELECT clip_id, day, index_value, index_low, index_high, segment, windows
                 FROM trend_index ORDER BY clip_id, day",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let a = levels(&forward).await;
    assert_eq!(a.len(), 3 * 170);
    assert_eq!(a, levels(&backward).await);
}

#[tokio::test]
async fn partitions_are_created_ahead_and_take_over_rows_from_the_default_partition() {
    let app = TestApp::spawn().await;
    let partitions = "SELECT count(*) FROM pg_inherits
                      WHERE inhparent = 'trend_observations'::regclass";
    let before = app.count(partitions).await;
    assert!(before >= 16, "{before} partitions after the migration");
    // The job is idempotent: everything from last month to three months ahead already exists.
    assert_eq!(
        soundtrend::store::trend::ensure_partitions(&app.pool, 3)
            .await
            .unwrap(),
        0
    );
    sqlx::raw_sql(
        "INSERT INTO fetches (clip_id, region, period, provider, requested_at, duration_ms, outcome)
         VALUES ('1', 'US', 7, 'keyapi', now(), 1, 'ok');
         INSERT INTO trend_observations (fetch_id, clip_id, region, period, ts, value, observed_at)
         SELECT id, '1', 'US', 7, '2035-03-15 00:00+00', 0.5, now() FROM fetches",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(app.observations_in_default_partition().await, 1);

    sqlx::query("SELECT trend_observations_ensure_partitions('2035-03-01', 1)")
        .execute(&app.pool)
        .await
        .unwrap();

    assert_eq!(app.observations_in_default_partition().await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM trend_observations_2035_03")
            .await,
        1
    );
    assert_eq!(app.count(partitions).await, before + 1);
}

/// Inserts an ok fetch (and its snapshot with `rank`) for a pair at `at`; returns its id.
async fn snapshot(app: &TestApp, clip: &str, region: &str, at: &str, rank: Option<i32>) -> i64 {
    sqlx::query_scalar(
        "WITH f AS (
             INSERT INTO fetches (clip_id, region, period, provider, requested_at, duration_ms, outcome)
             VALUES ($1, $2, 7, 'keyapi', $3::timestamptz, 1, 'ok') RETURNING id
         ), s AS (
             INSERT INTO sound_snapshots (fetch_id, clip_id, region, period, observed_at, rank,
                                          trend_points)
             SELECT id, $1, $2, 7, $3::timestamptz, $4, 7 FROM f
         )
         SELECT id FROM f",
    )
    .bind(clip)
    .bind(region)
    .bind(at)
    .bind(rank)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// A stitched series for a pair ending on 2026-03-10 (values oldest first) and its `trend_pairs` row.
async fn index_series(app: &TestApp, clip: &str, values: &[f64], fetch_id: i64) {
    let last = NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
    let days: Vec<NaiveDate> = (0..values.len())
        .map(|k| last - Duration::days((values.len() - 1 - k) as i64))
        .collect();
    let written = soundtrend::store::trend::write_index(
        &app.pool,
        clip,
        "US",
        &days
            .iter()
            .zip(values)
            .map(|(d, &v)| soundtrend::normalize::stitch::IndexDay {
                day: (*d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32,
                index_value: v,
                index_low: v,
                index_high: v,
                segment: 1,
                windows: 1,
                fetch_id,
            })
            .collect::<Vec<_>>(),
        fetch_id,
    )
    .await
    .unwrap();
    assert_eq!(written, values.len() as u64);
}

#[tokio::test]
async fn sound_rising_measures_growth_rank_velocity_and_stage_by_the_documented_thresholds() {
    let app = TestApp::spawn().await;
    let early = snapshot(&app, "1", "US", "2026-03-03 12:00+00", Some(24)).await;
    let late = snapshot(&app, "1", "US", "2026-03-10 12:00+00", Some(10)).await;
    // Steady climb 30 → 65: rising. 7-day slope 5 points a day.
    index_series(
        &app,
        "1",
        &[30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0],
        late,
    )
    .await;
    // From almost nothing: emerging.
    index_series(
        &app,
        "2",
        &[2.0, 2.0, 3.0, 5.0, 9.0, 15.0, 25.0, 40.0],
        early,
    )
    .await;
    // At its high and no longer climbing: peaking.
    index_series(&app, "3", &[100.0; 8], early).await;
    // Halved: declining.
    index_series(
        &app,
        "4",
        &[80.0, 75.0, 70.0, 65.0, 60.0, 50.0, 45.0, 40.0],
        early,
    )
    .await;
    // 1 → 1.5 is +10 % against the 5-point baseline, not +50 %: flat.
    index_series(&app, "5", &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.5], early).await;

    type Row = (
        String,
        String,
        f64,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<i32>,
        Option<f64>,
        i32,
        i32,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT clip_id, stage, growth_1d, growth_3d, growth_7d, slope_7d, rank_change_7d,
                rank_velocity, days_observed, days_expected
         FROM sound_rising",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();

    let order: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        order,
        [
            ("2", "emerging"),
            ("1", "rising"),
            ("5", "flat"),
            ("3", "peaking"),
            ("4", "declining")
        ]
    );
    let riser = &rows[1];
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(close(riser.2, 100.0 * 5.0 / 60.0), "{riser:?}");
    assert!(close(riser.3.unwrap(), 30.0));
    assert!(close(riser.4.unwrap(), 100.0 * 35.0 / 30.0));
    assert!(close(riser.5.unwrap(), 5.0));
    assert_eq!(riser.6, Some(14));
    assert!(close(riser.7.unwrap(), 2.0));
    assert_eq!((riser.8, riser.9), (2, 8));
    assert!(close(rows[2].4.unwrap(), 10.0));
}

/// day, `index_value`, `window_value`, `window_period`, rank, `snapshot_fetch_id`.
type DailyRow = (
    NaiveDate,
    f64,
    Option<f64>,
    Option<i16>,
    Option<i32>,
    Option<i64>,
);

#[tokio::test]
async fn sound_daily_joins_the_raw_window_value_and_the_day_s_snapshot() {
    let app = TestApp::spawn().await;
    let fetch = snapshot(&app, "1", "US", "2026-03-10 12:00+00", Some(7)).await;
    index_series(&app, "1", &[50.0, 100.0], fetch).await;
    sqlx::query(
        "INSERT INTO trend_points (clip_id, region, ts, value, fetch_id, period, observed_at)
         VALUES ('1', 'US', '2026-03-10 00:00+00', 0.8, $1, 7, now())",
    )
    .bind(fetch)
    .execute(&app.pool)
    .await
    .unwrap();

    let rows: Vec<DailyRow> = sqlx::query_as(
        "SELECT day, index_value, window_value, window_period, rank, snapshot_fetch_id
             FROM sound_daily WHERE clip_id = '1' AND region = 'US' ORDER BY day",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();

    let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    assert_eq!(
        rows,
        [
            (day(9), 50.0, None, None, None, None),
            (day(10), 100.0, Some(0.8), Some(7), Some(7), Some(fetch)),
        ]
    );
}

#[tokio::test]
async fn audience_shares_are_of_the_listed_total_and_change_against_the_previous_snapshot() {
    let app = TestApp::spawn().await;
    let first = snapshot(&app, "1", "US", "2026-03-09 12:00+00", None).await;
    let second = snapshot(&app, "1", "US", "2026-03-10 12:00+00", None).await;
    for (fetch, list) in [
        (first, vec![("US", 60.0), ("GB", 40.0)]),
        (second, vec![("US", 30.0), ("GB", 30.0), ("DE", 40.0)]),
    ] {
        // Each snapshot names its lists (16-byte ids; any distinct ones do for the views).
        sqlx::query(
            "UPDATE sound_snapshots SET countries_list = decode(md5('c' || $1), 'hex'),
                                        interests_list = decode(md5('i' || $1), 'hex')
             WHERE fetch_id = $1",
        )
        .bind(fetch)
        .execute(&app.pool)
        .await
        .unwrap();
        for (position, (code, score)) in list.into_iter().enumerate() {
            sqlx::query(
                "INSERT INTO audience_country_lists (list_id, position, country_code, score)
                 VALUES (decode(md5('c' || $1), 'hex'), $2, $3, $4)",
            )
            .bind(fetch)
            .bind(position as i16 + 1)
            .bind(code)
            .bind(score)
            .execute(&app.pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO audience_interest_lists (list_id, position, interest_id, score)
                 VALUES (decode(md5('i' || $1), 'hex'), $2, $3, $4)",
            )
            .bind(fetch)
            .bind(position as i16 + 1)
            .bind(format!("i{code}"))
            .bind(score)
            .execute(&app.pool)
            .await
            .unwrap();
        }
    }

    for view in ["audience_country_share", "audience_interest_share"] {
        let rows: Vec<(i64, f64, Option<i64>, Option<f64>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT fetch_id, share, previous_fetch_id, share_change FROM {view}
             ORDER BY observed_at, position"
            )))
            .fetch_all(&app.pool)
            .await
            .unwrap();
        let r = |x: f64| (x * 1e9).round() / 1e9;
        let rounded: Vec<_> = rows
            .iter()
            .map(|(f, s, p, c)| (*f, r(*s), *p, c.map(r)))
            .collect();
        assert_eq!(
            rounded,
            [
                (first, 0.6, None, None),
                (first, 0.4, None, None),
                (second, 0.3, Some(first), Some(-0.3)),
                (second, 0.3, Some(first), Some(-0.1)),
                (second, 0.4, Some(first), None),
            ],
            "{view}"
        );
    }
}

#[tokio::test]
async fn a_window_that_replay_no_longer_accepts_leaves_the_index() {
    let app = TestApp::spawn().await;
    write_windows(&app, &[(119, Period::Days120), (126, Period::Days7)]).await;
    let (clip, region) = pair(0);
    let last_day =
        "SELECT (max(day) - DATE '2026-01-01')::int8 FROM trend_index WHERE clip_id = $1";
    let last = |app: &TestApp| {
        let pool = app.pool.clone();
        let clip = clip.clone();
        async move {
            sqlx::query_scalar::<_, i64>(last_day)
                .bind(clip)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(last(&app).await, 126);
    // The newest window of pair 0 loses its sound: today's rules refuse it.
    sqlx::query(
        "UPDATE fetches SET body_json = jsonb_set(body_json, '{data,sound}', 'null')
         WHERE id = (SELECT max(id) FROM fetches WHERE clip_id = $1 AND region = $2)",
    )
    .bind(&clip)
    .bind(region)
    .execute(&app.pool)
    .await
    .unwrap();

    let summary = soundtrend::cli::replay::replay(
        &app.pool,
        &soundtrend::cli::replay::ReplayFilter::default(),
        4,
        false,
    )
    .await
    .unwrap();

    assert_eq!(summary.invalidated, 1, "{summary:?}");
    assert_eq!(last(&app).await, 119, "the refused window's days are gone");
    let rows: Vec<(i64, String, i32)> = sqlx::query_as(
        "SELECT fetch_id, region, cardinality(days) FROM trend_windows WHERE clip_id = $1 ORDER BY 1",
    )
    .bind(&clip)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "the refused window is gone: {rows:?}");
}

/// One index day of pair ("1", "US") for [`write_index_days`].
fn index_day(day: i32, value: f64) -> soundtrend::normalize::stitch::IndexDay {
    soundtrend::normalize::stitch::IndexDay {
        day: 20_000 + day,
        index_value: value,
        index_low: value,
        index_high: value,
        segment: 1,
        windows: 1,
        fetch_id: 1,
    }
}

async fn write_index_days(app: &TestApp, days: &[soundtrend::normalize::stitch::IndexDay]) -> u64 {
    soundtrend::store::trend::write_index(&app.pool, "1", "US", days, 9)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_index_write_touches_only_days_that_differ_and_deletes_days_no_longer_stitched() {
    let app = TestApp::spawn().await;
    let year: Vec<_> = (0..365).map(|d| index_day(d, f64::from(d % 100))).collect();
    assert_eq!(write_index_days(&app, &year).await, 365);
    assert_eq!(write_index_days(&app, &year).await, 0, "nothing differs");
    // ON CONFLICT would have locked every row it found (its xmax set), changed or not.
    let locked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM trend_index WHERE xmax::text::int8 <> 0")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(locked, 0, "unchanged days are not even locked");

    let mut shorter = year[1..].to_vec();
    shorter[100] = index_day(101, 1.5);
    assert_eq!(
        write_index_days(&app, &shorter).await,
        2,
        "the first day deleted, one day changed"
    );
    let (days, first, changed): (i64, NaiveDate, f64) = sqlx::query_as(
        "SELECT count(*), min(t.day), max(t.index_value) FILTER (WHERE t.day = p.first_day + 100)
         FROM trend_index t JOIN trend_pairs p USING (clip_id, region)
         WHERE clip_id = '1' AND region = 'US' GROUP BY p.first_day",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(days, 364);
    assert_eq!(
        first,
        NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + Duration::days(20_001)
    );
    assert_eq!(changed, 1.5);
    assert_eq!(
        write_index_days(&app, &[]).await,
        364,
        "no windows: no index"
    );
    let pairs: i64 = sqlx::query_scalar("SELECT count(*) FROM trend_pairs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(pairs, 0);
}
