//! Canary, A/B and blue-green routing for Istio meshes.
//!
//! The filter picks a version for each request and writes it to a routing
//! header; a VirtualService (or the harness's route table) matches on that
//! header to choose the DestinationRule subset.
//!
//! - [`config`]: the `pluginConfig` and its compilation, with path-naming errors.
//! - [`route`]: the pure decision, tested natively and as wasm32 under Node.
//! - [`filter`]: the thin layer over [`kit::Host`].

pub mod config;
pub mod filter;
pub mod route;

pub use filter::CanaryRouter;
pub use route::{Decision, Reason, Router};

#[cfg(all(target_os = "wasi", feature = "export"))]
kit::export_filter!(filter::CanaryRouter);
