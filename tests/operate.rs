//! Operating soundtrend: replay from the raw archive, retention, status.

mod common;

use chrono::NaiveDate;
use common::*;
use soundtrend::cli::replay::{replay, ReplayFilter};
use soundtrend::poll::Worker;
use soundtrend::provider::ProviderKind;
use soundtrend::store::fetches::prune_bodies;
use tokio_util::sync::CancellationToken;
use wiremock::MockServer;

/// Every derived row, as sorted text: equal dumps mean equal tables.
async fn dump(app: &TestApp) -> Vec<String> {
    let tables = [
        "sounds",
        "sound_snapshots",
        "trend_points",
        "audience_countries",
        "audience_interests",
        "trend_windows",
        "trend_observations",
        "trend_index",
        "trend_pairs",
    ];
    rows(app, &tables, "t::text").await
}

/// `row` (an expression over `t`) for every row of `tables`, sorted, each after its table's name.
async fn rows(app: &TestApp, tables: &[&str], row: &str) -> Vec<String> {
    let mut all = Vec::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {row} FROM {table} t ORDER BY t::text"
        )))
        .fetch_all(&app.pool)
        .await
        .unwrap();
        all.extend(rows.into_iter().map(|r| format!("{table} {r}")));
    }
    all
}

async fn truncate_derived(app: &TestApp) {
    sqlx::query(
        "TRUNCATE sounds, sound_snapshots, trend_points, audience_country_lists, audience_interest_lists,
                  trend_windows, trend_observations, trend_index, trend_pairs",
    )
    .execute(&app.pool)
    .await
    .unwrap();
}

/// Three overlapping windows for two regions and one other clip, polled in order.
async fn populate(app: &TestApp) {
    let s = settings(&app.url);
    let day = NaiveDate::from_ymd_opt(2026, 5, 1).unwrap();
    for (i, period) in [(0, 30), (1, 7), (2, 7)] {
        let server = MockServer::start().await;
        let last = day + chrono::Duration::days(i);
        for (clip, region) in [(CLIP, "US"), (CLIP, "GB"), ("42", "US")] {
            mount_generated(&server, ProviderKind::KeyApi, clip, region, period, last).await;
        }
        if i == 0 {
            app.watch(CLIP, "US").await;
            app.watch(CLIP, "GB").await;
            app.watch("42", "US").await;
        }
        sqlx::query("UPDATE watchlist SET next_due_at = now(), period = $1")
            .bind(period as i16)
            .execute(&app.pool)
            .await
            .unwrap();
        let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.uri()).await;
        let summary = Worker::new(poller, worker_options(&s, "w"))
            .drain(&CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(summary.stored, 3);
    }
}

#[tokio::test]
async fn replay_after_truncating_the_derived_tables_restores_them_exactly() {
    let app = TestApp::spawn().await;
    populate(&app).await;
    let before = dump(&app).await;
    assert!(before.len() > 100, "populated: {}", before.len());

    truncate_derived(&app).await;
    assert_eq!(app.data_rows().await, 0);
    let first = replay(&app.pool, &ReplayFilter::default(), 2, false)
        .await
        .unwrap();

    assert_eq!(first.fetches, 9);
    assert_eq!(first.skipped, 0);
    assert_eq!(
        dump(&app).await,
        before,
        "replay restores every derived row"
    );

    let second = replay(&app.pool, &ReplayFilter::default(), 500, false)
        .await
        .unwrap();
    assert_eq!(second.fetches, 9);
    assert_eq!(
        dump(&app).await,
        before,
        "replaying twice equals replaying once"
    );
}

#[tokio::test]
async fn replay_restores_fetches_whose_snapshots_alone_were_deleted() {
    // Replay looks at snapshots alone to choose between loading and merging a batch; rows left
    // behind by a hand-edited table must not stop it, nor survive twice.
    let app = TestApp::spawn().await;
    populate(&app).await;
    let before = dump(&app).await;
    sqlx::query("TRUNCATE sound_snapshots")
        .execute(&app.pool)
        .await
        .unwrap();

    let summary = replay(&app.pool, &ReplayFilter::default(), 500, false)
        .await
        .unwrap();

    assert_eq!(summary.fetches, 9);
    assert_eq!(dump(&app).await, before);
}

