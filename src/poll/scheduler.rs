//! The worker: claims due entries and runs polls with bounded concurrency. `soundtrend poll --due`
//! drains once; `soundtrend run` keeps going, woken by a UTC cron tick and by watchlist inserts.
//!
//! Due-ness lives in Postgres (`next_due_at`), never in memory, so restarts and extra instances
//! change nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::backoff::{self, Delays};
use super::instance::instance_name;
use super::jobs::{self, JobsConfig};
use super::maintenance::{create_partitions, maintain};
use super::summary::Summary;
use super::wake::listen_for_inserts;

use crate::config::Settings;
use crate::poll::{PollOutcome, Poller};
use crate::provider::ProviderKind;
use crate::store::{watchlist, StoreError};
use crate::telemetry::metrics as m;

/// The channel the watchlist triggers notify on.
pub const WATCHLIST_CHANNEL: &str = "soundtrend_watchlist";

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub owner: String,
    pub concurrency: usize,
    pub claim_batch: u32,
    pub lease_ttl: Duration,
    pub shutdown_grace: Duration,
    pub database_retry_max: Duration,
    /// The daemon's cron jobs (`run` only).
    pub jobs: JobsConfig,
    /// Keep every poll's latency in the summary (benchmarks); off for the daemon, whose memory
    /// must not grow with the number of polls.
    pub record_latencies: bool,
}

impl WorkerOptions {
    #[must_use]
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            owner: instance_name(&s.daemon.instance_name),
            concurrency: s.poll.concurrency,
            claim_batch: s.poll.claim_batch,
            lease_ttl: s.poll.lease_ttl,
            shutdown_grace: s.daemon.shutdown_grace,
            database_retry_max: s.daemon.database_retry_max,
            jobs: JobsConfig::from_settings(s),
            record_latencies: false,
        }
    }
}

pub struct Worker {
    poller: Arc<Poller>,
    opts: WorkerOptions,
    permits: Arc<Semaphore>,
    tasks: JoinSet<(Result<PollOutcome, StoreError>, Duration)>,
    /// Claimed entries waiting for a free slot, with the time they were claimed.
    queue: VecDeque<(watchlist::Claimed, Instant)>,
    /// The token polls see: cancelled on shutdown so they stop between attempts.
    cancel_for_tasks: CancellationToken,
    summary: Summary,
    /// When a provider that is out now may be used again (the daemon claims then).
    resume_at: Option<Instant>,
    /// When this worker last read the providers' shared state (see [`HEALTH_READ_EVERY`]).
    health_read_at: Option<Instant>,
}

