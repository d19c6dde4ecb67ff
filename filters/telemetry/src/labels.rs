//! Label values, from configured sources only, and bounded.
//!
//! - [`sanitize`]: every byte outside `[A-Za-z0-9_.-]` becomes `_`, at most
//!   [`MAX_VALUE_LEN`] characters; empty or absent is [`UNKNOWN`]. These are
//!   characters Envoy's tag extraction (see [`crate::metrics`]) and
//!   Prometheus label values accept unchanged.
//! - [`route_name`]: the first configured route matching the request (the
//!   shared `kit::matcher`; paths compared without the query), else
//!   [`UNMATCHED`].
//! - [`Caps`]: per label, at most `maxValuesPerLabel` distinct values;
//!   later new values become [`OTHER`], so a label shows at most
//!   `maxValuesPerLabel + 1` values. The cap is **per Wasm VM** (one per
//!   Envoy worker): values are admitted first come, first served on each
//!   worker, so the process-wide bound is `workers × (cap + 1)`.

use crate::config::{Config, Dimension, Route};
use kit::Headers;
use std::collections::HashSet;

/// The longest label value; longer ones are cut.
pub const MAX_VALUE_LEN: usize = 64;
/// The value of a label past its cap.
pub const OTHER: &str = "other";
/// A path no configured route matches.
pub const UNMATCHED: &str = "unmatched";
/// An absent or empty source.
pub const UNKNOWN: &str = "unknown";

/// `value` with every byte outside `[A-Za-z0-9_.-]` as `_`, cut to
/// [`MAX_VALUE_LEN`]; empty input gives [`UNKNOWN`].
pub fn sanitize(value: &[u8]) -> String {
    if value.is_empty() {
        return UNKNOWN.to_string();
    }
    value
        .iter()
        .take(MAX_VALUE_LEN)
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-' {
                b as char
            } else {
                '_'
            }
        })
        .collect()
}

/// `path` without its query string or fragment.
pub fn strip_query(path: &[u8]) -> &[u8] {
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    &path[..end]
}

/// The index of the first route matching the request (`kit::matcher`).
pub fn route_index(routes: &[Route], headers: &Headers) -> Option<usize> {
    routes.iter().position(|r| r.matcher.matches(headers))
}

/// The name of the first route matching the request, or [`UNMATCHED`].
pub fn route_name<'a>(routes: &'a [Route], headers: &Headers) -> &'a str {
    match route_index(routes, headers).and_then(|i| routes.get(i)) {
        Some(r) => &r.name,
        None => UNMATCHED,
    }
}

/// `2xx` for 200..=299 and so on; `0xx` when there was no response (0).
pub fn code_class(status: u32) -> String {
    format!("{}xx", (status / 100).min(9))
}

/// The raw (sanitised, not yet capped) value of every configured dimension,
/// in config order. `status` is `response.code` (0 when absent).
pub fn values(config: &Config, headers: &Headers, status: u32) -> Vec<String> {
    config
        .dimensions
        .iter()
        .map(|d| match d {
            Dimension::Route => route_name(&config.routes, headers).to_string(),
            Dimension::Method => sanitize(headers.get(":method").unwrap_or_default()),
            Dimension::ResponseCode => status.to_string(),
            Dimension::ResponseCodeClass => code_class(status),
            Dimension::Version => sanitize(headers.get(&config.version_header).unwrap_or_default()),
            Dimension::SourceWorkload => sanitize(
                config
                    .source_workload_header
                    .as_deref()
                    .and_then(|h| headers.get(h))
                    .unwrap_or_default(),
            ),
            Dimension::Header(h) => sanitize(headers.get(h).unwrap_or_default()),
        })
        .collect()
}

/// Per label, the values admitted so far (see the module documentation).
#[derive(Debug, Clone)]
pub struct Caps {
    cap: usize,
    seen: Vec<HashSet<String>>,
}

impl Caps {
    pub fn new(labels: usize, cap: usize) -> Caps {
        Caps {
            cap,
            seen: vec![HashSet::new(); labels],
        }
    }

    /// `value` if label `label` already has it or still has room, else
    /// [`OTHER`]; the flag says the value was replaced.
    pub fn bound(&mut self, label: usize, value: String) -> (String, bool) {
        let Some(seen) = self.seen.get_mut(label) else {
            return (value, false);
        };
        if value == OTHER || seen.contains(&value) {
            return (value, false);
        }
        if seen.len() < self.cap {
            seen.insert(value.clone());
            return (value, false);
        }
        (OTHER.to_string(), true)
    }

    /// How many distinct values label `label` has admitted (not counting
    /// [`OTHER`]).
    pub fn admitted(&self, label: usize) -> usize {
        self.seen.get(label).map_or(0, HashSet::len)
    }
}
