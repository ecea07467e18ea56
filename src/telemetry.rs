//! Logs (tracing) and metrics (the `metrics` facade). What gets measured is named in
//! [`metrics`]; whether it is exported is up to the command (`soundtrend run` serves /metrics).

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber: human-readable text or JSON lines, on stderr. `RUST_LOG`
/// overrides the configured level. Text is coloured only when stderr is a terminal and
/// `NO_COLOR` is unset or empty, so log files never carry escape codes.
pub fn init(settings: &LogSettings) {
    // The scheduler and sqlx narrate their internals at INFO ("Job creator created", Postgres
    // NOTICEs); keep them to warnings unless RUST_LOG asks for more.
    let quiet = format!("{},tokio_cron_scheduler=warn,sqlx=warn", settings.level);
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&quiet))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ));
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

/// Whether log lines may carry colour: on a terminal, unless `NO_COLOR` is set to something.
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Every metric soundtrend records. Labels are low-cardinality on purpose: never a clip id.
pub mod metrics {
    use metrics::{counter, gauge, histogram};

    use crate::provider::{Attempt, Outcome, ProviderKind};
    use crate::store::health::ProviderState;
    use crate::store::ingest::Written;
    use crate::store::quota::QuotaParams;

    /// The tables `soundtrend_rows_written_total` counts.
    const TABLES: [&str; 6] = [
        "fetches",
        "sounds",
        "sound_snapshots",
        "trend_points",
        "audience_countries",
        "audience_interests",
    ];

    /// The rules of `src/normalize/rules.rs` (its table; a unit test keeps the two in step).
    pub const VALIDATION_RULES: [&str; 10] = [
        "wrong_clip",
        "trend_value_out_of_range",
        "trend_day_not_midnight",
        "trend_day_conflict",
        "trend_day_out_of_range",
        "trend_outside_window",
        "stale_window",
        "negative_count",
        "negative_score",
        "list_too_long",
    ];

    /// Creates every documented series at zero for the labels known at start-up (the provider,
    /// every outcome, table and rule), so a query or an alert on a series that has not moved yet
    /// reads 0 instead of "no data".
    pub fn register(provider: ProviderKind) {
        let p = provider.as_str();
        for outcome in Outcome::ALL.map(Outcome::as_str) {
            counter!("soundtrend_polls_total", "provider" => p, "outcome" => outcome).increment(0);
            counter!("soundtrend_requests_total", "provider" => p, "outcome" => outcome)
                .increment(0);
        }
        // Registering a histogram is enough for the exporter to show it with a count of 0.
        let _ = histogram!("soundtrend_request_duration_seconds", "provider" => p);
        let _ = histogram!("soundtrend_quota_wait_seconds", "provider" => p);
        let _ = histogram!("soundtrend_commit_group_answers", "provider" => p);
        for name in [
            "soundtrend_rate_limited_total",
            "soundtrend_retries_total",
            "soundtrend_credits_spent_total",
            "soundtrend_answers_after_lease_lost_total",
            "soundtrend_commit_groups_failed_total",
        ] {
            counter!(name, "provider" => p).increment(0);
        }
        gauge!("soundtrend_credits_spent_today", "provider" => p).increment(0.0);
        counter!("soundtrend_failovers_total", "provider" => p).increment(0);
        provider_state(provider, ProviderState::Healthy);
        for table in TABLES {
            counter!("soundtrend_rows_written_total", "table" => table).increment(0);
        }
        for rule in VALIDATION_RULES {
            counter!("soundtrend_validation_total", "rule" => rule).increment(0);
        }
        counter!("soundtrend_database_errors_total").increment(0);
        for name in [
            "soundtrend_entries_due",
            "soundtrend_most_overdue_seconds",
            "soundtrend_leases_held",
        ] {
            gauge!(name).increment(0.0);
        }
    }

    /// The configured limits operators compare use against: the shared rate and the daily
    /// credit budget (0: unlimited).
    pub fn limits(quota: &QuotaParams) {
        let p = quota.provider.as_str();
        let rps = 1.0 / quota.emission_interval.as_secs_f64().max(1e-9);
        gauge!("soundtrend_rate_limit_requests_per_second", "provider" => p).set(rps);
        gauge!("soundtrend_daily_credit_budget", "provider" => p)
            .set(f64::from(quota.daily_budget.unwrap_or(0)));
    }

