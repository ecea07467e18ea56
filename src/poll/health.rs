//! What this process remembers about one provider beside the state every instance shares
//! (`store::health`): whether it already said that the budget is spent or that a pause began
//! (so each is logged once), and when it last stored an answer (`/readyz`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};

#[derive(Debug, Default)]
pub struct ProviderHealth {
    budget_exhausted_on: Mutex<Option<NaiveDate>>,
    /// Until when the provider asked us (all instances) to stay away, as last seen here.
    paused_until: Mutex<Option<Instant>>,
    last_success: Mutex<Option<DateTime<Utc>>>,
}

impl ProviderHealth {
    /// Records that `day`'s budget is spent. Returns true the first time for that day.
    pub fn note_budget_exhausted(&self, day: NaiveDate) -> bool {
        let mut on = lock(&self.budget_exhausted_on);
        let first = *on != Some(day);
        *on = Some(day);
        first
    }

    /// Remembers a provider pause of `wait` from now (keeping a longer one in force). Returns
    /// true when no pause was in force, i.e. when a pause starts.
    pub fn note_pause(&self, wait: Duration) -> bool {
        let now = Instant::now();
        let until = now + wait;
        let mut paused = lock(&self.paused_until);
        let already = paused.is_some_and(|t| t > now);
        if paused.is_none_or(|t| t < until) {
            *paused = Some(until);
        }
        !already
    }

    pub fn note_success(&self, at: DateTime<Utc>) {
        *lock(&self.last_success) = Some(at);
    }

    /// When this process last stored an answer.
    pub fn last_success(&self) -> Option<DateTime<Utc>> {
        *lock(&self.last_success)
    }
}

/// The state stays meaningful after a panic elsewhere (every update is a single assignment).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_budget_is_said_once_per_day() {
        let h = ProviderHealth::default();
        let today = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        assert!(h.note_budget_exhausted(today));
        assert!(!h.note_budget_exhausted(today));
        assert!(h.note_budget_exhausted(today.succ_opt().unwrap()));
    }

    #[test]
    fn a_pause_is_said_once_and_a_shorter_one_does_not_shorten_it() {
        let h = ProviderHealth::default();
        assert!(h.note_pause(Duration::from_mins(1)));
        assert!(!h.note_pause(Duration::from_millis(1)));
        let until = h.paused_until.lock().unwrap().unwrap();
        assert!(until > Instant::now() + Duration::from_secs(50));
    }
}
