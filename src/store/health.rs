//! Each provider's health, shared by every instance in its `provider_quota` row: the circuit
//! breaker (consecutive transport/5xx failures, `open_until`, the one probe), rejected credentials,
//! and, with the day's `credit_usage`, a spent budget. The poll path reports outcomes here; the
//! scheduler reads a [`Snapshot`] to decide which providers it may claim work for.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use crate::provider::ProviderKind;

/// What every instance agrees a provider is, in the order the checks apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderState {
    /// The provider rejected the credentials: out until a success or other credentials.
    AuthFailed,
    /// The day's credit budget is spent: out until the next UTC day.
    BudgetSpent,
    /// The circuit breaker is open: no request before `open_until`, then one probe.
    Down,
    /// Usable, with recent failures or a provider's pause (429) in force.
    Degraded,
    Healthy,
}

impl ProviderState {
    pub const ALL: [Self; 5] = [
        Self::Healthy,
        Self::Degraded,
        Self::Down,
        Self::AuthFailed,
        Self::BudgetSpent,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthFailed => "auth_failed",
            Self::BudgetSpent => "budget_spent",
            Self::Down => "down",
            Self::Degraded => "degraded",
            Self::Healthy => "healthy",
        }
    }
}

impl fmt::Display for ProviderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Whether a process may send to a provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Usable,
    /// Out until this time (an open breaker, a long pause).
    OutUntil(DateTime<Utc>),
    /// Out until an event with no time of its own (a new key, the next UTC day).
    Out,
}

/// A provider's state as one process last read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub provider: ProviderKind,
    pub state: ProviderState,
    pub availability: Availability,
}

/// One provider's row, as read at `now` (the database's clock).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub provider: ProviderKind,
    pub now: DateTime<Utc>,
    pub consecutive_failures: i32,
    pub open_until: Option<DateTime<Utc>>,
    pub probe_until: Option<DateTime<Utc>>,
    pub paused_until: Option<DateTime<Utc>>,
    pub auth_failed_at: Option<DateTime<Utc>>,
    pub auth_key: Option<String>,
    pub budget_spent: bool,
}

impl Snapshot {
    /// The state as an instance holding credentials `key` sees it (None: as any instance does,
    /// for `status`): rejected credentials only keep out the instances that hold them.
    #[must_use]
    pub fn state(&self, key: Option<&str>) -> ProviderState {
        let rejected = self.auth_failed_at.is_some()
            && key.is_none_or(|k| self.auth_key.as_deref().is_none_or(|r| r == k));
        if rejected {
            ProviderState::AuthFailed
        } else if self.budget_spent {
            ProviderState::BudgetSpent
        } else if self.open_until.is_some() {
            ProviderState::Down
        } else if self.consecutive_failures > 0 || self.paused_until.is_some_and(|p| p > self.now) {
            ProviderState::Degraded
        } else {
            ProviderState::Healthy
        }
    }

    /// Whether an instance holding `key` may send a request now. Down counts as usable once
    /// `open_until` has passed and no probe is in flight: that request is the probe. A pause
    /// longer than `longest_wait` (what a poll may wait with its lease) makes it unusable until
    /// it ends.
    #[must_use]
    pub fn usable(&self, key: Option<&str>, longest_wait: Duration) -> bool {
        self.availability(key, longest_wait) == Availability::Usable
    }

    /// Whether, and until when not, a process holding `key` may send to the provider.
    #[must_use]
    pub fn availability(&self, key: Option<&str>, longest_wait: Duration) -> Availability {
        let until = match self.state(key) {
            // Both end on events the database cannot date in advance (a new key; the next UTC
            // day by the caller's clock), so entries keep their due times meanwhile.
            ProviderState::AuthFailed | ProviderState::BudgetSpent => return Availability::Out,
            ProviderState::Down => [self.open_until, self.probe_until]
                .into_iter()
                .flatten()
                .max()
                .filter(|until| *until > self.now),
            ProviderState::Degraded | ProviderState::Healthy => {
                let long = chrono::Duration::from_std(longest_wait).unwrap_or_default();
                self.paused_until.filter(|p| *p > self.now + long)
            }
        };
        until.map_or(Availability::Usable, Availability::OutUntil)
    }

    /// The state and availability as a process holding `key` sees it.
    #[must_use]
    pub fn standing(&self, key: Option<&str>, longest_wait: Duration) -> Standing {
        Standing {
            provider: self.provider,
            state: self.state(key),
            availability: self.availability(key, longest_wait),
        }
    }
}

