//! The `fetches` table: one row per API attempt with its raw body.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::provider::{Attempt, Outcome, ProviderError, ProviderKind};

/// The columns of a `fetches` row, borrowed from an attempt.
#[derive(Debug)]
pub struct FetchRecord<'a> {
    pub clip_id: &'a str,
    pub region: &'a str,
    pub period: i16,
    pub provider: ProviderKind,
    pub requested_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub http_status: Option<i16>,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub api_code: Option<i64>,
    pub api_message: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub attempt: i16,
    pub credits: i16,
    pub body_json: Option<&'a str>,
    pub body_text: Option<String>,
    /// What validation dropped from an otherwise valid response.
    pub warnings: Vec<String>,
    /// The `pending` row the quota grant inserted when it booked this attempt's credits; the
    /// write completes it. None: a row of its own is inserted (tests, tools).
    pub booked: Option<Booked>,
}

/// An attempt whose credits were booked: its pending row and the ledger day they went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Booked {
    pub fetch_id: i64,
    pub day: NaiveDate,
}

/// What writing a fetch row found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub fetch_id: i64,
    /// False when the entry's lease was no longer the one given (re-claimed, or the entry was
    /// removed); the row then says `lease_lost`.
    pub lease_held: bool,
}

/// Which poll an attempt belongs to.
#[derive(Debug, Clone, Copy)]
pub struct AttemptContext<'a> {
    pub clip_id: &'a str,
    pub region: &'a str,
    pub period: i16,
    pub provider: ProviderKind,
    /// 1 for the first try of a poll.
    pub try_number: u32,
    pub credits: u32,
}

impl<'a> FetchRecord<'a> {
    /// A row with only what identifies the attempt; everything else empty (first try, no status,
    /// no body, no credits). Callers set the rest with struct-update syntax.
    #[must_use]
    pub fn new(
        clip_id: &'a str,
        region: &'a str,
        period: i16,
        provider: ProviderKind,
        requested_at: DateTime<Utc>,
        outcome: Outcome,
    ) -> Self {
        FetchRecord {
            clip_id,
            region,
            period,
            provider,
            requested_at,
            duration_ms: 0,
            http_status: None,
            outcome,
            error: None,
            api_code: None,
            api_message: None,
            request_id: None,
            attempt: 1,
            credits: 0,
            body_json: None,
            body_text: None,
            warnings: Vec::new(),
            booked: None,
        }
    }

    /// The row for `attempt`; `error` overrides the attempt's own classification (a body that
    /// parsed but did not normalize is an invalid payload; one the database refused a store
    /// error, whose body is then kept as text so that this row at least can be written).
    pub fn from_attempt(
        attempt: &'a Attempt,
        ctx: AttemptContext<'a>,
        error: Option<&ProviderError>,
    ) -> Self {
        let AttemptContext {
            clip_id,
            region,
            period,
            provider,
            try_number,
            credits,
        } = ctx;
        let error = error.or(attempt.result.as_ref().err());
        let outcome = error.map_or(Outcome::Ok, ProviderError::outcome);
        // The ledger's rule: an attempt costs its price when it reached the provider, whatever
        // came back, and nothing when it never did.
        let reached = error.is_none_or(ProviderError::reached_provider);
        let (body_json, body_text) = if outcome == Outcome::StoreError {
            (None, attempt.body.as_deref().map(body_as_text))
        } else {
            split_body(attempt.body.as_deref())
        };
        FetchRecord {
            clip_id,
            region,
            period,
            provider,
            requested_at: attempt.requested_at,
            duration_ms: i32::try_from(attempt.duration.as_millis()).unwrap_or(i32::MAX),
            http_status: attempt.http_status.and_then(|s| i16::try_from(s).ok()),
            outcome,
            error: error.map(ToString::to_string),
            api_code: attempt.api_code,
            api_message: attempt.api_message.as_deref(),
            request_id: attempt.request_id.as_deref(),
            attempt: i16::try_from(try_number).unwrap_or(i16::MAX),
            credits: if reached {
                i16::try_from(credits).unwrap_or(i16::MAX)
            } else {
                0
            },
            body_json,
            body_text,
            warnings: Vec::new(),
            booked: None,
        }
    }
}

