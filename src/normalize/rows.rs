//! What a response becomes: the rows [`normalize`](super::normalize) returns, the context they
//! carry ([`Observation`]), and the rules that refuse a whole response ([`NormalizeError`]).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::rules::Warning;
use crate::domain::{ClipId, Period, Region};

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
    /// What validation dropped from the response and why (see [`rules`](super::rules)); the rest is stored.
    pub warnings: Vec<Warning>,
}

impl Normalized {
    /// Data rows this response writes (sound, snapshot, trend points, audiences).
    #[must_use]
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
    #[error("trend value {value} on {day} is outside 0..1")]
    TrendValueOutOfRange { day: DateTime<Utc>, value: f64 },
    #[error("trend time {secs} is not 00:00 UTC")]
    TrendDayNotMidnight { secs: i64 },
    #[error("trend day {day} is listed twice with different values")]
    TrendDayConflict { day: DateTime<Utc> },
}

impl NormalizeError {
    /// The rule's name (see [`rules`](super::rules)), the label of `soundtrend_validation_total`.
    #[must_use]
    pub fn rule(&self) -> &'static str {
        match self {
            Self::NoSound => "no_sound",
            Self::WrongClip { .. } => "wrong_clip",
            Self::OutOfRange { .. } => "value_does_not_fit",
            Self::TrendValueOutOfRange { .. } => "trend_value_out_of_range",
            Self::TrendDayNotMidnight { .. } => "trend_day_not_midnight",
            Self::TrendDayConflict { .. } => "trend_day_conflict",
        }
    }
}
