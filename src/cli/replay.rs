//! `soundtrend replay`: rebuilds the derived tables from the raw bodies archived in `fetches`,
//! without calling any API. Idempotent: replaying twice leaves the tables as one replay does.
//!
//! Bodies are re-validated with today's rules (the live parser and normalizer): an `ok` fetch that
//! no longer passes becomes `invalid_payload` (its derived rows go), and with `retry_invalid` an
//! `invalid_payload` fetch that passes now becomes `ok` and gets its rows.
//!
//! It is a bulk load in two passes:
//! 1. **Rows.** The archive is read in batches of `batch_size` fetches (the next batch is read
//!    while this one is written), normalized on every core, and each batch is written in one
//!    transaction: by `COPY` and set-based upserts into tables that hold nothing of its fetches,
//!    or, over rows its fetches derived before, by `COPY` into staging tables and a set-based merge
//!    that rewrites only the rows that differ ([`crate::store::bulk`]).
//!    Then the audience lists no snapshot names any more (today's rules derive other lists, or
//!    a body is now invalid) are deleted ([`bulk::delete_unreferenced_lists`]).
//! 2. **Index.** Every pair a replayed fetch belongs to is re-stitched once, in chunks of pairs,
//!    leaving the very rows (values and `changed_by`) that re-stitching after each fetch in turn
//!    would ([`crate::store::rebuild`]).
//!
//! A crash between batches leaves every batch all-or-nothing and the index of some pairs behind
//! their rows until the next replay (which is idempotent) or the pair's next poll.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::domain::{ClipId, Region};
use crate::normalize::{normalize, Normalized, Observation};
use crate::provider::parse_response;
use crate::provider::Outcome;
use crate::store::archive::{self, ArchiveFilter, Archived};
use crate::store::bulk::{self, BulkWritten, Replayed};
use crate::store::is_rolled_back_to_retry;
use crate::store::rebuild::{self, PairSteps};

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
    /// Rows actually inserted, updated or deleted (see [`BulkWritten::changed`]): 0 when the
    /// stored rows were already what today's rules derive.
    pub changed: u64,
    /// Archived bodies that do not normalize (reported with their fetch id).
    pub skipped: u64,
    /// `ok` fetches that today's rules refuse: now `invalid_payload`.
    pub invalidated: u64,
    /// `invalid_payload` fetches that today's rules accept: now `ok` (with `retry_invalid`).
    pub revived: u64,
    /// (clip, region) pairs whose index was re-stitched.
    pub pairs: u64,
    /// `trend_index` rows inserted, changed or deleted by the re-stitch.
    pub index_rows: u64,
    /// Audience-list entries no snapshot names any more, deleted after the rows pass.
    pub orphan_list_rows: u64,
    /// Time spent in each pass: the rows, then the index.
    pub rows_pass: Duration,
    pub index_pass: Duration,
}

impl ReplaySummary {
    fn add(&mut self, o: &Self) {
        self.fetches += o.fetches;
        self.rows += o.rows;
        self.changed += o.changed;
        self.skipped += o.skipped;
        self.invalidated += o.invalidated;
        self.revived += o.revived;
    }
}

/// Connections writing batches at once.
const WRITERS: usize = 2;

/// The smallest batch a replay splits into to keep its writers busy (a `--batch` below it stays).
const MIN_BATCH: i64 = 500;

/// Times a batch rolled back for a deadlock is written again before the replay stops.
const DEADLOCK_RETRIES: u64 = 5;

/// Pairs re-stitched per transaction in the index pass.
const PAIRS_PER_CHUNK: usize = 500;

