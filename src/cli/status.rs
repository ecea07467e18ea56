//! `soundtrend status`: what soundtrend is doing and spending, without writing SQL.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::config::Settings;
use crate::store::report::{self, DisabledEntry, EntryCounts, ProviderReport, RecentError};

#[derive(Debug, Serialize)]
pub struct Status {
    pub generated_at: DateTime<Utc>,
    pub configured_provider: String,
    pub daily_credit_budget: Option<u32>,
    pub entries: EntryCounts,
    pub providers: Vec<ProviderReport>,
    pub disabled: Vec<DisabledEntry>,
    pub recent_errors: Vec<RecentError>,
}

pub async fn collect(pool: &PgPool, settings: &Settings) -> Result<Status, sqlx::Error> {
    let now = Utc::now();
    Ok(Status {
        generated_at: now,
        configured_provider: settings.provider.name.to_string(),
        daily_credit_budget: (settings.provider.daily_credit_budget > 0)
            .then_some(settings.provider.daily_credit_budget),
        entries: report::entry_counts(pool).await?,
        providers: report::providers(pool, now.date_naive()).await?,
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
    for p in &s.providers {
        let budget = if p.provider == s.configured_provider {
            s.daily_credit_budget
                .map_or_else(|| " (no budget)".into(), |b| format!(" of {b}"))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {}{}\n",
            p.provider,
            if p.provider == s.configured_provider {
                " (configured)"
            } else {
                ""
            }
        ));
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
