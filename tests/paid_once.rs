//! Every paid answer is paid once and kept (issue 11): no request without a lease held for its
//! whole duration, no valid answer thrown away, a credit ledger that books only what reached the
//! provider and always equals the archive, and payloads whose meaning is wrong kept out of the
//! analysts' tables.

mod common;

use std::time::Duration;

use common::*;
use soundtrend::cli::replay::{replay, ReplayFilter};
use soundtrend::poll::PollOutcome;
use soundtrend::provider::ProviderKind;
use soundtrend::store::watchlist;
use tokio_util::sync::CancellationToken;

/// One poll of CLIP/US through a fresh poller at `base`, as `soundtrend poll --clip-id` runs it.
async fn poll_once(app: &TestApp, s: &soundtrend::config::Settings, base: &str) -> PollOutcome {
    let poller = poller(s, &app.pool, ProviderKind::KeyApi, base).await;
    let entry = watchlist::claim_one(&app.pool, "t", CLIP, "US", Duration::from_mins(1))
        .await
        .unwrap()
        .unwrap()
        .expect("CLIP/US is watched");
    poller
        .poll(&entry, None, &CancellationToken::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn two_quota_bound_instances_with_429s_and_a_slow_answer_pay_for_each_pair_once() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    server.set_faults(|b| {
        b.rate_limit_next = 3;
        b.retry_after_secs = 2;
        b.limited_clip = Some("1001".into());
        b.delay = Duration::from_millis(1500);
        b.slow_clip = Some("1002".into());
    });
    let mut s = settings(&app.url);
    s.provider.requests_per_second = 2.0;
    s.provider.burst = std::num::NonZeroU32::new(1).unwrap();
    s.provider.request_timeout = Duration::from_secs(2);
    s.poll.lease_ttl = Duration::from_secs(6);
    s.poll.concurrency = 4;
    // A 429 counts as a failed poll; keep its backoff short so the test need not wait a minute.
    s.poll.failure_backoff = Duration::from_secs(1);
    s.daemon.tick_cron = "*/1 * * * * *".parse().unwrap();
    app.watch_many(40).await;
    let cancel = CancellationToken::new();
    let mut runs = Vec::new();
    for owner in ["a", "b"] {
        let worker = keyapi_worker(&s, &app, &server.base, owner).await;
        let cancel = cancel.clone();
        runs.push(tokio::spawn(async move { worker.run(cancel).await }));
    }

    eventually(
        "all 40 pairs answered",
        Duration::from_mins(1),
        async || server.answered().len() == 40,
    )
    .await;
    // A little longer, on purpose: a pair paid twice would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cancel.cancel();
    for run in runs {
        run.await.unwrap().unwrap();
    }

    let per_pair = server.answered();
    assert_eq!(per_pair.len(), 40);
    let twice: Vec<_> = per_pair.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "answered 200 more than once: {twice:?}");
    assert_eq!(app.fetches_with_outcome("ok").await, 40);
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE lease_lost")
            .await,
        0
    );
    app.assert_ledger_equals_archive().await;
}

#[tokio::test]
async fn an_answer_that_outlives_its_lease_is_stored_and_flagged_not_discarded() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    server.set_faults(|b| b.delay = Duration::from_millis(800));
    let s = settings(&app.url);
    app.watch(CLIP, "US").await;
    let entry = watchlist::claim_one(&app.pool, "slow", CLIP, "US", Duration::from_mins(1))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.base).await;
    let poll = tokio::spawn({
        let poller = poller.clone();
        async move { poller.poll(&entry, None, &CancellationToken::new()).await }
    });
    eventually(
        "the request is in flight",
        Duration::from_secs(5),
        async || server.hit_count() > 0,
    )
    .await;

    // The lease passes to another worker while the paid request is in flight (a stall, a pause).
    sqlx::query("UPDATE watchlist SET lease_token = gen_random_uuid(), lease_owner = 'thief'")
        .execute(&app.pool)
        .await
        .unwrap();
    let outcome = poll.await.unwrap().unwrap();

    assert!(matches!(outcome, PollOutcome::Stored { .. }), "{outcome:?}");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM fetches WHERE outcome = 'ok' AND lease_lost AND credits = 2"
        )
        .await,
        1
    );
    assert_eq!(app.snapshots().await, 1, "the paid data is kept");
    assert_eq!(
        app.count("SELECT count(*) FROM watchlist WHERE lease_owner = 'thief' AND last_success_at IS NULL")
            .await,
        1,
        "the bookkeeping is left to the lease holder"
    );
    app.assert_ledger_equals_archive().await;
}

