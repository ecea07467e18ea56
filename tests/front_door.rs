//! The front door, as a newcomer meets it: the quick start keeps its made-up data apart, the
//! script works wherever cargo builds, and errors name what to fix.

mod common;

use std::process::Command;

use common::bin::*;
use common::*;
use sqlx::{Connection, PgConnection};

/// The test database's URL with its name replaced, on the same server.
fn url_of(app: &TestApp, name: &str) -> String {
    let mut url = url::Url::parse(&app.url).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

fn name_of(app: &TestApp) -> String {
    url::Url::parse(&app.url).unwrap().path()[1..].to_owned()
}

async fn database_exists(app: &TestApp, name: &str) -> bool {
    app.count(&format!(
        "SELECT count(*) FROM pg_database WHERE datname = '{name}'"
    ))
    .await
        == 1
}

async fn count_in(url: &str, sql: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    n
}

/// Drops the demo database of `app` through the command a user would run.
async fn reset_demo(app: &TestApp) -> std::process::Output {
    let mut c = soundtrend(app, "http://127.0.0.1:9/");
    c.args(["quickstart", "--reset"]);
    output(c).await
}

#[tokio::test]
async fn the_demo_keeps_its_made_up_data_in_its_own_database_and_reset_drops_it() {
    let app = TestApp::spawn().await;
    let demo = format!("{}_demo", name_of(&app));
    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.arg("quickstart");

    let out = output(c).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("mode: DEMO"), "{stdout}");
    assert!(
        stdout.contains(&format!("database: {}", url_of(&app, &demo)))
            && stdout.contains("the demo's own database")
            && stdout.contains("--reset"),
        "the output says where the demo data went: {stdout}"
    );
    assert_eq!(app.watched().await, 0);
    assert_eq!(app.fetches().await, 0);
    let demo_url = url_of(&app, &demo);
    assert_eq!(
        count_in(&demo_url, "SELECT count(*) FROM watchlist").await,
        2
    );

    let out = reset_demo(&app).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("dropped the demo database"),
        "{}",
        text(&out)
    );
    assert!(!database_exists(&app, &demo).await);
    assert!(
        database_exists(&app, &name_of(&app)).await,
        "the configured database stays"
    );
}

#[tokio::test]
async fn live_mode_says_it_uses_the_configured_database() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    let mut c = soundtrend(&app, &server.base);
    c.env("KEYAPI_API_KEY", API_KEY).arg("quickstart");

    let out = output(c).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("mode: LIVE"), "{stdout}");
    assert!(
        stdout.contains(&format!("database: {} (the configured database", app.url)),
        "{stdout}"
    );
    assert_eq!(app.watched().await, 1);
    assert!(!database_exists(&app, &format!("{}_demo", name_of(&app))).await);
}

#[tokio::test]
async fn the_quickstart_script_runs_with_cargo_target_dir_set() {
    let app = TestApp::spawn().await;
    // The directory this very binary was built in, which is not ./target when CARGO_TARGET_DIR
    // is set: the script must find it through cargo.
    let target_dir = std::path::Path::new(BIN)
        .parent()
        .and_then(|p| p.parent())
        .unwrap();
    let mut c = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/quickstart.sh"
    ));
    for var in ["KEYAPI_API_KEY", "ECHOTIK_USERNAME", "ECHOTIK_PASSWORD"] {
        c.env_remove(var);
    }
    c.env("CARGO_TARGET_DIR", target_dir)
        .env("DATABASE_URL", &app.url)
        .stdin(std::process::Stdio::null());

    let out = output(c).await;
    let reset = reset_demo(&app).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mode: DEMO"),
        "{}",
        text(&out)
    );
    assert_eq!(reset.status.code(), Some(0), "{}", text(&reset));
}

#[tokio::test]
async fn logs_written_to_a_file_or_pipe_carry_no_colour_codes() {
    let app = TestApp::spawn().await;

    let out = poll_sample(&app).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Polled."), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "ANSI escapes in: {stderr:?}");
}

