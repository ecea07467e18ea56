//! Reading the raw-body archive back (`soundtrend replay`): which archived answers a replay
//! covers, in id order, and clearing what a batch of them derived before it is rebuilt.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::domain::Period;
use crate::provider::ProviderKind;

/// Which archived answers a replay covers.
#[derive(Debug, Clone, Default)]
pub struct ArchiveFilter<'a> {
    pub since: Option<DateTime<Utc>>,
    pub clip_id: Option<&'a str>,
    pub region: Option<&'a str>,
    /// Also bodies stored as `invalid_payload` (after a rule change).
    pub retry_invalid: bool,
}

/// One archived answer with its JSON body. `clip_id` and `region` stay text: unlike the
/// watchlist's, the archive's columns carry no CHECK, and replay reports a row it cannot parse
/// instead of stopping on it.
#[derive(Debug)]
pub struct Archived {
    pub id: i64,
    pub clip_id: String,
    pub region: String,
    pub period: Period,
    pub provider: ProviderKind,
    pub requested_at: DateTime<Utc>,
    pub outcome: String,
    /// The archived JSON body, as text: parsed again by the live parser.
    pub body: String,
}

/// How many archived answers `filter` covers (for the progress bar).
pub async fn count(db: impl PgExecutor<'_>, f: &ArchiveFilter<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM fetches
        WHERE (outcome = 'ok' OR ($4 AND outcome = 'invalid_payload'))
          AND body_json IS NOT NULL
          AND ($1::timestamptz IS NULL OR requested_at >= $1)
          AND ($2::text IS NULL OR clip_id = $2)
          AND ($3::text IS NULL OR region = $3)"#,
        f.since,
        f.clip_id,
        f.region,
        f.retry_invalid,
    )
    .fetch_one(db)
    .await
}

/// The next `limit` archived answers after fetch id `after`, in id order.
pub async fn batch(
    db: impl PgExecutor<'_>,
    f: &ArchiveFilter<'_>,
    after: i64,
    limit: i64,
) -> Result<Vec<Archived>, sqlx::Error> {
    sqlx::query_as!(
        Archived,
        r#"SELECT id, clip_id, region, period AS "period: Period", provider AS "provider: ProviderKind",
                  requested_at, outcome,
                  body_json::text AS "body!"
        FROM fetches
        WHERE (outcome = 'ok' OR ($4 AND outcome = 'invalid_payload'))
          AND body_json IS NOT NULL
          AND ($1::timestamptz IS NULL OR requested_at >= $1)
          AND ($2::text IS NULL OR clip_id = $2)
          AND ($3::text IS NULL OR region = $3)
          AND id > $5
        ORDER BY id LIMIT $6"#,
        f.since,
        f.clip_id,
        f.region,
        f.retry_invalid,
        after,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Which of these fetches have derived rows. Every write of a fetch's rows (a live poll's one
/// statement, a replay's batch) stores its snapshot with them and every removal removes them all,
/// so a fetch without a `sound_snapshots` row has none: one probe per fetch instead of one per
/// derived table and partition.
pub async fn with_rows(
    conn: &mut PgConnection,
    batch: &[Archived],
) -> Result<Vec<i64>, sqlx::Error> {
    let ids: Vec<i64> = batch.iter().map(|a| a.id).collect();
    sqlx::query_scalar!(
        "SELECT fetch_id FROM sound_snapshots WHERE fetch_id = ANY($1)",
        &ids
    )
    .fetch_all(conn)
    .await
}

/// Deletes every derived row of the fetches of `batch` whose id is in `ids`, so rows a fetch no
/// longer produces go too and a replay equals a fresh ingest. Audience lists are kept: they are
/// the pair's, keyed by content, and the rewritten snapshot names the same ones again unless the
/// normalizer now reads the answer differently (then the old list stays, unreferenced).
pub async fn clear_derived(
    conn: &mut PgConnection,
    batch: &[Archived],
    ids: &[i64],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let listed: std::collections::HashSet<i64> = ids.iter().copied().collect();
    let fetches: Vec<&Archived> = batch.iter().filter(|a| listed.contains(&a.id)).collect();
    let ids: Vec<i64> = fetches.iter().map(|a| a.id).collect();
    let clips: Vec<String> = fetches.iter().map(|a| a.clip_id.clone()).collect();
    let regions: Vec<String> = fetches.iter().map(|a| a.region.clone()).collect();
    sqlx::query!(
        "WITH s AS (DELETE FROM sound_snapshots WHERE fetch_id = ANY($1)),
              t AS (DELETE FROM trend_points WHERE fetch_id = ANY($1)),
              o AS (DELETE FROM trend_observations WHERE fetch_id = ANY($1))
         -- trend_windows is keyed by pair first: delete by the whole key.
         DELETE FROM trend_windows w
         USING UNNEST($1::int8[], $2::text[], $3::text[]) AS u(id, clip_id, region)
         WHERE w.clip_id = u.clip_id AND w.region = u.region AND w.fetch_id = u.id",
        &ids,
        &clips,
        &regions,
    )
    .execute(conn)
    .await?;
    Ok(())
}
