//! The pure step from a provider response to the rows soundtrend stores. No I/O, no clock: the
//! caller says which clip, region, window and time the response belongs to.

use chrono::{TimeZone, Utc};
use serde_json::Value;

use crate::provider::wire::{LabelledId, MusicDetail, TrendPoint};

pub mod history;
pub mod lists;
mod rows;
pub mod rules;
pub mod stitch;

pub use rows::{
    AudienceRow, NormalizeError, Normalized, Observation, SnapshotRow, SoundRow, TrendRow,
};

use rules::{Findings, EARLIEST_TREND_SECS, FUTURE_SLACK_SECS, MAX_AUDIENCE_ENTRIES};

/// Trend times after this are taken as milliseconds, not seconds (year 5138 in seconds).
const MILLIS_THRESHOLD: u64 = 100_000_000_000;

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
    let mut warnings = Findings::default();
    let trend = trend_rows(
        sound.trend.as_deref().unwrap_or_default(),
        obs,
        &mut warnings,
    )?;
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
            duration: warnings.non_negative("duration", fit_i32("duration", sound.duration)?),
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
            on_list_times: warnings.non_negative(
                "on_list_times",
                fit_i32("on_list_times", sound.on_list_times)?,
            ),
            popular_days: warnings.non_negative(
                "longevity.popular_days",
                fit_i32(
                    "longevity.popular_days",
                    longevity.and_then(|l| l.popular_days),
                )?,
            ),
            current_popularity: warnings.non_negative(
                "longevity.current_popularity",
                longevity
                    .and_then(|l| l.current_popularity)
                    .filter(|v| v.is_finite()),
            ),
            like_count: warnings.non_negative("like_count", detail.like_count),
            liked: non_null(&detail.liked),
            disliked: non_null(&detail.disliked),
            audience_ages: non_null(&sound.audience_ages),
            related_items: non_null(&sound.related_items),
        },
        trend,
        countries,
        interests,
        warnings: warnings.0,
    })
}

/// Daily points sorted by time, one per day, kept to the requested window (see [`rules`]):
/// points without a time or value are skipped; a value outside 0..1, a time that is not a UTC
/// midnight, or a day listed twice with different values refuse the response; days before 2016,
/// in the future, or further back from the newest day than the requested period are dropped with
/// a warning. An old window (its newest day long ago) is kept with a warning: providers lag, and
/// replays of old archives must keep working.
fn trend_rows(
    points: &[Option<TrendPoint>],
    obs: &Observation,
    findings: &mut Findings,
) -> Result<Vec<TrendRow>, NormalizeError> {
    let latest_allowed = obs
        .observed_at
        .timestamp()
        .saturating_add(FUTURE_SLACK_SECS);
    let mut out_of_range = 0usize;
    let mut rows = Vec::new();
    for p in points.iter().flatten() {
        let (Some(value), Some(raw)) = (p.value.filter(|v| v.is_finite()), p.time) else {
            continue;
        };
        let secs = if raw.unsigned_abs() >= MILLIS_THRESHOLD {
            raw / 1000
        } else {
            raw
        };
        if !(EARLIEST_TREND_SECS..=latest_allowed).contains(&secs) {
            out_of_range += 1;
            continue;
        }
        let Some(ts) = Utc.timestamp_opt(secs, 0).single() else {
            out_of_range += 1;
            continue;
        };
        if secs.rem_euclid(86_400) != 0 {
            return Err(NormalizeError::TrendDayNotMidnight { secs });
        }
        if !rules::value_in_range(value) {
            return Err(NormalizeError::TrendValueOutOfRange { day: ts, value });
        }
        rows.push(TrendRow { ts, value });
    }
    if out_of_range > 0 {
        findings.warn(
            "trend_day_out_of_range",
            format!(
                "dropped {out_of_range} trend points dated before 2016 or after the observation"
            ),
        );
    }
    rows.sort_by_key(|r| r.ts);
    if let Some(pair) = rows
        .windows(2)
        .find(|w| w[0].ts == w[1].ts && w[0].value != w[1].value)
    {
        return Err(NormalizeError::TrendDayConflict { day: pair[0].ts });
    }
    rows.dedup_by_key(|r| r.ts);
    if let Some(newest) = rows.last().map(|r| r.ts) {
        let first_kept = newest - chrono::Duration::days(i64::from(obs.period.days()));
        let before = rows.len();
        rows.retain(|r| r.ts > first_kept);
        let outside = before - rows.len();
        if outside > 0 {
            findings.warn(
                "trend_outside_window",
                format!(
                    "dropped {outside} trend points older than the requested {}-day window",
                    obs.period.days()
                ),
            );
        }
        if rules::is_stale(newest, obs.observed_at) {
            findings.warn(
                "stale_window",
                format!("the window ends on {}", newest.format("%Y-%m-%d")),
            );
        }
    }
    Ok(rows)
}

