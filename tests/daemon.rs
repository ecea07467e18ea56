//! The worker: leases across instances, the shared quota, Retry-After, the credit budget,
//! shutdown, crashes, NOTIFY pickup, adaptive periods and database outages. Driven in-process
//! against real Postgres and a local server that timestamps every request.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use soundtrend::clock::OffsetClock;
use soundtrend::poll::Worker;
use soundtrend::provider::ProviderKind;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn two_workers_never_double_poll_and_together_respect_the_quota() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    let mut s = settings(&app.url);
    s.provider.requests_per_second = 10.0;
    s.provider.burst = std::num::NonZeroU32::new(2).unwrap();
    s.poll.concurrency = 4;
    app.watch_many(40).await;
    let a = keyapi_worker(&s, &app, &server.base, "a").await;
    let b = keyapi_worker(&s, &app, &server.base, "b").await;
    let cancel = CancellationToken::new();

    let started = Instant::now();
    let (ra, rb) = tokio::join!(a.drain(&cancel), b.drain(&cancel));
    let elapsed = started.elapsed();

    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.stored + rb.stored, 40);
    assert!(
        ra.stored > 0 && rb.stored > 0,
        "both workers took part: {ra:?} {rb:?}"
    );
    let hits = server.hits();
    assert_eq!(hits.len(), 40, "exactly one request per entry");
    let mut per_entry: HashMap<(String, String), usize> = HashMap::new();
    for h in &hits {
        *per_entry
            .entry((h.clip_id.clone(), h.region.clone()))
            .or_default() += 1;
    }
    assert!(
        per_entry.values().all(|&n| n == 1),
        "an entry was polled twice"
    );
    let peak = max_in_window(&hits, Duration::from_secs(1));
    assert!(
        peak <= 12,
        "{peak} requests in one second; the quota is 10/s with burst 2"
    );
    assert!(
        elapsed >= Duration::from_millis(3_500),
        "40 requests at 10/s (burst 2) cannot finish in {elapsed:?}"
    );
    assert_eq!(app.fetches_with_outcome("ok").await, 40);
    assert_eq!(app.leases_held().await, 0);
}

#[tokio::test]
async fn retry_after_is_respected_by_every_instance() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    server.set_faults(|b| {
        b.rate_limit_next = 1;
        b.retry_after_secs = 2;
    });
    let mut s = settings(&app.url);
    // 200 ms between grants: the 429 is recorded in the shared quota long before the next grant.
    s.provider.requests_per_second = 5.0;
    s.provider.burst = std::num::NonZeroU32::new(1).unwrap();
    app.watch_many(10).await;
    let a = keyapi_worker(&s, &app, &server.base, "a").await;
    let b = keyapi_worker(&s, &app, &server.base, "b").await;
    let cancel = CancellationToken::new();

    let (ra, rb) = tokio::join!(a.drain(&cancel), b.drain(&cancel));

    assert_eq!(
        ra.unwrap().stored + rb.unwrap().stored,
        10,
        "the rate-limited poll was retried"
    );
    let mut hits = server.hits();
    hits.sort_by_key(|h| h.at);
    let limited_at = hits[0].at;
    let next = hits[1].at;
    assert!(
        next.duration_since(limited_at) >= Duration::from_millis(1_950),
        "a request went {:?} after a 429 that said Retry-After: 2",
        next.duration_since(limited_at)
    );
    assert_eq!(hits.len(), 11);
    assert_eq!(app.fetches_with_outcome("rate_limited").await, 1);
}

