//! `/metrics`, `/healthz` and `/readyz` of `soundtrend run`. Its own test binary, so the
//! process-wide metrics recorder sees only this test's polls.

mod common;

use std::time::Duration;

use common::*;
use soundtrend::poll::Worker;
use soundtrend::provider::ProviderKind;
use tokio_util::sync::CancellationToken;

fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_scrape_after_some_polls_shows_the_counters_moved_by_the_right_amounts() {
    let db = TestDb::new().await;
    let server = RecordingServer::start().await;
    server.set(|b| {
        b.rate_limit_next = 1;
        b.retry_after_secs = 0;
    });
    let mut s = settings(&db.url);
    s.admin.listen = "127.0.0.1:0".into();
    watch_many(&db, 4).await;
    let poller = poller(&s, &db.pool, ProviderKind::KeyApi, &server.base).await;
    let addr = soundtrend::web::admin::start(&s, db.pool.clone(), poller.clone())
        .await
        .unwrap()
        .unwrap();
    let http = reqwest::Client::new();

    Worker::new(poller.clone(), worker_options(&s, "w"))
        .drain(&CancellationToken::new())
        .await
        .unwrap();
    soundtrend::poll::maintain(&db.pool, &poller, 0)
        .await
        .unwrap();
    let scrape = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert_eq!(
        value(
            &scrape,
            r#"soundtrend_polls_total{provider="keyapi",outcome="ok"}"#
        ),
        4.0,
        "{scrape}"
    );
    assert_eq!(
        value(
            &scrape,
            r#"soundtrend_requests_total{provider="keyapi",outcome="ok"}"#
        ),
        4.0
    );
    assert_eq!(
        value(
            &scrape,
            r#"soundtrend_requests_total{provider="keyapi",outcome="rate_limited"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            r#"soundtrend_rate_limited_total{provider="keyapi"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&scrape, r#"soundtrend_retries_total{provider="keyapi"}"#),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            r#"soundtrend_credits_spent_total{provider="keyapi"}"#
        ),
        10.0,
        "5 requests at 2 credits"
    );
    assert_eq!(
        value(
            &scrape,
            r#"soundtrend_credits_spent_today{provider="keyapi"}"#
        ),
        10.0
    );
    assert_eq!(
        value(
            &scrape,
            r#"soundtrend_request_duration_seconds_count{provider="keyapi"}"#
        ),
        5.0
    );
    assert_eq!(
        value(
            &scrape,
            r#"soundtrend_rows_written_total{table="audience_countries"}"#
        ),
        40.0
    );
    assert_eq!(
        value(
            &scrape,
            r#"soundtrend_rows_written_total{table="sound_snapshots"}"#
        ),
        4.0
    );
    assert_eq!(value(&scrape, "soundtrend_entries_due"), 0.0);
    assert_eq!(value(&scrape, "soundtrend_leases_held"), 0.0);
    assert!(!scrape.contains("clip_id"), "no per-clip labels");

    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());

    // Rejected credentials make the process unready.
    poller.health().reject_credentials("http 401");
    let ready = http
        .get(format!("http://{addr}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("credentials"));
}
