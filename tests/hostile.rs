//! Hostile input never crashes the daemon or drains credits: a provider that sends what no parser
//! expects, an analyst who writes what no daemon can hold, a client that never finishes its
//! request. Each test reproduces one finding of the audit (issue 9) through the real path.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use soundtrend::domain::Period;
use soundtrend::poll::{PollOutcome, Poller};
use soundtrend::provider::{ProviderError, ProviderKind};
use soundtrend::store::watchlist;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn poll(app: &TestApp, poller: &Poller, clip: &str) -> PollOutcome {
    let entry = watchlist::claim_one(&app.pool, "test", clip, "US", Duration::from_mins(1))
        .await
        .unwrap()
        .unwrap()
        .expect("entry is on the watchlist");
    poller
        .poll(&entry, Some(Period::Days7), &CancellationToken::new())
        .await
        .expect("the poll records its outcome")
}

/// The sample with its raw text edited: for escapes a JSON value cannot carry (lone surrogates).
fn sample_text_with(from: &str, to: &str) -> String {
    assert!(SAMPLE.contains(from), "{from} is in the sample");
    SAMPLE.replacen(from, to, 1)
}

/// A fresh database watching CLIP/US and a `KeyAPI` poller pointed at a mock that answers every
/// request with `status` and `body`; `tweak` adjusts the settings first.
async fn answering(
    status: u16,
    body: String,
    tweak: impl FnOnce(&mut soundtrend::config::Settings),
) -> (TestApp, MockServer, std::sync::Arc<Poller>) {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    mount_body(&server, ProviderKind::KeyApi, status, body).await;
    let mut s = settings(&app.url);
    tweak(&mut s);
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.uri()).await;
    app.watch(CLIP, "US").await;
    (app, server, poller)
}

/// After a poll, whatever happened: one fetches row per request, no lease left, due in the future.
async fn assert_one_trace_and_backed_off(app: &TestApp, server: &MockServer) {
    let requests = server.received_requests().await.unwrap().len() as i64;
    assert_eq!(
        app.fetches().await,
        requests,
        "every paid request leaves exactly one fetches row"
    );
    assert_eq!(
        app.idle_entries_due_after(Duration::from_secs(30)).await,
        1,
        "the entry is released and not due again at once"
    );
}

#[tokio::test]
async fn a_title_with_nul_is_stored_with_the_nul_replaced() {
    let body = sample_text_with("\"New Sun\"", "\"New\\u0000Sun\"");
    let (app, server, poller) = answering(200, body, |_| {}).await;

    let outcome = poll(&app, &poller, CLIP).await;

    assert!(matches!(outcome, PollOutcome::Stored { .. }), "{outcome:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM sounds WHERE title = 'New' || chr(65533) || 'Sun'")
            .await,
        1
    );
    // jsonb refuses \u0000: the raw body is archived as text, unchanged.
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE outcome = 'ok' AND body_json IS NULL AND position('New\\u0000Sun' IN body_text) > 0")
            .await,
        1
    );
    assert_one_trace_and_backed_off(&app, &server).await;
}

#[tokio::test]
async fn a_lone_surrogate_is_archived_once_and_never_bought_again_per_lease() {
    let body = sample_text_with("\"New Sun\"", "\"\\ud800\"");
    let (app, server, poller) = answering(200, body, |_| {}).await;

    let outcome = poll(&app, &poller, CLIP).await;

    assert!(
        !matches!(outcome, PollOutcome::Skipped(_)),
        "the answer is kept: {outcome:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE body_json IS NULL AND position('\\ud800' IN body_text) > 0")
            .await,
        1,
        "the raw body is kept as text, since jsonb refuses a lone surrogate"
    );
    assert_one_trace_and_backed_off(&app, &server).await;
}