impl Worker {
    #[must_use]
    pub fn new(poller: Arc<Poller>, opts: WorkerOptions) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(opts.concurrency)),
            poller,
            opts,
            tasks: JoinSet::new(),
            queue: VecDeque::new(),
            cancel_for_tasks: CancellationToken::new(),
            summary: Summary::default(),
            resume_at: None,
            health_read_at: None,
        }
    }

    #[must_use]
    pub fn owner(&self) -> &str {
        &self.opts.owner
    }

    fn pool(&self) -> &PgPool {
        self.poller.pool()
    }

    /// Polls every entry that is due now, then returns (`soundtrend poll --due`).
    pub async fn drain(mut self, cancel: &CancellationToken) -> anyhow::Result<Summary> {
        self.cancel_for_tasks = cancel.clone();
        loop {
            let claimed = self
                .claim(cancel)
                .await
                .context("cannot claim due watchlist entries")?;
            if claimed == 0 && self.tasks.is_empty() && self.queue.is_empty() {
                break;
            }
            if let Some(done) = self.tasks.join_next().await {
                self.finish(done);
            }
        }
        Ok(self.summary)
    }

    /// The daemon loop (`soundtrend run`): returns after `cancel` fires and in-flight polls were
    /// drained (or the grace period ran out and their leases were released).
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<Summary> {
        self.cancel_for_tasks = cancel.clone();
        let wake = Arc::new(Notify::new());
        let scheduler = jobs::start(
            self.pool().clone(),
            self.poller.clone(),
            &self.opts.jobs,
            wake.clone(),
        )
        .await?;
        let listener = tokio::spawn(listen_for_inserts(
            self.pool().clone(),
            wake.clone(),
            cancel.clone(),
        ));
        let providers: Vec<&str> = self.poller.providers().iter().map(|p| p.as_str()).collect();
        info!(owner = %self.opts.owner, providers = %providers.join(","), concurrency = self.opts.concurrency,
            "Worker started.");

        // While the database is unreachable: when to try claiming again, and the delays after.
        let mut db_down: Option<(Instant, Delays)> = None;
        // Fill the backlog gauges now rather than at the first maintenance tick.
        if let Err(e) = maintain(self.pool(), &self.poller, self.opts.jobs.raw_body_days).await {
            warn!(error = %e, "Maintenance failed; it runs again on its next schedule.");
        }
        if let Err(e) = create_partitions(self.pool()).await {
            warn!(error = %e, "The partition job failed; it runs again on its next schedule.");
        }
        wake.notify_one();
        loop {
            let retry_at = db_down.as_ref().map(|(at, _)| *at);
            let resume_at = self.resume_at;
            tokio::select! {
                () = cancel.cancelled() => break,
                () = wake.notified() => {}
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => self.finish(done),
                () = sleep_until_opt(retry_at), if retry_at.is_some() => {}
                // A provider comes back (a pause or the breaker's rest ends): claim at once
                // rather than at the next tick.
                () = sleep_until_opt(resume_at), if resume_at.is_some() => self.resume_at = None,
            }
            if matches!(db_down, Some((at, _)) if Instant::now() < at) {
                continue;
            }
            match self.claim(&cancel).await {
                Ok(_) => {
                    if db_down.take().is_some() {
                        info!("The database is reachable again; polling resumes.");
                    }
                }
                Err(e) if e.is_connection_error() => {
                    let mut delays = match db_down.take() {
                        None => {
                            warn!(error = %e, "The database is unreachable; pausing claims and retrying with backoff.");
                            backoff::database_wait(self.opts.database_retry_max).delays()
                        }
                        Some((_, delays)) => delays,
                    };
                    m::db_error();
                    let delay = delays.next().expect("backoff delays never end");
                    db_down = Some((Instant::now() + delay, delays));
                }
                Err(e) => {
                    m::db_error();
                    error!(error = %e, "Claiming due entries failed; retrying on the next tick.");
                }
            }
        }

        info!(
            in_flight = self.tasks.len(),
            grace_s = self.opts.shutdown_grace.as_secs_f64(),
            "Shutting down: no new claims; waiting for in-flight polls."
        );
        // Claimed but not started: their leases are released with the rest below.
        self.queue.clear();
        let grace = tokio::time::sleep(self.opts.shutdown_grace);
        tokio::pin!(grace);
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(done) = self.tasks.join_next() => self.finish(done),
                () = &mut grace => {
                    warn!(aborted = self.tasks.len(), "Grace period over; abandoning in-flight polls (their writes roll back).");
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                }
            }
        }
        let mut scheduler = scheduler;
        let _ = scheduler.shutdown().await;
        listener.abort();
        match watchlist::release_owner(self.pool(), &self.opts.owner).await {
            Ok(n) => info!(released = n, "Released unfinished leases; stopped."),
            Err(e) => warn!(error = %e, "Could not release leases; they expire by themselves."),
        }
        Ok(self.summary)
    }

    /// The providers this worker may claim work for. While every provider behaves, the shared
    /// state is read at most every [`HEALTH_READ_EVERY`] (a busy worker claims after every
    /// finished poll, and one more statement per response was a tenth of the write path); in
    /// between, the state as last read here. A failure, pause or refusal seen here, or no usable
    /// provider, reads it at once. What another instance saw meanwhile costs no request: the
    /// quota statement checks the provider's state before anything is sent.
    async fn usable_providers(&mut self) -> Result<Vec<ProviderKind>, StoreError> {
        let fresh = !self.poller.health_is_stale()
            && self
                .health_read_at
                .is_some_and(|t| t.elapsed() < HEALTH_READ_EVERY);
        if fresh {
            let usable = self.poller.usable_providers();
            if !usable.is_empty() {
                return Ok(usable);
            }
        }
        let usable = self.poller.refresh_health().await?;
        self.health_read_at = Some(Instant::now());
        Ok(usable)
    }

    /// Claims as many due entries as there are free poll slots and starts them. Returns how many
    /// were claimed.
    async fn claim(&mut self, cancel: &CancellationToken) -> Result<usize, StoreError> {
        let mut started = 0;
        // Which providers may take work now, as every instance sees it: entries that only an
        // unusable provider could poll are not claimed, and with none usable nothing is.
        let usable = self.usable_providers().await?;
        loop {
            if usable.is_empty() || cancel.is_cancelled() {
                // While no provider is usable the entries are due when the first one may be
                // again, so no instance claims them only to wait.
                let due_at = if usable.is_empty() {
                    if watchlist::any_due(self.pool()).await? {
                        self.summary.note_waiting(&self.poller);
                    }
                    let next = self.poller.next_usable_at();
                    self.resume_at = next.map(|t| {
                        let wait = (t - self.poller.clock().now()).to_std().unwrap_or_default();
                        Instant::now() + wait + RESUME_MARGIN
                    });
                    next
                } else {
                    None
                };
                self.give_back_queue(due_at).await?;
                return Ok(started);
            }
            started += self.start_queued().await?;
            let free = self.permits.available_permits();
            if free == 0 || !self.queue.is_empty() {
                return Ok(started);
            }
            // Claim a little ahead (up to two rounds of slots), so that a busy worker makes one
            // claim per batch instead of one per finished poll. Queued entries hold their lease
            // only briefly: `start_queued` gives back any that waited for half the lease.
            // Never more than the shared quota lets this instance send within half a lease.
            let want = u32::try_from(self.opts.concurrency * 2)
                .unwrap_or(u32::MAX)
                .min(self.opts.claim_batch)
                .max(
                    u32::try_from(free)
                        .unwrap_or(u32::MAX)
                        .min(self.opts.claim_batch),
                )
                .min(self.poller.requests_per_half_lease());
            let claimed = watchlist::claim_due(
                self.pool(),
                &self.opts.owner,
                want,
                self.opts.lease_ttl,
                &usable,
            )
            .await?;
            let n = claimed.len();
            let now = Instant::now();
            self.queue.extend(claimed.into_iter().map(|c| (c, now)));
            if n == 0 {
                return Ok(started);
            }
            started += self.start_queued().await?;
            if n < want as usize {
                return Ok(started);
            }
        }
    }

    /// Starts queued entries while poll slots are free. Returns how many started.
    async fn start_queued(&mut self) -> Result<usize, StoreError> {
        let mut started = 0;
        while self.permits.available_permits() > 0 {
            let Some((entry, claimed_at)) = self.queue.pop_front() else {
                break;
            };
            if claimed_at.elapsed() > self.opts.lease_ttl / 2 {
                self.release(&entry, None).await?;
                continue;
            }
            let permit = self
                .permits
                .clone()
                .try_acquire_owned()
                .expect("a permit is available");
            let poller = self.poller.clone();
            let cancel = self.cancel_for_tasks.clone();
            self.tasks.spawn(async move {
                let _permit = permit;
                let started = std::time::Instant::now();
                let outcome = poller.poll(&entry, None, &cancel).await;
                (outcome, started.elapsed())
            });
            started += 1;
        }
        Ok(started)
    }

    /// Releases every claimed entry that has not started (no usable provider, shutdown), due
    /// again at `due_at` (None: keeps its due time).
    async fn give_back_queue(
        &mut self,
        due_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), StoreError> {
        while let Some((entry, _)) = self.queue.pop_front() {
            self.release(&entry, due_at).await?;
        }
        Ok(())
    }

    async fn release(
        &self,
        entry: &watchlist::Claimed,
        due_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), StoreError> {
        self.poller
            .release(entry, due_at, &self.cancel_for_tasks)
            .await
    }

    fn finish(
        &mut self,
        done: Result<(Result<PollOutcome, StoreError>, Duration), tokio::task::JoinError>,
    ) {
        if let (true, Ok((_, latency))) = (self.opts.record_latencies, &done) {
            self.summary.latencies.push(*latency);
        }
        match done.map(|(outcome, _)| outcome) {
            Ok(Ok(outcome)) => self.summary.add(&outcome),
            Ok(Err(e)) => {
                m::db_error();
                self.summary.failed += 1;
                error!(error = %e, "A poll could not be recorded; its lease expires and it is polled again.");
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                self.summary.failed += 1;
                error!(error = %e, "A poll task panicked; its lease expires and it is polled again.");
            }
        }
    }
}

/// After a provider's pause or rest ends, wait this much more before claiming, so the shared
/// state (on the database's clock) says usable when read.
/// How long a busy worker uses the providers' shared state as it last read it.
const HEALTH_READ_EVERY: Duration = Duration::from_millis(500);
const RESUME_MARGIN: Duration = Duration::from_millis(50);

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
