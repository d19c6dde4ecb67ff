//! The anomaly signal: log-scale buckets and p95, the judgement of a window
//! against its baseline, and the detector across two workers sharing one
//! process's shared data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kit::fake::Phase;
use kit::{FakeHost, Filter, Headers, Host, HttpFilter, LogLevel, MapType};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use telemetry::Telemetry;
use telemetry::anomaly::{self, BUCKETS, Counts, Kind, Shared, judge};
use telemetry::config::Anomaly;

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn settings() -> Anomaly {
    Anomaly {
        enabled: true,
        window: Duration::from_secs(5),
        baseline: Duration::from_secs(60),
        factor: 3.0,
        min_delta: 0.05,
        min_latency_delta: Duration::from_millis(25),
        min_requests: 20,
    }
}

/// A window of `n` requests, `errors` of them failed, latencies from
/// `latency(i)`.
fn window(n: u64, errors: u64, latency: impl Fn(u64) -> u64) -> Counts {
    let mut c = Counts::default();
    for i in 0..n {
        c.add(i < errors, latency(i));
    }
    c
}

/// Judges `counts` as the next closed window of `rec`.
fn close(cfg: &Anomaly, rec: &mut Shared, counts: Counts) -> Vec<anomaly::Event> {
    rec.counts = counts;
    judge(cfg, "orders", rec)
}

/// A small deterministic generator (xorshift), for noisy healthy traffic.
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn buckets_are_quarter_octaves_and_p95_picks_the_right_one() {
    assert_eq!(anomaly::bucket(0), 0);
    assert_eq!(anomaly::bucket(1), 0);
    assert_eq!(anomaly::bucket(2), 4);
    assert_eq!(anomaly::bucket(3), 7);
    assert_eq!(anomaly::bucket(u64::MAX), BUCKETS - 1);
    for ms in [2u64, 3, 10, 100, 999, 5000] {
        let i = anomaly::bucket(ms);
        assert!(anomaly::bucket_bound(i) >= ms as f64, "{ms} in bucket {i}");
        assert!(
            anomaly::bucket_bound(i - 1) < ms as f64,
            "{ms} in bucket {i}"
        );
    }
    assert_eq!(anomaly::p95(&[0; BUCKETS]), 0.0);
    // 95 fast, 5 slow: the p95 is still fast; one more slow one and it is not.
    let c = window(100, 0, |i| if i < 95 { 2 } else { 400 });
    assert_eq!(anomaly::p95(&c.buckets), 2.0);
    let c = window(100, 0, |i| if i < 94 { 2 } else { 400 });
    assert!(anomaly::p95(&c.buckets) >= 400.0);
}

#[test]
fn no_alarm_while_the_baseline_warms_up() {
    let cfg = settings();
    let mut rec = Shared::default();
    // 12 windows (60s / 5s) to warm up; every one of them failing half its
    // requests raises nothing.
    for _ in 0..12 {
        assert!(close(&cfg, &mut rec, window(100, 50, |_| 3)).is_empty());
    }
    assert_eq!(rec.baseline.learnt, 12);
    assert!((rec.baseline.error_rate - 0.5).abs() < 1e-9);
}

#[test]
fn a_steady_healthy_route_never_alarms() {
    let cfg = settings();
    let mut rec = Shared::default();
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    // 2,000 windows of healthy but noisy traffic: 0 to 2% errors, latency
    // 1 to 20 ms with a tail to 40 ms, 20 to 220 requests.
    for _ in 0..2000 {
        let n = 20 + noise.next() % 200;
        let errors = noise.next() % (n / 50 + 1);
        let tail = noise.next().is_multiple_of(10);
        let mut c = Counts::default();
        for i in 0..n {
            let ms = 1 + noise.next() % 20 + if tail && i % 7 == 0 { 20 } else { 0 };
            c.add(i < errors, ms);
        }
        let events = close(&cfg, &mut rec, c);
        assert!(
            events.is_empty(),
            "{events:?} with baseline {:?}",
            rec.baseline
        );
    }
}

