//! The glue: `Telemetry` as a `kit::Filter`, driven through its
//! `HttpFilter` callbacks against `kit::FakeHost`. Native only.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kit::fake::Phase;
use kit::{Action, FakeHost, Filter, HttpFilter, LogLevel, MapType};
use std::rc::Rc;
use telemetry::Telemetry;
use telemetry::filter::{int_property, parse_traceparent, rfc3339};

const CONFIG: &str = r#"{
  "routes": [{"name": "orders", "pathPrefix": "/orders"},
             {"name": "user", "regex": "/users/[0-9]+"}],
  "dimensions": ["route", "method", "response_code", "version"],
  "maxValuesPerLabel": 3,
  "accessLog": {"userClaim": {"claim": "sub"}},
  "tracing": {"generateTraceparent": true, "responseHeader": "x-trace-id"}
}"#;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn configure(host: &FakeHost, config: &str) -> Rc<Telemetry> {
    match Telemetry::configure(Some(config.as_bytes()), host) {
        Ok(f) => Rc::new(f),
        Err(e) => panic!("config should compile: {e}"),
    }
}

fn set_request(host: &FakeHost, pairs: &[(&str, &str)]) {
    let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    host.start_request(&pairs);
    host.logs.borrow_mut().clear();
}

fn set_log_properties(
    host: &FakeHost,
    status: i64,
    duration_ns: i64,
    bytes_in: i64,
    bytes_out: i64,
) {
    host.set_property(&["response", "code"], &status.to_le_bytes());
    host.set_property(&["request", "duration"], &duration_ns.to_le_bytes());
    host.set_property(&["request", "total_size"], &bytes_in.to_le_bytes());
    host.set_property(&["response", "total_size"], &bytes_out.to_le_bytes());
}

/// A full request: headers, response, log.
fn run(
    f: &Rc<Telemetry>,
    host: &FakeHost,
    pairs: &[(&str, &str)],
    status: i64,
) -> <Telemetry as Filter>::Http {
    set_request(host, pairs);
    let mut http = f.new_http();
    assert_eq!(http.on_request_headers(host, true), Action::Continue);
    host.set_phase(Phase::Response);
    assert_eq!(http.on_response_headers(host, true), Action::Continue);
    host.set_phase(Phase::Log);
    set_log_properties(host, status, 12_500_000, 300, 1_200);
    http.on_log(host);
    http
}

fn log_lines(host: &FakeHost) -> Vec<(LogLevel, serde_json::Value)> {
    host.logs
        .borrow()
        .iter()
        .map(|(l, m)| (*l, serde_json::from_str(m).unwrap()))
        .collect()
}

#[test]
fn counts_and_records_histograms() {
    let host = FakeHost::new();
    let f = configure(&host, CONFIG);
    let req = [
        (":method", "GET"),
        (":path", "/orders/1?x=2"),
        ("x-route-version", "v2"),
    ];
    run(&f, &host, &req, 200);
    run(&f, &host, &req, 200);
    run(
        &f,
        &host,
        &[(":method", "POST"), (":path", "/users/9")],
        503,
    );
    let name = "requests_total;route=orders;method=GET;response_code=200;version=v2";
    assert_eq!(host.metric_value(name), Some(2));
    assert_eq!(
        host.histogram(
            "request_duration_milliseconds;route=orders;method=GET;response_code=200;version=v2"
        ),
        vec![12, 12]
    );
    assert_eq!(
        host.histogram("request_bytes;route=orders;method=GET;response_code=200;version=v2"),
        vec![300, 300]
    );
    assert_eq!(
        host.histogram("response_bytes;route=orders;method=GET;response_code=200;version=v2"),
        vec![1200, 1200]
    );
    assert_eq!(
        host.metric_value(
            "requests_total;route=user;method=POST;response_code=503;version=unknown"
        ),
        Some(1)
    );
    // Two label sets, four metrics each.
    assert_eq!(f.defined_metrics(), 8);
}

#[test]
fn locally_answered_request_is_counted() {
    let host = FakeHost::new();
    let f = configure(&host, CONFIG);
    // An earlier filter answered 429: only on_log runs.
    set_request(&host, &[(":method", "GET"), (":path", "/orders")]);
    host.set_phase(Phase::Log);
    host.set_property(&["response", "code"], &429i64.to_le_bytes());
    host.set_property(&["rate_limit_decision"], b"denied");
    let mut http = f.new_http();
    http.on_log(&host);
    assert_eq!(
        host.metric_value(
            "requests_total;route=orders;method=GET;response_code=429;version=unknown"
        ),
        Some(1)
    );
    let lines = log_lines(&host);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].1["status"], 429);
    assert_eq!(lines[0].1["rate_limit_decision"], "denied");
    assert_eq!(lines[0].1["duration_ms"], serde_json::Value::Null);
}

