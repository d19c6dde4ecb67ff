//! The glue: `JwtAuth` as a `kit::Filter`, driven through its `HttpFilter`
//! callbacks, ticks and HTTP call responses against `kit::FakeHost`. Native
//! only.
//!
//! One `FakeHost` stands for one Envoy process: its shared data is what
//! Envoy shares across workers, and two `JwtAuth` configured on it are two
//! worker VMs. Successive requests replace its request headers.
#![cfg(not(target_arch = "wasm32"))]
// Test code: clippy.toml's allow-*-in-tests covers `#[test]` functions but not
// the helpers of an integration-test crate, nor `#[wasm_bindgen_test]` ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_auth::JwtAuth;
use jwt_auth::filter::{JwtHttp, TICK};
use jwt_auth::sync::REFETCH_COOLDOWN_MS;
use jwt_simple::prelude::{
    ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair, ES256PublicKey, HS256Key,
    JWTClaims, MACLike, NoCustomClaims, RS256KeyPair, RS256PublicKey, RSAKeyPairLike,
    RSAPublicKeyLike, UnixTimeStamp, VerificationOptions,
};
use kit::fake::LocalResponse;
use kit::pause::PausedRequests;
use kit::{
    Action, FakeHost, Filter, Headers, HostError, HttpCallResponse, HttpFilter, MapType, Wake,
};
use serde_json::{Map, Value, json};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Keys and tokens
// ---------------------------------------------------------------------------

const RSA_A: &str = include_str!("keys/rsa-a.key.pem");
const RSA_B: &str = include_str!("keys/rsa-b.key.pem");
const EC256: &str = include_str!("keys/ec256.key.pem");
const PUBLIC_JWKS: &str = include_str!("keys/public.jwk.json");
const RSA_A_SPKI: &[u8] = include_bytes!("keys/rsa-a.pub.der");

const SECRET: &[u8] = b"an HMAC secret of more than 32 bytes, test only";
const ISS: &str = "https://issuer.example.com/realms/app";
/// FakeHost's clock at start.
const NOW: u64 = 1_700_000_000;
const AUTHORITY: &str = "api.example.com";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn jwk(name: &str, kid: &str) -> Value {
    let all: Value = serde_json::from_str(PUBLIC_JWKS).unwrap();
    let mut k = all[name].clone();
    assert!(k.is_object(), "no key {name}");
    k["kid"] = kid.into();
    k
}

fn oct(kid: &str, secret: &[u8]) -> Value {
    json!({"kty": "oct", "kid": kid, "k": b64(secret)})
}

fn jwks(keys: Vec<Value>) -> String {
    json!({ "keys": keys }).to_string()
}

fn merge(into: &mut Value, extra: Value) {
    let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) else {
        panic!("merge objects only");
    };
    for (k, v) in extra {
        if v.is_null() {
            into.remove(&k);
        } else {
            into.insert(k, v);
        }
    }
}

/// Claims valid at [`NOW`], with `patch` applied (null removes).
fn claims(patch: Value) -> Value {
    let mut c = json!({
        "iss": ISS,
        "aud": "api",
        "sub": "alice",
        "iat": NOW - 10,
        "exp": NOW + 3600,
    });
    merge(&mut c, patch);
    c
}

fn jwt_claims(payload: &Value) -> JWTClaims<Map<String, Value>> {
    JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom: payload.as_object().unwrap().clone(),
    }
}

fn hs256(payload: &Value) -> String {
    HS256Key::from_bytes(SECRET)
        .with_key_id("hmac")
        .authenticate(jwt_claims(payload))
        .unwrap()
}

fn rs256(pem: &str, kid: &str, payload: &Value) -> String {
    RS256KeyPair::from_pem(pem)
        .unwrap()
        .with_key_id(kid)
        .sign(jwt_claims(payload))
        .unwrap()
}

fn es256(payload: &Value) -> String {
    ES256KeyPair::from_pem(EC256)
        .unwrap()
        .with_key_id("ec256")
        .sign(jwt_claims(payload))
        .unwrap()
}

fn segments(token: &str) -> Vec<&str> {
    token.split('.').collect()
}

/// The token with its payload replaced, the signature kept.
fn tampered(token: &str) -> String {
    let s = segments(token);
    let forged = claims(json!({"sub": "admin"}));
    format!("{}.{}.{}", s[0], b64(forged.to_string()), s[2])
}

// ---------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------

/// A provider `p` with inline keys (HMAC, RSA, EC) and `extra` fields.
fn inline_provider(extra: Value) -> Value {
    let mut p = json!({
        "name": "p",
        "issuer": ISS,
        "audiences": ["api"],
        "jwks": jwks(vec![oct("hmac", SECRET), jwk("rsa-a", "rsa-a"), jwk("ec256", "ec256")]),
    });
    merge(&mut p, extra);
    p
}

/// The usual rules: `/healthz` none, `/public` optional, `/api` requires `p`.
fn usual_rules() -> Value {
    json!([
        {"match": {"path": "/healthz"}, "requires": "none"},
        {"match": {"pathPrefix": "/public"}, "requires": "optional"},
        {"match": {"pathPrefix": "/api"}, "requires": ["p"]},
    ])
}

fn config(providers: Vec<Value>, rules: Value) -> String {
    json!({"providers": providers, "rules": rules}).to_string()
}

fn configure(host: &FakeHost, json: &str) -> Rc<JwtAuth> {
    match JwtAuth::configure(Some(json.as_bytes()), host) {
        Ok(f) => Rc::new(f),
        Err(e) => panic!("config should compile: {e}\n{json}"),
    }
}

