//! A watchlist row becomes normalized rows: both dialects, re-polls, every fault kind, and the
//! constraints that guard the watchlist. Real Postgres, local HTTP mocks.

mod common;

use std::time::Duration;

use chrono::NaiveDate;
use common::*;
use soundtrend::domain::Period;
use soundtrend::poll::{PollOutcome, SkipReason};
use soundtrend::provider::ProviderKind;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn keyapi_sample_lands_in_every_table_with_bearer_auth() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/tiktok/trending/music/detail"))
        .and(header(
            "authorization",
            format!("Bearer {API_KEY}").as_str(),
        ))
        .and(query_param("period", "7"))
        .and(query_param("region", "US"))
        .and(query_param("clip_id", CLIP))
        .respond_with(ResponseTemplate::new(200).set_body_raw(SAMPLE, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let s = settings(&app.url);
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.uri()).await;
    app.watch(CLIP, "US").await;

    let outcome = poll(&app, &poller, CLIP, "US", Some(Period::Days7)).await;

    assert!(matches!(outcome, PollOutcome::Stored { .. }), "{outcome:?}");
    assert_eq!(app.count("SELECT count(*) FROM sounds WHERE title = 'New Sun' AND author = 'Chihei Hatakeyama' AND duration = 60").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM sound_snapshots WHERE rank IS NULL AND region = 'US' AND period = 7").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM trend_points WHERE clip_id = '6703723351497508865' AND region = 'US'").await, 7);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM trend_points WHERE ts = to_timestamp(1769990400) AND value = 1"
        )
        .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM audience_countries WHERE position = 1 AND country_code = 'LV' AND country_name = 'Latvia' AND provider_id = '458258' AND score = 1426").await, 1);
    assert_eq!(app.audience_countries().await, 10);
    assert_eq!(app.count("SELECT count(*) FROM audience_interests WHERE interest_id = '10004' AND label = 'diversify_10004' AND name = 'Scripted Drama'").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM audience_interests").await,
        5
    );
    assert_eq!(app.count("SELECT count(*) FROM fetches WHERE outcome = 'ok' AND provider = 'keyapi' AND request_id = '10ddeaa7-1b62-43c1-918c-f0e164fdb631' AND body_json->>'message' = 'success' AND credits = 2").await, 1);
    // Every derived row points at the fetch it came from.
    assert_eq!(
        app.count("SELECT count(*) FROM trend_points t JOIN fetches f ON f.id = t.fetch_id")
            .await,
        7
    );
    assert_eq!(
        app.count("SELECT count(*) FROM watchlist WHERE last_success_at IS NOT NULL AND consecutive_failures = 0 AND lease_token IS NULL AND next_due_at > now() + interval '20 hours'").await,
        1
    );
}

