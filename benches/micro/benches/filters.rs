//! Micro-benchmarks of each filter's per-request logic, natively, through
//! its `kit::Filter` against `kit::FakeHost` (so a figure includes the fake
//! host's map lookups, a little more than the logic alone):
//!
//! - `jwt/<alg>/first-seen` and `jwt/<alg>/cached`: a request with a valid
//!   RS256, ES256 or EdDSA token. First-seen alternates two tokens with a
//!   one-entry cache, so every request verifies a signature; cached sends
//!   one token. Natively there is no Envoy `verify_signature`, so RS256 and
//!   ES256 take the pure-Rust (jwt-simple) path, as EdDSA always does.
//! - `rate-limit/allow`: the GCRA decision of one allowed request, with its
//!   shared-data read and CAS write.
//! - `canary/rule-match` and `canary/decide`: the full request, and the pure
//!   rule matching alone.
//! - `telemetry/record` and `telemetry/labels`: `on_log` (labels, caps,
//!   metric updates, no access log), and the label values alone.
//!
//! Run: `cargo bench -p mesh-micro-benches`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, criterion_group, criterion_main};
use jwt_simple::prelude::*;
use kit::fake::Phase;
use kit::{FakeHost, Filter, Headers, HttpFilter, MapType};
use serde_json::{Value, json};
use std::hint::black_box;
use std::rc::Rc;

const KEYS: &str = "../../filters/jwt-auth/tests/keys";
const ISS: &str = "https://issuer.example.com/realms/app";

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{KEYS}/{name}")).unwrap()
}

fn request(host: &FakeHost, pairs: &[(&str, &[u8])]) {
    host.set_phase(Phase::Request);
    host.set_map(
        MapType::RequestHeaders,
        Headers::from_pairs(pairs.iter().copied()),
    );
}

fn claims(sub: &str) -> JWTClaims<NoCustomClaims> {
    Claims::create(jwt_simple::prelude::Duration::from_hours(24))
        .with_issuer(ISS)
        .with_audience("api")
        .with_subject(sub)
}

/// Two tokens of `alg` for different subjects.
fn tokens(alg: &str) -> [String; 2] {
    let sign = |sub: &str| match alg {
        "RS256" => RS256KeyPair::from_pem(&read("rsa-a.key.pem"))
            .unwrap()
            .with_key_id(alg)
            .sign(claims(sub))
            .unwrap(),
        "ES256" => ES256KeyPair::from_pem(&read("ec256.key.pem"))
            .unwrap()
            .with_key_id(alg)
            .sign(claims(sub))
            .unwrap(),
        _ => Ed25519KeyPair::from_pem(&read("ed25519.key.pem"))
            .unwrap()
            .with_key_id(alg)
            .sign(claims(sub))
            .unwrap(),
    };
    [sign("alice"), sign("bob")]
}

fn jwt_filter(host: &FakeHost, cache_entries: usize) -> Rc<jwt_auth::JwtAuth> {
    let public: Value = serde_json::from_str(&read("public.jwk.json")).unwrap();
    let key = |name: &str, kid: &str| {
        let mut k = public[name].clone();
        k["kid"] = kid.into();
        k
    };
    let jwks =
        json!({"keys": [key("rsa-a", "RS256"), key("ec256", "ES256"), key("ed25519", "EdDSA")]});
    let config = json!({
        "providers": [{"name": "p", "issuer": ISS, "audiences": ["api"], "jwks": jwks.to_string()}],
        "rules": [{"match": {"pathPrefix": "/"}, "requires": ["p"]}],
        "cache": {"maxEntries": cache_entries},
    });
    Rc::new(jwt_auth::JwtAuth::configure(Some(config.to_string().as_bytes()), host).unwrap())
}

fn jwt(c: &mut Criterion) {
    let now = std::time::SystemTime::now();
    for alg in ["RS256", "ES256", "EdDSA"] {
        let [a, b] = tokens(alg);
        let bearer = [format!("Bearer {a}"), format!("Bearer {b}")];
        for (label, entries) in [("first-seen", 1), ("cached", 1000)] {
            let host = FakeHost::new();
            host.set_now(now);
            let f = jwt_filter(&host, entries);
            let mut i = 0usize;
            c.bench_function(&format!("jwt/{alg}/{label}"), |bench| {
                bench.iter(|| {
                    // First-seen alternates: the one-entry cache always misses.
                    let token = if label == "first-seen" {
                        &bearer[i % 2]
                    } else {
                        &bearer[0]
                    };
                    i += 1;
                    request(
                        &host,
                        &[
                            (":method", b"GET"),
                            (":path", b"/api/orders"),
                            (":authority", b"api.example.com"),
                            ("authorization", token.as_bytes()),
                        ],
                    );
                    let mut http = f.new_http();
                    let action = http.on_request_headers(&host, true);
                    assert_eq!(action, kit::Action::Continue, "{alg} {label}");
                    black_box(action)
                })
            });
        }
    }
}

