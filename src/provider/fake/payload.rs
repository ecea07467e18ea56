//! What the fake provider answers with: the providers' documented sample, and responses shaped
//! like it for any clip, with a deterministic trend window ([`response`]).

use chrono::NaiveDate;
use serde_json::{json, Value};

use crate::provider::ProviderKind;

/// The documented sample response (`KeyAPI`'s; `EchoTik`'s differs only in `message`).
pub const SAMPLE_RESPONSE: &str = include_str!("../../../tests/fixtures/keyapi_sample.json");
/// The clip of the documented sample.
pub const SAMPLE_CLIP_ID: &str = "6703723351497508865";

/// A response in `kind`'s dialect for any clip: the sample's shape and audience lists, a
/// deterministic trend for the window ending `last_day`, and the sample's metadata for the sample
/// clip (a generated title for others).
#[must_use]
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
    let first = last_day - chrono::Duration::days(period - 1);
    let raw: Vec<f64> = (0..period)
        .map(|i| {
            let day = first + chrono::Duration::days(i);
            let x = fnv1a(&format!("{seed}:{day}"));
            0.05 + (x % 1000) as f64 / 1000.0
        })
        .collect();
    let max = raw.iter().copied().fold(f64::MIN, f64::max);
    raw.iter()
        .enumerate()
        .map(|(i, v)| {
            let day = first + chrono::Duration::days(i as i64);
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
