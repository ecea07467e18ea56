//! `soundtrend show CLIP_ID`: one sound on the terminal, from the database only (no API call):
//! title and author, a sparkline of its stitched trend per region, its top countries and
//! interests, and where the data came from.

use std::fmt::Write as _;

use chrono::NaiveDate;
use clap::Args;
use sqlx::PgPool;

use crate::app::{self, exit, fatal};
use crate::config::Settings;
use crate::domain::{ClipId, Region};
use crate::store::sound::{self, AudienceEntry, Day};

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The sound (`TikTok` clip id).
    pub clip_id: String,
    /// Only this region (ISO 3166 alpha-2); default: every region it was polled in.
    #[arg(long)]
    pub region: Option<String>,
    /// Days of trend to draw, up to each region's newest day (1 to 366).
    #[arg(long, default_value_t = 30)]
    pub days: i32,
}

pub async fn run(settings: &Settings, args: ShowArgs) -> anyhow::Result<()> {
    let clip_id = app::clip_arg(&args.clip_id)?;
    let region = app::region_arg(args.region.as_deref())?;
    if !(1..=366).contains(&args.days) {
        return Err(fatal(exit::CONFIG, "--days must be between 1 and 366"));
    }
    let pool = app::database(&settings.database).await?;
    let region = region.as_ref().map(Region::as_str);
    match render(&pool, &clip_id, region, args.days).await? {
        Some(text) => {
            print!("{text}");
            Ok(())
        }
        None => Err(fatal(
            exit::CONFIG,
            format!(
                "no data for clip {clip_id}{} in {}; watch it first (`soundtrend watch add {clip_id} {}`) and let it be polled (the quick start's made-up data lives in {})",
                region.map(|r| format!(" in region {r}")).unwrap_or_default(),
                settings.database.redacted_url(),
                region.unwrap_or("US"),
                crate::cli::quickstart::demo_database(&settings.database)?.redacted_url(),
            ),
        )),
    }
}

/// The sound as text, or None when nothing was ever stored for it (in `region`).
pub async fn render(
    pool: &PgPool,
    clip_id: &ClipId,
    region: Option<&str>,
    days: i32,
) -> anyhow::Result<Option<String>> {
    let clip = clip_id.as_str();
    let Some(newest) = sound::provenance(pool, clip, region).await? else {
        return Ok(None);
    };
    let mut out = String::new();
    match sound::sound(pool, clip).await? {
        Some(s) => {
            let _ = writeln!(
                out,
                "{clip}  {:?} by {:?}, {} s",
                s.title.unwrap_or_default(),
                s.author.unwrap_or_default(),
                s.duration.unwrap_or_default()
            );
            if let Some(link) = s.link.filter(|l| !l.is_empty()) {
                let _ = writeln!(out, "  {link}");
            }
        }
        None => {
            let _ = writeln!(out, "{clip}");
        }
    }

    let series = sound::daily(pool, clip, region, Some(days)).await?;
    let _ = writeln!(
        out,
        "\ntrend: stitched index 0-100 (100 = the highest day so far), last {days} days per region"
    );
    if series.is_empty() {
        let _ = writeln!(out, "  (no trend stored yet)");
    }
    for chunk in series.chunk_by(|a, b| a.region == b.region) {
        let _ = writeln!(out, "  {}", trend_line(chunk, days));
    }

    let _ = writeln!(
        out,
        "\ntop countries and interests (fetch {}, {}):",
        newest.fetch_id, newest.region
    );
    let countries = sound::countries(pool, newest.fetch_id, 5).await?;
    let interests = sound::interests(pool, newest.fetch_id, 5).await?;
    for i in 0..countries.len().max(interests.len()) {
        let _ = writeln!(
            out,
            "  {:<32} {}",
            countries.get(i).map(audience_entry).unwrap_or_default(),
            interests.get(i).map(audience_entry).unwrap_or_default()
        );
    }

    let _ = writeln!(
        out,
        "\nprovenance: newest fetch {} via {} at {} ({}, {}-day window); {} successful {} in all",
        newest.fetch_id,
        newest.provider,
        newest.requested_at.format("%Y-%m-%d %H:%M:%S UTC"),
        newest.region,
        newest.period,
        newest.ok_fetches,
        plural(newest.ok_fetches, "fetch", "fetches")
    );
    Ok(Some(out))
}

/// `one` or `many` as `n` asks.
pub fn plural<N: PartialEq + From<u8> + Copy>(
    n: N,
    one: &'static str,
    many: &'static str,
) -> &'static str {
    if n == N::from(1) {
        one
    } else {
        many
    }
}

/// One region: its sparkline over the last `days` days and the newest day's level and band.
fn trend_line(days_of_region: &[Day], days: i32) -> String {
    let (Some(first), Some(last)) = (days_of_region.first(), days_of_region.last()) else {
        return String::new();
    };
    let start = last.day - chrono::Days::new(u64::try_from(days - 1).unwrap_or(0));
    let values: Vec<(NaiveDate, f64)> = days_of_region
        .iter()
        .map(|d| (d.day, d.index_value))
        .collect();
    let segments = if first.segment == last.segment {
        String::new()
    } else {
        format!(
            "; segments {}-{} (levels compare within a segment only)",
            first.segment, last.segment
        )
    };
    format!(
        "{}  {}  {} .. {}  now {:.0} (band {:.0}-{:.0}){segments}",
        last.region,
        sparkline(start, last.day, &values),
        first.day,
        last.day,
        last.index_value,
        last.index_low,
        last.index_high.min(100.0)
    )
}

fn audience_entry(e: &AudienceEntry) -> String {
    format!(
        "{:>2}. {} {} {}",
        e.position,
        e.code.as_deref().unwrap_or(""),
        e.name.as_deref().unwrap_or(""),
        e.score.unwrap_or_default()
    )
}

const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One character per day from `start` to `end`: a block for a 0–100 value, a space for a day
/// no window covered. Values outside 0..=100 are clamped.
#[must_use]
pub fn sparkline(start: NaiveDate, end: NaiveDate, values: &[(NaiveDate, f64)]) -> String {
    start
        .iter_days()
        .take_while(|d| *d <= end)
        .map(|day| match values.iter().find(|(d, _)| *d == day) {
            Some((_, v)) if v.is_finite() => {
                // In 0..=7 after the clamp, so the cast is exact.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let i = (v.clamp(0.0, 100.0) / 100.0 * 7.0).round() as usize;
                BLOCKS[i]
            }
            _ => ' ',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    #[test]
    fn a_sparkline_has_one_character_per_day_and_a_gap_for_a_missing_day() {
        let values = [(day(1), 0.0), (day(2), 50.0), (day(4), 100.0)];

        let line = sparkline(day(1), day(4), &values);

        assert_eq!(line, "▁▅ █");
    }

    #[test]
    fn a_sparkline_clamps_values_outside_the_scale() {
        let values = [(day(1), -5.0), (day(2), 250.0), (day(3), f64::NAN)];

        assert_eq!(sparkline(day(1), day(3), &values), "▁█ ");
    }

    #[test]
    fn counts_read_as_english() {
        assert_eq!(plural(1, "fetch", "fetches"), "fetch");
        assert_eq!(plural(0, "fetch", "fetches"), "fetches");
        assert_eq!(plural(2, "fetch", "fetches"), "fetches");
    }
}
