//! The routing decision (`compile_json` then `Router::decide`) and the
//! configuration errors, with no host involved.
//!
//! Runs natively (`cargo test -p canary-router`) and as wasm32 under Node
//! (`cargo test -p canary-router --target wasm32-unknown-unknown --test route`),
//! so the decision is proven on the architecture it ships on.
// Test code: clippy.toml's allow-*-in-tests covers `#[test]` functions but not
// the helpers of an integration-test crate, nor `#[wasm_bindgen_test]` ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use canary_router::config::compile_json;
use canary_router::{Decision, Reason, Router};
use kit::hash::mix64;
use kit::{ConfigError, Headers};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn router(json: &str) -> Router {
    match compile_json(Some(json.as_bytes())) {
        Ok(r) => r,
        Err(e) => panic!("config should compile: {e}\n{json}"),
    }
}

fn config_error(json: &str) -> ConfigError {
    match compile_json(Some(json.as_bytes())) {
        Ok(r) => panic!("config should be rejected, compiled to {r:?}\n{json}"),
        Err(e) => e,
    }
}

fn req(pairs: &[(&str, &str)]) -> Headers {
    Headers::from_pairs(pairs.iter().map(|(n, v)| (*n, v.as_bytes())))
}

/// A request to `host` for `/`, plus `extra` headers.
fn to(host: &str, extra: &[(&str, &str)]) -> Headers {
    let mut h = req(&[(":authority", host), (":path", "/")]);
    for (n, v) in extra {
        h.push(*n, v.as_bytes());
    }
    h
}

/// For decisions that must not draw: a rule, a pin or a sticky key.
fn no_draw() -> u64 {
    panic!("random must be drawn only for a random decision")
}

/// A random value that lands in `bucket` (of 100) exactly.
fn bucket_value(bucket: u64) -> u64 {
    assert!(bucket < 100);
    ((u128::from(bucket) << 64).div_ceil(100)) as u64
}

fn version<'r>(d: &Decision<'r>) -> &'r str {
    d.version.expect("a service should match")
}

/// The version a sticky key lands on.
fn sticky<'r>(r: &'r Router, host: &str, header: &str, key: &str) -> &'r str {
    let d = r.decide(&to(host, &[(header, key)]), no_draw);
    assert_eq!(d.reason, Some(Reason::Sticky), "{d:?}");
    version(&d)
}