#[test]
fn access_log_line() {
    let host = FakeHost::new();
    let f = configure(&host, CONFIG);
    // {"sub":"alice"}
    let payload = "eyJzdWIiOiJhbGljZSJ9";
    run(
        &f,
        &host,
        &[
            (":method", "GET"),
            (":path", "/orders/1?secret=x"),
            ("x-route-version", "v2"),
            ("traceparent", TP),
            ("x-request-id", "req-1"),
            ("x-jwt-payload", payload),
        ],
        201,
    );
    let lines = log_lines(&host);
    assert_eq!(lines.len(), 1);
    let (level, line) = &lines[0];
    assert_eq!(*level, LogLevel::Info);
    assert_eq!(line["timestamp"], "2023-11-14T22:13:20.000Z");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/orders/1");
    assert_eq!(line["status"], 201);
    assert_eq!(line["duration_ms"], 12);
    assert_eq!(line["bytes_in"], 300);
    assert_eq!(line["bytes_out"], 1200);
    assert_eq!(line["version"], "v2");
    assert_eq!(line["route"], "orders");
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(line["request_id"], "req-1");
    assert_eq!(line["user"], "alice");
    assert_eq!(line["rate_limit_decision"], serde_json::Value::Null);
    assert!(line.get("source_address").is_none());
}

