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
/// 2016-01-01T00:00:00Z: TikTok (and so any trend day) does not predate it.
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
pub fn value_in_range(v: f64) -> bool {
    (-VALUE_TOLERANCE..=1.0 + VALUE_TOLERANCE).contains(&v)
}

/// Whether a window ending on `newest` is stale when observed at `observed_at`.
pub fn is_stale(newest: DateTime<Utc>, observed_at: DateTime<Utc>) -> bool {
    observed_at - newest > chrono::Duration::days(STALE_AFTER_DAYS)
}
