//! What this process knows about its provider's health: why it stopped polling (rejected
//! credentials, the day's budget spent, a provider pause) and when it last stored an answer.
//! The poll path reports into it, the scheduler asks it whether to claim, `/readyz` reads it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};

#[derive(Debug, Default)]
pub struct ProviderHealth {
    auth_rejected: AtomicBool,
    auth_error: Mutex<Option<String>>,
    budget_exhausted_on: Mutex<Option<NaiveDate>>,
    /// Until when the provider asked us (all instances) to stay away, as last seen here.
    paused_until: Mutex<Option<Instant>>,
    last_success: Mutex<Option<DateTime<Utc>>>,
}

impl ProviderHealth {
    /// Records that the provider rejected our credentials; polling stops until restart. Returns
    /// true the first time, so the caller logs and records it once.
    pub fn reject_credentials(&self, error: &str) -> bool {
        *lock(&self.auth_error) = Some(error.to_owned());
        !self.auth_rejected.swap(true, Ordering::SeqCst)
    }

    /// Why the provider rejected our credentials, if it did.
    pub fn credentials_rejected(&self) -> Option<String> {
        if !self.auth_rejected.load(Ordering::SeqCst) {
            return None;
        }
        Some(lock(&self.auth_error).clone().unwrap_or_default())
    }

    pub fn is_credentials_rejected(&self) -> bool {
        self.auth_rejected.load(Ordering::SeqCst)
    }

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

    /// When the provider's pause (as this process knows it) ends, on the clock that says `now`.
    pub fn pause_ends_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let until = (*lock(&self.paused_until))?;
        let left = until.checked_duration_since(Instant::now())?;
        chrono::Duration::from_std(left).ok().map(|d| now + d)
    }

    pub fn note_success(&self, at: DateTime<Utc>) {
        *lock(&self.last_success) = Some(at);
    }

    /// When this process last stored an answer.
    pub fn last_success(&self) -> Option<DateTime<Utc>> {
        *lock(&self.last_success)
    }

    /// True while this process must not claim work for the provider: rejected credentials, a
    /// pause in force, or `today`'s budget spent.
    pub fn is_blocked(&self, today: NaiveDate) -> bool {
        if self.is_credentials_rejected() {
            return true;
        }
        if matches!(*lock(&self.paused_until), Some(t) if t > Instant::now()) {
            return true;
        }
        *lock(&self.budget_exhausted_on) == Some(today)
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
    fn rejected_credentials_block_and_say_why_once() {
        let h = ProviderHealth::default();
        let today = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        assert!(!h.is_blocked(today));
        assert!(h.reject_credentials("http 401"));
        assert!(!h.reject_credentials("http 401"));
        assert!(h.is_blocked(today));
        assert_eq!(h.credentials_rejected().as_deref(), Some("http 401"));
    }

    #[test]
    fn a_spent_budget_blocks_only_its_own_day() {
        let h = ProviderHealth::default();
        let today = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        assert!(h.note_budget_exhausted(today));
        assert!(!h.note_budget_exhausted(today));
        assert!(h.is_blocked(today));
        assert!(!h.is_blocked(today.succ_opt().unwrap()));
    }

    #[test]
    fn a_pause_blocks_until_it_ends_and_a_shorter_one_does_not_shorten_it() {
        let h = ProviderHealth::default();
        let today = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        assert!(h.note_pause(Duration::from_mins(1)));
        assert!(!h.note_pause(Duration::from_millis(1)));
        assert!(h.is_blocked(today));
        let now = Utc::now();
        let ends = h.pause_ends_at(now).unwrap();
        assert!(ends > now + chrono::Duration::seconds(50));
    }
}
