//! The telemetry filter's anomaly signal in a real Envoy 1.40 with two
//! workers: when the demo upstream starts failing half its requests, the
//! gauge `route_anomaly{route="orders",kind="error_rate"}` goes to 1 and one
//! warn-level `route_anomaly` event is logged (not one per worker); after
//! recovery the gauge returns to 0 with one `resolved` event. A steady
//! healthy run of the same length raises nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use e2e::Harness;
use e2e::upstream::Faults;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const GAUGE: &str = r#"route_anomaly{route="orders",kind="error_rate"}"#;
const LATENCY_GAUGE: &str = r#"route_anomaly{route="orders",kind="latency"}"#;

fn start(name: &str) -> Harness {
    // 1 s windows, a 3 s baseline (3 windows to warm up), 10 requests to
    // judge a window; error-rate thresholds are the defaults (3x, 5
    // points). The latency delta is wide because CI runs many Envoys on two
    // cores, where a 25 ms p95 rise is real but not what this test is about.
    let config = json!({
        "routes": [{"name": "orders", "pathPrefix": "/orders"}],
        "dimensions": ["route", "response_code"],
        "accessLog": {"enabled": false},
        "anomaly": {"window": "1s", "baseline": "3s", "minRequests": 10,
                    "minLatencyDelta": "250ms"},
    });
    let dir = e2e::manifest::write_test_plugin(name, "telemetry", Some("STATS"), &config).unwrap();
    Harness::start(&dir).unwrap()
}

/// Sends /orders requests at about 50 per second for `length`; returns how
/// many got a 5xx.
fn load(h: &Harness, length: Duration) -> usize {
    let end = Instant::now() + length;
    let mut failed = 0;
    while Instant::now() < end {
        let r = h.get("/orders/42", &[]).unwrap();
        if r.status >= 500 {
            failed += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    failed
}

/// The value of the sample `name` (labels included) in /stats/prometheus.
fn gauge(h: &Harness, name: &str) -> Option<u64> {
    let text = h.prometheus().unwrap();
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

/// Polls `gauge` until it reads `want` (bounded).
fn wait_gauge(h: &Harness, name: &str, want: u64, within: Duration) -> Option<u64> {
    let end = Instant::now() + within;
    loop {
        let v = gauge(h, name);
        if v == Some(want) || Instant::now() > end {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The anomaly events in Envoy's log, parsed.
fn events(h: &Harness) -> Vec<Value> {
    h.log()
        .lines()
        .filter(|l| l.contains("\"event\":\"route_anomaly\""))
        .map(|l| {
            assert!(l.contains("[warning]"), "not at warn level: {l}");
            let json = &l[l.find('{').unwrap()..];
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .collect()
}

#[test]
fn an_upstream_failing_half_its_requests_fires_and_recovery_clears() {
    let h = start("telemetry-anomaly-fires");
    // Warm up on healthy traffic.
    assert_eq!(load(&h, Duration::from_secs(6)), 0);
    assert_eq!(gauge(&h, GAUGE), Some(0), "gauges are defined at 0");
    assert!(events(&h).is_empty(), "{:?}", events(&h));

    h.upstream("v1").unwrap().set_faults(
        Faults {
            fail_ratio: 0.5,
            status: 503,
            ..Faults::default()
        },
        Some(Duration::from_secs(5)),
    );
    let failed = load(&h, Duration::from_secs(5));
    assert!(failed > 50, "the upstream failed only {failed} requests");
    assert_eq!(wait_gauge(&h, GAUGE, 1, Duration::from_secs(3)), Some(1));
    let fired = events(&h);
    assert_eq!(fired.len(), 1, "one event, not one per worker: {fired:?}");
    let e = &fired[0];
    assert_eq!(e["state"], "firing");
    assert_eq!(e["route"], "orders");
    assert_eq!(e["kind"], "error_rate");
    assert_eq!(e["unit"], "ratio");
    assert_eq!(e["window"], "1s");
    assert!(e["samples"].as_u64().unwrap() >= 10, "{e}");
    let current = e["current"].as_f64().unwrap();
    let baseline = e["baseline"].as_f64().unwrap();
    assert!(current >= 0.05 && current >= 3.0 * baseline, "{e}");

    // Recovery (the faults ended with their 5 s).
    assert_eq!(load(&h, Duration::from_secs(5)), 0);
    assert_eq!(wait_gauge(&h, GAUGE, 0, Duration::from_secs(3)), Some(0));
    let all = events(&h);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1]["state"], "resolved");
    assert_eq!(all[1]["kind"], "error_rate");
    assert_eq!(gauge(&h, LATENCY_GAUGE), Some(0));
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
}

#[test]
fn a_steady_healthy_run_raises_nothing() {
    let h = start("telemetry-anomaly-steady");
    // As long as the run above, all healthy.
    assert_eq!(load(&h, Duration::from_secs(16)), 0);
    // Let the last windows close.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(events(&h).is_empty(), "{:?}", events(&h));
    assert_eq!(gauge(&h, GAUGE), Some(0));
    assert_eq!(gauge(&h, LATENCY_GAUGE), Some(0));
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
}