#[tokio::test]
async fn echotik_sample_lands_with_basic_auth() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    // base64("ana:test-pass-77b2")
    let basic = format!(
        "Basic {}",
        base64_encode(format!("{ECHO_USER}:{ECHO_PASSWORD}").as_bytes())
    );
    Mock::given(method("GET"))
        .and(path("/api/v3/realtime/trending/popular/music/detail"))
        .and(header("authorization", basic.as_str()))
        .and(query_param("region", "GB"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(ECHOTIK_SAMPLE, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let s = settings(&app.url);
    let poller = poller(&s, &app.pool, ProviderKind::EchoTik, &server.uri()).await;
    app.watch(CLIP, "gb").await; // lower case is accepted and stored upper-cased

    let outcome = poll(&app, &poller, CLIP, "GB", Some(Period::Days7)).await;

    assert!(matches!(outcome, PollOutcome::Stored { .. }), "{outcome:?}");
    assert_eq!(app.count("SELECT count(*) FROM fetches WHERE outcome = 'ok' AND provider = 'echotik' AND credits = 1 AND body_json->>'message' = 'ok'").await, 1);
    assert_eq!(app.data_rows().await, 1 + 1 + 7 + 10 + 5);
}

#[tokio::test]
async fn repolling_an_overlapping_window_adds_no_duplicate_points_and_updates_the_sound() {
    let app = TestApp::spawn().await;
    let s = settings(&app.url);
    app.watch(CLIP, "US").await;
    let day = NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();

    let first = MockServer::start().await;
    mount_generated(&first, ProviderKind::KeyApi, CLIP, "US", 7, day).await;
    let poller1 = poller(&s, &app.pool, ProviderKind::KeyApi, &first.uri()).await;
    assert!(matches!(
        poll(&app, &poller1, CLIP, "US", Some(Period::Days7)).await,
        PollOutcome::Stored { .. }
    ));

    // The next day's window overlaps six days, with other relative values, and a renamed sound.
    let second = MockServer::start().await;
    let mut body = soundtrend::provider::fake::response(
        ProviderKind::KeyApi,
        CLIP,
        "US",
        7,
        day.succ_opt().unwrap(),
    );
    body["data"]["sound"]["title"] = serde_json::json!("New Sun (Remastered)");
    for p in body["data"]["sound"]["trend"].as_array_mut().unwrap() {
        p["value"] = serde_json::json!(0.42);
    }
    mount_body(&second, ProviderKind::KeyApi, 200, body.to_string()).await;
    let poller2 = poller(&s, &app.pool, ProviderKind::KeyApi, &second.uri()).await;
    assert!(matches!(
        poll(&app, &poller2, CLIP, "US", Some(Period::Days7)).await,
        PollOutcome::Stored { .. }
    ));

    assert_eq!(app.trend_points().await, 8);
    assert_eq!(
        app.count("SELECT count(DISTINCT ts) FROM trend_points")
            .await,
        8
    );
    let newest_fetch = app.count("SELECT max(id) FROM fetches").await;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM trend_points WHERE fetch_id = {newest_fetch} AND value = 0.42"
        ))
        .await,
        7
    );
    assert_eq!(
        app.count("SELECT count(*) FROM trend_points WHERE value <> 0.42")
            .await,
        1,
        "the day only the first window covered keeps its value"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM sounds WHERE title = 'New Sun (Remastered)'")
            .await,
        1
    );
    assert_eq!(app.snapshots().await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM sounds WHERE first_seen_at < last_seen_at")
            .await,
        1
    );
}

/// Polls once against `server` with one attempt allowed and returns the fetch outcome stored.
async fn single_attempt_outcome(app: &TestApp, base: &str) -> (PollOutcome, String) {
    let mut s = settings(&app.url);
    s.provider.max_attempts = 1;
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, base).await;
    app.watch(CLIP, "US").await;
    let outcome = poll(app, &poller, CLIP, "US", Some(Period::Days7)).await;
    let stored: String = sqlx::query_scalar("SELECT outcome FROM fetches ORDER BY id DESC LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    (outcome, stored)
}

async fn assert_failure_recorded(
    app: &TestApp,
    expected: &str,
    outcome: &PollOutcome,
    stored: &str,
) {
    assert_eq!(stored, expected, "{outcome:?}");
    assert!(matches!(outcome, PollOutcome::Failed { .. }), "{outcome:?}");
    assert_eq!(
        app.data_rows().await,
        0,
        "a failed poll writes no data rows"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM watchlist WHERE consecutive_failures = 1 AND last_error IS NOT NULL AND next_due_at > now() AND lease_token IS NULL").await,
        1,
        "the failure is counted on the entry and it is retried later"
    );
}

#[tokio::test]
async fn a_429_lands_as_rate_limited_and_pauses_the_shared_quota() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "30")
                .set_body_string("slow down"),
        )
        .mount(&server)
        .await;
    let (outcome, stored) = single_attempt_outcome(&app, &server.uri()).await;
    assert_failure_recorded(&app, "rate_limited", &outcome, &stored).await;
    assert_eq!(
        app.providers_paused_beyond(Duration::from_secs(25)).await,
        1
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM fetches WHERE http_status = 429 AND body_text = 'slow down'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_server_error_lands_as_http_error() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    mount_body(
        &server,
        ProviderKind::KeyApi,
        502,
        "<html>bad gateway</html>".into(),
    )
    .await;
    let (outcome, stored) = single_attempt_outcome(&app, &server.uri()).await;
    assert_failure_recorded(&app, "http_error", &outcome, &stored).await;
}