/// Every derived row with the transaction that last wrote it (the list tables themselves, not
/// their views, whose rows have no version of their own).
async fn versions(app: &TestApp) -> Vec<String> {
    let tables = [
        "sounds",
        "sound_snapshots",
        "trend_points",
        "audience_country_lists",
        "audience_interest_lists",
        "trend_windows",
        "trend_observations",
        "trend_index",
        "trend_pairs",
    ];
    rows(app, &tables, "xmin::text || ' ' || t::text").await
}

#[tokio::test]
async fn replay_over_unchanged_rows_rewrites_none_of_them() {
    let app = TestApp::spawn().await;
    populate(&app).await;
    let before = versions(&app).await;

    for batch in [2, 500] {
        let summary = replay(&app.pool, &ReplayFilter::default(), batch, false)
            .await
            .unwrap();
        assert_eq!((summary.fetches, summary.skipped), (9, 0));
        assert_eq!(
            (summary.changed, summary.index_rows),
            (0, 0),
            "batch {batch}"
        );
        assert_eq!(
            versions(&app).await,
            before,
            "batch {batch}: every row still the version the polls wrote"
        );
    }
}

#[tokio::test]
async fn replay_over_hand_edited_rows_restores_them_and_only_them() {
    let app = TestApp::spawn().await;
    populate(&app).await;
    let before = dump(&app).await;
    for edit in [
        "UPDATE sound_snapshots SET rank = 999 WHERE fetch_id = (SELECT min(id) FROM fetches)",
        "UPDATE trend_windows SET vals[1] = 0.5 WHERE fetch_id = (SELECT max(id) FROM fetches)",
        "UPDATE trend_observations SET value = 0.123
          WHERE (fetch_id, ts) = (SELECT fetch_id, min(ts) FROM trend_observations
                                  WHERE fetch_id = (SELECT min(id) FROM fetches) GROUP BY fetch_id)",
        "DELETE FROM trend_observations
          WHERE (fetch_id, ts) = (SELECT fetch_id, max(ts) FROM trend_observations
                                  WHERE fetch_id = (SELECT max(id) FROM fetches) GROUP BY fetch_id)",
        // Rows the fetch never derived: a day outside every window.
        "INSERT INTO trend_observations (fetch_id, clip_id, region, period, ts, value, observed_at)
         SELECT id, clip_id, region, 7, '2020-01-01', 1, requested_at FROM fetches
         ORDER BY id LIMIT 1",
        "INSERT INTO trend_points (clip_id, region, ts, value, fetch_id, period, observed_at)
         SELECT clip_id, region, '2020-01-01', 1, id, 7, requested_at FROM fetches
         ORDER BY id LIMIT 1",
        "UPDATE trend_points SET value = 0.7777 WHERE ts = (SELECT max(ts) FROM trend_points)",
        "UPDATE sounds SET title = 'edited by hand'",
    ] {
        sqlx::query(edit).execute(&app.pool).await.unwrap();
    }
    assert_ne!(dump(&app).await, before);
    let edited = versions(&app).await;
    let edited_points = app
        .count("SELECT count(*) FROM trend_points WHERE value = 0.7777")
        .await;
    let sounds = app.count("SELECT count(*) FROM sounds").await;

    let summary = replay(&app.pool, &ReplayFilter::default(), 2, false)
        .await
        .unwrap();

    assert_eq!((summary.fetches, summary.skipped), (9, 0));
    assert_eq!(
        dump(&app).await,
        before,
        "every edit undone, nothing else changed"
    );
    // Replay rewrote only the observations that differed: the edited one and the deleted one.
    let after = versions(&app).await;
    let rewritten: Vec<_> = after
        .iter()
        .filter(|r| r.starts_with("trend_observations ") && !edited.contains(r))
        .collect();
    assert_eq!(rewritten.len(), 2, "{rewritten:#?}");
    // And it says so: a changed snapshot, window and observation are each removed and inserted
    // (2 + 2 + 2), the deleted observation inserted (1), the observation and the daily point
    // the fetch never derived removed (1 + 1), each edited daily point and sound set again.
    let expected = 2 + 2 + 2 + 1 + 1 + 1 + edited_points + sounds;
    assert_eq!(
        summary.changed as i64, expected,
        "points {edited_points}, sounds {sounds}"
    );
}

