//! The canary router in a real Envoy 1.40 with the demo upstreams.

use e2e::{Harness, Options};
use serde_json::{Value, json};
use std::path::PathBuf;

fn examples() -> PathBuf {
    e2e::envoy::workspace_root().join("wasmplugins/examples/reviews")
}

/// A manifest directory with one canary-router WasmPlugin.
fn manifest_dir(name: &str, config: &Value) -> PathBuf {
    e2e::manifest::write_test_plugin(name, "canary-router", None, config).unwrap()
}

fn reviews(split: Value) -> Value {
    json!({
        "routingHeader": "x-route-version",
        "services": [{
            "host": "reviews",
            "rules": [{"match": {"header": {"name": "canary", "exact": "true"}}, "version": "v2"}],
            "split": split,
            "stickyBy": {"header": "x-user-id"},
            "setCookie": {"name": "route-version", "maxAge": "1h"}
        }]
    })
}

fn version(h: &Harness, headers: &[(&str, &[u8])]) -> String {
    let r = h.get("/", headers).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["version"].as_str().unwrap().to_string()
}

fn assert_no_trap(h: &Harness) {
    let traps = h.wasm_traps();
    assert!(traps.is_empty(), "Envoy log shows a Wasm trap: {traps:#?}");
}

#[test]
fn header_cookie_query_and_regex_rules_route_to_v2() {
    let h = Harness::start(&examples()).unwrap();
    let host: (&str, &[u8]) = ("host", b"reviews");
    // A user id that the split sends to v1, so only the rule can pick v2.
    let user = (0..200)
        .map(|i| format!("user-{i}"))
        .find(|u| version(&h, &[host, ("x-user-id", u.as_bytes())]) == "v1")
        .unwrap();
    let uid: (&str, &[u8]) = ("x-user-id", user.as_bytes());
    assert_eq!(version(&h, &[host, uid]), "v1");
    assert_eq!(version(&h, &[host, uid, ("canary", b"true")]), "v2");
    assert_eq!(version(&h, &[host, uid, ("canary", b"false")]), "v1");
    assert_eq!(version(&h, &[host, uid, ("cookie", b"beta=1")]), "v2");
    assert_eq!(version(&h, &[host, uid, ("x-user-group", b"staff")]), "v2");
    // The regex must match the whole value.
    assert_eq!(
        version(&h, &[host, uid, ("x-user-group", b"staffing")]),
        "v1"
    );
    let r = h.get("/?version=v2", &[host, uid]).unwrap();
    assert_eq!(r.json()["version"], "v2");
    // The upstream sees the decision in the routing header.
    let r = h.get("/", &[host, uid, ("canary", b"true")]).unwrap();
    assert_eq!(r.json()["headers"]["x-route-version"], "v2");
    assert_no_trap(&h);
}

#[test]
fn split_of_2000_users_lands_within_3_points_and_users_stick() {
    let h = Harness::start(&examples()).unwrap();
    let mut v2 = 0;
    for i in 0..2000 {
        let user = format!("customer-{i}");
        if version(&h, &[("host", b"reviews"), ("x-user-id", user.as_bytes())]) == "v2" {
            v2 += 1;
        }
    }
    let share = f64::from(v2) / 2000.0 * 100.0;
    assert!(
        (7.0..=13.0).contains(&share),
        "v2 got {share:.1}% of 2000 users, want 10 ± 3"
    );

    // 200 requests from one user all go to the same version.
    for user in ["alice", "bob"] {
        let first = version(&h, &[("host", b"reviews"), ("x-user-id", user.as_bytes())]);
        for _ in 0..200 {
            assert_eq!(
                version(&h, &[("host", b"reviews"), ("x-user-id", user.as_bytes())]),
                first
            );
        }
    }
    assert_no_trap(&h);
}

#[test]
fn blue_green_switches_all_traffic_and_previews_the_idle_version() {
    let blue = manifest_dir(
        "blue",
        &reviews(json!([{"version": "v1", "weight": 100}, {"version": "v2", "weight": 0}])),
    );
    let h = Harness::start(&blue).unwrap();
    for i in 0..100 {
        let user = format!("u{i}");
        assert_eq!(
            version(&h, &[("host", b"reviews"), ("x-user-id", user.as_bytes())]),
            "v1"
        );
    }
    // The idle version stays reachable through the preview rule.
    assert_eq!(
        version(&h, &[("host", b"reviews"), ("canary", b"true")]),
        "v2"
    );
    drop(h);

    let green = manifest_dir(
        "green",
        &reviews(json!([{"version": "v1", "weight": 0}, {"version": "v2", "weight": 100}])),
    );
    let h = Harness::start(&green).unwrap();
    for i in 0..100 {
        let user = format!("u{i}");
        assert_eq!(
            version(&h, &[("host", b"reviews"), ("x-user-id", user.as_bytes())]),
            "v2"
        );
    }
    assert_eq!(version(&h, &[("host", b"reviews")]), "v2");
}

