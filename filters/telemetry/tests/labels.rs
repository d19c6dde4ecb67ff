//! Label values and their caps, with no host involved.
//!
//! Runs natively and as wasm32 under Node
//! (`cargo test -p telemetry --target wasm32-unknown-unknown --test labels`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kit::Headers;
use kit::hash::mix64;
use std::collections::HashSet;
use telemetry::config::compile_json;
use telemetry::labels::{Caps, MAX_VALUE_LEN, OTHER, code_class, route_name, sanitize, values};
use telemetry::metrics::{stat_name, stats_tags, stats_tags_for};

const ROUTES: &str = r#"{
  "routes": [{"name": "orders", "pathPrefix": "/orders"},
             {"name": "user", "regex": "/users/[0-9]+"},
             {"name": "all-users", "pathPrefix": "/users"}],
  "dimensions": ["route", "method", "response_code", "response_code_class", "version",
                 "header:x-tenant"]
}"#;

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn sanitises() {
    assert_eq!(sanitize(b"GET"), "GET");
    assert_eq!(sanitize(b"v1.2-rc_3"), "v1.2-rc_3");
    assert_eq!(sanitize(b"a;b=c d\"{}\xff"), "a_b_c_d____");
    assert_eq!(sanitize(b""), "unknown");
    assert_eq!(sanitize(&[b'x'; 500]).len(), MAX_VALUE_LEN);
}