#[tokio::test]
async fn an_exhausted_credit_budget_stops_polling_until_the_next_utc_day() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    let mut s = settings(&app.url);
    s.provider.daily_credit_budget = 6; // KeyAPI: 2 credits a request, so 3 requests a day
    app.watch_many(5).await;
    let clock = Arc::new(OffsetClock::new());
    let poller = poller_with_clock(
        &s,
        &app.pool,
        ProviderKind::KeyApi,
        &server.base,
        clock.clone(),
    )
    .await;
    let cancel = CancellationToken::new();

    let day1 = Worker::new(poller.clone(), worker_options(&s, "a"))
        .drain(&cancel)
        .await
        .unwrap();

    assert_eq!(day1.stored, 3);
    assert!(day1.budget_exhausted);
    assert_eq!(server.hits().len(), 3, "no request beyond the budget");
    assert_eq!(app.count("SELECT count(*) FROM credit_usage WHERE credits_used = 6 AND requests = 3 AND exhausted_at IS NOT NULL").await, 1);
    assert_eq!(app.idle_due_entries().await, 2, "unpolled entries stay due");
    let again = Worker::new(poller.clone(), worker_options(&s, "a"))
        .drain(&cancel)
        .await
        .unwrap();
    assert_eq!(again.stored, 0, "still the same day");

    clock.advance(chrono::Duration::days(1));
    let day2 = Worker::new(poller, worker_options(&s, "a"))
        .drain(&cancel)
        .await
        .unwrap();

    assert_eq!(day2.stored, 2);
    assert_eq!(server.hits().len(), 5);
    assert_eq!(app.credits_booked().await, 10);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_polls_and_releases_the_rest() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    server.set_faults(|b| b.delay = Duration::from_millis(800));
    let mut s = settings(&app.url);
    s.poll.concurrency = 2;
    s.daemon.shutdown_grace = Duration::from_secs(10);
    app.watch_many(6).await;
    let worker = keyapi_worker(&s, &app, &server.base, "a").await;
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { worker.run(cancel).await }
    });
    eventually("two requests started", Duration::from_secs(5), async || {
        server.hit_count() >= 2
    })
    .await;

    cancel.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("stops within the grace")
        .unwrap()
        .unwrap();

    assert_eq!(
        summary.stored, 2,
        "in-flight polls finished and were stored"
    );
    assert_eq!(
        server.hits().len(),
        2,
        "nothing new was claimed after the signal"
    );
    assert_eq!(app.fetches_with_outcome("ok").await, 2);
    assert_eq!(app.leases_held().await, 0);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM watchlist WHERE last_success_at IS NULL AND next_due_at <= now()"
        )
        .await,
        4
    );
}

#[tokio::test]
async fn a_worker_killed_mid_poll_leaves_no_rows_and_its_entry_is_polled_again() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    server.set_faults(|b| b.delay = Duration::from_secs(3));
    let mut s = settings(&app.url);
    s.poll.lease_ttl = Duration::from_secs(2);
    s.provider.request_timeout = Duration::from_secs(1);
    app.watch(CLIP, "US").await;
    let doomed = keyapi_worker(&s, &app, &server.base, "doomed").await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(async move { doomed.drain(&CancellationToken::new()).await });
    eventually("a request started", Duration::from_secs(5), async || {
        server.hit_count() > 0
    })
    .await;

    task.abort(); // the process dies with a request in flight
    let _ = task.await;
    assert_eq!(app.data_rows().await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM watchlist WHERE lease_owner = 'doomed'")
            .await,
        1,
        "the dead worker's lease is still there"
    );

    server.set_faults(|b| b.delay = Duration::ZERO);
    eventually(
        "the dead worker's lease expires",
        Duration::from_secs(5),
        async || app.all_leases_expired().await,
    )
    .await;
    let rescuer = keyapi_worker(&s, &app, &server.base, "rescuer").await;
    let summary = rescuer.drain(&cancel).await.unwrap();

    assert_eq!(summary.stored, 1);
    assert_eq!(app.snapshots().await, 1);
    assert_eq!(app.fetches_with_outcome("ok").await, 1);
    assert_eq!(app.idle_polled_entries().await, 1);
}

