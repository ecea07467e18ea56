//! The admin listener: health, readiness and Prometheus metrics.

pub mod admin;

pub use admin::start;
