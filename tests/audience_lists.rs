//! Audience lists are stored once per pair and content; `audience_countries` and
//! `audience_interests` still show one row per entry per fetch. Real Postgres, local HTTP mocks.

mod common;

use common::*;
use soundtrend::domain::Period;
use soundtrend::normalize::lists::list_id;
use soundtrend::normalize::AudienceRow;
use soundtrend::poll::PollOutcome;
use soundtrend::provider::ProviderKind;
use sqlx::{Connection, Executor};
use wiremock::MockServer;

/// A snapshot's region and its country and interest list ids.
type SnapshotLists = (String, Option<Vec<u8>>, Option<Vec<u8>>);

/// Polls `CLIP` in `region` once, answered with `body`.
async fn poll_with(app: &TestApp, region: &str, body: String) {
    let server = MockServer::start().await;
    mount_body(&server, ProviderKind::KeyApi, 200, body).await;
    let s = settings(&app.url);
    let poller = poller(&s, &app.pool, ProviderKind::KeyApi, &server.uri()).await;
    let outcome = poll(app, &poller, CLIP, region, Some(Period::Days7)).await;
    assert!(matches!(outcome, PollOutcome::Stored { .. }), "{outcome:?}");
}

/// The view's rows of one fetch, without the fetch's own id and time.
async fn view_rows(app: &TestApp, view: &str, fetch: i64) -> Vec<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT (to_jsonb(v) - 'fetch_id' - 'observed_at')::text FROM {view} v
         WHERE fetch_id = $1 ORDER BY position"
    )))
    .bind(fetch)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_pairs_repeated_lists_are_stored_once_and_every_fetch_still_reads_its_rows() {
    let app = TestApp::spawn().await;
    app.watch(CLIP, "US").await;
    app.watch(CLIP, "GB").await;
    let changed = sample_with(ProviderKind::KeyApi, |v| {
        v["data"]["sound"]["audience_countries"][0]["score"] = serde_json::json!(1427);
    });

    poll_with(&app, "US", SAMPLE.to_owned()).await;
    poll_with(&app, "US", SAMPLE.to_owned()).await;
    poll_with(&app, "US", changed).await;
    poll_with(&app, "GB", SAMPLE.to_owned()).await;

    // Every fetch reads its whole lists, as when each fetch stored its own rows.
    assert_eq!(app.audience_countries().await, 4 * 10);
    assert_eq!(
        app.count("SELECT count(*) FROM audience_interests").await,
        4 * 5
    );
    // Stored: US's first list, US's changed one, GB's (lists belong to their pair).
    assert_eq!(
        app.count("SELECT count(*) FROM audience_country_lists")
            .await,
        3 * 10
    );
    assert_eq!(
        app.count("SELECT count(*) FROM audience_interest_lists")
            .await,
        2 * 5
    );
    let ids: Vec<(i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT fetch_id, countries_list, interests_list FROM sound_snapshots
         WHERE region = 'US' ORDER BY fetch_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0].1, ids[1].1, "the same list, the same id");
    assert_ne!(ids[1].1, ids[2].1, "a changed score is another list");
    assert_eq!(ids[0].2, ids[2].2, "the interests did not change");
    assert_eq!(
        view_rows(&app, "audience_countries", ids[0].0).await,
        view_rows(&app, "audience_countries", ids[1].0).await
    );
    let third = view_rows(&app, "audience_countries", ids[2].0).await;
    assert!(third[0].contains("\"score\": 1427"), "{third:?}");
    // The share views read through: the second fetch's shares did not change since the first.
    let shares = format!(
        "SELECT count(*) FROM audience_country_share WHERE fetch_id = {} AND previous_fetch_id = {}",
        ids[1].0, ids[0].0
    );
    assert_eq!(app.count(&shares).await, 10);
    assert_eq!(
        app.count(&format!("{shares} AND share_change <> 0")).await,
        0
    );
}

