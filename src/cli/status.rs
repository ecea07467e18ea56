//! `soundtrend status`: what soundtrend is doing and spending, without writing SQL.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::clock::Clock;
use crate::config::Settings;
use crate::store::health::{self, ProviderState};
use crate::store::report::{self, DisabledEntry, EntryCounts, ProviderReport, RecentError};

#[derive(Debug, Serialize)]
pub struct Status {
    pub generated_at: DateTime<Utc>,
    /// The first provider in the order.
    pub configured_provider: String,
    /// Every provider in force, in order of preference.
    pub configured_providers: Vec<String>,
    /// The first provider's budget.
    pub daily_credit_budget: Option<u32>,
    pub entries: EntryCounts,
    pub providers: Vec<ProviderStatus>,
    pub disabled: Vec<DisabledEntry>,
    pub recent_errors: Vec<RecentError>,
}

/// One provider: what it did today, and the state every instance shares.
#[derive(Debug, Serialize)]
pub struct ProviderStatus {
    #[serde(flatten)]
    pub report: ProviderReport,
    pub state: ProviderState,
    /// Consecutive transport/5xx failures, as the circuit breaker counts them.
    pub consecutive_failures: i32,
    /// While `down`: no request before this (then one probe).
    pub down_until: Option<DateTime<Utc>>,
    /// None when the provider is not in the configuration (it has history only).
    pub order: Option<usize>,
    pub daily_credit_budget: Option<u32>,
}

/// The status at `clock`'s now.
pub async fn collect(
    pool: &PgPool,
    settings: &Settings,
    clock: &dyn Clock,
) -> Result<Status, sqlx::Error> {
    let now = clock.now();
    let lanes = settings.provider_lanes();
    let today = now.date_naive();
    let health = health::snapshot(pool, today).await?;
    let mut providers: Vec<ProviderStatus> = report::providers(pool, today)
        .await?
        .into_iter()
        .map(|report| {
            let snap = health
                .iter()
                .find(|h| h.provider.as_str() == report.provider);
            let order = lanes
                .iter()
                .position(|p| p.name.as_str() == report.provider);
            ProviderStatus {
                state: snap.map_or(ProviderState::Healthy, |h| h.state(None)),
                consecutive_failures: snap.map_or(0, |h| h.consecutive_failures),
                down_until: snap.and_then(|h| h.open_until),
                daily_credit_budget: order.and_then(|i| lanes[i].daily_budget()),
                order,
                report,
            }
        })
        .collect();
    // In order of preference; providers with history only last.
    providers.sort_by_key(|p| p.order.unwrap_or(usize::MAX));
    Ok(Status {
        generated_at: now,
        configured_provider: lanes[0].name.to_string(),
        configured_providers: lanes.iter().map(|p| p.name.to_string()).collect(),
        daily_credit_budget: lanes[0].daily_budget(),
        entries: report::entry_counts(pool).await?,
        providers,
        disabled: report::disabled(pool, 20).await?,
        recent_errors: report::recent_errors(pool, 10).await?,
    })
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "never".into(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The human-readable table.
#[must_use]
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let e = &s.entries;
    out.push_str(&format!(
        "soundtrend status at {}\n\n",
        s.generated_at.format("%Y-%m-%d %H:%M:%S UTC")
    ));
    out.push_str("watchlist\n");
    out.push_str(&format!(
        "  total {:>8}   enabled {:>8}   due now {:>8}   overdue (>1h) {:>8}   polling now {:>6}   disabled {:>6}\n\n",
        e.total, e.enabled, e.due_now, e.overdue, e.leased, e.disabled
    ));
    out.push_str("providers\n");
    if s.providers.is_empty() {
        out.push_str("  (no polls yet)\n");
    }
    for status in &s.providers {
        let p = &status.report;
        let budget = match status.order {
            Some(_) => status
                .daily_credit_budget
                .map_or_else(|| " (no budget)".into(), |b| format!(" of {b}")),
            None => String::new(),
        };
        let configured = match (status.order, s.configured_providers.len()) {
            (None, _) => " (not configured)".to_owned(),
            (Some(_), 1) => " (configured)".to_owned(),
            (Some(i), _) => format!(" (configured, preference {})", i + 1),
        };
        out.push_str(&format!("  {}{configured}\n", p.provider));
        let state = match (status.state, status.down_until) {
            (ProviderState::Down, Some(t)) if t > s.generated_at => {
                format!(
                    "down: circuit breaker open, one probe after {}",
                    when(Some(t))
                )
            }
            (ProviderState::Down, _) => {
                "down: circuit breaker open, next request is the probe".into()
            }
            (ProviderState::Degraded, _) => format!(
                "degraded: {} failure(s) in a row",
                status.consecutive_failures
            ),
            (state, _) => state.to_string(),
        };
        out.push_str(&format!("    state           {state}\n"));
        out.push_str(&format!(
            "    credits today   {}{budget} in {} {}{}\n",
            p.credits_used_today,
            p.requests_today,
            crate::cli::show::plural(p.requests_today, "request", "requests"),
            p.budget_exhausted_at
                .map(|t| format!("; budget spent at {}", t.format("%H:%M:%S UTC")))
                .unwrap_or_default()
        ));
        out.push_str(&format!(
            "    last success    {}\n",
            when(p.last_success_at)
        ));
        out.push_str(&format!(
            "    last failure    {}{}\n",
            when(p.last_failure_at),
            p.last_failure
                .as_ref()
                .map(|f| format!("  {f}"))
                .unwrap_or_default()
        ));
        if let Some(t) = p.paused_until.filter(|t| *t > s.generated_at) {
            out.push_str(&format!(
                "    paused until    {} (provider asked to slow down)\n",
                when(Some(t))
            ));
        }
        if let Some(t) = p.auth_failed_at {
            out.push_str(&format!(
                "    CREDENTIALS REJECTED at {}: {}\n",
                when(Some(t)),
                p.auth_error.clone().unwrap_or_default()
            ));
        }
    }
    out.push_str("\ndisabled entries\n");
    if s.disabled.is_empty() {
        out.push_str("  (none)\n");
    }
    for d in &s.disabled {
        out.push_str(&format!(
            "  {}/{}  {}\n",
            d.clip_id,
            d.region,
            d.reason.clone().unwrap_or_default()
        ));
    }
    out.push_str("\nrecent errors\n");
    if s.recent_errors.is_empty() {
        out.push_str("  (none)\n");
    }
    for r in &s.recent_errors {
        out.push_str(&format!(
            "  {}  {:<8} {}/{}  {:<16} {}\n",
            r.requested_at.format("%Y-%m-%d %H:%M:%S"),
            r.provider,
            r.clip_id,
            r.region,
            r.outcome,
            r.error.clone().unwrap_or_default()
        ));
    }
    out
}
