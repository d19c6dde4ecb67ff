//! The glue: `RateLimit` as a `kit::Filter`, driven through its `HttpFilter`
//! callbacks against `kit::FakeHost`. Native only.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kit::fake::{LocalResponse, Phase};
use kit::{Action, FakeHost, Filter, Headers, HttpFilter, MapType};
use rate_limit::RateLimit;
use std::rc::Rc;
use std::time::Duration;

const CONFIG: &str = r#"{
  "rules": [{
    "name": "per-user",
    "match": {"pathPrefix": "/api"},
    "key": [{"header": "x-user-id"}],
    "limit": {"requests": 60, "per": "1m", "burst": 3}
  }],
  "response": {"status": 429, "body": "{\"error\":\"rate_limited\"}",
               "headers": {"content-type": "application/json"}},
  "rateLimitHeaders": true,
  "maxKeys": 64
}"#;

fn configure(host: &FakeHost, config: &str) -> Rc<RateLimit> {
    match RateLimit::configure(Some(config.as_bytes()), host) {
        Ok(f) => Rc::new(f),
        Err(e) => panic!("config should compile: {e}"),
    }
}

/// Puts a fresh request on `host` (same shared data, metrics and clock).
fn set_request(host: &FakeHost, pairs: &[(&str, &str)]) {
    let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    host.start_request(&pairs);
}

struct Sent {
    action: Action,
    reply: Option<LocalResponse>,
    decision: Option<String>,
    http: <RateLimit as Filter>::Http,
}

fn send(f: &Rc<RateLimit>, host: &FakeHost, pairs: &[(&str, &str)]) -> Sent {
    set_request(host, pairs);
    let mut http = f.new_http();
    let action = http.on_request_headers(host, true);
    Sent {
        action,
        reply: host.local_response.borrow().clone(),
        decision: kit::Host::property(host, &["rate_limit_decision"])
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap()),
        http,
    }
}

fn user(id: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":path", "/api/items".into()),
        ("x-user-id", id.into()),
    ]
}

fn send_user(f: &Rc<RateLimit>, host: &FakeHost, id: &str) -> Sent {
    let pairs = user(id);
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
    send(f, host, &pairs)
}

fn header<'a>(reply: &'a LocalResponse, name: &str) -> Option<&'a str> {
    reply
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
}

