//! Stat names with their labels embedded, and the Envoy `stats_tags` that
//! turn them back into Prometheus labels.
//!
//! Proxy-wasm has no labels, so each label set is its own stat:
//!
//! ```text
//! <metric>;<label>=<value>;<label>=<value>…
//! requests_total;route=orders;method=GET;response_code=200
//! ```
//!
//! Labels come in config order. Values are [`crate::labels::sanitize`]d to
//! `[A-Za-z0-9_.-]+`, so they never hold `;` or `=`, and `;<label>=` can only
//! start a tag. Each label has one `stats_tags` entry with the regex
//! `(;<label>=([A-Za-z0-9_.-]+))`: Envoy removes the first group from the
//! name and takes the second as the tag value. With every tag removed, the
//! name is `<metric>` again (Envoy keeps Wasm stats under `wasmcustom.`, a
//! namespace its Prometheus output strips), so `/stats/prometheus` shows
//! `requests_total{route="orders",method="GET",response_code="200"}`.
//!
//! The metrics:
//! - `requests_total`: counter, one per request.
//! - `request_duration_milliseconds`: histogram (buckets from Envoy's
//!   `histogram_bucket_settings`, in Istio the
//!   `sidecar.istio.io/statsHistogramBuckets` annotation).
//! - `request_bytes`, `response_bytes`: histograms of
//!   `request.total_size` and `response.total_size` (headers and body), so
//!   Prometheus has both their sums and their distribution.
//! - `label_overflow_total;label=<label>`: counter of values that became
//!   `other` past a label's cap.
//! - `route_anomaly;route=<route>;kind=error_rate|latency`: gauge, 1 while
//!   the route's anomaly alert fires (see [`crate::anomaly`]).

use crate::config::Dimension;
use serde_json::json;

pub const REQUESTS_TOTAL: &str = "requests_total";
pub const REQUEST_DURATION: &str = "request_duration_milliseconds";
pub const REQUEST_BYTES: &str = "request_bytes";
pub const RESPONSE_BYTES: &str = "response_bytes";
pub const LABEL_OVERFLOW: &str = "label_overflow_total";
pub const ROUTE_ANOMALY: &str = "route_anomaly";

/// Labels the filter uses itself; dimensions may not take these names.
pub const RESERVED_LABELS: &[&str] = &["label", "kind"];

/// The labels of the fixed dimensions, plus `label` (of
/// [`LABEL_OVERFLOW`]) and `kind` (of [`ROUTE_ANOMALY`]).
pub const FIXED_LABELS: &[&str] = &[
    "route",
    "method",
    "response_code",
    "response_code_class",
    "version",
    "source_workload",
    "label",
    "kind",
];

/// The stat name of `metric` with `labels` (name, value) embedded.
pub fn stat_name(metric: &str, labels: &[(String, String)]) -> String {
    let mut name = metric.to_string();
    for (label, value) in labels {
        name.push(';');
        name.push_str(label);
        name.push('=');
        name.push_str(value);
    }
    name
}

/// The regex that extracts `label` from a stat name.
pub fn tag_regex(label: &str) -> String {
    format!("(;{label}=([A-Za-z0-9_.-]+))")
}

fn tag(label: &str) -> serde_json::Value {
    json!({"tag_name": label, "regex": tag_regex(label)})
}

/// Envoy's `stats_config.stats_tags` list (JSON form) for every fixed
/// dimension. `header:<name>` dimensions need [`stats_tags_for`].
pub fn stats_tags() -> serde_json::Value {
    serde_json::Value::Array(FIXED_LABELS.iter().map(|l| tag(l)).collect())
}

/// [`stats_tags`] plus an entry for each `header:<name>` dimension of
/// `dimensions`.
pub fn stats_tags_for(dimensions: &[Dimension]) -> serde_json::Value {
    let mut tags: Vec<serde_json::Value> = FIXED_LABELS.iter().map(|l| tag(l)).collect();
    for d in dimensions {
        if let Dimension::Header(_) = d {
            tags.push(tag(&d.label()));
        }
    }
    serde_json::Value::Array(tags)
}
