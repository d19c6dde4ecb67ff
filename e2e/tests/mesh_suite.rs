//! `mesh_suite.wasm` with all four stages in ONE plugin, in a real Envoy
//! 1.40: the canary stage routes, the rate-limit stage refuses, and the
//! telemetry stage counts both with the labels the earlier stages decided.
//! (Every other e2e test also runs against the suite with `MESH_SUITE=1`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use e2e::Harness;
use serde_json::json;
use std::time::{Duration, Instant};

fn count(h: &Harness, labels: &str) -> Option<u64> {
    let prefix = format!("requests_total{{{labels}}} ");
    h.prometheus()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().parse().unwrap()))
}

fn wait_count(h: &Harness, labels: &str, want: u64) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = count(h, labels);
        if v == Some(want) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn all_four_stages_in_one_plugin() {
    let config = json!({
        "jwt": {
            "providers": [{"name": "demo", "issuer": "https://issuer.example.com",
                           "jwks": e2e::harness::demo_jwks().unwrap()}],
            "rules": [{"match": {"pathPrefix": "/"}, "requires": "optional"}],
        },
        "rateLimit": {"rules": [{"name": "limited", "match": {"pathPrefix": "/limited"},
                                 "limit": {"requests": 2, "per": "1h"}}]},
        "canary": {"services": [{"host": "*",
            "rules": [{"match": {"header": {"name": "x-canary", "exact": "yes"}}, "version": "v2"}],
            "split": [{"version": "v1", "weight": 100}, {"version": "v2", "weight": 0}]}]},
        "telemetry": {
            "routes": [{"name": "orders", "pathPrefix": "/orders"},
                       {"name": "limited", "pathPrefix": "/limited"}],
            "dimensions": ["route", "response_code", "version"],
            "accessLog": {"enabled": false},
        },
    });
    let dir = e2e::manifest::write_test_plugin("suite-all", "mesh-suite", Some("AUTHN"), &config)
        .unwrap();
    let h = Harness::start(&dir).unwrap();

    // Canary: routed to v2, and telemetry labels it v2.
    let r = h.get("/orders/1", &[("x-canary", b"yes")]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], "v2", "{}", r.body);
    let r = h.get("/orders/1", &[]).unwrap();
    assert_eq!(r.json()["version"], "v1", "{}", r.body);

    // Rate limit: the third is refused, and counted.
    let statuses: Vec<u16> = (0..3)
        .map(|_| h.get("/limited", &[("x-canary", b"yes")]).unwrap().status)
        .collect();
    assert_eq!(statuses, [200, 200, 429]);

    // A bad token on the optional rule is still a 401.
    let r = h
        .get("/orders/2", &[("authorization", b"Bearer not.a.token")])
        .unwrap();
    assert_eq!(r.status, 401);

    assert_eq!(
        wait_count(&h, r#"route="orders",response_code="200",version="v2""#, 1),
        Some(1)
    );
    assert_eq!(
        count(&h, r#"route="orders",response_code="200",version="v1""#),
        Some(1)
    );
    assert_eq!(
        count(&h, r#"route="limited",response_code="200",version="v2""#),
        Some(2)
    );
    // The refused request never reached the canary stage: no version.
    assert_eq!(
        count(
            &h,
            r#"route="limited",response_code="429",version="unknown""#
        ),
        Some(1)
    );
    assert_eq!(
        count(
            &h,
            r#"route="orders",response_code="401",version="unknown""#
        ),
        Some(1)
    );
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
}
