//! soundtrend keeps a historical, SQL-queryable record of how `TikTok` sounds trend.
//!
//! The pieces, each testable alone:
//! - [`provider`]: the paid API in both dialects (client, wire types, classified errors);
//! - [`normalize`]: the pure step from a response to rows;
//! - [`store`]: all SQL (watchlist leases, the shared quota, one-statement ingest);
//! - [`poll`]: one poll of one entry (quota → fetch → normalize → write, with retries), and the
//!   worker that claims due entries and runs polls (`poll --due`, `run`);
//! - [`web`]: the admin listener;
//! - [`cli`]: one file per command; [`app`] wires the pieces together;
//! - [`testkit`]: throwaway databases for the tests and benchmarks (the fake provider is
//!   [`provider::fake`]).

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod normalize;
pub mod poll;
pub mod provider;
pub mod store;
pub mod telemetry;
pub mod testkit;
pub mod web;
