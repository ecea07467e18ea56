//! Group commit: answers written in one transaction leave exactly what writing each alone
//! leaves, a group the database refuses leaves nothing, and under load the daemon's answers
//! commit in groups while a refused one still stands alone. Real Postgres.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use common::*;
use soundtrend::domain::{ClipId, Period, Region};
use soundtrend::normalize::{normalize, Normalized, Observation};
use soundtrend::provider::{parse_response, Outcome, ProviderKind};
use soundtrend::store::fetches::{Booked, FetchRecord};
use soundtrend::store::group::{record_group, Answer};
use soundtrend::store::ingest::record_success;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const HELD: Uuid = Uuid::from_u128(0x11);
const SOMEONE_ELSES: Uuid = Uuid::from_u128(0x22);

/// One answer to write: a generated window for the pair, observed at `at`.
struct Case {
    clip: &'static str,
    region: &'static str,
    period: i16,
    last_day: NaiveDate,
    at: DateTime<Utc>,
    lease: Option<Uuid>,
    warnings: Vec<String>,
}

fn case(
    clip: &'static str,
    region: &'static str,
    period: i16,
    day: u32,
    lease: Option<Uuid>,
) -> Case {
    let last_day = NaiveDate::from_ymd_opt(2026, 5, day).unwrap();
    Case {
        clip,
        region,
        period,
        last_day,
        at: Utc
            .from_utc_datetime(&last_day.and_hms_opt(12, 0, 0).unwrap())
            .checked_add_signed(chrono::Duration::minutes(i64::from(period)))
            // Finer than Postgres keeps, as a live clock gives: every path must agree on it.
            .and_then(|t| t.checked_add_signed(chrono::Duration::nanoseconds(805_128_999)))
            .unwrap(),
        lease,
        warnings: Vec::new(),
    }
}

impl Case {
    fn body(&self) -> String {
        soundtrend::provider::fake::response(
            ProviderKind::KeyApi,
            self.clip,
            self.region,
            i64::from(self.period),
            self.last_day,
        )
        .to_string()
    }

    fn rows(&self, body: &str) -> Normalized {
        let detail = parse_response(200, body.as_bytes()).unwrap();
        let obs = Observation {
            clip_id: ClipId::parse(self.clip).unwrap(),
            region: Region::parse(self.region).unwrap(),
            period: Period::from_days(i64::from(self.period)).unwrap(),
            observed_at: self.at,
        };
        normalize(&detail, &obs).unwrap()
    }

    /// Books the attempt as the quota grant does: a `pending` row with its credits.
    async fn book(&self, app: &TestApp) -> Booked {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO fetches (clip_id, region, period, provider, requested_at, duration_ms,
                                  outcome, credits)
             VALUES ($1, $2, $3, 'keyapi', $4, 0, 'pending', 2) RETURNING id",
        )
        .bind(self.clip)
        .bind(self.region)
        .bind(self.period)
        .bind(self.at)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        Booked {
            fetch_id: id,
            day: self.at.date_naive(),
        }
    }

    fn record<'a>(&'a self, body: &'a str, booked: Booked) -> FetchRecord<'a> {
        FetchRecord {
            duration_ms: 40,
            http_status: Some(200),
            api_code: Some(0),
            api_message: Some("success"),
            request_id: Some("req"),
            credits: 2,
            body_json: Some(body),
            warnings: self.warnings.clone(),
            booked: Some(booked),
            ..FetchRecord::new(
                self.clip,
                self.region,
                self.period,
                ProviderKind::KeyApi,
                self.at,
                Outcome::Ok,
            )
        }
    }
}

/// Watchlist rows: leased to us (HELD), to someone else, and one clip polled ad hoc (no row).
async fn seed_watchlist(app: &TestApp) {
    sqlx::query(
        "INSERT INTO watchlist (clip_id, region, lease_owner, lease_token, lease_expires_at)
         VALUES ('101', 'US', 'me', $1, now() + interval '5 minutes'),
                ('101', 'GB', 'me', $1, now() + interval '5 minutes'),
                ('102', 'US', 'me', $1, now() + interval '5 minutes'),
                ('103', 'US', 'other', $2, now() + interval '5 minutes')",
    )
    .bind(HELD)
    .bind(SOMEONE_ELSES)
    .execute(&app.pool)
    .await
    .unwrap();
}

