//! `soundtrend replay`: rebuilds the derived tables from the raw bodies archived in `fetches`,
//! without calling any API. Idempotent: replaying twice leaves the tables as one replay does.
//!
//! Bodies are re-validated with today's rules: an `ok` fetch that no longer passes becomes
//! `invalid_payload` (its derived rows go), and with `retry_invalid` an `invalid_payload` fetch
//! that passes now becomes `ok` and gets its rows.

use std::io::IsTerminal;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;
use tracing::warn;

use crate::domain::{ClipId, Region};
use crate::normalize::{normalize, Observation};
use crate::provider::wire::{Envelope, MusicDetail};
use crate::provider::Outcome;
use crate::store::archive::{self, ArchiveFilter, Archived};
use crate::store::fetches::FetchRecord;
use crate::store::{ingest, trend};

#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub since: Option<DateTime<Utc>>,
    pub clip_id: Option<String>,
    pub region: Option<String>,
    /// Also try bodies stored as `invalid_payload` (after a rule change).
    pub retry_invalid: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplaySummary {
    pub fetches: u64,
    pub rows: i64,
    /// Archived bodies that do not normalize (reported with their fetch id).
    pub skipped: u64,
    /// `ok` fetches that today's rules refuse: now `invalid_payload`.
    pub invalidated: u64,
    /// `invalid_payload` fetches that today's rules accept: now `ok` (with `retry_invalid`).
    pub revived: u64,
}

pub async fn replay(
    pool: &PgPool,
    filter: &ReplayFilter,
    batch_size: i64,
    progress: bool,
) -> anyhow::Result<ReplaySummary> {
    let archive = ArchiveFilter {
        since: filter.since,
        clip_id: filter.clip_id.as_deref(),
        region: filter.region.as_deref(),
        retry_invalid: filter.retry_invalid,
    };
    let total = archive::count(pool, &archive).await?;
    let bar = if progress && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} replay [{bar:40}] {pos}/{len} fetches  {per_sec}  eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut summary = ReplaySummary::default();
    let mut after = 0i64;
    loop {
        let batch = archive::batch(pool, &archive, after, batch_size).await?;
        let Some(last) = batch.last() else { break };
        after = last.id;

        let mut tx = pool.begin().await?;
        archive::clear_derived(&mut tx, &batch).await?;
        for archived in &batch {
            match rows_of(archived) {
                Ok((obs, rows)) => {
                    let record = record_of(archived, &obs);
                    let written =
                        ingest::replay_derived(&mut tx, archived.id, &record, &rows).await?;
                    summary.rows += written.rows();
                    summary.fetches += 1;
                    if archived.outcome != "ok" {
                        archive::set_outcome(&mut *tx, archived.id, Outcome::Ok, None).await?;
                        summary.revived += 1;
                    }
                }
                Err(reason) => {
                    summary.skipped += 1;
                    if archived.outcome == "ok" {
                        let why = format!("invalid payload (re-validated by replay): {reason}");
                        archive::set_outcome(
                            &mut *tx,
                            archived.id,
                            Outcome::InvalidPayload,
                            Some(&why),
                        )
                        .await?;
                        summary.invalidated += 1;
                    }
                    // Its window is gone: the pair's index is stitched again without it.
                    trend::lock_pair(&mut tx, &archived.clip_id, &archived.region).await?;
                    trend::restitch(
                        &mut tx,
                        &archived.clip_id,
                        &archived.region,
                        Some(archived.id),
                        archived.id,
                    )
                    .await?;
                    warn!(fetch_id = archived.id, %reason, "Skipped an archived body that does not normalize.");
                }
            }
            bar.inc(1);
        }
        tx.commit().await?;
    }
    bar.finish_and_clear();
    Ok(summary)
}

fn rows_of(a: &Archived) -> Result<(Observation, crate::normalize::Normalized), String> {
    let obs = Observation {
        clip_id: ClipId::parse(&a.clip_id).map_err(|e| e.to_string())?,
        region: Region::parse(&a.region).map_err(|e| e.to_string())?,
        period: a.period,
        observed_at: a.requested_at,
    };
    let env: Envelope = serde_json::from_value(a.body_json.clone()).map_err(|e| e.to_string())?;
    let data = env.data.ok_or("no `data`")?;
    let detail: MusicDetail = serde_json::from_value(data).map_err(|e| e.to_string())?;
    let rows = normalize(&detail, &obs).map_err(|e| e.to_string())?;
    Ok((obs, rows))
}

fn record_of<'a>(a: &'a Archived, obs: &Observation) -> FetchRecord<'a> {
    FetchRecord::new(
        &a.clip_id,
        &a.region,
        obs.period.days(),
        a.provider,
        a.requested_at,
        Outcome::Ok,
    )
}
