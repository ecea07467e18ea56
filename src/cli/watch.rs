//! `soundtrend watch`: conveniences over the `watchlist` table. SQL stays first-class: every
//! command here is one statement an analyst could type, with the same constraints guarding it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use sqlx::PgPool;

use crate::app::{exit, fatal};
use crate::domain::{ClipId, Period, Region};
use crate::provider::ProviderKind;
use crate::store::{report, watchlist};

#[derive(Debug, Subcommand)]
pub enum WatchCommand {
    /// Watch a sound in a region (or update its period and interval).
    Add {
        clip_id: String,
        region: String,
        /// 7, 30 or 120; omit for automatic.
        #[arg(long)]
        period: Option<String>,
        /// How often to poll, e.g. 12h or 1day (at least 1m).
        #[arg(long)]
        interval: Option<String>,
        /// Poll this entry only with `keyapi` or `echotik`; `auto` follows the configured order.
        #[arg(long)]
        provider: Option<String>,
    },
    /// Add every line of a CSV file: `clip_id,region`[,`period,poll_interval`]. Bad lines are reported
    /// by number and skipped; the good ones go in one transaction. Idempotent.
    Import { file: PathBuf },
    /// Show watched sounds, soonest due first.
    List {
        /// Include paused and disabled entries.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Stop polling an entry without forgetting it.
    Pause { clip_id: String, region: String },
    /// Poll a paused or disabled entry again (it is due at once).
    Resume { clip_id: String, region: String },
    /// Stop watching; collected data stays.
    Remove { clip_id: String, region: String },
}

/// A valid line of an import file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRow {
    pub clip_id: ClipId,
    pub region: Region,
    pub period: Option<Period>,
    pub interval: Option<Duration>,
}

pub async fn run(pool: &PgPool, cmd: WatchCommand) -> anyhow::Result<()> {
    match cmd {
        WatchCommand::Add {
            clip_id,
            region,
            period,
            interval,
            provider,
        } => {
            let row = parse_fields(&clip_id, &region, period.as_deref(), interval.as_deref())
                .map_err(|e| fatal(exit::CONFIG, e))?;
            let provider = provider
                .as_deref()
                .map(parse_provider)
                .transpose()
                .map_err(|e| fatal(exit::CONFIG, e))?;
            let mut tx = pool.begin().await?;
            let inserted = watchlist::upsert(
                &mut *tx,
                row.clip_id.as_str(),
                row.region.as_str(),
                row.period.map(Period::days),
                row.interval,
            )
            .await?;
            if let Some(provider) = provider {
                watchlist::pin_provider(
                    &mut *tx,
                    row.clip_id.as_str(),
                    row.region.as_str(),
                    provider,
                )
                .await?;
            }
            tx.commit().await?;
            println!(
                "{} {}/{}",
                if inserted { "watching" } else { "updated" },
                row.clip_id,
                row.region
            );
        }
        WatchCommand::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let (rows, problems) = parse_import(&text);
            for (line, reason) in &problems {
                eprintln!("{}:{line}: {reason}", file.display());
            }
            let mut tx = pool.begin().await?;
            let (mut added, mut updated) = (0, 0);
            for row in &rows {
                let inserted = watchlist::upsert(
                    &mut *tx,
                    row.clip_id.as_str(),
                    row.region.as_str(),
                    row.period.map(Period::days),
                    row.interval,
                )
                .await?;
                if inserted {
                    added += 1;
                } else {
                    updated += 1;
                }
            }
            tx.commit().await?;
            println!(
                "imported {}: {added} added, {updated} updated, {} refused",
                file.display(),
                problems.len()
            );
            if !problems.is_empty() {
                return Err(fatal(
                    exit::CONFIG,
                    format!("{} line(s) refused; see above", problems.len()),
                ));
            }
        }
        WatchCommand::List { all, limit } => {
            let rows = report::watch_rows(pool, all, limit).await?;
            println!(
                "{:<20} {:<3} {:>6} {:<12} {:<8} {:<20} {:<20} {:>4}  last error",
                "clip_id",
                "rg",
                "period",
                "interval",
                "enabled",
                "next due (UTC)",
                "last success (UTC)",
                "fail"
            );
            for r in rows {
                println!(
                    "{:<20} {:<3} {:>6} {:<12} {:<8} {:<20} {:<20} {:>4}  {}",
                    r.clip_id,
                    r.region,
                    r.period.map_or_else(|| "auto".into(), |p| p.to_string()),
                    humane_interval(r.poll_interval_secs),
                    r.enabled,
                    r.next_due_at.map_or_else(
                        || "invalid".into(),
                        |t| t.format("%Y-%m-%d %H:%M:%S").to_string()
                    ),
                    r.last_success_at.map_or_else(
                        || "never".into(),
                        |t| t.format("%Y-%m-%d %H:%M:%S").to_string()
                    ),
                    r.consecutive_failures,
                    r.disabled_reason.or(r.last_error).unwrap_or_default()
                );
            }
        }
        WatchCommand::Pause { clip_id, region } => toggle(pool, &clip_id, &region, false).await?,
        WatchCommand::Resume { clip_id, region } => toggle(pool, &clip_id, &region, true).await?,
        WatchCommand::Remove { clip_id, region } => {
            let (c, r) = key(&clip_id, &region)?;
            if !watchlist::remove(pool, c.as_str(), r.as_str()).await? {
                return Err(fatal(
                    exit::CONFIG,
                    format!("{c}/{r} is not on the watchlist"),
                ));
            }
            println!("removed {c}/{r} (its data stays)");
        }
    }
    Ok(())
}