#[tokio::test]
async fn the_migration_keeps_every_audience_row_and_names_lists_as_the_daemon_does() {
    let app = TestApp::spawn().await;
    // A schema of its own holds the tables as they were before migration 10.
    let mut conn = sqlx::PgConnection::connect(&app.url).await.unwrap();
    conn.execute("CREATE SCHEMA before_lists; SET search_path TO before_lists")
        .await
        .unwrap();
    let migrations = |wanted: fn(i64) -> bool| {
        soundtrend::store::MIGRATOR
            .iter()
            .filter(|m| wanted(m.version))
            .map(|m| m.sql.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    for sql in migrations(|v| v < 10) {
        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql)))
            .await
            .unwrap();
    }
    // Three fetches of one pair (the first two with the same lists, NULLs and non-ASCII text
    // included) and one of another region with the same entries.
    conn.execute(
        "INSERT INTO fetches (clip_id, region, period, provider, requested_at, duration_ms,
                              http_status, outcome, attempt, credits)
         SELECT '1', r, 7, 'keyapi', t, 1, 200, 'ok', 1, 2
         FROM (VALUES ('US', timestamptz '2026-03-01'), ('US', '2026-03-02'),
                      ('US', '2026-03-03'), ('GB', '2026-03-01')) AS v(r, t);
         INSERT INTO sound_snapshots (fetch_id, clip_id, region, period, observed_at, trend_points)
         SELECT id, clip_id, region, period, requested_at, 0 FROM fetches;
         INSERT INTO audience_countries (fetch_id, position, clip_id, region, observed_at,
                                         country_code, country_name, provider_id, score)
         SELECT f.id, e.position, f.clip_id, f.region, f.requested_at, e.code, e.name, e.pid,
                CASE WHEN f.id = 3 AND e.position = 2 THEN 7.5 ELSE e.score END
         FROM fetches f,
              (VALUES (1::int2, 'LV', 'Latvija ā', '458258', 1426.0::float8),
                      (2, NULL, 'Ísland', NULL, 0.1::float8 + 0.2::float8),
                      (3, 'FR', NULL, '9', NULL)) AS e(position, code, name, pid, score);
         INSERT INTO audience_interests (fetch_id, position, clip_id, region, observed_at,
                                         interest_id, label, name, score)
         SELECT f.id, 1, f.clip_id, f.region, f.requested_at, '10004', 'diversify_10004',
                'Scripted Drama', 3
         FROM fetches f WHERE f.id <> 3;",
    )
    .await
    .unwrap();
    let dump = "SELECT t::text FROM audience_countries t UNION ALL
                SELECT t::text FROM audience_interests t ORDER BY 1";
    let before: Vec<String> = sqlx::query_scalar(dump).fetch_all(&mut conn).await.unwrap();

    for sql in migrations(|v| v == 10) {
        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql)))
            .await
            .unwrap();
    }

    let after: Vec<String> = sqlx::query_scalar(dump).fetch_all(&mut conn).await.unwrap();
    assert_eq!(after, before, "the views show the rows the tables held");
    let stored: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM audience_country_lists)
              + (SELECT count(*) FROM audience_interest_lists)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        stored,
        3 * 3 + 2,
        "US's two country lists, GB's, one interest list per pair"
    );

    // The ids the migration gave are the ids the daemon computes for the same lists, so its
    // next poll with an unchanged list reuses the migrated one.
    let entry =
        |position: i16, code: Option<&str>, name: Option<&str>, pid: Option<&str>, score| {
            AudienceRow {
                position,
                provider_id: pid.map(Into::into),
                code: code.map(Into::into),
                name: name.map(Into::into),
                score,
            }
        };
    let countries = |second: f64| {
        vec![
            entry(
                1,
                Some("LV"),
                Some("Latvija ā"),
                Some("458258"),
                Some(1426.0),
            ),
            entry(2, None, Some("Ísland"), None, Some(second)),
            entry(3, Some("FR"), None, Some("9"), None),
        ]
    };
    let interests = vec![entry(
        1,
        Some("diversify_10004"),
        Some("Scripted Drama"),
        Some("10004"),
        Some(3.0),
    )];
    let ids: Vec<SnapshotLists> = sqlx::query_as(
        "SELECT region, countries_list, interests_list FROM sound_snapshots ORDER BY fetch_id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let want = |region: &str, list: &[AudienceRow]| list_id("1", region, list).map(Vec::from);
    assert_eq!(
        ids,
        vec![
            (
                "US".into(),
                want("US", &countries(0.1 + 0.2)),
                want("US", &interests)
            ),
            (
                "US".into(),
                want("US", &countries(0.1 + 0.2)),
                want("US", &interests)
            ),
            ("US".into(), want("US", &countries(7.5)), None),
            (
                "GB".into(),
                want("GB", &countries(0.1 + 0.2)),
                want("GB", &interests)
            ),
        ]
    );
    conn.execute("DROP SCHEMA before_lists CASCADE")
        .await
        .unwrap();
}

/// `soundtrend replay` over the whole archive.
async fn replay_all(app: &TestApp) -> soundtrend::cli::replay::ReplaySummary {
    soundtrend::cli::replay::replay(
        &app.pool,
        &soundtrend::cli::replay::ReplayFilter::default(),
        500,
        false,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn replay_deletes_the_lists_no_snapshot_names_any_more_and_keeps_every_other() {
    let app = TestApp::spawn().await;
    app.watch(CLIP, "US").await;
    app.watch(CLIP, "GB").await;
    poll_with(&app, "US", SAMPLE.to_owned()).await;
    poll_with(&app, "US", SAMPLE.to_owned()).await;
    poll_with(&app, "GB", SAMPLE.to_owned()).await;
    let lists = "SELECT (SELECT count(*) FROM audience_country_lists)
                      + (SELECT count(*) FROM audience_interest_lists)";
    assert_eq!(
        app.count(lists).await,
        2 * (10 + 5),
        "one list pair per region"
    );

    // What today's rules derive from US's archived bodies changes (as after a normalizer fix):
    // replay gives their snapshots a new list, and US's old one is named by nothing.
    app.pool
        .execute(
            "UPDATE fetches
             SET body_json = jsonb_set(body_json,
                                       '{data,sound,audience_countries,0,score}', '1427')
             WHERE region = 'US'",
        )
        .await
        .unwrap();
    let summary = replay_all(&app).await;
    assert_eq!(summary.orphan_list_rows, 10, "US's old country list");
    assert_eq!(app.count(lists).await, 2 * (10 + 5));
    let unnamed = app
        .count(
            "SELECT count(*) FROM audience_country_lists l
             WHERE NOT EXISTS (SELECT 1 FROM sound_snapshots s WHERE s.countries_list = l.list_id)",
        )
        .await;
    assert_eq!(unnamed, 0);
    // Every fetch still reads its whole lists, the changed score included.
    assert_eq!(app.audience_countries().await, 3 * 10);
    assert_eq!(
        app.count("SELECT count(*) FROM audience_countries WHERE score = 1427")
            .await,
        2
    );

    let again = replay_all(&app).await;
    assert_eq!((again.orphan_list_rows, again.changed), (0, 0));
}
