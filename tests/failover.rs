//! Two providers, one pipeline: with both dialects served locally, the preferred provider fails
//! mid-run (a 5xx storm and its recovery, a revoked key, a spent budget) while two instances
//! poll, and every due entry is still polled exactly once, by the other provider, within its
//! quota; traffic returns to the preferred one after recovery. And the same data gives the same
//! rows whichever provider sold it.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use common::{eventually, settings, worker_options, FakeProvider, TestApp};
use soundtrend::clock::SystemClock;
use soundtrend::config::{ProviderSettings, ProvidersSettings, Settings};
use soundtrend::poll::{LaneSpec, PollOptions, Poller, Summary, Worker};
use soundtrend::provider::{ClientOptions, ProviderClient, ProviderKind};
use soundtrend::store;

const INSTANCES: usize = 2;
const BREAKER_FAILURES: u32 = 3;

/// `[providers]` with `KeyAPI` preferred, both at their fake servers, a breaker that opens after
/// three failures and probes after half a second.
fn two_providers(db_url: &str, keyapi: &FakeProvider, echotik: &FakeProvider) -> Settings {
    let mut s = settings(db_url);
    let lane = |kind: ProviderKind, base: &str| {
        let mut p = ProviderSettings {
            name: kind,
            ..s.provider.clone()
        };
        p.base_url = Some(base.parse().unwrap());
        p.max_attempts = 2;
        p.breaker_failures = std::num::NonZeroU32::new(BREAKER_FAILURES).unwrap();
        p.breaker_cooldown = Duration::from_millis(500);
        p.breaker_cooldown_max = Duration::from_secs(2);
        p
    };
    s.providers = Some(ProvidersSettings {
        order: vec![ProviderKind::KeyApi, ProviderKind::EchoTik],
        keyapi: Some(lane(ProviderKind::KeyApi, &keyapi.base)),
        echotik: Some(lane(ProviderKind::EchoTik, &echotik.base)),
    });
    s.poll.concurrency = 4;
    s
}

/// A fresh database, one fake server per provider, and settings using both.
async fn spawn_two_providers() -> (TestApp, FakeProvider, FakeProvider, Settings) {
    let app = TestApp::spawn().await;
    let (keyapi, echotik) = (
        FakeProvider::start().await.unwrap(),
        FakeProvider::start().await.unwrap(),
    );
    let s = two_providers(&app.url, &keyapi, &echotik);
    (app, keyapi, echotik, s)
}

/// One instance: a poller over every provider in force, as `soundtrend run` builds it (with the
/// tests' credentials instead of the environment's).
async fn instance(s: &Settings, pool: &PgPool) -> Arc<Poller> {
    let mut lanes = Vec::new();
    for p in s.provider_lanes() {
        store::quota::ensure_provider(pool, p.name).await.unwrap();
        let options = ClientOptions {
            base_url: p.endpoint(),
            connect_timeout: p.connect_timeout,
            request_timeout: p.request_timeout,
            user_agent: "soundtrend-tests".into(),
            max_body_bytes: p.max_body_bytes,
        };
        lanes.push(LaneSpec {
            client: ProviderClient::new(p.name, common::credentials(p.name), &options).unwrap(),
            quota: soundtrend::app::quota_params(&p),
            opts: PollOptions::for_provider(s, &p),
        });
    }
    Arc::new(Poller::with_lanes(
        pool.clone(),
        lanes,
        Arc::new(SystemClock),
    ))
}

/// Both instances drain what is due, concurrently.
async fn drain_both(s: &Settings, pool: &PgPool) -> Vec<Summary> {
    let mut runs = Vec::new();
    for i in 0..INSTANCES {
        let poller = instance(s, pool).await;
        let worker = Worker::new(poller, worker_options(s, &format!("instance-{i}")));
        runs.push(tokio::spawn(async move {
            worker.drain(&CancellationToken::new()).await.unwrap()
        }));
    }
    let mut out = Vec::new();
    for r in runs {
        out.push(r.await.unwrap());
    }
    out
}

