//! Serde types that mirror the "trending music detail" response, shared by both providers.
//!
//! Lenient where real payloads are: any field may be `null` or missing, numbers may arrive as
//! numeric strings, ids as numbers, unknown fields are ignored (the raw body in `fetches` keeps
//! them). A value of the wrong kind (an object where a number belongs, text that is no number) is
//! an error, which the client reports as an invalid payload.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The outer envelope. `data` stays raw so a business error (`code != 0`) is recognised even when
/// `data` is absent or malformed.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub code: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub message: Option<String>,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(
        default,
        rename = "requestId",
        deserialize_with = "lenient::opt_string"
    )]
    pub request_id: Option<String>,
}

/// `data` of a successful response.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct MusicDetail {
    #[serde(default)]
    pub sound: Option<Sound>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub like_count: Option<i64>,
    #[serde(default)]
    pub liked: Option<Value>,
    #[serde(default)]
    pub disliked: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Sound {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub clip_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub song_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub author: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub url_title: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub duration: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub cover: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub link: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub music_url: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub if_cml: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub is_search: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub promoted: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub country_code: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub rank: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub rank_diff: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub on_list_times: Option<i64>,
    #[serde(default)]
    pub longevity: Option<Longevity>,
    #[serde(default)]
    pub trend: Option<Vec<Option<TrendPoint>>>,
    #[serde(default)]
    pub audience_countries: Option<Vec<Option<AudienceCountry>>>,
    #[serde(default)]
    pub audience_interests: Option<Vec<Option<AudienceInterest>>>,
    #[serde(default)]
    pub audience_ages: Option<Value>,
    #[serde(default)]
    pub related_items: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Longevity {
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub popular_days: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub current_popularity: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TrendPoint {
    /// Unix seconds (UTC midnight of the day).
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub time: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub value: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AudienceCountry {
    #[serde(default)]
    pub country_info: Option<LabelledId>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub score: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AudienceInterest {
    #[serde(default)]
    pub interest_info: Option<LabelledId>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub score: Option<f64>,
}

/// `{ "id": "458258", "label": "LV", "value": "Latvia" }`
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LabelledId {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub label: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub value: Option<String>,
}

/// Deserializers that accept what real payloads send for a scalar and refuse the rest.
mod lenient {
    use super::{Deserialize, Deserializer, Value};
    use serde::de::Error;

    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(D::Error::custom(format!(
                "expected a string, found {}",
                kind(&other)
            ))),
        }
    }

    pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => number_to_i64(&n)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("expected an integer, found {n}"))),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse::<serde_json::Number>()
                .ok()
                .and_then(|n| number_to_i64(&n))
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("expected an integer, found {s:?}"))),
            Some(other) => Err(D::Error::custom(format!(
                "expected an integer, found {}",
                kind(&other)
            ))),
        }
    }

    pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => match s.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(D::Error::custom(format!("expected a number, found {s:?}"))),
            },
            Some(other) => Err(D::Error::custom(format!(
                "expected a number, found {}",
                kind(&other)
            ))),
        }
    }

    pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(Some(false)),
            Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(Some(true)),
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                "" => Ok(None),
                _ => Err(D::Error::custom(format!("expected a boolean, found {s:?}"))),
            },
            Some(other) => Err(D::Error::custom(format!(
                "expected a boolean, found {}",
                kind(&other)
            ))),
        }
    }

    /// Integers, and floats that hold an integer exactly (`60.0`).
    fn number_to_i64(n: &serde_json::Number) -> Option<i64> {
        n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        })
    }

    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_may_arrive_as_strings_and_ids_as_numbers() {
        let s: Sound = serde_json::from_value(serde_json::json!({
            "rank": "12", "duration": 60.0, "song_id": 6703723270476138498u64, "promoted": 0
        }))
        .unwrap();
        assert_eq!(s.rank, Some(12));
        assert_eq!(s.duration, Some(60));
        assert_eq!(s.song_id.as_deref(), Some("6703723270476138498"));
        assert_eq!(s.promoted, Some(false));
    }

    #[test]
    fn values_of_the_wrong_kind_are_refused() {
        let err = serde_json::from_value::<Sound>(serde_json::json!({"rank": {"a": 1}}));
        assert!(err.unwrap_err().to_string().contains("expected an integer"));
        let err = serde_json::from_value::<Sound>(serde_json::json!({"trend": "soon"}));
        assert!(err.is_err());
        let err = serde_json::from_value::<Sound>(serde_json::json!({"rank": "first"}));
        assert!(err.is_err());
    }

    #[test]
    fn nulls_and_missing_fields_are_accepted() {
        let s: Sound = serde_json::from_value(serde_json::json!({
            "trend": [null, {"time": 1769472000, "value": null}],
            "audience_countries": null
        }))
        .unwrap();
        assert_eq!(s.title, None);
        assert_eq!(s.trend.unwrap().len(), 2);
        assert_eq!(s.audience_countries, None);
    }
}