fn rate_limit(c: &mut Criterion) {
    let host = FakeHost::new();
    let config = json!({"rules": [{
        "name": "per-client",
        "key": [{"header": "x-client"}],
        "limit": {"requests": 1_000_000_000u64, "per": "1s", "burst": 1_000_000}
    }]});
    let f = Rc::new(
        rate_limit::RateLimit::configure(Some(config.to_string().as_bytes()), &host).unwrap(),
    );
    c.bench_function("rate-limit/allow", |bench| {
        bench.iter(|| {
            request(
                &host,
                &[
                    (":method", b"GET"),
                    (":path", b"/orders"),
                    ("x-client", b"tenant-42"),
                ],
            );
            let mut http = f.new_http();
            let action = http.on_request_headers(&host, true);
            assert_eq!(action, kit::Action::Continue);
            black_box(action)
        })
    });
}

const CANARY: &str = r#"{
  "services": [{
    "host": "shop.example.com",
    "pathPrefix": "/",
    "rules": [
      {"match": {"header": {"name": "x-canary", "exact": "always"}}, "version": "v2"},
      {"match": {"cookie": {"name": "canary", "exact": "opt-in"}}, "version": "v2"}
    ],
    "split": [{"version": "v1", "weight": 95}, {"version": "v2", "weight": 5}],
    "stickyBy": {"cookie": "session"}
  }]
}"#;

fn canary(c: &mut Criterion) {
    let pairs: &[(&str, &[u8])] = &[
        (":method", b"GET"),
        (":path", b"/products/7"),
        (":authority", b"shop.example.com"),
        ("cookie", b"session=abc123; theme=dark"),
        ("x-canary", b"always"),
    ];
    let host = FakeHost::new();
    let f =
        Rc::new(canary_router::CanaryRouter::configure(Some(CANARY.as_bytes()), &host).unwrap());
    c.bench_function("canary/rule-match", |bench| {
        bench.iter(|| {
            request(&host, pairs);
            let mut http = f.new_http();
            black_box(http.on_request_headers(&host, true))
        })
    });
    let router = canary_router::config::compile_json(Some(CANARY.as_bytes())).unwrap();
    let headers = Headers::from_pairs(pairs.iter().copied());
    c.bench_function("canary/decide", |bench| {
        bench.iter(|| {
            let d = router.decide(black_box(&headers), || 7);
            black_box(d.version.is_some())
        })
    });
}

const TELEMETRY: &str = r#"{
  "routes": [{"name": "orders", "pathPrefix": "/orders"},
             {"name": "user", "regex": "^/users/[0-9]+$"}],
  "dimensions": ["route", "method", "response_code", "version"],
  "accessLog": {"enabled": false}
}"#;

fn telemetry(c: &mut Criterion) {
    let pairs: &[(&str, &[u8])] = &[
        (":method", b"GET"),
        (":path", b"/users/42?x=1"),
        (":authority", b"shop.example.com"),
        ("x-route-version", b"v2"),
    ];
    let host = FakeHost::new();
    let f = Rc::new(telemetry::Telemetry::configure(Some(TELEMETRY.as_bytes()), &host).unwrap());
    host.set_property(&["response", "code"], &200i64.to_le_bytes());
    host.set_property(&["request", "duration"], &3_000_000i64.to_le_bytes());
    host.set_property(&["request", "total_size"], &300i64.to_le_bytes());
    host.set_property(&["response", "total_size"], &1200i64.to_le_bytes());
    c.bench_function("telemetry/record", |bench| {
        bench.iter(|| {
            request(&host, pairs);
            host.set_phase(Phase::Log);
            let mut http = f.new_http();
            http.on_log(&host);
        })
    });
    let config = telemetry::config::compile_json(Some(TELEMETRY.as_bytes())).unwrap();
    let headers = Headers::from_pairs(pairs.iter().copied());
    c.bench_function("telemetry/labels", |bench| {
        bench.iter(|| black_box(telemetry::labels::values(&config, black_box(&headers), 200)))
    });
}

criterion_group!(benches, jwt, rate_limit, canary, telemetry);
criterion_main!(benches);