/// Adds `n` entries (clip ids from `first`), due now, polled once a day.
async fn watch(pool: &PgPool, first: i64, n: i64) {
    sqlx::query(
        "INSERT INTO watchlist (clip_id, region) SELECT (g)::text, 'US' FROM generate_series($1::int8, $1 + $2 - 1) g",
    )
    .bind(first)
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

/// Stored answers per provider among clips `first..first+n`, and whether each clip was stored
/// exactly once.
async fn stored(pool: &PgPool, first: i64, n: i64) -> (HashMap<String, i64>, bool) {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT clip_id, provider, count(*) FROM fetches
         WHERE outcome = 'ok' AND clip_id::int8 BETWEEN $1 AND $1 + $2 - 1
         GROUP BY clip_id, provider",
    )
    .bind(first)
    .bind(n)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut per_provider = HashMap::new();
    let mut per_clip: HashMap<String, i64> = HashMap::new();
    for (clip, provider, count) in rows {
        *per_provider.entry(provider).or_default() += count;
        *per_clip.entry(clip).or_default() += count;
    }
    let once = per_clip.len() == usize::try_from(n).unwrap() && per_clip.values().all(|c| *c == 1);
    (per_provider, once)
}

async fn state(pool: &PgPool, provider: ProviderKind) -> String {
    let rows = store::health::snapshot(pool, chrono::Utc::now().date_naive())
        .await
        .unwrap();
    rows.iter()
        .find(|r| r.provider == provider)
        .map_or("missing".into(), |r| r.state(None).to_string())
}

/// The credit ledger equals the archive, per provider, and stays within each budget.
async fn ledger_matches_archive(pool: &PgPool) {
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
            SELECT provider, day, credits_used FROM credit_usage
            EXCEPT
            SELECT provider, (requested_at AT TIME ZONE 'UTC')::date, sum(credits)::int
            FROM fetches GROUP BY 1, 2
         ) x",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(mismatched, 0, "credit_usage differs from the archive");
}

