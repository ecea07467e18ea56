//! The `soundtrend` binary as a user runs it: exit codes, one-line errors, secrets kept out of
//! every output, SIGTERM and SIGKILL.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bin::*;
use common::*;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn a_bad_config_value_fails_at_start_up_with_one_line_naming_the_key() {
    let app = TestApp::spawn().await;
    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.env("SOUNDTREND__PROVIDER__BURST", "0").arg("migrate");

    let out = output(c).await;

    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("provider.burst"), "{stderr}");
    assert!(stderr.contains("must be at least 1"), "{stderr}");
    assert!(stderr.contains("SOUNDTREND__PROVIDER__BURST"), "{stderr}");
}

#[tokio::test]
async fn polling_without_credentials_says_which_variable_to_set() {
    let app = TestApp::spawn().await;
    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.args(["poll", "--clip-id", CLIP, "--region", "US"]);

    let out = output(c).await;

    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEYAPI_API_KEY"));
}

#[tokio::test]
async fn poll_prints_a_one_line_summary_and_its_exit_code_tells_the_outcome() {
    let app = TestApp::spawn().await;
    let ok = MockServer::start().await;
    mount_sample(&ok, soundtrend::provider::ProviderKind::KeyApi).await;
    let mut c = soundtrend(&app, &ok.uri());
    c.env("KEYAPI_API_KEY", API_KEY).args([
        "poll",
        "--clip-id",
        CLIP,
        "--region",
        "us",
        "--period",
        "7",
    ]);

    let out = output(c).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("ok: 6703723351497508865/US period=7 via keyapi")
            && stdout.contains("rows=24"),
        "{stdout}"
    );

    let broken = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&broken)
        .await;
    let mut c = soundtrend(&app, &broken.uri());
    c.env("KEYAPI_API_KEY", API_KEY)
        .args(["poll", "--clip-id", CLIP, "--region", "US"]);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 500"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn secrets_never_appear_in_any_output() {
    let app = TestApp::spawn().await;
    let key = "sk-live-9f8e7d6c5b4a39281706";
    let basic_pw = "pw-0a1b2c3d4e5f6a7b8c9d"; // fake, and distinctive enough to grep for
    let mut seen = String::new();
    for (status, body) in [
        (401, String::new()),
        (500, String::new()),
        (200, SAMPLE.to_owned()),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(status).set_body_string(body))
            .mount(&server)
            .await;
        for provider in ["keyapi", "echotik"] {
            let mut c = soundtrend(&app, &server.uri());
            c.env("KEYAPI_API_KEY", key)
                .env("ECHOTIK_USERNAME", "ana")
                .env("ECHOTIK_PASSWORD", basic_pw)
                .env("SOUNDTREND__PROVIDER__NAME", provider)
                .env("RUST_LOG", "trace")
                .args(["poll", "--clip-id", CLIP, "--region", "US"]);
            seen.push_str(&text(&output(c).await));
        }
    }
    assert!(
        seen.contains("Polled.") && seen.contains("rejected the credentials"),
        "the runs did log: {seen}"
    );
    assert!(!seen.contains(key), "the API key leaked");
    assert!(!seen.contains(basic_pw), "the password leaked");
    assert!(!seen.contains("YW5hOnB3LTBh"), "the Basic header leaked");
    let archived = app.count(&format!("SELECT count(*) FROM fetches WHERE body_json::text LIKE '%{key}%' OR error LIKE '%{basic_pw}%'")).await;
    assert_eq!(archived, 0);
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

async fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_hits(server: &FakeProvider, n: usize) {
    let what = format!("the daemon made {n} request(s)");
    eventually(&what, Duration::from_secs(20), async || {
        server.hit_count() >= n
    })
    .await;
}

#[tokio::test]
async fn run_exits_zero_on_sigterm_after_finishing_in_flight_polls() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    server.set_faults(|b| b.delay = Duration::from_millis(1_500));
    app.watch_many(3).await;
    let mut c = soundtrend(&app, &server.base);
    c.env("KEYAPI_API_KEY", API_KEY)
        .env("SOUNDTREND__POLL__CONCURRENCY", "1")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    wait_hits(server, 1).await;

    signal(child.id(), "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(15)).await;

    assert_eq!(status.code(), Some(0));
    assert_eq!(server.hits().len(), 1);
    assert_eq!(app.snapshots().await, 1, "the in-flight poll was finished");
    assert_eq!(app.leases_held().await, 0);
}