/// The earlier polls, written alone in both databases: windows the group's answers stitch onto.
fn earlier() -> Vec<Case> {
    vec![
        case("101", "US", 30, 1, Some(HELD)),
        case("102", "US", 7, 1, Some(HELD)),
    ]
}

/// The answers that finish together: overlapping windows of other lengths for the earlier pairs,
/// the same clip in another region (one `sounds` row), a late answer whose lease another worker
/// holds, an ad-hoc clip, and validation warnings.
fn together() -> Vec<Case> {
    let mut with_warnings = case("101", "GB", 7, 3, Some(HELD));
    with_warnings.warnings = vec!["audience_countries[3]: dropped, no code".into()];
    vec![
        case("101", "US", 7, 4, Some(HELD)),
        case("102", "US", 30, 3, Some(HELD)),
        with_warnings,
        case("103", "US", 7, 2, Some(HELD)),
        case("104", "US", 120, 4, None),
    ]
}

/// Every row the writes leave, as text, minus what differs by nature between two databases
/// (`next_due_at` is `now()` plus jitter).
async fn dump(app: &TestApp) -> Vec<String> {
    let mut all = Vec::new();
    for (table, select) in [
        ("sounds", "t::text FROM sounds t"),
        ("sound_snapshots", "t::text FROM sound_snapshots t"),
        ("trend_points", "t::text FROM trend_points t"),
        ("trend_windows", "t::text FROM trend_windows t"),
        ("trend_observations", "t::text FROM trend_observations t"),
        ("audience_countries", "t::text FROM audience_countries t"),
        ("audience_interests", "t::text FROM audience_interests t"),
        ("trend_index", "t::text FROM trend_index t"),
        ("trend_pairs", "t::text FROM trend_pairs t"),
        (
            "fetches",
            "(id, clip_id, region, period, provider, requested_at, duration_ms, http_status,
              outcome, error, api_code, api_message, request_id, attempt, credits, body_json,
              body_text, warnings, lease_lost)::text FROM fetches",
        ),
        (
            "watchlist",
            "(clip_id, region, last_polled_at, last_success_at, consecutive_failures,
              not_found_count, last_error, lease_owner, lease_token, lease_expires_at IS NULL,
              next_due_at > now())::text FROM watchlist",
        ),
    ] {
        let rows: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {select} ORDER BY 1")))
                .fetch_all(&app.pool)
                .await
                .unwrap();
        all.extend(rows.into_iter().map(|r| format!("{table} {r}")));
    }
    all
}

/// Writes every case alone, in order, as the lone write does.
async fn write_alone(app: &TestApp, cases: &[Case]) {
    for c in cases {
        let body = c.body();
        let booked = c.book(app).await;
        record_success(
            &app.pool,
            &c.record(&body, booked),
            &c.rows(&body),
            c.lease,
            0.0,
        )
        .await
        .unwrap();
    }
}

/// Books every case, then builds the group's answers.
async fn answers(app: &TestApp, cases: &[Case]) -> Vec<Answer> {
    let mut out = Vec::new();
    for c in cases {
        let body = c.body();
        let booked = c.book(app).await;
        let rows = Arc::new(c.rows(&body));
        out.push(Answer::of(&c.record(&body, booked), rows, c.lease, 0.0).unwrap());
    }
    out
}

