//! The `RateLimit-Policy` and `RateLimit` response headers of the IETF
//! httpapi draft "RateLimit header fields for HTTP",
//! **draft-ietf-httpapi-ratelimit-headers-10**, the latest revision listed on
//! the IETF datatracker when this was written (it superseded -09 of March
//! 2025 without changing the field syntax below). Both fields are
//! Structured Field Lists (RFC 9651) of a policy name (an sf-string) with
//! parameters:
//!
//! - `RateLimit-Policy: "default";q=100;w=60`: quota `q` (required) over a
//!   window of `w` seconds;
//! - `RateLimit: "default";r=50;t=30`: `r` (required) quota units remaining
//!   and `t` seconds until the quota resets.
//!
//! The older `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
//! fields (drafts up to -06) are not sent.
//!
//! For GCRA with emission interval `T = per / requests` and burst `b`, the
//! policy is `q = b` over `w = ceil(b × T)` seconds (that is `requests` per
//! `per` when the burst is left at its default), `r` is the burst capacity
//! left, and `t` the seconds until the bucket is full again.

use std::time::Duration;

/// The largest sf-integer (RFC 9651 §3.3.1).
pub const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// A policy name as an sf-string: printable ASCII, `"` and `\` escaped;
/// any other byte becomes `_`.
pub fn sf_string(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
    out
}

fn sf_integer(n: u64) -> u64 {
    n.min(SF_INTEGER_MAX)
}

/// Whole seconds, rounded up.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// One `RateLimit-Policy` list member: `"name";q=<quota>;w=<window>`.
pub fn policy(name: &str, quota: u64, window_secs: u64) -> String {
    format!(
        "{};q={};w={}",
        sf_string(name),
        sf_integer(quota),
        sf_integer(window_secs)
    )
}

/// One `RateLimit` list member: `"name";r=<remaining>;t=<reset>`.
pub fn ratelimit(name: &str, remaining: u64, reset_secs: u64) -> String {
    format!(
        "{};r={};t={}",
        sf_string(name),
        sf_integer(remaining),
        sf_integer(reset_secs)
    )
}

/// The GCRA policy window: `burst × interval`, in whole seconds rounded up.
pub fn window_secs(burst: u32, interval: Duration) -> u64 {
    ceil_secs(interval.saturating_mul(burst))
}

/// Seconds until a bucket with `remaining` of `burst` left is full again.
pub fn reset_after_allowed(burst: u32, remaining: u32, interval: Duration) -> u64 {
    ceil_secs(interval.saturating_mul(burst.saturating_sub(remaining)))
}

/// Seconds until a bucket that just refused (one unit comes back after
/// `retry_after`) is full again.
pub fn reset_after_denied(burst: u32, retry_after: Duration, interval: Duration) -> u64 {
    ceil_secs(retry_after.saturating_add(interval.saturating_mul(burst.saturating_sub(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_examples() {
        assert_eq!(policy("default", 100, 60), r#""default";q=100;w=60"#);
        assert_eq!(ratelimit("default", 50, 30), r#""default";r=50;t=30"#);
    }

    #[test]
    fn names_are_sf_strings() {
        assert_eq!(sf_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(sf_string("é\t"), r#""__""#);
    }

    #[test]
    fn integers_are_clamped() {
        assert_eq!(ratelimit("x", u64::MAX, 0), r#""x";r=999999999999999;t=0"#);
    }

    #[test]
    fn gcra_numbers() {
        let t = Duration::from_millis(600); // 100 per minute
        assert_eq!(window_secs(100, t), 60);
        assert_eq!(window_secs(20, t), 12);
        assert_eq!(window_secs(1, t), 1);
        assert_eq!(reset_after_allowed(20, 19, t), 1);
        assert_eq!(reset_after_allowed(20, 20, t), 0);
        assert_eq!(reset_after_allowed(20, 0, t), 12);
        assert_eq!(reset_after_denied(20, Duration::from_millis(300), t), 12);
        assert_eq!(ceil_secs(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }
}
