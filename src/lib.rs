//! soundtrend keeps a historical, SQL-queryable record of how TikTok sounds trend.
//!
//! The pieces, each testable alone:
//! - [`provider`]: the paid API in both dialects (client, wire types, classified errors);
//! - [`normalize`]: the pure step from a response to rows;
//! - [`store`]: all SQL (watchlist leases, the shared quota, one-statement ingest);
//! - [`poller`]: one poll of one entry (quota → fetch → normalize → write, with retries);
//! - [`scheduler`]: claiming due entries and running polls (`poll --due`, `run`).

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod domain;
pub mod export;
pub mod normalize;
pub mod poller;
pub mod provider;
pub mod quickstart;
pub mod replay;
pub mod scheduler;
pub mod show;
pub mod status;
pub mod stitch;
pub mod store;
pub mod telemetry;
pub mod watch;