/// A worker with the usual rules and an inline provider with `extra`.
fn inline(host: &FakeHost, extra: Value) -> Rc<JwtAuth> {
    configure(host, &config(vec![inline_provider(extra)], usual_rules()))
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

#[derive(Debug)]
enum Outcome {
    /// The request goes on upstream.
    Continue,
    /// The filter answered it.
    Denied(LocalResponse),
    /// Paused, with no answer yet.
    Paused,
}

/// Puts a request on the host: `method`, `path`, and `extra` headers.
fn put_request(host: &FakeHost, method: &str, path: &str, extra: &[(&str, &str)]) {
    let mut pairs: Vec<(&str, &[u8])> = vec![
        (":method", method.as_bytes()),
        (":path", path.as_bytes()),
        (":authority", AUTHORITY.as_bytes()),
        (":scheme", b"https"),
    ];
    pairs.extend(extra.iter().map(|(n, v)| (*n, v.as_bytes())));
    host.set_map(MapType::RequestHeaders, Headers::from_pairs(pairs));
    *host.local_response.borrow_mut() = None;
}

fn outcome(host: &FakeHost, action: Action) -> Outcome {
    match (action, host.local_response.borrow_mut().take()) {
        (Action::Continue, None) => Outcome::Continue,
        (Action::Pause, Some(r)) => Outcome::Denied(r),
        (Action::Pause, None) => Outcome::Paused,
        (Action::Continue, Some(r)) => panic!("continued after answering {r:?}"),
    }
}

/// Runs `on_request_headers` for a request; returns what happened and the
/// per-request filter (for a paused one).
fn send_with(
    f: &Rc<JwtAuth>,
    host: &FakeHost,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (Outcome, JwtHttp) {
    put_request(host, method, path, extra);
    let mut http = f.new_http();
    let action = http.on_request_headers(host, true);
    (outcome(host, action), http)
}

fn send(f: &Rc<JwtAuth>, host: &FakeHost, path: &str, extra: &[(&str, &str)]) -> Outcome {
    send_with(f, host, "GET", path, extra).0
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A GET of `path` with `Authorization: Bearer token`.
fn with_token(f: &Rc<JwtAuth>, host: &FakeHost, path: &str, token: &str) -> Outcome {
    send(f, host, path, &[("authorization", &bearer(token))])
}

fn request_headers(host: &FakeHost) -> Headers {
    host.map(MapType::RequestHeaders)
}

fn header(host: &FakeHost, name: &str) -> Option<String> {
    request_headers(host)
        .get(name)
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
}

fn all_values(host: &FakeHost, name: &str) -> Vec<String> {
    request_headers(host)
        .get_all(name)
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
        .collect()
}

fn assert_continue(o: Outcome, what: &str) {
    assert!(matches!(o, Outcome::Continue), "{what}: {o:?}");
}

fn denied(o: Outcome, what: &str) -> LocalResponse {
    match o {
        Outcome::Denied(r) => r,
        other => panic!("{what}: expected a local reply, got {other:?}"),
    }
}

fn response_header(r: &LocalResponse, name: &str) -> Option<String> {
    r.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
}

/// A 401 with RFC 6750's header and the JSON body; returns the message.
fn unauthorized(o: Outcome, what: &str) -> String {
    let r = denied(o, what);
    assert_eq!(r.status, 401, "{what}: {r:?}");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    let obj = body.as_object().unwrap();
    assert_eq!(obj.len(), 2, "{what}: {body}");
    assert_eq!(body["error"], "invalid_token", "{what}");
    let message = body["message"].as_str().unwrap().to_string();
    let www = response_header(&r, "www-authenticate").unwrap();
    let tail = format!("\", error=\"invalid_token\", error_description=\"{message}\"");
    let realm = www
        .strip_prefix("Bearer realm=\"")
        .and_then(|w| w.strip_suffix(&tail))
        .unwrap_or_else(|| panic!("{what}: {www}"));
    assert!(realm.contains(AUTHORITY), "{what}: {www}");
    assert!(
        !realm.contains('"') && !realm.contains('\\'),
        "{what}: {www}"
    );
    assert_eq!(
        response_header(&r, "content-type").as_deref(),
        Some("application/json")
    );
    message
}

fn metric(host: &FakeHost, name: &str) -> i128 {
    host.metric_value(&format!("jwt_auth.{name}")).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Envoy's verify_signature, faked
// ---------------------------------------------------------------------------

/// The length-delimited fields of a protobuf message, by number.
fn proto_fields(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let varint = |bytes: &mut &[u8]| {
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let b = bytes[0];
            *bytes = &bytes[1..];
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return v;
            }
        }
    };
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let tag = varint(&mut bytes);
        assert_eq!(tag & 7, 2, "only length-delimited fields");
        let len = varint(&mut bytes) as usize;
        out.push(((tag >> 3) as u8, bytes[..len].to_vec()));
        bytes = &bytes[len..];
    }
    out
}

/// A DER ECDSA signature back to raw r‖s.
fn der_to_raw(der: &[u8], size: usize) -> Vec<u8> {
    assert_eq!(der[0], 0x30);
    let mut rest = &der[2..];
    let mut raw = Vec::new();
    for _ in 0..2 {
        assert_eq!(rest[0], 0x02);
        let len = rest[1] as usize;
        let v: Vec<u8> = rest[2..2 + len]
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        raw.extend(std::iter::repeat_n(0, size - v.len()));
        raw.extend(v);
        rest = &rest[2 + len..];
    }
    raw
}

/// One call to the fake `verify_signature`.
#[derive(Debug, Clone)]
struct SigCall {
    hash: String,
    spki: Vec<u8>,
}

/// Registers a `verify_signature` that checks the signature (RSA PKCS#1 or
/// ECDSA P-256) with jwt-simple from the SPKI it is given, and answers
/// `VerifySignatureResult { result }` (field 1, varint).
fn fake_verify_signature(host: &FakeHost) -> Rc<RefCell<Vec<SigCall>>> {
    let calls = Rc::new(RefCell::new(Vec::new()));
    let seen = calls.clone();
    host.set_foreign_function("verify_signature", move |args| {
        let fields = proto_fields(args);
        let field = |n: u8| {
            fields
                .iter()
                .find(|(f, _)| *f == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let (hash, spki, sig, text) = (field(1), field(2), field(3), field(4));
        let hash = String::from_utf8(hash).unwrap();
        seen.borrow_mut().push(SigCall {
            hash: hash.clone(),
            spki: spki.clone(),
        });
        let text = String::from_utf8(text).unwrap();
        let opts = VerificationOptions {
            accept_future: true,
            time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(0)),
            artificial_time: Some(UnixTimeStamp::from_secs(0)),
            max_token_length: None,
            ..Default::default()
        };
        let ok = if let Ok(k) = ES256PublicKey::from_der(&spki) {
            let token = format!("{text}.{}", b64(der_to_raw(&sig, 32)));
            k.verify_token::<NoCustomClaims>(&token, Some(opts)).is_ok()
        } else {
            assert_eq!(hash, "sha256");
            let token = format!("{text}.{}", b64(&sig));
            RS256PublicKey::from_der(&spki)
                .unwrap()
                .verify_token::<NoCustomClaims>(&token, Some(opts))
                .is_ok()
        };
        Ok(Some(vec![0x08, u8::from(ok)]))
    });
    calls
}

fn foreign_calls(host: &FakeHost, name: &str) -> usize {
    host.foreign_calls
        .borrow()
        .iter()
        .filter(|n| *n == name)
        .count()
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[test]
fn configure_compiles_the_config_and_names_the_path_of_errors() {
    let host = FakeHost::new();
    let f = inline(&host, json!({}));
    assert_eq!(JwtAuth::NAME, "jwt-auth");
    assert_eq!(f.config.providers.len(), 1);
    // Inline keys only: nothing to poll.
    assert_eq!(f.tick_period(), None);

    let bad = config(
        vec![inline_provider(
            json!({"jwksUri": "https://idp.example.com/jwks"}),
        )],
        usual_rules(),
    );
    let e = match JwtAuth::configure(Some(bad.as_bytes()), &host) {
        Ok(_) => panic!("jwks and jwksUri"),
        Err(e) => e,
    };
    assert_eq!(e.path, "providers[0]");
    let e = match JwtAuth::configure(None, &host) {
        Ok(_) => panic!("no config"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("missing field `providers`"), "{e}");
    let e = match JwtAuth::configure(
        Some(
            config(
                vec![inline_provider(json!({}))],
                json!([{"requires": ["q"]}]),
            )
            .as_bytes(),
        ),
        &host,
    ) {
        Ok(_) => panic!("unknown provider"),
        Err(e) => e,
    };
    assert_eq!(e.path, "rules[0].requires[0]");

    // A remote provider ticks; configure itself fetches nothing.
    let remote = remote_worker(&host, "2s");
    assert_eq!(remote.tick_period(), Some(TICK));
    assert!(host.http_calls.borrow().is_empty());
}

// ---------------------------------------------------------------------------
// Rejections
// ---------------------------------------------------------------------------

#[test]
fn a_missing_token_gets_401_with_rfc_6750_header_and_json_body() {
    let host = FakeHost::new();
    let f = inline(&host, json!({}));
    let message = unauthorized(send(&f, &host, "/api/items", &[]), "no token");
    assert_eq!(message, "Jwt is missing");
    assert_eq!(metric(&host, "denied.missing"), 1);
    // An Authorization header that is not a bearer token is no token.
    for value in ["Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Bearer", "Bearer ", ""] {
        let m = unauthorized(send(&f, &host, "/api", &[("authorization", value)]), value);
        assert_eq!(m, "Jwt is missing", "{value:?}");
    }
    // The bearer prefix is case-insensitive.
    let token = hs256(&claims(json!({})));
    assert_continue(
        send(
            &f,
            &host,
            "/api",
            &[("authorization", &format!("bearer {token}"))],
        ),
        "lowercase bearer",
    );
    // The realm never breaks the header's quoting.
    put_request(&host, "GET", "/api", &[]);
    host.set_map(
        MapType::RequestHeaders,
        Headers::from_pairs([(":path", &b"/api"[..]), (":authority", b"a\"b\\c")]),
    );
    let mut http = f.new_http();
    let r = denied(
        outcome(&host, http.on_request_headers(&host, true)),
        "quote",
    );
    let www = response_header(&r, "www-authenticate").unwrap();
    let realm = www
        .strip_prefix("Bearer realm=\"")
        .and_then(|w| w.split_once("\", error=\"invalid_token\""))
        .map(|(realm, _)| realm)
        .unwrap_or_else(|| panic!("{www}"));
    assert!(!realm.contains('"') && !realm.contains('\\'), "{www}");
}

#[test]
fn an_invalid_token_gets_401_that_leaks_no_key_or_token() {
    let host = FakeHost::new();
    let f = inline(&host, json!({}));
    let good = hs256(&claims(json!({})));
    let cases: Vec<(&str, String, &str)> = vec![
        ("bad signature", tampered(&good), "bad_signature"),
        (
            "expired",
            hs256(&claims(json!({"exp": NOW - 3600}))),
            "expired",
        ),
        (
            "not yet valid",
            hs256(&claims(json!({"nbf": NOW + 3600}))),
            "expired",
        ),
        (
            "issuer",
            hs256(&claims(json!({"iss": "https://evil.example"}))),
            "issuer",
        ),
        (
            "audience",
            hs256(&claims(json!({"aud": "other"}))),
            "audience",
        ),
        ("malformed", "Zm9v.YmFy.YmF6".into(), "malformed"),
        ("two segments", "abc.def".into(), "malformed"),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none"}"#),
                b64(claims(json!({})).to_string())
            ),
            "malformed",
        ),
        (
            "unknown kid",
            rs256(RSA_B, "rsa-b", &claims(json!({}))),
            "unknown_kid",
        ),
        (
            "wrong key",
            rs256(RSA_B, "rsa-a", &claims(json!({}))),
            "bad_signature",
        ),
    ];
    let rsa_n = jwk("rsa-a", "")["n"].as_str().unwrap().to_string();
    let secrets = [
        String::from_utf8(SECRET.to_vec()).unwrap(),
        b64(SECRET),
        rsa_n[..16].to_string(),
    ];
    for (what, token, reason) in &cases {
        let before = metric(&host, &format!("denied.{reason}"));
        let o = with_token(&f, &host, "/api/x", token);
        let r = match &o {
            Outcome::Denied(r) => r.clone(),
            other => panic!("{what}: {other:?}"),
        };
        let message = unauthorized(o, what);
        assert!(!message.is_empty(), "{what}");
        assert_eq!(
            metric(&host, &format!("denied.{reason}")),
            before + 1,
            "{what}"
        );
        let www = response_header(&r, "www-authenticate").unwrap();
        let body = String::from_utf8(r.body.clone()).unwrap();
        for text in [&www, &body] {
            for seg in token.split('.').filter(|s| s.len() > 3) {
                assert!(!text.contains(seg), "{what}: token text in {text}");
            }
            for s in &secrets {
                assert!(!text.contains(s.as_str()), "{what}: key in {text}");
            }
            assert!(!text.contains("rsa-"), "{what}: kid in {text}");
        }
        // Nothing forwarded.
        assert_eq!(header(&host, "authorization"), Some(bearer(token)));
    }
    assert_eq!(metric(&host, "allowed"), 0);
}

#[test]
fn a_path_no_rule_matches_gets_403() {
    let host = FakeHost::new();
    let f = inline(&host, json!({}));
    let good = hs256(&claims(json!({})));
    for path in ["/", "/other", "/healthz/x", "/API", "/ap", "/healthzz"] {
        for token in [None, Some(good.as_str())] {
            let extra: Vec<(&str, String)> = token
                .map(|t| vec![("authorization", bearer(t))])
                .unwrap_or_default();
            let extra: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let r = denied(send(&f, &host, path, &extra), path);
            assert_eq!(r.status, 403, "{path}");
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["error"], "forbidden");
            assert!(body["message"].is_string());
            assert_eq!(response_header(&r, "www-authenticate"), None);
        }
    }
    assert_eq!(metric(&host, "denied.no_rule"), 12);
}

#[test]
fn rules_apply_in_order_to_the_path_without_its_query() {
    let host = FakeHost::new();
    let f = inline(&host, json!({}));
    // /healthz is exact and needs nothing, whatever the query says.
    for path in ["/healthz", "/healthz?x=/api", "/healthz#frag"] {
        assert_continue(send(&f, &host, path, &[]), path);
    }
    // The query never selects a rule.
    for path in ["/api?/healthz", "/api/x?y=/public", "/api#/public"] {
        assert_eq!(
            unauthorized(send(&f, &host, path, &[]), path),
            "Jwt is missing"
        );
    }
    assert_continue(send(&f, &host, "/public?x=/api", &[]), "public");

    // First match wins: a narrow rule before a broad one.
    let rules = json!([
        {"match": {"pathPrefix": "/api/open"}, "requires": "none"},
        {"match": {"pathPrefix": "/api"}, "requires": ["p"]},
    ]);
    let f = configure(&host, &config(vec![inline_provider(json!({}))], rules));
    assert_continue(send(&f, &host, "/api/open/x", &[]), "narrow first");
    unauthorized(send(&f, &host, "/api/closed", &[]), "broad");
    // The other way round, the broad rule shadows the narrow one.
    let rules = json!([
        {"match": {"pathPrefix": "/api"}, "requires": ["p"]},
        {"match": {"pathPrefix": "/api/open"}, "requires": "none"},
    ]);
    let f = configure(&host, &config(vec![inline_provider(json!({}))], rules));
    unauthorized(send(&f, &host, "/api/open/x", &[]), "broad first");
    // A rule without match matches everything.
    let rules = json!([{"requires": ["p"]}]);
    let f = configure(&host, &config(vec![inline_provider(json!({}))], rules));
    unauthorized(send(&f, &host, "/anything", &[]), "catch-all");
}

#[test]
fn requires_none_lets_anything_through() {
    let host = FakeHost::new();
    let f = inline(&host, json!({}));
    let bad = tampered(&hs256(&claims(json!({}))));
    for extra in [vec![], vec![("authorization", bearer(&bad))]] {
        let extra: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_continue(send(&f, &host, "/healthz", &extra), "none");
    }
    // Not even looked at: the token stays.
    assert_eq!(header(&host, "authorization"), Some(bearer(&bad)));
}

#[test]
fn optional_allows_no_token_but_refuses_a_bad_one() {
    let host = FakeHost::new();
    let f = inline(
        &host,
        json!({"outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]}),
    );
    assert_continue(send(&f, &host, "/public/page", &[]), "no token");
    assert_eq!(header(&host, "x-jwt-sub"), None);
    let good = hs256(&claims(json!({})));
    assert_continue(with_token(&f, &host, "/public/page", &good), "good");
    assert_eq!(header(&host, "x-jwt-sub").as_deref(), Some("alice"));
    for bad in [
        tampered(&good),
        hs256(&claims(json!({"exp": NOW - 3600}))),
        "garbage".to_string(),
    ] {
        unauthorized(with_token(&f, &host, "/public/page", &bad), "bad");
    }
}

#[test]
fn a_cors_preflight_passes_without_a_token() {
    let host = FakeHost::new();
    let f = inline(&host, json!({}));
    let preflight = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"),
    ];
    let (o, _) = send_with(&f, &host, "OPTIONS", "/api/items", &preflight);
    assert_continue(o, "preflight");
    // Not a preflight: OPTIONS without Origin or without the method, or
    // another method with both.
    for (method, extra) in [
        ("OPTIONS", &preflight[..1]),
        ("OPTIONS", &preflight[1..]),
        ("OPTIONS", &[][..]),
        ("GET", &preflight[..]),
        ("POST", &preflight[..]),
    ] {
        let (o, _) = send_with(&f, &host, method, "/api/items", extra);
        unauthorized(o, &format!("{method} {extra:?}"));
    }
}

// ---------------------------------------------------------------------------
// Success
// ---------------------------------------------------------------------------

#[test]
fn success_forwards_the_payload_and_claims() {
    let host = FakeHost::new();
    let f = inline(
        &host,
        json!({
            "outputPayloadToHeader": "X-Jwt-Payload",
            "outputClaimToHeaders": [
                {"header": "x-jwt-sub", "claim": "sub"},
                {"header": "x-jwt-n", "claim": "n"},
                {"header": "x-jwt-f", "claim": "f"},
                {"header": "x-jwt-admin", "claim": "admin"},
                {"header": "x-jwt-roles", "claim": "roles"},
                {"header": "x-jwt-mixed", "claim": "mixed"},
                {"header": "x-jwt-realm-roles", "claim": "realm_access.roles"},
                {"header": "x-jwt-missing", "claim": "missing"},
                {"header": "x-jwt-object", "claim": "obj"},
                {"header": "x-jwt-control", "claim": "control"},
                {"header": "x-jwt-nested", "claim": "nested"},
            ],
        }),
    );
    let c = claims(json!({
        "n": 42,
        "f": 1.5,
        "admin": true,
        "roles": ["reader", "writer"],
        "mixed": ["a", 1, false],
        "realm_access": {"roles": ["offline_access", "uma"]},
        "obj": {"a": 1},
        "control": "line\r\nx-injected: 1",
        "nested": [["a"]],
    }));
    for token in [hs256(&c), rs256(RSA_A, "rsa-a", &c), es256(&c)] {
        assert_continue(with_token(&f, &host, "/api/x", &token), "valid");
        assert_eq!(
            header(&host, "x-jwt-payload").as_deref(),
            Some(segments(&token)[1]),
            "the payload segment as sent"
        );
        let payload: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(header(&host, "x-jwt-payload").unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(payload, c);
        for (h, want) in [
            ("x-jwt-sub", Some("alice")),
            ("x-jwt-n", Some("42")),
            ("x-jwt-f", Some("1.5")),
            ("x-jwt-admin", Some("true")),
            ("x-jwt-roles", Some("reader,writer")),
            ("x-jwt-mixed", Some("a,1,false")),
            ("x-jwt-realm-roles", Some("offline_access,uma")),
            ("x-jwt-missing", None),
            ("x-jwt-object", None),
            ("x-jwt-control", None),
            ("x-jwt-nested", None),
        ] {
            assert_eq!(header(&host, h).as_deref(), want, "{h}");
        }
        // Each set once.
        assert_eq!(all_values(&host, "x-jwt-sub").len(), 1);
    }
    assert_eq!(metric(&host, "allowed"), 3);
}

#[test]
fn the_token_is_removed_unless_forward_original_token() {
    let host = FakeHost::new();
    let locations = json!({
        "fromHeaders": [
            {"name": "Authorization", "prefix": "Bearer "},
            {"name": "x-token"},
        ],
        "fromParams": ["access_token"],
        "fromCookies": ["token"],
    });
    let f = inline(&host, locations.clone());
    let t = hs256(&claims(json!({})));

    assert_continue(with_token(&f, &host, "/api", &t), "header");
    assert_eq!(header(&host, "authorization"), None);

    assert_continue(send(&f, &host, "/api", &[("x-token", &t)]), "x-token");
    assert_eq!(header(&host, "x-token"), None);

    for (path, left) in [
        (format!("/api/x?a=1&access_token={t}&b=2"), "/api/x?a=1&b=2"),
        (format!("/api/x?access_token={t}"), "/api/x"),
        (format!("/api/x?access_token={t}&b"), "/api/x?b"),
        (format!("/api/x?z=&access_token={t}"), "/api/x?z="),
    ] {
        assert_continue(send(&f, &host, &path, &[]), &path);
        assert_eq!(header(&host, ":path").as_deref(), Some(left), "{path}");
    }

    for (cookie, left) in [
        (format!("a=1; token={t}; b=2"), Some("a=1; b=2")),
        (format!("token={t}"), None),
        (format!("a=1;token={t}"), Some("a=1")),
    ] {
        assert_continue(send(&f, &host, "/api", &[("cookie", &cookie)]), &cookie);
        assert_eq!(header(&host, "cookie").as_deref(), left, "{cookie}");
    }
    // Other headers are left alone.
    assert_continue(
        send(
            &f,
            &host,
            "/api?keep=1",
            &[("authorization", &bearer(&t)), ("x-other", "1")],
        ),
        "others",
    );
    assert_eq!(header(&host, "x-other").as_deref(), Some("1"));
    assert_eq!(header(&host, ":path").as_deref(), Some("/api?keep=1"));
    assert_eq!(header(&host, ":authority").as_deref(), Some(AUTHORITY));

    // forwardOriginalToken keeps every form.
    let mut keep = locations;
    keep["forwardOriginalToken"] = true.into();
    let f = inline(&host, keep);
    assert_continue(with_token(&f, &host, "/api", &t), "header kept");
    assert_eq!(header(&host, "authorization"), Some(bearer(&t)));
    let path = format!("/api?access_token={t}");
    assert_continue(send(&f, &host, &path, &[]), "param kept");
    assert_eq!(header(&host, ":path"), Some(path));
    let cookie = format!("token={t}");
    assert_continue(
        send(&f, &host, "/api", &[("cookie", &cookie)]),
        "cookie kept",
    );
    assert_eq!(header(&host, "cookie"), Some(cookie));
}

#[test]
fn client_copies_of_output_headers_are_removed_on_every_request() {
    let host = FakeHost::new();
    let f = inline(
        &host,
        json!({
            "outputPayloadToHeader": "x-jwt-payload",
            "outputClaimToHeaders": [
                {"header": "x-jwt-sub", "claim": "sub"},
                {"header": "x-jwt-group", "claim": "group"},
            ],
        }),
    );
    let spoofed = [
        ("X-Jwt-Payload", "eyJzdWIiOiJhZG1pbiJ9"),
        ("x-jwt-sub", "admin"),
        ("x-jwt-sub", "root"),
        ("X-JWT-GROUP", "admins"),
        ("x-other", "kept"),
    ];
    let good = hs256(&claims(json!({})));
    let bad = tampered(&good);
    let with = |extra: &[(&'static str, String)]| {
        let mut v: Vec<(&str, String)> = spoofed.iter().map(|(n, v)| (*n, v.to_string())).collect();
        v.extend(extra.iter().cloned());
        v
    };
    // (what, method, path, headers, allowed)
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, String)>, bool);
    let cases: Vec<Case> = vec![
        ("none", "GET", "/healthz", with(&[]), true),
        ("optional, no token", "GET", "/public", with(&[]), true),
        (
            "preflight",
            "OPTIONS",
            "/api",
            with(&[
                ("origin", "https://a.example".into()),
                ("access-control-request-method", "GET".into()),
            ]),
            true,
        ),
        (
            "valid token without the group claim",
            "GET",
            "/api",
            with(&[("authorization", bearer(&good))]),
            true,
        ),
        ("missing token", "GET", "/api", with(&[]), false),
        (
            "bad token",
            "GET",
            "/api",
            with(&[("authorization", bearer(&bad))]),
            false,
        ),
        ("no rule", "GET", "/nowhere", with(&[]), false),
    ];
    for (what, method, path, headers, allowed) in cases {
        let extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (o, _) = send_with(&f, &host, method, path, &extra);
        if allowed {
            assert_continue(o, what);
        } else {
            assert!(matches!(o, Outcome::Denied(_)), "{what}: {o:?}");
        }
        assert_eq!(
            all_values(&host, "x-jwt-group"),
            Vec::<String>::new(),
            "{what}"
        );
        assert_eq!(all_values(&host, "x-other"), ["kept"], "{what}");
        if what.starts_with("valid") {
            assert_eq!(all_values(&host, "x-jwt-sub"), ["alice"], "{what}");
            assert_eq!(
                all_values(&host, "x-jwt-payload"),
                [segments(&good)[1]],
                "{what}"
            );
        } else {
            assert_eq!(
                all_values(&host, "x-jwt-sub"),
                Vec::<String>::new(),
                "{what}"
            );
            assert_eq!(
                all_values(&host, "x-jwt-payload"),
                Vec::<String>::new(),
                "{what}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Signatures: the host's crypto, jwt-simple as the fallback
// ---------------------------------------------------------------------------

#[test]
fn verify_signature_checks_rs256_and_es256_when_the_host_has_it() {
    let host = FakeHost::new();
    let calls = fake_verify_signature(&host);
    let f = inline(
        &host,
        json!({"outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]}),
    );
    let rs = rs256(RSA_A, "rsa-a", &claims(json!({})));
    assert_continue(with_token(&f, &host, "/api", &rs), "RS256");
    assert_eq!(header(&host, "x-jwt-sub").as_deref(), Some("alice"));
    {
        let calls = calls.borrow();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].hash, "sha256");
        assert_eq!(calls[0].spki, RSA_A_SPKI);
    }
    assert_eq!(
        unauthorized(
            with_token(&f, &host, "/api", &tampered(&rs)),
            "tampered RS256"
        ),
        "Jwt verification fails"
    );
    assert_eq!(calls.borrow().len(), 2);

    let es = es256(&claims(json!({})));
    assert_continue(with_token(&f, &host, "/api", &es), "ES256");
    assert_eq!(calls.borrow().len(), 3);
    unauthorized(
        with_token(&f, &host, "/api", &tampered(&es)),
        "tampered ES256",
    );
    assert_eq!(calls.borrow().len(), 4);

    // HMAC never goes to the host.
    assert_continue(
        with_token(&f, &host, "/api", &hs256(&claims(json!({})))),
        "HS256",
    );
    assert_eq!(calls.borrow().len(), 4);
    assert_eq!(foreign_calls(&host, "verify_signature"), 4);
}

#[test]
fn the_host_answer_is_final_when_it_has_verify_signature() {
    // A host that says no, or fails, refuses even a good token: jwt-simple
    // is only for a host without the function.
    for answer in [
        Ok(Some(vec![0x08, 0])),
        Ok(None),
        Err(HostError::InternalFailure),
    ] {
        let host = FakeHost::new();
        let a = answer.clone();
        host.set_foreign_function("verify_signature", move |_| a.clone());
        let f = inline(&host, json!({}));
        let rs = rs256(RSA_A, "rsa-a", &claims(json!({})));
        assert_eq!(
            unauthorized(with_token(&f, &host, "/api", &rs), "host says no"),
            "Jwt verification fails",
            "{answer:?}"
        );
    }
}

#[test]
fn without_verify_signature_jwt_simple_is_the_fallback() {
    for missing in [HostError::NotFound, HostError::Unimplemented] {
        let host = FakeHost::new();
        if missing != HostError::NotFound {
            host.set_foreign_function("verify_signature", move |_| Err(missing));
        }
        let f = inline(
            &host,
            json!({"outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]}),
        );
        let rs = rs256(RSA_A, "rsa-a", &claims(json!({})));
        assert_continue(with_token(&f, &host, "/api", &rs), "RS256 fallback");
        assert_eq!(header(&host, "x-jwt-sub").as_deref(), Some("alice"));
        unauthorized(with_token(&f, &host, "/api", &tampered(&rs)), "tampered");
        let other_key = rs256(RSA_B, "rsa-a", &claims(json!({})));
        unauthorized(with_token(&f, &host, "/api", &other_key), "other key");
        let es = es256(&claims(json!({"sub": "bob"})));
        assert_continue(with_token(&f, &host, "/api", &es), "ES256 fallback");
        unauthorized(
            with_token(&f, &host, "/api", &tampered(&es)),
            "tampered ES256",
        );
        // Learnt once: the missing function is not asked again.
        assert_eq!(foreign_calls(&host, "verify_signature"), 1, "{missing:?}");
    }
}

// ---------------------------------------------------------------------------
// The verified-token cache
// ---------------------------------------------------------------------------

#[test]
fn a_repeat_token_is_a_cache_hit_and_skips_the_signature() {
    let host = FakeHost::new();
    let calls = fake_verify_signature(&host);
    let f = inline(
        &host,
        json!({
            "outputPayloadToHeader": "x-jwt-payload",
            "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}],
        }),
    );
    let t = rs256(RSA_A, "rsa-a", &claims(json!({})));
    assert_continue(with_token(&f, &host, "/api", &t), "first");
    assert_eq!(
        (metric(&host, "cache.miss"), metric(&host, "cache.hit")),
        (1, 0)
    );
    assert_eq!(calls.borrow().len(), 1);
    for i in 0..3 {
        assert_continue(with_token(&f, &host, "/api", &t), "repeat");
        assert_eq!(metric(&host, "cache.hit"), i + 1);
        assert_eq!(calls.borrow().len(), 1, "no signature check on a hit");
        // The hit forwards and strips as a miss does.
        assert_eq!(header(&host, "x-jwt-sub").as_deref(), Some("alice"));
        assert_eq!(
            header(&host, "x-jwt-payload").as_deref(),
            Some(segments(&t)[1])
        );
        assert_eq!(header(&host, "authorization"), None);
    }
    // The same token in another location is the same token.
    assert_continue(
        send(&f, &host, &format!("/api?access_token={t}"), &[]),
        "param",
    );
    assert_eq!(metric(&host, "cache.hit"), 4);
    // A tampered copy is no hit, and fails.
    unauthorized(with_token(&f, &host, "/api", &tampered(&t)), "tampered");
    assert_eq!(metric(&host, "cache.hit"), 4);
    assert_eq!(calls.borrow().len(), 2);
    assert_eq!(metric(&host, "allowed"), 5);

    // maxEntries 0: no cache.
    let host = FakeHost::new();
    let calls = fake_verify_signature(&host);
    let json = json!({
        "providers": [inline_provider(json!({}))],
        "rules": usual_rules(),
        "cache": {"maxEntries": 0},
    });
    let f = configure(&host, &json.to_string());
    for _ in 0..3 {
        assert_continue(with_token(&f, &host, "/api", &t), "uncached");
    }
    assert_eq!(calls.borrow().len(), 3);
    assert_eq!(metric(&host, "cache.hit"), 0);
}

#[test]
fn an_expired_cached_token_is_refused() {
    let host = FakeHost::new();
    let f = inline(&host, json!({"clockSkew": "30s"}));
    let t = hs256(&claims(json!({"exp": NOW + 100})));
    assert_continue(with_token(&f, &host, "/api", &t), "fresh");
    host.advance(Duration::from_secs(100 + 30));
    assert_continue(with_token(&f, &host, "/api", &t), "within the skew");
    assert_eq!(metric(&host, "cache.hit"), 1);
    host.advance(Duration::from_secs(1));
    assert_eq!(
        unauthorized(with_token(&f, &host, "/api", &t), "expired"),
        "Jwt is expired"
    );
    assert_eq!(metric(&host, "cache.hit"), 1);
    assert_eq!(metric(&host, "denied.expired"), 1);
}

#[test]
fn a_cached_token_counts_only_for_its_own_rule() {
    // Two providers with different issuers; a token cached for one is no
    // pass on a path that requires the other.
    let host = FakeHost::new();
    let q = {
        let mut q = inline_provider(json!({"name": "q", "issuer": "https://q.example"}));
        q["jwks"] = jwks(vec![oct("hmac", SECRET)]).into();
        q
    };
    let rules = json!([
        {"match": {"pathPrefix": "/p"}, "requires": ["p"]},
        {"match": {"pathPrefix": "/q"}, "requires": ["q"]},
    ]);
    let f = configure(&host, &config(vec![inline_provider(json!({})), q], rules));
    let t = hs256(&claims(json!({})));
    assert_continue(with_token(&f, &host, "/p", &t), "p");
    assert_continue(with_token(&f, &host, "/p", &t), "p again");
    assert_eq!(metric(&host, "cache.hit"), 1);
    assert_eq!(
        unauthorized(with_token(&f, &host, "/q", &t), "q"),
        "Jwt issuer is not configured"
    );
    assert_eq!(metric(&host, "cache.hit"), 1);
    // (The refusal on /q also evicts the entry, so the next /p request is a
    // miss; it still passes.)
    assert_continue(with_token(&f, &host, "/p", &t), "p after q");
}

// ---------------------------------------------------------------------------
// Remote JWKS
// ---------------------------------------------------------------------------

const JWKS_URI: &str = "http://idp.example.com:8080/realms/app/certs";
const JWKS_CLUSTER: &str = "outbound|8080||idp.example.com";

fn remote_config(timeout: &str) -> String {
    config(
        vec![json!({
            "name": "p",
            "issuer": ISS,
            "audiences": ["api"],
            "jwksUri": JWKS_URI,
            "timeout": timeout,
            "cacheDuration": "10m",
            "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}],
        })],
        usual_rules(),
    )
}

fn remote_worker(host: &FakeHost, timeout: &str) -> Rc<JwtAuth> {
    configure(host, &remote_config(timeout))
}

/// A worker VM: its filter and its paused requests.
struct Vm {
    f: Rc<JwtAuth>,
    paused: PausedRequests<JwtHttp>,
    next_context: Cell<u32>,
}

impl Vm {
    fn new(host: &FakeHost, timeout: &str, first_context: u32) -> Vm {
        Vm {
            f: remote_worker(host, timeout),
            paused: PausedRequests::default(),
            next_context: Cell::new(first_context),
        }
    }

    /// A request with `token`; a paused one is kept for waking, under the
    /// returned context id.
    fn request(&self, host: &FakeHost, token: &str) -> (Outcome, u32) {
        let id = self.next_context.get();
        self.next_context.set(id + 1);
        let (o, http) = send_with(
            &self.f,
            host,
            "GET",
            "/api/items",
            &[("authorization", &bearer(token))],
        );
        if matches!(o, Outcome::Paused) {
            self.paused.add(id, Rc::new(RefCell::new(http)));
        }
        (o, id)
    }

    /// A tick, then the wake of paused requests, as the proxy glue does.
    fn tick(&self, host: &FakeHost) {
        self.f.on_tick(host);
        self.paused.wake_all(host);
    }

    fn respond(&self, host: &FakeHost, call: u32, status: u16, body: &str) {
        self.f.on_http_call_response(
            host,
            call,
            Some(HttpCallResponse {
                status,
                headers: Headers::new(),
                body: body.as_bytes().to_vec(),
            }),
        );
        self.paused.wake_all(host);
    }

    fn call_failed(&self, host: &FakeHost, call: u32) {
        self.f.on_http_call_response(host, call, None);
        self.paused.wake_all(host);
    }
}

fn calls(host: &FakeHost) -> usize {
    host.http_calls.borrow().len()
}

/// The token of the last HTTP call started.
fn last_call(host: &FakeHost) -> u32 {
    host.http_calls.borrow().last().unwrap().token
}

fn doc_a() -> String {
    jwks(vec![jwk("rsa-a", "a")])
}

fn token_a() -> String {
    rs256(RSA_A, "a", &claims(json!({})))
}

#[test]
fn a_request_before_the_first_fetch_waits_then_resumes() {
    let host = FakeHost::new();
    let vm = Vm::new(&host, "2s", 10);
    assert_eq!(calls(&host), 0, "nothing fetched at configure");

    let (o, id) = vm.request(&host, &token_a());
    assert!(matches!(o, Outcome::Paused), "{o:?}");
    assert_eq!(vm.paused.len(), 1);

    vm.tick(&host);
    assert_eq!(calls(&host), 1);
    {
        let call = host.http_calls.borrow()[0].clone();
        assert_eq!(call.cluster, JWKS_CLUSTER);
        let h = Headers::from_pairs(call.headers.clone());
        assert_eq!(h.get(":method"), Some(&b"GET"[..]));
        assert_eq!(h.get(":path"), Some(&b"/realms/app/certs"[..]));
        assert_eq!(h.get(":authority"), Some(&b"idp.example.com:8080"[..]));
        assert_eq!(call.timeout, Duration::from_secs(2));
        assert!(call.body.is_empty());
    }
    // Still waiting; more ticks start no second fetch.
    assert_eq!(vm.paused.len(), 1);
    host.advance(TICK);
    vm.tick(&host);
    vm.tick(&host);
    assert_eq!(calls(&host), 1);

    vm.respond(&host, last_call(&host), 200, &doc_a());
    assert!(vm.paused.is_empty());
    assert_eq!(*host.resumed.borrow(), vec![id]);
    assert_eq!(header(&host, "x-jwt-sub").as_deref(), Some("alice"));
    assert_eq!(header(&host, "authorization"), None);
    assert_eq!(metric(&host, "jwks_fetch.success"), 1);

    // Later requests go straight through.
    let (o, _) = vm.request(&host, &rs256(RSA_A, "a", &claims(json!({"sub": "bob"}))));
    assert_continue(o, "after the fetch");
    assert_eq!(header(&host, "x-jwt-sub").as_deref(), Some("bob"));
    // And a bad token is refused at once.
    let (o, _) = vm.request(&host, &tampered(&token_a()));
    unauthorized(o, "tampered");
}

#[test]
fn a_request_waiting_for_keys_is_refused_at_the_timeout() {
    let host = FakeHost::new();
    let vm = Vm::new(&host, "1s", 1);
    let (o, _) = vm.request(&host, &token_a());
    assert!(matches!(o, Outcome::Paused));
    vm.tick(&host);
    assert_eq!(calls(&host), 1);
    host.advance(Duration::from_millis(999));
    vm.tick(&host);
    assert_eq!(vm.paused.len(), 1, "not yet");
    assert!(host.local_response.borrow().is_none());
    host.advance(Duration::from_millis(1));
    vm.tick(&host);
    assert!(vm.paused.is_empty());
    assert!(host.resumed.borrow().is_empty());
    let r = host.local_response.borrow_mut().take().unwrap();
    assert_eq!(r.status, 401);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["message"], "Jwks is not available");

    // A token that is bad on its face is refused without waiting.
    let (o, _) = vm.request(
        &host,
        &rs256(RSA_A, "a", &claims(json!({"exp": NOW - 3600}))),
    );
    assert_eq!(unauthorized(o, "expired"), "Jwt is expired");
    let (o, _) = vm.request(&host, "garbage");
    unauthorized(o, "garbage");

    // The fetch fails (reset); a retry follows and a new request resumes.
    vm.call_failed(&host, last_call(&host));
    assert_eq!(metric(&host, "jwks_fetch.failure"), 1);
    vm.tick(&host);
    assert_eq!(calls(&host), 1, "a retry waits a little");
    host.advance(Duration::from_millis(jwt_auth::sync::RETRY_MS));
    let (o, id) = vm.request(&host, &token_a());
    assert!(matches!(o, Outcome::Paused));
    vm.tick(&host);
    assert_eq!(calls(&host), 2);
    vm.respond(&host, last_call(&host), 200, &doc_a());
    assert_eq!(*host.resumed.borrow(), vec![id]);
}

#[test]
fn two_workers_fetch_once_and_share_the_keys() {
    let host = FakeHost::new();
    let vm1 = Vm::new(&host, "2s", 100);
    let vm2 = Vm::new(&host, "2s", 200);
    let (o, id2) = vm2.request(&host, &token_a());
    assert!(matches!(o, Outcome::Paused));

    vm1.tick(&host);
    vm2.tick(&host);
    assert_eq!(calls(&host), 1, "one fetch: vm1 holds the lease");
    vm1.respond(&host, last_call(&host), 200, &doc_a());
    // vm2 has not looked at shared data yet.
    vm2.paused.wake_all(&host);
    assert_eq!(vm2.paused.len(), 1);
    // Its next tick reads the keys from shared data and resumes the request.
    vm2.tick(&host);
    assert!(vm2.paused.is_empty());
    assert_eq!(*host.resumed.borrow(), vec![id2]);
    assert_eq!(calls(&host), 1);

    // Both serve tokens; still one fetch.
    for vm in [&vm1, &vm2] {
        let (o, _) = vm.request(&host, &token_a());
        assert_continue(o, "shared keys");
    }
    // Ticks until the refresh is due fetch nothing.
    for _ in 0..5 {
        host.advance(Duration::from_secs(60));
        vm2.tick(&host);
        vm1.tick(&host);
    }
    assert_eq!(calls(&host), 1);
    // At cacheDuration, one refresh for the process, whoever ticks first.
    host.advance(Duration::from_secs(300));
    vm2.tick(&host);
    vm1.tick(&host);
    vm2.tick(&host);
    assert_eq!(calls(&host), 2);
    let doc_ab = jwks(vec![jwk("rsa-a", "a"), jwk("rsa-b", "b")]);
    vm2.respond(&host, last_call(&host), 200, &doc_ab);
    vm1.tick(&host);
    let token_b = rs256(RSA_B, "b", &claims(json!({})));
    for vm in [&vm1, &vm2] {
        let (o, _) = vm.request(&host, &token_b);
        assert_continue(o, "the refreshed keys on both");
    }
    assert_eq!(calls(&host), 2);
    assert_eq!(metric(&host, "jwks_fetch.success"), 2);
    // A response to a call a worker did not make is not its business.
    vm1.respond(&host, 999, 200, &jwks(vec![jwk("rsa-b", "x")]));
    assert_eq!(metric(&host, "jwks_fetch.success"), 2);
}

#[test]
fn a_failed_fetch_keeps_the_last_good_keys() {
    let host = FakeHost::new();
    let vm = Vm::new(&host, "2s", 1);
    vm.tick(&host);
    vm.respond(&host, last_call(&host), 200, &doc_a());
    let (o, _) = vm.request(&host, &token_a());
    assert_continue(o, "first keys");

    let bad_answers: Vec<(u16, String)> = vec![
        (500, doc_a()),
        (200, "<html>garbage</html>".into()),
        (200, "{\"keys\": []}".into()),
        (200, jwks(vec![oct("hmac", SECRET)])),
        (
            200,
            jwks(vec![json!({
                "kty": "RSA",
                "use": "enc",
                "kid": "enc",
                "n": jwk("rsa-b", "")["n"],
                "e": "AQAB",
            })]),
        ),
        (200, jwks(vec![jwk("rsa-weak", "weak")])),
        (404, String::new()),
    ];
    host.advance(Duration::from_secs(600));
    for (i, (status, body)) in bad_answers.iter().enumerate() {
        vm.tick(&host);
        assert_eq!(calls(&host), i + 2, "a retry after each failure");
        vm.respond(&host, last_call(&host), *status, body);
        assert_eq!(metric(&host, "jwks_fetch.failure"), i as i128 + 1);
        // The last good keys still verify a new token (no cache help).
        let fresh = rs256(RSA_A, "a", &claims(json!({"jti": format!("{i}")})));
        let (o, _) = vm.request(&host, &fresh);
        assert_continue(o, &format!("{status} {body}"));
        host.advance(Duration::from_millis(jwt_auth::sync::RETRY_MS));
    }
    // A reset counts as a failure too.
    vm.tick(&host);
    vm.call_failed(&host, last_call(&host));
    assert_eq!(metric(&host, "jwks_fetch.failure"), 8);
    let (o, _) = vm.request(&host, &rs256(RSA_A, "a", &claims(json!({"jti": "x"}))));
    assert_continue(o, "after a reset");
    // A second worker starting now reads the last good keys too.
    let vm2 = Vm::new(&host, "2s", 50);
    vm2.tick(&host);
    let (o, _) = vm2.request(&host, &rs256(RSA_A, "a", &claims(json!({"jti": "y"}))));
    assert_continue(o, "a new worker");
}

#[test]
fn a_key_leaving_the_jwks_ends_its_cached_tokens() {
    let host = FakeHost::new();
    let vm = Vm::new(&host, "2s", 1);
    vm.tick(&host);
    vm.respond(&host, last_call(&host), 200, &doc_a());
    let t = token_a();
    let (o, _) = vm.request(&host, &t);
    assert_continue(o, "first");
    let (o, _) = vm.request(&host, &t);
    assert_continue(o, "cached");
    assert_eq!(metric(&host, "cache.hit"), 1);
    // The refresh rotates a out.
    host.advance(Duration::from_secs(600));
    vm.tick(&host);
    vm.respond(&host, last_call(&host), 200, &jwks(vec![jwk("rsa-b", "b")]));
    let (o, _) = vm.request(&host, &t);
    // Not a hit: its kid is now unknown, so one refetch, then the refusal.
    assert!(matches!(o, Outcome::Paused), "{o:?}");
    vm.tick(&host);
    assert_eq!(calls(&host), 3);
    vm.respond(&host, last_call(&host), 200, &jwks(vec![jwk("rsa-b", "b")]));
    let r = host.local_response.borrow_mut().take().unwrap();
    assert_eq!(r.status, 401);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["message"], "Jwt is signed by an unknown key");
    assert_eq!(metric(&host, "cache.hit"), 1);
    assert!(host.resumed.borrow().is_empty());
}

#[test]
fn an_unknown_kid_refetches_at_most_once_per_30_seconds() {
    let host = FakeHost::new();
    let vm1 = Vm::new(&host, "2s", 100);
    let vm2 = Vm::new(&host, "2s", 200);
    vm1.tick(&host);
    vm1.respond(&host, last_call(&host), 200, &doc_a());
    vm2.tick(&host);
    assert_eq!(calls(&host), 1);

    // A token signed by a key the IdP just added: one refetch, then it
    // passes.
    let token_b = rs256(RSA_B, "b", &claims(json!({})));
    let (o, id) = vm1.request(&host, &token_b);
    assert!(matches!(o, Outcome::Paused), "{o:?}");
    vm1.tick(&host);
    assert_eq!(calls(&host), 2, "the refetch, long before the refresh");
    let doc_ab = jwks(vec![jwk("rsa-a", "a"), jwk("rsa-b", "b")]);
    vm1.respond(&host, last_call(&host), 200, &doc_ab);
    assert_eq!(*host.resumed.borrow(), vec![id]);

    // Within 30 s, another unknown kid is refused at once, on any worker.
    host.advance(Duration::from_secs(10));
    let token_c = rs256(RSA_B, "c", &claims(json!({})));
    for vm in [&vm1, &vm2] {
        let (o, _) = vm.request(&host, &token_c);
        assert_eq!(
            unauthorized(o, "cooldown"),
            "Jwt is signed by an unknown key"
        );
        vm.tick(&host);
    }
    assert_eq!(calls(&host), 2);
    assert_eq!(metric(&host, "denied.unknown_kid"), 2);

    // After the cooldown, vm2 may refetch; the kid is still unknown.
    host.advance(Duration::from_millis(REFETCH_COOLDOWN_MS));
    let (o, _) = vm2.request(&host, &token_c);
    assert!(matches!(o, Outcome::Paused), "{o:?}");
    vm1.tick(&host);
    vm2.tick(&host);
    assert_eq!(calls(&host), 3, "one refetch for both workers");
    vm2.respond(&host, last_call(&host), 200, &doc_ab);
    let r = host.local_response.borrow_mut().take().unwrap();
    assert_eq!(r.status, 401);
    assert!(vm2.paused.is_empty());

    // And right after, refused at once again.
    let (o, _) = vm1.request(&host, &token_c);
    unauthorized(o, "cooldown again");
}

#[test]
fn a_refetch_that_fails_refuses_the_waiting_request_at_the_timeout() {
    let host = FakeHost::new();
    let vm = Vm::new(&host, "2s", 1);
    vm.tick(&host);
    vm.respond(&host, last_call(&host), 200, &doc_a());
    let token_b = rs256(RSA_B, "b", &claims(json!({})));
    let (o, _) = vm.request(&host, &token_b);
    assert!(matches!(o, Outcome::Paused));
    vm.tick(&host);
    assert_eq!(calls(&host), 2);
    vm.respond(&host, last_call(&host), 500, "");
    assert_eq!(vm.paused.len(), 1, "waits for the timeout");
    host.advance(Duration::from_secs(2));
    vm.tick(&host);
    assert!(vm.paused.is_empty());
    let r = host.local_response.borrow_mut().take().unwrap();
    assert_eq!(r.status, 401);
    // The old keys still serve.
    let (o, _) = vm.request(&host, &token_a());
    assert_continue(o, "old keys");
}

#[test]
fn a_waiting_request_whose_context_ended_is_dropped() {
    let host = FakeHost::new();
    let vm = Vm::new(&host, "2s", 7);
    let (o, id) = vm.request(&host, &token_a());
    assert!(matches!(o, Outcome::Paused));
    host.end_context(id);
    vm.tick(&host);
    assert!(vm.paused.is_empty());
    vm.respond(&host, last_call(&host), 200, &doc_a());
    assert!(host.resumed.borrow().is_empty());
}

#[test]
fn on_wake_of_a_request_that_never_paused_resumes() {
    let host = FakeHost::new();
    let f = inline(&host, json!({}));
    let mut http = f.new_http();
    assert_eq!(http.on_wake(&host), Wake::Resume);
}

#[test]
fn a_worker_that_never_answers_loses_the_lease() {
    let host = FakeHost::new();
    let vm1 = Vm::new(&host, "2s", 100);
    let vm2 = Vm::new(&host, "2s", 200);
    vm1.tick(&host);
    assert_eq!(calls(&host), 1);
    // vm1's call never comes back (its VM is gone). vm2 waits for the lease
    // (timeout + 1 s), then fetches itself.
    host.advance(Duration::from_millis(2_999));
    vm2.tick(&host);
    assert_eq!(calls(&host), 1);
    host.advance(Duration::from_millis(1));
    vm2.tick(&host);
    assert_eq!(calls(&host), 2);
    vm2.respond(&host, last_call(&host), 200, &doc_a());
    let (o, _) = vm2.request(&host, &token_a());
    assert_continue(o, "vm2 fetched");
    // vm1's late answer neither breaks anything nor steals the lease back.
    vm1.respond(&host, 1, 200, &doc_a());
    vm1.tick(&host);
    let (o, _) = vm1.request(&host, &token_a());
    assert_continue(o, "vm1 has keys");
    host.advance(Duration::from_secs(60));
    vm1.tick(&host);
    vm2.tick(&host);
    assert_eq!(calls(&host), 2);
}

#[test]
fn a_fetch_that_cannot_start_fails_closed() {
    let host = FakeHost::new();
    let vm = Vm::new(&host, "1s", 1);
    // E.g. Envoy has no such cluster.
    host.fail("http_call", HostError::BadArgument);
    let (o, _) = vm.request(&host, &token_a());
    assert!(matches!(o, Outcome::Paused));
    for _ in 0..5 {
        host.advance(TICK);
        vm.tick(&host);
    }
    assert!(vm.paused.is_empty());
    let r = host.local_response.borrow_mut().take().unwrap();
    assert_eq!(r.status, 401);
    assert!(host.resumed.borrow().is_empty());
}

#[test]
fn each_remote_provider_fetches_its_own_jwks() {
    let host = FakeHost::new();
    let provider =
        |name: &str, uri: &str, iss: &str| json!({"name": name, "issuer": iss, "jwksUri": uri});
    let rules = json!([{"requires": ["p", "q"]}]);
    let f = configure(
        &host,
        &config(
            vec![
                provider("p", "https://p.example/jwks", ISS),
                provider("q", "http://q.example/keys", "https://q.example"),
            ],
            rules,
        ),
    );
    f.on_tick(&host);
    let started = host.http_calls.borrow().clone();
    assert_eq!(started.len(), 2);
    assert_eq!(started[0].cluster, "outbound|443||p.example");
    assert_eq!(started[1].cluster, "outbound|80||q.example");
    // Each answer goes to its provider.
    let answer = |call: u32, doc: String| {
        f.on_http_call_response(
            &host,
            call,
            Some(HttpCallResponse {
                status: 200,
                headers: Headers::new(),
                body: doc.into_bytes(),
            }),
        );
    };
    answer(started[1].token, jwks(vec![jwk("rsa-b", "b")]));
    answer(started[0].token, jwks(vec![jwk("rsa-a", "a")]));
    assert_continue(with_token(&f, &host, "/", &token_a()), "p's key");
    let for_q = rs256(RSA_B, "b", &claims(json!({"iss": "https://q.example"})));
    assert_continue(with_token(&f, &host, "/", &for_q), "q's key");
    // p's key does not serve q's issuer.
    let crossed = rs256(RSA_A, "a", &claims(json!({"iss": "https://q.example"})));
    let (o, _) = send_with(
        &f,
        &host,
        "GET",
        "/",
        &[("authorization", &bearer(&crossed))],
    );
    assert!(!matches!(o, Outcome::Continue), "{o:?}");
}

/// Right after worker 1's refetch published a new kid, worker 2 (which has
/// not ticked since) re-reads the shared keys instead of refusing the kid
/// under the cooldown.
#[test]
fn a_kid_another_worker_just_fetched_is_accepted_before_the_next_tick() {
    let host = FakeHost::new();
    let vm1 = Vm::new(&host, "2s", 100);
    let vm2 = Vm::new(&host, "2s", 200);
    vm1.tick(&host);
    vm1.respond(&host, last_call(&host), 200, &doc_a());
    vm2.tick(&host);

    let token_b = rs256(RSA_B, "b", &claims(json!({})));
    let (o, _) = vm1.request(&host, &token_b);
    assert!(matches!(o, Outcome::Paused), "{o:?}");
    vm1.tick(&host);
    let doc_ab = jwks(vec![jwk("rsa-a", "a"), jwk("rsa-b", "b")]);
    vm1.respond(&host, last_call(&host), 200, &doc_ab);

    // vm2 has not ticked: its keys are still {a}.
    let (o, _) = vm2.request(&host, &token_b);
    assert!(matches!(o, Outcome::Continue), "{o:?}");
    assert_eq!(calls(&host), 2, "no extra fetch");
}

/// A multi-byte character across the end of the `Bearer ` prefix, or a
/// token that is not UTF-8, is refused with a 401: no panic, and never
/// treated as no token (which an `optional` rule would let through).
#[test]
fn odd_bytes_around_the_bearer_prefix_are_refused_not_ignored() {
    let host = FakeHost::new();
    let f = inline(&host, json!({}));
    for value in ["Beare\u{20ac}x", "Bearer \u{20ac}\u{20ac}"] {
        for path in ["/api/items", "/public/items"] {
            let o = send(&f, &host, path, &[("authorization", value)]);
            if value.starts_with("Bearer ") {
                unauthorized(o, value);
            } else {
                // No Bearer prefix: no token here.
                assert!(!matches!(o, Outcome::Paused), "{value} on {path}: {o:?}");
            }
        }
    }
    // Raw non-UTF-8 bytes after the prefix.
    put_request(&host, "GET", "/public/items", &[]);
    let mut pairs: Vec<(String, Vec<u8>)> = request_headers(&host)
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_vec()))
        .collect();
    pairs.push(("authorization".into(), b"Bearer \xff\xfe.x.y".to_vec()));
    host.set_map(MapType::RequestHeaders, Headers::from_pairs(pairs));
    let mut http = f.new_http();
    let action = http.on_request_headers(&host, true);
    unauthorized(
        outcome(&host, action),
        "non-UTF-8 token on an optional rule",
    );
}