fn count(m: &HashMap<String, i64>, provider: &str) -> i64 {
    m.get(provider).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_5xx_storm_fails_over_to_the_other_provider_and_traffic_returns_after_recovery() {
    let (app, keyapi, echotik, s) = spawn_two_providers().await;
    const N: i64 = 24;

    // Healthy: everything goes to the preferred provider.
    watch(&app.pool, 1000, N).await;
    drain_both(&s, &app.pool).await;
    let (by, once) = stored(&app.pool, 1000, N).await;
    assert!(once, "every entry stored exactly once: {by:?}");
    assert_eq!(count(&by, "keyapi"), N, "{by:?}");
    assert_eq!(echotik.hit_count(), 0);

    // KeyAPI starts answering 503 to everything: entries due now go to EchoTik, each once.
    keyapi.set_faults(|f| f.status = Some(503));
    let keyapi_before = keyapi.hit_count();
    watch(&app.pool, 2000, N).await;
    let summaries = drain_both(&s, &app.pool).await;
    let (by, once) = stored(&app.pool, 2000, N).await;
    assert!(
        once,
        "every entry stored exactly once during the storm: {by:?}"
    );
    assert_eq!(count(&by, "echotik"), N, "{by:?}");
    assert_eq!(summaries.iter().map(|s| s.failed).sum::<u64>(), 0);
    let storm_hits = keyapi.hit_count() - keyapi_before;
    // Every instance's in-flight polls may each spend their attempts before the breaker opens;
    // after it opens, nobody sends to KeyAPI.
    let bound = (BREAKER_FAILURES as usize + INSTANCES * s.poll.concurrency) * 2;
    assert!(
        storm_hits <= bound,
        "{storm_hits} requests reached the failing provider (bound {bound})"
    );
    assert_eq!(state(&app.pool, ProviderKind::KeyApi).await, "down");
    println!(
        "storm: {N} entries stored {by:?}; requests keyapi {storm_hits} (503), echotik {}",
        echotik.hit_count()
    );
    let status = soundtrend::cli::status::collect(&app.pool, &s, &SystemClock)
        .await
        .unwrap();
    let shown = soundtrend::cli::status::render(&status);
    assert!(shown.contains("down: circuit breaker open"), "{shown}");
    println!("{shown}");

    // KeyAPI recovers; after the cool-down one probe closes the breaker and traffic returns.
    keyapi.set_faults(|f| f.status = None);
    eventually(
        "the breaker's rest is over",
        Duration::from_secs(10),
        async || {
            sqlx::query_scalar::<_, bool>(
            "SELECT open_until <= clock_timestamp() FROM provider_quota WHERE provider = 'keyapi'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap()
        },
    )
    .await;
    let echotik_before = echotik.hit_count();
    watch(&app.pool, 3000, N).await;
    drain_both(&s, &app.pool).await;
    let (by, once) = stored(&app.pool, 3000, N).await;
    assert!(
        once,
        "every entry stored exactly once after recovery: {by:?}"
    );
    assert!(
        count(&by, "keyapi") >= N / 2,
        "traffic returns to the preferred provider: {by:?}"
    );
    assert_eq!(state(&app.pool, ProviderKind::KeyApi).await, "healthy");
    println!("recovery: {N} entries stored {by:?}");
    // Once the probe succeeded, nothing more goes to EchoTik.
    watch(&app.pool, 4000, N).await;
    drain_both(&s, &app.pool).await;
    let (by, once) = stored(&app.pool, 4000, N).await;
    assert!(once);
    assert_eq!(count(&by, "keyapi"), N, "{by:?}");
    assert!(echotik.hit_count() - echotik_before <= usize::try_from(N).unwrap());
    println!(
        "after recovery: {N} entries stored {by:?}; requests in all: keyapi {}, echotik {}",
        keyapi.hit_count(),
        echotik.hit_count()
    );
    ledger_matches_archive(&app.pool).await;
}

#[tokio::test]
async fn a_revoked_key_takes_the_provider_out_and_the_other_polls_every_entry_once() {
    let (app, keyapi, _echotik, s) = spawn_two_providers().await;
    keyapi.set_faults(|f| f.status = Some(401));
    const N: i64 = 24;
    watch(&app.pool, 1000, N).await;

    let summaries = drain_both(&s, &app.pool).await;

    let (by, once) = stored(&app.pool, 1000, N).await;
    assert!(once, "every entry stored exactly once: {by:?}");
    assert_eq!(count(&by, "echotik"), N, "{by:?}");
    assert_eq!(summaries.iter().map(|s| s.failed).sum::<u64>(), 0);
    // Only requests already past the quota when the first 401 came back can reach KeyAPI.
    let bound = INSTANCES * s.poll.concurrency;
    assert!(
        keyapi.hit_count() <= bound,
        "{} requests with the revoked key (bound {bound})",
        keyapi.hit_count()
    );
    assert_eq!(state(&app.pool, ProviderKind::KeyApi).await, "auth_failed");
    // No entry counts the provider's refusal against itself.
    let failing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM watchlist WHERE consecutive_failures > 0")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(failing, 0);
    ledger_matches_archive(&app.pool).await;
}

#[tokio::test]
async fn a_spent_budget_moves_the_rest_of_the_day_to_the_other_provider_within_both_budgets() {
    let (app, _keyapi, _echotik, mut s) = spawn_two_providers().await;
    let providers = s.providers.as_mut().unwrap();
    // KeyAPI: 2 credits a request, 20 credits a day = 10 requests. EchoTik: 1 a request, 30.
    providers.keyapi.as_mut().unwrap().daily_credit_budget = 20;
    providers.echotik.as_mut().unwrap().daily_credit_budget = 30;
    const N: i64 = 24;
    watch(&app.pool, 1000, N).await;

    drain_both(&s, &app.pool).await;

    let (by, once) = stored(&app.pool, 1000, N).await;
    assert!(once, "every entry stored exactly once: {by:?}");
    assert_eq!(count(&by, "keyapi"), 10, "{by:?}");
    assert_eq!(count(&by, "echotik"), N - 10, "{by:?}");
    let used: Vec<(String, i32)> =
        sqlx::query_as("SELECT provider, credits_used FROM credit_usage ORDER BY provider")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        used,
        vec![("echotik".to_owned(), 14), ("keyapi".to_owned(), 20)]
    );
    assert_eq!(state(&app.pool, ProviderKind::KeyApi).await, "budget_spent");
    ledger_matches_archive(&app.pool).await;
}

#[tokio::test]
async fn an_entry_pinned_to_a_provider_waits_for_it_instead_of_failing_over() {
    let (app, keyapi, echotik, s) = spawn_two_providers().await;
    keyapi.set_faults(|f| f.status = Some(401));
    sqlx::query("INSERT INTO watchlist (clip_id, region, provider) VALUES ('1', 'US', ' KeyAPI '), ('2', 'US', NULL)")
        .execute(&app.pool)
        .await
        .unwrap();

    drain_both(&s, &app.pool).await;
    // The key is now known bad: a second round claims nothing pinned to KeyAPI.
    drain_both(&s, &app.pool).await;

    let (by, _) = stored(&app.pool, 1, 2).await;
    assert_eq!(count(&by, "echotik"), 1, "only the unpinned entry: {by:?}");
    assert_eq!(count(&by, "keyapi"), 0);
    assert!(
        (1..=2).contains(&keyapi.hit_count()),
        "a request or two (both entries were in flight at once) found the key revoked"
    );
    assert_eq!(
        echotik.hits().iter().filter(|h| h.clip_id == "1").count(),
        0
    );
    let pinned: Option<String> =
        sqlx::query_scalar("SELECT provider FROM watchlist WHERE clip_id = '1'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(pinned.as_deref(), Some("keyapi"), "stored canonical");
    let refused =
        sqlx::query("INSERT INTO watchlist (clip_id, region, provider) VALUES ('3', 'US', 'acme')")
            .execute(&app.pool)
            .await
            .unwrap_err()
            .to_string();
    assert!(
        refused.contains("watchlist_provider_keyapi_echotik_or_null"),
        "{refused}"
    );
}

/// Every derived table, each row as JSON without its provenance (fetch ids, fetch and row
/// times), sorted: what an analyst reads about the sound.
async fn derived_rows(pool: &PgPool) -> Vec<(String, Vec<String>)> {
    let tables = [
        "sounds",
        "sound_snapshots",
        "trend_points",
        "trend_observations",
        "trend_windows",
        "trend_index",
        "audience_countries",
        "audience_interests",
    ];
    let mut out = Vec::new();
    for table in tables {
        let provenance: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_name = $1 AND (column_name LIKE '%fetch_id%' OR column_name = 'id'
                   OR data_type = 'timestamp with time zone')",
        )
        .bind(table)
        .fetch_all(pool)
        .await
        .unwrap();
        let sql = format!("SELECT (to_jsonb(t) - $1::text[])::text FROM {table} t ORDER BY 1");
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(&provenance)
            .fetch_all(pool)
            .await
            .unwrap();
        assert!(
            !rows.is_empty() || table == "trend_index",
            "{table} is empty"
        );
        out.push((table.to_owned(), rows));
    }
    out
}

#[tokio::test]
async fn the_same_data_from_either_provider_gives_identical_rows_but_its_provenance() {
    let via_keyapi = TestApp::spawn().await;
    let via_echotik = TestApp::spawn().await;
    // One server answers both dialects from the same generated data.
    let server = FakeProvider::start().await.unwrap();
    for (app, kind) in [
        (&via_keyapi, ProviderKind::KeyApi),
        (&via_echotik, ProviderKind::EchoTik),
    ] {
        let s = settings(&app.url);
        let poller = common::poller(&s, &app.pool, kind, &server.base).await;
        for (clip, region) in [
            (common::CLIP, "US"),
            (common::CLIP, "GB"),
            ("7000000000000000001", "US"),
        ] {
            app.watch(clip, region).await;
        }
        for (clip, region, period) in [
            (common::CLIP, "US", 7),
            (common::CLIP, "US", 30),
            (common::CLIP, "GB", 120),
            ("7000000000000000001", "US", 7),
        ] {
            let period = soundtrend::domain::Period::from_days(period).unwrap();
            let outcome = common::poll(app, &poller, clip, region, Some(period)).await;
            assert!(
                matches!(outcome, soundtrend::poll::PollOutcome::Stored { provider, .. } if provider == kind),
                "{outcome:?}"
            );
        }
    }
    let (a, b) = (
        derived_rows(&via_keyapi.pool).await,
        derived_rows(&via_echotik.pool).await,
    );
    for ((table, rows_a), (_, rows_b)) in a.iter().zip(&b) {
        assert_eq!(rows_a, rows_b, "{table} differs between the providers");
    }
    let providers: Vec<String> = sqlx::query_scalar("SELECT DISTINCT provider FROM fetches")
        .fetch_all(&via_echotik.pool)
        .await
        .unwrap();
    assert_eq!(
        providers,
        vec!["echotik".to_owned()],
        "provenance says who sold it"
    );
}

#[tokio::test]
async fn watch_add_pins_an_entry_to_a_provider_and_auto_unpins_it() {
    let app = TestApp::spawn().await;
    let pinned = async || -> Option<String> {
        sqlx::query_scalar("SELECT provider FROM watchlist WHERE clip_id = $1")
            .bind(common::CLIP)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    for (flag, expected) in [("EchoTik", Some("echotik")), ("auto", None)] {
        let mut c = common::bin::soundtrend(&app, "http://127.0.0.1:9/");
        c.args(["watch", "add", common::CLIP, "US", "--provider", flag]);
        let out = common::bin::output(c).await;
        assert_eq!(out.status.code(), Some(0), "{}", common::bin::text(&out));
        assert_eq!(pinned().await.as_deref(), expected);
    }
    let mut c = common::bin::soundtrend(&app, "http://127.0.0.1:9/");
    c.args(["watch", "add", common::CLIP, "US", "--provider", "acme"]);
    let out = common::bin::output(c).await;
    assert_eq!(out.status.code(), Some(2), "{}", common::bin::text(&out));
    assert!(common::bin::text(&out).contains("--provider"));
}

#[tokio::test]
async fn trend_index_links_windows_bought_from_different_providers() {
    let app = TestApp::spawn().await;
    let s = settings(&app.url);
    app.watch(common::CLIP, "US").await;
    for (kind, days) in [(ProviderKind::KeyApi, 30), (ProviderKind::EchoTik, 7)] {
        let poller = common::poller(&s, &app.pool, kind, &app.provider.base).await;
        let period = soundtrend::domain::Period::from_days(days).unwrap();
        let outcome = common::poll(&app, &poller, common::CLIP, "US", Some(period)).await;
        assert!(
            matches!(outcome, soundtrend::poll::PollOutcome::Stored { provider, .. } if provider == kind),
            "{outcome:?}"
        );
    }
    // The last 7 days are covered by both windows, one from each provider, on one scale.
    let linked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM trend_index WHERE clip_id = $1 AND region = 'US' AND windows = 2",
    )
    .bind(common::CLIP)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(linked, 7);
}
