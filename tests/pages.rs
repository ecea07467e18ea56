//! The pictures: `soundtrend report` writes one self-contained HTML file, the admin listener serves
//! the same pages live, and provider text renders as text whatever it holds.

mod common;

use std::collections::HashMap;

use common::bin::{output, poll_sample_in, soundtrend, text};
use common::*;
use soundtrend::domain::ClipId;
use soundtrend::web::pages::{html, Filter, Overview, SoundPage};

#[tokio::test]
async fn the_report_is_one_self_contained_file_with_a_chart_per_sound() {
    let app = TestApp::spawn().await;
    poll_sample_in(&app, &["US", "GB"]).await;
    let out_file = std::env::temp_dir().join(format!("report-{}.html", std::process::id()));

    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.args(["report", "--out", out_file.to_str().unwrap()]);
    let out = output(c).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("1 sound"), "{}", text(&out));
    let page = std::fs::read_to_string(&out_file).unwrap();
    std::fs::remove_file(&out_file).ok();
    assert!(page.starts_with("<!DOCTYPE html>"));
    for needed in [
        "Rising",
        "Credits spent per day",
        "Polling health",
        "New Sun",
        "Chihei Hatakeyama",
        "Trend (stitched index",
        "Chart rank",
        "Top countries",
        "Top interests",
        "from keyapi at",
    ] {
        assert!(page.contains(needed), "no {needed:?} in the report");
    }
    // Credits and the trend (the sample is unranked, so no rank chart): two regions on the
    // trend chart, a polyline each, plus the grid lines.
    let charts = page.matches(r#"<svg class="chart""#).count();
    assert_eq!(charts, 2, "{charts} charts");
    assert!(page.contains("Not ranked in any snapshot."));
    assert!(page.matches("<polyline").count() >= (1 + 3) + (2 + 5));
    // Nothing fetched from anywhere when it is opened.
    for external in [
        "<script",
        "rel=\"stylesheet",
        "src=\"http",
        "@import",
        "url(http",
    ] {
        assert!(!page.contains(external), "the report loads {external}");
    }
}

#[tokio::test]
async fn a_filtered_report_shows_only_what_was_asked_for() {
    let app = TestApp::spawn().await;
    poll_sample_in(&app, &["US"]).await;
    let out_file = std::env::temp_dir().join(format!("report-f-{}.html", std::process::id()));
    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.args([
        "report",
        "--out",
        out_file.to_str().unwrap(),
        "--clip-id",
        "1234",
    ]);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("0 sounds"), "{}", text(&out));
    std::fs::remove_file(&out_file).ok();

    let mut c = soundtrend(&app, "http://127.0.0.1:9/");
    c.args(["report", "--since", "yesterday"]);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--since"), "{}", text(&out));
}

