//! Configuration parsing and compilation: defaults, the compiled quota and
//! shared-data prefix, and errors that name the JSON path.
//!
//! Runs natively and as wasm32 under Node
//! (`cargo test -p rate-limit --target wasm32-unknown-unknown --test config`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rate_limit::config::{Config, Mode, OnMissingKey, compile_json};
use rate_limit::gcra::FailureMode;
use rate_limit::key::KeySource;
use std::time::Duration;

fn config(json: &str) -> Config {
    match compile_json(Some(json.as_bytes()), "rl") {
        Ok(c) => c,
        Err(e) => panic!("config should compile: {e}\n{json}"),
    }
}

/// The rendered error (`path: message`).
fn error(json: &str) -> String {
    match compile_json(Some(json.as_bytes()), "rl") {
        Ok(c) => panic!("config should be rejected, compiled to {c:?}\n{json}"),
        Err(e) => e.to_string(),
    }
}

const DOCUMENTED_EXAMPLE: &str = r#"{
  "rules": [{
    "name": "per-user-api",
    "match": {"pathPrefix": "/api", "methods": ["GET", "POST"],
              "headers": [{"name": "x-env", "exact": "prod"}]},
    "key": [{"header": "x-user-id"}],
    "limit": {"requests": 100, "per": "1m", "burst": 20},
    "mode": "enforce"
  }],
  "response": {"status": 429, "body": "{\"error\":\"rate_limited\"}",
               "headers": {"content-type": "application/json"}},
  "rateLimitHeaders": true,
  "failureMode": "allow",
  "maxKeys": 10000
}"#;