#[test]
fn access_log_controls() {
    let host = FakeHost::new();
    let f = configure(
        &host,
        r#"{"accessLog": {"onlyErrors": true, "level": "warn",
                         "fields": ["status", "source_address"]}}"#,
    );
    host.set_property(&["source", "address"], b"10.0.0.1:5555");
    run(&f, &host, &[(":path", "/")], 404);
    assert!(host.logs.borrow().is_empty());
    run(&f, &host, &[(":path", "/")], 500);
    let lines = log_lines(&host);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].0, LogLevel::Warn);
    assert_eq!(
        lines[0].1,
        serde_json::json!({"status": 500, "source_address": "10.0.0.1:5555"})
    );

    // No response at all (status 0) is an error too.
    run(&f, &host, &[(":path", "/")], 0);
    assert_eq!(log_lines(&host)[0].1["status"], 0);

    let f = configure(&host, r#"{"accessLog": {"fields": ["path"]}}"#);
    run(&f, &host, &[(":path", "/p?token=secret")], 200);
    assert_eq!(log_lines(&host)[0].1, serde_json::json!({"path": "/p"}));
    let f = configure(
        &host,
        r#"{"accessLog": {"fields": ["path"], "includeQuery": true}}"#,
    );
    run(&f, &host, &[(":path", "/p?page=2")], 200);
    assert_eq!(
        log_lines(&host)[0].1,
        serde_json::json!({"path": "/p?page=2"})
    );

    // Envoy at warning (istio-proxy's default for Wasm): an info line is
    // not even built; a warn line still goes out.
    let quiet = FakeHost::new();
    quiet.set_log_level(LogLevel::Warn);
    let f = configure(&quiet, r#"{"accessLog": {}}"#);
    run(&f, &quiet, &[(":path", "/")], 200);
    assert!(quiet.logs.borrow().is_empty());
    let f = configure(&quiet, r#"{"accessLog": {"level": "warn"}}"#);
    run(&f, &quiet, &[(":path", "/")], 200);
    assert_eq!(log_lines(&quiet).len(), 1);

    let f = configure(&host, r#"{"accessLog": {"enabled": false}}"#);
    run(&f, &host, &[(":path", "/")], 500);
    assert!(host.logs.borrow().is_empty());

    let f = configure(&host, r#"{"accessLog": {"sample": 0.0}}"#);
    run(&f, &host, &[(":path", "/")], 500);
    assert!(host.logs.borrow().is_empty());

    let f = configure(&host, r#"{"accessLog": {"sample": 0.25}}"#);
    let mut logged = 0;
    for _ in 0..2000 {
        run(&f, &host, &[(":path", "/")], 200);
        logged += host.logs.borrow().len();
    }
    assert!((400..600).contains(&logged), "{logged}");
}

#[test]
fn traceparent_generated_or_propagated() {
    let host = FakeHost::new();
    let f = configure(&host, CONFIG);
    // Propagated unchanged, B3 untouched, x-request-id kept.
    run(
        &f,
        &host,
        &[
            (":path", "/"),
            ("traceparent", TP),
            ("x-b3-traceid", "abc"),
            ("x-request-id", "r1"),
        ],
        200,
    );
    let req = host.map(MapType::RequestHeaders);
    assert_eq!(req.get_str("traceparent"), Some(TP));
    assert_eq!(req.get_str("x-b3-traceid"), Some("abc"));
    assert_eq!(req.get_str("x-request-id"), Some("r1"));
    assert_eq!(
        host.map(MapType::ResponseHeaders).get_str("x-trace-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );

    // Absent: generated, and x-request-id added.
    run(&f, &host, &[(":path", "/")], 200);
    let req = host.map(MapType::RequestHeaders);
    let tp = req.get_str("traceparent").unwrap().to_string();
    let trace = parse_traceparent(tp.as_bytes()).unwrap();
    assert!(tp.starts_with("00-") && tp.ends_with("-01"), "{tp}");
    assert_eq!(
        host.map(MapType::ResponseHeaders).get_str("x-trace-id"),
        Some(trace.as_str())
    );
    let id = req.get_str("x-request-id").unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4");
    assert_eq!(log_lines(&host)[0].1["request_id"], id);
    assert_eq!(log_lines(&host)[0].1["trace_id"], trace.as_str());

    // Invalid: replaced.
    run(
        &f,
        &host,
        &[(":path", "/"), ("traceparent", "00-zz-yy-01")],
        200,
    );
    let tp = host
        .map(MapType::RequestHeaders)
        .get_str("traceparent")
        .unwrap()
        .to_string();
    assert!(parse_traceparent(tp.as_bytes()).is_some());

    // Not configured: nothing generated, no response header.
    let f = configure(&host, "{}");
    run(&f, &host, &[(":path", "/")], 200);
    assert!(!host.map(MapType::RequestHeaders).contains("traceparent"));
    assert!(host.map(MapType::RequestHeaders).contains("x-request-id"));
    assert!(host.map(MapType::ResponseHeaders).is_empty());
}

#[test]
fn response_header_only_in_response_phase() {
    let host = FakeHost::new();
    let f = configure(&host, CONFIG);
    set_request(&host, &[(":path", "/")]);
    let mut http = f.new_http();
    http.on_request_headers(&host, true);
    assert!(host.map(MapType::ResponseHeaders).is_empty());
    host.set_phase(Phase::Response);
    http.on_response_headers(&host, true);
    assert!(host.map(MapType::ResponseHeaders).contains("x-trace-id"));
}

#[test]
fn cap_turns_new_values_into_other_and_counts() {
    let host = FakeHost::new();
    let f = configure(
        &host,
        r#"{"dimensions": ["version"], "maxValuesPerLabel": 3}"#,
    );
    for i in 0..10 {
        let v = format!("v{i}");
        run(&f, &host, &[(":path", "/"), ("x-route-version", &v)], 200);
    }
    for i in 0..3 {
        assert_eq!(
            host.metric_value(&format!("requests_total;version=v{i}")),
            Some(1)
        );
    }
    assert_eq!(host.metric_value("requests_total;version=v3"), None);
    assert_eq!(host.metric_value("requests_total;version=other"), Some(7));
    assert_eq!(
        host.metric_value("label_overflow_total;label=version"),
        Some(7)
    );
}

#[test]
fn repeated_and_unbounded_values_count_the_same() {
    // Values seen before take the remembered metrics; past the memo's bound
    // (4096 raw label sets) each request is worked out afresh. Either way
    // the counts are those of the caps.
    let host = FakeHost::new();
    let f = configure(
        &host,
        r#"{"dimensions": ["version", "method"], "maxValuesPerLabel": 3}"#,
    );
    for round in 0..2 {
        for i in 0..5000 {
            let v = format!("v{i}");
            let method = if i % 2 == 0 { "GET" } else { "POST" };
            set_request(
                &host,
                &[(":path", "/"), (":method", method), ("x-route-version", &v)],
            );
            let mut http = f.new_http();
            http.on_request_headers(&host, true);
            host.set_phase(Phase::Log);
            set_log_properties(&host, 200, 1_000_000, 10, 20);
            http.on_log(&host);
        }
        let n = 5000 * (round + 1);
        let total: i128 = [
            "v0;method=GET",
            "v1;method=POST",
            "v2;method=GET",
            "other;method=GET",
            "other;method=POST",
        ]
        .iter()
        .map(|l| {
            host.metric_value(&format!("requests_total;version={l}"))
                .unwrap_or(0)
        })
        .sum();
        assert_eq!(total, n as i128, "round {round}");
        assert_eq!(
            host.metric_value("label_overflow_total;label=version"),
            Some(n as i128 - 3 * (round as i128 + 1))
        );
        assert_eq!(
            host.histogram("request_duration_milliseconds;version=other;method=POST")
                .len(),
            2499 * (round + 1)
        );
    }
    assert_eq!(f.defined_metrics(), 5 * 4 + 1);
}

#[test]
fn helpers() {
    assert_eq!(int_property(&12_500_000i64.to_le_bytes()), Some(12_500_000));
    assert_eq!(int_property(&(-1i64).to_le_bytes()), None);
    assert_eq!(int_property(b"42"), Some(42));
    assert_eq!(int_property(b"abc"), None);
    assert_eq!(
        rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(951_782_400_123)),
        "2000-02-29T00:00:00.123Z"
    );
    assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert!(parse_traceparent(TP.as_bytes()).is_some());
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    ] {
        assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
    }
    assert!(
        parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
            .is_some()
    );
}
