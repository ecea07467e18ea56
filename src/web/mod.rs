//! The admin listener (health, readiness, Prometheus metrics, the live pages) and the pages
//! themselves, which `soundtrend report` also writes to a file.

pub mod admin;
pub mod auth;
pub mod pages;

pub use admin::start;