#[tokio::test]
async fn a_poll_whose_lease_was_lost_before_sending_pays_nothing() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    let s = settings(&app.url);
    app.watch(CLIP, "US").await;
    let stale = soundtrend::store::watchlist::claim_one(
        &app.pool,
        "slow",
        CLIP,
        "US",
        Duration::from_millis(1),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    eventually(
        "the stale lease expires",
        Duration::from_secs(5),
        async || app.all_leases_expired().await,
    )
    .await;
    let fresh = soundtrend::store::watchlist::claim_one(
        &app.pool,
        "fast",
        CLIP,
        "US",
        Duration::from_mins(1),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.base).await;

    let late = poller
        .poll(&stale, None, &CancellationToken::new())
        .await
        .unwrap();

    assert!(
        matches!(
            late,
            soundtrend::poll::PollOutcome::Skipped(soundtrend::poll::SkipReason::LeaseLost)
        ),
        "{late:?}"
    );
    assert_eq!(app.data_rows().await, 0);
    assert!(
        server.hits().is_empty(),
        "no request was sent for a lost lease"
    );
    assert_eq!(app.fetches().await, 0);
    let on_time = poller
        .poll(&fresh, None, &CancellationToken::new())
        .await
        .unwrap();
    assert!(
        matches!(on_time, soundtrend::poll::PollOutcome::Stored { .. }),
        "{on_time:?}"
    );
}

#[tokio::test]
async fn an_insert_wakes_the_daemon_within_seconds() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    let mut s = settings(&app.url);
    s.daemon.tick_cron = "0 0 0 1 1 *".parse().unwrap(); // once a year: only the notification can wake it
    let worker = keyapi_worker(&s, &app, &server.base, "a").await;
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { worker.run(cancel).await }
    });
    eventually(
        "the daemon listens for inserts",
        Duration::from_secs(5),
        async || app.has_listener().await,
    )
    .await;

    app.watch(CLIP, "FR").await;

    eventually_eq(
        "snapshots in FR",
        Duration::from_secs(3),
        async || app.snapshots_in("FR").await,
        1,
    )
    .await;
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_period_covers_the_gap_since_the_last_success() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    let mut s = settings(&app.url);
    s.poll.default_period = soundtrend::domain::Period::Days30;
    sqlx::query(
        "INSERT INTO watchlist (clip_id, region, last_success_at, period) VALUES
            ('1', 'US', now() - interval '2 days', NULL),
            ('2', 'US', now() - interval '20 days', NULL),
            ('3', 'US', now() - interval '200 days', NULL),
            ('4', 'US', NULL, NULL),
            ('5', 'US', now() - interval '200 days', 7)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let worker = keyapi_worker(&s, &app, &server.base, "a").await;

    worker.drain(&CancellationToken::new()).await.unwrap();

    let periods: HashMap<String, String> = server
        .hits()
        .into_iter()
        .map(|h| (h.clip_id, h.period))
        .collect();
    assert_eq!(periods["1"], "7");
    assert_eq!(periods["2"], "30");
    assert_eq!(periods["3"], "120");
    assert_eq!(periods["4"], "30", "first poll uses poll.default_period");
    assert_eq!(periods["5"], "7", "an explicit period is kept");
}

