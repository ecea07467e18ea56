//! Group commit of one provider's answers. The first answer that finds no writer under way
//! starts one (in a task of its own, so a poll that stops waiting never strands the others);
//! answers that finish while a write runs join the next group, up to `poll.commit_group`
//! answers, one per pair. No answer ever waits for company: alone (or with one other), it is
//! written by the lone write ([`ingest::record_success`]); under load, one transaction serves
//! many ([`group::record_group`]).
//!
//! A group is all or nothing. When its transaction fails, for whatever reason, every answer in
//! it comes back unwritten and its poll writes it alone, with its own retries and its own verdict
//! (so an answer the database refuses is archived as a `store_error` and takes nobody down).

use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::oneshot;

use crate::store::group::{self, Answer};
use crate::store::ingest::{self, Written};
use crate::telemetry::metrics as m;

use super::lock;

/// Groups written side by side: one keeps a core busy in Postgres while the other fills.
const WRITERS: usize = 2;

/// The fewest answers worth a group: a group's transaction runs more statements than a lone
/// write (11 round trips against 5), so two answers cost less written one after the other
/// (measured: `bench ingest`, see docs/benchmarks.md).
const MIN_GROUP: usize = 3;

/// What became of an answer; None: not written, the poll writes it alone.
type Reply = Option<Written>;

#[derive(Debug)]
pub struct Committer {
    pool: PgPool,
    max_group: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    queue: Vec<Waiting>,
    writers: usize,
}

#[derive(Debug)]
struct Waiting {
    answer: Answer,
    reply: oneshot::Sender<Reply>,
}

impl Committer {
    /// `max_group` ≥ 2: the most answers one transaction takes.
    #[must_use]
    pub fn new(pool: PgPool, max_group: usize) -> Self {
        Self {
            pool,
            max_group: max_group.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Writes `answer` in whichever group it lands. None: its group failed and nothing of it was
    /// written; the caller writes it alone.
    pub async fn commit(self: &Arc<Self>, answer: Answer) -> Reply {
        let (reply, written) = oneshot::channel();
        let lead = {
            let mut s = lock(&self.state);
            s.queue.push(Waiting { answer, reply });
            let lead = s.writers < WRITERS;
            s.writers += usize::from(lead);
            lead
        };
        if lead {
            tokio::spawn(Arc::clone(self).lead());
        }
        written.await.ok().flatten()
    }

    /// Writes groups until the queue is empty.
    async fn lead(self: Arc<Self>) {
        loop {
            let group = {
                let mut s = lock(&self.state);
                if s.queue.is_empty() {
                    s.writers -= 1;
                    return;
                }
                if s.queue.len() < MIN_GROUP {
                    vec![s.queue.remove(0)]
                } else {
                    take_group(&mut s.queue, self.max_group)
                }
            };
            let replies = self.run(&group).await;
            for (w, r) in group.into_iter().zip(replies) {
                let _ = w.reply.send(r);
            }
        }
    }

    async fn run(&self, group: &[Waiting]) -> Vec<Reply> {
        let provider = group[0].answer.provider;
        if let [one] = group {
            let a = &one.answer;
            let written =
                ingest::record_success(&self.pool, &a.record(), &a.rows, a.lease, a.jitter).await;
            m::commit_group(provider, usize::from(written.is_ok()));
            return vec![written.ok()];
        }
        let answers: Vec<&Answer> = group.iter().map(|w| &w.answer).collect();
        match group::record_group(&self.pool, &answers).await {
            Ok(written) => {
                m::commit_group(provider, written.len());
                written.into_iter().map(Some).collect()
            }
            Err(e) => {
                m::commit_group_failed(provider);
                tracing::debug!(error = %e, answers = group.len(),
                    "A group commit failed; its answers are written one by one.");
                vec![None; group.len()]
            }
        }
    }
}

/// The next group: the oldest answers, at most `max`, at most one per pair (a pair's second
/// answer waits for the next group, so the group's bookkeeping stays one row per answer). The
/// rest stay queued in their order.
fn take_group(queue: &mut Vec<Waiting>, max: usize) -> Vec<Waiting> {
    let mut group: Vec<Waiting> = Vec::new();
    let mut rest = Vec::new();
    for w in queue.drain(..) {
        let taken = group.len() >= max
            || group.iter().any(|g| {
                g.answer.clip_id == w.answer.clip_id && g.answer.region == w.answer.region
            });
        if taken {
            rest.push(w);
        } else {
            group.push(w);
        }
    }
    *queue = rest;
    group
}
