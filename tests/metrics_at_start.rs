//! Every series the README documents is on `/metrics` from start-up, at 0, before anything
//! moved it: an alert on `soundtrend_database_errors_total` reads 0, not "no data". Its own test
//! binary, so the process-wide recorder has seen no poll at all.

mod common;

use common::*;

/// The metric names of the README's metrics table.
fn documented_series() -> Vec<&'static str> {
    include_str!("../README.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `soundtrend_"))
        .filter_map(|l| l.split('`').next())
        .collect()
}

#[tokio::test]
async fn a_scrape_before_any_poll_shows_every_documented_series_at_zero() {
    let app = TestApp::spawn().await;

    let addr = start_admin(&app).await;
    let scrape = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let documented = documented_series();
    assert!(
        documented.len() >= 14,
        "the README table was read: {documented:?}"
    );
    for name in documented {
        let series = format!("soundtrend_{name}");
        assert!(
            scrape
                .lines()
                .any(|l| l.starts_with(&series) && !l.starts_with('#')),
            "{series} is missing before it moved:\n{scrape}"
        );
    }
    for line in [
        "soundtrend_database_errors_total 0",
        r#"soundtrend_rate_limited_total{provider="keyapi"} 0"#,
        r#"soundtrend_retries_total{provider="keyapi"} 0"#,
        r#"soundtrend_polls_total{provider="keyapi",outcome="timeout"} 0"#,
        r#"soundtrend_requests_total{provider="keyapi",outcome="ok"} 0"#,
        r#"soundtrend_validation_total{rule="wrong_clip"} 0"#,
        r#"soundtrend_rows_written_total{table="trend_points"} 0"#,
        r#"soundtrend_request_duration_seconds_count{provider="keyapi"} 0"#,
        r#"soundtrend_quota_wait_seconds_count{provider="keyapi"} 0"#,
        "soundtrend_entries_due 0",
    ] {
        assert!(
            scrape.lines().any(|l| l == line),
            "no `{line}` in:\n{scrape}"
        );
    }
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_soundtrend_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../deploy/grafana-dashboard.json"))
            .expect("deploy/grafana-dashboard.json is JSON");
    let documented = documented_series();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (i, _) in expr.match_indices("soundtrend_") {
                let name: String = expr[i + "soundtrend_".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    documented.contains(&base),
                    "panel {:?} queries soundtrend_{name}, which is not in the README's metrics table",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 10, "the dashboard was read: {queried} metrics");
}
