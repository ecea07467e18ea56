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

use crate::domain::{ClipId, Period, Region};
use crate::normalize::{normalize, Observation};
use crate::provider::wire::{Envelope, MusicDetail};
use crate::provider::{Outcome, ProviderKind};
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

#[derive(sqlx::FromRow)]
struct Archived {
    id: i64,
    clip_id: String,
    region: String,
    period: i16,
    provider: String,
    requested_at: DateTime<Utc>,
    outcome: String,
    body_json: serde_json::Value,
}

const FILTER: &str = "(outcome = 'ok' OR ($4 AND outcome = 'invalid_payload'))
    AND body_json IS NOT NULL
    AND ($1::timestamptz IS NULL OR requested_at >= $1)
    AND ($2::text IS NULL OR clip_id = $2)
    AND ($3::text IS NULL OR region = $3)";

pub async fn replay(
    pool: &PgPool,
    filter: &ReplayFilter,
    batch_size: i64,
    progress: bool,
) -> anyhow::Result<ReplaySummary> {
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM fetches WHERE {FILTER}"))
        .bind(filter.since)
        .bind(filter.clip_id.as_deref())
        .bind(filter.region.as_deref())
        .bind(filter.retry_invalid)
        .fetch_one(pool)
        .await?;
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
        let batch: Vec<Archived> = sqlx::query_as(&format!(
            "SELECT id, clip_id, region, period, provider, requested_at, outcome, body_json
             FROM fetches WHERE {FILTER} AND id > $5 ORDER BY id LIMIT $6"
        ))
        .bind(filter.since)
        .bind(filter.clip_id.as_deref())
        .bind(filter.region.as_deref())
        .bind(filter.retry_invalid)
        .bind(after)
        .bind(batch_size)
        .fetch_all(pool)
        .await?;
        let Some(last) = batch.last() else { break };
        after = last.id;

        let mut tx = pool.begin().await?;
        let ids: Vec<i64> = batch.iter().map(|a| a.id).collect();
        // Rows a fetch no longer produces must go too, so the result equals a fresh ingest.
        for table in [
            "sound_snapshots",
            "audience_countries",
            "audience_interests",
            "trend_points",
            "trend_observations",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE fetch_id = ANY($1)"))
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
        }
        // trend_windows is keyed by pair first: delete by the whole key.
        sqlx::query(
            "DELETE FROM trend_windows w
             USING UNNEST($1::int8[], $2::text[], $3::text[]) AS u(id, clip_id, region)
             WHERE w.clip_id = u.clip_id AND w.region = u.region AND w.fetch_id = u.id",
        )
        .bind(&ids)
        .bind(batch.iter().map(|a| a.clip_id.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|a| a.region.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        for archived in &batch {
            match rows_of(archived) {
                Ok((obs, rows)) => {
                    let record = record_of(archived, &obs);
                    let written =
                        ingest::replay_derived(&mut tx, archived.id, &record, &rows).await?;
                    summary.rows += written.rows();
                    summary.fetches += 1;
                    if archived.outcome != "ok" {
                        set_outcome(&mut tx, archived.id, Outcome::Ok, None).await?;
                        summary.revived += 1;
                    }
                }
                Err(reason) => {
                    summary.skipped += 1;
                    if archived.outcome == "ok" {
                        let why = format!("invalid payload (re-validated by replay): {reason}");
                        set_outcome(&mut tx, archived.id, Outcome::InvalidPayload, Some(&why))
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

/// Re-labels an archived attempt after re-validation; its body and credits stay as they were.
async fn set_outcome(
    conn: &mut sqlx::PgConnection,
    fetch_id: i64,
    outcome: Outcome,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE fetches SET outcome = $2, error = $3 WHERE id = $1")
        .bind(fetch_id)
        .bind(outcome.as_str())
        .bind(error)
        .execute(conn)
        .await?;
    Ok(())
}

fn rows_of(a: &Archived) -> Result<(Observation, crate::normalize::Normalized), String> {
    let obs = Observation {
        clip_id: ClipId::parse(&a.clip_id).map_err(|e| e.to_string())?,
        region: Region::parse(&a.region).map_err(|e| e.to_string())?,
        period: Period::from_days(a.period.into()).map_err(|e| e.to_string())?,
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
        a.provider
            .parse::<ProviderKind>()
            .unwrap_or(ProviderKind::KeyApi),
        a.requested_at,
        Outcome::Ok,
    )
}