#[tokio::test]
async fn a_slow_provider_lands_as_timeout() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(SAMPLE, "application/json")
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let (outcome, stored) = single_attempt_outcome(&app, &server.uri()).await;
    assert_failure_recorded(&app, "timeout", &outcome, &stored).await;
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE http_status IS NULL")
            .await,
        1
    );
}

#[tokio::test]
async fn a_reset_connection_lands_as_network_error() {
    let app = TestApp::spawn().await;
    let base = raw_fault_server(RawFault::CloseImmediately).await;
    let (outcome, stored) = single_attempt_outcome(&app, &base).await;
    assert_failure_recorded(&app, "network_error", &outcome, &stored).await;
}

#[tokio::test]
async fn a_transfer_cut_mid_body_lands_as_network_error() {
    let app = TestApp::spawn().await;
    let base = raw_fault_server(RawFault::TruncatedTransfer).await;
    let (outcome, stored) = single_attempt_outcome(&app, &base).await;
    assert_failure_recorded(&app, "network_error", &outcome, &stored).await;
}

#[tokio::test]
async fn a_refused_connection_lands_as_network_error() {
    let app = TestApp::spawn().await;
    // Bind then drop: nothing listens on the port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (outcome, stored) =
        single_attempt_outcome(&app, &format!("http://127.0.0.1:{port}/")).await;
    assert_failure_recorded(&app, "network_error", &outcome, &stored).await;
}

#[tokio::test]
async fn malformed_json_lands_as_invalid_payload_with_the_body_kept_as_text() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    mount_body(
        &server,
        ProviderKind::KeyApi,
        200,
        "{\"code\": 0, \"data\": {oops".into(),
    )
    .await;
    let (outcome, stored) = single_attempt_outcome(&app, &server.uri()).await;
    assert_failure_recorded(&app, "invalid_payload", &outcome, &stored).await;
    assert_eq!(
        app.count(
            "SELECT count(*) FROM fetches WHERE body_text LIKE '%oops' AND body_json IS NULL"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn truncated_json_lands_as_invalid_payload() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    mount_body(
        &server,
        ProviderKind::KeyApi,
        200,
        SAMPLE[..SAMPLE.len() / 2].to_owned(),
    )
    .await;
    let (outcome, stored) = single_attempt_outcome(&app, &server.uri()).await;
    assert_failure_recorded(&app, "invalid_payload", &outcome, &stored).await;
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE error LIKE '%truncated%'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_business_error_lands_as_api_error_with_its_code_and_message() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    mount_body(
        &server,
        ProviderKind::KeyApi,
        200,
        r#"{"code": 10010, "message": "insufficient balance", "data": null, "requestId": "r-1"}"#
            .into(),
    )
    .await;
    let (outcome, stored) = single_attempt_outcome(&app, &server.uri()).await;
    assert_failure_recorded(&app, "api_error", &outcome, &stored).await;
    assert_eq!(app.count("SELECT count(*) FROM fetches WHERE api_code = 10010 AND api_message = 'insufficient balance' AND request_id = 'r-1' AND body_json IS NOT NULL").await, 1);
}

#[tokio::test]
async fn a_response_without_sound_lands_as_invalid_payload() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    mount_body(
        &server,
        ProviderKind::KeyApi,
        200,
        sample_with(ProviderKind::KeyApi, |v| {
            v["data"].as_object_mut().unwrap().remove("sound");
        }),
    )
    .await;
    let (outcome, stored) = single_attempt_outcome(&app, &server.uri()).await;
    assert_failure_recorded(&app, "invalid_payload", &outcome, &stored).await;
}

#[tokio::test]
async fn values_of_the_wrong_type_land_as_invalid_payload() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    mount_body(
        &server,
        ProviderKind::KeyApi,
        200,
        sample_with(ProviderKind::KeyApi, |v| {
            v["data"]["sound"]["audience_countries"] = serde_json::json!({"LV": 1});
        }),
    )
    .await;
    let (outcome, stored) = single_attempt_outcome(&app, &server.uri()).await;
    assert_failure_recorded(&app, "invalid_payload", &outcome, &stored).await;
}