pub async fn replay(
    pool: &PgPool,
    filter: &ReplayFilter,
    batch_size: i64,
    progress: bool,
) -> anyhow::Result<ReplaySummary> {
    let started = Instant::now();
    let total = archive::count(pool, &archive_filter(filter)).await?;
    // The merges join each batch with the tables it writes; they plan well only on statistics.
    let analyzed = bulk::analyze_stale(pool).await?;
    if !analyzed.is_empty() {
        info!(tables = ?analyzed, "Gathered planner statistics before the replay.");
    }
    // A small replay in one batch would leave a writer and the reader idle: smaller batches so
    // that every writer has two, but not below MIN_BATCH (per-batch costs).
    let parts = 2 * WRITERS as i64;
    let per_writer = ((total + parts - 1) / parts).max(MIN_BATCH);
    let batch_size = batch_size.min(per_writer);
    let bar = Arc::new(Mutex::new(Progress::new(
        progress,
        "replay",
        "fetches",
        total.try_into().unwrap_or(0),
    )));

    // The reader reads and normalizes batches ahead; WRITERS connections write them, so the
    // database works on as many cores as it has while the next batches are parsed.
    let (tx, batches) = mpsc::channel::<anyhow::Result<NormalizedBatch>>(WRITERS);
    let reader = tokio::spawn(read_archive(pool.clone(), filter.clone(), batch_size, tx));
    let batches = Arc::new(tokio::sync::Mutex::new(batches));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        writers.spawn(write_batches(
            pool.clone(),
            Arc::clone(&batches),
            Arc::clone(&bar),
        ));
    }
    let mut summary = ReplaySummary::default();
    while let Some(done) = writers.join_next().await {
        match done.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(part) => summary.add(&part),
            Err(e) => {
                writers.abort_all();
                reader.abort();
                return Err(e);
            }
        }
    }
    let steps = reader.await??;
    lock(&bar).finish();
    // Lists the old rules derived and today's do not (or whose snapshot went): no view shows
    // them. One anti-join over the snapshots per list table, while live polls wait (see the
    // function). Every replay runs it, so lists an interrupted replay left go at the next one.
    let cleanup = Instant::now();
    let (countries, interests) = bulk::delete_unreferenced_lists(pool)
        .await
        .context("deleting the audience lists no snapshot names any more")?;
    summary.orphan_list_rows = countries + interests;
    info!(
        rows = summary.orphan_list_rows,
        ms = cleanup.elapsed().as_millis() as u64,
        "Deleted the audience-list rows no snapshot names any more."
    );
    summary.rows_pass = started.elapsed();

    // Pass 2: every touched pair once, in a fixed order.
    let mut pairs: Vec<PairSteps> = steps
        .into_iter()
        .map(|((clip_id, region), steps)| PairSteps {
            clip_id,
            region,
            steps,
        })
        .collect();
    pairs.sort_by(|a, b| (&a.clip_id, &a.region).cmp(&(&b.clip_id, &b.region)));
    let mut bar = Progress::new(progress, "re-stitch", "pairs", pairs.len() as u64);
    // Chunks hold distinct pairs and take their locks in key order: they can run side by side.
    let mut chunks = futures_util::stream::iter(pairs.chunks(PAIRS_PER_CHUNK))
        .map(|chunk| async move {
            let mut t = pool.begin().await?;
            let changed = rebuild::rebuild_pairs(&mut t, chunk).await?;
            t.commit().await?;
            Ok::<_, sqlx::Error>((chunk.len() as u64, changed))
        })
        .buffer_unordered(WRITERS);
    while let Some(done) = chunks.next().await {
        let (pairs, changed) = done.context("re-stitching the replayed pairs")?;
        summary.index_rows += changed;
        summary.pairs += pairs;
        bar.add(pairs);
    }
    bar.finish();
    summary.index_pass = started.elapsed().saturating_sub(summary.rows_pass);
    Ok(summary)
}

