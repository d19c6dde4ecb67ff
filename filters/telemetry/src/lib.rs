//! Telemetry for Prometheus, Loki and Jaeger.
//!
//! - [`config`]: the `pluginConfig` and its compilation, with path-naming
//!   errors.
//! - [`labels`]: bounded, sanitised label values from configured sources.
//! - [`metrics`]: stat names with embedded tags, and the `stats_tags` that
//!   turn them into Prometheus labels.
//! - [`anomaly`]: per-route baselines in shared data, and alerts when a
//!   route strays from them.
//! - [`filter`]: the thin layer over [`kit::Host`]: trace context in the
//!   request phase, metrics and the access log in `on_log`.

pub mod anomaly;
pub mod config;
pub mod filter;
pub mod labels;
pub mod metrics;

pub use filter::Telemetry;

#[cfg(all(target_os = "wasi", feature = "export"))]
kit::export_filter!(filter::Telemetry);