/// One rule with the given fragment spliced into it.
fn rule(extra: &str) -> String {
    format!(r#"{{"rules": [{{"name": "r", "limit": {{"requests": 10, "per": "1s"}}{extra}}}]}}"#)
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn the_documented_example_compiles() {
    let c = config(DOCUMENTED_EXAMPLE);
    assert!(c.rate_limit_headers);
    assert_eq!(c.failure_mode, FailureMode::Allow);
    assert_eq!(c.max_keys, 10_000);
    assert_eq!(c.response.status, 429);
    assert_eq!(c.response.body, br#"{"error":"rate_limited"}"#);
    assert_eq!(
        c.response.headers,
        vec![("content-type".to_string(), b"application/json".to_vec())]
    );
    let r = &c.rules[0];
    assert_eq!(r.name, "per-user-api");
    let request = |method: &str, path: &str, env: &str| {
        kit::Headers::from_pairs([(":method", method), (":path", path), ("x-env", env)])
    };
    assert!(r.matcher.matches(&request("POST", "/api/x", "prod")));
    assert!(!r.matcher.matches(&request("DELETE", "/api/x", "prod")));
    assert!(!r.matcher.matches(&request("GET", "/other", "prod")));
    assert!(!r.matcher.matches(&request("GET", "/api/x", "dev")));
    assert_eq!(r.key, [KeySource::Header("x-user-id".into())]);
    assert_eq!(r.limit.requests, 100);
    assert_eq!(r.limit.per, Duration::from_secs(60));
    assert_eq!(r.limit.burst, 20);
    assert_eq!(r.limit.interval(), Duration::from_millis(600));
    assert_eq!(r.mode, Mode::Enforce);
    assert_eq!(r.buckets.prefix, "mesh-filters/rate-limit/rl/per-user-api");
    assert_eq!(r.buckets.slots, 10_000);
    assert_eq!(r.buckets.quota.burst_size().get(), 20);
    assert_eq!(
        r.buckets.quota.replenish_interval(),
        Duration::from_millis(600)
    );
    assert_eq!(r.buckets.failure_mode, FailureMode::Allow);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn defaults() {
    let c = config(&rule(""));
    assert!(!c.rate_limit_headers);
    assert_eq!(c.failure_mode, FailureMode::Allow);
    assert_eq!(c.max_keys, 10_000);
    assert_eq!(c.response.status, 429);
    assert!(c.response.body.is_empty());
    assert!(c.response.headers.is_empty());
    let r = &c.rules[0];
    assert_eq!(r.limit.burst, 10, "burst defaults to requests");
    assert_eq!(r.mode, Mode::Enforce);
    assert_eq!(r.on_missing_key, OnMissingKey::Skip);
    assert!(r.key.is_empty());
    assert!(r.matcher.is_any());
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn every_key_source_shape() {
    let c = config(&rule(
        r#", "key": [
          {"header": "X-User"},
          {"remoteAddress": {}},
          {"remoteAddress": {"xffTrustedHops": 2}},
          {"path": {}},
          {"method": {}},
          {"query": "api_key"},
          {"claim": "sub"},
          {"claim": "tenant", "fromHeader": "X-Payload"}
        ], "mode": "shadow", "onMissingKey": "deny""#,
    ));
    let r = &c.rules[0];
    assert_eq!(r.mode, Mode::Shadow);
    assert_eq!(r.on_missing_key, OnMissingKey::Deny);
    assert_eq!(r.key.len(), 8);
    assert_eq!(r.key[0], KeySource::Header("x-user".into()));
    assert_eq!(
        r.key[1],
        KeySource::RemoteAddress {
            xff_trusted_hops: 0
        }
    );
    assert_eq!(
        r.key[2],
        KeySource::RemoteAddress {
            xff_trusted_hops: 2
        }
    );
    assert_eq!(r.key[3], KeySource::Path);
    assert_eq!(r.key[4], KeySource::Method);
    assert_eq!(r.key[5], KeySource::Query("api_key".into()));
    match (&r.key[6], &r.key[7]) {
        (KeySource::Claim(a), KeySource::Claim(b)) => {
            assert_eq!(
                (a.claim.as_str(), a.from_header.as_str()),
                ("sub", "x-jwt-payload")
            );
            assert_eq!(
                (b.claim.as_str(), b.from_header.as_str()),
                ("tenant", "x-payload")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn errors_name_the_path() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"rules": [{"name": "r", "limit": {"requests": 0, "per": "1s"}}]}"#,
            "rules[0].limit.requests: expected at least 1",
        ),
        (
            r#"{"rules": [{"name": "r", "limit": {"requests": 1, "per": "5x"}}]}"#,
            "rules[0].limit.per: expected a duration like \"1m\"",
        ),
        (
            r#"{"rules": [{"name": "r", "limit": {"requests": 1, "per": "0s"}}]}"#,
            "rules[0].limit.per: expected a duration above 0",
        ),
        (
            r#"{"rules": [{"name": "r", "limit": {"requests": 1, "per": "1s", "burst": 0}}]}"#,
            "rules[0].limit.burst: expected at least 1",
        ),
        (
            &rule(r#", "key": [{"cookie": "session"}]"#),
            "rules[0].key[0].cookie: unknown field `cookie`",
        ),
        (
            &rule(r#", "key": [{}]"#),
            "rules[0].key[0]: expected exactly one key source",
        ),
        (
            &rule(r#", "key": [{"header": "a", "method": {}}]"#),
            "rules[0].key[0]: expected exactly one key source",
        ),
        (
            &rule(r#", "key": [{"header": "a", "fromHeader": "b"}]"#),
            "rules[0].key[0].fromHeader: fromHeader goes with claim",
        ),
        (
            &rule(r#", "key": [{"header": "bad name"}]"#),
            "rules[0].key[0].header: expected an HTTP header name",
        ),
        (
            &rule(r#", "key": [{"path": {"x": 1}}]"#),
            "rules[0].key[0].path.x: unknown field `x`",
        ),
        (
            r#"{"rules": [
                {"name": "same", "limit": {"requests": 1, "per": "1s"}},
                {"name": "same", "limit": {"requests": 1, "per": "1s"}}]}"#,
            "rules[1].name: rule name \"same\" appears twice",
        ),
        (
            r#"{"rules": [{"name": "a/b", "limit": {"requests": 1, "per": "1s"}}]}"#,
            "rules[0].name: expected 1 to 63 letters",
        ),
        (
            r#"{"rules": [{"name": "r", "limit": {"requests": 1, "per": "1s"}}],
                "response": {"status": 200}}"#,
            "response.status: expected an error status (400 to 599), got 200",
        ),
        (
            r#"{"rules": [{"name": "r", "limit": {"requests": 1, "per": "1s"}}],
                "response": {"status": "x"}}"#,
            "response.status: invalid type",
        ),
        (
            r#"{"rules": [{"name": "r", "limit": {"requests": 1, "per": "1s"}}],
                "response": {"headers": {"retry-after": "1"}}}"#,
            "response.headers.retry-after: \"retry-after\" is set by the filter",
        ),
        (
            r#"{"rules": [{"name": "r", "limit": {"requests": 1, "per": "1s"}}], "maxKeys": 0}"#,
            "maxKeys: expected 1 to 1000000, got 0",
        ),
        (
            r#"{"rules": [{"name": "r", "limit": {"requests": 1, "per": "1s"}}],
                "failureMode": "maybe"}"#,
            "failureMode: unknown variant `maybe`",
        ),
        (
            &rule(r#", "mode": "log""#),
            "rules[0].mode: unknown variant `log`",
        ),
        (
            &rule(r#", "onMissingKey": "allow""#),
            "rules[0].onMissingKey: unknown variant `allow`",
        ),
        (
            &rule(r#", "match": {"pathPrefix": "api"}"#),
            "rules[0].match.pathPrefix: expected a path starting with \"/\"",
        ),
        (
            &rule(r#", "match": {"headers": [{"name": "a", "exact": "x", "prefix": "y"}]}"#),
            "rules[0].match.headers[0]: expected exactly one of exact, prefix, regex, present",
        ),
        (
            &rule(r#", "match": {"methods": ["G T"]}"#),
            "rules[0].match.methods[0]: expected an HTTP method",
        ),
        (
            r#"{"rules": [{"name": "r", "limit": {"requests": 4000000000, "per": "1ms"}}]}"#,
            "rules[0].limit: per / requests is under a nanosecond",
        ),
        (r#"{"rules": []}"#, "rules: expected at least one rule"),
        ("", "missing field `rules`"),
        (
            &rule(r#", "extra": 1"#),
            "rules[0].extra: unknown field `extra`",
        ),
    ];
    for (json, want) in cases {
        let got = error(json);
        assert!(got.starts_with(want), "got {got:?}, want {want:?}\n{json}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn plugin_name_prefixes_shared_data() {
    let c = compile_json(Some(rule("").as_bytes()), "my-plugin").unwrap();
    assert_eq!(
        c.rules[0].buckets.prefix,
        "mesh-filters/rate-limit/my-plugin/r"
    );
}
