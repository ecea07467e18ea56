//! The pure step from a provider response to the rows soundtrend stores. No I/O, no clock: the
//! caller says which clip, region, window and time the response belongs to.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use crate::domain::{ClipId, Period, Region};
use crate::provider::wire::{LabelledId, MusicDetail};

/// What was asked, and when: the context every derived row carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub clip_id: ClipId,
    pub region: Region,
    pub period: Period,
    pub observed_at: DateTime<Utc>,
}

/// Every row one successful response becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub sound: SoundRow,
    pub snapshot: SnapshotRow,
    pub trend: Vec<TrendRow>,
    pub countries: Vec<AudienceRow>,
    pub interests: Vec<AudienceRow>,
    /// What was dropped from the response and why (points outside the window, overlong lists);
    /// the rest of the response is stored.
    pub warnings: Vec<String>,
}

impl Normalized {
    /// Data rows this response writes (sound, snapshot, trend points, audiences).
    pub fn row_count(&self) -> usize {
        2 + self.trend.len() + self.countries.len() + self.interests.len()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SoundRow {
    pub song_id: Option<String>,
    pub title: Option<String>,
    pub author: Option<String>,
    pub url_title: Option<String>,
    pub duration: Option<i32>,
    pub cover: Option<String>,
    pub link: Option<String>,
    pub music_url: Option<String>,
    pub if_cml: Option<bool>,
    pub is_search: Option<bool>,
    pub promoted: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    pub country_code: Option<String>,
    pub rank: Option<i32>,
    pub rank_diff: Option<i32>,
    pub on_list_times: Option<i32>,
    pub popular_days: Option<i32>,
    pub current_popularity: Option<f64>,
    pub like_count: Option<i64>,
    pub liked: Option<Value>,
    pub disliked: Option<Value>,
    pub audience_ages: Option<Value>,
    pub related_items: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrendRow {
    pub ts: DateTime<Utc>,
    pub value: f64,
}

/// One entry of an audience list; `code` is the provider's `label`, `name` its `value`.
#[derive(Debug, Clone, PartialEq)]
pub struct AudienceRow {
    pub position: i16,
    pub provider_id: Option<String>,
    pub code: Option<String>,
    pub name: Option<String>,
    pub score: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NormalizeError {
    #[error("response has no `data.sound`")]
    NoSound,
    #[error("response is for clip {got}, not the requested {want}")]
    WrongClip { got: String, want: String },
    #[error("`{field}` = {value} does not fit in the column")]
    OutOfRange { field: &'static str, value: i64 },
}

/// Trend times after this are taken as milliseconds, not seconds (year 5138 in seconds).
const MILLIS_THRESHOLD: u64 = 100_000_000_000;
/// 2016-01-01T00:00:00Z: TikTok (and so any trend day) does not predate it.
const EARLIEST_TREND_SECS: i64 = 1_451_606_400;
/// How far past the observation a day may lie (providers stamp days in their own time zone).
const FUTURE_SLACK_SECS: i64 = 86_400;
/// Audience lists are top-10s in practice; anything past this is noise that only costs rows.
pub const MAX_AUDIENCE_ENTRIES: usize = 100;

pub fn normalize(detail: &MusicDetail, obs: &Observation) -> Result<Normalized, NormalizeError> {
    let sound = detail.sound.as_ref().ok_or(NormalizeError::NoSound)?;
    if let Some(got) = sound.clip_id.as_deref().map(str::trim) {
        if !got.is_empty() && got != obs.clip_id.as_str() {
            return Err(NormalizeError::WrongClip {
                got: got.to_owned(),
                want: obs.clip_id.to_string(),
            });
        }
    }
    let longevity = sound.longevity.as_ref();
    let mut warnings = Vec::new();
    let trend = trend_rows(
        sound.trend.as_deref().unwrap_or_default(),
        obs,
        &mut warnings,
    );
    let countries = audience_rows(
        "audience_countries",
        sound
            .audience_countries
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|e| e.as_ref().map(|e| (e.country_info.as_ref(), e.score))),
        &mut warnings,
    );
    let interests = audience_rows(
        "audience_interests",
        sound
            .audience_interests
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|e| e.as_ref().map(|e| (e.interest_info.as_ref(), e.score))),
        &mut warnings,
    );

    Ok(Normalized {
        sound: SoundRow {
            song_id: text(&sound.song_id),
            title: text(&sound.title),
            author: text(&sound.author),
            url_title: text(&sound.url_title),
            duration: fit_i32("duration", sound.duration)?,
            cover: text(&sound.cover),
            link: text(&sound.link),
            music_url: text(&sound.music_url),
            if_cml: sound.if_cml,
            is_search: sound.is_search,
            promoted: sound.promoted,
        },
        snapshot: SnapshotRow {
            country_code: text(&sound.country_code),
            rank: fit_i32("rank", sound.rank)?,
            rank_diff: fit_i32("rank_diff", sound.rank_diff)?,
            on_list_times: fit_i32("on_list_times", sound.on_list_times)?,
            popular_days: fit_i32(
                "longevity.popular_days",
                longevity.and_then(|l| l.popular_days),
            )?,
            current_popularity: longevity.and_then(|l| l.current_popularity),
            like_count: detail.like_count,
            liked: non_null(&detail.liked),
            disliked: non_null(&detail.disliked),
            audience_ages: non_null(&sound.audience_ages),
            related_items: non_null(&sound.related_items),
        },
        trend,
        countries,
        interests,
        warnings,
    })
}

/// Daily points sorted by time, one per day, kept to the requested window: points without a time
/// or value are skipped, a day listed twice keeps its last value (the primary key allows one row
/// per day), and days before 2016, in the future, or further back from the newest day than the
/// requested period are dropped with a warning. An old window (its newest day long ago) is kept:
/// providers lag, and replays of old archives must keep working.
fn trend_rows(
    points: &[Option<crate::provider::wire::TrendPoint>],
    obs: &Observation,
    warnings: &mut Vec<String>,
) -> Vec<TrendRow> {
    let latest_allowed = obs
        .observed_at
        .timestamp()
        .saturating_add(FUTURE_SLACK_SECS);
    let mut out_of_range = 0usize;
    let mut rows: Vec<TrendRow> = points
        .iter()
        .flatten()
        .filter_map(|p| {
            let value = p.value.filter(|v| v.is_finite())?;
            let raw = p.time?;
            let secs = if raw.unsigned_abs() >= MILLIS_THRESHOLD {
                raw / 1000
            } else {
                raw
            };
            if !(EARLIEST_TREND_SECS..=latest_allowed).contains(&secs) {
                out_of_range += 1;
                return None;
            }
            let ts = Utc.timestamp_opt(secs, 0).single()?;
            Some(TrendRow { ts, value })
        })
        .collect();
    if out_of_range > 0 {
        warnings.push(format!(
            "dropped {out_of_range} trend points dated before 2016 or in the future"
        ));
    }
    // Stable sort keeps the provider's order among equal days, so `dedup` can keep the last.
    rows.sort_by_key(|r| r.ts);
    rows.reverse();
    rows.dedup_by_key(|r| r.ts);
    rows.reverse();
    if let Some(newest) = rows.last().map(|r| r.ts) {
        let first_kept = newest - chrono::Duration::days(i64::from(obs.period.days()));
        let before = rows.len();
        rows.retain(|r| r.ts > first_kept);
        let outside = before - rows.len();
        if outside > 0 {
            warnings.push(format!(
                "dropped {outside} trend points older than the requested {}-day window",
                obs.period.days()
            ));
        }
    }
    rows
}

fn audience_rows<'a>(
    list: &'static str,
    entries: impl ExactSizeIterator<Item = Option<(Option<&'a LabelledId>, Option<f64>)>>,
    warnings: &mut Vec<String>,
) -> Vec<AudienceRow> {
    if entries.len() > MAX_AUDIENCE_ENTRIES {
        warnings.push(format!(
            "kept the first {MAX_AUDIENCE_ENTRIES} of {} `{list}` entries",
            entries.len()
        ));
    }
    entries
        .take(MAX_AUDIENCE_ENTRIES)
        .enumerate()
        .filter_map(|(i, entry)| {
            let (info, score) = entry?;
            let info = info?;
            Some(AudienceRow {
                position: i16::try_from(i + 1).ok()?,
                provider_id: text(&info.id),
                code: text(&info.label),
                name: text(&info.value),
                score: score.filter(|s| s.is_finite()),
            })
        })
        .collect()
}

/// Postgres text cannot hold NUL, so a provider string carrying one would make the whole write
/// fail; it becomes U+FFFD instead.
fn text(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|s| {
        if s.contains('\0') {
            s.replace('\0', "\u{FFFD}")
        } else {
            s.clone()
        }
    })
}

/// [`text`] for every string and key of a JSON value kept as `jsonb`.
fn clean_json(v: &Value) -> Value {
    match v {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\u{FFFD}")),
        Value::Array(items) => Value::Array(items.iter().map(clean_json).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), clean_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn fit_i32(field: &'static str, v: Option<i64>) -> Result<Option<i32>, NormalizeError> {
    v.map(|v| i32::try_from(v).map_err(|_| NormalizeError::OutOfRange { field, value: v }))
        .transpose()
}

fn non_null(v: &Option<Value>) -> Option<Value> {
    v.as_ref().filter(|v| !v.is_null()).map(clean_json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::wire::Envelope;

    pub(crate) const SAMPLE: &str = include_str!("../tests/fixtures/keyapi_sample.json");

    fn sample_detail() -> MusicDetail {
        let env: Envelope = serde_json::from_str(SAMPLE).unwrap();
        serde_json::from_value(env.data.unwrap()).unwrap()
    }

    fn obs() -> Observation {
        Observation {
            clip_id: ClipId::parse("6703723351497508865").unwrap(),
            region: Region::parse("US").unwrap(),
            period: Period::Days7,
            observed_at: Utc.with_ymd_and_hms(2026, 2, 2, 12, 0, 0).unwrap(),
        }
    }

    #[test]
    fn the_sample_response_becomes_the_expected_rows() {
        let rows = normalize(&sample_detail(), &obs()).unwrap();

        assert_eq!(rows.sound.title.as_deref(), Some("New Sun"));
        assert_eq!(rows.sound.author.as_deref(), Some("Chihei Hatakeyama"));
        assert_eq!(rows.sound.song_id.as_deref(), Some("6703723270476138498"));
        assert_eq!(rows.sound.duration, Some(60));
        assert_eq!(rows.sound.music_url, None);
        assert_eq!(rows.sound.promoted, Some(false));
        assert_eq!(rows.snapshot.rank, None);
        assert_eq!(rows.snapshot.popular_days, Some(0));
        assert_eq!(rows.snapshot.country_code.as_deref(), Some("US"));

        assert_eq!(rows.trend.len(), 7);
        assert_eq!(rows.trend[0].ts, Utc.timestamp_opt(1769472000, 0).unwrap());
        assert_eq!(rows.trend[0].value, 0.06);
        assert_eq!(rows.trend[6].value, 1.0);

        assert_eq!(rows.countries.len(), 10);
        assert_eq!(rows.countries[0].code.as_deref(), Some("LV"));
        assert_eq!(rows.countries[0].name.as_deref(), Some("Latvia"));
        assert_eq!(rows.countries[0].provider_id.as_deref(), Some("458258"));
        assert_eq!(rows.countries[0].score, Some(1426.0));
        assert_eq!(rows.countries[9].position, 10);
        assert_eq!(rows.countries[9].code.as_deref(), Some("MO"));

        assert_eq!(rows.interests.len(), 5);
        assert_eq!(rows.interests[0].provider_id.as_deref(), Some("10004"));
        assert_eq!(rows.interests[0].code.as_deref(), Some("diversify_10004"));
        assert_eq!(rows.interests[0].name.as_deref(), Some("Scripted Drama"));
        assert_eq!(rows.row_count(), 2 + 7 + 10 + 5);
    }

    #[test]
    fn a_response_for_another_clip_is_refused() {
        let mut o = obs();
        o.clip_id = ClipId::parse("1").unwrap();
        assert!(matches!(
            normalize(&sample_detail(), &o),
            Err(NormalizeError::WrongClip { .. })
        ));
    }

    #[test]
    fn repeated_days_keep_the_last_value_and_points_without_data_are_skipped() {
        let detail: MusicDetail = serde_json::from_value(serde_json::json!({"sound": {"trend": [
            {"time": 1769558400, "value": 0.2},
            {"time": 1769472000, "value": 0.5},
            {"time": 1769558400, "value": 0.9},
            {"time": null, "value": 0.1},
            {"time": 1769644800, "value": null},
            null
        ]}}))
        .unwrap();
        let rows = normalize(&detail, &obs()).unwrap();
        let got: Vec<(i64, f64)> = rows
            .trend
            .iter()
            .map(|r| (r.ts.timestamp(), r.value))
            .collect();
        assert_eq!(got, vec![(1769472000, 0.5), (1769558400, 0.9)]);
    }

    #[test]
    fn millisecond_timestamps_are_read_as_days_too() {
        let detail: MusicDetail = serde_json::from_value(serde_json::json!({"sound": {"trend": [
            {"time": 1769472000000i64, "value": 1}
        ]}}))
        .unwrap();
        let rows = normalize(&detail, &obs()).unwrap();
        assert_eq!(rows.trend[0].ts.timestamp(), 1769472000);
    }

    #[test]
    fn audience_positions_follow_the_providers_list() {
        let detail: MusicDetail = serde_json::from_value(serde_json::json!({"sound": {
            "audience_countries": [null, {"country_info": {"label": "FR", "value": "France"}, "score": 3}],
            "audience_interests": [{"interest_info": null, "score": 1}]
        }}))
        .unwrap();
        let rows = normalize(&detail, &obs()).unwrap();
        assert_eq!(rows.countries.len(), 1);
        assert_eq!(rows.countries[0].position, 2);
        assert!(rows.interests.is_empty());
    }
}