/// Takes normalized batches off the queue and writes each in one transaction, until the queue
/// is empty and closed. Returns what it wrote.
async fn write_batches(
    pool: PgPool,
    batches: Arc<tokio::sync::Mutex<mpsc::Receiver<anyhow::Result<NormalizedBatch>>>>,
    bar: Arc<Mutex<Progress>>,
) -> anyhow::Result<ReplaySummary> {
    let mut summary = ReplaySummary::default();
    let mut conn = pool.acquire().await?;
    loop {
        let next = batches.lock().await.recv().await;
        let Some(batch) = next else {
            return Ok(summary);
        };
        let (batch, rows) = batch?;
        let mut ok = Vec::with_capacity(batch.len());
        let mut relabel = Vec::new();
        for (a, rows) in batch.iter().zip(&rows) {
            match rows {
                Ok(rows) => {
                    ok.push(Replayed {
                        fetch_id: a.id,
                        clip_id: &a.clip_id,
                        region: &a.region,
                        period: a.period.days(),
                        observed_at: a.requested_at,
                        rows,
                    });
                    if a.outcome != "ok" {
                        relabel.push((a.id, Outcome::Ok, None));
                        summary.revived += 1;
                    }
                }
                Err(reason) => {
                    summary.skipped += 1;
                    warn!(fetch_id = a.id, %reason, "Skipped an archived body that does not normalize.");
                    if a.outcome == "ok" {
                        let why = format!("invalid payload (re-validated by replay): {reason}");
                        relabel.push((a.id, Outcome::InvalidPayload, Some(why)));
                        summary.invalidated += 1;
                    }
                }
            }
        }
        // A batch none of whose fetches has rows yet is loaded by COPY; one with rows is merged
        // over them. Should a derived table hold rows of a fetch without a snapshot after all
        // (hand-edited tables), the load meets them as a duplicate key and the batch is merged.
        // Replay takes no pair locks (thousands per batch would exhaust the lock table), so a
        // daemon polling the same pairs can deadlock with it on a sound or a daily point:
        // Postgres rolls one transaction back whole, and a batch it picks is written again.
        let (mut merge, mut deadlocks) = (false, 0);
        let written = loop {
            match write_batch(&mut conn, &batch, &ok, &relabel, merge).await {
                Err(e) if !merge && is_unique_violation(&e) => {
                    warn!(error = %e, "Derived rows without a snapshot; merging this batch over every table.");
                    merge = true;
                }
                Err(e) if is_rolled_back_to_retry(&e) && deadlocks < DEADLOCK_RETRIES => {
                    deadlocks += 1;
                    warn!(error = %e, attempt = deadlocks, "A batch was rolled back (deadlock with a live write); writing it again.");
                    tokio::time::sleep(Duration::from_millis(50 * deadlocks)).await;
                }
                other => break other,
            }
        }
        .with_context(|| {
            format!("writing fetches {}..={}", batch[0].id, batch[batch.len() - 1].id)
        })?;
        summary.fetches += ok.len() as u64;
        summary.rows += i64::try_from(written.rows()).unwrap_or(i64::MAX);
        summary.changed += written.changed;
        lock(&bar).add(batch.len() as u64);
    }
}

