//! Key parts from the request, remote addresses through x-forwarded-for,
//! composite keys and rule matching. Pure: no host involved.
//!
//! Runs natively and as wasm32 under Node
//! (`cargo test -p rate-limit --target wasm32-unknown-unknown --test key`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kit::Headers;
use kit::claims::ClaimSource;
use rate_limit::config::compile_json;
use rate_limit::key::{KeySource, key_hash, xff_hop};

fn req(pairs: &[(&str, &str)]) -> Headers {
    Headers::from_pairs(pairs.iter().map(|(n, v)| (*n, v.as_bytes())))
}

fn part(source: &KeySource, h: &Headers, addr: Option<&str>) -> Option<String> {
    source
        .part(h, addr.map(str::as_bytes))
        .map(|p| String::from_utf8(p).unwrap())
}

fn remote(hops: u32) -> KeySource {
    KeySource::RemoteAddress {
        xff_trusted_hops: hops,
    }
}

// base64url of {"sub":"alice"} and {"other":1}.
const ALICE: &str = "eyJzdWIiOiJhbGljZSJ9";
const NO_SUB: &str = "eyJvdGhlciI6MX0";

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn simple_sources() {
    let h = req(&[
        (":method", "POST"),
        (":path", "/api/items?api_key=k%31&x=1"),
        ("x-user-id", "u1"),
        ("x-empty", ""),
        ("x-jwt-payload", ALICE),
    ]);
    assert_eq!(
        part(&KeySource::Header("x-user-id".into()), &h, None).as_deref(),
        Some("u1")
    );
    assert_eq!(part(&KeySource::Header("x-empty".into()), &h, None), None);
    assert_eq!(part(&KeySource::Header("x-none".into()), &h, None), None);
    assert_eq!(part(&KeySource::Method, &h, None).as_deref(), Some("POST"));
    assert_eq!(
        part(&KeySource::Path, &h, None).as_deref(),
        Some("/api/items")
    );
    assert_eq!(
        part(&KeySource::Query("api_key".into()), &h, None).as_deref(),
        Some("k1")
    );
    assert_eq!(part(&KeySource::Query("nope".into()), &h, None), None);
    let claim = |name: &str| {
        KeySource::Claim(ClaimSource {
            claim: name.into(),
            from_header: "x-jwt-payload".into(),
        })
    };
    assert_eq!(part(&claim("sub"), &h, None).as_deref(), Some("alice"));
    assert_eq!(
        part(&claim("sub"), &req(&[("x-jwt-payload", NO_SUB)]), None),
        None
    );
    assert_eq!(part(&claim("sub"), &req(&[]), None), None);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn source_address_without_port() {
    let h = req(&[]);
    assert_eq!(
        part(&remote(0), &h, Some("10.1.2.3:5555")).as_deref(),
        Some("10.1.2.3")
    );
    assert_eq!(
        part(&remote(0), &h, Some("[::1]:8080")).as_deref(),
        Some("::1")
    );
    assert_eq!(
        part(&remote(0), &h, Some("[2001:db8::7]:1")).as_deref(),
        Some("2001:db8::7")
    );
    assert_eq!(
        part(&remote(0), &h, Some("10.1.2.3")).as_deref(),
        Some("10.1.2.3")
    );
    assert_eq!(part(&remote(0), &h, None), None);
    assert_eq!(part(&remote(0), &h, Some("")), None);
    assert!(remote(0).needs_source_address());
    assert!(!remote(1).needs_source_address());
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn xff_hops_count_from_the_right() {
    let h = req(&[("x-forwarded-for", "6.6.6.6, 1.1.1.1 ,2.2.2.2")]);
    assert_eq!(
        part(&remote(1), &h, Some("9.9.9.9:1")).as_deref(),
        Some("2.2.2.2")
    );
    assert_eq!(part(&remote(2), &h, None).as_deref(), Some("1.1.1.1"));
    assert_eq!(part(&remote(3), &h, None).as_deref(), Some("6.6.6.6"));
    assert_eq!(part(&remote(4), &h, None), None, "missing hop");
    assert_eq!(part(&remote(1), &req(&[]), None), None);
    // Several headers form one list, in order.
    let h = req(&[
        ("x-forwarded-for", "6.6.6.6, 1.1.1.1"),
        ("x-forwarded-for", "2.2.2.2"),
    ]);
    assert_eq!(xff_hop(&h, 1), Some(&b"2.2.2.2"[..]));
    assert_eq!(xff_hop(&h, 2), Some(&b"1.1.1.1"[..]));
    // IPv6 entries, bracketed or not.
    let h = req(&[("x-forwarded-for", "2001:db8::1, [::1]:443")]);
    assert_eq!(part(&remote(1), &h, None).as_deref(), Some("::1"));
    assert_eq!(part(&remote(2), &h, None).as_deref(), Some("2001:db8::1"));
    // An empty entry is missing.
    assert_eq!(xff_hop(&req(&[("x-forwarded-for", "1.1.1.1,,")]), 1), None);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn composite_keys() {
    let user_and_method = [KeySource::Header("x-user".into()), KeySource::Method];
    let a = key_hash(
        &user_and_method,
        &req(&[("x-user", "a"), (":method", "GET")]),
        None,
    );
    let b = key_hash(
        &user_and_method,
        &req(&[("x-user", "b"), (":method", "GET")]),
        None,
    );
    let a2 = key_hash(
        &user_and_method,
        &req(&[("x-user", "a"), (":method", "GET")]),
        None,
    );
    assert!(a.is_some());
    assert_ne!(a, b);
    assert_eq!(a, a2);
    // Parts cannot run into each other.
    let two = [
        KeySource::Header("x-a".into()),
        KeySource::Header("x-b".into()),
    ];
    assert_ne!(
        key_hash(&two, &req(&[("x-a", "ab"), ("x-b", "c")]), None),
        key_hash(&two, &req(&[("x-a", "a"), ("x-b", "bc")]), None)
    );
    // One missing part: no key.
    assert_eq!(
        key_hash(&user_and_method, &req(&[(":method", "GET")]), None),
        None
    );
    // No sources: one bucket for everyone.
    assert_eq!(
        key_hash(&[], &req(&[]), None),
        key_hash(&[], &req(&[("x", "y")]), None)
    );
    assert!(key_hash(&[], &req(&[]), None).is_some());
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn rule_matching() {
    let c = compile_json(
        Some(
            br#"{"rules": [{
                "name": "r",
                "match": {"pathPrefix": "/api", "methods": ["get", "POST"],
                          "headers": [{"name": "x-env", "exact": "prod"},
                                      {"name": "x-tenant", "prefix": "t-"},
                                      {"name": "x-debug", "present": false}]},
                "limit": {"requests": 1, "per": "1s"}}]}"#,
        ),
        "rl",
    )
    .unwrap();
    let m = &c.rules[0].matcher;
    let base = [
        (":method", "GET"),
        (":path", "/api/x?q=1"),
        ("x-env", "prod"),
        ("x-tenant", "t-1"),
    ];
    assert!(m.matches(&req(&base)));
    let with = |i: usize, v: &str| {
        let mut p = base.to_vec();
        p[i].1 = v;
        req(&p)
    };
    assert!(!m.matches(&with(0, "DELETE")));
    assert!(!m.matches(&with(1, "/other")));
    assert!(!m.matches(&with(2, "dev")));
    assert!(!m.matches(&with(3, "x-1")));
    let mut debug = base.to_vec();
    debug.push(("x-debug", "1"));
    assert!(!m.matches(&req(&debug)));
    assert!(
        !m.matches(&req(&base[..3])),
        "a missing header does not match"
    );
}
