//! The telemetry filter in a real Envoy 1.40: its `;label=value` stat names
//! reach `/stats/prometheus` as real labels through the shipped
//! `wasmplugins/stats_tags.json`, which the harness applies whenever a plugin
//! runs `telemetry.wasm`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use e2e::{Harness, client};
use serde_json::json;
use std::time::{Duration, Instant};

/// The `requests_total` sample with exactly `labels` (in order), if any.
fn sample(prometheus: &str, labels: &str) -> Option<u64> {
    let prefix = format!("requests_total{{{labels}}} ");
    prometheus
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().expect("integer counter value"))
}

#[test]
fn requests_total_has_prometheus_labels() {
    let config = json!({
        "routes": [{"name": "orders", "pathPrefix": "/orders"}],
        "dimensions": ["route", "method", "response_code"],
    });
    let dir =
        e2e::manifest::write_test_plugin("telemetry-labels", "telemetry", Some("STATS"), &config)
            .unwrap();
    let h = Harness::start(&dir).unwrap();

    for _ in 0..3 {
        assert_eq!(h.get("/orders/1", &[]).unwrap().status, 200);
    }
    for _ in 0..2 {
        let r = h.get("/orders/2", &[("x-demo-status", b"503")]).unwrap();
        assert_eq!(r.status, 503);
    }
    let r = client::request("POST", &h.url("/other"), &[]).unwrap();
    assert_eq!(r.status, 200);

    let expected = [
        (r#"route="orders",method="GET",response_code="200""#, 3),
        (r#"route="orders",method="GET",response_code="503""#, 2),
        (r#"route="unmatched",method="POST",response_code="200""#, 1),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let prometheus = loop {
        let text = h.prometheus().unwrap();
        let done = expected
            .iter()
            .all(|(labels, n)| sample(&text, labels) == Some(*n));
        if done || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let lines: Vec<&str> = prometheus
        .lines()
        .filter(|l| l.contains("requests_total"))
        .collect();
    println!("{}", lines.join("\n"));

    for (labels, n) in expected {
        assert_eq!(
            sample(&prometheus, labels),
            Some(n),
            "requests_total{{{labels}}}; lines:\n{}",
            lines.join("\n")
        );
    }
    assert!(
        lines.contains(&"# TYPE requests_total counter"),
        "{}",
        lines.join("\n")
    );
    assert!(
        !lines.iter().any(|l| l.contains(';')),
        "flattened stat names:\n{}",
        lines.join("\n")
    );
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
}
