//! Chaos, small enough for CI: three `soundtrend run` processes on one database, a slow and
//! rate-limiting provider, `kill -9` of instances mid-request, and every database connection cut
//! once. Whatever happens, each pair ends with its data, the credit ledger equals the archive,
//! and a pair is paid for twice only where a process died with its request in flight (that
//! attempt's `fetches` row is left `pending`, to become `abandoned`).

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_soundtrend");
const PAIRS: usize = 30;

fn instance(app: &TestApp, base: &str, name: &str) -> Child {
    Command::new(BIN)
        .arg("run")
        .env_remove("RUST_LOG")
        .env("DATABASE_URL", &app.url)
        .env("KEYAPI_API_KEY", API_KEY)
        .env("SOUNDTREND__PROVIDER__BASE_URL", base)
        .env("SOUNDTREND__ADMIN__LISTEN", "")
        .env("SOUNDTREND__DAEMON__INSTANCE_NAME", name)
        .env("SOUNDTREND__DAEMON__TICK_CRON", "*/1 * * * * *")
        .env("SOUNDTREND__PROVIDER__REQUESTS_PER_SECOND", "10")
        .env("SOUNDTREND__PROVIDER__BURST", "2")
        .env("SOUNDTREND__PROVIDER__REQUEST_TIMEOUT", "2s")
        .env("SOUNDTREND__PROVIDER__RETRY_BASE_DELAY", "50ms")
        .env("SOUNDTREND__PROVIDER__RETRY_MAX_DELAY", "200ms")
        .env("SOUNDTREND__POLL__LEASE_TTL", "4s")
        .env("SOUNDTREND__POLL__CONCURRENCY", "2")
        .env("SOUNDTREND__POLL__FAILURE_BACKOFF", "1s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts")
}

/// 200 answers per clip, as the provider saw them.
fn answered(server: &FakeProvider) -> HashMap<String, usize> {
    let mut per_clip = HashMap::new();
    for h in server.hits().into_iter().filter(|h| !h.limited) {
        *per_clip.entry(h.clip_id).or_default() += 1;
    }
    per_clip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_under_kills_and_a_database_cut_pay_twice_only_for_requests_killed_in_flight(
) {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    server.set_faults(|b| {
        b.delay = Duration::from_millis(400);
        b.rate_limit_next = 2;
        b.retry_after_secs = 1;
        b.limited_clip = Some("1003".into());
    });
    app.watch_many(PAIRS).await;
    let mut instances: Vec<Child> = (0..3)
        .map(|i| instance(&app, &server.base, &format!("chaos-{i}")))
        .collect();
    let started = Instant::now();
    let mut kills = 0;

    // Kill an instance (with whatever it has in flight) three times, restarting it each time,
    // and cut every database connection once in between. The kills are scheduled on purpose:
    // they land at arbitrary points of the instances' work, which is what this test is about.
    for (at_ms, victim) in [(1_500u64, 0usize), (2_500, 1), (3_500, 2)] {
        tokio::time::sleep_until((started + Duration::from_millis(at_ms)).into()).await;
        instances[victim].kill().unwrap();
        instances[victim].wait().unwrap();
        kills += 1;
        instances[victim] = instance(&app, &server.base, &format!("chaos-{victim}-again"));
        if victim == 1 {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .execute(&app.pool)
            .await
            .unwrap();
        }
    }
    eventually_eq(
        "pairs polled",
        Duration::from_mins(1),
        async || app.polled_entries().await,
        PAIRS as i64,
    )
    .await;
    for child in &mut instances {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    for child in &mut instances {
        child.wait().unwrap();
    }

    assert_eq!(kills, 3);
    assert_eq!(
        app.count("SELECT count(DISTINCT clip_id) FROM fetches WHERE outcome = 'ok'")
            .await,
        PAIRS as i64,
        "every pair has its data"
    );
    let twice: Vec<(String, usize)> = answered(server)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    let in_flight = app
        .count("SELECT count(*) FROM fetches WHERE outcome IN ('pending', 'abandoned')")
        .await;
    eprintln!(
        "chaos: {kills} kills, {} requests, {} pairs answered more than once, {in_flight} attempts died in flight",
        server.hits().len(),
        twice.len()
    );
    for (clip, n) in twice {
        let killed_in_flight = app
            .count(&format!(
                "SELECT count(*) FROM fetches WHERE clip_id = '{clip}' AND outcome IN ('pending', 'abandoned')"
            ))
            .await;
        assert!(
            killed_in_flight >= (n - 1) as i64,
            "clip {clip} was answered {n} times but only {killed_in_flight} of its requests died in flight"
        );
    }
    app.assert_ledger_equals_archive().await;
    assert_eq!(app.leases_held().await, 0);
}
