//! The poll path: one poll of one entry ([`poller`]), the worker that claims due entries and runs
//! polls ([`scheduler`]), the LISTEN wake-up ([`wake`]) and the named UTC maintenance jobs
//! ([`maintenance`]).

pub mod maintenance;
pub mod poller;
pub mod scheduler;
mod wake;

pub use maintenance::{create_partitions, maintain};
pub use poller::{PollOptions, PollOutcome, Poller, ProviderState, SkipReason};
pub use scheduler::{instance_name, Summary, Worker, WorkerOptions, WATCHLIST_CHANNEL};