#[tokio::test]
async fn pausing_resuming_and_removing_entries_mid_poll_never_pays_twice_or_loses_an_answer() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    server.set_faults(|b| b.delay = Duration::from_secs(1));
    let mut s = settings(&app.url);
    s.provider.request_timeout = Duration::from_secs(3);
    s.poll.concurrency = 3;
    s.daemon.tick_cron = "*/1 * * * * *".parse().unwrap();
    for clip in ["11", "12", "13"] {
        app.watch(clip, "US").await;
    }
    let worker = keyapi_worker(&s, &app, &server.base, "one").await;
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { worker.run(cancel).await }
    });
    eventually(
        "three requests in flight",
        Duration::from_secs(10),
        async || server.hit_count() == 3,
    )
    .await;

    for sql in [
        "UPDATE watchlist SET enabled = false WHERE clip_id = '11'",
        "UPDATE watchlist SET enabled = true, next_due_at = now() WHERE clip_id = '11'",
        "UPDATE watchlist SET enabled = false WHERE clip_id = '12'",
        "DELETE FROM watchlist WHERE clip_id = '13'",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&app.pool)
            .await
            .unwrap();
    }
    eventually_eq(
        "answers archived",
        Duration::from_secs(10),
        async || app.fetches_with_outcome("ok").await,
        3,
    )
    .await;
    // Three ticks after the answers, on purpose: time enough for a wrong re-claim to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cancel.cancel();
    run.await.unwrap().unwrap();

    let per_pair = server.answered();
    assert_eq!(per_pair.len(), 3);
    assert!(per_pair.values().all(|n| *n == 1), "{per_pair:?}");
    assert_eq!(
        app.fetches_with_outcome("ok").await,
        3,
        "every paid answer is archived"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE lease_lost AND clip_id = '13'")
            .await,
        1,
        "the removed entry's answer is kept and says so"
    );
    assert_eq!(app.snapshots().await, 3);
    app.assert_ledger_equals_archive().await;
}

#[tokio::test]
async fn attempts_that_never_reach_the_provider_cost_nothing_and_the_ledger_equals_the_archive() {
    let app = TestApp::spawn().await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        format!("http://{addr}/")
    };
    let mut s = settings(&app.url);
    s.provider.max_attempts = 3;
    app.watch(CLIP, "US").await;

    let outcome = poll_once(&app, &s, &refused).await;

    assert!(matches!(outcome, PollOutcome::Failed { .. }), "{outcome:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE outcome = 'network_error' AND credits = 0 AND error LIKE 'could not reach the provider%'")
            .await,
        3
    );
    assert_eq!(
        app.count(
            "SELECT COALESCE(sum(credits_used), 0) + COALESCE(sum(requests), 0) FROM credit_usage"
        )
        .await,
        0,
        "nothing booked for requests that were never sent"
    );

    // The provider comes back: the next attempt costs its price, once.
    let server = &app.provider;
    poll_once(&app, &s, &server.base).await;
    assert_eq!(app.credits_booked().await, 2);
    app.assert_ledger_equals_archive().await;
}

#[tokio::test]
async fn a_meaningless_payload_is_archived_as_invalid_and_never_becomes_analyst_rows() {
    let app = TestApp::spawn().await;
    let server = wiremock::MockServer::start().await;
    let body = sample_with(ProviderKind::KeyApi, |v| {
        v["data"]["sound"]["trend"][2]["value"] = serde_json::json!(1.5);
    });
    mount_body(&server, ProviderKind::KeyApi, 200, body).await;
    let s = settings(&app.url);
    app.watch(CLIP, "US").await;

    poll_once(&app, &s, &server.uri()).await;

    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE outcome = 'invalid_payload' AND error LIKE '%outside 0..1%' AND body_json IS NOT NULL")
            .await,
        1
    );
    assert_eq!(app.data_rows().await, 0);
}

#[tokio::test]
async fn dropped_parts_are_recorded_as_warnings_on_the_fetch() {
    let app = TestApp::spawn().await;
    let server = wiremock::MockServer::start().await;
    let body = sample_with(ProviderKind::KeyApi, |v| {
        v["data"]["sound"]["audience_countries"][0]["score"] = serde_json::json!(-3);
    });
    mount_body(&server, ProviderKind::KeyApi, 200, body).await;
    let s = settings(&app.url);
    app.watch(CLIP, "US").await;

    poll_once(&app, &s, &server.uri()).await;

    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE outcome = 'ok' AND EXISTS (SELECT 1 FROM unnest(warnings) w WHERE w LIKE 'negative_score:%')")
            .await,
        1
    );
    assert_eq!(app.audience_countries().await, 9);
    assert_eq!(
        app.count("SELECT count(*) FROM audience_countries WHERE score < 0")
            .await,
        0
    );
}

