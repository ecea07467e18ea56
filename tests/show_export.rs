//! `soundtrend show` and `soundtrend export`: one sound from the database alone.

mod common;

use common::bin::*;
use common::*;

/// A test database holding one 7-day poll of the sample clip in US; returns it with the number
/// of stitched days stored.
async fn polled_once() -> (TestApp, i64) {
    let app = TestApp::spawn().await;
    let out = poll_sample(&app).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let days = app.count("SELECT count(*) FROM trend_index").await;
    assert!(days > 0);
    (app, days)
}

#[tokio::test]
async fn show_prints_title_trend_audience_and_provenance_without_calling_the_api() {
    let (app, _) = polled_once().await;
    // No provider answers here: show must not need one.
    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.args(["show", CLIP, "--region", "us", "--days", "7"]);

    let out = output(c).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let title: String = sqlx::query_scalar("SELECT title FROM sounds")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(stdout.contains(&title), "{stdout}");
    let trend = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("US  "))
        .unwrap_or_else(|| panic!("no US trend line: {stdout}"));
    let sparkline = trend.trim_start()[4..].split("  ").next().unwrap();
    assert_eq!(sparkline.chars().count(), 7, "one character a day: {trend}");
    assert!(
        sparkline.chars().all(|c| "▁▂▃▄▅▆▇█ ".contains(c)),
        "{trend}"
    );
    assert!(stdout.contains("top countries and interests"), "{stdout}");
    assert!(
        stdout.contains("via keyapi") && stdout.contains("1 successful fetch in all"),
        "{stdout}"
    );
}

#[tokio::test]
async fn show_for_a_sound_never_polled_exits_2_saying_how_to_watch_it() {
    let app = TestApp::spawn().await;
    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.args(["show", "123"]);

    let out = output(c).await;

    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("watch add 123"), "{stderr}");
    assert!(
        stderr.contains("_demo"),
        "it points to the demo's data: {stderr}"
    );
}

#[tokio::test]
async fn export_writes_the_stitched_daily_series_as_csv_and_as_json_lines() {
    let (app, days) = polled_once().await;
    let file = std::env::temp_dir().join(format!(
        "soundtrend-export-{}.csv",
        uuid::Uuid::new_v4().simple()
    ));
    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.args([
        "export",
        "--clip-id",
        CLIP,
        "--region",
        "US",
        "--format",
        "csv",
        "--out",
    ])
    .arg(&file);

    let out = output(c).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let csv = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).ok();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(soundtrend::cli::export::COLUMNS));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len() as i64, days, "{csv}");
    assert!(rows.iter().all(|r| r.starts_with(&format!("{CLIP},US,"))));

    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.args(["export", "--clip-id", CLIP, "--format", "jsonl"]);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len() as i64, days);
    let newest = lines.last().unwrap();
    assert!((0.0..=100.0).contains(&newest["index_value"].as_f64().unwrap()));
    assert!(newest["index_low"].as_f64().unwrap() <= newest["index_value"].as_f64().unwrap());
    assert_eq!(newest["segment"], 1);
    assert!(newest["window_value"].is_f64(), "{newest}");
}
