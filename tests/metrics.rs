//! `/metrics`, `/healthz` and `/readyz` of `soundtrend run`. Its own test binary, so the
//! process-wide metrics recorder sees only this test's polls.

mod common;

use std::time::Duration;

use common::*;
use soundtrend::poll::Worker;
use soundtrend::provider::ProviderKind;
use tokio_util::sync::CancellationToken;

/// The value of `series` (name and labels exactly as exposed) in a Prometheus scrape; fails the
/// test when the series is not there, so that a check on it cannot pass by its absence.
fn value(scrape: &str, series: &str) -> f64 {
    let line = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.rsplit_once(' ').is_some_and(|(name, _)| name == series))
        .unwrap_or_else(|| panic!("no series {series} in the scrape:\n{scrape}"));
    let (_, v) = line.rsplit_once(' ').expect("a series line has a value");
    v.parse()
        .unwrap_or_else(|e| panic!("{series}: {v:?} is not a number: {e}"))
}

#[test]
#[should_panic(expected = "no series soundtrend_polls_total")]
fn a_series_missing_from_the_scrape_fails_the_check_instead_of_reading_zero() {
    let scrape = "# TYPE soundtrend_polls_total_x counter\nsoundtrend_polls_total_x 0\n";
    value(scrape, "soundtrend_polls_total");
}

#[tokio::test]
async fn a_scrape_after_some_polls_shows_the_counters_moved_by_the_right_amounts() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    server.set_faults(|b| {
        b.rate_limit_next = 1;
        b.retry_after_secs = 0;
    });
    let mut s = settings(&app.url);
    s.admin.listen = Some(([127, 0, 0, 1], 0).into());
    app.watch_many(4).await;
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.base).await;
    let addr = soundtrend::web::admin::start(&s.admin, app.pool.clone(), poller.clone())
        .await
        .unwrap()
        .unwrap();
    let http = reqwest::Client::new();

    Worker::new(poller.clone(), worker_options(&s, "w"))
        .drain(&CancellationToken::new())
        .await
        .unwrap();
    soundtrend::poll::maintain(&app.pool, &poller, 0)
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
    // (as any instance may have recorded it: readyz reads the shared state).
    sqlx::query("UPDATE provider_quota SET auth_failed_at = now(), auth_error = 'http 401'")
        .execute(&app.pool)
        .await
        .unwrap();
    let ready = http
        .get(format!("http://{addr}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("credentials"));
}

#[tokio::test]
async fn off_loopback_the_metrics_ask_for_the_token_and_the_probes_stay_open() {
    let app = TestApp::spawn().await;
    let mut s = settings(&app.url);
    s.admin.listen = Some(([0, 0, 0, 0], 0).into());
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, "http://127.0.0.1:9/").await;
    let token = "adm-7c1e44f0b2";
    let addr = soundtrend::web::admin::start_with_token(
        &s.admin,
        app.pool.clone(),
        poller,
        Some(token.to_owned().into()),
    )
    .await
    .unwrap()
    .unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", addr.port());
    let http = reqwest::Client::new();
    let status = async |req: reqwest::RequestBuilder| req.send().await.unwrap().status().as_u16();

    assert_eq!(status(http.get(url("/metrics"))).await, 401, "no token");
    assert_eq!(
        status(http.get(url("/metrics")).bearer_auth("wrong")).await,
        401,
        "a wrong token"
    );
    assert_eq!(
        status(http.get(url("/metrics")).bearer_auth(token)).await,
        200
    );
    // A browser signs in once; the cookie it gets opens the pages (and holds no token).
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let wrong = no_redirects
        .post(url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let signed_in = no_redirects
        .post(url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status().as_u16(), 303);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && !cookie.contains(token),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(
        status(
            http.get(url("/metrics"))
                .header("cookie", format!("theme=dark; {pair}"))
        )
        .await,
        200,
        "the cookie from /login"
    );
    assert_eq!(
        status(
            http.get(url("/metrics"))
                .header("cookie", format!("soundtrend_admin={token}"))
        )
        .await,
        401,
        "the raw token is not a cookie value"
    );
    assert_eq!(
        status(http.get(url("/login"))).await,
        200,
        "the form is open"
    );
    assert_eq!(status(http.get(url("/"))).await, 401, "the pages too");
    assert_eq!(status(http.get(url("/")).bearer_auth(token)).await, 200);
    assert_eq!(status(http.get(url("/healthz"))).await, 200, "open");
    assert_ne!(status(http.get(url("/readyz"))).await, 401, "open");
}

#[tokio::test]
async fn off_loopback_without_a_token_the_admin_endpoint_refuses_to_start() {
    let app = TestApp::spawn().await;
    let mut s = settings(&app.url);
    s.admin.listen = Some(([0, 0, 0, 0], 0).into());
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, "http://127.0.0.1:9/").await;
    let e = soundtrend::web::admin::start_with_token(&s.admin, app.pool.clone(), poller, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("config key `admin.listen`: 0.0.0.0:0 is reachable from other machines"),
        "{e}"
    );
    assert!(
        e.contains("SOUNDTREND_ADMIN_TOKEN") && !e.contains('\n'),
        "{e}"
    );
}