    /// 1 for the provider's current state (as this process last read or changed it), 0 for
    /// the others.
    pub fn provider_state(provider: ProviderKind, state: ProviderState) {
        for s in ProviderState::ALL {
            gauge!("soundtrend_provider_state", "provider" => provider.as_str(), "state" => s.as_str())
                .set(if s == state { 1.0 } else { 0.0 });
        }
    }

    /// A poll this provider could not take, handed over to the next one in the order.
    pub fn failover(provider: ProviderKind) {
        counter!("soundtrend_failovers_total", "provider" => provider.as_str()).increment(1);
    }

    pub fn poll(provider: ProviderKind, outcome: &'static str) {
        counter!("soundtrend_polls_total", "provider" => provider.as_str(), "outcome" => outcome)
            .increment(1);
    }

    pub fn request(provider: ProviderKind, attempt: &Attempt) {
        let outcome = match &attempt.result {
            Ok(_) => "ok",
            Err(e) => e.outcome().as_str(),
        };
        counter!("soundtrend_requests_total", "provider" => provider.as_str(), "outcome" => outcome).increment(1);
        histogram!("soundtrend_request_duration_seconds", "provider" => provider.as_str())
            .record(attempt.duration.as_secs_f64());
        if outcome == "rate_limited" {
            counter!("soundtrend_rate_limited_total", "provider" => provider.as_str()).increment(1);
        }
    }

    pub fn credits_spent(provider: ProviderKind, credits: u32) {
        counter!("soundtrend_credits_spent_total", "provider" => provider.as_str())
            .increment(u64::from(credits));
    }

    pub fn credits_today(provider: ProviderKind, used: i64) {
        gauge!("soundtrend_credits_spent_today", "provider" => provider.as_str()).set(used as f64);
    }

    /// A paid answer that came back after its lease was lost: stored, but possibly bought twice.
    pub fn answer_after_lease_lost(provider: ProviderKind) {
        counter!("soundtrend_answers_after_lease_lost_total", "provider" => provider.as_str())
            .increment(1);
    }

    /// One element (or a whole response) a validation rule dropped or refused.
    pub fn validation(rule: &'static str) {
        counter!("soundtrend_validation_total", "rule" => rule).increment(1);
    }

    pub fn retry(provider: ProviderKind) {
        counter!("soundtrend_retries_total", "provider" => provider.as_str()).increment(1);
    }

    pub fn db_error() {
        counter!("soundtrend_database_errors_total").increment(1);
    }

    pub fn rows_written(w: &Written) {
        let counts = [1, 1, 1, w.trend_points, w.countries, w.interests];
        for (table, n) in TABLES.into_iter().zip(counts) {
            counter!("soundtrend_rows_written_total", "table" => table).increment(n as u64);
        }
    }

    /// Answers one transaction wrote (1: alone; more: a group commit).
    pub fn commit_group(provider: ProviderKind, answers: usize) {
        histogram!("soundtrend_commit_group_answers", "provider" => provider.as_str())
            .record(answers as f64);
    }

    /// A group commit that rolled back; its answers were then written one by one.
    pub fn commit_group_failed(provider: ProviderKind) {
        counter!("soundtrend_commit_groups_failed_total", "provider" => provider.as_str())
            .increment(1);
    }

    /// How long one request waited for the rate limit and the shared quota before it was sent.
    pub fn quota_wait(provider: ProviderKind, wait: std::time::Duration) {
        histogram!("soundtrend_quota_wait_seconds", "provider" => provider.as_str())
            .record(wait.as_secs_f64());
    }

    pub fn backlog(due_now: i64, most_overdue_secs: f64, leases_held: i64) {
        gauge!("soundtrend_entries_due").set(due_now as f64);
        gauge!("soundtrend_most_overdue_seconds").set(most_overdue_secs);
        gauge!("soundtrend_leases_held").set(leases_held as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color_set() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }

    #[test]
    fn every_validation_rule_of_the_normalizer_is_registered() {
        let doc = include_str!("normalize/rules.rs");
        let documented: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        assert_eq!(documented, super::metrics::VALIDATION_RULES);
    }
}