#[test]
fn an_error_spike_fires_once_and_clears_once() {
    let cfg = settings();
    let mut rec = Shared::default();
    for _ in 0..12 {
        assert!(close(&cfg, &mut rec, window(100, 1, |_| 3)).is_empty());
    }
    let base = rec.baseline.error_rate;
    let fired = close(&cfg, &mut rec, window(100, 30, |_| 3));
    assert_eq!(fired.len(), 1, "{fired:?}");
    let e = &fired[0];
    assert_eq!((e.kind, e.firing, e.samples), (Kind::ErrorRate, true, 100));
    assert!((e.current - 0.3).abs() < 1e-9);
    assert!((e.baseline - base).abs() < 1e-9);
    assert!(rec.firing_error_rate);
    // Still failing: no new event, and the fault is not learnt.
    for _ in 0..20 {
        assert!(close(&cfg, &mut rec, window(100, 30, |_| 3)).is_empty());
    }
    assert!((rec.baseline.error_rate - base).abs() < 1e-9);
    // Too few requests to judge: nothing changes.
    assert!(close(&cfg, &mut rec, window(19, 0, |_| 3)).is_empty());
    assert!(rec.firing_error_rate);
    let cleared = close(&cfg, &mut rec, window(100, 1, |_| 3));
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert_eq!(
        (cleared[0].kind, cleared[0].firing),
        (Kind::ErrorRate, false)
    );
    assert!(!rec.firing_error_rate);

    let json: serde_json::Value = serde_json::from_str(&e.to_json(Duration::from_secs(5))).unwrap();
    assert_eq!(json["event"], "route_anomaly");
    assert_eq!(json["state"], "firing");
    assert_eq!(json["route"], "orders");
    assert_eq!(json["kind"], "error_rate");
    assert_eq!(json["unit"], "ratio");
    assert_eq!(json["samples"], 100);
    assert_eq!(json["current"], 0.3);
    assert_eq!(json["window"], "5s");
}

#[test]
fn each_threshold_is_needed() {
    let cfg = settings();
    let warm = |err: u64| {
        let mut rec = Shared::default();
        for _ in 0..12 {
            close(&cfg, &mut rec, window(100, err, |_| 3));
        }
        rec
    };
    // From 0%: 4% errors is below minDelta (5 points).
    let mut rec = warm(0);
    assert!(close(&cfg, &mut rec, window(100, 4, |_| 3)).is_empty());
    // From 10%: 25% is 15 points up but under 3x.
    let mut rec = warm(10);
    assert!(close(&cfg, &mut rec, window(100, 25, |_| 3)).is_empty());
    // From 10%: 31% is both.
    let mut rec = warm(10);
    assert_eq!(close(&cfg, &mut rec, window(100, 31, |_| 3)).len(), 1);
    // 40% errors in a window of 19 requests (minRequests 20): not judged.
    let mut rec = warm(0);
    assert!(close(&cfg, &mut rec, window(19, 8, |_| 3)).is_empty());
}

#[test]
fn a_latency_rise_fires_on_the_p95() {
    let cfg = settings();
    let mut rec = Shared::default();
    for _ in 0..12 {
        close(&cfg, &mut rec, window(100, 0, |_| 4));
    }
    // 4 ms to 16 ms: 4x, but only 12 ms up (minLatencyDelta 25 ms).
    assert!(close(&cfg, &mut rec, window(100, 0, |_| 16)).is_empty());
    // A slow tail of 10% at 200 ms moves the p95.
    let fired = close(
        &cfg,
        &mut rec,
        window(100, 0, |i| if i < 10 { 200 } else { 4 }),
    );
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!((fired[0].kind, fired[0].firing), (Kind::Latency, true));
    assert!(fired[0].current >= 200.0);
    assert!(!rec.firing_error_rate);
    let cleared = close(&cfg, &mut rec, window(100, 0, |_| 4));
    assert_eq!((cleared[0].kind, cleared[0].firing), (Kind::Latency, false));
}

// ---- The detector in the filter, two workers over one process. ----

const CONFIG: &str = r#"{
  "routes": [{"name": "orders", "pathPrefix": "/orders"}],
  "accessLog": {"enabled": false},
  "anomaly": {"window": "1s", "baseline": "3s", "minRequests": 10}
}"#;

const T0: u64 = 1_700_000_000_000;

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(T0 + ms)
}

fn request(f: &Rc<Telemetry>, host: &FakeHost, path: &str, status: i64) {
    host.set_phase(Phase::Request);
    host.set_map(
        MapType::RequestHeaders,
        Headers::from_pairs([(":path", path.as_bytes()), (":method", b"GET".as_slice())]),
    );
    let mut http = f.new_http();
    http.on_request_headers(host, true);
    host.set_phase(Phase::Log);
    host.set_property(&["response", "code"], &status.to_le_bytes());
    host.set_property(&["request", "duration"], &3_000_000i64.to_le_bytes());
    http.on_log(host);
}

fn events(host: &FakeHost) -> Vec<serde_json::Value> {
    host.logs
        .borrow()
        .iter()
        .filter(|(l, m)| *l == LogLevel::Warn && m.contains("route_anomaly"))
        .map(|(_, m)| serde_json::from_str(m).unwrap())
        .collect()
}

const GAUGE: &str = "route_anomaly;route=orders;kind=error_rate";

/// Runs `seconds` of traffic in which each of two workers serves 10
/// requests per second on /orders (with `failing`, every other one a 503)
/// plus some unmatched 500s, ticking every 200 ms. Returns the new events.
fn traffic(
    host: &FakeHost,
    workers: &[Rc<Telemetry>; 2],
    clock: &mut u64,
    seconds: u64,
    failing: bool,
) -> Vec<serde_json::Value> {
    host.logs.borrow_mut().clear();
    for _ in 0..seconds * 5 {
        for f in workers {
            for i in 0..2u64 {
                let status = if failing && i == 0 { 503 } else { 200 };
                request(f, host, "/orders/1", status);
            }
            request(f, host, "/elsewhere", 500);
        }
        *clock += 200;
        host.set_now(at(*clock));
        for f in workers {
            f.on_tick(host);
        }
    }
    events(host)
}

