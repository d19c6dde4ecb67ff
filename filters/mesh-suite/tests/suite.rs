//! The suite against `kit::FakeHost`: its config (keys, paths in errors),
//! the order of the stages, a local reply ending the pass with telemetry
//! still counting the request in `on_log`, ticks and HTTP-call routing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kit::fake::Phase;
use kit::{Action, FakeHost, Filter, Headers, HttpFilter, MapType, Wake};
use mesh_suite::Suite;
use serde_json::{Value, json};
use std::rc::Rc;

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn configure(host: &FakeHost, config: &Value) -> Rc<Suite> {
    match Suite::configure(Some(config.to_string().as_bytes()), host) {
        Ok(s) => Rc::new(s),
        Err(e) => panic!("config should compile: {e}"),
    }
}

fn error(config: &str) -> kit::ConfigError {
    match Suite::configure(Some(config.as_bytes()), &FakeHost::new()) {
        Ok(_) => panic!("{config} should be rejected"),
        Err(e) => e,
    }
}

#[test]
fn config_errors_name_the_stage_and_the_path() {
    let cases = [
        (r#"{"colour": {}}"#, "colour", "unknown field"),
        (r#"{}"#, "", "at least one of"),
        (r#"{"jwt": 5}"#, "jwt", "expected an object"),
        (
            r#"{"rateLimit": {"rules": [{"name": "a", "limit": {"requests": 1, "per": "soon"}}]}}"#,
            "rateLimit.rules[0].limit.per",
            "duration",
        ),
        (
            r#"{"canary": {"services": [{"host": "a", "split": [{"version": "v1", "weight": 90}]}]}}"#,
            "canary.services[0].split",
            "100",
        ),
        (
            r#"{"telemetry": {"dimensions": ["colour"]}}"#,
            "telemetry.dimensions[0]",
            "unknown dimension",
        ),
        (r#"{"jwt": {"providers": []}}"#, "jwt", ""),
    ];
    for (config, path, message) in cases {
        let e = error(config);
        assert!(
            e.path == path || (path == "jwt" && e.path.starts_with("jwt")),
            "{config}: {e}"
        );
        assert!(e.message.contains(message), "{config}: {e}");
    }
    // The manifest check compiles the same way, without a host.
    let e =
        mesh_suite::config::compile_json(Some(br#"{"telemetry": {"maxValuesPerLabel": 0}}"#), "p")
            .unwrap_err();
    assert_eq!(e.path, "telemetry.maxValuesPerLabel");
    // A null key is an absent one.
    let host = FakeHost::new();
    let s = configure(&host, &json!({"telemetry": {}, "canary": null}));
    assert_eq!(s.stage_names(), ["telemetry"]);
}

const RATE_LIMIT: &str = r#"{"rules": [{"name": "one", "limit": {"requests": 1, "per": "1h"}}]}"#;
const CANARY: &str = r#"{"services": [{"host": "*", "rules": [
    {"match": {"header": {"name": "x-canary", "exact": "yes"}}, "version": "v2"}],
    "split": [{"version": "v1", "weight": 100}, {"version": "v2", "weight": 0}]}]}"#;
const TELEMETRY: &str =
    r#"{"dimensions": ["response_code", "version"], "accessLog": {"enabled": false}}"#;

fn all_but_jwt(host: &FakeHost) -> Rc<Suite> {
    let config = json!({
        "rateLimit": serde_json::from_str::<Value>(RATE_LIMIT).unwrap(),
        "canary": serde_json::from_str::<Value>(CANARY).unwrap(),
        "telemetry": serde_json::from_str::<Value>(TELEMETRY).unwrap(),
    });
    configure(host, &config)
}

/// One request through the suite: request headers, then (when it went on)
/// response headers, then the log with `status`.
fn request(
    s: &Rc<Suite>,
    host: &FakeHost,
    extra: &[(&str, &[u8])],
    upstream: u32,
) -> (Action, u32) {
    let mut pairs: Vec<(&str, &[u8])> = vec![
        (":method", b"GET"),
        (":path", b"/orders"),
        (":authority", b"shop.example.com"),
    ];
    pairs.extend_from_slice(extra);
    host.start_request(&pairs);
    let mut http = s.new_http();
    let action = http.on_request_headers(host, true);
    let status = match host.local_response.borrow().as_ref() {
        Some(r) => r.status,
        None => upstream,
    };
    if action == Action::Continue {
        host.set_phase(Phase::Response);
        http.on_response_headers(host, true);
    }
    host.set_phase(Phase::Log);
    host.set_property(&["response", "code"], &i64::from(status).to_le_bytes());
    host.set_property(&["request", "duration"], &1_000_000i64.to_le_bytes());
    http.on_log(host);
    (action, status)
}

#[test]
fn stages_run_in_order_and_a_local_reply_ends_the_pass() {
    let host = FakeHost::new();
    let s = all_but_jwt(&host);
    assert_eq!(
        s.stage_names(),
        ["rate-limit", "canary-router", "telemetry"]
    );

    // Allowed: the canary writes the routing header; telemetry, in on_log,
    // sees it.
    let (action, status) = request(&s, &host, &[("x-canary", b"yes")], 200);
    assert_eq!((action, status), (Action::Continue, 200));
    let req = host.map(MapType::RequestHeaders);
    assert_eq!(req.get_str("x-route-version"), Some("v2"));
    // The rate limiter's response headers went out on the way back.
    assert_eq!(
        host.metric_value("requests_total;response_code=200;version=v2"),
        Some(1)
    );

    // Refused: a 429 from the rate limiter; the canary never runs (a
    // client-sent routing header stays as sent), telemetry still counts it.
    let (action, status) = request(
        &s,
        &host,
        &[("x-canary", b"yes"), ("x-route-version", b"forged")],
        200,
    );
    assert_eq!((action, status), (Action::Pause, 429));
    let req = host.map(MapType::RequestHeaders);
    assert_eq!(req.get_str("x-route-version"), Some("forged"));
    assert_eq!(
        host.metric_value("requests_total;response_code=429;version=forged"),
        Some(1)
    );
}

#[test]
fn separate_filters_and_the_suite_agree() {
    // The same requests through the three filters run one after the other
    // (as Envoy chains them) and through the suite give the same metrics.
    let separate = FakeHost::new();
    let rl =
        Rc::new(rate_limit::RateLimit::configure(Some(RATE_LIMIT.as_bytes()), &separate).unwrap());
    let canary = Rc::new(
        canary_router::CanaryRouter::configure(Some(CANARY.as_bytes()), &separate).unwrap(),
    );
    let tele =
        Rc::new(telemetry::Telemetry::configure(Some(TELEMETRY.as_bytes()), &separate).unwrap());
    let suite_host = FakeHost::new();
    let suite = all_but_jwt(&suite_host);

    for (i, extra) in [
        vec![("x-canary", b"yes".as_slice())],
        vec![],
        vec![("x-canary", b"no".as_slice())],
    ]
    .into_iter()
    .enumerate()
    {
        // Separate filters.
        let mut pairs: Vec<(&str, &[u8])> = vec![
            (":method", b"GET"),
            (":path", b"/orders"),
            (":authority", b"shop.example.com"),
        ];
        pairs.extend_from_slice(&extra);
        separate.start_request(&pairs);
        let (mut a, mut b, mut c) = (rl.new_http(), canary.new_http(), tele.new_http());
        let mut status = 200u32;
        if a.on_request_headers(&separate, true) == Action::Continue {
            b.on_request_headers(&separate, true);
            c.on_request_headers(&separate, true);
        } else {
            status = separate.local_response.borrow().as_ref().unwrap().status;
        }
        separate.set_phase(Phase::Log);
        separate.set_property(&["response", "code"], &i64::from(status).to_le_bytes());
        separate.set_property(&["request", "duration"], &1_000_000i64.to_le_bytes());
        a.on_log(&separate);
        b.on_log(&separate);
        c.on_log(&separate);

        let (_, suite_status) = request(&suite, &suite_host, &extra, 200);
        assert_eq!(suite_status, status, "request {i}");
    }
    for name in [
        "requests_total;response_code=200;version=v2",
        "requests_total;response_code=429;version=unknown",
        "rate_limit.one.allowed",
        "rate_limit.one.denied",
    ] {
        assert_eq!(
            suite_host.metric_value(name),
            separate.metric_value(name),
            "{name}"
        );
    }
    assert_eq!(suite_host.metric_value("rate_limit.one.denied"), Some(2));
}

const ISS: &str = "https://issuer.example.com";

#[test]
fn a_401_from_the_jwt_stage_is_counted_by_telemetry() {
    let host = FakeHost::new();
    let s = configure(
        &host,
        &json!({
            "jwt": {"providers": [{"name": "p", "issuer": ISS,
                     "jwks": r#"{"keys":[{"kty":"oct","kid":"k","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#}],
                    "rules": [{"match": {"pathPrefix": "/"}, "requires": ["p"]}]},
            "telemetry": serde_json::from_str::<Value>(TELEMETRY).unwrap(),
        }),
    );
    let (action, status) = request(&s, &host, &[], 200);
    assert_eq!((action, status), (Action::Pause, 401));
    assert_eq!(
        host.metric_value("requests_total;response_code=401;version=unknown"),
        Some(1)
    );
}

#[test]
fn ticks_go_to_each_stage_at_its_own_period() {
    let host = FakeHost::new();
    let s = configure(
        &host,
        &json!({
            "rateLimit": serde_json::from_str::<Value>(RATE_LIMIT).unwrap(),
            "telemetry": {"routes": [{"name": "orders", "pathPrefix": "/orders"}],
                          "anomaly": {"window": "5s", "baseline": "60s"}},
        }),
    );
    // Telemetry's anomaly flush: a fifth of the window.
    assert_eq!(s.tick_period(), Some(std::time::Duration::from_secs(1)));
    s.on_tick(&host);
    assert!(
        host.metric_value("route_anomaly;route=orders;kind=error_rate")
            .is_some(),
        "the telemetry stage ticked"
    );
    // A suite without ticking stages asks for none.
    let quiet = configure(
        &FakeHost::new(),
        &json!({"canary": serde_json::from_str::<Value>(CANARY).unwrap()}),
    );
    assert_eq!(quiet.tick_period(), None);
}

#[test]
fn a_paused_stage_resumes_the_rest_of_the_pass() {
    // A JWT stage with a remote JWKS pauses the first request until the
    // keys arrive; on wake the later stages run.
    let host = FakeHost::new();
    let s = configure(
        &host,
        &json!({
            "jwt": {"providers": [{"name": "p", "issuer": ISS,
                     "jwksUri": "http://keycloak.keycloak.svc.cluster.local:8080/certs"}],
                    "rules": [{"match": {"pathPrefix": "/"}, "requires": "optional"}]},
            "canary": serde_json::from_str::<Value>(CANARY).unwrap(),
        }),
    );
    host.set_phase(Phase::Request);
    host.set_map(
        MapType::RequestHeaders,
        Headers::from_pairs([
            (":method", b"GET".as_slice()),
            (":path", b"/orders"),
            (":authority", b"shop.example.com"),
            ("x-canary", b"yes"),
        ]),
    );
    let mut http = s.new_http();
    let first = http.on_request_headers(&host, true);
    if first == Action::Pause {
        // The canary has not run yet.
        assert_eq!(
            host.map(MapType::RequestHeaders).get_str("x-route-version"),
            None
        );
        // Whatever the JWT stage does on wake, the pass goes on once it
        // lets the request through (an optional rule, no token).
        let mut wake = http.on_wake(&host);
        for _ in 0..10 {
            if wake != Wake::Wait {
                break;
            }
            s.on_tick(&host);
            host.advance(std::time::Duration::from_secs(6));
            wake = http.on_wake(&host);
        }
        assert_eq!(wake, Wake::Resume);
    } else {
        assert_eq!(first, Action::Continue);
    }
    assert_eq!(
        host.map(MapType::RequestHeaders).get_str("x-route-version"),
        Some("v2")
    );
}

#[test]
fn one_request_header_read_serves_every_stage_of_a_pass() {
    let host = FakeHost::new();
    let s = all_but_jwt(&host);
    host.start_request(&[
        (":method", b"GET"),
        (":path", b"/orders"),
        (":authority", b"shop.example.com"),
        ("x-canary", b"yes"),
        ("x-route-version", b"forged"),
    ]);
    host.reset_calls();
    let mut http = s.new_http();
    assert_eq!(http.on_request_headers(&host, true), Action::Continue);
    // Rate limit and canary read the map, telemetry two single headers: one
    // host read in all.
    assert_eq!(host.calls("headers"), 1);
    assert_eq!(host.calls("header"), 0);
    assert_eq!(
        host.map(MapType::RequestHeaders).get_str("x-route-version"),
        Some("v2")
    );
    // on_log reads the final headers afresh (filters after the suite may
    // have changed them).
    host.set_phase(Phase::Log);
    http.on_log(&host);
    assert_eq!(host.calls("headers"), 2);
}

#[test]
fn the_shared_read_follows_each_change_as_envoy_makes_it() {
    use kit::Host;
    use mesh_suite::watch::{RequestCache, Watch};
    let host = FakeHost::with_request(&[
        (":path", b"/a"),
        ("x-v", b"1"),
        ("x-v", b"2"),
        ("x-gone", b"g"),
    ]);
    let cache = RequestCache::default();
    let first = Watch::with_cache(&host, &cache);
    // Before any map read, single reads go to the host.
    assert_eq!(
        first.header(MapType::RequestHeaders, "x-v").unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(host.calls("header"), 1);
    first.headers(MapType::RequestHeaders).unwrap();
    first
        .set_header(MapType::RequestHeaders, "X-V", b"3")
        .unwrap();
    first
        .add_header(MapType::RequestHeaders, "x-add", b"a")
        .unwrap();
    first
        .remove_header(MapType::RequestHeaders, "x-gone")
        .unwrap();
    let second = Watch::with_cache(&host, &cache);
    let seen = second.headers(MapType::RequestHeaders).unwrap();
    assert_eq!(seen, host.map(MapType::RequestHeaders));
    assert_eq!(
        second.header(MapType::RequestHeaders, "x-v").unwrap(),
        Some(b"3".to_vec())
    );
    assert_eq!(host.calls("headers"), 1);
    assert_eq!(host.calls("header"), 1);
    // A change Envoy refuses is not applied to the shared read.
    host.fail("set_header", kit::HostError::BadArgument);
    assert!(
        second
            .set_header(MapType::RequestHeaders, "x-v", b"4")
            .is_err()
    );
    assert_eq!(
        second.header(MapType::RequestHeaders, "x-v").unwrap(),
        Some(b"3".to_vec())
    );
    // Response headers are never cached.
    second.headers(MapType::ResponseHeaders).unwrap();
    assert_eq!(host.calls("headers"), 2);
}
