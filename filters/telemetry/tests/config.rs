//! The configuration and its errors, with no host involved.
//!
//! Runs natively and as wasm32 under Node
//! (`cargo test -p telemetry --target wasm32-unknown-unknown --test config`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kit::{ConfigError, LogLevel};
use telemetry::config::{Config, DEFAULT_LOG_FIELDS, Dimension, compile_json};

fn config(json: &str) -> Config {
    match compile_json(Some(json.as_bytes())) {
        Ok(c) => c,
        Err(e) => panic!("config should compile: {e}\n{json}"),
    }
}

fn error(json: &str) -> ConfigError {
    match compile_json(Some(json.as_bytes())) {
        Ok(c) => panic!("config should be rejected, compiled to {c:?}\n{json}"),
        Err(e) => e,
    }
}

const EXAMPLE: &str = r#"{
  "routes": [{"name": "orders", "pathPrefix": "/orders"},
             {"name": "user", "regex": "^/users/[0-9]+$"}],
  "dimensions": ["route", "method", "response_code", "version"],
  "versionHeader": "x-route-version",
  "maxValuesPerLabel": 100,
  "accessLog": {"enabled": true, "sample": 1.0, "onlyErrors": false,
                "userClaim": {"claim": "sub", "fromHeader": "x-jwt-payload"}},
  "tracing": {"generateTraceparent": true, "responseHeader": "x-trace-id"},
  "anomaly": {"enabled": true, "window": "5s", "baseline": "60s",
              "factor": 3.0, "minDelta": 0.05, "minRequests": 20}
}"#;

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn the_example_compiles() {
    let c = config(EXAMPLE);
    assert_eq!(c.routes.len(), 2);
    assert_eq!(
        c.dimensions,
        vec![
            Dimension::Route,
            Dimension::Method,
            Dimension::ResponseCode,
            Dimension::Version
        ]
    );
    assert_eq!(c.max_values_per_label, 100);
    assert!(c.tracing.generate_traceparent);
    assert_eq!(c.tracing.response_header.as_deref(), Some("x-trace-id"));
    let claim = c.access_log.user_claim.unwrap();
    assert_eq!(claim.claim, "sub");
    let a = c.anomaly.unwrap();
    assert_eq!(a.window.as_secs(), 5);
    assert_eq!(a.baseline.as_secs(), 60);
    assert_eq!(a.min_requests, 20);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn defaults() {
    for c in [config("{}"), compile_json(None).unwrap()] {
        assert!(c.routes.is_empty());
        assert_eq!(
            c.dimensions,
            vec![Dimension::Route, Dimension::Method, Dimension::ResponseCode]
        );
        assert_eq!(c.version_header, "x-route-version");
        assert_eq!(c.source_workload_header, None);
        assert_eq!(c.max_values_per_label, 100);
        assert!(c.access_log.enabled);
        assert_eq!(c.access_log.sample, 1.0);
        assert!(!c.access_log.only_errors);
        assert_eq!(c.access_log.level, LogLevel::Info);
        assert!(c.access_log.user_claim.is_none());
        assert_eq!(c.access_log.fields, DEFAULT_LOG_FIELDS.to_vec());
        assert!(!c.tracing.generate_traceparent);
        assert!(c.tracing.response_header.is_none());
        assert!(c.anomaly.is_none());
    }
    let c =
        config(r#"{"anomaly": {}, "accessLog": {"level": "warn", "fields": ["status", "path"]}}"#);
    let a = c.anomaly.unwrap();
    assert!(a.enabled);
    assert_eq!((a.factor, a.min_delta, a.min_requests), (3.0, 0.05, 20));
    assert_eq!(a.min_latency_delta.as_millis(), 25);
    assert!(
        config(r#"{"anomaly": {"enabled": false}}"#)
            .anomaly
            .is_none()
    );
    assert_eq!(c.access_log.level, LogLevel::Warn);
    assert_eq!(c.access_log.fields, vec!["status", "path"]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn dimensions_and_headers() {
    let c = config(
        r#"{"dimensions": ["response_code_class", "source_workload", "header:X-Tenant"],
            "sourceWorkloadHeader": "x-source-workload"}"#,
    );
    assert_eq!(
        c.dimensions,
        vec![
            Dimension::ResponseCodeClass,
            Dimension::SourceWorkload,
            Dimension::Header("x-tenant".into())
        ]
    );
    assert_eq!(c.dimensions[2].label(), "x_tenant");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn errors_name_the_path() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"routes": [{"name": "a", "regex": "("}]}"#,
            "routes[0].regex",
            "invalid regex",
        ),
        (
            r#"{"routes": [{"name": "a"}]}"#,
            "routes[0]",
            "exactly one of",
        ),
        (
            r#"{"routes": [{"name": "a", "pathPrefix": "/a", "regex": "/a"}]}"#,
            "routes[0]",
            "exactly one of",
        ),
        (
            r#"{"routes": [{"name": "a", "pathPrefix": "a"}]}"#,
            "routes[0].pathPrefix",
            "starting with",
        ),
        (
            r#"{"routes": [{"name": "a b", "pathPrefix": "/"}]}"#,
            "routes[0].name",
            "[A-Za-z0-9_.-]",
        ),
        (
            r#"{"routes": [{"name": "a", "pathPrefix": "/"}, {"name": "a", "pathPrefix": "/b"}]}"#,
            "routes[1].name",
            "duplicate",
        ),
        (
            r#"{"dimensions": ["route", "host"]}"#,
            "dimensions[1]",
            "unknown dimension",
        ),
        (
            r#"{"dimensions": ["route", "route"]}"#,
            "dimensions[1]",
            "duplicate",
        ),
        (
            r#"{"dimensions": ["header:bad header"]}"#,
            "dimensions[0]",
            "header name",
        ),
        (
            r#"{"dimensions": ["header:label"]}"#,
            "dimensions[0]",
            "reserved",
        ),
        (
            r#"{"dimensions": ["source_workload"]}"#,
            "dimensions[0]",
            "sourceWorkloadHeader",
        ),
        (
            r#"{"maxValuesPerLabel": 0}"#,
            "maxValuesPerLabel",
            "expected 1 to",
        ),
        (
            r#"{"accessLog": {"sample": 1.5}}"#,
            "accessLog.sample",
            "0.0 to 1.0",
        ),
        (
            r#"{"accessLog": {"sample": -0.1}}"#,
            "accessLog.sample",
            "0.0 to 1.0",
        ),
        (
            r#"{"accessLog": {"level": "loud"}}"#,
            "accessLog.level",
            "unknown variant",
        ),
        (
            r#"{"accessLog": {"fields": ["status", "colour"]}}"#,
            "accessLog.fields[1]",
            "unknown field",
        ),
        (
            r#"{"accessLog": {"verbose": true}}"#,
            "accessLog.verbose",
            "unknown field",
        ),
        (
            r#"{"accessLog": {"userClaim": {"claim": "sub", "x": 1}}}"#,
            "accessLog.userClaim.x",
            "unknown field",
        ),
        (
            r#"{"tracing": {"responseHeader": "bad header"}}"#,
            "tracing.responseHeader",
            "header name",
        ),
        (
            r#"{"anomaly": {"window": "5 parsecs"}}"#,
            "anomaly.window",
            "duration",
        ),
        (
            r#"{"anomaly": {"window": "60s", "baseline": "5s"}}"#,
            "anomaly.baseline",
            "longer",
        ),
        (
            r#"{"anomaly": {"factor": 0.5}}"#,
            "anomaly.factor",
            ">= 1.0",
        ),
        (
            r#"{"anomaly": {"minDelta": -1}}"#,
            "anomaly.minDelta",
            ">= 0.0",
        ),
        (
            r#"{"anomaly": {"window": "1250ms"}}"#,
            "anomaly.window",
            "tenths of a second",
        ),
        (
            r#"{"anomaly": {"minLatencyDelta": "soon"}}"#,
            "anomaly.minLatencyDelta",
            "duration",
        ),
        (
            r#"{"anomaly": {"minRequests": 0}}"#,
            "anomaly.minRequests",
            "at least 1",
        ),
        (r#"{"colour": "blue"}"#, "colour", "unknown field"),
        (r#"{"versionHeader": ""}"#, "versionHeader", "header name"),
    ];
    for (json, path, message) in cases {
        let e = error(json);
        assert_eq!(e.path, *path, "{json}: {e}");
        assert!(e.message.contains(message), "{json}: {e}");
    }
}