#[tokio::test]
async fn hostile_titles_authors_and_audiences_render_as_text_never_as_markup() {
    let app = TestApp::spawn().await;
    let long = "é".repeat(100_000);
    let hostile_title = r#""><script>alert(1)</script><img src=x onerror=alert(2)>"#;
    let rtl_author = "\u{202E}ﺍﻟﻔﻨﺎﻥ 🎵🔥 'single' \"double\" &amp;";
    let body = sample_with(soundtrend::provider::ProviderKind::KeyApi, |v| {
        let s = &mut v["data"]["sound"];
        s["title"] = serde_json::json!(format!("{hostile_title}{long}"));
        s["author"] = serde_json::json!(rtl_author);
        s["cover"] = serde_json::json!("javascript:alert(3)");
        s["audience_countries"][0]["country_info"]["value"] =
            serde_json::json!("<b>Latvia</b></table><script>x()</script>");
    });
    let server = FakeProvider::builder()
        .bodies(HashMap::from([(CLIP.to_owned(), body.into())]))
        .start()
        .await
        .unwrap();
    app.watch(CLIP, "US").await;
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
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let filter = Filter::default();
    let overview = Overview::load(&app.pool, &filter, chrono::Utc::now())
        .await
        .unwrap();
    let sound = SoundPage::load(&app.pool, &ClipId::parse(CLIP).unwrap(), &filter)
        .await
        .unwrap()
        .expect("polled");
    for page in [
        html::report(&overview, std::slice::from_ref(&sound)).into_string(),
        html::sound_page(&sound).into_string(),
        html::overview_page(&overview).into_string(),
    ] {
        assert!(!page.contains("<script"), "markup got through");
        assert!(!page.contains("<img"), "markup got through");
        assert!(!page.contains("<b>Latvia"), "markup got through");
        assert!(
            !page.contains("javascript:"),
            "a javascript: link got through"
        );
        assert_eq!(
            page.matches("</table>").count(),
            page.matches("<table").count()
        );
    }
    let page = html::sound_page(&sound).into_string();
    assert!(page.contains("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains(&long), "the long title is kept whole");
    assert!(
        page.contains("\u{202E}ﺍﻟﻔﻨﺎﻥ 🎵🔥"),
        "RTL text and emoji as they are"
    );
    assert!(page.contains("&lt;b&gt;Latvia&lt;/b&gt;"));
}

#[tokio::test]
async fn the_live_pages_serve_the_overview_and_each_sound_from_the_database() {
    let app = TestApp::spawn().await;
    poll_sample_in(&app, &["US", "DE"]).await;
    // Ranked snapshots (the sample has none): the page draws their history.
    sqlx::query("UPDATE sound_snapshots SET rank = 40 + fetch_id::int % 7")
        .execute(&app.pool)
        .await
        .unwrap();
    let addr = start_admin(&app).await;
    let get = async |path: &str| {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };

    let (status, overview) = get("/").await;
    assert_eq!(status, 200);
    assert!(
        overview.contains(&format!(r#"href="/sounds/{CLIP}""#)),
        "{overview}"
    );
    let (status, sound) = get(&format!("/sounds/{CLIP}")).await;
    assert_eq!(status, 200);
    assert!(sound.contains("New Sun") && sound.contains(">US<") && sound.contains(">DE<"));
    assert_eq!(
        sound.matches(r#"<svg class="chart""#).count(),
        2,
        "the trend and the rank history"
    );
    assert_eq!(get("/sounds/999").await.0, 404, "no data");
    assert_eq!(get("/sounds/not-a-clip").await.0, 404);
}

#[tokio::test]
async fn a_year_of_history_is_drawn_point_by_point() {
    let app = TestApp::spawn().await;
    poll_sample_in(&app, &["US"]).await;
    // A year of stitched days for the pair, as a year of daily polls leaves them.
    sqlx::query(
        "INSERT INTO trend_index (clip_id, region, day, index_value, index_low, index_high,
                                  segment, windows, fetch_id, changed_by)
         SELECT $1, 'US', d::date, 50 + 40 * sin(n / 20.0), 49 + 40 * sin(n / 20.0),
                51 + 40 * sin(n / 20.0), 1, 1, f.id, f.id
         FROM generate_series(current_date - 400, current_date - 40, interval '1 day')
              WITH ORDINALITY g(d, n),
              (SELECT min(id) AS id FROM fetches) f
         ON CONFLICT DO NOTHING",
    )
    .bind(CLIP)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE trend_pairs SET first_day = current_date - 400 WHERE clip_id = $1")
        .bind(CLIP)
        .execute(&app.pool)
        .await
        .unwrap();

    let sound = SoundPage::load(&app.pool, &ClipId::parse(CLIP).unwrap(), &Filter::default())
        .await
        .unwrap()
        .unwrap();
    let days = sound.regions[0].index.len();
    assert!(days >= 365, "{days} days");
    let page = html::sound_page(&sound).into_string();
    let longest = page
        .split("<polyline")
        .skip(1)
        .map(|p| {
            p.split("points=\"")
                .nth(1)
                .unwrap_or("")
                .split('"')
                .next()
                .unwrap_or("")
                .split(' ')
                .count()
        })
        .max()
        .unwrap();
    assert!(longest >= 365, "the year's line has {longest} points");
}