/// Every provider's row, with whether `day`'s budget is spent.
pub async fn snapshot(
    db: impl PgExecutor<'_>,
    day: NaiveDate,
) -> Result<Vec<Snapshot>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT q.provider AS "provider: ProviderKind", clock_timestamp() AS "now!",
                  q.consecutive_failures, q.open_until, q.probe_until,
                  NULLIF(q.paused_until, 'epoch') AS paused_until,
                  q.auth_failed_at, q.auth_key,
                  (cu.exhausted_at IS NOT NULL) AS "budget_spent!"
           FROM provider_quota q
           LEFT JOIN credit_usage cu ON cu.provider = q.provider AND cu.day = $1
           ORDER BY q.provider"#,
        day,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Snapshot {
            provider: r.provider,
            now: r.now,
            consecutive_failures: r.consecutive_failures,
            open_until: r.open_until,
            probe_until: r.probe_until,
            paused_until: r.paused_until,
            auth_failed_at: r.auth_failed_at,
            auth_key: r.auth_key,
            budget_spent: r.budget_spent,
        })
        .collect())
}

/// How a reported outcome moved the shared state; the instance whose report moved it logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub before: ProviderState,
    pub after: ProviderState,
}

impl Transition {
    #[must_use]
    pub fn changed(self) -> bool {
        self.before != self.after
    }
}

/// The breaker's settings for one provider.
#[derive(Debug, Clone, Copy)]
pub struct Breaker {
    /// Consecutive failures that open it.
    pub failures: u32,
    /// Rest after the first opening; doubles per failed probe up to `cooldown_max`.
    pub cooldown: Duration,
    pub cooldown_max: Duration,
}

/// Counts a transport or 5xx failure. Opens the breaker at the threshold, and re-opens it (with a
/// doubled rest) when the failure was the probe's.
pub async fn record_failure(
    db: impl PgExecutor<'_>,
    provider: ProviderKind,
    breaker: &Breaker,
    error: &str,
) -> Result<Transition, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH old AS (
    -- Opens at the threshold; while open, further failures (requests already in flight) count
    -- but do not extend it; after open_until the next failure is the probe's and re-opens it.
    SELECT consecutive_failures, open_until,
           consecutive_failures + 1 >= $3
             AND (open_until IS NULL OR open_until <= clock_timestamp()) AS reopen
    FROM provider_quota WHERE provider = $1 FOR UPDATE
),
new AS (
    UPDATE provider_quota q SET
        consecutive_failures = q.consecutive_failures + 1,
        last_failure_at = clock_timestamp(),
        last_failure = $2,
        opens = CASE WHEN old.reopen THEN q.opens + 1 ELSE q.opens END,
        open_until = CASE WHEN old.reopen
            THEN clock_timestamp() + LEAST(make_interval(secs => $4) * power(2, LEAST(q.opens, 30)),
                                           make_interval(secs => $5))
            ELSE q.open_until END,
        probe_until = CASE WHEN old.reopen THEN NULL ELSE q.probe_until END
    FROM old WHERE q.provider = $1
    RETURNING q.consecutive_failures, q.open_until
)
SELECT old.consecutive_failures AS "before_failures!", old.open_until AS before_open,
       new.consecutive_failures AS "after_failures!", new.open_until AS after_open
FROM old, new"#,
        provider.as_str(),
        error,
        i32::try_from(breaker.failures).unwrap_or(i32::MAX),
        breaker.cooldown.as_secs_f64(),
        breaker.cooldown_max.as_secs_f64(),
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map_or(
        Transition {
            before: ProviderState::Healthy,
            after: ProviderState::Healthy,
        },
        |r| Transition {
            before: breaker_state(r.before_failures, r.before_open.is_some()),
            after: breaker_state(r.after_failures, r.after_open.is_some()),
        },
    ))
}

/// A request the provider answered: closes the breaker and clears rejected credentials. Writes
/// (and locks the row) only when there is something to clear, so a healthy provider's successes
/// cost one index lookup. Returns the transition when there was one.
pub async fn record_success(
    db: impl PgExecutor<'_>,
    provider: ProviderKind,
) -> Result<Option<Transition>, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH old AS (
    SELECT consecutive_failures, open_until, auth_failed_at FROM provider_quota
    WHERE provider = $1
      AND (consecutive_failures > 0 OR open_until IS NOT NULL OR auth_failed_at IS NOT NULL)
    FOR UPDATE
),
new AS (
    UPDATE provider_quota q SET consecutive_failures = 0, opens = 0, open_until = NULL,
        probe_until = NULL, auth_failed_at = NULL, auth_error = NULL, auth_key = NULL,
        last_success_at = clock_timestamp()
    FROM old WHERE q.provider = $1
    RETURNING 1
)
SELECT old.consecutive_failures AS "failures!", old.open_until AS open_until,
       (old.auth_failed_at IS NOT NULL) AS "auth_failed!"