#[tokio::test]
async fn a_response_for_another_clip_lands_as_invalid_payload() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    mount_body(
        &server,
        ProviderKind::KeyApi,
        200,
        sample_with(ProviderKind::KeyApi, |v| {
            v["data"]["sound"]["clip_id"] = serde_json::json!("42");
        }),
    )
    .await;
    let (outcome, stored) = single_attempt_outcome(&app, &server.uri()).await;
    assert_failure_recorded(&app, "invalid_payload", &outcome, &stored).await;
}

#[tokio::test]
async fn nulls_and_missing_fields_are_stored_as_nulls() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    let body = sample_with(ProviderKind::KeyApi, |v| {
        let sound = v["data"]["sound"].as_object_mut().unwrap();
        sound.insert("title".into(), serde_json::Value::Null);
        sound.insert("trend".into(), serde_json::Value::Null);
        sound.insert("audience_interests".into(), serde_json::Value::Null);
        sound.remove("author");
        sound.remove("longevity");
    });
    mount_body(&server, ProviderKind::KeyApi, 200, body).await;
    let (outcome, stored) = single_attempt_outcome(&app, &server.uri()).await;
    assert_eq!(stored, "ok", "{outcome:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM sounds WHERE title IS NULL AND author IS NULL")
            .await,
        1
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM sound_snapshots WHERE popular_days IS NULL AND trend_points = 0"
        )
        .await,
        1
    );
    assert_eq!(app.trend_points().await, 0);
    assert_eq!(app.audience_countries().await, 10);
}

#[tokio::test]
async fn rejected_credentials_stop_polling_without_counting_against_the_entry() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    let s = settings(&app.url);
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.uri()).await;
    app.watch(CLIP, "US").await;
    app.watch(CLIP, "GB").await;

    let first = poll(&app, &poller, CLIP, "US", None).await;
    let second = poll(&app, &poller, CLIP, "GB", None).await;

    assert!(
        matches!(first, PollOutcome::Skipped(SkipReason::CredentialsRejected)),
        "{first:?}"
    );
    assert!(
        matches!(
            second,
            PollOutcome::Skipped(SkipReason::CredentialsRejected)
        ),
        "{second:?}"
    );
    assert!(
        poller.refresh_health().await.unwrap().is_empty(),
        "no provider left to claim work for"
    );
    assert_eq!(
        app.fetches_with_outcome("auth_error").await,
        1,
        "no second request on a rejected key"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM watchlist WHERE consecutive_failures = 0 AND lease_token IS NULL"
        )
        .await,
        2
    );
    assert_eq!(
        app.count("SELECT count(*) FROM provider_quota WHERE auth_failed_at IS NOT NULL")
            .await,
        1
    );
}

#[tokio::test]
async fn transient_failures_are_retried_within_the_poll() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_sample(&server, ProviderKind::KeyApi).await;
    let s = settings(&app.url);
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.uri()).await;
    app.watch(CLIP, "US").await;

    let outcome = poll(&app, &poller, CLIP, "US", Some(Period::Days7)).await;

    assert!(
        matches!(outcome, PollOutcome::Stored { attempts: 3, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM fetches WHERE outcome = 'http_error' AND http_status = 503"
        )
        .await,
        2
    );
    let attempts: String =
        sqlx::query_scalar("SELECT string_agg(attempt::text, ',' ORDER BY id) FROM fetches")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(attempts, "1,2,3");
    assert_eq!(
        app.count("SELECT sum(credits) FROM fetches").await,
        6,
        "every retry is paid for"
    );
}

#[tokio::test]
async fn a_clip_the_provider_does_not_know_is_disabled_after_repeated_not_found() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    mount_body(
        &server,
        ProviderKind::KeyApi,
        200,
        r#"{"code": 404, "message": "Music not found", "data": null}"#.into(),
    )
    .await;
    let mut s = settings(&app.url);
    s.provider.disable_after_not_found = std::num::NonZeroU32::new(2).unwrap();
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.uri()).await;
    app.watch(CLIP, "US").await;

    poll(&app, &poller, CLIP, "US", None).await;
    assert_eq!(app.enabled_entries().await, 1);
    poll(&app, &poller, CLIP, "US", None).await;

    assert_eq!(app.count("SELECT count(*) FROM watchlist WHERE NOT enabled AND disabled_reason LIKE '%does not exist 2 polls in a row%Music not found%'").await, 1);
}

