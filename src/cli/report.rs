//! `soundtrend report`: the overview and every sound's page in one self-contained HTML file
//! (inline SVG and CSS; it opens offline and can be mailed around). Reads the database only.

use std::path::PathBuf;

use anyhow::Context;
use chrono::NaiveDate;
use clap::Args;

use crate::app::{self, exit, fatal};
use crate::config::Settings;
use crate::web::pages::{html, Filter, Overview, SoundPage};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Where to write the report.
    #[arg(long, default_value = "soundtrend-report.html")]
    pub out: PathBuf,
    /// Only this sound.
    #[arg(long)]
    pub clip_id: Option<String>,
    /// Only this region.
    #[arg(long)]
    pub region: Option<String>,
    /// Only history from this day on (YYYY-MM-DD, UTC).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many sounds, most recently active first.
    #[arg(long, default_value_t = 200)]
    pub limit: i64,
}

pub async fn run(settings: &Settings, args: ReportArgs) -> anyhow::Result<()> {
    let filter = Filter {
        clip_id: args.clip_id.as_deref().map(app::clip_arg).transpose()?,
        region: app::region_arg(args.region.as_deref())?,
        since: args
            .since
            .as_deref()
            .map(|s| {
                NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|e| {
                    fatal(
                        exit::CONFIG,
                        format!("--since {s:?}: {e}; write it like 2026-11-01"),
                    )
                })
            })
            .transpose()?,
    };
    let pool = app::database(&settings.database).await?;
    let overview = Overview::load(&pool, &filter, chrono::Utc::now()).await?;
    let clips = crate::store::pages::clips(
        &pool,
        filter.clip(),
        filter.region(),
        filter.since,
        args.limit,
    )
    .await?;
    let mut sounds = Vec::new();
    for clip in &clips {
        if let Some(page) = SoundPage::load(&pool, clip, &filter).await? {
            sounds.push(page);
        }
    }
    let document = html::report(&overview, &sounds).into_string();
    std::fs::write(&args.out, &document)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "wrote {} ({} {}, {} KiB); open it in a browser",
        args.out.display(),
        sounds.len(),
        crate::cli::show::plural(
            i64::try_from(sounds.len()).unwrap_or(i64::MAX),
            "sound",
            "sounds"
        ),
        document.len() / 1024
    );
    Ok(())
}
