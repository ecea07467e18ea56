//! Logs (tracing) and metrics (the `metrics` facade). What gets measured is named in
//! [`metrics`]; whether it is exported is up to the command (`soundtrend run` serves /metrics).

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber: human-readable text or JSON lines, on stderr. `RUST_LOG`
/// overrides the configured level.
pub fn init(settings: &LogSettings) {
    // The scheduler and sqlx narrate their internals at INFO ("Job creator created", Postgres
    // NOTICEs); keep them to warnings unless RUST_LOG asks for more.
    let quiet = format!("{},tokio_cron_scheduler=warn,sqlx=warn", settings.level);
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&quiet))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

/// Every metric soundtrend records. Labels are low-cardinality on purpose: never a clip id.
pub mod metrics {
    use metrics::{counter, gauge, histogram};

    use crate::provider::{Attempt, ProviderKind};
    use crate::store::ingest::Written;

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
        counter!("soundtrend_rows_written_total", "table" => "fetches").increment(1);
        counter!("soundtrend_rows_written_total", "table" => "sounds").increment(1);
        counter!("soundtrend_rows_written_total", "table" => "sound_snapshots").increment(1);
        counter!("soundtrend_rows_written_total", "table" => "trend_points")
            .increment(w.trend_points as u64);
        counter!("soundtrend_rows_written_total", "table" => "audience_countries")
            .increment(w.countries as u64);
        counter!("soundtrend_rows_written_total", "table" => "audience_interests")
            .increment(w.interests as u64);
    }

    pub fn backlog(due_now: i64, most_overdue_secs: f64, leases_held: i64) {
        gauge!("soundtrend_entries_due").set(due_now as f64);
        gauge!("soundtrend_most_overdue_seconds").set(most_overdue_secs);
        gauge!("soundtrend_leases_held").set(leases_held as f64);
    }
}