fn audience_rows<'a>(
    list: &'static str,
    entries: impl ExactSizeIterator<Item = Option<(Option<&'a LabelledId>, Option<f64>)>>,
    findings: &mut Findings,
) -> Vec<AudienceRow> {
    if entries.len() > MAX_AUDIENCE_ENTRIES {
        findings.warn(
            "list_too_long",
            format!(
                "kept the first {MAX_AUDIENCE_ENTRIES} of {} `{list}` entries",
                entries.len()
            ),
        );
    }
    entries
        .take(MAX_AUDIENCE_ENTRIES)
        .enumerate()
        .filter_map(|(i, entry)| {
            let (info, score) = entry?;
            let info = info?;
            if let Some(score) = score.filter(|s| *s < 0.0) {
                findings.warn(
                    "negative_score",
                    format!("`{list}` entry {} with score {score} dropped", i + 1),
                );
                return None;
            }
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
#[allow(clippy::ref_option)] // called with the wire struct's fields as they are
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

#[allow(clippy::ref_option)] // called with the wire struct's fields as they are
fn non_null(v: &Option<Value>) -> Option<Value> {
    v.as_ref().filter(|v| !v.is_null()).map(clean_json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClipId, Period, Region};
    use crate::provider::wire::Envelope;

    pub(crate) const SAMPLE: &str = include_str!("../../tests/fixtures/keyapi_sample.json");

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
    fn repeated_days_with_one_value_collapse_and_points_without_data_are_skipped() {
        let detail = trend_detail(&serde_json::json!([
            {"time": 1769558400, "value": 0.9},
            {"time": 1769472000, "value": 0.5},
            {"time": 1769558400, "value": 0.9},
            {"time": null, "value": 0.1},
            {"time": 1769644800, "value": null},
            null
        ]));
        let rows = normalize(&detail, &obs()).unwrap();
        let got: Vec<(i64, f64)> = rows
            .trend
            .iter()
            .map(|r| (r.ts.timestamp(), r.value))
            .collect();
        assert_eq!(got, vec![(1769472000, 0.5), (1769558400, 0.9)]);
        let rules: Vec<_> = rows.warnings.iter().map(|w| w.rule).collect();
        assert_eq!(
            rules,
            vec!["stale_window"],
            "only the window's age is noted"
        );
    }

    fn trend_detail(trend: &serde_json::Value) -> MusicDetail {
        serde_json::from_value(serde_json::json!({"sound": {"trend": trend}})).unwrap()
    }

    fn refused_by(trend: &serde_json::Value) -> &'static str {
        normalize(&trend_detail(trend), &obs()).unwrap_err().rule()
    }

    fn warned_by(detail: &MusicDetail) -> Vec<&'static str> {
        normalize(detail, &obs())
            .unwrap()
            .warnings
            .iter()
            .map(|w| w.rule)
            .collect()
    }

    #[test]
    fn a_day_listed_twice_with_different_values_refuses_the_response() {
        let rule = refused_by(&serde_json::json!([
            {"time": 1769558400, "value": 0.2},
            {"time": 1769558400, "value": 0.9}
        ]));
        assert_eq!(rule, "trend_day_conflict");
    }

    #[test]
    fn trend_values_outside_zero_to_one_refuse_the_response_beyond_rounding() {
        for bad in [-0.01, 1.01, 1e300] {
            let rule = refused_by(&serde_json::json!([{"time": 1769558400, "value": bad}]));
            assert_eq!(rule, "trend_value_out_of_range", "{bad}");
        }
        for rounded in [-0.004, 1.004, 0.0, 1.0] {
            let rows = normalize(
                &trend_detail(&serde_json::json!([{"time": 1769558400, "value": rounded}])),
                &obs(),
            );
            assert!(rows.is_ok(), "{rounded}");
        }
    }

    #[test]
    fn a_trend_time_off_utc_midnight_refuses_the_response() {
        let rule = refused_by(&serde_json::json!([{"time": 1769558400 + 3600, "value": 0.5}]));
        assert_eq!(rule, "trend_day_not_midnight");
    }

    #[test]
    fn days_before_2016_in_the_future_or_outside_the_window_are_dropped_with_warnings() {
        let detail = trend_detail(&serde_json::json!([
            {"time": 0, "value": 0.5},
            {"time": 1769990400 + 30 * 86400, "value": 0.5},
            {"time": 1769990400 - 10 * 86400, "value": 0.5},
            {"time": 1769990400, "value": 1}
        ]));
        let rows = normalize(&detail, &obs()).unwrap();
        assert_eq!(rows.trend.len(), 1);
        assert_eq!(
            warned_by(&detail),
            vec!["trend_day_out_of_range", "trend_outside_window"]
        );
    }

    #[test]
    fn an_old_window_is_kept_as_stale() {
        let detail = trend_detail(&serde_json::json!([{"time": 1767225600, "value": 1}]));
        assert_eq!(normalize(&detail, &obs()).unwrap().trend.len(), 1);
        assert_eq!(warned_by(&detail), vec!["stale_window"]);
    }

    #[test]
    fn negative_counts_become_null_and_negative_scores_drop_their_entry() {
        let detail: MusicDetail = serde_json::from_value(serde_json::json!({
            "like_count": -5,
            "sound": {
                "duration": -1, "on_list_times": -2,
                "longevity": {"popular_days": -3, "current_popularity": -0.5},
                "audience_countries": [
                    {"country_info": {"label": "FR"}, "score": -1},
                    {"country_info": {"label": "DE"}, "score": 2}
                ]
            }
        }))
        .unwrap();
        let rows = normalize(&detail, &obs()).unwrap();
        assert_eq!(rows.sound.duration, None);
        assert_eq!(rows.snapshot.like_count, None);
        assert_eq!(rows.snapshot.on_list_times, None);
        assert_eq!(rows.snapshot.popular_days, None);
        assert_eq!(rows.snapshot.current_popularity, None);
        assert_eq!(rows.countries.len(), 1);
        assert_eq!(rows.countries[0].code.as_deref(), Some("DE"));
        let rules = warned_by(&detail);
        assert_eq!(rules.iter().filter(|r| **r == "negative_count").count(), 5);
        assert_eq!(rules.iter().filter(|r| **r == "negative_score").count(), 1);
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