async fn toggle(pool: &PgPool, clip_id: &str, region: &str, enabled: bool) -> anyhow::Result<()> {
    let (c, r) = key(clip_id, region)?;
    if !watchlist::set_enabled(pool, c.as_str(), r.as_str(), enabled).await? {
        return Err(fatal(
            exit::CONFIG,
            format!("{c}/{r} is not on the watchlist"),
        ));
    }
    println!("{} {c}/{r}", if enabled { "resumed" } else { "paused" });
    Ok(())
}

fn key(clip_id: &str, region: &str) -> anyhow::Result<(ClipId, Region)> {
    let c = ClipId::parse(clip_id).map_err(|e| fatal(exit::CONFIG, e.to_string()))?;
    let r = Region::parse(region).map_err(|e| fatal(exit::CONFIG, e.to_string()))?;
    Ok((c, r))
}

fn parse_fields(
    clip_id: &str,
    region: &str,
    period: Option<&str>,
    interval: Option<&str>,
) -> Result<ImportRow, String> {
    let clip_id = ClipId::parse(clip_id).map_err(|e| e.to_string())?;
    let region = Region::parse(region).map_err(|e| e.to_string())?;
    let period = match period
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("auto"))
    {
        None => None,
        Some(p) => Some(p.parse::<Period>().map_err(|e| e.to_string())?),
    };
    let interval = match interval.map(str::trim).filter(|i| !i.is_empty()) {
        None => None,
        Some(i) => {
            let d = humantime::parse_duration(i).map_err(|e| {
                format!("invalid poll interval {i:?}: {e} (write it like 12h or 1day)")
            })?;
            if d < Duration::from_mins(1) {
                return Err(format!(
                    "poll interval {i:?} is shorter than the 1 minute minimum"
                ));
            }
            Some(d)
        }
    };
    Ok(ImportRow {
        clip_id,
        region,
        period,
        interval,
    })
}

