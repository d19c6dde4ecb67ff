//! The glue: `CanaryRouter` as a `kit::Filter`, driven through its
//! `HttpFilter` callbacks against `kit::FakeHost`. Native only.
#![cfg(not(target_arch = "wasm32"))]
// Test code: clippy.toml's allow-*-in-tests covers `#[test]` functions but not
// the helpers of an integration-test crate, nor `#[wasm_bindgen_test]` ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use canary_router::CanaryRouter;
use kit::fake::Phase;
use kit::{Action, FakeHost, Filter, Headers, HostError, HttpFilter, MapType};
use std::rc::Rc;

const CONFIG: &str = r#"{
  "services": [{
    "host": "reviews",
    "rules": [{"match": {"header": {"name": "x-group", "exact": "qa"}}, "version": "v3"}],
    "split": [
      {"version": "v1", "weight": 90},
      {"version": "v2", "weight": 10},
      {"version": "v3", "weight": 0}
    ],
    "stickyBy": {"header": "x-user"},
    "setCookie": {"name": "route", "maxAge": "1h"}
  }]
}"#;

fn filter(config: &str) -> Rc<CanaryRouter> {
    let host = FakeHost::new();
    match CanaryRouter::configure(Some(config.as_bytes()), &host) {
        Ok(f) => Rc::new(f),
        Err(e) => panic!("config should compile: {e}"),
    }
}

fn request(pairs: &[(&str, &str)]) -> FakeHost {
    let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    FakeHost::with_request(&pairs)
}

/// Runs the request phase and returns the per-request filter.
fn on_request(f: &Rc<CanaryRouter>, host: &FakeHost) -> <CanaryRouter as Filter>::Http {
    let mut http = f.new_http();
    assert_eq!(http.on_request_headers(host, false), Action::Continue);
    http
}

/// Every value of `name` in the request headers.
fn request_values(host: &FakeHost, name: &str) -> Vec<Vec<u8>> {
    host.map(MapType::RequestHeaders)
        .get_all(name)
        .map(<[u8]>::to_vec)
        .collect()
}

fn route(host: &FakeHost) -> Vec<Vec<u8>> {
    request_values(host, "x-route-version")
}

fn calls(host: &FakeHost) -> Vec<String> {
    host.foreign_calls.borrow().clone()
}

fn response_cookies(host: &FakeHost) -> Vec<Vec<u8>> {
    host.map(MapType::ResponseHeaders)
        .get_all("set-cookie")
        .map(<[u8]>::to_vec)
        .collect()
}

/// A sticky key that lands on `want`.
fn user_on(f: &Rc<CanaryRouter>, want: &str) -> String {
    (0..1000)
        .map(|i| format!("user-{i}"))
        .find(|u| {
            let host = request(&[(":authority", "reviews"), (":path", "/"), ("x-user", u)]);
            on_request(f, &host);
            route(&host) == [want.as_bytes()]
        })
        .expect("some user lands on each version of a 90/10 split")
}

