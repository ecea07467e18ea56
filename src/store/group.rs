//! Group commit: several live answers, each already booked as a `pending` attempt, written in
//! one transaction with set-based writes ([`super::bulk`], shared with `replay`) instead of one
//! transaction and four statements each ([`super::ingest::record_success`]).
//!
//! The transaction, in order:
//! 1. the pairs' advisory locks, in key order ([`rebuild::lock_pairs`]);
//! 2. one statement completing every `pending` row and, where the lease is still ours, the
//!    watchlist bookkeeping, fenced per answer exactly as the lone write fences it;
//! 3. the rows by one statement of `UNNEST` inserts plus one upsert each for `sounds` and
//!    `trend_points` ([`bulk::insert`]);
//! 4. the pairs' `trend_index`, re-stitched as the lone writes would have left it, stamps
//!    included ([`rebuild::restitch_written`]).
//!
//! All or nothing, for the whole group: any error rolls every answer back, and the caller writes
//! each alone, so one answer the database refuses never takes the others down and never leaves
//! half of itself.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::bulk::{self, Replayed};
use super::fetches::{Booked, FetchRecord};
use super::ingest::Written;
use super::rebuild::{self, PairSteps};
use super::StoreError;
use crate::normalize::Normalized;
use crate::provider::{Outcome, ProviderKind};

/// One successful answer, owned so it can wait for its group in another task.
#[derive(Debug)]
pub struct Answer {
    pub clip_id: String,
    pub region: String,
    pub period: i16,
    pub provider: ProviderKind,
    pub requested_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub http_status: Option<i16>,
    pub api_code: Option<i64>,
    pub api_message: Option<String>,
    pub request_id: Option<String>,
    pub attempt: i16,
    pub credits: i16,
    pub body_json: Option<String>,
    pub body_text: Option<String>,
    pub warnings: Vec<String>,
    pub booked: Booked,
    pub rows: Arc<Normalized>,
    pub lease: Option<Uuid>,
    pub jitter: f64,
}

impl Answer {
    /// The answer behind `record`, or None when it cannot join a group: it is not a success, or
    /// no `pending` row was booked for it (a test or tool writing without the quota).
    #[must_use]
    pub fn of(
        record: &FetchRecord<'_>,
        rows: Arc<Normalized>,
        lease: Option<Uuid>,
        jitter: f64,
    ) -> Option<Self> {
        if record.outcome != Outcome::Ok || record.error.is_some() {
            return None;
        }
        Some(Self {
            clip_id: record.clip_id.to_owned(),
            region: record.region.to_owned(),
            period: record.period,
            provider: record.provider,
            requested_at: record.requested_at,
            duration_ms: record.duration_ms,
            http_status: record.http_status,
            api_code: record.api_code,
            api_message: record.api_message.map(str::to_owned),
            request_id: record.request_id.map(str::to_owned),
            attempt: record.attempt,
            credits: record.credits,
            body_json: record.body_json.map(str::to_owned),
            body_text: record.body_text.clone(),
            warnings: record.warnings.clone(),
            booked: record.booked?,
            rows,
            lease,
            jitter,
        })
    }
}

impl Answer {
    /// The `fetches` row, for writing the answer alone.
    #[must_use]
    pub fn record(&self) -> FetchRecord<'_> {
        FetchRecord {
            duration_ms: self.duration_ms,
            http_status: self.http_status,
            api_code: self.api_code,
            api_message: self.api_message.as_deref(),
            request_id: self.request_id.as_deref(),
            attempt: self.attempt,
            credits: self.credits,
            body_json: self.body_json.as_deref(),
            body_text: self.body_text.clone(),
            warnings: self.warnings.clone(),
            booked: Some(self.booked),
            ..FetchRecord::new(
                &self.clip_id,
                &self.region,
                self.period,
                self.provider,
                self.requested_at,
                Outcome::Ok,
            )
        }
    }
}

/// Writes `answers` (at most one per pair, one provider) in one transaction. On success, what
/// each stored, in order; on any error nothing of any of them is written.
pub async fn record_group(db: &PgPool, answers: &[&Answer]) -> Result<Vec<Written>, StoreError> {
    let mut tx = db.begin().await?;
    let pairs: Vec<PairSteps> = answers
        .iter()
        .map(|a| PairSteps {
            clip_id: a.clip_id.clone(),
            region: a.region.clone(),
            steps: vec![a.booked.fetch_id],
        })
        .collect();
    rebuild::lock_pairs(&mut tx, &pairs).await?;
    let lost = complete_attempts(&mut tx, answers).await?;
    let batch: Vec<Replayed<'_>> = answers
        .iter()
        .map(|a| Replayed {
            fetch_id: a.booked.fetch_id,
            clip_id: &a.clip_id,
            region: &a.region,
            period: a.period,
            observed_at: a.requested_at,
            rows: &a.rows,
        })
        .collect();
    bulk::insert(&mut tx, &batch).await?;
    rebuild::restitch_written(&mut tx, &pairs).await?;
    tx.commit().await?;
    Ok(answers
        .iter()
        .zip(lost)
        .map(|(a, lease_lost)| Written {
            fetch_id: a.booked.fetch_id,
            trend_points: len(a.rows.trend.len()),
            countries: len(a.rows.countries.len()),
            interests: len(a.rows.interests.len()),
            lease_lost,
        })
        .collect())
}