/// Parses an import file. Returns the good rows (a pair listed twice keeps its last line) and
/// the refused lines with their 1-based numbers and reasons. A first line starting with
/// `clip_id` is a header; blank lines and lines starting with `#` are skipped.
#[must_use]
pub fn parse_import(text: &str) -> (Vec<ImportRow>, Vec<(usize, String)>) {
    let mut rows: BTreeMap<(String, String), ImportRow> = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim().trim_start_matches('\u{feff}');
        if line.is_empty()
            || line.starts_with('#')
            || (n == 1 && line.to_ascii_lowercase().starts_with("clip_id"))
        {
            continue;
        }
        let fields: Vec<&str> = line
            .split(',')
            .map(|f| f.trim().trim_matches('"'))
            .collect();
        if !(2..=4).contains(&fields.len()) {
            problems.push((
                n,
                format!(
                    "expected clip_id,region[,period,poll_interval], found {} fields",
                    fields.len()
                ),
            ));
            continue;
        }
        match parse_fields(
            fields[0],
            fields[1],
            fields.get(2).copied(),
            fields.get(3).copied(),
        ) {
            Ok(row) => {
                rows.insert((row.clip_id.to_string(), row.region.to_string()), row);
            }
            Err(reason) => problems.push((n, reason)),
        }
    }
    (rows.into_values().collect(), problems)
}

/// `--provider`: a provider's name, or `auto` (None) for the configured order.
fn parse_provider(raw: &str) -> Result<Option<ProviderKind>, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "auto" | "" => Ok(None),
        other => other
            .parse::<ProviderKind>()
            .map(Some)
            .map_err(|e| format!("--provider: {e}, or \"auto\" to follow providers.order")),
    }
}

/// An interval the way `--interval` and `watch import` take it back: `1day`, `12h`,
/// `1day 12h`, `90days`, `30m`; whole seconds only.
#[must_use]
pub fn humane_interval(secs: f64) -> String {
    if !secs.is_finite() || secs < 1.0 {
        return "0s".into();
    }
    // Bounded by the watchlist's 10-year ceiling, far below u64::MAX.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let mut left = secs.round() as u64;
    let mut parts = Vec::new();
    for (unit, one, many) in [
        (86_400, "day", "days"),
        (3_600, "h", "h"),
        (60, "m", "m"),
        (1, "s", "s"),
    ] {
        let n = left / unit;
        left %= unit;
        if n > 0 {
            parts.push(format!("{n}{}", if n == 1 { one } else { many }));
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn intervals_read_one_humane_way_and_parse_back() {
        for (secs, text) in [
            (86_400.0, "1day"),
            (43_200.0, "12h"),
            (129_600.0, "1day 12h"),
            (90.0 * 86_400.0, "90days"),
            (1_800.0, "30m"),
            (60.0, "1m"),
        ] {
            assert_eq!(super::humane_interval(secs), text);
            assert_eq!(
                humantime::parse_duration(text).unwrap().as_secs_f64(),
                secs,
                "{text}"
            );
        }
    }

    use super::*;

    #[test]
    fn import_reports_bad_lines_by_number_and_keeps_the_good_ones() {
        let text = "clip_id,region,period,poll_interval\n\
                    6703723351497508865,US\n\
                    abc,US\n\
                    6703723351497508865,gb,30,12h\n\
                    \n\
                    1,XX\n\
                    2,US,14\n\
                    3,US,7,5s\n\
                    4\n\
                    6703723351497508865,US,7\n";
        let (rows, problems) = parse_import(text);
        let lines: Vec<usize> = problems.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, vec![3, 6, 7, 8, 9]);
        assert!(problems[0].1.contains("clip id"), "{problems:?}");
        assert!(problems[1].1.contains("region"), "{problems:?}");
        assert!(problems[2].1.contains("period"), "{problems:?}");
        assert!(problems[3].1.contains("1 minute"), "{problems:?}");
        assert_eq!(rows.len(), 2);
        let gb = rows.iter().find(|r| r.region.as_str() == "GB").unwrap();
        assert_eq!(gb.period, Some(Period::Days30));
        assert_eq!(gb.interval, Some(Duration::from_hours(12)));
        let us = rows.iter().find(|r| r.region.as_str() == "US").unwrap();
        assert_eq!(
            us.period,
            Some(Period::Days7),
            "a repeated pair keeps its last line"
        );
    }
}
