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
//! - `host_crypto`: Envoy's `verify_signature` foreign function, its
//!   protobuf arguments and answer written and read by hand.
//! - `extract`: the token from the first header, query parameter or cookie
//!   that holds one.
//! - `rewrite`: the request headers the filter writes: output headers
//!   cleared, claims and payload forwarded, the token removed.
//! - [`filter`]: the thin layer over [`kit::Host`]: the rule, the cache, the
//!   pause while keys are fetched, and the 401/403 answers.

pub mod cache;
pub mod config;
pub mod der;
mod extract;
pub mod filter;
mod host_crypto;
pub mod jwks;
mod rewrite;
pub mod sync;
pub mod token;
pub mod verify;

pub use filter::JwtAuth;

#[cfg(all(target_os = "wasi", feature = "export"))]
kit::export_filter!(filter::JwtAuth);