#[tokio::test]
async fn a_response_the_database_refuses_is_archived_as_store_error_and_backs_off() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    mount_sample(&server, ProviderKind::KeyApi).await;
    // Anything the database may refuse after the provider answered: here a constraint.
    sqlx::query("ALTER TABLE sounds ADD CONSTRAINT refuse_new_sun CHECK (title <> 'New Sun')")
        .execute(&app.pool)
        .await
        .unwrap();
    let s = settings(&app.url);
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.uri()).await;
    app.watch(CLIP, "US").await;

    let outcome = poll(&app, &poller, CLIP).await;

    let PollOutcome::Failed { error, .. } = &outcome else {
        panic!("a refused write is a failed poll: {outcome:?}");
    };
    assert!(matches!(error, ProviderError::Unstorable(_)), "{error:?}");
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "a refusal is not retried within the poll"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE outcome = 'store_error' AND credits = 2 AND body_json IS NULL AND body_text LIKE '%New Sun%' AND error LIKE '%refuse_new_sun%'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM watchlist WHERE consecutive_failures = 1 AND last_error LIKE '%refuse_new_sun%'")
            .await,
        1
    );
    assert_eq!(app.data_rows().await, 0, "nothing half-written");
    assert_one_trace_and_backed_off(&app, &server).await;
}

#[tokio::test]
async fn trend_points_outside_the_requested_window_are_dropped() {
    let body = sample_with(ProviderKind::KeyApi, |v| {
        let trend = v["data"]["sound"]["trend"].as_array_mut().unwrap();
        trend.push(serde_json::json!({"time": -1e15, "value": 0.5}));
        trend.push(serde_json::json!({"time": 1e15, "value": 0.5}));
        trend.push(serde_json::json!({"time": 0, "value": 0.5}));
        // 2100-01-01, then 100,000 daily points reaching back to 1970 from the newest day.
        trend.push(serde_json::json!({"time": 4_102_444_800i64, "value": 0.5}));
        for d in 1..=100_000i64 {
            trend.push(serde_json::json!({"time": 1_769_472_000 - 86_400 * d, "value": 0.1}));
        }
    });
    // Above the default body cap on purpose: the window rule must hold on its own.
    let (app, _server, poller) = answering(200, body, |s| {
        s.provider.max_body_bytes = 16 * 1024 * 1024;
    })
    .await;

    let outcome = poll(&app, &poller, CLIP).await;

    assert!(matches!(outcome, PollOutcome::Stored { .. }), "{outcome:?}");
    assert_eq!(app.trend_points().await, 7);
    assert_eq!(
        app.count("SELECT count(*) FROM trend_points WHERE ts < '2026-01-27' OR ts > now()")
            .await,
        0
    );
}

#[tokio::test]
async fn a_body_over_the_size_cap_is_refused_unread() {
    let huge = format!(
        "{{\"code\":0,\"data\":{{\"sound\":{{\"title\":\"{}\"}}}}}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let (app, server, poller) = answering(200, huge, |_| {}).await;

    let outcome = poll(&app, &poller, CLIP).await;

    assert!(matches!(outcome, PollOutcome::Failed { .. }), "{outcome:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE outcome = 'invalid_payload' AND error LIKE '%max_body_bytes%' AND body_text IS NULL AND body_json IS NULL")
            .await,
        1
    );
    assert_one_trace_and_backed_off(&app, &server).await;
}

#[tokio::test]
async fn a_retry_after_of_1e20_seconds_is_clamped_not_panicked_on() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1e20"))
        .mount(&server)
        .await;
    let s = settings(&app.url);
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.uri()).await;
    app.watch(CLIP, "US").await;

    let outcome = poll(&app, &poller, CLIP).await;

    assert!(matches!(outcome, PollOutcome::Failed { .. }), "{outcome:?}");
    // Clamped to provider.max_retry_after (15 minutes by default), not 3e12 years.
    assert_eq!(
        app.count("SELECT count(*) FROM watchlist WHERE next_due_at BETWEEN now() + interval '14 minutes' AND now() + interval '16 minutes'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM provider_quota WHERE paused_until BETWEEN now() + interval '14 minutes' AND now() + interval '16 minutes'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_redirect_is_recorded_with_its_location_and_not_followed() {
    let app = TestApp::spawn().await;
    let elsewhere = MockServer::start().await;
    mount_sample(&elsewhere, ProviderKind::KeyApi).await;
    let server = MockServer::start().await;
    let target = format!("{}{}", elsewhere.uri(), ProviderKind::KeyApi.path());
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", target.as_str()))
        .mount(&server)
        .await;
    let s = settings(&app.url);
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.uri()).await;
    app.watch(CLIP, "US").await;

    let outcome = poll(&app, &poller, CLIP).await;

    assert!(matches!(outcome, PollOutcome::Failed { .. }), "{outcome:?}");
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM fetches WHERE outcome = 'http_error' AND http_status = 302 AND error LIKE '%{target}%'"
        ))
        .await,
        1
    );
    assert_eq!(app.data_rows().await, 0);
}

