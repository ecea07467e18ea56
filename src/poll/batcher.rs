//! Gathers the quota requests of one provider's concurrent polls into blocks. The first request
//! that finds no block under way starts one (in a task of its own, so a poll that stops waiting
//! never strands the others); every request that arrives while a block's transaction runs joins
//! the next block. No request ever waits for company: alone, a request takes the quota with the
//! one-statement [`quota::take`]; under load, one transaction serves many ([`slots::take_block`]),
//! so instances stop queueing one by one on the provider's row.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::store::quota::{self, Attempt, Grant, QuotaParams};
use crate::store::slots;

use super::lock;

/// The most requests one block takes (the horizon usually grants fewer).
const MAX_BLOCK: usize = 64;

/// A grant and the wait before its slot; `None` when the block failed (the caller takes the
/// quota alone, with its usual retries).
type Reply = Option<(Grant, Duration)>;

#[derive(Debug)]
pub struct QuotaBatcher {
    pool: PgPool,
    params: QuotaParams,
    key: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    queue: Vec<Waiting>,
    leading: bool,
}

#[derive(Debug)]
struct Waiting {
    day: NaiveDate,
    attempt: OwnedAttempt,
    reply: oneshot::Sender<Reply>,
}

#[derive(Debug, Clone)]
struct OwnedAttempt {
    clip_id: String,
    region: String,
    period: i16,
    attempt: i16,
    lease: Option<Uuid>,
    lease_ttl: Duration,
}

impl OwnedAttempt {
    fn of(a: &Attempt<'_>) -> Self {
        Self {
            clip_id: a.clip_id.to_owned(),
            region: a.region.to_owned(),
            period: a.period,
            attempt: a.attempt,
            lease: a.lease,
            lease_ttl: a.lease_ttl,
        }
    }

    fn borrow<'a>(&'a self, key: &'a str) -> Attempt<'a> {
        Attempt {
            clip_id: &self.clip_id,
            region: &self.region,
            period: self.period,
            attempt: self.attempt,
            lease: self.lease,
            lease_ttl: self.lease_ttl,
            key,
        }
    }
}

impl QuotaBatcher {
    #[must_use]
    pub fn new(pool: PgPool, params: QuotaParams, key: String) -> Self {
        Self {
            pool,
            params,
            key,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes the quota for one request, in whichever block it lands. `None`: the block's
    /// transaction failed; nothing of it was booked.
    pub async fn take(self: &Arc<Self>, day: NaiveDate, a: &Attempt<'_>) -> Reply {
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut s = lock(&self.state);
            s.queue.push(Waiting {
                day,
                attempt: OwnedAttempt::of(a),
                reply,
            });
            !std::mem::replace(&mut s.leading, true)
        };
        if lead {
            tokio::spawn(Arc::clone(self).lead());
        }
        answer.await.ok().flatten()
    }

    /// Runs blocks until the queue is empty.
    async fn lead(self: Arc<Self>) {
        loop {
            let block: Vec<Waiting> = {
                let mut s = lock(&self.state);
                let Some(day) = s.queue.first().map(|w| w.day) else {
                    s.leading = false;
                    return;
                };
                // One ledger day per block (a block that straddles midnight splits in two).
                let (mut this, rest): (Vec<Waiting>, Vec<Waiting>) =
                    s.queue.drain(..).partition(|w| w.day == day);
                let over = this.split_off(this.len().min(MAX_BLOCK));
                s.queue = over.into_iter().chain(rest).collect();
                this
            };
            let replies = self.run(&block).await;
            for (w, r) in block.into_iter().zip(replies) {
                let _ = w.reply.send(r);
            }
        }
    }

    async fn run(&self, block: &[Waiting]) -> Vec<Reply> {
        let day = block[0].day;
        let attempts: Vec<Attempt<'_>> =
            block.iter().map(|w| w.attempt.borrow(&self.key)).collect();
        if let [one] = attempts.as_slice() {
            let grant = quota::take(&self.pool, &self.params, day, one).await;
            return vec![grant.ok().map(|g| (g, Duration::ZERO))];
        }
        let grants = match self.pool.acquire().await {
            Ok(mut conn) => {
                slots::take_block(&mut conn, &self.params, day, &attempts, &self.key).await
            }
            Err(e) => Err(e),
        };
        match grants {
            Ok(g) => g.into_iter().map(Some).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "A quota block failed; its requests ask alone.");
                vec![None; block.len()]
            }
        }
    }
}