/// JSON bodies go to `body_json` as they came; anything else to `body_text`. Postgres' jsonb
/// refuses `\u0000` and lone UTF-16 surrogates (`\ud800`), which JSON parsers accept, and text
/// refuses NUL bytes, so such bodies are kept as sanitized text.
fn split_body(body: Option<&[u8]>) -> (Option<&str>, Option<String>) {
    let Some(body) = body.filter(|b| !b.is_empty()) else {
        return (None, None);
    };
    if let Ok(text) = std::str::from_utf8(body) {
        let is_json = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
        if is_json && jsonb_accepts_escapes(text) {
            return (Some(text), None);
        }
    }
    (None, Some(body_as_text(body)))
}

/// Any bytes as text Postgres accepts: invalid UTF-8 and NUL become U+FFFD.
fn body_as_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).replace('\0', "\u{FFFD}")
}

/// False when a (valid) JSON text has a `\u` escape that jsonb refuses: `\u0000`, a low surrogate
/// without its high half, or a high surrogate not followed by a low one.
fn jsonb_accepts_escapes(text: &str) -> bool {
    let bytes = text.as_bytes();
    let hex = |at: usize| -> Option<u16> {
        let digits = bytes.get(at..at + 4)?;
        u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) != Some(&b'u') {
            i += 2; // `\\`, `\"`, `\n`: the escaped character is skipped with its backslash
            continue;
        }
        let Some(unit) = hex(i + 2) else { return false };
        match unit {
            0 | 0xDC00..=0xDFFF => return false,
            0xD800..=0xDBFF => {
                let low = (bytes.get(i + 6..i + 8) == Some(b"\\u".as_slice()))
                    .then(|| hex(i + 8))
                    .flatten();
                if !matches!(low, Some(0xDC00..=0xDFFF)) {
                    return false;
                }
                i += 12;
            }
            _ => i += 6,
        }
    }
    true
}

/// Writes an attempt's row: completes its `pending` row when the grant booked one (giving the
/// credits back to the ledger, in the same statement, when the request never reached the
/// provider), else inserts one. `lease` is the claim's token: the row records whether it was
/// still held, and the watchlist row stays locked until the caller's transaction ends, so the
/// caller's bookkeeping sees the same answer.
pub async fn record(
    db: impl PgExecutor<'_>,
    r: &FetchRecord<'_>,
    lease: Option<Uuid>,
) -> Result<Recorded, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH lease AS (
    SELECT 1 FROM watchlist WHERE clip_id = $1 AND region = $2 AND lease_token = $17
    FOR UPDATE
),
held AS (
    SELECT $17::uuid IS NULL OR EXISTS (SELECT 1 FROM lease) AS held
),
booked AS (
    SELECT credits FROM fetches WHERE id = $18
),
done AS (
    UPDATE fetches SET
        requested_at = $5, duration_ms = $6, http_status = $7, outcome = $8, error = $9,
        api_code = $10, api_message = $11, request_id = $12, attempt = $13, credits = $14,
        body_json = $15::text::jsonb, body_text = $16, warnings = $20,
        lease_lost = NOT (SELECT held FROM held)
    WHERE id = $18 AND outcome IN ('pending', 'abandoned')
    RETURNING id
),
refund AS (
    UPDATE credit_usage cu SET
        credits_used = GREATEST(cu.credits_used - b.credits, 0),
        requests = GREATEST(cu.requests - 1, 0)
    FROM booked b
    WHERE cu.provider = $4 AND cu.day = $19 AND $14 = 0 AND b.credits > 0
      AND EXISTS (SELECT 1 FROM done)
    RETURNING 1
),
fresh AS (
    INSERT INTO fetches (clip_id, region, period, provider, requested_at, duration_ms,
                         http_status, outcome, error, api_code, api_message, request_id,
                         attempt, credits, body_json, body_text, warnings, lease_lost)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::text::jsonb, $16, $20,
           NOT held
    FROM held WHERE $18::int8 IS NULL
    RETURNING id
)
SELECT f.id AS "id!", (SELECT held FROM held) AS "held!"
FROM (SELECT id FROM done UNION ALL SELECT id FROM fresh) f"#,
        r.clip_id,
        r.region,
        r.period,
        r.provider.as_str(),
        r.requested_at,
        r.duration_ms,
        r.http_status,
        r.outcome.as_str(),
        r.error.as_deref(),
        r.api_code,
        r.api_message,
        r.request_id,
        r.attempt,
        r.credits,
        r.body_json,
        r.body_text.as_deref(),
        lease,
        r.booked.map(|b| b.fetch_id),
        r.booked.map(|b| b.day),
        (!r.warnings.is_empty()).then_some(r.warnings.as_slice()) as _,
    )
    .fetch_one(db)
    .await?;
    Ok(Recorded {
        fetch_id: row.id,
        lease_held: row.held,
    })
}