#[tokio::test]
async fn a_provider_message_is_bounded_and_kept_on_one_line() {
    let message = format!("bad\nINFO forged log line\u{1b}[31m{}", "z".repeat(100_000));
    let body = serde_json::json!({"code": 500, "message": message, "data": null}).to_string();
    let (app, _server, poller) = answering(200, body, |_| {}).await;

    poll(&app, &poller, CLIP).await;

    assert_eq!(
        app.count("SELECT count(*) FROM watchlist WHERE length(last_error) < 400 AND position(chr(10) IN last_error) = 0 AND position(chr(27) IN last_error) = 0 AND last_error LIKE '%bad\\\\nINFO forged%'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE length(api_message) < 400 AND position(chr(10) IN api_message) = 0")
            .await,
        1
    );
}

#[tokio::test]
async fn the_database_refuses_watchlist_values_the_daemon_cannot_hold() {
    let app = TestApp::spawn().await;
    app.watch(CLIP, "US").await;
    for (update, constraint) in [
        (
            "last_success_at = 'infinity'",
            "watchlist_last_success_at_finite_before_year_10000",
        ),
        (
            "next_due_at = '-infinity'",
            "watchlist_next_due_at_finite_before_year_10000",
        ),
        (
            "next_due_at = '20000-01-01'",
            "watchlist_next_due_at_finite_before_year_10000",
        ),
        (
            "poll_interval = '1000000 years'",
            "watchlist_poll_interval_at_most_10_years",
        ),
        (
            "consecutive_failures = 2147483647",
            "watchlist_consecutive_failures_at_most_1000000",
        ),
        (
            "not_found_count = -1",
            "watchlist_not_found_count_between_0_and_1000000",
        ),
    ] {
        let err = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE watchlist SET {update}"
        )))
        .execute(&app.pool)
        .await
        .expect_err(update);
        assert!(
            err.to_string().contains(constraint),
            "{update}: {err} names {constraint}"
        );
    }
}

#[tokio::test]
async fn counters_at_their_ceiling_and_odd_intervals_poll_without_overflow() {
    let (app, _server, poller) = answering(500, "oops".into(), |s| {
        s.provider.max_attempts = 1;
    })
    .await;
    sqlx::query(
        "UPDATE watchlist SET consecutive_failures = 1000000, poll_interval = '10 years',
                last_success_at = '0001-01-01', not_found_count = 1000000",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let outcome = poll(&app, &poller, CLIP).await;

    assert!(matches!(outcome, PollOutcome::Failed { .. }), "{outcome:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM watchlist WHERE consecutive_failures = 1000000 AND lease_token IS NULL")
            .await,
        1
    );
}

