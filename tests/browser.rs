//! The pages in a real browser: headless Chromium, driven through `chromedriver`'s `WebDriver`
//! HTTP API, opens the report file and a live page, and the test checks what a person would see: every
//! chart is an SVG of the expected size with drawn lines, and the console stays clean. Screenshots
//! land in `target/screenshots/` (the ones in `docs/` are copies).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them,
//! `scripts/test.sh` sets `SOUNDTREND_BROWSER_TESTS=skip` and says so; run directly, the test
//! fails with what to install.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::bin::{output, poll_sample_in, soundtrend, text};
use common::*;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn skipped() -> bool {
    if std::env::var("SOUNDTREND_BROWSER_TESTS").as_deref() == Ok("skip") {
        eprintln!("SOUNDTREND_BROWSER_TESTS=skip: the browser test did not run");
        return true;
    }
    assert!(
        Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
        "the browser test needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver (or set SOUNDTREND_BROWSER_TESTS=skip)"
    );
    false
}

/// `chromedriver` on a free port, killed when dropped.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        eventually(
            "chromedriver answers",
            Duration::from_secs(20),
            async || {
                driver
                    .http
                    .get(format!("{}/status", driver.base))
                    .send()
                    .await
                    .is_ok()
            },
        )
        .await;
        driver
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let text = req.send().await.unwrap().text().await.unwrap();
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        assert!(v["value"].get("error").is_none(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    async fn session(&self) -> String {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,1600"]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let v = self
            .call(reqwest::Method::POST, "/session", Some(caps))
            .await;
        v["sessionId"].as_str().unwrap().to_owned()
    }
}

/// Opens `url`, checks every chart, saves a full-page screenshot as `name`.png; returns the
/// charts' (width, height, drawn lines).
async fn look_at(driver: &Driver, session: &str, url: &str, name: &str) -> Vec<(f64, f64, u64)> {
    let s = format!("/session/{session}");
    driver
        .call(
            reqwest::Method::POST,
            &format!("{s}/url"),
            Some(json!({"url": url})),
        )
        .await;
    let charts = driver
        .call(
            reqwest::Method::POST,
            &format!("{s}/execute/sync"),
            Some(json!({"script": r"
                return Array.from(document.querySelectorAll('svg.chart')).map(svg => {
                    const box = svg.getBoundingClientRect();
                    const drawn = Array.from(svg.querySelectorAll('polyline'))
                        .filter(p => p.getTotalLength() > 0).length;
                    return [box.width, box.height, drawn];
                });", "args": []})),
        )
        .await;
    let shot = driver
        .call(reqwest::Method::GET, &format!("{s}/screenshot"), None)
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().unwrap())
        .unwrap();
    assert!(
        png.len() > 10_000,
        "a blank screenshot is tiny: {} bytes",
        png.len()
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
    let logs = driver
        .call(
            reqwest::Method::POST,
            &format!("{s}/se/log"),
            Some(json!({"type": "browser"})),
        )
        .await;
    let errors: Vec<&Value> = logs
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors on {url}: {errors:?}");
    charts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c[0].as_f64().unwrap(),
                c[1].as_f64().unwrap(),
                c[2].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_report_and_a_live_page_show_drawn_charts_in_headless_chromium() {
    if skipped() {
        return;
    }
    let app = TestApp::spawn().await;
    poll_sample_in(&app, &["US", "GB"]).await;
    sqlx::query("UPDATE sound_snapshots SET rank = 30 + fetch_id::int % 5")
        .execute(&app.pool)
        .await
        .unwrap();
    let report = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-report.html");
    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.args(["report", "--out", report.to_str().unwrap()]);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let admin = start_admin(&app).await;

    let driver = Driver::start().await;
    let session = driver.session().await;
    let pages = [
        (format!("file://{}", report.display()), "report", 3),
        (format!("http://{admin}/sounds/{CLIP}"), "live-sound", 2),
        (format!("http://{admin}/"), "live-overview", 1),
    ];
    for (url, name, expected) in pages {
        let charts = look_at(&driver, &session, &url, name).await;
        assert_eq!(charts.len(), expected, "{name}: {charts:?}");
        for (w, h, drawn) in charts {
            // 764 × 244 as drawn, scaled down only if the window were narrower.
            assert!(
                (700.0..=770.0).contains(&w) && (200.0..=250.0).contains(&h),
                "{name}: {w}×{h}"
            );
            assert!(drawn >= 1, "{name}: a chart without a drawn line");
        }
    }
    driver
        .call(
            reqwest::Method::DELETE,
            &format!("/session/{session}"),
            None,
        )
        .await;
}
