//! The local Envoy harness: runs Istio WasmPlugin manifests in a real Envoy
//! (installed from PyPI, or `ENVOY_BIN`) in front of demo upstreams on
//! loopback, the way istiod would configure a sidecar.

pub mod bootstrap;
pub mod client;
pub mod crd;
pub mod envoy;
pub mod harness;
pub mod image;
pub mod jose;
pub mod jwks_server;
pub mod manifest;
pub mod modules;
pub mod native_jwt;
pub mod native_ratelimit;
pub mod registry_server;
pub mod upstream;

pub use harness::{Harness, Options};