/// Hostile bodies, one per clip, served by one mock; every other clip gets the sample.
async fn hostile_provider() -> (MockServer, Vec<&'static str>) {
    let server = MockServer::start().await;
    let nul = sample_text_with("\"New Sun\"", "\"a\\u0000b\"");
    let surrogate = sample_text_with("\"New Sun\"", "\"\\udfff\"");
    let times = sample_with(ProviderKind::KeyApi, |v| {
        v["data"]["sound"]["trend"] = serde_json::json!([{"time": -1e15, "value": 1}]);
    });
    let values = sample_with(ProviderKind::KeyApi, |v| {
        v["data"]["sound"]["trend"][0]["value"] = serde_json::json!(1e300);
        v["data"]["sound"]["rank"] = serde_json::json!(1e18);
    });
    let bodies: Vec<(&'static str, u16, String)> = vec![
        ("101", 200, nul),
        ("102", 200, surrogate),
        ("103", 200, times),
        ("104", 200, values),
        ("105", 200, "{\"code\":0,\"data\":{\"sou".into()),
        ("106", 200, "[]".into()),
        ("107", 503, "<html>".into()),
    ];
    let clips = bodies.iter().map(|(c, _, _)| *c).collect();
    for (clip, status, body) in bodies {
        Mock::given(method("GET"))
            .and(path(ProviderKind::KeyApi.path()))
            .and(query_param("clip_id", clip))
            .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/json"))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path(ProviderKind::KeyApi.path()))
        .and(query_param("clip_id", "108"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1e20"))
        .mount(&server)
        .await;
    let mut clips: Vec<&'static str> = clips;
    clips.push("108");
    (server, clips)
}

#[tokio::test]
async fn a_daemon_survives_every_hostile_case_at_once_with_requests_per_entry_bounded() {
    let app = TestApp::spawn().await;
    let (server, clips) = hostile_provider().await;
    let mut s = settings(&app.url);
    s.poll.lease_ttl = Duration::from_secs(4);
    s.provider.request_timeout = Duration::from_secs(1);
    s.provider.max_attempts = 3;
    s.poll.failure_backoff = Duration::from_mins(10);
    // Clip 108's `Retry-After: 1e20` pauses the provider for everyone, clamped to this.
    s.provider.max_retry_after = Duration::from_secs(2);
    // Clip 107's 503s (and timeouts on a loaded machine) must not open the circuit breaker and
    // stop the other clips' polls: this test is about bodies; tests/failover.rs about outages.
    s.provider.breaker_failures = std::num::NonZeroU32::new(100).unwrap();
    for clip in &clips {
        app.watch(clip, "US").await;
    }
    let worker = keyapi_worker(&s, &app, &server.uri(), "hostile").await;
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { worker.run(cancel).await }
    });

    // Three lease periods: a poison entry bought once per lease would show up here.
    tokio::time::sleep(Duration::from_secs(12)).await;
    // An analyst's hostile UPDATE while it runs is refused, and the daemon goes on.
    assert!(
        sqlx::query("UPDATE watchlist SET last_success_at = 'infinity'")
            .execute(&app.pool)
            .await
            .is_err()
    );
    cancel.cancel();
    run.await
        .expect("the daemon did not panic")
        .expect("the daemon ended cleanly");

    let mut per_clip: HashMap<String, usize> = HashMap::new();
    for r in server.received_requests().await.unwrap() {
        let clip = r
            .url
            .query_pairs()
            .find(|(k, _)| k == "clip_id")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        *per_clip.entry(clip).or_default() += 1;
    }
    for clip in &clips {
        let n = per_clip.get(*clip).copied().unwrap_or(0);
        // A poison answer (a 200 whose body cannot be stored as data) is bought once, then the
        // entry backs off (10 minutes here); a transient failure (503, 429) retries up to
        // max_attempts (3) per poll, and a provider-wide pause may give the lease back once
        // without counting a failure, so at most two polls' worth.
        let bound = if matches!(*clip, "107" | "108") { 6 } else { 1 };
        assert!(
            (1..=bound).contains(&n),
            "clip {clip}: {n} requests; expected 1..={bound} in three lease periods"
        );
        let rows = app
            .count(&format!(
                "SELECT count(*) FROM fetches WHERE clip_id = '{clip}'"
            ))
            .await;
        assert_eq!(rows, n as i64, "clip {clip}: one fetches row per request");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM trend_points WHERE ts < '2016-01-01' OR ts > now() + interval '1 day'")
            .await,
        0
    );
}

#[tokio::test]
async fn the_admin_listener_drops_a_client_that_never_finishes_its_request() {
    let app = TestApp::spawn().await;
    let mut s = settings(&app.url);
    s.admin.listen = Some(([127, 0, 0, 1], 0).into());
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, "http://127.0.0.1:9/").await;
    let addr = soundtrend::web::admin::start(&s.admin, app.pool.clone(), poller)
        .await
        .unwrap()
        .expect("listening");

    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read(&mut buf))
        .await
        .expect("the server hung up within 20 s");

    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)) || String::from_utf8_lossy(&buf).contains("408"),
        "closed or timed out: {read:?}"
    );
    assert!(
        waited <= soundtrend::web::admin::HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "dropped after {waited:?}"
    );
    // The listener still serves others.
    let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    ok.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn readiness_probes_the_database_once_per_few_seconds_whatever_the_request_rate() {
    // A "database" that accepts connections and never answers: each probe would take the whole
    // acquire timeout, so only a cached result lets twenty requests finish quickly.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let url = format!("postgres://postgres@{silent_addr}/none");
    let mut s = settings(&url);
    s.admin.listen = Some(([127, 0, 0, 1], 0).into());
    s.database.connect_timeout = Duration::from_millis(1500);
    let pool = soundtrend::store::pool(&s.database).unwrap();
    let poller = std::sync::Arc::new(Poller::new(
        pool.clone(),
        client(&s, ProviderKind::KeyApi, "http://127.0.0.1:9/"),
        quota(&s, ProviderKind::KeyApi),
        soundtrend::poll::PollOptions::from_settings(&s),
        std::sync::Arc::new(soundtrend::clock::SystemClock),
    ));
    let addr = soundtrend::web::admin::start(&s.admin, pool, poller)
        .await
        .unwrap()
        .expect("listening");
    let get = |addr| async move {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).await.unwrap();
        answer
    };

    let first = get(addr).await;
    assert!(first.contains("database unreachable"), "{first}");
    let started = Instant::now();
    for _ in 0..20 {
        assert!(get(addr).await.contains("database unreachable"));
    }

    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "20 readiness checks took {:?}: the database was probed again",
        started.elapsed()
    );
}