/// Base64url without padding, as Envoy's `forward_payload_header`.
fn b64url(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// One service on `reviews` with a split and any extra fields.
fn split_config(split: &[(&str, u32)], extra: &str) -> String {
    let split: Vec<String> = split
        .iter()
        .map(|(v, w)| format!(r#"{{"version":"{v}","weight":{w}}}"#))
        .collect();
    format!(
        r#"{{"services":[{{"host":"reviews","split":[{}]{extra}}}]}}"#,
        split.join(",")
    )
}

const STICKY_USER: &str = r#","stickyBy":{"header":"x-user"}"#;

// ---------------------------------------------------------------------------
// Service selection
// ---------------------------------------------------------------------------

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn host_matches_authority_without_port_exact_and_case_insensitive() {
    let r = router(&split_config(&[("v1", 100)], ""));
    for host in ["reviews", "reviews:9080", "REVIEWS", "Reviews:80"] {
        let d = r.decide(&to(host, &[]), || 0);
        assert_eq!(d.version, Some("v1"), "{host}");
    }
    for host in ["reviews2", "xreviews", "reviews.default", "ratings:9080"] {
        let d = r.decide(&to(host, &[]), no_draw);
        assert_eq!(
            d,
            Decision {
                version: None,
                reason: None,
                set_cookie: None
            },
            "{host}"
        );
    }
    // The `host` header stands in for `:authority` (HTTP/1.1 upstream view).
    let d = r.decide(&req(&[("host", "reviews:9080"), (":path", "/")]), || 0);
    assert_eq!(d.version, Some("v1"));
    // No authority at all: no service.
    assert_eq!(r.decide(&req(&[(":path", "/")]), no_draw).version, None);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn wildcard_host_matches_subdomains_only() {
    let r = router(
        r#"{"services":[{"host":"*.example.com","split":[{"version":"v1","weight":100}]}]}"#,
    );
    for host in [
        "a.example.com",
        "a.b.example.com:8443",
        "A.EXAMPLE.COM",
        "shop.Example.Com",
    ] {
        assert_eq!(r.decide(&to(host, &[]), || 0).version, Some("v1"), "{host}");
    }
    for host in [
        "example.com",
        ".example.com",
        "badexample.com",
        "a.example.org",
        "a.example.com.evil",
    ] {
        assert_eq!(r.decide(&to(host, &[]), no_draw).version, None, "{host}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn star_matches_any_host() {
    let r = router(r#"{"services":[{"host":"*","split":[{"version":"v1","weight":100}]}]}"#);
    for host in ["reviews", "a.b.c:1", "[::1]:8080", "127.0.0.1"] {
        assert_eq!(r.decide(&to(host, &[]), || 0).version, Some("v1"), "{host}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn path_prefix_narrows_a_service_and_the_first_matching_service_applies() {
    let r = router(
        r#"{"services":[
            {"host":"reviews","pathPrefix":"/api","split":[{"version":"api","weight":100}]},
            {"host":"reviews","split":[{"version":"web","weight":100}]},
            {"host":"*","split":[{"version":"any","weight":100}]},
            {"host":"ratings","split":[{"version":"never","weight":100}]}
        ]}"#,
    );
    let at = |host: &str, path: &str| {
        r.decide(&req(&[(":authority", host), (":path", path)]), || 0)
            .version
    };
    assert_eq!(at("reviews", "/api"), Some("api"));
    assert_eq!(at("reviews", "/api/v1/items?x=1"), Some("api"));
    assert_eq!(at("reviews:9080", "/api?x=1"), Some("api"));
    assert_eq!(at("reviews", "/"), Some("web"));
    assert_eq!(at("reviews", "/other/api"), Some("web"));
    // The first service wins even where a later one matches more exactly.
    assert_eq!(at("ratings", "/"), Some("any"));
    // No `:path` reads as "/".
    let d = r.decide(&req(&[(":authority", "reviews")]), || 0);
    assert_eq!(d.version, Some("web"));
}

// ---------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------

/// v1 takes all traffic; every rule selects the idle v2 (or v3).
fn rule_config(rules: &str) -> Router {
    router(&format!(
        r#"{{"services":[{{"host":"reviews","rules":[{rules}],
            "split":[{{"version":"v1","weight":100}},{{"version":"v2","weight":0}},{{"version":"v3","weight":0}}]}}]}}"#
    ))
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn header_exact_rule_selects_an_idle_version() {
    let r = rule_config(r#"{"match":{"header":{"name":"X-Group","exact":"beta"}},"version":"v2"}"#);
    let d = r.decide(&to("reviews", &[("x-group", "beta")]), no_draw);
    assert_eq!(
        d,
        Decision {
            version: Some("v2"),
            reason: Some(Reason::Rule(0)),
            set_cookie: None
        }
    );
    // Header names ignore case; values do not.
    let d = r.decide(&to("reviews", &[("X-GROUP", "beta")]), no_draw);
    assert_eq!(d.version, Some("v2"));
    for other in ["Beta", "beta ", "betamax", ""] {
        let d = r.decide(&to("reviews", &[("x-group", other)]), || 0);
        assert_eq!(
            (d.version, d.reason),
            (Some("v1"), Some(Reason::Random)),
            "{other:?}"
        );
    }
    assert_eq!(r.decide(&to("reviews", &[]), || 0).version, Some("v1"));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn prefix_rule() {
    let r = rule_config(
        r#"{"match":{"header":{"name":"user-agent","prefix":"Mobile"}},"version":"v2"}"#,
    );
    for ua in ["Mobile", "Mobile Safari", "Mobile/1.0"] {
        let d = r.decide(&to("reviews", &[("user-agent", ua)]), no_draw);
        assert_eq!(d.version, Some("v2"), "{ua}");
    }
    for ua in ["mobile", "Mobil", "A Mobile"] {
        let d = r.decide(&to("reviews", &[("user-agent", ua)]), || 0);
        assert_eq!(d.version, Some("v1"), "{ua}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn regex_rule_must_match_the_whole_value() {
    let r = rule_config(r#"{"match":{"header":{"name":"x-group","regex":"beta"}},"version":"v2"}"#);
    assert_eq!(
        r.decide(&to("reviews", &[("x-group", "beta")]), no_draw)
            .version,
        Some("v2")
    );
    for partial in ["betamax", "alphabeta", "xbetax", "beta\n"] {
        let d = r.decide(&to("reviews", &[("x-group", partial)]), || 0);
        assert_eq!(d.version, Some("v1"), "{partial:?}");
    }

    // An alternation is anchored as a whole, not just its first and last branch.
    let r = rule_config(r#"{"match":{"header":{"name":"x-group","regex":"a|b"}},"version":"v2"}"#);
    for hit in ["a", "b"] {
        let d = r.decide(&to("reviews", &[("x-group", hit)]), no_draw);
        assert_eq!(d.version, Some("v2"), "{hit}");
    }
    for miss in ["ab", "ax", "xb", "xa", "bx"] {
        let d = r.decide(&to("reviews", &[("x-group", miss)]), || 0);
        assert_eq!(d.version, Some("v1"), "{miss}");
    }

    let r = rule_config(
        r#"{"match":{"header":{"name":"x-user","regex":"user-[0-9]+"}},"version":"v2"}"#,
    );
    assert_eq!(
        r.decide(&to("reviews", &[("x-user", "user-42")]), no_draw)
            .version,
        Some("v2")
    );
    assert_eq!(
        r.decide(&to("reviews", &[("x-user", "user-42x")]), || 0)
            .version,
        Some("v1")
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn present_rule_tests_presence_or_absence() {
    let r = rule_config(
        r#"{"match":{"header":{"name":"x-debug","present":true}},"version":"v2"},
           {"match":{"header":{"name":"x-internal","present":false}},"version":"v3"}"#,
    );
    // Present, even empty.
    for value in ["1", ""] {
        let d = r.decide(
            &to("reviews", &[("x-debug", value), ("x-internal", "1")]),
            no_draw,
        );
        assert_eq!(d.version, Some("v2"), "{value:?}");
    }
    // Absent x-debug, absent x-internal: the second rule.
    let d = r.decide(&to("reviews", &[]), no_draw);
    assert_eq!((d.version, d.reason), (Some("v3"), Some(Reason::Rule(1))));
    // Neither rule.
    let d = r.decide(&to("reviews", &[("x-internal", "1")]), || 0);
    assert_eq!((d.version, d.reason), (Some("v1"), Some(Reason::Random)));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn cookie_rule() {
    let r = rule_config(r#"{"match":{"cookie":{"name":"group","exact":"beta"}},"version":"v2"}"#);
    for cookie in [
        "group=beta",
        "a=1; group=beta; b=2",
        "group=\"beta\"",
        "  group = beta ",
    ] {
        let d = r.decide(&to("reviews", &[("cookie", cookie)]), no_draw);
        assert_eq!(d.version, Some("v2"), "{cookie}");
    }
    // Over several cookie headers (HTTP/2).
    let d = r.decide(
        &to("reviews", &[("cookie", "a=1"), ("cookie", "group=beta")]),
        no_draw,
    );
    assert_eq!(d.version, Some("v2"));
    for cookie in ["mygroup=beta", "group=betamax", "Group=beta", "group"] {
        let d = r.decide(&to("reviews", &[("cookie", cookie)]), || 0);
        assert_eq!(d.version, Some("v1"), "{cookie}");
    }
    // A header called `group` is not a cookie.
    let d = r.decide(&to("reviews", &[("group", "beta")]), || 0);
    assert_eq!(d.version, Some("v1"));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn query_rule_is_percent_decoded() {
    let r = rule_config(r#"{"match":{"query":{"name":"version","exact":"v 2"}},"version":"v2"}"#);
    let at = |path: &str| {
        r.decide(&req(&[(":authority", "reviews"), (":path", path)]), || 0)
            .version
    };
    assert_eq!(at("/p?version=v%202"), Some("v2"));
    assert_eq!(at("/p?a=1&version=v+2#frag"), Some("v2"));
    assert_eq!(at("/p?version=v2"), Some("v1"));
    assert_eq!(at("/p?xversion=v%202"), Some("v1"));
    assert_eq!(at("/p"), Some("v1"));
    // A fragment is not part of the query.
    assert_eq!(at("/p#version=v%202"), Some("v1"));

    let r = rule_config(r#"{"match":{"query":{"name":"canary","present":true}},"version":"v3"}"#);
    let d = r.decide(
        &req(&[(":authority", "reviews"), (":path", "/?canary")]),
        no_draw,
    );
    assert_eq!(d.version, Some("v3"));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn every_condition_of_a_match_must_hold() {
    let r = rule_config(
        r#"{"match":{"header":{"name":"x-group","exact":"beta"},
                     "cookie":{"name":"tier","exact":"gold"},
                     "query":{"name":"ui","prefix":"new"}},"version":"v2"}"#,
    );
    let full = req(&[
        (":authority", "reviews"),
        (":path", "/?ui=new-2"),
        ("x-group", "beta"),
        ("cookie", "tier=gold"),
    ]);
    assert_eq!(r.decide(&full, no_draw).version, Some("v2"));
    for missing in [
        req(&[
            (":authority", "reviews"),
            (":path", "/?ui=new-2"),
            ("cookie", "tier=gold"),
        ]),
        req(&[
            (":authority", "reviews"),
            (":path", "/?ui=new-2"),
            ("x-group", "beta"),
        ]),
        req(&[
            (":authority", "reviews"),
            (":path", "/?ui=old"),
            ("x-group", "beta"),
            ("cookie", "tier=gold"),
        ]),
    ] {
        assert_eq!(r.decide(&missing, || 0).version, Some("v1"), "{missing:?}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn the_first_matching_rule_wins() {
    let r = rule_config(
        r#"{"match":{"header":{"name":"x-group","exact":"beta"}},"version":"v2"},
           {"match":{"header":{"name":"x-group","prefix":"b"}},"version":"v3"},
           {"match":{"header":{"name":"x-group","present":true}},"version":"v1"}"#,
    );
    let at = |group: &str| {
        let d = r.decide(&to("reviews", &[("x-group", group)]), no_draw);
        (version(&d), d.reason)
    };
    assert_eq!(at("beta"), ("v2", Some(Reason::Rule(0))));
    assert_eq!(at("bravo"), ("v3", Some(Reason::Rule(1))));
    assert_eq!(at("alpha"), ("v1", Some(Reason::Rule(2))));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn non_utf8_values_never_panic_and_never_match_a_regex() {
    let r = rule_config(
        r#"{"match":{"header":{"name":"x-bin","regex":".*"}},"version":"v2"},
           {"match":{"cookie":{"name":"c","regex":".*"}},"version":"v2"},
           {"match":{"query":{"name":"q","regex":".*"}},"version":"v2"},
           {"match":{"header":{"name":"x-bin","exact":"\u00ff"}},"version":"v2"},
           {"match":{"header":{"name":"x-bin","present":true}},"version":"v3"}"#,
    );
    let mut h = to("reviews", &[]);
    h.push("x-bin", vec![0xff, 0xfe, b'a']);
    h.push("cookie", vec![b'c', b'=', 0xc3, 0x28]);
    h.push(":authority", vec![0xff]);
    // `.*` would match any text; the bytes are not text. Presence still counts.
    let d = r.decide(&h, no_draw);
    assert_eq!((d.version, d.reason), (Some("v3"), Some(Reason::Rule(4))));

    // The same regex does match a UTF-8 value, so the rule itself is sound.
    let d = r.decide(&to("reviews", &[("x-bin", "anything")]), no_draw);
    assert_eq!((d.version, d.reason), (Some("v2"), Some(Reason::Rule(0))));

    // A percent-encoded non-UTF-8 query value does not match either.
    let d = r.decide(
        &req(&[(":authority", "reviews"), (":path", "/?q=%ff%fe")]),
        || 0,
    );
    assert_eq!(d.version, Some("v1"));

    // Non-UTF-8 authority, path, cookie and sticky key: no panic anywhere.
    let r = router(&split_config(
        &[("v1", 50), ("v2", 50)],
        r#","stickyBy":{"cookie":"uid"},"setCookie":{"name":"pin"}"#,
    ));
    let mut h = Headers::new();
    h.push(":authority", vec![0xff, b'x']);
    h.push(":path", vec![b'/', 0xff]);
    assert_eq!(r.decide(&h, no_draw).version, None);
    let mut h = req(&[(":authority", "reviews")]);
    h.push(":path", vec![b'/', 0xff, b'?', 0xfe]);
    h.push("cookie", vec![b'u', b'i', b'd', b'=', 0xff, 0x80]);
    h.push("cookie", vec![b'p', b'i', b'n', b'=', 0xff]);
    let d = r.decide(&h, no_draw);
    assert_eq!(d.reason, Some(Reason::Sticky));
}

// ---------------------------------------------------------------------------
// Order: rule, pin cookie, sticky, random
// ---------------------------------------------------------------------------

fn ordered_router() -> Router {
    router(
        r#"{"services":[{"host":"reviews",
            "rules":[{"match":{"header":{"name":"x-group","exact":"qa"}},"version":"v3"}],
            "split":[{"version":"v1","weight":50},{"version":"v2","weight":50},{"version":"v3","weight":0}],
            "stickyBy":{"header":"x-user"},
            "setCookie":{"name":"route","maxAge":"1h"}}]}"#,
    )
}

/// A sticky key landing on `want`.
fn key_for(r: &Router, want: &str) -> String {
    (0..1000)
        .map(|i| format!("user-{i}"))
        .find(|k| sticky(r, "reviews", "x-user", k) == want)
        .expect("some key lands on each half of a 50/50 split")
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_rule_beats_a_pin_which_beats_the_sticky_hash() {
    let r = ordered_router();
    let user_v1 = key_for(&r, "v1");

    // Rule over everything else, even a valid pin and a sticky key.
    let d = r.decide(
        &to(
            "reviews",
            &[
                ("x-group", "qa"),
                ("cookie", "route=v2"),
                ("x-user", &user_v1),
            ],
        ),
        no_draw,
    );
    assert_eq!(
        d,
        Decision {
            version: Some("v3"),
            reason: Some(Reason::Rule(0)),
            set_cookie: None
        }
    );

    // A valid pin over the sticky hash, and no new cookie.
    let d = r.decide(
        &to("reviews", &[("cookie", "route=v2"), ("x-user", &user_v1)]),
        no_draw,
    );
    assert_eq!(
        d,
        Decision {
            version: Some("v2"),
            reason: Some(Reason::Pin),
            set_cookie: None
        }
    );

    // Without the pin, the sticky hash, and no cookie.
    let d = r.decide(&to("reviews", &[("x-user", &user_v1)]), no_draw);
    assert_eq!(
        d,
        Decision {
            version: Some("v1"),
            reason: Some(Reason::Sticky),
            set_cookie: None
        }
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_pin_to_an_idle_or_unknown_version_is_ignored() {
    let r = ordered_router();
    let user_v1 = key_for(&r, "v1");
    // v3 exists but has weight 0: a forged pin cannot reach it.
    for forged in ["route=v3", "route=v9", "route=", "route=V2", "route=v2x"] {
        let d = r.decide(
            &to("reviews", &[("cookie", forged), ("x-user", &user_v1)]),
            no_draw,
        );
        assert_eq!(
            (d.version, d.reason),
            (Some("v1"), Some(Reason::Sticky)),
            "{forged}"
        );
        // Without a sticky key it falls to a random draw, which re-pins.
        let d = r.decide(&to("reviews", &[("cookie", forged)]), || bucket_value(99));
        assert_eq!(
            d,
            Decision {
                version: Some("v2"),
                reason: Some(Reason::Random),
                set_cookie: Some(
                    "route=v2; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax".to_string()
                )
            },
            "{forged}"
        );
    }
    // A pin cookie under another name is not the pin.
    let d = r.decide(
        &to("reviews", &[("cookie", "other=v2"), ("x-user", &user_v1)]),
        no_draw,
    );
    assert_eq!(d.reason, Some(Reason::Sticky));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_pin_stops_working_once_its_version_is_drained() {
    let live = router(&split_config(
        &[("v1", 90), ("v2", 10)],
        r#","setCookie":{"name":"route"}"#,
    ));
    let drained = router(&split_config(
        &[("v1", 100), ("v2", 0)],
        r#","setCookie":{"name":"route"}"#,
    ));
    let pinned = to("reviews", &[("cookie", "route=v2")]);
    let d = live.decide(&pinned, no_draw);
    assert_eq!((d.version, d.reason), (Some("v2"), Some(Reason::Pin)));
    let d = drained.decide(&pinned, || bucket_value(99));
    assert_eq!((d.version, d.reason), (Some("v1"), Some(Reason::Random)));
    assert_eq!(
        d.set_cookie.as_deref(),
        Some("route=v1; Path=/; HttpOnly; SameSite=Lax")
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_missing_or_empty_sticky_key_falls_back_to_a_random_draw() {
    let r = ordered_router();
    for extra in [&[][..], &[("x-user", "")][..], &[("x-other", "u1")][..]] {
        let mut drawn = 0;
        let d = r.decide(&to("reviews", extra), || {
            drawn += 1;
            bucket_value(0)
        });
        assert_eq!(drawn, 1, "{extra:?}");
        assert_eq!(
            d,
            Decision {
                version: Some("v1"),
                reason: Some(Reason::Random),
                set_cookie: Some(
                    "route=v1; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax".to_string()
                )
            },
            "{extra:?}"
        );
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn sticky_by_cookie() {
    let r = router(&split_config(
        &[("v1", 50), ("v2", 50)],
        r#","stickyBy":{"cookie":"uid"}"#,
    ));
    let mut seen = Vec::new();
    for i in 0..200 {
        let cookie = format!("a=1; uid=u{i}");
        let d = r.decide(&to("reviews", &[("cookie", &cookie)]), no_draw);
        assert_eq!(d.reason, Some(Reason::Sticky));
        let again = r.decide(&to("reviews", &[("cookie", &format!("uid=u{i}"))]), no_draw);
        assert_eq!(d.version, again.version);
        seen.push(version(&d));
    }
    assert!(seen.contains(&"v1") && seen.contains(&"v2"));
    // The cookie, not a header of the same name.
    let d = r.decide(&to("reviews", &[("uid", "u1")]), || 0);
    assert_eq!(d.reason, Some(Reason::Random));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn sticky_by_claim_from_the_jwt_payload_header() {
    let default_header = router(&split_config(
        &[("v1", 50), ("v2", 50)],
        r#","stickyBy":{"claim":"sub"}"#,
    ));
    let own_header = router(&split_config(
        &[("v1", 50), ("v2", 50)],
        r#","stickyBy":{"claim":"realm.id","fromHeader":"X-Payload"}"#,
    ));
    let by_header = router(&split_config(&[("v1", 50), ("v2", 50)], STICKY_USER));
    let mut seen = Vec::new();
    for i in 0..200 {
        let user = format!("user-{i}");
        let payload = b64url(format!(r#"{{"sub":"{user}","iss":"x","n":{i}}}"#).as_bytes());
        let d = default_header.decide(&to("reviews", &[("x-jwt-payload", &payload)]), no_draw);
        assert_eq!(d.reason, Some(Reason::Sticky));
        // The same subject with other claims lands on the same version...
        let other = b64url(format!(r#"{{"iss":"y","sub":"{user}"}}"#).as_bytes());
        let again = default_header.decide(&to("reviews", &[("x-jwt-payload", &other)]), no_draw);
        assert_eq!(d.version, again.version, "{user}");
        // ...as does the same key sent as a plain header: the key is the claim.
        assert_eq!(
            d.version,
            by_header
                .decide(&to("reviews", &[("x-user", &user)]), no_draw)
                .version
        );
        seen.push(version(&d));

        let nested = b64url(format!(r#"{{"realm":{{"id":"{user}"}}}}"#).as_bytes());
        let d2 = own_header.decide(&to("reviews", &[("x-payload", &nested)]), no_draw);
        assert_eq!(d2.version, d.version, "{user}");
    }
    assert!(seen.contains(&"v1") && seen.contains(&"v2"));

    // No payload, garbage, a payload without the claim, a non-scalar claim:
    // a random draw.
    for payload in [
        None,
        Some("%%%".to_string()),
        Some(b64url(b"not json")),
        Some(b64url(br#"{"iss":"x"}"#)),
        Some(b64url(br#"{"sub":{"id":1}}"#)),
        Some(b64url(br#"{"sub":""}"#)),
    ] {
        let extra: Vec<(&str, &str)> = payload
            .as_deref()
            .map(|p| vec![("x-jwt-payload", p)])
            .unwrap_or_default();
        let d = default_header.decide(&to("reviews", &extra), || 0);
        assert_eq!(d.reason, Some(Reason::Random), "{payload:?}");
    }
}

// ---------------------------------------------------------------------------
// Weighted split
// ---------------------------------------------------------------------------

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn the_same_sticky_key_always_gets_the_same_version() {
    let r = router(&split_config(&[("v1", 50), ("v2", 50)], STICKY_USER));
    // A second router from the same config: nothing depends on the instance.
    let r2 = router(&split_config(&[("v1", 50), ("v2", 50)], STICKY_USER));
    for i in 0..500 {
        let key = format!("user-{i}");
        let first = sticky(&r, "reviews", "x-user", &key);
        for _ in 0..3 {
            assert_eq!(sticky(&r, "reviews", "x-user", &key), first);
        }
        assert_eq!(sticky(&r2, "reviews:9080", "x-user", &key), first);
    }
}

/// Pinned buckets: a change here re-routes every sticky user on upgrade.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn sticky_assignment_is_stable_across_builds() {
    let names: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    let split: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 10)).collect();
    let r = router(&split_config(&split, STICKY_USER));
    let got: Vec<&str> = ["alice", "bob", "carol", "dave", "erin", "user-1", "user-2"]
        .iter()
        .map(|k| sticky(&r, "reviews", "x-user", k))
        .collect();
    // Pinned literally, so native and wasm32 must agree with each other and
    // with every earlier release...
    assert_eq!(got, ["b7", "b8", "b2", "b1", "b3", "b7", "b8"]);
    // ...and derived independently from the documented hash.
    assert_eq!(got, expected_buckets());
}

/// The buckets of the keys above, computed from the same hash the filter
/// uses (FNV-1a + SplitMix64 over "reviews\0<key>"), independently of it.
fn expected_buckets() -> Vec<&'static str> {
    const NAMES: [&str; 10] = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"];
    ["alice", "bob", "carol", "dave", "erin", "user-1", "user-2"]
        .iter()
        .map(|k| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for &b in b"reviews\0".iter().chain(k.as_bytes()) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            let bucket = ((u128::from(mix64(h)) * 100) >> 64) as usize;
            NAMES[bucket / 10]
        })
        .collect()
}

fn shares(r: &Router, keys: usize) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for i in 0..keys {
        let v = sticky(r, "reviews", "x-user", &format!("user-{i}"));
        match counts.iter_mut().find(|(n, _)| n == v) {
            Some((_, c)) => *c += 1,
            None => counts.push((v.to_string(), 1)),
        }
    }
    counts.sort();
    counts
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_90_10_split_over_10000_keys_is_within_2_points() {
    let r = router(&split_config(&[("v1", 90), ("v2", 10)], STICKY_USER));
    let counts = shares(&r, 10_000);
    assert_eq!(counts.len(), 2, "{counts:?}");
    let v2 = counts[1].1;
    assert_eq!(counts[1].0, "v2");
    // 10% ± 2 points of 10,000.
    assert!((800..=1200).contains(&v2), "{counts:?}");

    let r = router(&split_config(
        &[("a", 50), ("b", 30), ("c", 20)],
        STICKY_USER,
    ));
    let counts = shares(&r, 10_000);
    let want = [("a", 5000), ("b", 3000), ("c", 2000)];
    for ((name, got), (wname, want)) in counts.iter().zip(want) {
        assert_eq!(name, wname);
        assert!(got.abs_diff(want) <= 200, "{counts:?}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn shifting_90_10_to_80_20_moves_only_v1_keys_and_about_10_percent() {
    let before = router(&split_config(&[("v1", 90), ("v2", 10)], STICKY_USER));
    let after = router(&split_config(&[("v1", 80), ("v2", 20)], STICKY_USER));
    let mut moved = 0;
    for i in 0..10_000 {
        let key = format!("user-{i}");
        let (b, a) = (
            sticky(&before, "reviews", "x-user", &key),
            sticky(&after, "reviews", "x-user", &key),
        );
        assert!(!(b == "v2" && a == "v1"), "{key} moved back from v2 to v1");
        if b != a {
            moved += 1;
        }
    }
    // About 10% of keys move (± 2 points).
    assert!((800..=1200).contains(&moved), "{moved} keys moved");

    // The same holds step by step on the way to a full roll-out.
    let steps = [0, 5, 10, 25, 50, 75, 100];
    let routers: Vec<Router> = steps
        .iter()
        .map(|w| router(&split_config(&[("v1", 100 - w), ("v2", *w)], STICKY_USER)))
        .collect();
    for i in 0..2000 {
        let key = format!("user-{i}");
        let path: Vec<&str> = routers
            .iter()
            .map(|r| sticky(r, "reviews", "x-user", &key))
            .collect();
        assert_eq!(path[0], "v1");
        assert_eq!(path[path.len() - 1], "v2");
        let first_v2 = path.iter().position(|v| *v == "v2").unwrap_or(path.len());
        assert!(
            path[first_v2..].iter().all(|v| *v == "v2"),
            "{key}: {path:?}"
        );
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_100_0_split_sends_everything_to_v1_but_a_rule_can_still_pick_v2() {
    let r = router(&split_config(
        &[("v1", 100), ("v2", 0)],
        r#","stickyBy":{"header":"x-user"},
           "rules":[{"match":{"header":{"name":"x-canary","exact":"1"}},"version":"v2"}]"#,
    ));
    for i in 0..2000 {
        let key = format!("user-{i}");
        assert_eq!(sticky(&r, "reviews", "x-user", &key), "v1");
    }
    for b in 0..100 {
        assert_eq!(
            r.decide(&to("reviews", &[]), || bucket_value(b)).version,
            Some("v1")
        );
    }
    for v in [0, u64::MAX, u64::MAX / 2] {
        assert_eq!(r.decide(&to("reviews", &[]), || v).version, Some("v1"));
    }
    let d = r.decide(
        &to("reviews", &[("x-canary", "1"), ("x-user", "u")]),
        no_draw,
    );
    assert_eq!((d.version, d.reason), (Some("v2"), Some(Reason::Rule(0))));

    // And the mirror image: 0/100 sends nothing to v1.
    let r = router(&split_config(&[("v1", 0), ("v2", 100)], STICKY_USER));
    for i in 0..2000 {
        assert_eq!(sticky(&r, "reviews", "x-user", &format!("user-{i}")), "v2");
    }
    for v in [0, u64::MAX] {
        assert_eq!(r.decide(&to("reviews", &[]), || v).version, Some("v2"));
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn random_draws_respect_the_weights() {
    let r = router(&split_config(&[("v1", 90), ("v2", 10)], ""));
    // Exactly: each of the 100 buckets once.
    let mut v2 = 0;
    for b in 0..100 {
        let d = r.decide(&to("reviews", &[]), || bucket_value(b));
        assert_eq!(d.reason, Some(Reason::Random));
        let want = if b < 90 { "v1" } else { "v2" };
        assert_eq!(version(&d), want, "bucket {b}");
        if want == "v2" {
            v2 += 1;
        }
    }
    assert_eq!(v2, 10);
    // The extremes of the range.
    assert_eq!(r.decide(&to("reviews", &[]), || 0).version, Some("v1"));
    assert_eq!(
        r.decide(&to("reviews", &[]), || u64::MAX).version,
        Some("v2")
    );

    // Statistically, over a deterministic pseudo-random sequence.
    let r = router(&split_config(
        &[("a", 70), ("b", 20), ("c", 10), ("d", 0)],
        "",
    ));
    let mut counts = [0usize; 4];
    for i in 0..10_000u64 {
        let d = r.decide(&to("reviews", &[]), || mix64(i));
        let idx = ["a", "b", "c", "d"]
            .iter()
            .position(|n| *n == version(&d))
            .expect("a known version");
        counts[idx] += 1;
    }
    assert_eq!(counts[3], 0, "{counts:?}");
    for (got, want) in counts.iter().zip([7000, 2000, 1000]) {
        assert!(got.abs_diff(want) <= 200, "{counts:?}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn services_hash_a_user_independently() {
    // The same key on two services (salted by host) does not always land on
    // the same half of a 50/50 split.
    let r = router(
        r#"{"services":[
            {"host":"reviews","split":[{"version":"v1","weight":50},{"version":"v2","weight":50}],"stickyBy":{"header":"x-user"}},
            {"host":"ratings","split":[{"version":"v1","weight":50},{"version":"v2","weight":50}],"stickyBy":{"header":"x-user"}}
        ]}"#,
    );
    let differ = (0..1000)
        .filter(|i| {
            let key = format!("user-{i}");
            sticky(&r, "reviews", "x-user", &key) != sticky(&r, "ratings", "x-user", &key)
        })
        .count();
    assert!((350..=650).contains(&differ), "{differ}");
}

// ---------------------------------------------------------------------------
// setCookie
// ---------------------------------------------------------------------------

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_random_draw_sets_the_pin_cookie_with_max_age() {
    for (max_age, attr) in [
        (r#","maxAge":"1h""#, "; Max-Age=3600"),
        (r#","maxAge":"30s""#, "; Max-Age=30"),
        (r#","maxAge":"1h30m""#, "; Max-Age=5400"),
        (r#","maxAge":"90m""#, "; Max-Age=5400"),
        ("", ""),
    ] {
        let r = router(&split_config(
            &[("v1", 90), ("v2", 10)],
            &format!(r#","setCookie":{{"name":"canary-pin"{max_age}}}"#),
        ));
        let d = r.decide(&to("reviews", &[]), || bucket_value(95));
        assert_eq!(
            d,
            Decision {
                version: Some("v2"),
                reason: Some(Reason::Random),
                set_cookie: Some(format!(
                    "canary-pin=v2{attr}; Path=/; HttpOnly; SameSite=Lax"
                ))
            }
        );
        // The cookie it sets is a valid pin on the next request.
        let cookie = d.set_cookie.as_deref().expect("a cookie");
        let pair = cookie.split(';').next().expect("name=value");
        let next = r.decide(&to("reviews", &[("cookie", pair)]), no_draw);
        assert_eq!((next.version, next.reason), (Some("v2"), Some(Reason::Pin)));
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn rules_sticky_and_pins_set_no_cookie_and_no_set_cookie_config_sets_none() {
    let r = ordered_router();
    for extra in [
        vec![("x-group", "qa")],
        vec![("x-user", "user-1")],
        vec![("cookie", "route=v1")],
    ] {
        let d = r.decide(&to("reviews", &extra), no_draw);
        assert_eq!(d.set_cookie, None, "{extra:?}");
    }
    let r = router(&split_config(&[("v1", 90), ("v2", 10)], ""));
    let d = r.decide(&to("reviews", &[]), || 0);
    assert_eq!(
        d,
        Decision {
            version: Some("v1"),
            reason: Some(Reason::Random),
            set_cookie: None
        }
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn routing_header_defaults_and_is_lowercased() {
    let r = router(&split_config(&[("v1", 100)], ""));
    assert_eq!(r.routing_header, "x-route-version");
    let r = router(
        r#"{"routingHeader":"X-Canary-Version","services":[{"host":"*","split":[{"version":"v1","weight":100}]}]}"#,
    );
    assert_eq!(r.routing_header, "x-canary-version");
}

// ---------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------

/// Asserts the error's path and that its text has every `part`.
fn assert_rejected(json: &str, path: &str, parts: &[&str]) {
    let e = config_error(json);
    assert_eq!(e.path, path, "{e}\n{json}");
    let text = e.to_string();
    if !path.is_empty() {
        assert!(text.starts_with(&format!("{path}: ")), "{text}");
    }
    for part in parts {
        assert!(text.contains(part), "{text:?} lacks {part:?}\n{json}");
    }
}

/// A valid service with `field` replaced or added (raw JSON).
fn service(fields: &str) -> String {
    format!(r#"{{"services":[{{"host":"reviews",{fields}}}]}}"#)
}

const SPLIT: &str = r#""split":[{"version":"v1","weight":90},{"version":"v2","weight":10}]"#;

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn weights_must_total_100() {
    assert_rejected(
        &split_config(&[("v1", 80), ("v2", 10)], ""),
        "services[0].split",
        &["weights must total 100, got 90"],
    );
    assert_rejected(
        &split_config(&[("v1", 90), ("v2", 20)], ""),
        "services[0].split",
        &["weights must total 100, got 110"],
    );
    assert_rejected(
        &split_config(&[("v1", 0)], ""),
        "services[0].split",
        &["got 0"],
    );
    // No wrap-around: huge weights do not sum back to 100.
    assert_rejected(
        &split_config(&[("v1", u32::MAX), ("v2", 101)], ""),
        "services[0].split",
        &["weights must total 100"],
    );
    // The second service is named in the path.
    assert_rejected(
        &format!(
            r#"{{"services":[{{"host":"a",{SPLIT}}},{{"host":"b","split":[{{"version":"v1","weight":99}}]}}]}}"#
        ),
        "services[1].split",
        &["got 99"],
    );
    assert_rejected(
        &service(r#""split":[]"#),
        "services[0].split",
        &["expected at least one version"],
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn bad_versions_in_the_split() {
    assert_rejected(
        &split_config(&[("v1", 50), ("v1", 50)], ""),
        "services[0].split[1].version",
        &["version \"v1\" appears twice"],
    );
    let too_long = "v".repeat(64);
    for bad in ["", "v 1", "v1;x", "v/1", too_long.as_str()] {
        assert_rejected(
            &split_config(&[("v1", 50), (bad, 50)], ""),
            "services[0].split[1].version",
            &["expected a version name"],
        );
    }
    // 63 characters, dots, dashes and underscores are fine.
    let longest = "v".repeat(63);
    router(&split_config(
        &[(longest.as_str(), 50), ("v2.1-rc_3", 50)],
        "",
    ));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_rule_must_name_a_version_of_the_split() {
    assert_rejected(
        &service(&format!(
            r#"{SPLIT},"rules":[
                {{"match":{{"header":{{"name":"x-a","exact":"1"}}}},"version":"v2"}},
                {{"match":{{"header":{{"name":"x-b","exact":"1"}}}},"version":"v3"}}]"#
        )),
        "services[0].rules[1].version",
        &["unknown version \"v3\"", "(v1, v2)"],
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn bad_matches() {
    let rule = |m: &str| {
        service(&format!(
            r#"{SPLIT},"rules":[{{"match":{m},"version":"v2"}}]"#
        ))
    };
    assert_rejected(
        &rule(r#"{"header":{"name":"x-a","regex":"(beta"}}"#),
        "services[0].rules[0].match.header.regex",
        &["invalid regex \"(beta\""],
    );
    assert_rejected(
        &rule(r#"{"cookie":{"name":"c","regex":"[z-a]"}}"#),
        "services[0].rules[0].match.cookie.regex",
        &["invalid regex"],
    );
    assert_rejected(
        &rule(r#"{"query":{"name":"q","regex":"a{2,1}"}}"#),
        "services[0].rules[0].match.query.regex",
        &["invalid regex"],
    );
    assert_rejected(
        &rule("{}"),
        "services[0].rules[0].match",
        &["expected at least one condition"],
    );
    assert_rejected(
        &rule(r#"{"header":{"name":"x-a"}}"#),
        "services[0].rules[0].match.header",
        &["expected exactly one of exact, prefix, regex, present"],
    );
    assert_rejected(
        &rule(r#"{"header":{"name":"x-a","exact":"1","prefix":"1"}}"#),
        "services[0].rules[0].match.header",
        &["expected exactly one of exact, prefix, regex, present"],
    );
    assert_rejected(
        &rule(r#"{"header":{"name":"x a","exact":"1"}}"#),
        "services[0].rules[0].match.header.name",
        &["expected an HTTP header name, got \"x a\""],
    );
    assert_rejected(
        &rule(r#"{"header":{"name":"","exact":"1"}}"#),
        "services[0].rules[0].match.header.name",
        &["expected an HTTP header name"],
    );
    assert_rejected(
        &rule(r#"{"cookie":{"name":"a=b","exact":"1"}}"#),
        "services[0].rules[0].match.cookie.name",
        &["expected a cookie name"],
    );
    assert_rejected(
        &rule(r#"{"query":{"name":"","exact":"1"}}"#),
        "services[0].rules[0].match.query.name",
        &["expected a parameter name"],
    );
    assert_rejected(
        &rule(r#"{"header":{"name":"x-a","exact":1}}"#),
        "services[0].rules[0].match.header.exact",
        &["invalid type: integer `1`, expected a string"],
    );
    assert_rejected(
        &rule(r#"{"header":{"name":"x-a","equals":"1"}}"#),
        "services[0].rules[0].match.header.equals",
        &["unknown field `equals`"],
    );
    assert_rejected(
        &rule(r#"{"uri":{"name":"x-a","exact":"1"}}"#),
        "services[0].rules[0].match.uri",
        &["unknown field `uri`"],
    );
    // The shared match's path test takes a string.
    assert_rejected(
        &rule(r#"{"path":{"name":"x-a","exact":"1"}}"#),
        "services[0].rules[0].match.path",
        &["expected a string"],
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_rule_takes_every_condition_of_the_shared_match() {
    let router = router(&service(&format!(
        r#"{SPLIT},"rules":[{{"match":{{"pathPrefix":"/beta","methods":["GET"],
            "headers":[{{"name":"x-group","exact":"beta"}}]}},"version":"v2"}}]"#
    )));
    let request = |method: &str, path: &str| {
        req(&[
            (":authority", "reviews"),
            (":method", method),
            (":path", path),
            ("x-group", "beta"),
        ])
    };
    let reason = |h: &Headers| router.decide(h, || 0).reason;
    assert_eq!(reason(&request("GET", "/beta/x")), Some(Reason::Rule(0)));
    assert_ne!(reason(&request("POST", "/beta/x")), Some(Reason::Rule(0)));
    assert_ne!(reason(&request("GET", "/alpha")), Some(Reason::Rule(0)));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn bad_durations() {
    for bad in [r#""5x""#, r#""""#, r#""5""#, r#""-1s""#, "60"] {
        assert_rejected(
            &service(&format!(
                r#"{SPLIT},"setCookie":{{"name":"pin","maxAge":{bad}}}"#
            )),
            "services[0].setCookie.maxAge",
            &[r#"expected a duration like "1m""#],
        );
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn wrong_types_and_unknown_fields() {
    assert_rejected(
        &service(r#""split":[{"version":"v1","weight":"ten"}]"#),
        "services[0].split[0].weight",
        &["invalid type: string \"ten\", expected u32"],
    );
    assert_rejected(
        &service(r#""split":[{"version":"v1","weight":-5}]"#),
        "services[0].split[0].weight",
        &["invalid value: integer `-5`, expected u32"],
    );
    assert_rejected(
        &service(r#""split":[{"version":"v1","weight":100.0}]"#),
        "services[0].split[0].weight",
        &["invalid type: floating point"],
    );
    assert_rejected(
        &service(r#""split":[{"version":1,"weight":100}]"#),
        "services[0].split[0].version",
        &["invalid type: integer `1`, expected a string"],
    );
    assert_rejected(
        &service(r#""splitt":[{"version":"v1","weight":100}]"#),
        "services[0].splitt",
        &["unknown field `splitt`"],
    );
    assert_rejected(
        &service(&format!(
            r#"{SPLIT},"stickyBy":{{"header":"x-user","salt":"x"}}"#
        )),
        "services[0].stickyBy.salt",
        &["unknown field `salt`"],
    );
    assert_rejected(
        &format!(r#"{{"services":[{{"host":"a",{SPLIT}}}],"routingheader":"x"}}"#),
        "routingheader",
        &["unknown field `routingheader`"],
    );
    assert_rejected(
        r#"{"services":{"host":"a"}}"#,
        "services",
        &["invalid type: map, expected a sequence"],
    );
    assert_rejected("42", "", &["expected a JSON object"]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn missing_or_empty_config_and_missing_fields() {
    for empty in [None, Some(&b""[..]), Some(&b"  \n"[..])] {
        let e = compile_json(empty).expect_err("no config is no router");
        assert_eq!(e.path, "");
        assert!(e.to_string().contains("missing field `services`"), "{e}");
    }
    assert_rejected(
        r#"{"services":[]}"#,
        "services",
        &["expected at least one service"],
    );
    assert_rejected(
        r#"{"services":[{"split":[{"version":"v1","weight":100}]}]}"#,
        "services[0]",
        &["missing field `host`"],
    );
    assert_rejected(
        r#"{"services":[{"host":"reviews"}]}"#,
        "services[0]",
        &["missing field `split`"],
    );
    assert_rejected(
        &service(r#""split":[{"version":"v1"}]"#),
        "services[0].split[0]",
        &["missing field `weight`"],
    );
    assert_rejected(
        &service(&format!(
            r#"{SPLIT},"rules":[{{"match":{{"header":{{"name":"a","exact":"1"}}}}}}]"#
        )),
        "services[0].rules[0]",
        &["missing field `version`"],
    );
    assert_rejected(
        &service(&format!(r#"{SPLIT},"setCookie":{{"maxAge":"1m"}}"#)),
        "services[0].setCookie",
        &["missing field `name`"],
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn malformed_json() {
    let e = config_error(&format!("{} x", split_config(&[("v1", 100)], "")));
    assert!(e.to_string().contains("trailing data"), "{e}");
    let e = config_error(r#"{"services":[{"host":"a""#);
    assert!(e.to_string().contains("EOF"), "{e}");
    let e = compile_json(Some(&[0xff, 0xfe][..])).expect_err("not JSON");
    assert!(!e.to_string().is_empty());
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn bad_hosts_and_path_prefixes() {
    for bad in [
        "reviews:9080",
        "",
        "*.",
        "a*.example.com",
        "*example.com",
        "a b",
        "[::1]",
        "http://reviews",
    ] {
        assert_rejected(
            &format!(r#"{{"services":[{{"host":"{bad}",{SPLIT}}}]}}"#),
            "services[0].host",
            &["expected a host name", "no port"],
        );
    }
    assert_rejected(
        &service(&format!(r#""pathPrefix":"api",{SPLIT}"#)),
        "services[0].pathPrefix",
        &[r#"expected a path starting with "/", got "api""#],
    );
    assert_rejected(
        &service(&format!(r#""pathPrefix":"",{SPLIT}"#)),
        "services[0].pathPrefix",
        &["expected a path starting with"],
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn bad_routing_header_sticky_and_set_cookie() {
    assert_rejected(
        &format!(r#"{{"routingHeader":"x route","services":[{{"host":"a",{SPLIT}}}]}}"#),
        "routingHeader",
        &["expected an HTTP header name, got \"x route\""],
    );
    assert_rejected(
        &format!(r#"{{"routingHeader":":authority","services":[{{"host":"a",{SPLIT}}}]}}"#),
        "routingHeader",
        &["expected an HTTP header name"],
    );
    let sticky = |s: &str| service(&format!(r#"{SPLIT},"stickyBy":{s}"#));
    assert_rejected(
        &sticky("{}"),
        "services[0].stickyBy",
        &["expected exactly one of header, cookie, claim"],
    );
    assert_rejected(
        &sticky(r#"{"header":"x-user","cookie":"uid"}"#),
        "services[0].stickyBy",
        &["expected exactly one of header, cookie, claim"],
    );
    assert_rejected(
        &sticky(r#"{"header":"x-user","fromHeader":"x-jwt"}"#),
        "services[0].stickyBy.fromHeader",
        &["fromHeader goes with claim"],
    );
    assert_rejected(
        &sticky(r#"{"header":"x:user"}"#),
        "services[0].stickyBy.header",
        &["expected an HTTP header name"],
    );
    assert_rejected(
        &sticky(r#"{"cookie":"u id"}"#),
        "services[0].stickyBy.cookie",
        &["expected a cookie name"],
    );
    assert_rejected(
        &sticky(r#"{"claim":""}"#),
        "services[0].stickyBy.claim",
        &["expected a claim name"],
    );
    assert_rejected(
        &sticky(r#"{"claim":"sub","fromHeader":"x jwt"}"#),
        "services[0].stickyBy.fromHeader",
        &["expected an HTTP header name"],
    );
    assert_rejected(
        &service(&format!(r#"{SPLIT},"setCookie":{{"name":"pin;x"}}"#)),
        "services[0].setCookie.name",
        &["expected a cookie name, got \"pin;x\""],
    );
    assert_rejected(
        &service(&format!(r#"{SPLIT},"setCookie":{{"name":""}}"#)),
        "services[0].setCookie.name",
        &["expected a cookie name"],
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_full_config_compiles() {
    let r = router(
        r#"{
          "routingHeader": "x-route-version",
          "services": [{
            "host": "*.shop.example.com",
            "pathPrefix": "/checkout",
            "rules": [
              {"match": {"header": {"name": "x-group", "regex": "qa|staff"}}, "version": "v2"},
              {"match": {"cookie": {"name": "beta", "present": true},
                         "query": {"name": "ui", "prefix": "new"}}, "version": "v2"}
            ],
            "split": [{"version": "v1", "weight": 95}, {"version": "v2", "weight": 5}],
            "stickyBy": {"claim": "sub", "fromHeader": "x-jwt-payload"},
            "setCookie": {"name": "checkout-version", "maxAge": "24h"}
          }, {
            "host": "reviews",
            "split": [{"version": "blue", "weight": 0}, {"version": "green", "weight": 100}]
          }]
        }"#,
    );
    assert_eq!(r.services.len(), 2);
    let d = r.decide(
        &req(&[
            (":authority", "eu.shop.example.com:443"),
            (":path", "/checkout/pay?ui=new1"),
            ("cookie", "beta=1"),
        ]),
        no_draw,
    );
    assert_eq!((d.version, d.reason), (Some("v2"), Some(Reason::Rule(1))));
    let d = r.decide(
        &req(&[
            (":authority", "eu.shop.example.com"),
            (":path", "/checkout"),
        ]),
        || bucket_value(0),
    );
    assert_eq!(
        d.set_cookie.as_deref(),
        Some("checkout-version=v1; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax")
    );
    let d = r.decide(&to("reviews", &[]), || bucket_value(0));
    assert_eq!(d.version, Some("green"));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn routing_header_must_be_one_the_filter_can_own() {
    for name in ["host", "Cookie", "authorization", "x-request-id"] {
        let json = format!(
            r#"{{"routingHeader":"{name}","services":[{{"host":"*","split":[{{"version":"v1","weight":100}}]}}]}}"#
        );
        assert_rejected(&json, "routingHeader", &["has a meaning of its own"]);
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn pin_cookie_max_age_under_a_second_is_rejected() {
    assert_rejected(
        &service(&format!(
            r#"{SPLIT},"setCookie":{{"name":"pin","maxAge":"500ms"}}"#
        )),
        "services[0].setCookie.maxAge",
        &["expected at least 1s"],
    );
}
