//! The telemetry filter in a real Envoy 1.40: its `;label=value` stat names
//! reach `/stats/prometheus` as real labels through the shipped
//! `wasmplugins/stats_tags.json`, which the harness applies whenever a plugin
//! runs `telemetry.wasm`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use e2e::{Harness, client};
use serde_json::json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

fn start_plugin(name: &str, config: &serde_json::Value) -> Harness {
    let dir = e2e::manifest::write_test_plugin(name, "telemetry", Some("STATS"), config).unwrap();
    Harness::start(&dir).unwrap()
}

/// Every sample of `metric` (name up to `{`) as (labels, value).
fn samples(prometheus: &str, metric: &str) -> Vec<(String, f64)> {
    let prefix = format!("{metric}{{");
    prometheus
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once("} ")?;
            Some((labels.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The `_bucket` samples of histogram `metric` with exactly `labels`
/// (besides `le`), as (le, count) in output order.
fn buckets(prometheus: &str, metric: &str, labels: &str) -> Vec<(String, u64)> {
    let prefix = format!("{labels},le=\"");
    samples(prometheus, &format!("{metric}_bucket"))
        .into_iter()
        .filter_map(|(l, v)| {
            let le = l.strip_prefix(&prefix)?.strip_suffix('"')?.to_string();
            Some((le, v as u64))
        })
        .collect()
}

fn value(prometheus: &str, metric: &str, labels: &str) -> Option<u64> {
    samples(prometheus, metric)
        .into_iter()
        .find(|(l, _)| l == labels)
        .map(|(_, v)| v as u64)
}

/// Polls /stats/prometheus until `done` holds (histograms show up after a
/// stats flush, 1 s in the harness) or 15 s pass; returns the last text.
fn prometheus_when(h: &Harness, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = h.prometheus().unwrap();
        if done(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The telemetry filter's JSON access-log lines in Envoy's log, with the
/// text before the JSON (`... wasm log <name> <root_id>: `).
fn access_log(h: &Harness) -> Vec<(String, serde_json::Value)> {
    h.log()
        .lines()
        .filter(|l| l.contains("wasm log") && l.contains(": {") && !l.contains("route_anomaly"))
        .map(|l| {
            let at = l.find(": {").unwrap();
            let json = serde_json::from_str(&l[at + 2..]).unwrap_or_else(|e| panic!("{e}: {l}"));
            (l[..at + 2].to_string(), json)
        })
        .collect()
}

/// Polls the access log until it holds `n` lines (bounded).
fn access_log_lines(h: &Harness, n: usize) -> Vec<(String, serde_json::Value)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = access_log(h);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The buckets `wasmplugins/telemetry/histogram_buckets.json` gives
/// `wasmcustom.<metric>`.
fn shipped_buckets(metric: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(
        e2e::envoy::workspace_root().join("wasmplugins/telemetry/histogram_buckets.json"),
    )
    .unwrap();
    let settings: serde_json::Value = serde_json::from_str(&text).unwrap();
    settings
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["match"]["prefix"] == format!("wasmcustom.{metric}"))
        .unwrap()["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_f64().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// Counts and histograms
// ---------------------------------------------------------------------------

#[test]
fn exact_counts_per_label_set_and_histograms_that_add_up() {
    let h = start_plugin(
        "telemetry-mix",
        &json!({
            "routes": [{"name": "orders", "pathPrefix": "/orders"},
                       {"name": "user", "regex": "^/users/[0-9]+$"}],
            "dimensions": ["route", "method", "response_code", "response_code_class", "version"],
            "accessLog": {"enabled": false},
        }),
    );
    for _ in 0..3 {
        assert_eq!(h.get("/orders/1?page=2", &[]).unwrap().status, 200);
    }
    // Above the 50 ms bucket.
    let slow = h.get("/orders/3", &[("x-demo-delay-ms", b"120")]).unwrap();
    assert_eq!(slow.status, 200);
    for _ in 0..2 {
        let r = h.get("/orders/2", &[("x-demo-status", b"503")]).unwrap();
        assert_eq!(r.status, 503);
    }
    for _ in 0..2 {
        let r = h.get("/users/42", &[("x-route-version", b"v2")]).unwrap();
        assert_eq!(r.status, 200);
    }
    let r = client::request("POST", &h.url("/users/abc"), &[]).unwrap();
    assert_eq!(r.status, 200);

    let sets = [
        (
            r#"route="orders",method="GET",response_code="200",response_code_class="2xx",version="unknown""#,
            4u64,
        ),
        (
            r#"route="orders",method="GET",response_code="503",response_code_class="5xx",version="unknown""#,
            2,
        ),
        (
            r#"route="user",method="GET",response_code="200",response_code_class="2xx",version="v2""#,
            2,
        ),
        (
            r#"route="unmatched",method="POST",response_code="200",response_code_class="2xx",version="unknown""#,
            1,
        ),
    ];
    let text = prometheus_when(&h, |t| {
        sets.iter().all(|(l, n)| {
            value(t, "requests_total", l) == Some(*n)
                && value(t, "request_duration_milliseconds_count", l) == Some(*n)
                && value(t, "request_bytes_count", l) == Some(*n)
                && value(t, "response_bytes_count", l) == Some(*n)
        })
    });
    let series = samples(&text, "requests_total");
    assert_eq!(series.len(), sets.len(), "{series:?}");
    for (labels, n) in sets {
        assert_eq!(value(&text, "requests_total", labels), Some(n), "{labels}");
        for metric in [
            "request_duration_milliseconds",
            "request_bytes",
            "response_bytes",
        ] {
            assert_eq!(
                value(&text, &format!("{metric}_count"), labels),
                Some(n),
                "{metric}_count{{{labels}}}"
            );
            let b = buckets(&text, metric, labels);
            assert_eq!(
                b.last().map(|(le, c)| (le.as_str(), *c)),
                Some(("+Inf", n)),
                "{metric} {b:?}"
            );
            assert!(
                b.windows(2).all(|w| w[0].1 <= w[1].1),
                "{metric} not cumulative: {b:?}"
            );
            let le: Vec<f64> = b[..b.len() - 1]
                .iter()
                .map(|(le, _)| le.parse().unwrap())
                .collect();
            assert_eq!(
                le,
                shipped_buckets(metric),
                "{metric}: the shipped histogram_bucket_settings apply"
            );
        }
    }
    // The 120 ms request is above the 50 ms and 100 ms buckets (and below
    // 250 ms).
    let orders = buckets(&text, "request_duration_milliseconds", sets[0].0);
    let at = |bound: &str| orders.iter().find(|(le, _)| le == bound).unwrap().1;
    assert!(at("50") <= 3, "{orders:?}");
    assert!(at("100") <= 3, "{orders:?}");
    assert_eq!(at("250"), 4, "{orders:?}");
    // Response sizes are real: every demo answer is a JSON body of some
    // hundred bytes.
    let sum = value(&text, "response_bytes_sum", sets[0].0).unwrap();
    assert!(sum >= 4 * 100, "response_bytes_sum {sum}");
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
}

// ---------------------------------------------------------------------------
// Requests answered by an earlier filter
// ---------------------------------------------------------------------------

#[test]
fn a_local_reply_from_the_rate_limit_filter_is_counted_and_logged() {
    let name = "telemetry-after-rl";
    e2e::manifest::write_test_plugin(
        name,
        "rate-limit",
        Some("AUTHZ"),
        &json!({"rules": [{"name": "tiny", "limit": {"requests": 2, "per": "1h"}}]}),
    )
    .unwrap();
    let dir = e2e::manifest::write_test_plugin(
        name,
        "telemetry",
        Some("STATS"),
        &json!({
            "routes": [{"name": "orders", "pathPrefix": "/orders"}],
            "dimensions": ["route", "response_code"],
        }),
    )
    .unwrap();
    let h = Harness::start(&dir).unwrap();
    let statuses: Vec<u16> = (0..5)
        .map(|_| h.get("/orders/7", &[]).unwrap().status)
        .collect();
    assert_eq!(statuses, [200, 200, 429, 429, 429]);

    let text = prometheus_when(&h, |t| {
        value(t, "requests_total", r#"route="orders",response_code="429""#) == Some(3)
    });
    assert_eq!(
        value(
            &text,
            "requests_total",
            r#"route="orders",response_code="200""#
        ),
        Some(2)
    );
    assert_eq!(
        value(
            &text,
            "requests_total",
            r#"route="orders",response_code="429""#
        ),
        Some(3)
    );

    let lines = access_log_lines(&h, 5);
    let decisions: Vec<(u64, String)> = lines
        .iter()
        .map(|(_, j)| {
            (
                j["status"].as_u64().unwrap(),
                j["rate_limit_decision"]
                    .as_str()
                    .unwrap_or("<none>")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            (200, "allowed".to_string()),
            (200, "allowed".to_string()),
            (429, "denied".to_string()),
            (429, "denied".to_string()),
            (429, "denied".to_string()),
        ]
    );
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
}

// ---------------------------------------------------------------------------
// Cardinality
// ---------------------------------------------------------------------------

#[test]
fn ten_thousand_random_paths_and_tenants_do_not_grow_the_stats() {
    const CAP: usize = 20;
    const REQUESTS: usize = 10_000;
    let h = start_plugin(
        "telemetry-cardinality",
        &json!({
            "routes": [{"name": "orders", "pathPrefix": "/orders"}],
            "dimensions": ["route", "header:x-tenant"],
            "maxValuesPerLabel": CAP,
            "accessLog": {"enabled": false},
        }),
    );
    let url = h.url("");
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let url = &url;
            s.spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
                for _ in 0..REQUESTS / 4 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let path = format!("/{:x}/{:x}", x, x.rotate_left(17));
                    let tenant = format!("tenant-{x:x}");
                    let r =
                        client::get(&format!("{url}{path}"), &[("x-tenant", tenant.as_bytes())])
                            .unwrap();
                    assert_eq!(r.status, 200);
                    assert!(started.elapsed() < Duration::from_secs(120), "too slow");
                }
            });
        }
    });
    println!("{REQUESTS} requests in {:?}", started.elapsed());

    let text = prometheus_when(&h, |t| {
        samples(t, "requests_total")
            .iter()
            .map(|(_, v)| *v as usize)
            .sum::<usize>()
            == REQUESTS
    });
    let series = samples(&text, "requests_total");
    let total: f64 = series.iter().map(|(_, v)| v).sum();
    assert_eq!(total as usize, REQUESTS, "every request counted");
    // Two workers, each admitting CAP values, plus `other`.
    assert!(series.len() <= 2 * CAP + 1, "{} series", series.len());
    assert!(
        series
            .iter()
            .all(|(l, _)| l.starts_with("route=\"unmatched\",x_tenant=\""))
    );
    assert!(
        series
            .iter()
            .any(|(l, _)| l.ends_with("x_tenant=\"other\""))
    );
    let overflow = value(&text, "label_overflow_total", r#"label="x_tenant""#).unwrap();
    assert!(
        overflow as usize >= REQUESTS - 2 * CAP,
        "overflow {overflow}"
    );
    let other = series
        .iter()
        .find(|(l, _)| l.ends_with("\"other\""))
        .unwrap()
        .1 as u64;
    assert_eq!(other, overflow, "each request past the cap counted once");
    // Every stat the filter made: per series one counter and three
    // histograms, plus the overflow counter.
    let (_, body) = client::admin_get(h.envoy.admin, "/stats?format=json").unwrap();
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    let wasm_stats = stats["stats"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("wasmcustom."))
        })
        .count();
    let histograms = stats["stats"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| s["histograms"]["computed_quantiles"].as_array())
        .map_or(0, |q| {
            q.iter()
                .filter(|s| {
                    s["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("wasmcustom."))
                })
                .count()
        });
    println!(
        "{} series, {wasm_stats} counters/gauges, {histograms} histograms",
        series.len()
    );
    assert!(wasm_stats <= 2 * CAP + 2, "{wasm_stats} wasm counters");
    assert!(
        histograms <= 3 * (2 * CAP + 1),
        "{histograms} wasm histograms"
    );
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
}

// ---------------------------------------------------------------------------
// The access log
// ---------------------------------------------------------------------------

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC timestamp of the
/// form `YYYY-MM-DDTHH:MM:SS[.fff]Z` (what the filter writes), checked
/// field by field; `None` when it is not one.
fn rfc3339_millis(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    let (main, rest) = (ts.get(..19)?, ts.get(19..)?);
    let shape = main.bytes().enumerate().all(|(i, c)| match i {
        4 | 7 => c == b'-',
        10 => c == b'T',
        13 | 16 => c == b':',
        _ => c.is_ascii_digit(),
    });
    if !shape || b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| main[r].parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let rest = rest.strip_suffix('Z')?;
    let ms = match rest.strip_prefix('.') {
        None if rest.is_empty() => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()) => {
            format!("{f:0<3}")[..3].parse::<i64>().ok()?
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's days_from_civil).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1_000 + ms)
}

#[test]
fn rfc3339_parser_agrees_with_known_instants() {
    assert_eq!(rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        rfc3339_millis("2023-11-14T22:13:20.123Z"),
        Some(1_700_000_000_123)
    );
    assert_eq!(
        rfc3339_millis("2024-02-29T00:00:00.5Z"),
        Some(1_709_164_800_500)
    );
    assert_eq!(rfc3339_millis("2023-11-14 22:13:20Z"), None);
    assert_eq!(rfc3339_millis("2023-13-14T22:13:20Z"), None);
    assert_eq!(rfc3339_millis("2023-11-14T22:13:20"), None);
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn access_log_lines_parse_and_carry_the_right_fields() {
    let h = start_plugin(
        "telemetry-log",
        &json!({
            "routes": [{"name": "orders", "pathPrefix": "/orders"}],
            "accessLog": {"userClaim": {"claim": "sub", "fromHeader": "x-jwt-payload"}},
        }),
    );
    let payload = b64url(br#"{"sub":"alice","iss":"https://issuer.example.com"}"#);
    let sent = unix_millis(SystemTime::now());
    let r = h
        .get(
            "/orders/9?secret=token123",
            &[
                ("traceparent", TRACEPARENT.as_bytes()),
                ("x-request-id", b"req-0001"),
                ("x-jwt-payload", payload.as_bytes()),
                ("x-route-version", b"v2"),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let lines = access_log_lines(&h, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (prefix, j) = &lines[0];
    // Envoy's prefix: `wasm log <plugin name> <root_id>: `; the harness,
    // like istiod, names the plugin `<namespace>.<name>` and sets the root id
    // to `pluginName`.
    assert!(
        prefix.ends_with("wasm log bookinfo.telemetry telemetry: "),
        "{prefix}"
    );
    assert!(prefix.contains("[info]"), "{prefix}");
    let ts = j["timestamp"].as_str().unwrap();
    let at = rfc3339_millis(ts).unwrap_or_else(|| panic!("RFC 3339 timestamp: {ts}"));
    let logged = unix_millis(SystemTime::now());
    assert!(
        at + 1_000 >= sent && at <= logged + 1_000,
        "timestamp {ts} ({at}) not between the request ({sent}) and now ({logged})"
    );
    assert_eq!(j["method"], "GET");
    assert_eq!(j["path"], "/orders/9", "the query is stripped");
    assert_eq!(j["status"], 200);
    assert!(j["duration_ms"].is_u64(), "{j}");
    assert!(j["bytes_in"].as_u64().unwrap() > 0, "{j}");
    assert!(j["bytes_out"].as_u64().unwrap() > 100, "{j}");
    assert_eq!(j["version"], "v2");
    assert_eq!(j["route"], "orders");
    assert_eq!(j["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(j["request_id"], "req-0001");
    assert_eq!(j["user"], "alice");
    assert!(!lines[0].1.to_string().contains("token123"));
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
}

#[test]
fn only_errors_and_sample_zero_limit_the_log() {
    let h = start_plugin(
        "telemetry-log-errors",
        &json!({"accessLog": {"onlyErrors": true}}),
    );
    for status in ["200", "404", "500", "503"] {
        let _ = h
            .get("/x", &[("x-demo-status", status.as_bytes())])
            .unwrap();
    }
    let lines = access_log_lines(&h, 2);
    let statuses: Vec<u64> = lines
        .iter()
        .map(|(_, j)| j["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 503]);
    // on_log runs after the client has its answer: give a stray line for the
    // 200 or the 404 time to show up, then look again.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(access_log(&h).len(), 2, "{:?}", access_log(&h));
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
    drop(h);

    let h = start_plugin("telemetry-log-none", &json!({"accessLog": {"sample": 0.0}}));
    for _ in 0..20 {
        assert_eq!(h.get("/x", &[]).unwrap().status, 200);
    }
    // A request after them shows up in the counters, so on_log has run for
    // all of them; still no line.
    let text = prometheus_when(&h, |t| {
        samples(t, "requests_total")
            .iter()
            .map(|(_, v)| *v as u64)
            .sum::<u64>()
            == 20
    });
    assert_eq!(
        samples(&text, "requests_total")
            .iter()
            .map(|(_, v)| *v as u64)
            .sum::<u64>(),
        20
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(access_log(&h).is_empty(), "{:?}", access_log(&h));
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
}

// ---------------------------------------------------------------------------
// Trace context, as the upstream sees it
// ---------------------------------------------------------------------------

/// A request header as the demo upstream received it.
fn upstream_header(r: &client::Response, name: &str) -> Option<String> {
    r.json()["headers"][name].as_str().map(str::to_string)
}

#[test]
fn traceparent_is_generated_or_propagated_at_the_upstream() {
    let h = start_plugin(
        "telemetry-trace",
        &json!({
            "accessLog": {"enabled": false},
            "tracing": {"generateTraceparent": true, "responseHeader": "x-trace-id"},
        }),
    );
    // Absent: generated, valid, and returned to the client.
    let r = h.get("/a", &[]).unwrap();
    let tp = upstream_header(&r, "traceparent").expect("a generated traceparent");
    let trace = telemetry::filter::parse_traceparent(tp.as_bytes()).expect("valid");
    assert!(tp.starts_with("00-") && tp.ends_with("-01"), "{tp}");
    assert_eq!(r.header("x-trace-id").as_deref(), Some(trace.as_str()));
    let id = upstream_header(&r, "x-request-id").expect("x-request-id added");
    let groups: Vec<&str> = id.split('-').collect();
    assert_eq!(
        groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "a UUID: {id}"
    );
    assert!(
        id.bytes()
            .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
        "{id}"
    );
    assert!(groups[2].starts_with('4'), "version 4: {id}");
    assert!(
        matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
        "RFC 4122 variant: {id}"
    );
    // Two requests, two traces.
    let r2 = h.get("/a", &[]).unwrap();
    assert_ne!(upstream_header(&r2, "traceparent"), Some(tp.clone()));

    // Valid: unchanged. x-request-id kept. B3 passes through.
    let b3 = [
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ];
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("traceparent", TRACEPARENT.as_bytes()),
        ("x-request-id", b"client-id-7"),
    ];
    headers.extend(b3.iter().map(|(n, v)| (*n, v.as_bytes())));
    let r = h.get("/b", &headers).unwrap();
    assert_eq!(
        upstream_header(&r, "traceparent").as_deref(),
        Some(TRACEPARENT)
    );
    assert_eq!(
        upstream_header(&r, "x-request-id").as_deref(),
        Some("client-id-7")
    );
    for (name, v) in b3 {
        assert_eq!(upstream_header(&r, name).as_deref(), Some(v), "{name}");
    }
    assert_eq!(
        r.header("x-trace-id").as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );

    // Invalid (all-zero trace id): replaced by a valid one.
    let bad = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    let r = h.get("/c", &[("traceparent", bad.as_bytes())]).unwrap();
    let tp = upstream_header(&r, "traceparent").unwrap();
    assert_ne!(tp, bad);
    assert!(
        telemetry::filter::parse_traceparent(tp.as_bytes()).is_some(),
        "{tp}"
    );
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
}

/// Sends `request` as raw bytes on a new connection and returns the status
/// of the answer (bounded by a 10 s read timeout).
fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut answer);
    let head = String::from_utf8_lossy(&answer);
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn non_utf8_headers_and_paths_get_a_normal_answer() {
    let h = start_plugin(
        "telemetry-bytes",
        &json!({
            "routes": [{"name": "user", "regex": "^/users/[0-9]+$"}],
            "dimensions": ["route", "method", "version", "header:x-tenant"],
            "accessLog": {"userClaim": {"claim": "sub", "fromHeader": "x-jwt-payload"}},
            "tracing": {"generateTraceparent": true},
        }),
    );
    let r = h
        .get(
            "/users/%FF%FE",
            &[
                ("x-tenant", b"caf\xe9\xff"),
                ("x-route-version", b"v\xc3\x28"),
                ("x-jwt-payload", b"\xff\xfe"),
                ("traceparent", b"00-\xff"),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200);
    // Raw non-UTF-8 bytes in the path (no HTTP client sends these).
    let raw = raw_status(
        h.listener,
        b"GET /users/\xff\xfe?q=\xe9 HTTP/1.1\r\nhost: x\r\nx-tenant: \xc3\x28\r\nconnection: close\r\n\r\n",
    );
    // Envoy's HTTP/1 codec refuses it with a 400 before any filter sees the
    // headers; the telemetry filter's on_log still runs, with no request
    // headers at all.
    assert_eq!(raw, Some(400), "raw non-UTF-8 path");
    for _ in 0..3 {
        assert_eq!(h.get("/users/1", &[]).unwrap().status, 200);
    }
    let text = prometheus_when(&h, |t| {
        samples(t, "requests_total")
            .iter()
            .map(|(_, v)| *v as u64)
            .sum::<u64>()
            == 5
    });
    let mut series = samples(&text, "requests_total");
    series.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        series,
        [
            (
                r#"route="unmatched",method="GET",version="v__",x_tenant="caf__""#.to_string(),
                1.0
            ),
            (
                r#"route="unmatched",method="unknown",version="unknown",x_tenant="unknown""#
                    .to_string(),
                1.0
            ),
            (
                r#"route="user",method="GET",version="unknown",x_tenant="unknown""#.to_string(),
                3.0
            ),
        ],
        "sanitised labels; the codec's 400 counted with no headers"
    );
    let lines = access_log_lines(&h, 5);
    let seen: Vec<(u64, serde_json::Value)> = lines
        .iter()
        .map(|(_, j)| (j["status"].as_u64().unwrap(), j["path"].clone()))
        .collect();
    assert_eq!(seen.len(), 5, "{lines:?}");
    assert!(seen.contains(&(200, json!("/users/%FF%FE"))), "{lines:?}");
    assert!(seen.contains(&(400, serde_json::Value::Null)), "{lines:?}");
    // Not UTF-8: the version and user fields are null, not mangled.
    let odd = &lines
        .iter()
        .find(|(_, j)| j["path"] == "/users/%FF%FE")
        .unwrap()
        .1;
    assert_eq!(odd["version"], serde_json::Value::Null, "{odd}");
    assert_eq!(odd["user"], serde_json::Value::Null, "{odd}");
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
}

// ---------------------------------------------------------------------------
// The shipped manifests
// ---------------------------------------------------------------------------

/// `envoy --mode validate` (which runs each plugin's on_configure) accepts
/// the config the harness generates for every shipped manifest directory,
/// the telemetry ones with the shipped stats tags and buckets.
#[test]
fn every_shipped_manifest_directory_validates_in_envoy() {
    let root = e2e::envoy::workspace_root().join("wasmplugins");
    for dir in [
        "examples",
        "canary-router",
        "jwt-auth",
        "rate-limit",
        "telemetry",
    ] {
        Harness::validate(&root.join(dir)).unwrap_or_else(|e| panic!("wasmplugins/{dir}: {e:#}"));
    }
}

/// The bundled examples (the main job, `cargo xtask run`) run telemetry:
/// a request to productpage shows up with real labels.
#[test]
fn the_bundled_examples_record_telemetry() {
    let h = Harness::start(&e2e::envoy::workspace_root().join("wasmplugins/examples")).unwrap();
    let r = h.get("/productpage", &[("host", b"productpage")]).unwrap();
    assert!(r.status < 500, "{}", r.status);
    let text = prometheus_when(&h, |t| {
        samples(t, "requests_total")
            .iter()
            .any(|(l, _)| l.starts_with("route=\"productpage\""))
    });
    assert!(
        samples(&text, "requests_total")
            .iter()
            .any(|(l, _)| l.starts_with("route=\"productpage\",method=\"GET\"")),
        "{:?}",
        samples(&text, "requests_total")
    );
    assert!(h.wasm_traps().is_empty(), "{:?}", h.wasm_traps());
}