/// A provider whose next answer the test sets; counts the requests it got.
#[derive(Clone, Default)]
struct ScriptedProvider {
    body: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ScriptedProvider {
    async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().fallback(move || {
            let me = me.clone();
            async move {
                me.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = me.body.lock().unwrap().clone();
                ([("content-type", "application/json")], body)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/")
    }
}

/// Bodies a hostile or broken provider could send: arbitrary bytes, the sample with arbitrary
/// text, numbers and trend points, and raw `\u` escapes (surrogates, NUL) in a string.
fn hostile_body() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let point = (
        prop_oneof![
            any::<i64>(),
            1_400_000_000i64..1_900_000_000,
            Just(1_769_472_000i64)
        ],
        prop_oneof![any::<f64>(), 0.0f64..1.0, Just(1.0)],
    );
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        (
            any::<String>(),
            proptest::collection::vec(point, 0..40),
            any::<i64>(),
            any::<f64>()
        )
            .prop_map(|(title, points, rank, score)| {
                sample_with(ProviderKind::KeyApi, |v| {
                    let sound = &mut v["data"]["sound"];
                    sound["title"] = serde_json::json!(title);
                    sound["rank"] = serde_json::json!(rank);
                    sound["audience_countries"][0]["score"] = serde_json::json!(score);
                    sound["trend"] = points
                        .iter()
                        .map(|(t, v)| serde_json::json!({"time": t, "value": v}))
                        .collect();
                })
                .into_bytes()
            }),
        (any::<u16>(), 0usize..4).prop_map(|(unit, cut)| {
            let body = sample_text_with("\"New Sun\"", &format!("\"\\u{unit:04x}\""));
            // Sometimes cut short, as a dropped connection's body would be.
            let keep = body.len() - cut * body.len() / 8;
            body.into_bytes()[..keep].to_vec()
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_bodies_never_panic_leave_one_fetch_row_each_and_no_row_outside_the_window() {
    use proptest::test_runner::{Config, TestRunner};

    let app = TestApp::spawn().await;
    let provider = ScriptedProvider::default();
    let base = provider.start().await;
    let mut s = settings(&app.url);
    s.provider.max_attempts = 1;
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &base).await;
    app.watch(CLIP, "US").await;
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });

    let result = runner.run(&hostile_body(), |body| {
        *provider.body.lock().unwrap() = body;
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let before = provider.hits.load(std::sync::atomic::Ordering::SeqCst) as i64;
                poll(&app, &poller, CLIP).await;
                let hits = provider.hits.load(std::sync::atomic::Ordering::SeqCst) as i64;
                assert_eq!(hits - before, 1, "one request per poll (max_attempts = 1)");
                assert_eq!(
                    app.fetches().await,
                    hits,
                    "exactly one fetches row per attempt"
                );
                assert_eq!(
                    app.count(
                        "SELECT count(*) FROM trend_points t JOIN fetches f ON f.id = t.fetch_id
                         WHERE t.ts < '2016-01-01' OR t.ts > f.requested_at + interval '1 day'
                            OR t.ts <= (SELECT max(ts) FROM trend_points u WHERE u.fetch_id = t.fetch_id)
                                       - interval '7 days'"
                    )
                    .await,
                    0,
                    "no derived row outside the requested window"
                );
                assert_eq!(
                    app.leases_held()
                        .await,
                    0,
                    "the lease is always given back"
                );
            });
        });
        Ok(())
    });

    result.unwrap();
}