/// One batch in one transaction: its rows loaded into empty tables, or merged over the rows its
/// fetches have (`merge`: always), outcomes re-labelled.
async fn write_batch(
    conn: &mut PgConnection,
    batch: &[Archived],
    ok: &[Replayed<'_>],
    relabel: &[(i64, Outcome, Option<String>)],
    merge: bool,
) -> Result<BulkWritten, sqlx::Error> {
    let mut t = sqlx::Connection::begin(&mut *conn).await?;
    let written = if merge || archive::any_has_rows(&mut t, batch).await? {
        bulk::merge(&mut t, ok, &archive::keys(batch)).await?
    } else {
        bulk::write(&mut t, ok).await?
    };
    bulk::set_outcomes(&mut t, relabel).await?;
    t.commit().await?;
    Ok(written)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

fn archive_filter(f: &ReplayFilter) -> ArchiveFilter<'_> {
    ArchiveFilter {
        since: f.since,
        clip_id: f.clip_id.as_deref(),
        region: f.region.as_deref(),
        retry_invalid: f.retry_invalid,
    }
}

/// A batch of archived answers and what each normalizes to (or why it does not).
type NormalizedBatch = (Vec<Archived>, Vec<Result<Normalized, String>>);

/// The fetches replayed for each (clip, region), in id order: the steps its re-stitch replays.
type Steps = HashMap<(String, String), Vec<i64>>;

/// Reads the archive in id order, `batch_size` fetches at a time, normalizes each batch on every
/// core, and sends it to `out`. Returns the fetches read, per pair.
async fn read_archive(
    pool: PgPool,
    filter: ReplayFilter,
    batch_size: i64,
    out: mpsc::Sender<anyhow::Result<NormalizedBatch>>,
) -> anyhow::Result<Steps> {
    let filter = archive_filter(&filter);
    let mut steps = Steps::new();
    let mut after = 0i64;
    loop {
        let batch = archive::batch(&pool, &filter, after, batch_size).await;
        let batch = match batch {
            Ok(b) if b.is_empty() => return Ok(steps),
            Ok(b) => b,
            Err(e) => {
                let _ = out.send(Err(e.into())).await;
                return Ok(steps);
            }
        };
        after = batch[batch.len() - 1].id;
        for a in &batch {
            steps
                .entry((a.clip_id.clone(), a.region.clone()))
                .or_default()
                .push(a.id);
        }
        let normalized = tokio::task::spawn_blocking(move || {
            let rows = normalize_all(&batch);
            (batch, rows)
        })
        .await?;
        if out.send(Ok(normalized)).await.is_err() {
            // The writers stopped (their error is the one reported).
            return Ok(steps);
        }
    }
}

/// Normalizes a batch on every core, in order.
fn normalize_all(batch: &[Archived]) -> Vec<Result<Normalized, String>> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let per = batch.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = batch
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(rows_of).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("normalizing does not panic"))
            .collect()
    })
}

/// An archived body through today's parser and normalizer, exactly as a live answer goes.
fn rows_of(a: &Archived) -> Result<Normalized, String> {
    let obs = Observation {
        clip_id: ClipId::parse(&a.clip_id).map_err(|e| e.to_string())?,
        region: Region::parse(&a.region).map_err(|e| e.to_string())?,
        period: a.period,
        observed_at: a.requested_at,
    };
    let detail = parse_response(200, a.body.as_bytes()).map_err(|e| e.to_string())?;
    normalize(&detail, &obs).map_err(|e| e.to_string())
}

/// A progress bar with rate and ETA on a terminal; a log line every few seconds otherwise.
struct Progress {
    bar: ProgressBar,
    what: &'static str,
    unit: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    logged: Instant,
    log: bool,
}

impl Progress {
    fn new(enabled: bool, what: &'static str, unit: &'static str, total: u64) -> Self {
        let terminal = enabled && std::io::stderr().is_terminal();
        let bar = if terminal {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} {unit}  {{per_sec}}  eta {{eta}}"
                ))
                .expect("template")
                .progress_chars("=> "),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        let now = Instant::now();
        Self {
            bar,
            what,
            unit,
            total,
            done: 0,
            started: now,
            logged: now,
            log: enabled && !terminal,
        }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        self.bar.inc(n);
        if self.log && self.logged.elapsed() >= LOG_EVERY {
            self.logged = Instant::now();
            let secs = self.started.elapsed().as_secs_f64();
            let rate = self.done as f64 / secs.max(1e-9);
            let eta = (self.total.saturating_sub(self.done)) as f64 / rate.max(1e-9);
            info!(
                what = self.what,
                done = self.done,
                total = self.total,
                rate = format!("{rate:.0} {}/s", self.unit),
                eta = format!("{eta:.0}s"),
                "Replay progress."
            );
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

const LOG_EVERY: Duration = Duration::from_secs(5);

/// The bar stays usable after a panic elsewhere (it only counts).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