/// Turns `pending` attempts older than `older_than` into `abandoned`: their process died with the
/// request in flight. Their credits stay booked (the provider may have answered and billed).
pub async fn abandon_orphans(
    db: impl PgExecutor<'_>,
    older_than: std::time::Duration,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE fetches SET outcome = 'abandoned',
             error = 'the process ended with the request in flight; the provider may have answered'
         WHERE outcome = 'pending' AND requested_at < now() - make_interval(secs => $1)",
        older_than.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Retention: drops raw bodies older than `days` days in batches; fetch rows and derived data
/// stay. Returns how many bodies were pruned.
pub async fn prune_bodies(pool: &sqlx::PgPool, days: u32) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let done = sqlx::query!(
            "UPDATE fetches SET body_json = NULL, body_text = NULL, body_pruned_at = now()
             WHERE id IN (
                 SELECT id FROM fetches
                 WHERE requested_at < now() - make_interval(days => $1)
                   AND body_pruned_at IS NULL
                   AND (body_json IS NOT NULL OR body_text IS NOT NULL)
                 LIMIT 5000)",
            i32::try_from(days).unwrap_or(i32::MAX),
        )
        .execute(pool)
        .await?;
        total += done.rows_affected();
        if done.rows_affected() < 5000 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_split_into_json_and_text() {
        assert_eq!(split_body(Some(b"{\"a\":1}")), (Some("{\"a\":1}"), None));
        assert_eq!(split_body(Some(b"{\"a\":")), (None, Some("{\"a\":".into())));
        assert_eq!(split_body(Some(b"<html>")), (None, Some("<html>".into())));
        assert_eq!(split_body(Some(b"\"a\\u0000\"")).0, None);
        assert_eq!(split_body(Some(b"a\0b")).1.as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(split_body(None), (None, None));
    }

    #[test]
    fn escapes_jsonb_refuses_send_the_body_to_text() {
        for refused in [
            r#""\ud800""#,
            r#""a\udc00b""#,
            r#""\ud83dx""#,
            r#""\u0000""#,
            r#"{"t":"\ud800\u0041"}"#,
        ] {
            let (json, text) = split_body(Some(refused.as_bytes()));
            assert_eq!(json, None, "{refused}");
            assert_eq!(text.as_deref(), Some(refused));
        }
        for accepted in [r#""\ud83d\ude00""#, r#""\\ud800""#, r#""\u00e9\n""#] {
            assert_eq!(split_body(Some(accepted.as_bytes())).0, Some(accepted));
        }
    }
}
