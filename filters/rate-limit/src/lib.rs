//! Rate limiting that holds its promise per Envoy process.
//!
//! - [`gcra`]: governor's GCRA over Envoy shared data, so every worker VM
//!   counts against the same buckets.
//! - [`config`]: the `pluginConfig` and its compilation, with path-naming
//!   errors.
//! - [`key`]: each rule's key from the request.
//! - [`headers`]: the IETF `RateLimit-Policy` and `RateLimit` fields.
//! - [`filter`]: the thin layer over [`kit::Host`].

pub mod config;
pub mod filter;
pub mod gcra;
pub mod headers;
pub mod key;

pub use filter::{Decision, RateLimit};

#[cfg(all(target_os = "wasi", feature = "export"))]
kit::export_filter!(filter::RateLimit);
