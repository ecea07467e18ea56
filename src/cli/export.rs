//! `soundtrend export`: a sound's stitched daily series (the `sound_daily` view) as CSV or JSON
//! lines, for spreadsheets and notebooks. Reads the database only.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::app::{self, exit, fatal};
use crate::config::Settings;
use crate::domain::Region;
use crate::store::sound::{self, Day};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The sound (`TikTok` clip id).
    #[arg(long)]
    pub clip_id: String,
    /// Only this region (ISO 3166 alpha-2); default: every region.
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long, value_enum)]
    pub format: Format,
    /// Write here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// Comma-separated, one header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// The CSV columns, in order; the JSON lines carry the same keys.
pub const COLUMNS: &str = "clip_id,region,day,index_value,index_low,index_high,segment,windows,window_value,window_period,fetch_id";

pub async fn run(settings: &Settings, args: ExportArgs) -> anyhow::Result<()> {
    let clip_id = app::clip_arg(&args.clip_id)?;
    let region = app::region_arg(args.region.as_deref())?;
    let pool = app::database(&settings.database).await?;
    let region = region.as_ref().map(Region::as_str);
    let days = sound::daily(&pool, clip_id.as_str(), region, None).await?;
    if days.is_empty() {
        return Err(fatal(
            exit::CONFIG,
            format!(
                "no daily series for clip {clip_id}{} in {}; nothing written",
                region
                    .map(|r| format!(" in region {r}"))
                    .unwrap_or_default(),
                settings.database.redacted_url()
            ),
        ));
    }
    let text = match args.format {
        Format::Csv => csv(&days),
        Format::Jsonl => jsonl(&days)?,
    };
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .context("cannot write to stdout")?,
    }
    let mut regions: Vec<&str> = days.iter().map(|d| d.region.as_str()).collect();
    regions.dedup();
    eprintln!(
        "exported {} {} of clip {clip_id} ({}) to {}",
        days.len(),
        crate::cli::show::plural(days.len(), "day", "days"),
        regions.join(", "),
        args.out
            .as_ref()
            .map_or_else(|| "stdout".into(), |p| p.display().to_string())
    );
    Ok(())
}

/// The series as CSV. Every field is a number, a date, a digit-only clip id or a two-letter
/// region, so none needs quoting; an unknown value is an empty field.
#[must_use]
pub fn csv(days: &[Day]) -> String {
    let mut out = format!("{COLUMNS}\n");
    let opt = |v: Option<String>| v.unwrap_or_default();
    for d in days {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            d.clip_id,
            d.region,
            d.day,
            d.index_value,
            d.index_low,
            d.index_high,
            d.segment,
            d.windows,
            opt(d.window_value.map(|v| v.to_string())),
            opt(d.window_period.map(|v| v.to_string())),
            d.fetch_id
        ));
    }
    out
}

pub fn jsonl(days: &[Day]) -> anyhow::Result<String> {
    let mut out = String::new();
    for d in days {
        out.push_str(&serde_json::to_string(d)?);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> Day {
        Day {
            clip_id: "1".into(),
            region: "US".into(),
            day: chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(),
            index_value: 50.0,
            index_low: 49.5,
            index_high: 50.5,
            segment: 1,
            windows: 2,
            window_value: None,
            window_period: Some(7),
            fetch_id: 9,
        }
    }

    #[test]
    fn csv_has_the_documented_header_and_an_empty_field_for_an_unknown_value() {
        let text = csv(&[day()]);

        assert_eq!(
            text,
            format!("{COLUMNS}\n1,US,2026-11-30,50,49.5,50.5,1,2,,7,9\n")
        );
    }

    #[test]
    fn json_lines_carry_the_same_keys_as_the_csv_header() {
        let line: serde_json::Value =
            serde_json::from_str(jsonl(&[day()]).unwrap().trim()).unwrap();

        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut columns: Vec<&str> = COLUMNS.split(',').collect();
        columns.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, columns);
        assert_eq!(line["day"], "2026-11-30");
    }
}