fn metric(host: &FakeHost, name: &str) -> i128 {
    host.metric_value(name)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

#[test]
fn a_burst_admits_exactly_burst_then_429_with_retry_after() {
    let host = FakeHost::new();
    let f = configure(&host, CONFIG);
    for _ in 0..3 {
        let s = send_user(&f, &host, "alice");
        assert_eq!(s.action, Action::Continue);
        assert_eq!(s.reply, None);
        assert_eq!(s.decision.as_deref(), Some("allowed"));
    }
    let s = send_user(&f, &host, "alice");
    assert_eq!(s.action, Action::Pause);
    assert_eq!(s.decision.as_deref(), Some("denied"));
    let reply = s.reply.unwrap();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body, br#"{"error":"rate_limited"}"#);
    assert_eq!(header(&reply, "content-type"), Some("application/json"));
    assert_eq!(
        header(&reply, "retry-after"),
        Some("1"),
        "one per second, rounded up"
    );
    assert_eq!(
        header(&reply, "ratelimit-policy"),
        Some(r#""per-user";q=3;w=3"#)
    );
    assert_eq!(header(&reply, "ratelimit"), Some(r#""per-user";r=0;t=3"#));
    assert_eq!(metric(&host, "rate_limit.per-user.allowed"), 3);
    assert_eq!(metric(&host, "rate_limit.per-user.denied"), 1);
    assert_eq!(metric(&host, "rate_limit.per-user.shadow_denied"), 0);
    assert_eq!(metric(&host, "rate_limit.per-user.overflow"), 0);
    assert_eq!(metric(&host, "rate_limit.per-user.contention"), 0);

    // One more after a second.
    host.advance(Duration::from_secs(1));
    assert_eq!(send_user(&f, &host, "alice").reply, None);
    assert!(send_user(&f, &host, "alice").reply.is_some());
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    let host = FakeHost::new();
    let f = configure(
        &host,
        r#"{"rules": [{"name": "slow", "limit": {"requests": 1, "per": "90s"}}]}"#,
    );
    assert!(send(&f, &host, &[]).reply.is_none());
    host.advance(Duration::from_millis(500));
    let reply = send(&f, &host, &[]).reply.unwrap();
    assert_eq!(reply.status, 429);
    assert!(reply.body.is_empty());
    // 89.5 s left.
    assert_eq!(header(&reply, "retry-after"), Some("90"));
    assert_eq!(header(&reply, "ratelimit"), None, "rateLimitHeaders is off");
}

#[test]
fn keys_are_independent() {
    let host = FakeHost::new();
    let f = configure(&host, CONFIG);
    for _ in 0..3 {
        assert!(send_user(&f, &host, "alice").reply.is_none());
    }
    assert!(send_user(&f, &host, "alice").reply.is_some());
    for _ in 0..3 {
        assert!(send_user(&f, &host, "bob").reply.is_none());
    }
    assert!(send_user(&f, &host, "bob").reply.is_some());
}

#[test]
fn unmatched_requests_are_not_counted() {
    let host = FakeHost::new();
    let f = configure(&host, CONFIG);
    for _ in 0..10 {
        let s = send(&f, &host, &[(":path", "/static/x"), ("x-user-id", "alice")]);
        assert!(s.reply.is_none());
        assert_eq!(s.decision.as_deref(), Some("allowed"));
    }
    assert_eq!(metric(&host, "rate_limit.per-user.allowed"), 0);
}

#[test]
fn shadow_mode_admits_all_and_says_shadow_denied() {
    let host = FakeHost::new();
    let f = configure(
        &host,
        &CONFIG.replace("\"burst\": 3}", "\"burst\": 3}, \"mode\": \"shadow\""),
    );
    let decisions: Vec<String> = (0..5)
        .map(|_| {
            let s = send_user(&f, &host, "alice");
            assert_eq!(s.action, Action::Continue);
            assert!(s.reply.is_none());
            s.decision.unwrap()
        })
        .collect();
    assert_eq!(
        decisions,
        [
            "allowed",
            "allowed",
            "allowed",
            "shadow_denied",
            "shadow_denied"
        ]
    );
    assert_eq!(metric(&host, "rate_limit.per-user.allowed"), 3);
    assert_eq!(metric(&host, "rate_limit.per-user.shadow_denied"), 2);
    assert_eq!(metric(&host, "rate_limit.per-user.denied"), 0);
}

#[test]
fn missing_key_skips_by_default_and_denies_when_asked() {
    let host = FakeHost::new();
    let f = configure(&host, CONFIG);
    for _ in 0..10 {
        let s = send(&f, &host, &[(":path", "/api/x")]);
        assert!(s.reply.is_none());
        assert_eq!(s.decision.as_deref(), Some("allowed"));
    }
    let host = FakeHost::new();
    let f = configure(
        &host,
        &CONFIG.replace("\"burst\": 3}", "\"burst\": 3}, \"onMissingKey\": \"deny\""),
    );
    let s = send(&f, &host, &[(":path", "/api/x")]);
    assert_eq!(s.action, Action::Pause);
    assert_eq!(s.decision.as_deref(), Some("denied"));
    let reply = s.reply.unwrap();
    assert_eq!(reply.status, 429);
    assert_eq!(header(&reply, "retry-after"), None, "nothing to wait for");
    assert_eq!(metric(&host, "rate_limit.per-user.denied"), 1);
    // With the key present, it is counted as usual.
    assert!(send_user(&f, &host, "alice").reply.is_none());
}

#[test]
fn headers_are_added_in_the_response_phase_only() {
    let host = FakeHost::new();
    let f = configure(&host, CONFIG);
    let mut s = send_user(&f, &host, "alice");
    // Nothing in the request phase (FakeHost would refuse it anyway).
    assert!(host.map(MapType::ResponseHeaders).is_empty());
    assert!(
        host.logs
            .borrow()
            .iter()
            .all(|(_, m)| !m.contains("RateLimit"))
    );
    host.set_phase(Phase::Response);
    host.set_map(
        MapType::ResponseHeaders,
        Headers::from_pairs([(":status", "200")]),
    );
    assert_eq!(s.http.on_response_headers(&host, false), Action::Continue);
    let response = host.map(MapType::ResponseHeaders);
    assert_eq!(
        response.get_str("ratelimit-policy"),
        Some(r#""per-user";q=3;w=3"#)
    );
    assert_eq!(response.get_str("ratelimit"), Some(r#""per-user";r=2;t=1"#));
    assert!(
        host.logs
            .borrow()
            .iter()
            .all(|(_, m)| !m.contains("cannot"))
    );

    // Off by default.
    let host = FakeHost::new();
    let f = configure(
        &host,
        &CONFIG.replace("\"rateLimitHeaders\": true", "\"rateLimitHeaders\": false"),
    );
    let mut s = send_user(&f, &host, "alice");
    host.set_phase(Phase::Response);
    s.http.on_response_headers(&host, false);
    assert!(host.map(MapType::ResponseHeaders).is_empty());
}

#[test]
fn the_most_restrictive_rule_is_reported() {
    let host = FakeHost::new();
    let f = configure(
        &host,
        r#"{"rules": [
            {"name": "wide", "limit": {"requests": 100, "per": "1m"}},
            {"name": "narrow", "limit": {"requests": 5, "per": "1m"}},
            {"name": "shadow", "limit": {"requests": 1, "per": "1h"}, "mode": "shadow"}
        ], "rateLimitHeaders": true}"#,
    );
    let mut s = send(&f, &host, &[]);
    assert_eq!(s.decision.as_deref(), Some("allowed"));
    host.set_phase(Phase::Response);
    s.http.on_response_headers(&host, false);
    let response = host.map(MapType::ResponseHeaders);
    assert_eq!(
        response.get_str("ratelimit-policy"),
        Some(r#""narrow";q=5;w=60"#)
    );
    assert_eq!(response.get_str("ratelimit"), Some(r#""narrow";r=4;t=12"#));
    // Every matching rule consumed.
    assert_eq!(metric(&host, "rate_limit.wide.allowed"), 1);
    assert_eq!(metric(&host, "rate_limit.narrow.allowed"), 1);
    assert_eq!(metric(&host, "rate_limit.shadow.allowed"), 1);
    // The shadow rule now would deny; the request still goes through.
    let s = send(&f, &host, &[]);
    assert_eq!(s.decision.as_deref(), Some("shadow_denied"));
    assert!(s.reply.is_none());
}

#[test]
fn any_enforce_denial_denies() {
    let host = FakeHost::new();
    let f = configure(
        &host,
        r#"{"rules": [
            {"name": "wide", "limit": {"requests": 100, "per": "1m"}},
            {"name": "narrow", "limit": {"requests": 1, "per": "1m"}}
        ]}"#,
    );
    assert!(send(&f, &host, &[]).reply.is_none());
    let s = send(&f, &host, &[]);
    assert_eq!(s.decision.as_deref(), Some("denied"));
    assert_eq!(header(&s.reply.unwrap(), "retry-after"), Some("60"));
    assert_eq!(metric(&host, "rate_limit.wide.allowed"), 2);
    assert_eq!(metric(&host, "rate_limit.narrow.denied"), 1);
}

#[test]
fn two_filter_instances_on_one_host_share_the_limit() {
    // Two configured filters stand for two worker VMs of one Envoy.
    let host = FakeHost::new();
    let a = configure(&host, CONFIG);
    let b = configure(&host, CONFIG);
    assert!(send_user(&a, &host, "alice").reply.is_none());
    assert!(send_user(&b, &host, "alice").reply.is_none());
    assert!(send_user(&a, &host, "alice").reply.is_none());
    assert!(send_user(&b, &host, "alice").reply.is_some());
    assert!(send_user(&a, &host, "alice").reply.is_some());
}

#[test]
fn the_plugin_name_separates_plugins() {
    let host = FakeHost::new();
    host.set_property(&["plugin_name"], b"one");
    let one = configure(&host, CONFIG);
    host.set_property(&["plugin_name"], b"two");
    let two = configure(&host, CONFIG);
    assert_eq!(
        one.config.rules[0].buckets.prefix,
        "mesh-filters/rate-limit/one/per-user"
    );
    for _ in 0..3 {
        assert!(send_user(&one, &host, "alice").reply.is_none());
    }
    assert!(send_user(&one, &host, "alice").reply.is_some());
    assert!(send_user(&two, &host, "alice").reply.is_none());
}

#[test]
fn remote_address_comes_from_source_address() {
    let host = FakeHost::new();
    let f = configure(
        &host,
        r#"{"rules": [{"name": "ip", "key": [{"remoteAddress": {}}],
            "limit": {"requests": 1, "per": "1m"}}]}"#,
    );
    host.set_property(&["source", "address"], b"10.0.0.1:40000");
    assert!(send(&f, &host, &[]).reply.is_none());
    host.set_property(&["source", "address"], b"10.0.0.1:40001");
    assert!(
        send(&f, &host, &[]).reply.is_some(),
        "same address, other port"
    );
    host.set_property(&["source", "address"], b"[::1]:40000");
    assert!(send(&f, &host, &[]).reply.is_none());
}

#[test]
fn failure_mode_decides_without_host_time() {
    let host = FakeHost::new();
    let f = configure(&host, CONFIG);
    host.fail("now", kit::HostError::InternalFailure);
    let s = send_user(&f, &host, "alice");
    assert!(s.reply.is_none());
    assert_eq!(s.decision.as_deref(), Some("allowed"));

    let host = FakeHost::new();
    let f = configure(
        &host,
        &CONFIG.replace("\"maxKeys\"", "\"failureMode\": \"deny\", \"maxKeys\""),
    );
    host.fail("now", kit::HostError::InternalFailure);
    let s = send_user(&f, &host, "alice");
    assert_eq!(s.reply.unwrap().status, 429);
    assert_eq!(s.decision.as_deref(), Some("denied"));
}

#[test]
fn overflow_is_counted() {
    let host = FakeHost::new();
    let f = configure(
        &host,
        r#"{"rules": [{"name": "u", "key": [{"header": "x-user-id"}],
            "limit": {"requests": 10, "per": "1m"}}], "maxKeys": 1}"#,
    );
    assert!(send_user(&f, &host, "alice").reply.is_none());
    assert!(send_user(&f, &host, "bob").reply.is_none());
    assert_eq!(metric(&host, "rate_limit.u.overflow"), 1);
}

#[test]
fn bad_config_is_rejected_at_configure() {
    let host = FakeHost::new();
    let e = RateLimit::configure(
        Some(br#"{"rules": [{"name": "r", "limit": {"requests": 0, "per": "1s"}}]}"#),
        &host,
    )
    .err()
    .unwrap();
    assert_eq!(e.path, "rules[0].limit.requests");
    host.fail("set_shared_data", kit::HostError::InternalFailure);
    let e = RateLimit::configure(Some(CONFIG.as_bytes()), &host)
        .err()
        .unwrap();
    assert_eq!(e.path, "rules[0]");
}

#[test]
fn an_empty_key_means_one_bucket_for_the_rule() {
    let host = FakeHost::new();
    let f = configure(
        &host,
        r#"{"rules": [{"name": "all", "match": {"pathPrefix": "/"}, "key": [],
            "limit": {"requests": 4, "per": "1h"}}]}"#,
    );
    let mut admitted = 0;
    for i in 0..12 {
        let id = format!("user-{i}");
        let sent = send(
            &f,
            &host,
            &[
                (":method", "GET"),
                (":path", "/x"),
                ("x-user-id", id.as_str()),
            ],
        );
        if sent.reply.is_none() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 4, "every request shares the rule's one bucket");
}