#[test]
fn configure_compiles_the_plugin_config_and_reports_its_path() {
    let host = FakeHost::new();
    let f = CanaryRouter::configure(Some(CONFIG.as_bytes()), &host).expect("valid");
    assert_eq!(f.router.routing_header, "x-route-version");
    assert_eq!(CanaryRouter::NAME, "canary-router");

    let bad = CONFIG.replace(r#""weight": 10"#, r#""weight": 20"#);
    let e = match CanaryRouter::configure(Some(bad.as_bytes()), &host) {
        Ok(_) => panic!("weights total 110"),
        Err(e) => e,
    };
    assert_eq!(e.path, "services[0].split");
    assert_eq!(
        e.to_string(),
        "services[0].split: weights must total 100, got 110"
    );

    let e = match CanaryRouter::configure(None, &host) {
        Ok(_) => panic!("no config"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("missing field `services`"), "{e}");
}

#[test]
fn sets_the_routing_header_and_clears_the_route_cache() {
    let f = filter(CONFIG);
    let host = request(&[
        (":authority", "reviews:9080"),
        (":path", "/"),
        ("x-group", "qa"),
    ]);
    on_request(&f, &host);
    assert_eq!(route(&host), [b"v3".to_vec()]);
    assert_eq!(calls(&host), ["clear_route_cache"]);
    // Other headers are left alone.
    assert_eq!(request_values(&host, "x-group"), [b"qa".to_vec()]);
    assert_eq!(
        request_values(&host, ":authority"),
        [b"reviews:9080".to_vec()]
    );
}

#[test]
fn a_client_cannot_force_a_version_with_the_routing_header() {
    let f = filter(CONFIG);
    let user = user_on(&f, "v1");
    // The client asks for the idle v3, and then for v2, in any case and twice.
    for forged in [
        vec![("x-route-version", "v3")],
        vec![("X-Route-Version", "v2")],
        vec![("x-route-version", "v1"), ("x-route-version", "v2")],
        vec![("x-route-version", "v2"), ("x-route-version", "v1")],
        vec![("x-route-version", "v1"), ("x-route-version", "v1")],
        vec![("x-route-version", "")],
    ] {
        let mut pairs = vec![
            (":authority", "reviews"),
            (":path", "/"),
            ("x-user", user.as_str()),
        ];
        pairs.extend(forged.iter().copied());
        let host = request(&pairs);
        on_request(&f, &host);
        assert_eq!(route(&host), [b"v1".to_vec()], "{forged:?}");
        assert_eq!(calls(&host), ["clear_route_cache"], "{forged:?}");
    }
}

#[test]
fn an_unchanged_routing_header_does_not_clear_the_route_cache() {
    let f = filter(CONFIG);
    let user = user_on(&f, "v2");
    let host = request(&[
        (":authority", "reviews"),
        (":path", "/"),
        ("x-user", &user),
        ("x-route-version", "v2"),
    ]);
    on_request(&f, &host);
    assert_eq!(route(&host), [b"v2".to_vec()]);
    assert_eq!(calls(&host), Vec::<String>::new());
}

#[test]
fn no_matching_service_removes_the_routing_header() {
    let f = filter(CONFIG);
    for forged in [
        vec![("x-route-version", "v3")],
        vec![("x-route-version", "v1"), ("X-ROUTE-VERSION", "v2")],
    ] {
        let mut pairs = vec![(":authority", "ratings"), (":path", "/")];
        pairs.extend(forged.iter().copied());
        let host = request(&pairs);
        let mut http = on_request(&f, &host);
        assert_eq!(route(&host), Vec::<Vec<u8>>::new(), "{forged:?}");
        assert_eq!(calls(&host), ["clear_route_cache"]);
        // And nothing to add to the response.
        host.set_phase(Phase::Response);
        assert_eq!(http.on_response_headers(&host, false), Action::Continue);
        assert!(response_cookies(&host).is_empty());
    }

    // Nothing to remove: no call at all.
    let host = request(&[(":authority", "ratings"), (":path", "/")]);
    on_request(&f, &host);
    assert_eq!(route(&host), Vec::<Vec<u8>>::new());
    assert_eq!(calls(&host), Vec::<String>::new());
    assert_eq!(host.map(MapType::RequestHeaders).len(), 2);
}

#[test]
fn a_custom_routing_header_is_owned_the_same_way() {
    let config = r#"{"routingHeader":"X-Canary","services":[
        {"host":"reviews","split":[{"version":"v1","weight":100}]}]}"#;
    let f = filter(config);
    let host = request(&[
        (":authority", "reviews"),
        (":path", "/"),
        ("x-canary", "v9"),
        ("x-route-version", "v9"),
    ]);
    on_request(&f, &host);
    assert_eq!(request_values(&host, "x-canary"), [b"v1".to_vec()]);
    // The default name is not the filter's business any more.
    assert_eq!(route(&host), [b"v9".to_vec()]);

    let host = request(&[(":authority", "other"), (":path", "/"), ("X-Canary", "v1")]);
    on_request(&f, &host);
    assert!(request_values(&host, "x-canary").is_empty());
}

#[test]
fn the_pin_cookie_is_written_only_in_the_response_phase() {
    let f = filter(CONFIG);
    // No sticky key: a random draw, which pins.
    let host = request(&[(":authority", "reviews"), (":path", "/")]);
    let mut http = on_request(&f, &host);
    let version = route(&host);
    assert_eq!(version.len(), 1);
    // Nothing was written to the response during the request phase.
    assert!(response_cookies(&host).is_empty());

    host.set_phase(Phase::Response);
    assert_eq!(http.on_response_headers(&host, false), Action::Continue);
    let expected = format!(
        "route={}; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax",
        String::from_utf8_lossy(&version[0])
    );
    assert_eq!(response_cookies(&host), [expected.into_bytes()]);

    // Once only.
    assert_eq!(http.on_response_headers(&host, true), Action::Continue);
    assert_eq!(response_cookies(&host).len(), 1);
}

