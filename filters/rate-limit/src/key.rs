//! A rule's key: its parts taken from the request, then hashed into one
//! 64-bit key for [`crate::gcra::Buckets::check`].
//!
//! - **Remote address.** `xffTrustedHops: 0` takes `source.address` (read
//!   once per request by the caller) without its port: `10.0.0.1:5000` →
//!   `10.0.0.1`, `[::1]:5000` → `::1`. `xffTrustedHops: N` (N ≥ 1) takes the
//!   Nth address from the right of `x-forwarded-for` (all its values joined,
//!   comma-separated, each entry trimmed): N = 1 is the rightmost entry, the
//!   one the nearest trusted proxy appended. Fewer than N entries, or an
//!   empty entry, is a missing part. The left end is forgeable, so it is
//!   never used unless N reaches it.
//! - **Composite keys.** The parts are joined length-prefixed (a `u32`
//!   little-endian length, then the bytes), so no choice of part values can
//!   make two different part lists collide before hashing, then hashed with
//!   [`kit::hash::hash64`]. An empty key list is one bucket for the rule.

use kit::Headers;
use kit::claims::ClaimSource;

/// Where one key part comes from (see [`crate::config`] for the JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header (lowercase name).
    Header(String),
    RemoteAddress {
        xff_trusted_hops: u32,
    },
    /// `:path` without query string or fragment.
    Path,
    /// `:method`.
    Method,
    /// A query parameter, percent-decoded.
    Query(String),
    /// A claim of the JWT payload another filter forwarded.
    Claim(ClaimSource),
}

impl KeySource {
    /// Whether this source needs `source.address`.
    pub fn needs_source_address(&self) -> bool {
        matches!(
            self,
            KeySource::RemoteAddress {
                xff_trusted_hops: 0
            }
        )
    }

    /// The part for this request; `None` when missing. `source_address` is
    /// the `source.address` property (`ip:port`), if known.
    pub fn part(&self, headers: &Headers, source_address: Option<&[u8]>) -> Option<Vec<u8>> {
        let non_empty = |v: Vec<u8>| (!v.is_empty()).then_some(v);
        match self {
            KeySource::Header(name) => headers.get(name).map(<[u8]>::to_vec).and_then(non_empty),
            KeySource::RemoteAddress { xff_trusted_hops } => {
                if *xff_trusted_hops == 0 {
                    source_address
                        .map(|a| strip_port(a.trim_ascii()).to_vec())
                        .and_then(non_empty)
                } else {
                    xff_hop(headers, *xff_trusted_hops).map(|a| strip_port(a).to_vec())
                }
            }
            KeySource::Path => headers.path_without_query().map(<[u8]>::to_vec),
            KeySource::Method => headers.get(":method").map(<[u8]>::to_vec),
            KeySource::Query(name) => headers.query_param(name).and_then(non_empty),
            KeySource::Claim(c) => c
                .extract(headers)
                .map(String::into_bytes)
                .and_then(non_empty),
        }
    }
}

/// The `hops`th entry (1-based) from the right of `x-forwarded-for`, over
/// every value of the header in order.
pub fn xff_hop(headers: &Headers, hops: u32) -> Option<&[u8]> {
    let hops = usize::try_from(hops).ok()?;
    if hops == 0 {
        return None;
    }
    let values: Vec<&[u8]> = headers.get_all("x-forwarded-for").collect();
    let entry = values
        .iter()
        .rev()
        .flat_map(|v| v.split(|&b| b == b',').rev())
        .nth(hops - 1)?
        .trim_ascii();
    (!entry.is_empty()).then_some(entry)
}

/// `ip:port` → `ip`, `[v6]:port` or `[v6]` → `v6`; a bare IPv6 address (two
/// or more colons) or an address without a port stays as it is.
pub fn strip_port(address: &[u8]) -> &[u8] {
    if let Some(rest) = address.strip_prefix(b"[") {
        return match rest.iter().position(|&b| b == b']') {
            Some(end) => &rest[..end],
            None => address,
        };
    }
    let colons = address.iter().filter(|&&b| b == b':').count();
    match address.iter().position(|&b| b == b':') {
        Some(i) if colons == 1 => &address[..i],
        _ => address,
    }
}

/// Joins parts length-prefixed, so that distinct part lists give distinct
/// byte strings.
pub fn join_parts<P: AsRef<[u8]>>(parts: &[P]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.as_ref().len() + 4).sum());
    for p in parts {
        let p = p.as_ref();
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// The key hash of a rule for this request, or `None` when a part is
/// missing.
pub fn key_hash(
    sources: &[KeySource],
    headers: &Headers,
    source_address: Option<&[u8]>,
) -> Option<u64> {
    let parts = sources
        .iter()
        .map(|s| s.part(headers, source_address))
        .collect::<Option<Vec<_>>>()?;
    Some(kit::hash::hash64(&join_parts(&parts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port(b"10.0.0.1:5000"), b"10.0.0.1");
        assert_eq!(strip_port(b"10.0.0.1"), b"10.0.0.1");
        assert_eq!(strip_port(b"[::1]:5000"), b"::1");
        assert_eq!(strip_port(b"[2001:db8::1]"), b"2001:db8::1");
        assert_eq!(strip_port(b"2001:db8::1"), b"2001:db8::1");
        assert_eq!(strip_port(b"[::1"), b"[::1");
    }

    #[test]
    fn length_prefix_separates() {
        assert_ne!(join_parts(&["ab", "c"]), join_parts(&["a", "bc"]));
        assert_ne!(join_parts(&["a"]), join_parts(&["a", ""]));
        assert!(join_parts::<&str>(&[]).is_empty());
    }
}
