//! The request headers the filter writes. Before any rule is applied, the
//! headers it outputs are cleared, so that a client can never supply them
//! itself. Once a token is accepted, the provider's payload header and
//! claim-to-header mappings are written, and the token is taken out of the
//! header, query parameter or cookie it came in, unless the provider forwards
//! the original token.
//!
//! A header that cannot be written is passed over; a token that cannot be
//! removed is logged.

use crate::cache::Entry;
use crate::config::{Location, Provider};
use kit::{Headers, Host, MapType};
use serde_json::Value;

/// Removes every header the filter outputs, whatever the rule: they are the
/// filter's alone.
pub(crate) fn strip_output_headers(host: &dyn Host, headers: &Headers, output: &[String]) {
    for h in output {
        if headers.contains(h) {
            let _ = host.remove_header(MapType::RequestHeaders, h);
        }
    }
}

/// Forwards the payload and claims; strips the token unless told not to.
pub(crate) fn forward(host: &dyn Host, p: &Provider, entry: &Entry, location: &Location) {
    let req = MapType::RequestHeaders;
    if let Some(h) = &p.payload_header {
        let _ = host.set_header(req, h, entry.payload_b64.as_bytes());
    }
    for (header, claim) in &p.claim_headers {
        if let Some(v) = claim_at(&entry.claims, claim).and_then(claim_value) {
            let _ = host.set_header(req, header, v.as_bytes());
        }
    }
    if !p.forward_original_token {
        let result = match location {
            Location::Header { name, .. } => host.remove_header(req, name),
            Location::Param(name) => match host.header(req, ":path") {
                Ok(Some(path)) => host.set_header(req, ":path", &path_without_param(&path, name)),
                other => other.map(|_| ()),
            },
            Location::Cookie(name) => match host.header(req, "cookie") {
                Ok(Some(c)) => {
                    let rest = cookie_without(&c, name);
                    if rest.is_empty() {
                        host.remove_header(req, "cookie")
                    } else {
                        host.set_header(req, "cookie", &rest)
                    }
                }
                other => other.map(|_| ()),
            },
        };
        if let Err(e) = result {
            log::warn!("cannot remove the token from the request: {e}");
        }
    }
}

/// A claim as a header value: strings, numbers and booleans as they are,
/// arrays joined with commas; anything with control characters is dropped.
fn claim_value(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?
            .join(","),
        _ => return None,
    };
    (!s.bytes().any(|b| b.is_ascii_control())).then_some(s)
}

/// A claim by name; a dotted name (`realm_access.roles`) reaches into
/// objects when no top-level claim has that name.
fn claim_at<'a>(claims: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| {
        let mut parts = name.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |v, part| v.get(part))
    })
}

/// The query string without parameter `name`.
fn path_without_param(path: &[u8], name: &str) -> Vec<u8> {
    let Some(q) = path.iter().position(|b| *b == b'?') else {
        return path.to_vec();
    };
    let kept: Vec<&[u8]> = path[q + 1..]
        .split(|b| *b == b'&')
        .filter(|pair| {
            let key = pair.split(|b| *b == b'=').next().unwrap_or_default();
            kit::headers::percent_decode(key) != name.as_bytes()
        })
        .collect();
    let mut out = path[..q].to_vec();
    if !kept.is_empty() {
        out.push(b'?');
        out.extend_from_slice(&kept.join(&b'&'));
    }
    out
}

/// The `cookie` header without cookie `name`.
fn cookie_without(header: &[u8], name: &str) -> Vec<u8> {
    header
        .split(|b| *b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|c| {
            let key = c.split(|b| *b == b'=').next().unwrap_or_default();
            key.trim_ascii() != name.as_bytes()
        })
        .collect::<Vec<_>>()
        .join(&b"; "[..])
}
