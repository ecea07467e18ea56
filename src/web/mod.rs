//! The admin listener: health, readiness and Prometheus metrics.

pub mod admin;
pub mod auth;

pub use admin::start;
