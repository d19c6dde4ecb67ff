//! The shared kit of every filter in this workspace.
//!
//! - [`host`]: the [`Host`] trait, the only way filter code talks to Envoy. It
//!   never panics: every proxy-wasm status maps to a [`HostError`].
//! - `fake` (feature `test-util`): `FakeHost`, an in-memory host for
//!   native tests; shipped modules and the public API do not carry it.
//! - `proxy` (wasm32-wasip1 only): the real host over the proxy-wasm ABI, and
//!   the glue that turns a [`Filter`] into a proxy-wasm module.
//! - [`config`]: JSON parsing that names the path of every error.
//! - [`duration`]: "250ms", "30s", "1m", "1h".
//! - [`headers`], [`claims`], [`hash`]: request views shared by filters.
//! - [`matcher`]: the one request match every filter's config uses.
//! - [`clock`], [`metrics`], [`handoff`]: the wall clock as numbers, metric
//!   ids defined once per VM, and the names filters pass results by.
//! - [`build`]: this build's version and commit, logged when a VM starts.

pub mod build;
pub mod claims;
pub mod clock;
pub mod config;
pub mod duration;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod filter;
pub mod handoff;
pub mod hash;
pub mod headers;
pub mod host;
pub mod logger;
pub mod matcher;
pub mod metrics;
pub mod pause;

#[cfg(target_os = "wasi")]
mod abi;
#[cfg(target_os = "wasi")]
pub mod proxy;
#[cfg(target_os = "wasi")]
pub use proxy_wasm;

pub use config::ConfigError;
pub use duration::Duration;
#[cfg(any(test, feature = "test-util"))]
pub use fake::FakeHost;
pub use filter::{Action, Filter, HttpCallResponse, HttpFilter, Wake};
pub use headers::Headers;
pub use host::{Host, HostError, LogLevel, MapType, MetricType};