#[tokio::test]
async fn a_group_commit_leaves_exactly_what_writing_each_answer_alone_leaves() {
    let (grouped, alone) = (TestApp::spawn().await, TestApp::spawn().await);
    for app in [&grouped, &alone] {
        seed_watchlist(app).await;
        write_alone(app, &earlier()).await;
        // Claimed again for the next round (a success gave the lease back).
        sqlx::query("UPDATE watchlist SET lease_token = $1 WHERE lease_owner IS NULL")
            .bind(HELD)
            .execute(&app.pool)
            .await
            .unwrap();
    }

    write_alone(&alone, &together()).await;
    let group = answers(&grouped, &together()).await;
    let refs: Vec<&Answer> = group.iter().collect();
    let written = record_group(&grouped.pool, &refs).await.unwrap();

    let lost: Vec<bool> = written.iter().map(|w| w.lease_lost).collect();
    assert_eq!(
        lost,
        [false, false, false, true, false],
        "only 103's lease was someone else's"
    );
    let (g, a) = (dump(&grouped).await, dump(&alone).await);
    assert!(g.len() > 100, "the dump holds the rows: {}", g.len());
    for (x, y) in g.iter().zip(&a) {
        assert_eq!(x, y);
    }
    assert_eq!(g.len(), a.len());
    assert_eq!(
        grouped
            .count("SELECT count(DISTINCT xmin::text) FROM fetches WHERE id > 2")
            .await,
        1,
        "the group's answers were committed by one transaction"
    );
}

#[tokio::test]
async fn a_group_the_database_refuses_leaves_nothing_of_any_of_its_answers() {
    let app = TestApp::spawn().await;
    seed_watchlist(&app).await;
    // Anything the database may refuse in one answer: here a constraint on one clip's snapshot.
    sqlx::query("ALTER TABLE sound_snapshots ADD CONSTRAINT refuse_102 CHECK (clip_id <> '102')")
        .execute(&app.pool)
        .await
        .unwrap();
    let group = answers(&app, &together()).await;
    let refs: Vec<&Answer> = group.iter().collect();

    let refused = record_group(&app.pool, &refs).await;

    let error = refused.expect_err("one refused answer fails the group");
    assert!(error.to_string().contains("refuse_102"), "{error}");
    assert_eq!(app.data_rows().await, 0, "nothing half-written");
    assert_eq!(
        app.fetches_with_outcome("pending").await,
        5,
        "every attempt still pending"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM watchlist WHERE lease_token IS NOT NULL AND last_success_at IS NULL")
            .await,
        4,
        "no bookkeeping either"
    );
    assert_eq!(app.count("SELECT count(*) FROM trend_index").await, 0);
}

#[tokio::test]
async fn answers_finishing_together_commit_in_groups_and_a_refused_one_stands_alone() {
    let app = TestApp::spawn().await;
    // Every answer takes 300 ms, so those sent together finish together.
    app.provider
        .set_faults(|f| f.delay = Duration::from_millis(300));
    let mut s = settings(&app.url);
    s.provider.requests_per_second = 500.0;
    s.provider.burst = std::num::NonZeroU32::new(50).unwrap();
    s.poll.concurrency = 16;
    app.watch_many(48).await;
    sqlx::query("ALTER TABLE sound_snapshots ADD CONSTRAINT refuse_1007 CHECK (clip_id <> '1007')")
        .execute(&app.pool)
        .await
        .unwrap();
    let worker = keyapi_worker(&s, &app, &app.provider.base, "a").await;

    let summary = worker.drain(&CancellationToken::new()).await.unwrap();

    assert_eq!(summary.stored, 47, "{summary:?}");
    assert_eq!(app.fetches_with_outcome("ok").await, 47);
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE outcome = 'store_error' AND clip_id = '1007' AND error LIKE '%refuse_1007%'")
            .await,
        1,
        "the refused answer is archived with its error"
    );
    let transactions = app
        .count("SELECT count(DISTINCT xmin::text) FROM fetches WHERE outcome = 'ok'")
        .await;
    assert!(
        transactions < 40,
        "47 answers in {transactions} transactions: they did not commit in groups"
    );
    assert_eq!(app.snapshots().await, 47);
    assert_eq!(app.count("SELECT count(*) FROM trend_pairs").await, 47);
    assert_eq!(
        app.count("SELECT count(*) FROM trend_observations WHERE clip_id = '1007'")
            .await,
        0,
        "nothing of the refused answer"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM watchlist WHERE last_success_at IS NOT NULL AND lease_token IS NULL")
            .await,
        47
    );
    assert_eq!(app.fetches_with_outcome("pending").await, 0);
    app.assert_ledger_equals_archive().await;
}