#[test]
fn the_pin_cookie_is_added_beside_the_upstream_cookies() {
    let f = filter(CONFIG);
    let host = request(&[(":authority", "reviews"), (":path", "/")]);
    let mut http = on_request(&f, &host);
    host.set_phase(Phase::Response);
    host.set_map(
        MapType::ResponseHeaders,
        Headers::from_pairs([(":status", "200"), ("set-cookie", "session=abc")]),
    );
    http.on_response_headers(&host, false);
    let cookies = response_cookies(&host);
    assert_eq!(cookies.len(), 2);
    assert_eq!(cookies[0], b"session=abc");
    assert!(cookies[1].starts_with(b"route=v"), "{cookies:?}");
}

#[test]
fn a_refused_response_header_is_not_a_panic() {
    let f = filter(CONFIG);
    let host = request(&[(":authority", "reviews"), (":path", "/")]);
    let mut http = on_request(&f, &host);
    // Still in the request phase: FakeHost, like Envoy, says BadArgument.
    assert_eq!(http.on_response_headers(&host, false), Action::Continue);
    assert!(response_cookies(&host).is_empty());

    let host = request(&[(":authority", "reviews"), (":path", "/")]);
    let mut http = on_request(&f, &host);
    host.set_phase(Phase::Response);
    host.fail("add_header", HostError::InternalFailure);
    assert_eq!(http.on_response_headers(&host, false), Action::Continue);
    assert!(response_cookies(&host).is_empty());
}

#[test]
fn rule_sticky_and_pin_decisions_set_no_cookie() {
    let f = filter(CONFIG);
    let user = user_on(&f, "v2");
    for (extra, want) in [
        (vec![("x-group", "qa")], "v3"),
        (vec![("x-user", user.as_str())], "v2"),
        (vec![("cookie", "route=v2"), ("x-user", "someone")], "v2"),
    ] {
        let mut pairs = vec![(":authority", "reviews"), (":path", "/")];
        pairs.extend(extra.iter().copied());
        let host = request(&pairs);
        let mut http = on_request(&f, &host);
        assert_eq!(route(&host), [want.as_bytes().to_vec()], "{extra:?}");
        host.set_phase(Phase::Response);
        http.on_response_headers(&host, false);
        assert!(response_cookies(&host).is_empty(), "{extra:?}");
    }
}

#[test]
fn a_forged_pin_to_an_idle_version_is_replaced() {
    let f = filter(CONFIG);
    let host = request(&[
        (":authority", "reviews"),
        (":path", "/"),
        ("cookie", "route=v3"),
        ("x-route-version", "v3"),
    ]);
    let mut http = on_request(&f, &host);
    let got = route(&host);
    assert_ne!(got, [b"v3".to_vec()]);
    host.set_phase(Phase::Response);
    http.on_response_headers(&host, false);
    let cookies = response_cookies(&host);
    assert_eq!(cookies.len(), 1);
    let mut want = b"route=".to_vec();
    want.extend_from_slice(&got[0]);
    assert!(cookies[0].starts_with(&want), "{cookies:?}");
}

#[test]
fn each_request_gets_its_own_state() {
    let f = filter(CONFIG);
    // A random draw pins the first request...
    let first = request(&[(":authority", "reviews"), (":path", "/")]);
    let _pinned = on_request(&f, &first);
    // ...but a second request (a rule) has nothing to add.
    let second = request(&[(":authority", "reviews"), (":path", "/"), ("x-group", "qa")]);
    let mut http = on_request(&f, &second);
    second.set_phase(Phase::Response);
    http.on_response_headers(&second, false);
    assert!(response_cookies(&second).is_empty());
}