/// A request with this `:path`.
fn path(p: &str) -> Headers {
    Headers::from_pairs([(":path", p)])
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn routes_match_in_order_without_query() {
    let c = compile_json(Some(ROUTES.as_bytes())).unwrap();
    assert_eq!(route_name(&c.routes, &path("/orders/7?x=1")), "orders");
    assert_eq!(route_name(&c.routes, &path("/users/42")), "user");
    assert_eq!(route_name(&c.routes, &path("/users/42?tab=1")), "user");
    // The regex must match the whole path.
    assert_eq!(route_name(&c.routes, &path("/users/42/edit")), "all-users");
    assert_eq!(route_name(&c.routes, &path("/other")), "unmatched");
    assert_eq!(route_name(&c.routes, &path("/x?/orders")), "unmatched");
    assert_eq!(route_name(&c.routes, &path("")), "unmatched");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_route_takes_the_shared_match_too() {
    let c = compile_json(Some(
        br#"{"routes": [{"name": "writes", "match": {"pathPrefix": "/api", "methods": ["POST"]}},
                        {"name": "api", "pathPrefix": "/api"}]}"#,
    ))
    .unwrap();
    let req = |m: &str| Headers::from_pairs([(":method", m), (":path", "/api/x")]);
    assert_eq!(route_name(&c.routes, &req("POST")), "writes");
    assert_eq!(route_name(&c.routes, &req("GET")), "api");
    for (json, err) in [
        (
            r#"{"routes": [{"name": "a", "pathPrefix": "/a", "match": {}}]}"#,
            "routes[0]: expected exactly one of pathPrefix, regex, match",
        ),
        (
            r#"{"routes": [{"name": "a", "match": {"pathPrefix": "a"}}]}"#,
            "routes[0].match.pathPrefix: expected a path starting with",
        ),
        (
            r#"{"routes": [{"name": "a", "regex": "("}]}"#,
            "routes[0].regex: invalid regex",
        ),
    ] {
        let e = compile_json(Some(json.as_bytes())).unwrap_err().to_string();
        assert!(e.starts_with(err), "{json}: {e}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn values_come_from_configured_sources() {
    let c = compile_json(Some(ROUTES.as_bytes())).unwrap();
    let h = Headers::from_pairs([
        (":path", b"/orders?id=1".as_slice()),
        (":method", b"POST"),
        ("x-route-version", b"v2"),
        ("x-tenant", b"acme corp"),
    ]);
    assert_eq!(
        values(&c, &h, 503),
        vec!["orders", "POST", "503", "5xx", "v2", "acme_corp"]
    );
    assert_eq!(
        values(&c, &Headers::new(), 0),
        vec!["unmatched", "unknown", "0", "0xx", "unknown", "unknown"]
    );
    assert_eq!(code_class(200), "2xx");
    assert_eq!(code_class(499), "4xx");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn caps_hold_under_random_paths_and_hosts() {
    let c = compile_json(Some(
        br#"{"routes": [{"name": "orders", "pathPrefix": "/orders"}],
            "dimensions": ["route", "header:host", "header:x-path"],
            "maxValuesPerLabel": 50}"#,
    ))
    .unwrap();
    let mut caps = Caps::new(3, 50);
    let mut seen: Vec<HashSet<String>> = vec![HashSet::new(); 3];
    let mut overflows = 0;
    for i in 0..10_000u64 {
        let r = mix64(i);
        let path = format!(
            "/{}{:x}",
            if r.is_multiple_of(3) { "orders/" } else { "" },
            r
        );
        let host = format!("h{:x}.example.com", mix64(r));
        let h = Headers::from_pairs([
            (":path", path.as_bytes()),
            ("host", host.as_bytes()),
            ("x-path", path.as_bytes()),
        ]);
        for (l, v) in values(&c, &h, 200).into_iter().enumerate() {
            let (v, over) = caps.bound(l, v);
            overflows += usize::from(over);
            seen[l].insert(v);
        }
    }
    assert_eq!(
        seen[0],
        HashSet::from(["orders".into(), "unmatched".into()])
    );
    for s in &seen[1..] {
        assert_eq!(s.len(), 51, "50 values and other");
        assert!(s.contains(OTHER));
    }
    assert!(seen.iter().all(|s| s.len() <= 51));
    assert_eq!(overflows, 2 * (10_000 - 50));
    assert_eq!(caps.admitted(1), 50);
    // Values already admitted keep their name.
    let first = seen[1].iter().find(|v| *v != OTHER).unwrap().clone();
    assert_eq!(caps.bound(1, first.clone()), (first, false));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn stat_names_and_tags() {
    let labels = vec![
        ("route".to_string(), "orders".to_string()),
        ("response_code".to_string(), "200".to_string()),
        ("response_code_class".to_string(), "2xx".to_string()),
        ("x_route".to_string(), "a.b".to_string()),
    ];
    let name = stat_name("requests_total", &labels);
    assert_eq!(
        name,
        "requests_total;route=orders;response_code=200;response_code_class=2xx;x_route=a.b"
    );
    let tags = stats_tags();
    let list = tags.as_array().unwrap();
    let names: Vec<&str> = list
        .iter()
        .map(|t| t["tag_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "route",
            "method",
            "response_code",
            "response_code_class",
            "version",
            "source_workload",
            "label",
            "kind"
        ]
    );
    // Extract as Envoy does: the first group is removed, the second is the
    // value; every regex runs on the full name.
    let c = compile_json(Some(br#"{"dimensions": ["route", "header:x-route"]}"#)).unwrap();
    let all = stats_tags_for(&c.dimensions);
    let mut rest = format!("wasmcustom.{name}");
    let mut found = Vec::new();
    for t in all.as_array().unwrap() {
        let re = regex_lite::Regex::new(t["regex"].as_str().unwrap()).unwrap();
        if let Some(m) = re.captures(&format!("wasmcustom.{name}")) {
            found.push((
                t["tag_name"].as_str().unwrap().to_string(),
                m[2].to_string(),
            ));
            rest = rest.replace(&m[1], "");
        }
    }
    assert_eq!(rest, "wasmcustom.requests_total");
    assert_eq!(
        found,
        vec![
            ("route".to_string(), "orders".to_string()),
            ("response_code".to_string(), "200".to_string()),
            ("response_code_class".to_string(), "2xx".to_string()),
            ("x_route".to_string(), "a.b".to_string()),
        ]
    );
}
