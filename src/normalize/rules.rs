//! What a response must mean, not only its shape. Each rule either refuses the whole response
//! (it is archived as `invalid_payload` with its body, and no derived row is written) or drops
//! the bad element and records a [`Warning`] (stored in `fetches.warnings`). Every rule has a
//! stable name: the `rule` label of `soundtrend_validation_total` and the README's table.
//!
//! | rule | verdict |
//! |---|---|
//! | `wrong_clip` | refuse: the answer is for another clip than the one asked for |
//! | `trend_value_out_of_range` | refuse: a trend value outside 0..1 (±0.005 for rounding) |
//! | `trend_day_not_midnight` | refuse: a trend time that is not 00:00 UTC |
//! | `trend_day_conflict` | refuse: one day listed twice with different values |
//! | `trend_day_out_of_range` | drop the point: dated before 2016 or after the observation (+1 day) |
//! | `trend_outside_window` | drop the point: further back from the newest day than the period |
//! | `stale_window` | keep, warn: the window's newest day is over 3 days before the observation |
//! | `negative_count` | drop the value (NULL): a negative duration, like count, list count or popularity |
//! | `negative_score` | drop the entry: an audience entry with a negative score |
//! | `list_too_long` | drop the rest: an audience list longer than 100 entries |

use std::fmt;

use chrono::{DateTime, Utc};

use super::{Normalized, Observation};

/// A recorded, non-fatal finding: what was dropped and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub rule: &'static str,
    pub detail: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

/// The provider rounds to 2 decimals: a value may sit this far outside 0..1 and still be honest.
pub const VALUE_TOLERANCE: f64 = 0.005;
/// 2016-01-01T00:00:00Z: `TikTok` (and so any trend day) does not predate it.
pub const EARLIEST_TREND_SECS: i64 = 1_451_606_400;
/// How far past the observation a day may lie (the provider's "today").
pub const FUTURE_SLACK_SECS: i64 = 86_400;
/// A window whose newest day is older than this (before the observation) is stale.
pub const STALE_AFTER_DAYS: i64 = 3;
/// Audience lists are top-10s in practice; anything past this is noise that only costs rows.
pub const MAX_AUDIENCE_ENTRIES: usize = 100;

/// Collects warnings as normalization goes.
#[derive(Debug, Default)]
pub struct Findings(pub Vec<Warning>);

impl Findings {
    pub fn warn(&mut self, rule: &'static str, detail: impl Into<String>) {
        self.0.push(Warning {
            rule,
            detail: detail.into(),
        });
    }

    /// `v` unless it is negative, in which case None and a `negative_count` warning.
    pub fn non_negative<T: PartialOrd + Default + fmt::Display + Copy>(
        &mut self,
        field: &str,
        v: Option<T>,
    ) -> Option<T> {
        match v {
            Some(x) if x < T::default() => {
                self.warn("negative_count", format!("`{field}` = {x} dropped"));
                None
            }
            other => other,
        }
    }
}

/// A finite trend value within 0..1 (with the rounding tolerance).
#[must_use]
pub fn value_in_range(v: f64) -> bool {
    (-VALUE_TOLERANCE..=1.0 + VALUE_TOLERANCE).contains(&v)
}

/// Whether a window ending on `newest` is stale when observed at `observed_at`.
#[must_use]
pub fn is_stale(newest: DateTime<Utc>, observed_at: DateTime<Utc>) -> bool {
    observed_at - newest > chrono::Duration::days(STALE_AFTER_DAYS)
}

/// Checks that rows satisfy every rule above: what the fuzz target and the property tests assert
/// of any accepted payload. `Err` names the first broken rule.
pub fn check(rows: &Normalized, obs: &Observation) -> Result<(), String> {
    let latest = obs.observed_at.timestamp() + FUTURE_SLACK_SECS;
    let period = i64::from(obs.period.days());
    let newest = rows.trend.last().map(|r| r.ts.timestamp());
    for (i, r) in rows.trend.iter().enumerate() {
        let secs = r.ts.timestamp();
        if !value_in_range(r.value) {
            return Err(format!("trend_value_out_of_range: {}", r.value));
        }
        if secs.rem_euclid(86_400) != 0 {
            return Err(format!("trend_day_not_midnight: {secs}"));
        }
        if !(EARLIEST_TREND_SECS..=latest).contains(&secs) {
            return Err(format!("trend_day_out_of_range: {secs}"));
        }
        if newest.is_some_and(|n| n - secs >= period * 86_400) {
            return Err(format!("trend_outside_window: {secs}"));
        }
        if i > 0 && rows.trend[i - 1].ts >= r.ts {
            return Err("trend days not strictly increasing".into());
        }
    }
    let counts = [
        rows.sound.duration.map(i64::from),
        rows.snapshot.on_list_times.map(i64::from),
        rows.snapshot.popular_days.map(i64::from),
        rows.snapshot.like_count,
    ];
    if counts.iter().flatten().any(|c| *c < 0)
        || rows.snapshot.current_popularity.is_some_and(|p| p < 0.0)
    {
        return Err("negative_count".into());
    }
    for list in [&rows.countries, &rows.interests] {
        if list.len() > MAX_AUDIENCE_ENTRIES {
            return Err("list_too_long".into());
        }
        if list
            .iter()
            .any(|a| a.score.is_some_and(|s| s < 0.0 || !s.is_finite()))
        {
            return Err("negative_score".into());
        }
    }
    let texts = [
        &rows.sound.title,
        &rows.sound.author,
        &rows.sound.song_id,
        &rows.sound.url_title,
        &rows.sound.cover,
        &rows.sound.link,
        &rows.sound.music_url,
        &rows.snapshot.country_code,
    ];
    if texts
        .iter()
        .any(|t| t.as_deref().is_some_and(|t| t.contains('\0')))
    {
        return Err("NUL in a text column".into());
    }
    Ok(())
}