#[tokio::test]
async fn a_replay_batch_rolled_back_for_a_deadlock_is_written_again() {
    // A live write holds a sound's row and then wants a snapshot row the replay's batch has
    // already deleted (and so locked), while the batch waits for that sound: a deadlock. The
    // live side waits longer before checking for deadlocks, so Postgres picks the replay's
    // transaction; the batch must be written again, not fail the replay.
    let app = TestApp::spawn().await;
    populate(&app).await;
    let before = dump(&app).await;
    sqlx::query("UPDATE sound_snapshots SET rank = coalesce(rank, 0) + 1")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut live = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL deadlock_timeout = '10s'")
        .execute(&mut *live)
        .await
        .unwrap();
    sqlx::query("UPDATE sounds SET title = title WHERE clip_id = $1")
        .bind(CLIP)
        .execute(&mut *live)
        .await
        .unwrap();

    // The replay and the live side in one task (the replay's future is not `Send`-general).
    let live_side = async {
        let started = std::time::Instant::now();
        while app
            .count(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await
            == 0
        {
            assert!(
                started.elapsed().as_secs() < 20,
                "the replay never waited for the sound"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        sqlx::query(
            "SELECT 1 FROM sound_snapshots WHERE fetch_id = (SELECT min(id) FROM fetches) FOR UPDATE",
        )
        .execute(&mut *live)
        .await
        .expect("the replay's transaction, not this one, is rolled back");
        live.rollback().await.unwrap();
    };
    let all = ReplayFilter::default();
    let (replayed, ()) = tokio::join!(replay(&app.pool, &all, 500, false), live_side);

    let summary = replayed.expect("the replay finishes");
    assert_eq!((summary.fetches, summary.skipped), (9, 0));
    assert_eq!(dump(&app).await, before);
}

#[tokio::test]
async fn replay_bulk_loads_hostile_text_byte_for_byte() {
    // Tabs, newlines, carriage returns, backslashes and a literal \N are COPY's own syntax:
    // what the live write stored must come back from the bulk load unchanged.
    let app = TestApp::spawn().await;
    let hostile = "tab\there\nnew line\r\\N back\\slash \\ end\\ ✓ \u{202e}rtl";
    let body = sample_with(ProviderKind::KeyApi, |v| {
        let sound = &mut v["data"]["sound"];
        sound["title"] = hostile.into();
        sound["author"] = "\\N".into();
        sound["audience_countries"][0]["country_info"]["value"] = hostile.into();
        sound["audience_interests"][0]["interest_info"]["label"] = "a\tb\\c".into();
        sound["related_items"] = serde_json::json!([{"note": hostile}]);
    });
    let server = MockServer::start().await;
    mount_body(&server, ProviderKind::KeyApi, 200, body).await;
    app.watch(CLIP, "US").await;
    let s = settings(&app.url);
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.uri()).await;
    poll(&app, &poller, CLIP, "US", None).await;
    let before = dump(&app).await;
    assert!(
        before.iter().any(|r| r.contains("back")),
        "the title is stored"
    );

    truncate_derived(&app).await;
    let summary = replay(&app.pool, &ReplayFilter::default(), 500, false)
        .await
        .unwrap();

    assert_eq!((summary.fetches, summary.skipped), (1, 0));
    assert_eq!(dump(&app).await, before);
    let title: String = sqlx::query_scalar("SELECT title FROM sounds")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(title, hostile);
}

#[tokio::test]
async fn replay_filters_by_clip_and_region() {
    let app = TestApp::spawn().await;
    populate(&app).await;
    truncate_derived(&app).await;

    let filter = ReplayFilter {
        clip_id: Some(CLIP.into()),
        region: Some("GB".into()),
        ..ReplayFilter::default()
    };
    let summary = replay(&app.pool, &filter, 500, false).await.unwrap();

    assert_eq!(summary.fetches, 3);
    assert_eq!(app.snapshots_in("GB").await, 3);
    assert_eq!(
        app.count("SELECT count(*) FROM sound_snapshots WHERE region <> 'GB'")
            .await,
        0
    );
}

#[tokio::test]
async fn retention_prunes_old_raw_bodies_and_keeps_fetch_rows_and_data() {
    let app = TestApp::spawn().await;
    populate(&app).await;
    let data_before = app.data_rows().await;
    sqlx::query(
        "UPDATE fetches SET requested_at = requested_at - interval '40 days' WHERE id <= 3",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let pruned = prune_bodies(&app.pool, 30).await.unwrap();

    assert_eq!(pruned, 3);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM fetches WHERE body_json IS NULL AND body_pruned_at IS NOT NULL"
        )
        .await,
        3
    );
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE body_json IS NOT NULL")
            .await,
        6
    );
    assert_eq!(app.fetches().await, 9);
    assert_eq!(app.data_rows().await, data_before);
    assert_eq!(
        prune_bodies(&app.pool, 30).await.unwrap(),
        0,
        "pruning is idempotent"
    );
}