#[tokio::test]
async fn the_daemon_survives_its_database_connections_being_killed() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    let mut s = settings(&app.url);
    s.daemon.tick_cron = "* * * * * *".parse().unwrap();
    s.daemon.database_retry_max = Duration::from_secs(1);
    let worker = keyapi_worker(&s, &app, &server.base, "a").await;
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { worker.run(cancel).await }
    });
    app.watch("1", "US").await;
    eventually_eq(
        "snapshots",
        Duration::from_secs(5),
        async || app.snapshots().await,
        1,
    )
    .await;

    // Kill every connection to the test database, twice, the way a restart would: the second
    // time once the daemon has connected again.
    let admin = sqlx::PgPool::connect(&app.url).await.unwrap();
    let others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";
    for _ in 0..2 {
        eventually(
            "the daemon is connected",
            Duration::from_secs(5),
            async || {
                sqlx::query_scalar::<_, i64>(others)
                    .fetch_one(&admin)
                    .await
                    .unwrap()
                    > 0
            },
        )
        .await;
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
            .execute(&admin)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO watchlist (clip_id, region) VALUES ('2', 'US'), ('3', 'US')")
        .execute(&admin)
        .await
        .unwrap();

    eventually_eq(
        "polling resumed after the connections were killed: snapshots",
        Duration::from_secs(10),
        async || {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sound_snapshots")
                .fetch_one(&admin)
                .await
                .unwrap()
        },
        3,
    )
    .await;
    assert!(!run.is_finished(), "the daemon kept running");
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn entries_inserted_together_spread_out_after_their_first_poll() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    let mut s = settings(&app.url);
    s.poll.jitter = 0.1;
    app.watch_many(50).await;
    keyapi_worker(&s, &app, &server.base, "a")
        .await
        .drain(&CancellationToken::new())
        .await
        .unwrap();

    let distinct_minutes = app
        .count("SELECT count(DISTINCT date_trunc('minute', next_due_at)) FROM watchlist")
        .await;
    let spread_hours: f64 = sqlx::query_scalar("SELECT EXTRACT(epoch FROM max(next_due_at) - min(next_due_at))::float8 / 3600 FROM watchlist")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        distinct_minutes > 30,
        "next due times cluster: {distinct_minutes} distinct minutes"
    );
    assert!(
        spread_hours > 1.0 && spread_hours <= 4.9,
        "spread {spread_hours} h for a 1-day interval with 10% jitter"
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_a_lease_pauses_claims_instead_of_sitting_on_leases() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    server.set_faults(|b| {
        b.rate_limit_next = 1;
        b.retry_after_secs = 600;
    });
    let mut s = settings(&app.url); // lease 60 s: a poll waits at most 15 s
    s.poll.concurrency = 1; // one request at a time, so none is in flight when the 429 arrives
    app.watch_many(3).await;
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.base).await;

    let started = Instant::now();
    let summary = Worker::new(poller.clone(), worker_options(&s, "a"))
        .drain(&CancellationToken::new())
        .await
        .unwrap();

    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the worker did not wait out the pause: {:?}",
        started.elapsed()
    );
    assert_eq!(server.hits().len(), 1, "no request during the pause");
    assert_eq!(summary.stored, 0);
    assert!(
        poller.refresh_health().await.unwrap().is_empty(),
        "this process stops claiming until the pause ends"
    );
    assert_eq!(app.fetches_with_outcome("rate_limited").await, 1);
    assert_eq!(
        app.providers_paused_beyond(Duration::from_secs(590)).await,
        1
    );
    assert_eq!(
        app.leases_held().await,
        0,
        "no lease is held through the pause"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM watchlist WHERE consecutive_failures = 1 AND next_due_at > now() + interval '590 seconds'").await,
        1,
        "the rate-limited entry is due after the pause"
    );

    assert_eq!(
        app.count(
            "SELECT count(*) FROM watchlist WHERE next_due_at > now() + interval '590 seconds'"
        )
        .await,
        2,
        "the entry claimed ahead but not yet polled is due after the pause too"
    );

    // Another instance, unaware of the pause, reads it from the shared state and claims nothing
    // (the new entry stays due, unleased), without a request.
    app.watch(CLIP, "US").await;
    let other = Worker::new(
        poller_with_clock(
            &s,
            &app.pool,
            ProviderKind::KeyApi,
            &server.base,
            Arc::new(OffsetClock::new()),
        )
        .await,
        worker_options(&s, "b"),
    );
    let summary = other.drain(&CancellationToken::new()).await.unwrap();
    assert!(summary.provider_paused);
    assert_eq!(
        summary.stored + summary.failed + summary.skipped,
        0,
        "nothing claimed"
    );
    assert_eq!(server.hits().len(), 1);
    assert_eq!(
        app.idle_entries_due_after(Duration::from_secs(590)).await,
        2,
        "as the first instance left them"
    );
    assert_eq!(
        app.idle_due_entries().await,
        2,
        "the last entry and the new one wait, due, unclaimed"
    );
    assert_eq!(app.leases_held().await, 0);
}
