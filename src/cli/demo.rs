//! A local stand-in for both providers, for the quick start and for benchmarks: it answers the
//! "trending music detail" endpoint in the KeyAPI and the EchoTik dialect with responses shaped
//! exactly like the providers' documented sample, trend windows ending yesterday (UTC).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{Duration, NaiveDate, Utc};
use serde_json::{json, Value};

use crate::provider::ProviderKind;

/// The documented sample response (KeyAPI's; EchoTik's differs only in `message`).
pub const SAMPLE_RESPONSE: &str = include_str!("../../tests/fixtures/keyapi_sample.json");
/// The clip of the documented sample.
pub const SAMPLE_CLIP_ID: &str = "6703723351497508865";

/// Serves the demo API on `addr` (port 0 picks a free port) and returns the bound address.
pub async fn serve(addr: SocketAddr) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route(
            ProviderKind::KeyApi.path(),
            get(|h, q| handle(ProviderKind::KeyApi, h, q)),
        )
        .route(
            ProviderKind::EchoTik.path(),
            get(|h, q| handle(ProviderKind::EchoTik, h, q)),
        );
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((bound, handle))
}

async fn handle(
    kind: ProviderKind,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    answer(kind, &headers, &q)
}

/// Any credentials are accepted, but they must come in the provider's scheme.
fn authorized(kind: ProviderKind, headers: &HeaderMap) -> bool {
    let scheme = match kind {
        ProviderKind::KeyApi => "Bearer ",
        ProviderKind::EchoTik => "Basic ",
    };
    header(headers, "authorization")
        .is_some_and(|v| v.starts_with(scheme) && v.len() > scheme.len())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn answer(kind: ProviderKind, headers: &HeaderMap, q: &HashMap<String, String>) -> Response {
    if !authorized(kind, headers) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"code": 401, "message": "unauthorized"})),
        )
            .into_response();
    }
    let clip_id = q
        .get("clip_id")
        .map(String::as_str)
        .unwrap_or(SAMPLE_CLIP_ID);
    let region = q.get("region").map(String::as_str).unwrap_or("US");
    let period: i64 = q.get("period").and_then(|p| p.parse().ok()).unwrap_or(7);
    if ![7, 30, 120].contains(&period) || !clip_id.bytes().all(|b| b.is_ascii_digit()) {
        return axum::Json(json!({"code": 40001, "message": "invalid parameter", "data": null}))
            .into_response();
    }
    let yesterday = Utc::now().date_naive() - Duration::days(1);
    axum::Json(response(kind, clip_id, region, period, yesterday)).into_response()
}

/// A response in `kind`'s dialect for any clip: the sample's shape and audience lists, a
/// deterministic trend for the window ending `last_day`, and the sample's metadata for the sample
/// clip (a generated title for others).
pub fn response(
    kind: ProviderKind,
    clip_id: &str,
    region: &str,
    period: i64,
    last_day: NaiveDate,
) -> Value {
    let mut body: Value = serde_json::from_str(SAMPLE_RESPONSE).expect("the sample is valid JSON");
    body["message"] = json!(kind.success_message());
    body["requestId"] = json!(format!("demo-{clip_id}-{region}-{period}-{last_day}"));
    let seed = fnv1a(&format!("{clip_id}/{region}"));
    let sound = &mut body["data"]["sound"];
    sound["clip_id"] = json!(clip_id);
    sound["country_code"] = json!(region);
    if clip_id != SAMPLE_CLIP_ID {
        sound["title"] = json!(format!(
            "Demo sound {}",
            &clip_id[clip_id.len().saturating_sub(4)..]
        ));
        sound["song_id"] = json!(format!("{}", seed % 10_000_000_000_000_000_000));
        sound["link"] = json!(format!("https://www.tiktok.com/music/x-{clip_id}"));
        sound["url_title"] = json!("Demo-sound");
    }
    sound["trend"] = Value::Array(trend(seed, period, last_day));
    body
}

/// `period` daily points ending on `last_day`, relative so that the window's maximum is 1.
pub fn trend(seed: u64, period: i64, last_day: NaiveDate) -> Vec<Value> {
    let first = last_day - Duration::days(period - 1);
    let raw: Vec<f64> = (0..period)
        .map(|i| {
            let day = first + Duration::days(i);
            let x = fnv1a(&format!("{seed}:{day}"));
            0.05 + (x % 1000) as f64 / 1000.0
        })
        .collect();
    let max = raw.iter().cloned().fold(f64::MIN, f64::max);
    raw.iter()
        .enumerate()
        .map(|(i, v)| {
            let day = first + Duration::days(i as i64);
            let ts = day
                .and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp();
            json!({"time": ts, "value": (v / max * 100.0).round() / 100.0})
        })
        .collect()
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_windows_end_on_the_given_day_and_peak_at_one() {
        let day = NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
        for period in [7, 30, 120] {
            let body = response(ProviderKind::EchoTik, "123", "GB", period, day);
            assert_eq!(body["message"], "ok");
            let trend = body["data"]["sound"]["trend"].as_array().unwrap();
            assert_eq!(trend.len() as i64, period);
            let last = trend.last().unwrap()["time"].as_i64().unwrap();
            assert_eq!(
                last,
                day.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp()
            );
            let max = trend
                .iter()
                .map(|p| p["value"].as_f64().unwrap())
                .fold(0.0, f64::max);
            assert_eq!(max, 1.0);
        }
    }
}