#[tokio::test]
async fn replay_re_validates_with_todays_rules_and_can_retry_invalid_bodies() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    let s = settings(&app.url);
    app.watch(CLIP, "US").await;
    poll_once(&app, &s, &server.base).await;
    // An archive written under older, laxer rules: a trend value of 7 was stored as ok.
    sqlx::query(
        "UPDATE fetches SET body_json = jsonb_set(body_json, '{data,sound,trend,0,value}', '7')",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let summary = replay(&app.pool, &ReplayFilter::default(), 100, false)
        .await
        .unwrap();

    assert_eq!(summary.invalidated, 1);
    assert_eq!(app.fetches_with_outcome("invalid_payload").await, 1);
    assert_eq!(app.snapshots().await, 0);
    assert_eq!(app.trend_points().await, 0);

    // The rule (or the body) changes: the body is accepted again, but only when asked.
    sqlx::query(
        "UPDATE fetches SET body_json = jsonb_set(body_json, '{data,sound,trend,0,value}', '0.5')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let plain = replay(&app.pool, &ReplayFilter::default(), 100, false)
        .await
        .unwrap();
    assert_eq!(plain.fetches, 0, "invalid bodies are left alone by default");
    let retried = replay(
        &app.pool,
        &ReplayFilter {
            retry_invalid: true,
            ..ReplayFilter::default()
        },
        100,
        false,
    )
    .await
    .unwrap();
    assert_eq!(retried.revived, 1);
    assert_eq!(app.fetches_with_outcome("ok").await, 1);
    assert_eq!(app.snapshots().await, 1);
}

#[tokio::test]
async fn a_quota_block_books_each_granted_slot_with_its_attempt_and_nothing_else() {
    use soundtrend::store::quota::{ensure_provider, Attempt, Grant, QuotaParams};
    use soundtrend::store::slots::take_block;

    let app = TestApp::spawn().await;
    ensure_provider(&app.pool, ProviderKind::KeyApi)
        .await
        .unwrap();
    app.watch_many(7).await;
    let claimed = watchlist::claim_due(
        &app.pool,
        "t",
        7,
        Duration::from_secs(10),
        &[ProviderKind::KeyApi],
    )
    .await
    .unwrap();
    assert_eq!(claimed.len(), 7);
    // Entry 1001 is re-claimed elsewhere: its lease is lost. Entry 1002 is paused by an analyst.
    sqlx::query("UPDATE watchlist SET lease_token = gen_random_uuid() WHERE clip_id = '1001'")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE watchlist SET enabled = false WHERE clip_id = '1002'")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut claimed = claimed;
    claimed.sort_by(|a, b| a.clip_id.as_str().cmp(b.clip_id.as_str()));
    let attempts: Vec<Attempt<'_>> = claimed
        .iter()
        .map(|c| Attempt {
            clip_id: c.clip_id.as_str(),
            region: c.region.as_str(),
            period: 7,
            attempt: 1,
            lease: c.lease_token,
            lease_ttl: Duration::from_mins(1),
            key: "k",
        })
        .collect();
    // 20/s with a burst of 2: two slots now, then one every 50 ms up to the 100 ms horizon.
    let params = QuotaParams {
        provider: ProviderKind::KeyApi,
        emission_interval: Duration::from_millis(50),
        burst: 2,
        credits_per_request: 2,
        daily_budget: None,
    };
    let day = chrono::Utc::now().date_naive();
    let mut conn = app.pool.acquire().await.unwrap();
    let grants = take_block(&mut conn, &params, day, &attempts, "k")
        .await
        .unwrap();

    let kinds: Vec<String> = grants
        .iter()
        .map(|(g, slot)| match g {
            Grant::Granted { .. } => format!("granted+{}ms", slot.as_millis()),
            other => format!("{other:?}")
                .split(['(', ' '])
                .next()
                .unwrap()
                .to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "LeaseLost",
            "EntryPaused",
            "granted+0ms",
            "granted+0ms",
            "granted+50ms",
            "granted+100ms",
            "Wait"
        ]
    );
    let ids: Vec<i64> = grants
        .iter()
        .filter_map(|(g, _)| match g {
            Grant::Granted { fetch_id, .. } => Some(*fetch_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE outcome = 'pending' AND credits = 2")
            .await,
        4,
        "one pending attempt per granted slot"
    );
    let pending: Vec<i64> = sqlx::query_scalar("SELECT id FROM fetches ORDER BY requested_at, id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        pending, ids,
        "each grant carries its own attempt, in slot order"
    );
    assert_eq!(
        app.count("SELECT credits_used::int8 FROM credit_usage")
            .await,
        8,
        "the ledger equals the archive"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM watchlist WHERE lease_expires_at > now() + interval '59 seconds'"
        )
        .await,
        4,
        "only granted entries have their lease extended"
    );
}
