//! Reading the raw-body archive back (`soundtrend replay`): which archived answers a replay
//! covers, in id order, and clearing what a batch of them derived before it is rebuilt.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use super::bulk::FetchKeys;
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

/// Whether any of these fetches has derived rows. Every write of a fetch's rows (a live poll's one
/// statement, a replay's batch) stores its snapshot with them and every removal removes them all,
/// so a fetch without a `sound_snapshots` row has none: one probe per fetch instead of one per
/// derived table and partition. (Should a hand-edited table hold rows of a fetch without a
/// snapshot, the bulk load meets them as a duplicate key and replay merges the batch instead.)
pub async fn any_has_rows(
    conn: &mut PgConnection,
    batch: &[Archived],
) -> Result<bool, sqlx::Error> {
    let ids: Vec<i64> = batch.iter().map(|a| a.id).collect();
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT FROM sound_snapshots WHERE fetch_id = ANY($1)) AS "any!""#,
        &ids
    )
    .fetch_one(conn)
    .await
}

/// The keys of every fetch of `batch`, for [`super::bulk::merge`]: whatever rows they derived
/// before are compared with what they derive now.
#[must_use]
pub fn keys(batch: &[Archived]) -> FetchKeys {
    FetchKeys {
        ids: batch.iter().map(|a| a.id).collect(),
        clips: batch
            .iter()
            .map(|a| a.clip_id.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
    }
}