#[test]
fn a_client_sent_routing_header_cannot_force_v2() {
    let blue = manifest_dir(
        "force",
        &reviews(json!([{"version": "v1", "weight": 100}, {"version": "v2", "weight": 0}])),
    );
    let h = Harness::start(&blue).unwrap();
    for _ in 0..20 {
        let r = h
            .get("/", &[("host", b"reviews"), ("x-route-version", b"v2")])
            .unwrap();
        assert_eq!(r.json()["version"], "v1");
        assert_eq!(r.json()["headers"]["x-route-version"], "v1");
    }
    // Twice, in two headers.
    let r = h
        .get(
            "/",
            &[
                ("host", b"reviews"),
                ("x-route-version", b"v2"),
                ("x-route-version", b"v2"),
            ],
        )
        .unwrap();
    assert_eq!(r.json()["version"], "v1");
    // A host no service matches: the header is removed, not trusted.
    let r = h
        .get("/", &[("host", b"ratings"), ("x-route-version", b"v2")])
        .unwrap();
    assert_eq!(r.json()["version"], "v1");
    assert!(
        r.json()["headers"].get("x-route-version").is_none(),
        "{}",
        r.body
    );
}

#[test]
fn the_pin_cookie_holds_and_a_forged_pin_to_an_idle_version_does_not() {
    let h = Harness::start(&examples()).unwrap();
    // No user id: a random draw, which pins the client.
    let r = h.get("/", &[("host", b"reviews")]).unwrap();
    let got = r.json()["version"].as_str().unwrap().to_string();
    let cookie = r.header("set-cookie").expect("a pin cookie");
    assert!(
        cookie.starts_with(&format!("route-version={got};")),
        "{cookie}"
    );
    assert!(cookie.contains("Max-Age=3600"), "{cookie}");
    // Pin each version in turn: every later request follows the pin.
    for pinned in ["v1", "v2"] {
        let c = format!("route-version={pinned}");
        for _ in 0..50 {
            let r = h
                .get("/", &[("host", b"reviews"), ("cookie", c.as_bytes())])
                .unwrap();
            assert_eq!(r.json()["version"], pinned);
            assert!(r.header("set-cookie").is_none());
        }
    }
    drop(h);

    let blue = manifest_dir(
        "pin",
        &reviews(json!([{"version": "v1", "weight": 100}, {"version": "v2", "weight": 0}])),
    );
    let h = Harness::start(&blue).unwrap();
    for _ in 0..20 {
        let r = h
            .get(
                "/",
                &[("host", b"reviews"), ("cookie", b"route-version=v2")],
            )
            .unwrap();
        assert_eq!(r.json()["version"], "v1");
        // The forged pin is replaced.
        assert!(
            r.header("set-cookie")
                .unwrap()
                .starts_with("route-version=v1;")
        );
    }
}

#[test]
fn non_utf8_header_values_are_served_without_a_trap() {
    let h = Harness::start(&examples()).unwrap();
    let odd: &[u8] = &[0xff, 0xfe, b'a', 0x80];
    for headers in [
        vec![("host", &b"reviews"[..]), ("x-odd", odd)],
        vec![("host", &b"reviews"[..]), ("x-user-id", odd)],
        vec![("host", &b"reviews"[..]), ("x-user-group", odd)],
        vec![("host", &b"reviews"[..]), ("cookie", odd)],
        vec![
            ("host", &b"reviews"[..]),
            ("canary", odd),
            ("x-route-version", odd),
        ],
    ] {
        for _ in 0..5 {
            let r = h.get("/", &headers).unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    // Later requests on the same workers still work.
    assert_eq!(
        version(&h, &[("host", b"reviews"), ("canary", b"true")]),
        "v2"
    );
    assert_no_trap(&h);
}

#[test]
fn an_invalid_manifest_is_rejected_by_validate_and_at_start() {
    let bad = manifest_dir(
        "invalid",
        &reviews(json!([{"version": "v1", "weight": 80}, {"version": "v2", "weight": 10}])),
    );
    let e = format!("{:#}", Harness::validate(&bad).unwrap_err());
    assert!(
        e.contains("services[0].split: weights must total 100, got 90"),
        "{e}"
    );

    let e = Harness::start_with(
        &bad,
        Options {
            skip_validate: true,
            ..Options::default()
        },
    )
    .err()
    .expect("Envoy must refuse the plugin at start");
    let e = format!("{e:#}");
    assert!(
        e.contains("services[0].split: weights must total 100, got 90"),
        "{e}"
    );

    for (name, config, field) in [
        (
            "unknown-version",
            json!({"services": [{"host": "reviews",
                "rules": [{"match": {"header": {"name": "a", "exact": "b"}}, "version": "v3"}],
                "split": [{"version": "v1", "weight": 100}]}]}),
            "services[0].rules[0].version",
        ),
        (
            "bad-regex",
            json!({"services": [{"host": "reviews",
                "rules": [{"match": {"header": {"name": "a", "regex": "("}}, "version": "v1"}],
                "split": [{"version": "v1", "weight": 100}]}]}),
            "services[0].rules[0].match.header.regex",
        ),
        (
            "bad-duration",
            json!({"services": [{"host": "reviews", "split": [{"version": "v1", "weight": 100}],
                "setCookie": {"name": "pin", "maxAge": "an hour"}}]}),
            "services[0].setCookie.maxAge",
        ),
        (
            "wrong-type",
            json!({"services": [{"host": "reviews", "split": [{"version": "v1", "weight": "100"}]}]}),
            "services[0].split[0].weight",
        ),
    ] {
        let e = format!(
            "{:#}",
            Harness::validate(&manifest_dir(name, &config)).unwrap_err()
        );
        assert!(e.contains(field), "{name}: the log must name {field}:\n{e}");
    }
}