#[test]
fn every_accepted_payload_yields_rows_that_satisfy_the_validation_rules() {
    use proptest::test_runner::{Config, TestRunner};
    use soundtrend::domain::{ClipId, Region};
    use soundtrend::normalize::{normalize, rules, Observation};

    let obs = Observation {
        clip_id: ClipId::parse(CLIP).unwrap(),
        region: Region::parse("US").unwrap(),
        period: Period::Days7,
        observed_at: chrono::DateTime::from_timestamp(1_770_000_000, 0).unwrap(),
    };
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        failure_persistence: None,
        ..Config::default()
    });
    let accepted = std::sync::atomic::AtomicU32::new(0);

    runner
        .run(&hostile_body(), |body| {
            if let Ok(detail) = soundtrend::provider::parse_response(200, &body) {
                if let Ok(rows) = normalize(&detail, &obs) {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Err(broken) = rules::check(&rows, &obs) {
                        panic!("accepted rows break a rule: {broken}");
                    }
                }
            }
            Ok(())
        })
        .unwrap();

    let accepted = accepted.into_inner();
    assert!(
        accepted > 100,
        "the strategy reaches the normalizer: {accepted}"
    );
}
/// The region list lives twice, as the watchlist's CHECK (what analysts' INSERTs meet) and as
/// `Region::parse` (what the CLI and the store's decoding use): they must accept the same codes.
#[tokio::test]
async fn the_watchlist_check_and_region_parse_accept_exactly_the_same_codes() {
    let app = TestApp::spawn().await;
    let mut disagreements = Vec::new();
    let mut accepted = 0;
    for a in b'A'..=b'Z' {
        for b in b'A'..=b'Z' {
            let code = String::from_utf8(vec![a, b]).unwrap();
            let mut tx = app.pool.begin().await.unwrap();
            let by_database =
                sqlx::query("INSERT INTO watchlist (clip_id, region) VALUES ('1', $1)")
                    .bind(&code)
                    .execute(&mut *tx)
                    .await
                    .is_ok();
            tx.rollback().await.unwrap();
            let by_rust = soundtrend::domain::Region::parse(&code).is_ok();
            accepted += usize::from(by_database);
            if by_database != by_rust {
                disagreements.push((code, by_database, by_rust));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "database vs Rust: {disagreements:?}"
    );
    assert_eq!(accepted, soundtrend::domain::ISO_3166_ALPHA2.len());
}