#[test]
fn two_workers_raise_one_event_per_change() {
    let host = FakeHost::new();
    host.set_now(at(0));
    host.set_property(&["plugin_name"], b"edge-telemetry");
    let workers = [
        Rc::new(Telemetry::configure(Some(CONFIG.as_bytes()), &host).unwrap()),
        Rc::new(Telemetry::configure(Some(CONFIG.as_bytes()), &host).unwrap()),
    ];
    assert_eq!(workers[0].tick_period(), Some(Duration::from_millis(200)));
    let key = "mesh-filters/telemetry/edge-telemetry/anomaly/orders";
    assert!(
        host.shared_data(key).unwrap().is_some(),
        "created at configure"
    );
    let mut clock = 0;

    // Healthy: warm-up and beyond, nothing fires.
    assert_eq!(
        traffic(&host, &workers, &mut clock, 8, false),
        Vec::<serde_json::Value>::new()
    );
    assert_eq!(host.metric_value(GAUGE), Some(0));
    let rec: Shared =
        serde_json::from_slice(&host.shared_data(key).unwrap().unwrap().value).unwrap();
    assert!(rec.baseline.learnt >= 3, "{rec:?}");
    assert_eq!(rec.baseline.error_rate, 0.0);

    // Half the /orders requests fail: one firing event, not one per worker.
    let fired = traffic(&host, &workers, &mut clock, 4, true);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["state"], "firing");
    assert_eq!(fired[0]["kind"], "error_rate");
    assert_eq!(fired[0]["route"], "orders");
    // Both workers' requests are in the window: 2 x 10 per second.
    assert_eq!(fired[0]["samples"], 20);
    assert_eq!(fired[0]["current"], 0.5);
    assert_eq!(fired[0]["baseline"], 0.0);
    assert_eq!(host.metric_value(GAUGE), Some(1));

    // Recovery: one resolved event, the gauge back at 0.
    let cleared = traffic(&host, &workers, &mut clock, 4, false);
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert_eq!(cleared[0]["state"], "resolved");
    assert_eq!(host.metric_value(GAUGE), Some(0));
    assert_eq!(
        host.metric_value("route_anomaly;route=orders;kind=latency"),
        Some(0)
    );
}

#[test]
fn a_lost_cas_race_is_retried_without_losing_counts() {
    let host = FakeHost::new();
    host.set_now(at(0));
    let f = Rc::new(Telemetry::configure(Some(CONFIG.as_bytes()), &host).unwrap());
    let key = "mesh-filters/telemetry/telemetry/anomaly/orders";
    f.on_tick(&host);
    for _ in 0..7 {
        request(&f, &host, "/orders", 200);
    }
    // Another worker writes between this worker's read and its write: the
    // first CAS fails, the retry re-reads and merges.
    let current = host.shared_data(key).unwrap().unwrap().value;
    host.interleave_write(key, &current);
    host.set_now(at(300));
    f.on_tick(&host);
    let rec: Shared =
        serde_json::from_slice(&host.shared_data(key).unwrap().unwrap().value).unwrap();
    assert_eq!(rec.counts.requests, 7);
    // Nothing is counted twice on the next tick.
    host.set_now(at(500));
    f.on_tick(&host);
    let rec: Shared =
        serde_json::from_slice(&host.shared_data(key).unwrap().unwrap().value).unwrap();
    assert_eq!(rec.counts.requests, 7);
}

#[test]
fn failing_shared_data_never_panics_and_configure_reports_it() {
    let host = FakeHost::new();
    host.fail("set_shared_data", kit::HostError::InternalFailure);
    let e = match Telemetry::configure(Some(CONFIG.as_bytes()), &host) {
        Ok(_) => panic!("configure should fail"),
        Err(e) => e,
    };
    assert_eq!(e.path, "anomaly");
    // A record written by something else (garbage) is replaced, not trusted.
    let host = FakeHost::new();
    host.set_now(at(0));
    let f = Rc::new(Telemetry::configure(Some(CONFIG.as_bytes()), &host).unwrap());
    let key = "mesh-filters/telemetry/telemetry/anomaly/orders";
    let cas = host.shared_data(key).unwrap().unwrap().cas;
    host.set_shared_data(key, b"\xff not json", Some(cas))
        .unwrap();
    request(&f, &host, "/orders", 200);
    f.on_tick(&host);
    host.set_now(at(2000));
    f.on_tick(&host);
    let rec: Shared =
        serde_json::from_slice(&host.shared_data(key).unwrap().unwrap().value).unwrap();
    assert_eq!(rec.window_ms, 1000);
}