#[tokio::test]
async fn status_reports_entries_credits_disabled_entries_and_errors() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    let mut s = settings(&app.url);
    s.provider.daily_credit_budget = 100;
    app.watch_many(3).await;
    sqlx::query("INSERT INTO watchlist (clip_id, region, enabled, disabled_reason) VALUES ('9', 'US', false, 'the provider said the clip does not exist 3 polls in a row')")
        .execute(&app.pool)
        .await
        .unwrap();
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.base).await;
    Worker::new(poller, worker_options(&s, "w"))
        .drain(&CancellationToken::new())
        .await
        .unwrap();
    sqlx::query("INSERT INTO fetches (clip_id, region, period, provider, requested_at, duration_ms, outcome, error) VALUES ('1001', 'US', 7, 'keyapi', now(), 5, 'timeout', 'no response within 30s')")
        .execute(&app.pool)
        .await
        .unwrap();

    let status = soundtrend::cli::status::collect(&app.pool, &s, &soundtrend::clock::SystemClock)
        .await
        .unwrap();

    assert_eq!(status.entries.total, 4);
    assert_eq!(status.entries.enabled, 3);
    assert_eq!(status.entries.disabled, 1);
    assert_eq!(status.entries.due_now, 0);
    let keyapi = status
        .providers
        .iter()
        .find(|p| p.report.provider == "keyapi")
        .unwrap();
    assert_eq!(keyapi.report.credits_used_today, 6);
    assert!(keyapi.report.last_success_at.is_some());
    assert!(keyapi
        .report
        .last_failure
        .as_deref()
        .unwrap()
        .contains("timeout"));
    assert_eq!(
        keyapi.state,
        soundtrend::store::health::ProviderState::Healthy,
        "a success after the timeout closed the breaker's count"
    );
    assert!(
        text_has_state(&status),
        "the status shows each provider's state"
    );
    assert_eq!(status.recent_errors.len(), 1);
    let text = soundtrend::cli::status::render(&status);
    assert!(text.contains("6 of 100"), "{text}");
    assert!(
        text.contains("9/US  the provider said the clip does not exist"),
        "{text}"
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["entries"]["total"], 4);
    assert_eq!(
        json["providers"][0]["credits_used_today"], 6,
        "flattened as before"
    );
    assert_eq!(json["providers"][0]["state"], "healthy");
}

fn text_has_state(status: &soundtrend::cli::status::Status) -> bool {
    soundtrend::cli::status::render(status).contains("state           healthy")
}