FROM old, new"#,
        provider.as_str(),
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Transition {
        before: if r.auth_failed {
            ProviderState::AuthFailed
        } else {
            breaker_state(r.failures, r.open_until.is_some())
        },
        after: ProviderState::Healthy,
    }))
}

/// Records that the provider rejected the credentials fingerprinted `key`. Returns true when
/// this report is the one that marked it (so it is logged once across instances).
pub async fn mark_auth_failed(
    db: impl PgExecutor<'_>,
    provider: ProviderKind,
    key: &str,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE provider_quota SET auth_failed_at = now(), auth_error = $2, auth_key = $3
         WHERE provider = $1 AND (auth_failed_at IS NULL OR auth_key IS DISTINCT FROM $3)",
        provider.as_str(),
        error,
        key,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Lets credentials the provider rejected try again (an operator's explicit `soundtrend poll`):
/// a key fixed on the provider's side without changing it would otherwise stay out.
pub async fn forgive_credentials(
    db: impl PgExecutor<'_>,
    provider: ProviderKind,
    key: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE provider_quota SET auth_failed_at = NULL, auth_error = NULL, auth_key = NULL
         WHERE provider = $1 AND auth_failed_at IS NOT NULL AND auth_key IS NOT DISTINCT FROM $2",
        provider.as_str(),
        key,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The breaker's part of the state (auth and budget are separate facts).
fn breaker_state(failures: i32, open: bool) -> ProviderState {
    if open {
        ProviderState::Down
    } else if failures > 0 {
        ProviderState::Degraded
    } else {
        ProviderState::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            provider: ProviderKind::KeyApi,
            now: "2026-12-07T12:00:00Z".parse().unwrap(),
            consecutive_failures: 0,
            open_until: None,
            probe_until: None,
            paused_until: None,
            auth_failed_at: None,
            auth_key: None,
            budget_spent: false,
        }
    }

    const WAIT: Duration = Duration::from_secs(30);

    #[test]
    fn rejected_credentials_keep_out_only_the_instances_holding_them() {
        let mut s = snap();
        s.auth_failed_at = Some(s.now);
        s.auth_key = Some("aaaa".into());
        assert_eq!(s.state(Some("aaaa")), ProviderState::AuthFailed);
        assert_eq!(s.state(None), ProviderState::AuthFailed);
        assert_eq!(s.state(Some("bbbb")), ProviderState::Healthy);
        assert!(!s.usable(Some("aaaa"), WAIT));
        assert!(s.usable(Some("bbbb"), WAIT));
    }

    #[test]
    fn a_spent_budget_is_unusable_with_no_time_of_its_own() {
        let mut s = snap();
        s.budget_spent = true;
        assert_eq!(s.state(None), ProviderState::BudgetSpent);
        assert_eq!(s.availability(None, WAIT), Availability::Out);
    }

    #[test]
    fn an_open_breaker_is_unusable_until_it_ends_then_usable_for_one_probe() {
        let mut s = snap();
        s.consecutive_failures = 5;
        s.open_until = Some(s.now + chrono::Duration::seconds(30));
        assert_eq!(s.state(None), ProviderState::Down);
        assert!(!s.usable(None, WAIT));
        s.open_until = Some(s.now - chrono::Duration::seconds(1));
        assert!(s.usable(None, WAIT), "the probe may go");
        s.probe_until = Some(s.now + chrono::Duration::seconds(60));
        assert!(!s.usable(None, WAIT), "a probe is in flight");
    }

    #[test]
    fn failures_below_the_threshold_or_a_short_pause_degrade_but_stay_usable() {
        let mut s = snap();
        s.consecutive_failures = 2;
        assert_eq!(s.state(None), ProviderState::Degraded);
        assert!(s.usable(None, WAIT));
        let mut s = snap();
        s.paused_until = Some(s.now + chrono::Duration::seconds(10));
        assert_eq!(s.state(None), ProviderState::Degraded);
        assert!(s.usable(None, WAIT));
        s.paused_until = Some(s.now + chrono::Duration::seconds(600));
        assert!(!s.usable(None, WAIT));
    }
}