#[tokio::test]
async fn the_poll_log_line_tells_the_rate_limit_wait_from_the_request_time() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    app.watch_many(2).await;
    let mut c = soundtrend(&app, &server.base);
    c.env("KEYAPI_API_KEY", API_KEY)
        .env("SOUNDTREND__LOG__FORMAT", "json")
        .env("SOUNDTREND__PROVIDER__REQUESTS_PER_SECOND", "0.5")
        .env("SOUNDTREND__PROVIDER__BURST", "1")
        .args(["poll", "--due"]);

    let out = output(c).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let polls: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "Polled.")
        .collect();
    assert_eq!(polls.len(), 2, "{}", text(&out));
    let waited = polls
        .iter()
        .find(|p| p["wait_ms"].as_u64().unwrap() >= 1_000)
        .unwrap_or_else(|| panic!("one poll waited for the 2 s rate slot: {polls:?}"));
    let request_ms = waited["request_ms"].as_u64().unwrap();
    assert!(request_ms < 1_000, "the wait is not request time: {waited}");
    assert!(waited["latency_ms"].as_u64().unwrap() >= waited["wait_ms"].as_u64().unwrap());
}

#[tokio::test]
async fn an_admin_address_in_use_exits_2_with_one_line_naming_admin_listen() {
    let app = TestApp::spawn().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.env("KEYAPI_API_KEY", API_KEY)
        .env("SOUNDTREND__ADMIN__LISTEN", &addr)
        .env("SOUNDTREND__LOG__LEVEL", "error")
        .arg("run");

    let out = output(c).await;

    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("admin.listen") && stderr.contains(&addr),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_network_error_names_the_url_it_tried_and_nothing_secret() {
    let app = TestApp::spawn().await;
    let key = "sk-live-3c2b1a0f9e8d7c6b5a49";
    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.env("KEYAPI_API_KEY", key)
        .args(["poll", "--clip-id", CLIP, "--region", "US"]);

    let out = output(c).await;

    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{stderr}");
    assert!(last.contains("http://127.0.0.1:9/"), "{last}");
    assert!(!text(&out).contains(key), "the key leaked: {}", text(&out));
}

#[tokio::test]
async fn watch_list_writes_every_interval_one_humane_way() {
    let app = TestApp::spawn().await;
    for (region, interval) in [("US", None), ("GB", Some("36h")), ("DE", Some("30m"))] {
        let mut c = soundtrend(&app, "http://127.0.0.1:9/");
        c.args(["watch", "add", CLIP, region]);
        if let Some(i) = interval {
            c.args(["--interval", i]);
        }
        let out = output(c).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.args(["watch", "list"]);

    let out = output(c).await;

    let stdout = String::from_utf8_lossy(&out.stdout);
    let interval_of = |region: &str| {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!(" {region} ")))
            .unwrap_or_else(|| panic!("no {region} line: {stdout}"));
        line.split_whitespace().nth(3).unwrap().to_owned()
    };
    assert_eq!(interval_of("US"), "1day", "{stdout}");
    assert_eq!(interval_of("DE"), "30m", "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(" GB ") && l.contains("1day 12h")),
        "{stdout}"
    );
}

#[tokio::test]
async fn one_fetch_is_counted_in_the_singular() {
    let app = TestApp::spawn().await;
    let out = poll_sample(&app).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.arg("replay");

    let out = output(c).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("replayed 1 fetch into"), "{stdout}");
}

/// `c` run on a pseudo-terminal (util-linux `script`), its terminal output captured on stdout.
fn on_a_terminal(c: &Command) -> Command {
    let mut line = shell_quote(&c.get_program().to_string_lossy());
    for arg in c.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(&arg.to_string_lossy()));
    }
    let mut t = Command::new("script");
    t.args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::null());
    for (key, value) in c.get_envs() {
        match value {
            Some(v) => t.env(key, v),
            None => t.env_remove(key),
        };
    }
    t
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[tokio::test]
async fn on_a_terminal_logs_are_coloured_unless_no_color_is_set() {
    let app = TestApp::spawn().await;
    let server = &app.provider;
    let mut c = soundtrend(&app, &server.base);
    c.env("KEYAPI_API_KEY", API_KEY).args([
        "poll",
        "--clip-id",
        CLIP,
        "--region",
        "US",
        "--period",
        "7",
    ]);

    let coloured = output(on_a_terminal(&c)).await;
    c.env("NO_COLOR", "1");
    let plain = output(on_a_terminal(&c)).await;

    let coloured = text(&coloured);
    let plain = text(&plain);
    assert!(
        coloured.contains("Polled.") && coloured.contains("\u{1b}["),
        "{coloured:?}"
    );
    assert!(
        plain.contains("Polled.") && !plain.contains('\u{1b}'),
        "{plain:?}"
    );
}