#[test]
fn random_draws_through_the_host_follow_the_weights() {
    let f = filter(CONFIG);
    // One host, many requests: each draw is a fresh host random number.
    let host = FakeHost::new();
    let mut counts = [0usize; 3];
    for _ in 0..2000 {
        host.set_map(
            MapType::RequestHeaders,
            Headers::from_pairs([(":authority", "reviews"), (":path", "/")]),
        );
        on_request(&f, &host);
        let v = route(&host);
        let i = [&b"v1"[..], b"v2", b"v3"]
            .iter()
            .position(|n| v == [n.to_vec()])
            .expect("one known version");
        counts[i] += 1;
    }
    assert_eq!(counts[2], 0, "{counts:?}");
    // 10% ± 3 points of 2000.
    assert!((140..=260).contains(&counts[1]), "{counts:?}");
}

#[test]
fn unreadable_headers_still_remove_the_routing_header() {
    let f = filter(CONFIG);
    let host = request(&[
        (":authority", "reviews"),
        (":path", "/"),
        ("x-route-version", "v3"),
    ]);
    host.fail("headers", HostError::InternalFailure);
    let mut http = on_request(&f, &host);
    assert!(route(&host).is_empty());
    assert_eq!(calls(&host), ["clear_route_cache"]);
    // No decision, so no cookie either.
    host.set_phase(Phase::Response);
    assert_eq!(http.on_response_headers(&host, false), Action::Continue);
    assert!(response_cookies(&host).is_empty());
}

#[test]
fn host_failures_while_writing_are_not_a_panic() {
    let f = filter(CONFIG);
    let forged = [
        (":authority", "reviews"),
        (":path", "/"),
        ("x-route-version", "v3"),
    ];

    // Neither headers nor removal work: nothing to do, no cache clearing.
    let host = request(&forged);
    host.fail("headers", HostError::InternalFailure);
    host.fail("remove_header", HostError::InternalFailure);
    on_request(&f, &host);
    assert_eq!(calls(&host), Vec::<String>::new());

    // set_header fails: the route cache is not cleared for nothing.
    let host = request(&forged);
    host.fail("set_header", HostError::InternalFailure);
    on_request(&f, &host);
    assert_eq!(route(&host), [b"v3".to_vec()]);
    assert_eq!(calls(&host), Vec::<String>::new());

    // remove_header fails for an unmatched host.
    let host = request(&[(":authority", "ratings"), ("x-route-version", "v3")]);
    host.fail("remove_header", HostError::InternalFailure);
    on_request(&f, &host);
    assert_eq!(calls(&host), Vec::<String>::new());

    // clear_route_cache fails or is missing: the header is still written.
    for err in [
        HostError::InternalFailure,
        HostError::NotFound,
        HostError::Unimplemented,
    ] {
        let host = request(&forged);
        host.set_foreign_function("clear_route_cache", move |_| Err(err));
        on_request(&f, &host);
        assert_eq!(route(&host).len(), 1);
        assert_ne!(route(&host), [b"v3".to_vec()]);
        assert_eq!(calls(&host), ["clear_route_cache"]);
    }
    let host = request(&forged);
    host.fail("call_foreign_function", HostError::InternalFailure);
    on_request(&f, &host);
    assert_ne!(route(&host), [b"v3".to_vec()]);
}

#[test]
fn non_utf8_request_headers_do_not_panic() {
    let config = r#"{"services":[{"host":"reviews",
        "rules":[{"match":{"header":{"name":"x-group","regex":".*"}},"version":"v2"}],
        "split":[{"version":"v1","weight":100},{"version":"v2","weight":0}],
        "stickyBy":{"cookie":"uid"}}]}"#;
    let f = filter(config);
    let host = FakeHost::with_request(&[
        (":authority", &b"reviews"[..]),
        (":path", &[b'/', 0xff][..]),
        ("x-group", &[0xff, 0xfe][..]),
        ("cookie", &[b'u', b'i', b'd', b'=', 0xc3, 0x28][..]),
        ("x-route-version", &[0xff][..]),
    ]);
    on_request(&f, &host);
    assert_eq!(route(&host), [b"v1".to_vec()]);
    assert_eq!(calls(&host), ["clear_route_cache"]);

    let host = FakeHost::with_request(&[
        (":authority", &[0xff, 0xfe][..]),
        ("x-route-version", &b"v2"[..]),
    ]);
    on_request(&f, &host);
    assert!(route(&host).is_empty());
}
