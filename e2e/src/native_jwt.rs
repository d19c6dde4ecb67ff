//! A second Envoy running Envoy's NATIVE `envoy.filters.http.jwt_authn`
//! filter, configured like a jwt-auth WasmPlugin, for the differential test
//! (`tests/jwt_differential.rs`): the same token through both must get the
//! same decision, except for a listed table of intended differences.
//!
//! Two providers, both with the same issuer, audiences, token location and
//! clock skew, `forward: false` and no `jwt_cache_config` (so native's
//! verified-token cache is off: every token is verified):
//! - [`REMOTE`]: `remote_jwks` fetched through the STATIC cluster
//!   [`JWKS_CLUSTER`] from a loopback JWKS server, with `async_fetch`, so
//!   the listener starts only once the first fetch is done; it applies on
//!   prefix `/`;
//! - [`INLINE`]: `local_jwks` with an inline document; it applies on prefix
//!   [`INLINE_PREFIX`].
//!
//! Requests that pass go through the router to one demo upstream.

use crate::bootstrap;
pub use crate::bootstrap::NativeEnvoy;
use anyhow::Result;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// The listener's name.
pub const LISTENER: &str = bootstrap::LISTENER;
/// The provider with a remote JWKS (prefix `/`).
pub const REMOTE: &str = "remote";
/// The provider with an inline JWKS (prefix [`INLINE_PREFIX`]).
pub const INLINE: &str = "inline";
/// Requests under this prefix need a token for [`INLINE`].
pub const INLINE_PREFIX: &str = "/inline/";
/// The STATIC cluster the remote JWKS is fetched through.
pub const JWKS_CLUSTER: &str = "jwks";
/// The STATIC cluster of the demo upstream.
pub const UPSTREAM_CLUSTER: &str = "demo";

/// What the native bootstrap is built from.
pub struct Inputs<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [&'a str],
    pub clock_skew_secs: u64,
    /// The loopback JWKS server [`REMOTE`] fetches from.
    pub jwks_server: SocketAddr,
    /// The path the JWKS is fetched on.
    pub jwks_path: &'a str,
    /// The JWKS document [`INLINE`] holds.
    pub inline_jwks: &'a str,
    /// Where requests that pass are routed.
    pub upstream: SocketAddr,
}

/// One `JwtProvider`, without its JWKS source.
fn provider(inputs: &Inputs) -> Value {
    json!({
        "issuer": inputs.issuer,
        "audiences": inputs.audiences,
        "forward": false,
        "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
        "clock_skew_seconds": inputs.clock_skew_secs
    })
}

/// The `JwtAuthentication` filter config.
pub fn jwt_authn(inputs: &Inputs) -> Value {
    let mut remote = provider(inputs);
    remote["remote_jwks"] = json!({
        "http_uri": {
            "uri": format!("http://{}{}", inputs.jwks_server, inputs.jwks_path),
            "cluster": JWKS_CLUSTER,
            "timeout": "2s"
        },
        "cache_duration": "600s",
        "async_fetch": {}
    });
    let mut inline = provider(inputs);
    inline["local_jwks"] = json!({"inline_string": inputs.inline_jwks});
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {REMOTE: remote, INLINE: inline},
        "rules": [
            {"match": {"prefix": INLINE_PREFIX}, "requires": {"provider_name": INLINE}},
            {"match": {"prefix": "/"}, "requires": {"provider_name": REMOTE}}
        ]
    })
}

/// The whole bootstrap: admin and listener on 127.0.0.1 port 0.
pub fn render(inputs: &Inputs) -> Value {
    bootstrap::skeleton(
        "native-jwt",
        vec![json!({"match": {"prefix": "/"}, "route": {"cluster": UPSTREAM_CLUSTER}})],
        vec![json!({"name": "envoy.filters.http.jwt_authn", "typed_config": jwt_authn(inputs)})],
        vec![
            bootstrap::cluster(JWKS_CLUSTER, inputs.jwks_server),
            bootstrap::cluster(UPSTREAM_CLUSTER, inputs.upstream),
        ],
    )
}

/// Starts the native Envoy.
pub fn start(inputs: &Inputs) -> Result<NativeEnvoy> {
    NativeEnvoy::start("native-", &render(inputs))
}
