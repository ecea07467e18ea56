//! The poll path, as three pieces with narrow seams: rate limiting ([`limiter`], whose concurrent
//! quota takes go in blocks, by `batcher`), fetching with retry ([`fetch`]) and storing
//! ([`write`], whose concurrent answers commit in groups, by `committer`). [`poller`] composes
//! them into one poll of one entry; the worker ([`scheduler`]) claims due entries and runs polls,
//! adding up a [`Summary`] under the process's lease owner name ([`instance_name`]). Around them:
//! what the process knows of its provider ([`health`]), how a poll ended ([`outcome`]), every
//! backoff ([`backoff`]), the LISTEN wake-up ([`wake`]) and the named UTC maintenance jobs
//! ([`maintenance`]).

pub mod backoff;
mod batcher;
mod committer;
pub mod fetch;
pub mod health;
mod instance;
mod jobs;
mod lane;
pub mod limiter;
pub mod maintenance;
pub mod outcome;
pub mod poller;
pub mod scheduler;
mod summary;
mod wake;
pub mod write;

pub use health::ProviderHealth;
pub use instance::instance_name;
pub use jobs::JobsConfig;
pub use lane::{LaneSpec, PollOptions};
pub use maintenance::{create_partitions, maintain};
pub use poller::{PollOutcome, Poller, SkipReason};
pub use scheduler::{Worker, WorkerOptions, WATCHLIST_CHANNEL};
pub use summary::Summary;

/// Locks a queue shared by polls and their leader task. It stays consistent after a panic
/// elsewhere (every update is a whole assignment), so poisoning is ignored.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
