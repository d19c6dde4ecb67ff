//! JWT validation at the mesh (Istio RequestAuthentication semantics, in a
//! WasmPlugin at phase AUTHN).
//!
//! - [`config`]: the `pluginConfig`, with path-naming errors.
//! - [`token`]: the strict parse of a compact JWS.
//! - [`jwks`]: JWKS documents and usable keys.
//! - [`der`]: key and signature encodings for Envoy's `verify_signature`.
//! - [`verify`]: claims and signature checks.
//! - [`cache`]: the verified-token LRU.
//! - [`sync`]: one JWKS fetch per Envoy process, shared across workers.
//! - [`filter`]: the layer over [`kit::Host`].

pub mod cache;
pub mod config;
pub mod der;
pub mod filter;
pub mod jwks;
pub mod sync;
pub mod token;
pub mod verify;

pub use filter::JwtAuth;

#[cfg(all(target_os = "wasi", feature = "export"))]
kit::export_filter!(filter::JwtAuth);
