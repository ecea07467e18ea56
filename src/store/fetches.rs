//! The `fetches` table: one row per API attempt with its raw body.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

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
            credits: i16::try_from(credits).unwrap_or(i16::MAX),
            body_json,
            body_text,
        }
    }
}

/// JSON bodies go to `body_json` as they came; anything else to `body_text`. Postgres' jsonb
/// refuses `\u0000` and lone UTF-16 surrogates (`\ud800`), which JSON parsers accept, and text
/// refuses NUL bytes, so such bodies are kept as sanitized text.
pub fn split_body(body: Option<&[u8]>) -> (Option<&str>, Option<String>) {
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
pub fn body_as_text(body: &[u8]) -> String {
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

/// Records a failed attempt (or a retry that will be followed by another try).
pub async fn insert(db: impl PgExecutor<'_>, r: &FetchRecord<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(concat!(
        "INSERT INTO fetches (clip_id, region, period, provider, requested_at, duration_ms, ",
        "http_status, outcome, error, api_code, api_message, request_id, attempt, credits, ",
        "body_json, body_text) ",
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::jsonb, $16) ",
        "RETURNING id"
    ))
    .bind(r.clip_id)
    .bind(r.region)
    .bind(r.period)
    .bind(r.provider.as_str())
    .bind(r.requested_at)
    .bind(r.duration_ms)
    .bind(r.http_status)
    .bind(r.outcome.as_str())
    .bind(r.error.as_deref())
    .bind(r.api_code)
    .bind(r.api_message)
    .bind(r.request_id)
    .bind(r.attempt)
    .bind(r.credits)
    .bind(r.body_json)
    .bind(r.body_text.as_deref())
    .fetch_one(db)
    .await
}

/// Retention: drops raw bodies older than `days` days in batches; fetch rows and derived data
/// stay. Returns how many bodies were pruned.
pub async fn prune_bodies(pool: &sqlx::PgPool, days: u32) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let done = sqlx::query(
            "UPDATE fetches SET body_json = NULL, body_text = NULL, body_pruned_at = now()
             WHERE id IN (
                 SELECT id FROM fetches
                 WHERE requested_at < now() - make_interval(days => $1)
                   AND body_pruned_at IS NULL
                   AND (body_json IS NOT NULL OR body_text IS NOT NULL)
                 LIMIT 5000)",
        )
        .bind(i32::try_from(days).unwrap_or(i32::MAX))
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
