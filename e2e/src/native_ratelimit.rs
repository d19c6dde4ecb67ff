//! A second Envoy running Envoy's NATIVE `envoy.filters.http.local_ratelimit`
//! filter, for the side-by-side test of the rate-limit filter
//! (`tests/rate_limit.rs`).
//!
//! Each [`Bucket`] is a route (by path prefix) with its own per-route token
//! bucket: `max_tokens` = burst, `tokens_per_fill` every `fill_interval`,
//! enabled and enforced for 100 % of requests, and shared by every worker
//! (`local_rate_limit_per_downstream_connection: false`). Any other path goes
//! to the upstream unlimited. Denials answer 429.

use crate::bootstrap;
pub use crate::bootstrap::NativeEnvoy;
use anyhow::Result;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

/// The filter's name, and the key of its per-route configs.
pub const FILTER: &str = "envoy.filters.http.local_ratelimit";
/// The STATIC cluster of the upstream.
pub const UPSTREAM_CLUSTER: &str = "demo";

/// One rate-limited route.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Path prefix of the route; also the stat prefix (without the `/`).
    pub prefix: String,
    pub max_tokens: u32,
    pub tokens_per_fill: u32,
    pub fill_interval: Duration,
}

fn percent_100(key: &str) -> Value {
    json!({"runtime_key": key, "default_value": {"numerator": 100, "denominator": "HUNDRED"}})
}

/// The `LocalRateLimit` config of one bucket.
pub fn local_ratelimit(b: &Bucket) -> Value {
    let stat_prefix: String = b
        .prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": format!("native{stat_prefix}"),
        "token_bucket": {
            "max_tokens": b.max_tokens,
            "tokens_per_fill": b.tokens_per_fill,
            "fill_interval": format!("{}s", b.fill_interval.as_secs_f64())
        },
        "filter_enabled": percent_100("rl_enabled"),
        "filter_enforced": percent_100("rl_enforced"),
        "local_rate_limit_per_downstream_connection": false
    })
}

/// The whole bootstrap: admin and listener on 127.0.0.1 port 0.
pub fn render(upstream: SocketAddr, buckets: &[Bucket]) -> Value {
    let mut routes: Vec<Value> = buckets
        .iter()
        .map(|b| {
            json!({
                "match": {"prefix": b.prefix},
                "route": {"cluster": UPSTREAM_CLUSTER},
                "typed_per_filter_config": {FILTER: local_ratelimit(b)}
            })
        })
        .collect();
    routes.push(json!({"match": {"prefix": "/"}, "route": {"cluster": UPSTREAM_CLUSTER}}));
    bootstrap::skeleton(
        "native-ratelimit",
        routes,
        vec![json!({"name": FILTER, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "native_default"
        }})],
        vec![bootstrap::cluster(UPSTREAM_CLUSTER, upstream)],
    )
}

/// Starts the native Envoy (`--concurrency 2`).
pub fn start(upstream: SocketAddr, buckets: &[Bucket]) -> Result<NativeEnvoy> {
    NativeEnvoy::start("native-rl-", &render(upstream, buckets))
}