#[tokio::test]
async fn bad_watchlist_inserts_are_refused_by_named_constraints() {
    let app = TestApp::spawn().await;
    let cases = [
        ("INSERT INTO watchlist (clip_id, region) VALUES ('abc', 'US')", "watchlist_clip_id_digits_only"),
        ("INSERT INTO watchlist (clip_id, region) VALUES ('', 'US')", "watchlist_clip_id_digits_only"),
        ("INSERT INTO watchlist (clip_id, region) VALUES ('1', 'XX')", "watchlist_region_iso3166_alpha2_upper_case"),
        ("INSERT INTO watchlist (clip_id, region) VALUES ('1', 'USA')", "watchlist_region_iso3166_alpha2_upper_case"),
        ("INSERT INTO watchlist (clip_id, region, period) VALUES ('1', 'US', 14)", "watchlist_period_7_30_or_120_or_null"),
        ("INSERT INTO watchlist (clip_id, region, poll_interval) VALUES ('1', 'US', '10 seconds')", "watchlist_poll_interval_at_least_1_minute"),
    ];
    for (sql, constraint) in cases {
        let err = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&app.pool)
            .await
            .expect_err(sql);
        let db_err = err.as_database_error().expect("a database error");
        assert_eq!(db_err.constraint(), Some(constraint), "{sql}: {db_err}");
        assert!(
            db_err.message().contains(constraint),
            "the message names the rule: {}",
            db_err.message()
        );
    }
    sqlx::query("INSERT INTO watchlist (clip_id, region) VALUES (' 6703723351497508865 ', ' us ')")
        .execute(&app.pool)
        .await
        .expect("lower case with spaces is accepted");
    assert_eq!(app.count("SELECT count(*) FROM watchlist WHERE region = 'US' AND clip_id = '6703723351497508865' AND period IS NULL AND poll_interval = '1 day' AND enabled").await, 1);
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn sounds_keep_the_newest_metadata_and_the_earliest_first_seen_whatever_the_write_order() {
    use soundtrend::normalize::{normalize, Observation};
    use soundtrend::provider::wire::{Envelope, MusicDetail};
    use soundtrend::provider::Outcome;
    use soundtrend::store::fetches::FetchRecord;
    use soundtrend::store::ingest::record_success;

    let app = TestApp::spawn().await;
    let env: Envelope = serde_json::from_str(SAMPLE).unwrap();
    let detail: MusicDetail = serde_json::from_value(env.data.unwrap()).unwrap();
    let early = chrono::Utc::now() - chrono::Duration::hours(2);
    let late = early + chrono::Duration::hours(1);
    // The later observation is written first (as concurrent polls of two regions can be).
    for (at, region, title) in [(late, "GB", "Newer title"), (early, "US", "Older title")] {
        let obs = Observation {
            clip_id: soundtrend::domain::ClipId::parse(CLIP).unwrap(),
            region: soundtrend::domain::Region::parse(region).unwrap(),
            period: Period::Days7,
            observed_at: at,
        };
        let mut rows = normalize(&detail, &obs).unwrap();
        rows.sound.title = Some(title.into());
        let record = FetchRecord {
            duration_ms: 1,
            http_status: Some(200),
            api_code: Some(0),
            credits: 2,
            ..FetchRecord::new(CLIP, region, 7, ProviderKind::KeyApi, at, Outcome::Ok)
        };
        record_success(&app.pool, &record, &rows, None, 0.0)
            .await
            .unwrap();
    }

    let (title, first, last): (
        String,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    ) = sqlx::query_as("SELECT title, first_seen_at, last_seen_at FROM sounds")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(title, "Newer title");
    assert_eq!(first.timestamp_micros(), early.timestamp_micros());
    assert_eq!(last.timestamp_micros(), late.timestamp_micros());
}
