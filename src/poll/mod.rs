//! The poll path, as three pieces with narrow seams: rate limiting ([`limiter`]), fetching with
//! retry ([`fetch`]) and storing ([`write`]). [`poller`] composes them into one poll of one entry;
//! the worker ([`scheduler`]) claims due entries and runs polls, adding up a [`Summary`] under the
//! process's lease owner name ([`instance_name`]). Around them: what the process
//! knows of its provider ([`health`]), how a poll ended ([`outcome`]), every backoff ([`backoff`]), the LISTEN wake-up ([`wake`])
//! and the named UTC maintenance jobs ([`maintenance`]).

pub mod backoff;
mod batcher;
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