fn len(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Completes every answer's `pending` row and does the watchlist bookkeeping of those whose
/// lease is still theirs, in one statement. Returns, per answer, whether its lease was lost.
/// An attempt that is no longer `pending` (or `abandoned`) fails the group: its lone write
/// decides what it is.
async fn complete_attempts(
    conn: &mut sqlx::PgConnection,
    answers: &[&Answer],
) -> Result<Vec<bool>, StoreError> {
    let col = |f: fn(&Answer) -> Option<&str>| -> Vec<Option<&str>> {
        answers.iter().map(|a| f(a)).collect()
    };
    let ids: Vec<i64> = answers.iter().map(|a| a.booked.fetch_id).collect();
    let clips: Vec<&str> = answers.iter().map(|a| a.clip_id.as_str()).collect();
    let regions: Vec<&str> = answers.iter().map(|a| a.region.as_str()).collect();
    let leases: Vec<Option<Uuid>> = answers.iter().map(|a| a.lease).collect();
    let requested: Vec<DateTime<Utc>> = answers.iter().map(|a| a.requested_at).collect();
    let durations: Vec<i32> = answers.iter().map(|a| a.duration_ms).collect();
    let statuses: Vec<Option<i16>> = answers.iter().map(|a| a.http_status).collect();
    let codes: Vec<Option<i64>> = answers.iter().map(|a| a.api_code).collect();
    let tries: Vec<i16> = answers.iter().map(|a| a.attempt).collect();
    let credits: Vec<i16> = answers.iter().map(|a| a.credits).collect();
    // A list per answer cannot ride in a Postgres array of arrays (they must be rectangular):
    // each travels as a JSON array.
    let warnings: Vec<Option<String>> = answers
        .iter()
        .map(|a| {
            (!a.warnings.is_empty()).then(|| serde_json::to_string(&a.warnings).unwrap_or_default())
        })
        .collect();
    let jitters: Vec<f64> = answers.iter().map(|a| a.jitter).collect();
    let providers: Vec<&str> = answers.iter().map(|a| a.provider.as_str()).collect();
    let rows = sqlx::query!(
        r#"
WITH u AS (
    SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[],
                         $6::int4[], $7::int2[], $8::int8[], $9::text[], $10::text[], $11::int2[],
                         $12::int2[], $13::text[], $14::text[], $15::text[], $16::float8[])
        AS u(id, clip_id, region, lease, requested_at, duration_ms, http_status, api_code,
             api_message, request_id, attempt, credits, body_json, body_text, warnings, jitter)
),
w AS (
    -- The lone write's bookkeeping (store/ingest.rs), only while the answer's lease is ours.
    UPDATE watchlist wl SET
        last_polled_at = u.requested_at, last_success_at = u.requested_at,
        consecutive_failures = 0, not_found_count = 0, last_error = NULL,
        next_due_at = now() + wl.poll_interval * (1 + u.jitter * (2 * random() - 1)),
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
    FROM u
    WHERE wl.clip_id = u.clip_id AND wl.region = u.region AND wl.lease_token = u.lease
    RETURNING u.id
),
pq AS (
    -- A provider that answers has working credentials again.
    UPDATE provider_quota SET auth_failed_at = NULL, auth_error = NULL
    WHERE provider = ANY($17::text[]) AND auth_failed_at IS NOT NULL
    RETURNING 1
),
done AS (
    UPDATE fetches f SET
        requested_at = u.requested_at, duration_ms = u.duration_ms, http_status = u.http_status,
        outcome = 'ok', error = NULL, api_code = u.api_code, api_message = u.api_message,
        request_id = u.request_id, attempt = u.attempt, credits = u.credits,
        body_json = u.body_json::jsonb, body_text = u.body_text,
        warnings = CASE WHEN u.warnings IS NULL THEN NULL
                        ELSE ARRAY(SELECT jsonb_array_elements_text(u.warnings::jsonb)) END,
        lease_lost = u.lease IS NOT NULL AND u.id NOT IN (SELECT id FROM w)
    FROM u
    WHERE f.id = u.id AND f.outcome IN ('pending', 'abandoned')
    RETURNING f.id, f.lease_lost
)
SELECT id AS "id!", lease_lost AS "lease_lost!" FROM done
"#,
        &ids,
        &clips as _,
        &regions as _,
        &leases as _,
        &requested,
        &durations,
        &statuses as _,
        &codes as _,
        &col(|a| a.api_message.as_deref()) as _,
        &col(|a| a.request_id.as_deref()) as _,
        &tries,
        &credits,
        &col(|a| a.body_json.as_deref()) as _,
        &col(|a| a.body_text.as_deref()) as _,
        &warnings as _,
        &jitters,
        &providers as _,
    )
    .fetch_all(&mut *conn)
    .await?;
    ids.iter()
        .map(|id| {
            rows.iter()
                .find(|r| r.id == *id)
                .map(|r| r.lease_lost)
                .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
        })
        .collect()
}
