//! `mesh_suite.wasm`: the four filters behind one proxy-wasm filter, in one
//! pass over each request: JWT, then rate limit, then canary, then
//! telemetry. The chain pays the Wasm floor once instead of four times, and
//! each Envoy worker runs one VM instead of four.
//!
//! - [`config`]: the suite's `pluginConfig`, the four filters' configs under
//!   `jwt`, `rateLimit`, `canary` and `telemetry`, each optional.
//! - [`registry`]: every filter of the workspace, named once; the stages,
//!   the manifest checks and xtask's size limits derive from it.
//! - [`watch`]: a [`kit::Host`] wrapper that notes a stage's local reply
//!   and HTTP calls.
//! - [`suite`]: the [`kit::Filter`] that runs the stages as Envoy runs
//!   separate filters.

pub mod config;
pub mod registry;
pub mod suite;
pub mod watch;

pub use suite::Suite;

#[cfg(all(target_os = "wasi", feature = "export"))]
kit::export_filter!(suite::Suite);