#[tokio::test]
async fn a_run_killed_with_sigkill_mid_poll_leaves_no_rows_and_the_entry_is_polled_later() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    server.set_faults(|b| b.delay = Duration::from_millis(900));
    app.watch(CLIP, "US").await;
    let mut c = soundtrend(&app, &server.base);
    c.env("KEYAPI_API_KEY", API_KEY)
        .env("SOUNDTREND__PROVIDER__REQUEST_TIMEOUT", "1s")
        .env("SOUNDTREND__POLL__LEASE_TTL", "2s")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    wait_hits(server, 1).await;

    signal(child.id(), "-KILL");
    wait_exit(&mut child, Duration::from_secs(5)).await;
    assert_eq!(app.data_rows().await, 0, "nothing half-written");
    assert_eq!(
        app.count("SELECT count(*) FROM fetches WHERE outcome = 'pending' AND credits = 2")
            .await,
        1,
        "the booked credits keep their archived attempt"
    );
    assert_eq!(app.fetches().await, 1);

    server.set_faults(|b| b.delay = Duration::ZERO);
    eventually(
        "the killed run's lease expires",
        Duration::from_secs(5),
        async || app.all_leases_expired().await,
    )
    .await;
    let mut c = soundtrend(&app, &server.base);
    c.env("KEYAPI_API_KEY", API_KEY).args(["poll", "--due"]);
    let out = output(c).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(app.snapshots().await, 1);
    assert_eq!(app.idle_polled_entries().await, 1);
    app.assert_ledger_equals_archive().await;
}

#[tokio::test]
async fn watch_import_reports_bad_lines_by_number_and_is_idempotent() {
    let app = TestApp::spawn().await;
    let dir = std::env::temp_dir().join(format!(
        "soundtrend-import-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sounds.csv");
    std::fs::write(&file, "clip_id,region,period,poll_interval\n6703723351497508865,US\nnot-a-clip,US\n6703723351497508865,gb,30,12h\n1,ZZ\n").unwrap();

    for round in 0..2 {
        let mut c = soundtrend(&app, "http://127.0.0.1:9/");
        c.args(["watch", "import"]).arg(&file);
        let out = output(c).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(stderr.contains("sounds.csv:3: invalid clip id"), "{stderr}");
        assert!(stderr.contains("sounds.csv:5: invalid region"), "{stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let expected = if round == 0 {
            "2 added, 0 updated, 2 refused"
        } else {
            "0 added, 2 updated, 2 refused"
        };
        assert!(stdout.contains(expected), "{stdout}");
    }
    assert_eq!(app.watched().await, 2);
    assert_eq!(app.count("SELECT count(*) FROM watchlist WHERE region = 'GB' AND period = 30 AND poll_interval = '12 hours'").await, 1);

    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.args(["watch", "pause", CLIP, "GB"]);
    assert_eq!(output(c).await.status.code(), Some(0));
    assert_eq!(app.disabled_entries().await, 1);
    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.args(["status", "--json"]);
    let out = output(c).await;
    let status: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(status["entries"]["total"], 2);
    assert_eq!(status["entries"]["disabled"], 1);
    std::fs::remove_dir_all(&dir).ok();
}

/// Forwards 127.0.0.1:`port` to the test database server, from `after` on (nothing listens before).
fn late_database_proxy(db_url: &str, after: Duration) -> u16 {
    let target = url::Url::parse(db_url).unwrap();
    let target = format!(
        "{}:{}",
        target.host_str().unwrap(),
        target.port().unwrap_or(5432)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    tokio::spawn(async move {
        // Nothing listens until `after`: a database that is late is what this proxy is for.
        tokio::time::sleep(after).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn run_waits_for_a_database_that_is_not_up_yet_and_then_polls() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    app.watch(CLIP, "US").await;
    let port = late_database_proxy(&app.url, Duration::from_secs(3));
    let mut late_url = url::Url::parse(&app.url).unwrap();
    late_url.set_port(Some(port)).unwrap();
    let mut c = soundtrend(&app, &server.base);
    c.env("KEYAPI_API_KEY", API_KEY)
        .env("DATABASE_URL", late_url.as_str())
        .env("SOUNDTREND__DATABASE__CONNECT_TIMEOUT", "1s")
        .env("SOUNDTREND__DAEMON__DATABASE_RETRY_MAX", "1s")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();

    wait_hits(server, 1).await;
    eventually(
        "something is stored after the database came up",
        Duration::from_secs(10),
        async || app.snapshots().await > 0,
    )
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon kept running"
    );
    signal(child.id(), "-TERM");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(15)).await.code(),
        Some(0)
    );
}

#[tokio::test]
async fn json_logs_carry_one_structured_line_per_poll() {
    let app = TestApp::spawn().await;
    let server = MockServer::start().await;
    mount_sample(&server, soundtrend::provider::ProviderKind::KeyApi).await;
    let mut c = soundtrend(&app, &server.uri());
    c.env("KEYAPI_API_KEY", API_KEY)
        .env("SOUNDTREND__LOG__FORMAT", "json")
        .args(["poll", "--clip-id", CLIP, "--region", "US", "--period", "7"]);

    let out = output(c).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let poll = lines
        .iter()
        .find(|l| l["message"] == "Polled.")
        .unwrap_or_else(|| panic!("no poll line in {stderr}"));
    assert_eq!(poll["clip_id"], CLIP);
    assert_eq!(poll["region"], "US");
    assert_eq!(poll["period"], 7);
    assert_eq!(poll["outcome"], "ok");
    assert_eq!(poll["rows"], 24);
    assert!(poll["latency_ms"].is_u64());
    assert!(poll["wait_ms"].is_u64() && poll["request_ms"].is_u64());
    assert_eq!(poll["level"], "INFO");
}
