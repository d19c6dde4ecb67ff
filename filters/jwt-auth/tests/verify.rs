//! The verifier as plain Rust, with no host: the config (`compile_json`), the
//! strict token parse (`token::parse`), JWKS documents (`KeySet`), and the
//! checks (`verify::{provider_for, check_claims, candidate_keys, verify}`).
//!
//! Signatures go through jwt-simple (`verify::PureRust`, the host without
//! `verify_signature`) and, for RS* and ES*, through `FakeBoring`: a stand-in
//! for Envoy's `verify_signature` that re-checks what it is handed (SPKI DER,
//! DER ECDSA signature, hash name) with jwt-simple, so the DER the filter
//! builds for BoringSSL is proven here too.
//!
//! Runs natively (`cargo test -p jwt-auth`) and as wasm32 under Node
//! (`cargo test -p jwt-auth --target wasm32-unknown-unknown --test verify`).
//!
//! Tokens are minted with jwt-simple from the PEM files in `tests/keys/`
//! (made once with the openssl CLI; see `tests/keys/README.md`), or by hand
//! (HS256 with `hmac-sha256`) when a test needs a header or payload that
//! jwt-simple would not write.
// Test code: clippy.toml's allow-*-in-tests covers `#[test]` functions but not
// the helpers of an integration-test crate, nor `#[wasm_bindgen_test]` ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use jwt_auth::config::{self, Config, JwksSource, Location, Requires};
use jwt_auth::jwks::{Alg, KeySet, Material};
use jwt_auth::token::{self, MAX_TIME, Reject};
use jwt_auth::verify::{self, PureRust, SignatureHost, Verified};
use jwt_simple::prelude::{
    ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ECDSAP384KeyPairLike, ECDSAP384PublicKeyLike,
    ES256KeyPair, ES256PublicKey, ES384KeyPair, ES384PublicKey, Ed25519KeyPair, EdDSAKeyPairLike,
    HS256Key, HS384Key, HS512Key, HeaderOptions, JWTClaims, KeyMetadata, MACLike, NoCustomClaims,
    PS256KeyPair, PS384KeyPair, PS512KeyPair, RS256KeyPair, RS256PublicKey, RS384KeyPair,
    RS384PublicKey, RS512KeyPair, RS512PublicKey, RSAKeyPairLike, RSAPublicKeyLike, UnixTimeStamp,
    VerificationOptions,
};
use kit::ConfigError;
use serde_json::{Map, Value, json};
use std::cell::RefCell;

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

const RSA_A: &str = include_str!("keys/rsa-a.key.pem");
const RSA_B: &str = include_str!("keys/rsa-b.key.pem");
const EC256: &str = include_str!("keys/ec256.key.pem");
const EC384: &str = include_str!("keys/ec384.key.pem");
const ED25519: &str = include_str!("keys/ed25519.key.pem");
/// The public halves as JWK members (no `kid`, `alg` or `use`).
const PUBLIC_JWKS: &str = include_str!("keys/public.jwk.json");
/// The SubjectPublicKeyInfo DER openssl wrote for each key.
const RSA_A_SPKI: &[u8] = include_bytes!("keys/rsa-a.pub.der");
const EC256_SPKI: &[u8] = include_bytes!("keys/ec256.pub.der");
const EC384_SPKI: &[u8] = include_bytes!("keys/ec384.pub.der");

/// The inline HMAC secret (32 bytes or more, as the filter requires).
const SECRET: &[u8] = b"an HMAC secret of more than 32 bytes, test only";
const ATTACKER_SECRET: &[u8] = b"another secret the attacker knows, 32+ bytes";

const ISS: &str = "https://issuer.example.com/realms/app";
const NOW: u64 = 1_700_000_000;

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

/// The public JWK of a key in `tests/keys/`, with `kid`.
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

/// `jwk` with extra members (`alg`, `use`, ...); a null removes one.
fn with(mut key: Value, extra: Value) -> Value {
    merge(&mut key, extra);
    key
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

// ---------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------

/// A provider with inline `keys`, issuer [`ISS`] and audience `api`.
fn provider(name: &str, keys: Vec<Value>) -> Value {
    json!({
        "name": name,
        "issuer": ISS,
        "audiences": ["api"],
        "jwks": json!({"keys": keys}).to_string(),
    })
}

/// A config over `providers`, one rule requiring any of them.
fn config_json(providers: Vec<Value>) -> String {
    let names: Vec<Value> = providers.iter().map(|p| p["name"].clone()).collect();
    json!({
        "providers": providers,
        "rules": [{"match": {"pathPrefix": "/"}, "requires": names}],
    })
    .to_string()
}

fn compile(json: &str) -> Config {
    match config::compile_json(Some(json.as_bytes())) {
        Ok(c) => c,
        Err(e) => panic!("config should compile: {e}\n{json}"),
    }
}

fn config_error(json: &str) -> ConfigError {
    match config::compile_json(Some(json.as_bytes())) {
        Ok(c) => panic!("config should be rejected, compiled to {c:?}\n{json}"),
        Err(e) => e,
    }
}

/// One provider `p` with `keys`.
fn one(keys: Vec<Value>) -> Config {
    compile(&config_json(vec![provider("p", keys)]))
}

/// One provider `p` with `keys` and `extra` provider fields.
fn one_with(keys: Vec<Value>, extra: Value) -> Config {
    let mut p = provider("p", keys);
    merge(&mut p, extra);
    compile(&config_json(vec![p]))
}

fn inline_keys(cfg: &Config, i: usize) -> &KeySet {
    match &cfg.providers[i].jwks {
        JwksSource::Inline(k) => k,
        JwksSource::Remote(r) => panic!("provider {i} is remote: {r:?}"),
    }
}

/// Every key this file signs with, under its name as `kid`.
fn all_keys() -> Vec<Value> {
    vec![
        jwk("rsa-a", "rsa-a"),
        jwk("ec256", "ec256"),
        jwk("ec384", "ec384"),
        jwk("ed25519", "ed25519"),
        oct("hmac", SECRET),
    ]
}

// ---------------------------------------------------------------------------
// Verification, as the filter runs it
// ---------------------------------------------------------------------------

/// Parses, picks the provider by `iss` among all, and verifies at `now`.
fn run(
    cfg: &Config,
    token: &str,
    now: u64,
    crypto: &dyn SignatureHost,
) -> Result<Verified, Reject> {
    let max = cfg
        .providers
        .iter()
        .map(|p| p.max_token_bytes)
        .max()
        .unwrap();
    let parsed = token::parse(token, max)?;
    let all: Vec<usize> = (0..cfg.providers.len()).collect();
    let (i, p) = verify::provider_for(&parsed, &cfg.providers, &all)?;
    verify::verify(&parsed, i, p, inline_keys(cfg, i), now, crypto)
}

/// Verifies at [`NOW`] with jwt-simple only.
fn check(cfg: &Config, token: &str) -> Result<Verified, Reject> {
    run(cfg, token, NOW, &PureRust)
}

/// Verifies at `now` both with jwt-simple only and with the host's crypto,
/// and requires the same answer from both.
fn both_at(cfg: &Config, token: &str, now: u64) -> Result<Verified, Reject> {
    let pure = run(cfg, token, now, &PureRust);
    let host = FakeBoring::default();
    let boring = run(cfg, token, now, &host);
    match (&pure, &boring) {
        (Ok(a), Ok(b)) => {
            assert_eq!(
                (a.provider, a.exp, a.key_fingerprint),
                (b.provider, b.exp, b.key_fingerprint)
            );
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "jwt-simple and host disagree on {token}"),
        _ => panic!("jwt-simple says {pure:?}, the host says {boring:?}, for {token}"),
    }
    pure
}

fn both(cfg: &Config, token: &str) -> Result<Verified, Reject> {
    both_at(cfg, token, NOW)
}

fn accepted(cfg: &Config, token: &str) -> Verified {
    match both(cfg, token) {
        Ok(v) => v,
        Err(r) => panic!("should be accepted, got {r:?}: {token}"),
    }
}

fn refused(cfg: &Config, token: &str) -> Reject {
    match both(cfg, token) {
        Ok(v) => panic!("should be refused, accepted {v:?}: {token}"),
        Err(r) => r,
    }
}

fn is_malformed(r: &Result<impl std::fmt::Debug, Reject>) -> bool {
    matches!(r, Err(Reject::Malformed(_)))
}

fn fingerprint(cfg: &Config, kid: &str) -> u64 {
    inline_keys(cfg, 0)
        .keys
        .iter()
        .find(|k| k.kid.as_deref() == Some(kid))
        .unwrap()
        .fingerprint
}

/// Envoy's `verify_signature` as a test double: it re-checks the signature
/// from exactly what the filter hands BoringSSL (SPKI DER, hash name, DER
/// ECDSA signature) with jwt-simple, and records each call.
#[derive(Default)]
struct FakeBoring {
    calls: RefCell<Vec<(String, Vec<u8>)>>,
    /// When set, the answer whatever the signature.
    forced: Option<bool>,
}

/// A DER INTEGER at `der[0..]`: its big-endian value (minimal encoding
/// required) and the rest.
fn der_integer(der: &[u8]) -> (&[u8], &[u8]) {
    assert_eq!(der[0], 0x02, "INTEGER");
    let len = der[1] as usize;
    assert!(len < 0x80, "short length");
    let v = &der[2..2 + len];
    assert!(
        !(v.len() > 1 && v[0] == 0 && v[1] & 0x80 == 0),
        "INTEGER not minimal: {v:02x?}"
    );
    assert!(v[0] & 0x80 == 0, "INTEGER negative: {v:02x?}");
    (v, &der[2 + len..])
}

/// A DER ECDSA signature back to raw r‖s of `size`-byte halves.
fn der_to_raw(der: &[u8], size: usize) -> Vec<u8> {
    assert_eq!(der[0], 0x30, "SEQUENCE");
    let len = der[1] as usize;
    assert_eq!(len + 2, der.len(), "SEQUENCE length");
    let (r, rest) = der_integer(&der[2..]);
    let (s, rest) = der_integer(rest);
    assert!(rest.is_empty());
    let mut raw = Vec::new();
    for v in [r, s] {
        let v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
        assert!(v.len() <= size);
        raw.extend(std::iter::repeat_n(0, size - v.len()));
        raw.extend(v);
    }
    raw
}

/// Options under which jwt-simple checks only the signature (the claims are
/// the filter's business).
fn signature_only() -> VerificationOptions {
    VerificationOptions {
        accept_future: true,
        time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(0)),
        artificial_time: Some(UnixTimeStamp::from_secs(0)),
        max_token_length: None,
        ..Default::default()
    }
}

impl SignatureHost for FakeBoring {
    fn verify_signature(&self, hash: &str, spki: &[u8], sig: &[u8], text: &[u8]) -> Option<bool> {
        self.calls
            .borrow_mut()
            .push((hash.to_string(), spki.to_vec()));
        if let Some(answer) = self.forced {
            return Some(answer);
        }
        let text = std::str::from_utf8(text).unwrap();
        let token = |raw: &[u8]| format!("{text}.{}", b64(raw));
        let opts = || Some(signature_only());
        let ok = if let Ok(k) = ES256PublicKey::from_der(spki) {
            hash == "sha256"
                && k.verify_token::<NoCustomClaims>(&token(&der_to_raw(sig, 32)), opts())
                    .is_ok()
        } else if let Ok(k) = ES384PublicKey::from_der(spki) {
            hash == "sha384"
                && k.verify_token::<NoCustomClaims>(&token(&der_to_raw(sig, 48)), opts())
                    .is_ok()
        } else {
            // jwt-simple checks the header's alg against the key type, so a
            // wrong hash name fails here.
            match hash {
                "sha256" => RS256PublicKey::from_der(spki)
                    .unwrap()
                    .verify_token::<NoCustomClaims>(&token(sig), opts())
                    .is_ok(),
                "sha384" => RS384PublicKey::from_der(spki)
                    .unwrap()
                    .verify_token::<NoCustomClaims>(&token(sig), opts())
                    .is_ok(),
                "sha512" => RS512PublicKey::from_der(spki)
                    .unwrap()
                    .verify_token::<NoCustomClaims>(&token(sig), opts())
                    .is_ok(),
                other => panic!("unexpected hash {other}"),
            }
        };
        Some(ok)
    }
}

// ---------------------------------------------------------------------------
// Minting
// ---------------------------------------------------------------------------

/// A payload valid at [`NOW`] for [`ISS`] and `api`, with `patch` applied
/// (a null removes a claim).
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

/// jwt-simple writes exactly `payload`: every standard field is left empty
/// and the object goes in the flattened custom claims.
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

/// How jwt-simple should write the header.
#[derive(Default)]
struct Head<'a> {
    kid: Option<&'a str>,
    typ: Option<&'a str>,
    metadata: Option<KeyMetadata>,
}

/// Signs `payload` with `alg` and the private key `pem`.
fn sign_head(alg: &str, pem: &str, head: Head, payload: &Value) -> String {
    let c = jwt_claims(payload);
    let opts = HeaderOptions {
        signature_type: head.typ.map(str::to_string),
        content_type: None,
    };
    macro_rules! rsa {
        ($t:ty) => {{
            let mut k = <$t>::from_pem(pem).unwrap();
            if let Some(kid) = head.kid {
                k = k.with_key_id(kid);
            }
            if let Some(m) = head.metadata {
                k.attach_metadata(m).unwrap();
            }
            k.sign_with_options(c, &opts).unwrap()
        }};
    }
    macro_rules! other {
        ($t:ty) => {{
            assert!(head.metadata.is_none());
            let mut k = <$t>::from_pem(pem).unwrap();
            if let Some(kid) = head.kid {
                k = k.with_key_id(kid);
            }
            k.sign_with_options(c, &opts).unwrap()
        }};
    }
    match alg {
        "RS256" => rsa!(RS256KeyPair),
        "RS384" => rsa!(RS384KeyPair),
        "RS512" => rsa!(RS512KeyPair),
        "PS256" => rsa!(PS256KeyPair),
        "PS384" => rsa!(PS384KeyPair),
        "PS512" => rsa!(PS512KeyPair),
        "ES256" => other!(ES256KeyPair),
        "ES384" => other!(ES384KeyPair),
        "EdDSA" => other!(Ed25519KeyPair),
        other => panic!("no such asymmetric alg {other}"),
    }
}

fn sign(alg: &str, pem: &str, kid: Option<&str>, payload: &Value) -> String {
    sign_head(
        alg,
        pem,
        Head {
            kid,
            ..Head::default()
        },
        payload,
    )
}

/// HS256/384/512 with jwt-simple.
fn hs(alg: &str, secret: &[u8], kid: Option<&str>, payload: &Value) -> String {
    let c = jwt_claims(payload);
    macro_rules! mac {
        ($t:ty) => {{
            let mut k = <$t>::from_bytes(secret);
            if let Some(kid) = kid {
                k = k.with_key_id(kid);
            }
            k.authenticate(c).unwrap()
        }};
    }
    match alg {
        "HS256" => mac!(HS256Key),
        "HS384" => mac!(HS384Key),
        "HS512" => mac!(HS512Key),
        other => panic!("no such HMAC alg {other}"),
    }
}

/// HS256 by hand over exactly these header and payload texts.
fn hs256_raw(secret: &[u8], header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let mac = hmac_sha256::HMAC::mac(input.as_bytes(), secret);
    format!("{input}.{}", b64(mac))
}

/// The private key each algorithm of this file signs with, and its `kid`.
fn key_for(alg: &str) -> (&'static str, &'static str) {
    match alg {
        "ES256" => (EC256, "ec256"),
        "ES384" => (EC384, "ec384"),
        "EdDSA" => (ED25519, "ed25519"),
        _ => (RSA_A, "rsa-a"),
    }
}

const ASYMMETRIC: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];
const HMAC: [&str; 3] = ["HS256", "HS384", "HS512"];

/// A valid token of `alg` with the key of [`all_keys`], with or without kid.
fn token_of(alg: &str, with_kid: bool, payload: &Value) -> String {
    if HMAC.contains(&alg) {
        return hs(alg, SECRET, with_kid.then_some("hmac"), payload);
    }
    let (pem, kid) = key_for(alg);
    sign(alg, pem, with_kid.then_some(kid), payload)
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_string).collect()
}

/// The token with its payload replaced (the signature kept).
fn with_payload(token: &str, payload: &Value) -> String {
    let s = segments(token);
    format!("{}.{}.{}", s[0], b64(payload.to_string()), s[2])
}

/// The token with one signature bit flipped.
fn flip_signature_bit(token: &str) -> String {
    let s = segments(token);
    let mut sig = unb64(&s[2]);
    let last = sig.len() - 1;
    sig[last] ^= 1;
    format!("{}.{}.{}", s[0], s[1], b64(sig))
}

fn payload_of(token: &str) -> Value {
    serde_json::from_slice(&unb64(&segments(token)[1])).unwrap()
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn the_spec_example_compiles_with_istio_defaults() {
    let cfg = compile(
        r#"{
      "providers": [{
        "name": "keycloak",
        "issuer": "https://keycloak.example.com/realms/app",
        "audiences": ["api"],
        "jwksUri": "http://keycloak.keycloak.svc.cluster.local:8080/realms/app/protocol/openid-connect/certs",
        "jwksCluster": "outbound|8080||keycloak.keycloak.svc.cluster.local",
        "timeout": "5s",
        "cacheDuration": "10m",
        "fromHeaders": [{"name": "Authorization", "prefix": "Bearer "}],
        "fromParams": ["access_token"],
        "fromCookies": ["token"],
        "forwardOriginalToken": false,
        "outputPayloadToHeader": "x-jwt-payload",
        "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}],
        "clockSkew": "60s",
        "requireExpiration": true,
        "maxTokenBytes": 8192
      }],
      "rules": [
        {"match": {"pathPrefix": "/healthz"}, "requires": "none"},
        {"match": {"pathPrefix": "/public"}, "requires": "optional"},
        {"match": {"pathPrefix": "/"}, "requires": ["keycloak"]}
      ],
      "cache": {"maxEntries": 1000}
    }"#,
    );
    let p = &cfg.providers[0];
    assert_eq!(p.name, "keycloak");
    assert_eq!(p.timeout.as_secs(), 5);
    assert_eq!(p.cache_duration.as_secs(), 600);
    assert_eq!(p.clock_skew.as_secs(), 60);
    assert_eq!(p.max_token_bytes, 8192);
    assert!(p.require_expiration);
    assert_eq!(
        p.locations,
        [
            Location::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into()
            },
            Location::Param("access_token".into()),
            Location::Cookie("token".into()),
        ]
    );
    assert_eq!(p.payload_header.as_deref(), Some("x-jwt-payload"));
    assert_eq!(p.claim_headers, [("x-jwt-sub".into(), "sub".into())]);
    match &p.jwks {
        JwksSource::Remote(r) => {
            assert_eq!(
                r.cluster,
                "outbound|8080||keycloak.keycloak.svc.cluster.local"
            );
            assert_eq!(r.authority, "keycloak.keycloak.svc.cluster.local:8080");
            assert_eq!(r.path, "/realms/app/protocol/openid-connect/certs");
        }
        JwksSource::Inline(_) => panic!("remote"),
    }
    assert_eq!(
        cfg.rules.iter().map(|r| &r.requires).collect::<Vec<_>>(),
        [
            &Requires::None,
            &Requires::Optional,
            &Requires::AnyOf(vec![0])
        ]
    );
    let path = |p: &str| kit::Headers::from_pairs([(":path", p)]);
    assert!(cfg.rules[0].matcher.matches(&path("/healthz/live?x=1")));
    assert!(!cfg.rules[0].matcher.matches(&path("/api")));
    assert_eq!(cfg.cache_entries, 1000);
    assert_eq!(cfg.output_headers, ["x-jwt-payload", "x-jwt-sub"]);

    // The defaults, when nothing optional is set: Istio's token locations.
    let cfg = one(vec![jwk("rsa-a", "a")]);
    let p = &cfg.providers[0];
    assert_eq!(p.timeout, config::DEFAULT_TIMEOUT);
    assert_eq!(p.cache_duration, config::DEFAULT_CACHE_DURATION);
    assert_eq!(p.clock_skew, config::DEFAULT_CLOCK_SKEW);
    assert_eq!(p.max_token_bytes, config::DEFAULT_MAX_TOKEN_BYTES);
    assert!(p.require_expiration);
    assert!(!p.forward_original_token);
    assert_eq!(
        p.locations,
        [
            Location::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into()
            },
            Location::Param("access_token".into()),
        ]
    );
    assert_eq!(cfg.cache_entries, config::DEFAULT_CACHE_ENTRIES);
    assert!(cfg.output_headers.is_empty());
}

fn remote(uri: &str, cluster: Option<&str>) -> config::RemoteJwks {
    let mut p = json!({"name": "p", "issuer": ISS, "jwksUri": uri});
    if let Some(c) = cluster {
        p["jwksCluster"] = c.into();
    }
    match compile(&config_json(vec![p])).providers.remove(0).jwks {
        JwksSource::Remote(r) => r,
        JwksSource::Inline(_) => panic!("remote"),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn jwks_cluster_is_derived_from_the_uri_by_istio_naming() {
    for (uri, cluster, authority, path) in [
        (
            "http://keycloak.keycloak.svc.cluster.local:8080/realms/app/certs",
            "outbound|8080||keycloak.keycloak.svc.cluster.local",
            "keycloak.keycloak.svc.cluster.local:8080",
            "/realms/app/certs",
        ),
        (
            "http://idp.example.com/jwks.json",
            "outbound|80||idp.example.com",
            "idp.example.com",
            "/jwks.json",
        ),
        (
            "https://idp.example.com/.well-known/jwks.json",
            "outbound|443||idp.example.com",
            "idp.example.com",
            "/.well-known/jwks.json",
        ),
        (
            "https://idp.example.com:8443",
            "outbound|8443||idp.example.com",
            "idp.example.com:8443",
            "/",
        ),
        (
            "http://[::1]:9000/jwks",
            "outbound|9000||[::1]",
            "[::1]:9000",
            "/jwks",
        ),
        ("http://[::1]/jwks", "outbound|80||[::1]", "[::1]", "/jwks"),
        (
            "http://127.0.0.1:9000/keys?realm=a",
            "outbound|9000||127.0.0.1",
            "127.0.0.1:9000",
            "/keys?realm=a",
        ),
    ] {
        let r = remote(uri, None);
        assert_eq!(r.uri, uri);
        assert_eq!(r.cluster, cluster, "{uri}");
        assert_eq!(r.authority, authority, "{uri}");
        assert_eq!(r.path, path, "{uri}");
    }
    // An explicit jwksCluster wins.
    let r = remote("https://idp.example.com/jwks", Some("jwks_cluster"));
    assert_eq!(r.cluster, "jwks_cluster");
    assert_eq!(r.authority, "idp.example.com");

    for bad in [
        "idp.example.com/jwks",
        "ftp://idp.example.com/jwks",
        "http:///jwks",
        "http://user@idp.example.com/jwks",
        "http://idp.example.com:http/jwks",
        "http://idp.example.com:99999/jwks",
        "http://:8080/jwks",
    ] {
        let p = json!({"name": "p", "issuer": ISS, "jwksUri": bad});
        let e = config_error(&config_json(vec![p]));
        assert_eq!(e.path, "providers[0].jwksUri", "{bad}: {e}");
        assert!(e.message.contains("expected an http(s) URL"), "{bad}: {e}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn config_errors_name_the_json_path() {
    let keys = json!({"keys": [jwk("rsa-a", "a")]}).to_string();
    let base = || json!({"name": "p", "issuer": ISS, "jwks": keys});
    let cases: Vec<(Value, &str, &str)> = vec![
        // (providers[0] patch, path, message fragment)
        (
            json!({"jwksUri": "https://idp.example.com/jwks"}),
            "providers[0]",
            "either jwks or jwksUri, not both",
        ),
        (
            json!({"jwks": null}),
            "providers[0]",
            "expected jwks or jwksUri",
        ),
        (
            json!({"jwksCluster": "c"}),
            "providers[0].jwksCluster",
            "jwksCluster goes with jwksUri",
        ),
        (
            json!({"timeout": "5 seconds"}),
            "providers[0].timeout",
            "expected a duration",
        ),
        (
            json!({"cacheDuration": 600}),
            "providers[0].cacheDuration",
            "",
        ),
        (
            json!({"clockSkew": "-1s"}),
            "providers[0].clockSkew",
            "expected a duration",
        ),
        (
            json!({"timeout": "0s"}),
            "providers[0].timeout",
            "more than 0s",
        ),
        (
            json!({"cacheDuration": "500ms"}),
            "providers[0].cacheDuration",
            "at least 1s",
        ),
        (
            json!({"jwksUrl": "https://idp.example.com/jwks"}),
            "providers[0].jwksUrl",
            "unknown field `jwksUrl`",
        ),
        (
            json!({"issuer": ""}),
            "providers[0].issuer",
            "expected an issuer",
        ),
        (json!({"name": ""}), "providers[0].name", "expected a name"),
        (
            json!({"maxTokenBytes": 10}),
            "providers[0].maxTokenBytes",
            "at least 64",
        ),
        (
            json!({"fromHeaders": [{"name": "bad header"}]}),
            "providers[0].fromHeaders[0].name",
            "expected an HTTP header name",
        ),
        (
            json!({"fromParams": [""]}),
            "providers[0].fromParams[0]",
            "query parameter",
        ),
        (
            json!({"fromCookies": ["a;b"]}),
            "providers[0].fromCookies[0]",
            "cookie name",
        ),
        (
            json!({"fromHeaders": [], "fromParams": []}),
            "providers[0]",
            "at least one token location",
        ),
        (
            json!({"outputPayloadToHeader": "Authorization"}),
            "providers[0].outputPayloadToHeader",
            "cannot be an output header",
        ),
        (
            json!({"outputClaimToHeaders": [
                {"header": "x-a", "claim": "a"},
                {"header": "cookie", "claim": "b"},
            ]}),
            "providers[0].outputClaimToHeaders[1].header",
            "cannot be an output header",
        ),
        (
            json!({"outputClaimToHeaders": [{"header": "x-a", "claim": ""}]}),
            "providers[0].outputClaimToHeaders[0].claim",
            "expected a claim name",
        ),
        (
            json!({"jwks": "{\"keys\": 5}"}),
            "providers[0].jwks",
            "not a JWKS",
        ),
        (
            json!({"jwks": "not json"}),
            "providers[0].jwks",
            "not a JWKS",
        ),
    ];
    for (patch, path, fragment) in cases {
        let mut p = base();
        merge(&mut p, patch.clone());
        let e = config_error(&config_json(vec![p]));
        assert_eq!(e.path, path, "{patch}: {e}");
        assert!(e.message.contains(fragment), "{patch}: {e}");
    }

    // Rules.
    let rules = |rules: Value| {
        json!({"providers": [base(), with(base(), json!({"name": "q"}))], "rules": rules})
            .to_string()
    };
    for (rs, path, fragment) in [
        (
            json!([{"requires": ["p"]}, {"requires": ["q", "nobody"]}]),
            "rules[1].requires[1]",
            "unknown provider \"nobody\"",
        ),
        (
            json!([{"requires": "all"}]),
            "rules[0].requires",
            "expected \"none\"",
        ),
        (
            json!([{"requires": []}]),
            "rules[0].requires",
            "non-empty list",
        ),
        (
            json!([{"requires": 5}]),
            "rules[0].requires",
            "expected \"none\"",
        ),
        (
            json!([{"requires": "NONE"}]),
            "rules[0].requires",
            "expected \"none\"",
        ),
        (
            json!([{"requires": [5]}]),
            "rules[0].requires[0]",
            "provider name",
        ),
        (json!([{}]), "rules[0]", "missing field `requires`"),
        (
            json!([{"match": {"prefix": "/"}, "requires": "none"}]),
            "rules[0].match.prefix",
            "unknown field `prefix`",
        ),
        (
            json!([{"match": {"pathPrefix": "api"}, "requires": "none"}]),
            "rules[0].match.pathPrefix",
            "starting with \"/\"",
        ),
        (
            json!([{"match": {"pathPrefix": "/a", "path": "/a"}, "requires": "none"}]),
            "rules[0].match",
            "at most one of pathPrefix, path, pathRegex",
        ),
        (json!([]), "rules", "at least one rule"),
    ] {
        let e = config_error(&rules(rs.clone()));
        assert_eq!(e.path, path, "{rs}: {e}");
        assert!(e.message.contains(fragment), "{rs}: {e}");
    }

    // The top level.
    for (json, path, fragment) in [
        (
            json!({"providers": [], "rules": [{"requires": "none"}]}),
            "providers",
            "at least one provider",
        ),
        (
            json!({"providers": [base(), base()], "rules": [{"requires": "none"}]}),
            "providers[1].name",
            "appears twice",
        ),
        (
            json!({"providers": [base()], "rules": [{"requires": "none"}], "cache": {"size": 1}}),
            "cache.size",
            "unknown field `size`",
        ),
        (
            json!({"providers": [base()], "rules": [{"requires": "none"}], "extra": 1}),
            "extra",
            "unknown field `extra`",
        ),
        (
            json!({"rules": [{"requires": "none"}]}),
            "",
            "missing field `providers`",
        ),
    ] {
        let e = config_error(&json.to_string());
        assert_eq!(e.path, path, "{json}: {e}");
        assert!(e.message.contains(fragment), "{json}: {e}");
    }
    assert_eq!(config_error("[]").message, "expected a JSON object");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn an_inline_jwks_without_a_usable_key_is_a_config_error() {
    for (keys, reason) in [
        (vec![jwk("rsa-weak", "weak")], "under 2048"),
        (
            vec![with(jwk("rsa-a", "a"), json!({"use": "enc"}))],
            "\"sig\"",
        ),
        (
            vec![json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"})],
            "crv",
        ),
        (vec![oct("short", b"too short")], "under 256"),
        (vec![], "no keys"),
    ] {
        let e = config_error(&config_json(vec![provider("p", keys.clone())]));
        assert_eq!(e.path, "providers[0].jwks", "{keys:?}: {e}");
        assert!(e.message.contains("no usable signing key"), "{e}");
        assert!(e.message.contains(reason), "{reason}: {e}");
        // The reason names the key, never its material.
        for k in &keys {
            if let Some(n) = k["n"].as_str() {
                assert!(!e.message.contains(&n[..16]), "{e}");
            }
        }
    }
    // One usable key is enough: the others are skipped, not fatal.
    let cfg = one(vec![
        jwk("rsa-weak", "weak"),
        with(jwk("rsa-b", "enc"), json!({"use": "enc"})),
        jwk("rsa-a", "a"),
    ]);
    assert_eq!(inline_keys(&cfg, 0).keys.len(), 1);
    assert_eq!(inline_keys(&cfg, 0).skipped.len(), 2);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn rules_match_paths_as_configured() {
    let cfg = compile(
        &json!({
            "providers": [
                provider("p", vec![jwk("rsa-a", "a")]),
                provider("q", vec![jwk("rsa-b", "b")]),
            ],
            "rules": [
                {"match": {"path": "/exact"}, "requires": "none"},
                {"match": {"pathPrefix": "/api"}, "requires": ["q", "p"]},
                {"requires": "optional"},
            ],
        })
        .to_string(),
    );
    let path = |p: &str| kit::Headers::from_pairs([(":path", p)]);
    let m = |i: usize, p: &str| cfg.rules[i].matcher.matches(&path(p));
    assert!(m(0, "/exact"));
    assert!(m(0, "/exact?q=1"));
    assert!(!m(0, "/exact/"));
    assert!(!m(0, "/exac"));
    assert!(m(1, "/api"));
    assert!(m(1, "/apiary"));
    assert!(!m(1, "/API"));
    assert_eq!(cfg.rules[1].requires, Requires::AnyOf(vec![1, 0]));
    assert!(cfg.rules[2].matcher.is_any());
    assert!(m(2, ""));
}

// ---------------------------------------------------------------------------
// JWKS documents
// ---------------------------------------------------------------------------

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn jwks_parse_skips_unusable_keys_and_counts_them() {
    let doc = json!({"keys": [
        jwk("rsa-a", "sig"),
        // Keycloak's encryption key beside its signing key.
        with(jwk("rsa-b", "enc"), json!({"use": "enc", "alg": "RSA-OAEP"})),
        with(jwk("rsa-b", "enc2"), json!({"use": "enc"})),
        jwk("rsa-weak", "weak"),
        json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"}),
        json!({"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": "AA", "y": "AA"}),
        json!({"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": b64([9u8; 32])}),
        json!({"kty": "OKP", "crv": "Ed448", "kid": "ed448", "x": b64([9u8; 57])}),
        json!({"kty": "AKP", "kid": "pq", "pub": "AA"}),
        json!({"kid": "no-kty", "n": "AA"}),
        with(jwk("ec256", "short"), json!({"x": b64([1u8; 31])})),
        with(jwk("rsa-a", "bad-alg"), json!({"alg": "ES256"})),
        with(jwk("rsa-a", "unknown-alg"), json!({"alg": "RS1"})),
        with(jwk("rsa-a", "int-kid"), json!({"kid": 7})),
        with(jwk("rsa-a", "bad-b64"), json!({"n": "not*base64"})),
        "not an object",
        jwk("ec256", "ec256"),
        with(jwk("ec384", "ec384"), json!({"use": "sig", "alg": "ES384"})),
        jwk("ed25519", "ed25519"),
        oct("hmac", SECRET),
    ]})
    .to_string();
    let set = KeySet::parse(doc.as_bytes()).unwrap();
    let kids: Vec<&str> = set.keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
    assert_eq!(kids, ["sig", "ec256", "ec384", "ed25519", "hmac"]);
    assert_eq!(set.skipped.len(), 15, "{:#?}", set.skipped);
    assert_eq!(set.keys[2].alg, Some(Alg::ES384));
    let summary = set.skipped_summary();
    for fragment in [
        "\"enc\"",
        "RSA key of 1024 bits, under 2048",
        "unsupported crv \"P-521\"",
        "unsupported crv \"secp256k1\"",
        "unsupported crv \"X25519\"",
        "unsupported kty \"AKP\"",
        "missing kty",
        "wrong length",
        "does not suit",
        "unsupported alg",
        "not a string",
        "not base64url",
        "not an object",
    ] {
        assert!(summary.contains(fragment), "{fragment} in {summary}");
    }
    // The summary names keys, never their material.
    let n_a = jwk("rsa-a", "")["n"].as_str().unwrap().to_string();
    assert!(!summary.contains(&n_a[..16]));

    // Fingerprints tell keys apart (material and kid).
    let prints: Vec<u64> = set.keys.iter().map(|k| k.fingerprint).collect();
    for (i, a) in prints.iter().enumerate() {
        assert!(!prints[i + 1..].contains(a));
    }
    let again = KeySet::parse(doc.as_bytes()).unwrap();
    assert_eq!(again, set);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_fetched_jwks_never_supplies_an_oct_key() {
    let doc = json!({"keys": [oct("hmac", SECRET), jwk("rsa-a", "a")]}).to_string();
    let remote = KeySet::parse_remote(doc.as_bytes()).unwrap();
    assert_eq!(remote.keys.len(), 1);
    assert_eq!(remote.keys[0].kid.as_deref(), Some("a"));
    assert_eq!(remote.skipped.len(), 1);
    assert!(remote.skipped[0].contains("oct keys are accepted only inline"));
    let inline = KeySet::parse(doc.as_bytes()).unwrap();
    assert_eq!(inline.keys.len(), 2);
    assert!(inline.skipped.is_empty());

    // Only oct keys: nothing usable.
    let doc = json!({"keys": [oct("hmac", SECRET)]}).to_string();
    let remote = KeySet::parse_remote(doc.as_bytes()).unwrap();
    assert!(remote.keys.is_empty());
    assert_eq!(remote.skipped.len(), 1);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_document_that_is_not_a_jwks_is_an_error() {
    for doc in [
        &b""[..],
        b"not json",
        b"[]",
        b"{}",
        b"{\"keys\": {}}",
        b"{\"keys\": null}",
        b"<html>500</html>",
        b"{\"keys\": [] ",
    ] {
        assert!(
            KeySet::parse(doc).is_err(),
            "{}",
            String::from_utf8_lossy(doc)
        );
        assert!(KeySet::parse_remote(doc).is_err());
    }
    let empty = KeySet::parse(b"{\"keys\": []}").unwrap();
    assert!(empty.keys.is_empty() && empty.skipped.is_empty());
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn jwk_keys_become_the_spki_openssl_writes() {
    let set = KeySet::parse(
        json!({"keys": [
            jwk("rsa-a", "a"),
            jwk("ec256", "b"),
            jwk("ec384", "c"),
            jwk("ed25519", "d"),
        ]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    match &set.keys[0].material {
        Material::Rsa { spki, e, .. } => {
            assert_eq!(spki, RSA_A_SPKI);
            assert_eq!(e, &[1, 0, 1]);
        }
        other => panic!("{other:?}"),
    }
    match &set.keys[1].material {
        Material::Ec { spki, point, .. } => {
            assert_eq!(spki, EC256_SPKI);
            assert_eq!(point.len(), 65);
            assert_eq!(point[0], 4);
        }
        other => panic!("{other:?}"),
    }
    match &set.keys[2].material {
        Material::Ec { spki, .. } => assert_eq!(spki, EC384_SPKI),
        other => panic!("{other:?}"),
    }
    match &set.keys[3].material {
        Material::Ed25519 { x } => assert_eq!(x.len(), 32),
        other => panic!("{other:?}"),
    }

    // Some publishers pad JWK members, or add a leading zero to n: the same
    // key either way.
    let mut padded = jwk("rsa-a", "a");
    let n = unb64(padded["n"].as_str().unwrap());
    let mut n0 = vec![0];
    n0.extend(&n);
    padded["n"] = URL_SAFE.encode(&n0).into();
    padded["e"] = URL_SAFE.encode([1, 0, 1]).into();
    let set = KeySet::parse(json!({"keys": [padded]}).to_string().as_bytes()).unwrap();
    match &set.keys[0].material {
        Material::Rsa { spki, n: kn, .. } => {
            assert_eq!(spki, RSA_A_SPKI);
            assert_eq!(kn, &n);
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Algorithms
// ---------------------------------------------------------------------------

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn every_algorithm_accepts_its_valid_token() {
    let cfg = one(all_keys());
    for alg in ASYMMETRIC.iter().chain(&HMAC) {
        for with_kid in [true, false] {
            let token = token_of(alg, with_kid, &claims(json!({})));
            let parsed = token::parse(&token, 8192).unwrap();
            assert_eq!(parsed.alg, Alg::from_name(alg).unwrap());
            let v = accepted(&cfg, &token);
            let kid = if HMAC.contains(alg) {
                "hmac"
            } else {
                key_for(alg).1
            };
            assert_eq!(v.key_fingerprint, fingerprint(&cfg, kid), "{alg}");
            assert_eq!(v.provider, 0);
            assert_eq!(v.exp, Some(NOW + 3600));
        }
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn every_algorithm_refuses_a_tampered_token() {
    let cfg = one(all_keys());
    for alg in ASYMMETRIC.iter().chain(&HMAC) {
        let token = token_of(alg, true, &claims(json!({})));
        let forged = with_payload(&token, &claims(json!({"sub": "admin"})));
        assert_eq!(refused(&cfg, &forged), Reject::BadSignature, "{alg}");
        let flipped = flip_signature_bit(&token);
        let r = refused(&cfg, &flipped);
        assert!(
            r == Reject::BadSignature || r == Reject::Malformed("bad ECDSA signature"),
            "{alg}: {r:?}"
        );
        // Signed by another key of the same type: rsa-b is not configured.
        if alg.starts_with('R') || alg.starts_with('P') {
            let other = sign(alg, RSA_B, Some("rsa-a"), &claims(json!({})));
            assert_eq!(refused(&cfg, &other), Reject::BadSignature, "{alg}");
        }
        if HMAC.contains(alg) {
            let other = hs(alg, ATTACKER_SECRET, Some("hmac"), &claims(json!({})));
            assert_eq!(refused(&cfg, &other), Reject::BadSignature, "{alg}");
        }
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn rs_and_es_go_to_the_host_and_ps_eddsa_hs_never_do() {
    let cfg = one(all_keys());
    for alg in ASYMMETRIC.iter().chain(&HMAC) {
        let token = token_of(alg, true, &claims(json!({})));
        let host = FakeBoring::default();
        assert!(run(&cfg, &token, NOW, &host).is_ok(), "{alg}");
        let calls = host.calls.borrow().clone();
        let expect: Option<(&str, &[u8])> = match *alg {
            "RS256" => Some(("sha256", RSA_A_SPKI)),
            "RS384" => Some(("sha384", RSA_A_SPKI)),
            "RS512" => Some(("sha512", RSA_A_SPKI)),
            "ES256" => Some(("sha256", EC256_SPKI)),
            "ES384" => Some(("sha384", EC384_SPKI)),
            _ => None,
        };
        match expect {
            Some((hash, spki)) => {
                assert_eq!(calls, [(hash.to_string(), spki.to_vec())], "{alg}");
            }
            None => assert!(calls.is_empty(), "{alg}: {calls:?}"),
        }

        // The host's answer is final: a "no" refuses a good RS/ES token.
        let no = FakeBoring {
            forced: Some(false),
            ..FakeBoring::default()
        };
        let r = run(&cfg, &token, NOW, &no);
        if expect.is_some() {
            assert_eq!(r.unwrap_err(), Reject::BadSignature, "{alg}");
        } else {
            assert!(r.is_ok(), "{alg}");
        }
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn hs_is_refused_without_an_oct_key() {
    let cfg = one(vec![
        jwk("rsa-a", "rsa-a"),
        jwk("ec256", "ec256"),
        jwk("ed25519", "ed25519"),
    ]);
    for alg in HMAC {
        for kid in [None, Some("rsa-a"), Some("ec256")] {
            let token = hs(alg, SECRET, kid, &claims(json!({})));
            assert_eq!(refused(&cfg, &token), Reject::BadSignature, "{alg} {kid:?}");
        }
        let token = hs(alg, SECRET, Some("hmac"), &claims(json!({})));
        assert_eq!(refused(&cfg, &token), Reject::UnknownKid, "{alg}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn rs256_to_hs256_confusion_is_refused() {
    // The attacker knows the public key in every encoding and MACs with it.
    let public = jwk("rsa-a", "rsa-a");
    let pem_spki = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD
            .encode(RSA_A_SPKI)
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let encodings: Vec<Vec<u8>> = vec![
        RSA_A_SPKI.to_vec(),
        pem_spki.into_bytes(),
        unb64(public["n"].as_str().unwrap()),
        public.to_string().into_bytes(),
    ];
    // Only the RSA key; then the RSA key beside a real oct key.
    for cfg in [
        one(vec![public.clone()]),
        one(vec![public.clone(), oct("hmac", SECRET)]),
    ] {
        for key in &encodings {
            for kid in [None, Some("rsa-a")] {
                let mut header = json!({"alg": "HS256", "typ": "JWT"});
                if let Some(kid) = kid {
                    header["kid"] = kid.into();
                }
                let token = hs256_raw(key, &header.to_string(), &claims(json!({})).to_string());
                let host = FakeBoring::default();
                assert_eq!(
                    run(&cfg, &token, NOW, &host).unwrap_err(),
                    Reject::BadSignature
                );
                assert!(host.calls.borrow().is_empty(), "never an RSA verify");
                assert_eq!(check(&cfg, &token).unwrap_err(), Reject::BadSignature);
            }
        }
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn the_keys_kid_alg_and_use_are_honoured() {
    let c = claims(json!({}));
    // kid: a token says which key; another key's signature is refused.
    let cfg = one(vec![jwk("rsa-a", "a"), jwk("rsa-b", "b")]);
    let by_a = sign("RS256", RSA_A, Some("a"), &c);
    assert_eq!(
        accepted(&cfg, &by_a).key_fingerprint,
        fingerprint(&cfg, "a")
    );
    let by_b_as_a = sign("RS256", RSA_B, Some("a"), &c);
    assert_eq!(refused(&cfg, &by_b_as_a), Reject::BadSignature);
    let by_a_as_b = sign("RS256", RSA_A, Some("b"), &c);
    assert_eq!(refused(&cfg, &by_a_as_b), Reject::BadSignature);
    let unknown = sign("RS256", RSA_A, Some("zzz"), &c);
    assert_eq!(refused(&cfg, &unknown), Reject::UnknownKid);
    // Kids are compared exactly.
    let upper = sign("RS256", RSA_A, Some("A"), &c);
    assert_eq!(refused(&cfg, &upper), Reject::UnknownKid);

    // alg: a key bound to RS256 verifies nothing else.
    let cfg = one(vec![with(jwk("rsa-a", "a"), json!({"alg": "RS256"}))]);
    accepted(&cfg, &sign("RS256", RSA_A, Some("a"), &c));
    for alg in ["RS384", "RS512", "PS256", "PS384", "PS512"] {
        let t = sign(alg, RSA_A, Some("a"), &c);
        assert_eq!(refused(&cfg, &t), Reject::BadSignature, "{alg}");
        let t = sign(alg, RSA_A, None, &c);
        assert_eq!(refused(&cfg, &t), Reject::BadSignature, "{alg}");
    }
    let cfg = one(vec![with(jwk("rsa-a", "a"), json!({"alg": "PS384"}))]);
    accepted(&cfg, &sign("PS384", RSA_A, Some("a"), &c));
    assert_eq!(
        refused(&cfg, &sign("RS384", RSA_A, Some("a"), &c)),
        Reject::BadSignature
    );
    // An EC key verifies only its own curve's algorithm.
    let cfg = one(vec![jwk("ec256", "ec")]);
    let es384 = sign("ES384", EC384, Some("ec"), &c);
    assert_eq!(refused(&cfg, &es384), Reject::BadSignature);

    // use: "sig" (or absent) keys only; an "enc" key is not there at all.
    let cfg = one(vec![
        with(jwk("rsa-a", "enc"), json!({"use": "enc"})),
        with(jwk("rsa-a", "sig"), json!({"use": "sig"})),
        jwk("rsa-b", "b"),
    ]);
    assert_eq!(inline_keys(&cfg, 0).skipped.len(), 1);
    assert_eq!(
        refused(&cfg, &sign("RS256", RSA_A, Some("enc"), &c)),
        Reject::UnknownKid
    );
    accepted(&cfg, &sign("RS256", RSA_A, Some("sig"), &c));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_token_without_kid_is_checked_against_every_suitable_key() {
    let c = claims(json!({}));
    let cfg = one(vec![
        jwk("ec256", "ec"),
        jwk("rsa-b", "b"),
        with(jwk("rsa-b", "b-ps"), json!({"alg": "PS256"})),
        jwk("rsa-a", "a"),
        oct("hmac", SECRET),
    ]);
    let token = sign("RS256", RSA_A, None, &c);
    let parsed = token::parse(&token, 8192).unwrap();
    let keys = inline_keys(&cfg, 0);
    let candidates = verify::candidate_keys(&parsed, keys).unwrap();
    let kids: Vec<&str> = candidates
        .iter()
        .map(|k| k.kid.as_deref().unwrap())
        .collect();
    assert_eq!(kids, ["b", "a"], "RSA keys not bound to another alg");

    let host = FakeBoring::default();
    let v = run(&cfg, &token, NOW, &host).unwrap();
    assert_eq!(v.key_fingerprint, fingerprint(&cfg, "a"));
    assert_eq!(host.calls.borrow().len(), 2, "rsa-b tried, then rsa-a");
    assert_eq!(
        check(&cfg, &token).unwrap().key_fingerprint,
        fingerprint(&cfg, "a")
    );

    // Keys without kid serve tokens without kid.
    let mut anonymous = jwk("rsa-a", "");
    anonymous.as_object_mut().unwrap().remove("kid");
    let cfg = one(vec![jwk("rsa-b", "b"), anonymous]);
    accepted(&cfg, &token);
    // Signed by no configured key.
    let cfg = one(vec![jwk("rsa-b", "b"), jwk("ec256", "ec")]);
    assert_eq!(refused(&cfg, &token), Reject::BadSignature);

    // The direct answer of candidate_keys.
    let with_kid = sign("RS256", RSA_A, Some("ec"), &c);
    let parsed = token::parse(&with_kid, 8192).unwrap();
    assert_eq!(
        verify::candidate_keys(&parsed, inline_keys(&cfg, 0)).unwrap_err(),
        Reject::BadSignature,
        "the kid's key is not RSA"
    );
    let with_kid = sign("RS256", RSA_A, Some("nope"), &c);
    let parsed = token::parse(&with_kid, 8192).unwrap();
    assert_eq!(
        verify::candidate_keys(&parsed, inline_keys(&cfg, 0)).unwrap_err(),
        Reject::UnknownKid
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn jku_x5u_jwk_and_x5c_in_the_header_are_never_used() {
    let c = claims(json!({}));
    let cfg = one(vec![jwk("rsa-a", "a"), oct("hmac", SECRET)]);
    let attacker_jwk = jwk("rsa-b", "a").to_string();
    let metadata = || {
        KeyMetadata::default()
            .with_key_set_url("https://attacker.example/jwks.json")
            .with_certificate_url("https://attacker.example/cert.pem")
            .with_public_key(attacker_jwk.clone())
    };
    // Signed by the attacker, pointing at the attacker's key: refused.
    for kid in [Some("a"), None] {
        let forged = sign_head(
            "RS256",
            RSA_B,
            Head {
                kid,
                metadata: Some(metadata()),
                ..Head::default()
            },
            &c,
        );
        let header: Value = serde_json::from_slice(&unb64(&segments(&forged)[0])).unwrap();
        assert!(header.get("jku").is_some() && header.get("jwk").is_some());
        assert_eq!(refused(&cfg, &forged), Reject::BadSignature);
    }
    let forged = sign_head(
        "RS256",
        RSA_B,
        Head {
            kid: Some("attacker"),
            metadata: Some(metadata()),
            ..Head::default()
        },
        &c,
    );
    assert_eq!(refused(&cfg, &forged), Reject::UnknownKid);

    // The same headers on a token the configured key signed change nothing.
    let good = sign_head(
        "RS256",
        RSA_A,
        Head {
            kid: Some("a"),
            metadata: Some(metadata()),
            ..Head::default()
        },
        &c,
    );
    accepted(&cfg, &good);

    // An HMAC token carrying the attacker's oct key as jwk, and x5c.
    let header = json!({
        "alg": "HS256",
        "kid": "hmac",
        "jwk": {"kty": "oct", "k": b64(ATTACKER_SECRET)},
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": [STANDARD.encode(RSA_A_SPKI)],
    })
    .to_string();
    let forged = hs256_raw(ATTACKER_SECRET, &header, &c.to_string());
    // A `jwk` object is refused before any key is tried (see
    // a_header_jwk_object_is_refused_on_every_path).
    assert_eq!(
        refused(&cfg, &forged),
        Reject::Malformed("unsupported header member")
    );
}

/// A correctly signed token whose header carries a `jwk` object (as RFC 7515
/// defines it) is refused on every path. jwt-simple reads `jwk` as a string
/// and fails on the object, so the pre-parse refuses it first: one decision
/// whichever path checks the signature. Envoy's jwt_authn accepts it (an
/// intended difference, listed in docs/jwt-auth.md).
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_header_jwk_object_is_refused_on_every_path() {
    let c = claims(json!({}));
    let cfg = one(vec![oct("hmac", SECRET)]);
    let header = json!({
        "alg": "HS256",
        "kid": "hmac",
        "jwk": {"kty": "oct", "k": b64(ATTACKER_SECRET)},
    })
    .to_string();
    let good = hs256_raw(SECRET, &header, &c.to_string());
    assert_eq!(
        refused(&cfg, &good),
        Reject::Malformed("unsupported header member")
    );
}

/// jwt-simple reads `sub`, `jti` and `nonce` as strings and fails on any
/// other type, after the signature checked out. So an RS256 token with
/// `"sub": 42` passes through the host's `verify_signature` but is refused
/// (as a bad signature) on the jwt-simple fallback, and PS*, EdDSA and HS*
/// always refuse it: jwt-simple's defaults tighten the spec on one path only.
/// The pre-parse refuses these types on every path (Envoy's jwt_authn
/// refuses a non-string `sub` or `jti` too).
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn claim_types_decide_the_same_on_every_path() {
    let cfg = one(all_keys());
    // The signatures are genuine, so BoringSSL would say yes: a host that
    // says yes stands in for it (FakeBoring's own check goes through
    // jwt-simple, claims and all).
    let boring = FakeBoring {
        forced: Some(true),
        ..FakeBoring::default()
    };
    for patch in [json!({"sub": 42}), json!({"jti": 1}), json!({"nonce": {}})] {
        let mut answers = Vec::new();
        for alg in ["RS256", "ES256"] {
            let token = token_of(alg, true, &claims(patch.clone()));
            answers.push((alg, "host", run(&cfg, &token, NOW, &boring).map(|_| ())));
            answers.push((alg, "jwt-simple", check(&cfg, &token).map(|_| ())));
        }
        for alg in ["PS256", "EdDSA", "HS256"] {
            let token = token_of(alg, true, &claims(patch.clone()));
            answers.push((alg, "jwt-simple", check(&cfg, &token).map(|_| ())));
        }
        assert!(
            answers.iter().all(|a| a.2 == answers[0].2),
            "{patch}: {answers:?}"
        );
        assert!(answers[0].2.is_err(), "{patch}: {answers:?}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn ecdsa_signatures_out_of_range_are_refused() {
    let cfg = one(all_keys());
    for (alg, order) in [
        ("ES256", &jwt_auth::der::P256_ORDER[..]),
        ("ES384", &jwt_auth::der::P384_ORDER[..]),
    ] {
        let token = token_of(alg, true, &claims(json!({})));
        let s = segments(&token);
        let sig = unb64(&s[2]);
        let half = order.len();
        assert_eq!(sig.len(), 2 * half);
        let (r, sv) = sig.split_at(half);
        let zero = vec![0u8; half];
        let ones = vec![0xffu8; half];
        let mut n_plus_1 = order.to_vec();
        *n_plus_1.last_mut().unwrap() += 1;
        let bad: Vec<(&str, Vec<u8>)> = vec![
            ("r = 0", [&zero[..], sv].concat()),
            ("s = 0", [r, &zero[..]].concat()),
            ("r = s = 0", [&zero[..], &zero[..]].concat()),
            ("r = n", [order, sv].concat()),
            ("s = n", [r, order].concat()),
            ("s = n + 1", [r, &n_plus_1[..]].concat()),
            ("r = 2^k - 1", [&ones[..], sv].concat()),
            ("s = 2^k - 1", [r, &ones[..]].concat()),
            ("short", sig[..2 * half - 1].to_vec()),
            ("long", [&sig[..], &[0]].concat()),
            ("empty s", r.to_vec()),
        ];
        for (what, raw) in bad {
            let forged = format!("{}.{}.{}", s[0], s[1], b64(&raw));
            let host = FakeBoring::default();
            let r = run(&cfg, &forged, NOW, &host);
            assert_eq!(
                r.unwrap_err(),
                Reject::Malformed("bad ECDSA signature"),
                "{alg} {what}"
            );
            assert!(host.calls.borrow().is_empty(), "{alg} {what}: never sent");
            assert!(check(&cfg, &forged).is_err(), "{alg} {what}");
        }
        // A DER signature where JWS wants raw r‖s.
        let der = jwt_auth::der::ecdsa_raw_to_der(&sig, order).unwrap();
        let forged = format!("{}.{}.{}", s[0], s[1], b64(&der));
        assert!(both(&cfg, &forged).is_err(), "{alg} DER");
    }
}

// ---------------------------------------------------------------------------
// Malformed tokens
// ---------------------------------------------------------------------------

fn hs_config() -> Config {
    one(vec![oct("hmac", SECRET)])
}

/// A valid HS256 token with this header text and [`claims`].
fn hs_with_header(header: &str) -> String {
    hs256_raw(SECRET, header, &claims(json!({})).to_string())
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_token_needs_exactly_three_non_empty_segments() {
    let cfg = hs_config();
    let good = hs_with_header(r#"{"alg":"HS256"}"#);
    accepted(&cfg, &good);
    let s = segments(&good);
    for bad in [
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        s[0].clone(),
        format!("{}.{}", s[0], s[1]),
        format!("{}.{}.", s[0], s[1]),
        format!("{}..{}", s[0], s[2]),
        format!(".{}.{}", s[1], s[2]),
        format!("{good}."),
        format!("{good}.{}", s[2]),
        // A JWE has five.
        format!("{}.{}.{}.{}.{}", s[0], s[1], s[2], s[1], s[2]),
        format!(" {good}"),
    ] {
        let r = token::parse(&bad, 8192);
        assert!(is_malformed(&r), "{bad:?}: {r:?}");
        assert!(is_malformed(&check(&cfg, &bad)), "{bad:?}");
    }
    assert_eq!(
        token::parse("a.b", 100).unwrap_err(),
        Reject::Malformed("expected three segments")
    );
}

/// `segment` with its (zero) trailing bits made non-zero: the same bytes to
/// a lenient decoder.
fn with_trailing_bits(segment: &str) -> String {
    assert_ne!(segment.len() % 4, 0, "{segment} has no trailing bits");
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *segment.as_bytes().last().unwrap();
    let v = ABC.iter().position(|c| *c == last).unwrap();
    assert_eq!(v & 1, 0);
    let mut out = segment[..segment.len() - 1].to_string();
    out.push(char::from(ABC[v | 1]));
    // Lenient decoders agree it is the same data.
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    assert_eq!(lenient.decode(&out).unwrap(), unb64(segment));
    out
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn base64url_must_be_canonical() {
    let cfg = hs_config();
    // Header and payload texts whose encodings have trailing bits: 16 and 17
    // bytes leave 4 and 2.
    let header = r#"{"alg":"HS256"} "#;
    assert_eq!(header.len() % 3, 1);
    let payload = format!("{}  ", claims(json!({})));
    let payload = if payload.len() % 3 == 0 {
        format!("{payload} ")
    } else {
        payload
    };
    let good = hs256_raw(SECRET, header, &payload);
    accepted(&cfg, &good);
    let s = segments(&good);
    let pad = |seg: &str| format!("{seg}{}", "=".repeat((4 - seg.len() % 4) % 4));
    let mut bad: Vec<(&str, String)> = vec![
        ("padded header", format!("{}.{}.{}", pad(&s[0]), s[1], s[2])),
        (
            "padded payload",
            format!("{}.{}.{}", s[0], pad(&s[1]), s[2]),
        ),
        (
            "padded signature",
            format!("{}.{}.{}", s[0], s[1], pad(&s[2])),
        ),
        (
            "trailing bits in header",
            format!("{}.{}.{}", with_trailing_bits(&s[0]), s[1], s[2]),
        ),
        (
            "trailing bits in payload",
            format!("{}.{}.{}", s[0], with_trailing_bits(&s[1]), s[2]),
        ),
        (
            "trailing bits in signature",
            format!("{}.{}.{}", s[0], s[1], with_trailing_bits(&s[2])),
        ),
        (
            "standard alphabet",
            format!(
                "{}.{}.{}",
                s[0],
                s[1],
                s[2].replace('-', "+").replace('_', "/")
            ),
        ),
        ("stray =", format!("{}=.{}.{}", &s[0], s[1], s[2])),
        (
            "impossible length",
            format!("{}AAA.{}.{}", s[0], s[1], s[2]),
        ),
    ];
    // A bad character at a few places in each segment.
    for c in ['+', '/', '!', ' ', '*', '\n', '%', 'é'] {
        for seg in 0..3 {
            let mut parts = s.clone();
            let mid = parts[seg].len() / 2;
            parts[seg].replace_range(mid..mid + 1, &c.to_string());
            bad.push(("bad character", parts.join(".")));
        }
    }
    for (what, token) in bad {
        if token == good {
            continue;
        }
        let r = token::parse(&token, 8192);
        assert!(is_malformed(&r), "{what}: {token}: {r:?}");
        assert!(check(&cfg, &token).is_err(), "{what}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn header_and_payload_must_be_json_objects() {
    let cfg = hs_config();
    let c = claims(json!({})).to_string();
    for header in [
        "[]",
        r#"["alg","HS256"]"#,
        r#""HS256""#,
        "1",
        "null",
        "true",
        "",
        "{",
        r#"{"alg":"HS256"} x"#,
        r#"{"alg":"HS256"}{}"#,
        "\u{feff}{\"alg\":\"HS256\"}",
        "{'alg':'HS256'}",
        "\u{0}",
    ] {
        let token = hs256_raw(SECRET, header, &c);
        let r = token::parse(&token, 8192);
        assert!(is_malformed(&r), "header {header:?}: {r:?}");
        assert!(is_malformed(&check(&cfg, &token)), "header {header:?}");
    }
    for payload in [
        "[]",
        &format!("[{c}]"),
        r#""sub""#,
        "1",
        "null",
        "",
        &format!("{c} x"),
        &format!("{c}{c}"),
        &c[..c.len() - 1],
    ] {
        let token = hs256_raw(SECRET, r#"{"alg":"HS256"}"#, payload);
        let r = token::parse(&token, 8192);
        assert!(is_malformed(&r), "payload {payload:?}: {r:?}");
        assert!(is_malformed(&check(&cfg, &token)), "payload {payload:?}");
    }
    // Whitespace around the object is JSON; the token is fine.
    let token = hs256_raw(SECRET, " {\"alg\":\"HS256\"}\n", &format!("\t{c} "));
    accepted(&cfg, &token);
    // Not UTF-8.
    let input = format!(
        "{}.{}",
        b64(r#"{"alg":"HS256"}"#),
        b64([0xff, 0xfe, b'{', b'}'])
    );
    let token = format!(
        "{input}.{}",
        b64(hmac_sha256::HMAC::mac(input.as_bytes(), SECRET))
    );
    assert!(is_malformed(&check(&cfg, &token)));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn duplicate_names_are_refused() {
    let cfg = hs_config();
    let base = claims(json!({"iss": null})).to_string();
    let base = &base[1..base.len() - 1];
    for payload in [
        format!(r#"{{"iss":"https://evil.example","iss":"{ISS}",{base}}}"#),
        format!(r#"{{"iss":"{ISS}","iss":"{ISS}",{base}}}"#),
        format!(r#"{{"iss":"{ISS}",{base},"sub":"admin"}}"#),
        format!(r#"{{"iss":"{ISS}",{base},"exp":{}}}"#, NOW + 10),
        // Names equal once unescaped.
        format!(r#"{{"iss":"{ISS}",{base},"s\u0075b":"admin"}}"#),
    ] {
        let token = hs256_raw(SECRET, r#"{"alg":"HS256"}"#, &payload);
        let r = token::parse(&token, 8192);
        assert_eq!(
            r.unwrap_err(),
            Reject::Malformed("bad payload"),
            "{payload}"
        );
        assert!(is_malformed(&check(&cfg, &token)));
    }
    for header in [
        r#"{"alg":"HS256","alg":"none"}"#,
        r#"{"alg":"HS256","alg":"HS256"}"#,
        r#"{"alg":"HS256","kid":"a","kid":"hmac"}"#,
        r#"{"alg":"HS256","typ":"JWT","typ":"JWT"}"#,
    ] {
        let token = hs_with_header(header);
        let r = token::parse(&token, 8192);
        assert_eq!(r.unwrap_err(), Reject::Malformed("bad header"), "{header}");
    }
    // The control: unique names, same claims.
    let payload = format!(r#"{{"iss":"{ISS}",{base}}}"#);
    accepted(&cfg, &hs256_raw(SECRET, r#"{"alg":"HS256"}"#, &payload));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_token_over_max_token_bytes_is_refused() {
    let cfg = one_with(
        vec![oct("hmac", SECRET), jwk("rsa-a", "a")],
        json!({"maxTokenBytes": 400}),
    );
    assert_eq!(cfg.providers[0].max_token_bytes, 400);
    // Pad the header (whitespace) and a claim until the token is exactly
    // 400, then 401, bytes long.
    let sized = |len: usize| {
        for spaces in 0..3 {
            for pad in 0..400 {
                let header = format!("{{\"alg\":\"HS256\"}}{}", " ".repeat(spaces));
                let payload = claims(json!({"pad": "x".repeat(pad)})).to_string();
                let t = hs256_raw(SECRET, &header, &payload);
                if t.len() == len {
                    return t;
                }
            }
        }
        panic!("no token of {len} bytes");
    };
    let at = sized(400);
    assert_eq!(at.len(), 400);
    accepted(&cfg, &at);
    let over = sized(401);
    assert_eq!(over.len(), 401);
    assert_eq!(refused(&cfg, &over), Reject::Malformed("token too large"));
    assert_eq!(
        token::parse(&over, 400).unwrap_err(),
        Reject::Malformed("token too large")
    );
    // Far over: refused before anything is decoded.
    let huge = format!("{}.{}.{}", "A".repeat(100_000), "A".repeat(100_000), "A");
    assert_eq!(
        token::parse(&huge, 8192).unwrap_err(),
        Reject::Malformed("token too large")
    );
    // The default, 8192.
    let cfg = one(vec![oct("hmac", SECRET)]);
    let big = hs(
        "HS256",
        SECRET,
        None,
        &claims(json!({"pad": "x".repeat(8192)})),
    );
    assert_eq!(
        check(&cfg, &big).unwrap_err(),
        Reject::Malformed("token too large")
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn alg_none_is_refused_in_any_casing() {
    let cfg = one(all_keys());
    let c = claims(json!({})).to_string();
    for alg in ["none", "None", "NONE", "nOnE", "noNE"] {
        for kid in [None, Some("hmac"), Some("rsa-a")] {
            let mut header = json!({"alg": alg, "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = kid.into();
            }
            let input = format!("{}.{}", b64(header.to_string()), b64(&c));
            for sig in [
                "",
                "AAAA",
                &b64(hmac_sha256::HMAC::mac(input.as_bytes(), SECRET)),
            ] {
                let token = format!("{input}.{sig}");
                let r = token::parse(&token, 8192);
                if sig.is_empty() {
                    assert!(is_malformed(&r), "{alg} empty signature");
                } else {
                    assert_eq!(
                        r.unwrap_err(),
                        Reject::Malformed("alg none is not allowed"),
                        "{alg}"
                    );
                }
                assert!(is_malformed(&check(&cfg, &token)), "{alg} {sig}");
            }
        }
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn only_the_listed_algorithms_exist_and_names_are_exact() {
    let cfg = one(all_keys());
    for alg in [
        "rs256",
        "Rs256",
        "hs256",
        "eddsa",
        "EDDSA",
        "Ed25519",
        "ES512",
        "ES256K",
        "HS1",
        "RS1",
        "PS256 ",
        " RS256",
        "RSA-OAEP",
        "dir",
        "A128KW",
        "",
        "ML-DSA-44",
    ] {
        let token = hs_with_header(&json!({"alg": alg, "kid": "hmac"}).to_string());
        assert_eq!(
            token::parse(&token, 8192).unwrap_err(),
            Reject::Malformed("unsupported alg"),
            "{alg:?}"
        );
        assert!(is_malformed(&check(&cfg, &token)));
    }
    for header in [
        json!({"kid": "hmac"}),
        json!({"alg": null}),
        json!({"alg": 256}),
        json!({"alg": ["HS256"]}),
    ] {
        let token = hs_with_header(&header.to_string());
        let r = token::parse(&token, 8192);
        assert!(is_malformed(&r), "{header}: {r:?}");
    }
    for alg in ASYMMETRIC.iter().chain(&HMAC) {
        assert!(Alg::from_name(alg).is_some(), "{alg}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn typ_may_be_absent_jwt_or_at_jwt_in_any_case() {
    let cfg = one(all_keys());
    let c = claims(json!({}));
    for typ in [
        None,
        Some("JWT"),
        Some("jwt"),
        Some("Jwt"),
        Some("at+jwt"),
        Some("AT+JWT"),
        Some("At+Jwt"),
    ] {
        let mut header = json!({"alg": "HS256", "kid": "hmac"});
        if let Some(t) = typ {
            header["typ"] = t.into();
        }
        accepted(&cfg, &hs_with_header(&header.to_string()));
        if let Some(t) = typ {
            // And on the jwt-simple and host paths of the other algorithms.
            for alg in ["RS256", "PS256", "ES256", "EdDSA"] {
                let (pem, kid) = key_for(alg);
                let token = sign_head(
                    alg,
                    pem,
                    Head {
                        kid: Some(kid),
                        typ: Some(t),
                        ..Head::default()
                    },
                    &c,
                );
                accepted(&cfg, &token);
            }
        }
    }
    for typ in [
        json!("JWS"),
        json!("JOSE"),
        json!("JOSE+JSON"),
        json!("dpop+jwt"),
        json!("secevent+jwt"),
        json!("application/at+jwt"),
        json!("at+JWT "),
        json!(""),
        json!(null),
        json!(1),
        json!(["JWT"]),
        json!({"typ": "JWT"}),
    ] {
        let header = json!({"alg": "HS256", "kid": "hmac", "typ": typ});
        let token = hs_with_header(&header.to_string());
        assert_eq!(
            token::parse(&token, 8192).unwrap_err(),
            Reject::Malformed("unsupported typ"),
            "{typ}"
        );
        assert!(is_malformed(&check(&cfg, &token)));
    }
    // On a token jwt-simple signed too.
    let token = sign_head(
        "RS256",
        RSA_A,
        Head {
            kid: Some("rsa-a"),
            typ: Some("dpop+jwt"),
            ..Head::default()
        },
        &c,
    );
    assert_eq!(refused(&cfg, &token), Reject::Malformed("unsupported typ"));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn crit_is_refused() {
    let cfg = hs_config();
    for crit in [
        json!(["exp"]),
        json!(["b64"]),
        json!(["http://example.com/ext"]),
        json!([]),
        json!("exp"),
        json!(null),
        json!({}),
    ] {
        let header = json!({"alg": "HS256", "crit": crit, "exp": NOW, "b64": true});
        let token = hs_with_header(&header.to_string());
        assert_eq!(
            token::parse(&token, 8192).unwrap_err(),
            Reject::Malformed("unsupported crit"),
            "{crit}"
        );
        assert!(is_malformed(&check(&cfg, &token)));
    }
    // Unknown non-critical header members are ignored.
    let header = json!({"alg": "HS256", "exp": NOW, "b64": true, "cty": "JWT", "x-custom": [1]});
    accepted(&cfg, &hs_with_header(&header.to_string()));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn header_kid_iss_and_aud_must_be_well_typed() {
    let cfg = hs_config();
    for kid in [json!(1), json!(null), json!(["hmac"]), json!({})] {
        let token = hs_with_header(&json!({"alg": "HS256", "kid": kid}).to_string());
        assert_eq!(
            token::parse(&token, 8192).unwrap_err(),
            Reject::Malformed("kid must be a string"),
            "{kid}"
        );
        assert!(is_malformed(&check(&cfg, &token)));
    }
    for (patch, why) in [
        (json!({"iss": 1}), "iss must be a string"),
        (json!({"iss": [ISS]}), "iss must be a string"),
        (json!({"aud": 1}), "aud must be a string or strings"),
        (
            json!({"aud": ["api", 1]}),
            "aud must be a string or strings",
        ),
        (
            json!({"aud": {"api": true}}),
            "aud must be a string or strings",
        ),
        (
            json!({"aud": ["api", null]}),
            "aud must be a string or strings",
        ),
    ] {
        let token = hs256_raw(
            SECRET,
            r#"{"alg":"HS256"}"#,
            &claims(patch.clone()).to_string(),
        );
        assert_eq!(
            token::parse(&token, 8192).unwrap_err(),
            Reject::Malformed(why),
            "{patch}"
        );
        assert!(is_malformed(&check(&cfg, &token)));
    }
}

// ---------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn exp_is_required_unless_require_expiration_is_false() {
    let no_exp = claims(json!({"exp": null}));
    for alg in ["RS256", "ES256", "PS256", "HS256"] {
        let token = token_of(alg, true, &no_exp);
        let cfg = one(all_keys());
        assert_eq!(
            refused(&cfg, &token),
            Reject::Malformed("missing exp"),
            "{alg}"
        );
        let cfg = one_with(all_keys(), json!({"requireExpiration": false}));
        let v = accepted(&cfg, &token);
        assert_eq!(v.exp, None);
        // Still checked when present.
        let expired = token_of(alg, true, &claims(json!({"exp": NOW - 3600})));
        assert_eq!(refused(&cfg, &expired), Reject::Expired, "{alg}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn time_claims_must_be_integers_in_range() {
    let cfg = one_with(
        vec![oct("hmac", SECRET)],
        json!({"requireExpiration": false}),
    );
    for name in ["exp", "nbf", "iat"] {
        for bad in [
            json!(1_700_000_000.0),
            json!(1_700_000_000.5),
            json!(1.7e9),
            json!(1.0e20),
            json!("1700000000"),
            json!(-1),
            json!(-1_700_000_000i64),
            json!(MAX_TIME + 1),
            json!(u64::MAX),
            json!(true),
            json!(null),
            json!([NOW]),
            json!({"t": NOW}),
        ] {
            let mut c = claims(json!({}));
            c[name] = bad.clone();
            let token = hs256_raw(SECRET, r#"{"alg":"HS256"}"#, &c.to_string());
            assert_eq!(
                token::parse(&token, 8192).unwrap_err(),
                Reject::Malformed("time claims must be integers in range"),
                "{name} = {bad}"
            );
            assert!(is_malformed(&check(&cfg, &token)));
        }
        // 0 and MAX_TIME are in range.
        for good in [0, MAX_TIME] {
            let mut c = claims(json!({}));
            c[name] = good.into();
            let token = hs256_raw(SECRET, r#"{"alg":"HS256"}"#, &c.to_string());
            let parsed = token::parse(&token, 8192).unwrap();
            let value = match name {
                "exp" => parsed.exp,
                "nbf" => parsed.nbf,
                _ => parsed.iat,
            };
            assert_eq!(value, Some(good), "{name}");
        }
    }
    // In range on both ends: a far exp is fine (on both paths).
    let c = claims(json!({"exp": MAX_TIME}));
    let token = hs256_raw(SECRET, r#"{"alg":"HS256"}"#, &c.to_string());
    accepted(&cfg, &token);
    let cfg = one(all_keys());
    for alg in ["RS256", "ES256"] {
        accepted(&cfg, &token_of(alg, true, &c));
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn time_claims_are_checked_with_the_clock_skew() {
    for (skew, secs) in [("60s", 60u64), ("0s", 0), ("5m", 300)] {
        let cfg = one_with(all_keys(), json!({"clockSkew": skew}));
        assert_eq!(cfg.providers[0].clock_skew.as_secs(), secs);
        let cases = [
            (json!({"exp": NOW - secs}), Ok(())),
            (json!({"exp": NOW - secs - 1}), Err(Reject::Expired)),
            (json!({"exp": NOW}), Ok(())),
            (json!({"nbf": NOW + secs}), Ok(())),
            (json!({"nbf": NOW + secs + 1}), Err(Reject::NotYetValid)),
            (json!({"nbf": 0}), Ok(())),
            (json!({"iat": NOW + secs}), Ok(())),
            (json!({"iat": NOW + secs + 1}), Err(Reject::IssuedInFuture)),
            (json!({"iat": 0}), Ok(())),
        ];
        // jwt-simple (PS256, HS256) and the host (RS256, ES256) agree.
        for alg in ["RS256", "PS256", "ES256", "HS256"] {
            for (patch, want) in &cases {
                let token = token_of(alg, true, &claims(patch.clone()));
                let got = both(&cfg, &token).map(|_| ());
                assert_eq!(&got, want, "{alg} skew {skew}: {patch}");
            }
        }
        // check_claims alone.
        let token = token_of("HS256", true, &claims(json!({"exp": NOW - secs - 1})));
        let parsed = token::parse(&token, 8192).unwrap();
        assert_eq!(
            verify::check_claims(&parsed, &cfg.providers[0], NOW),
            Err(Reject::Expired)
        );
        assert_eq!(
            verify::check_claims(&parsed, &cfg.providers[0], NOW - 1),
            Ok(())
        );
    }
}

/// A huge clockSkew ("1000000h") would overflow jwt-simple's fixed-point
/// time arithmetic and make tokens valid for ages: the config bounds it.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_huge_clock_skew_is_refused_by_the_config() {
    for skew in ["1000000h", "61m"] {
        let json = config_json(vec![with(
            provider("p", all_keys()),
            json!({"clockSkew": skew}),
        )]);
        let e = config::compile_json(Some(json.as_bytes())).unwrap_err();
        assert_eq!(e.path, "providers[0].clockSkew", "{e}");
        assert!(e.message.contains("at most 1h"), "{e}");
    }
    let json = config_json(vec![with(
        provider("p", all_keys()),
        json!({"clockSkew": "1h"}),
    )]);
    let cfg = config::compile_json(Some(json.as_bytes())).unwrap();
    for alg in ["HS256", "PS256", "EdDSA"] {
        accepted(&cfg, &token_of(alg, true, &claims(json!({}))));
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn the_issuer_must_equal_the_providers() {
    let cfg = one(all_keys());
    for iss in [
        json!(null),
        json!("https://issuer.example.com/realms/app/"),
        json!("https://ISSUER.example.com/realms/app"),
        json!("https://issuer.example.com/realms/ap"),
        json!(" https://issuer.example.com/realms/app"),
        json!(""),
    ] {
        for alg in ["RS256", "HS256"] {
            let token = token_of(alg, true, &claims(json!({"iss": iss})));
            assert_eq!(refused(&cfg, &token), Reject::Issuer, "{alg} {iss}");
        }
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn the_provider_is_chosen_by_issuer_among_the_candidates() {
    let mut p = provider("p", vec![jwk("rsa-a", "a")]);
    let mut q = provider("q", vec![jwk("rsa-b", "b")]);
    p["issuer"] = "https://p.example".into();
    q["issuer"] = "https://q.example".into();
    let cfg = compile(&config_json(vec![p, q]));
    let for_q = sign(
        "RS256",
        RSA_B,
        Some("b"),
        &claims(json!({"iss": "https://q.example"})),
    );
    let parsed = token::parse(&for_q, 8192).unwrap();
    let (i, prov) = verify::provider_for(&parsed, &cfg.providers, &[0, 1]).unwrap();
    assert_eq!((i, prov.name.as_str()), (1, "q"));
    assert_eq!(
        verify::provider_for(&parsed, &cfg.providers, &[0]).unwrap_err(),
        Reject::Issuer
    );
    assert_eq!(
        verify::provider_for(&parsed, &cfg.providers, &[]).unwrap_err(),
        Reject::Issuer
    );
    assert_eq!(
        verify::provider_for(&parsed, &cfg.providers, &[7]).unwrap_err(),
        Reject::Issuer
    );
    let v = run(&cfg, &for_q, NOW, &FakeBoring::default()).unwrap();
    assert_eq!(v.provider, 1);
    // q's token signed with p's key: p's keys are not q's.
    let crossed = sign(
        "RS256",
        RSA_A,
        Some("a"),
        &claims(json!({"iss": "https://q.example"})),
    );
    assert_eq!(refused(&cfg, &crossed), Reject::UnknownKid);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn aud_must_share_a_value_with_the_audiences() {
    let cfg = one_with(
        all_keys(),
        json!({"audiences": ["api", "https://api.example"]}),
    );
    for (aud, ok) in [
        (json!("api"), true),
        (json!("https://api.example"), true),
        (json!(["other", "api"]), true),
        (json!(["https://api.example"]), true),
        (json!("API"), false),
        (json!("api "), false),
        (json!("other"), false),
        (json!(["other", "more"]), false),
        (json!([]), false),
        (json!(null), false),
    ] {
        for alg in ["RS256", "PS256", "HS256"] {
            let token = token_of(alg, true, &claims(json!({"aud": aud})));
            let got = both(&cfg, &token).map(|_| ());
            let want = if ok { Ok(()) } else { Err(Reject::Audience) };
            assert_eq!(got, want, "{alg} aud {aud}");
        }
    }
    // No audiences configured: any aud, or none, will do.
    let cfg = one_with(all_keys(), json!({"audiences": null}));
    for aud in [json!("anything"), json!(["a", "b"]), json!(null), json!([])] {
        let token = token_of("HS256", true, &claims(json!({"aud": aud})));
        accepted(&cfg, &token);
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn the_parse_keeps_what_the_filter_forwards() {
    let c = claims(json!({"roles": ["a", "b"], "n": 7, "admin": false}));
    let token = token_of("ES256", true, &c);
    let parsed = token::parse(&token, 8192).unwrap();
    assert_eq!(parsed.token, token);
    assert_eq!(parsed.payload_b64, segments(&token)[1]);
    assert_eq!(
        parsed.signing_input,
        format!("{}.{}", segments(&token)[0], segments(&token)[1])
    );
    assert_eq!(parsed.signature.len(), 64);
    assert_eq!(parsed.kid.as_deref(), Some("ec256"));
    assert_eq!(parsed.iss.as_deref(), Some(ISS));
    assert_eq!(parsed.aud, ["api"]);
    assert_eq!(
        (parsed.exp, parsed.iat, parsed.nbf),
        (Some(NOW + 3600), Some(NOW - 10), None)
    );
    assert_eq!(Value::Object(parsed.claims.clone()), payload_of(&token));

    // Reject texts are safe to show and name no token content.
    for r in [
        Reject::Missing,
        Reject::Malformed("bad header"),
        Reject::Expired,
        Reject::NotYetValid,
        Reject::IssuedInFuture,
        Reject::BadSignature,
        Reject::UnknownKid,
        Reject::Issuer,
        Reject::Audience,
        Reject::NoKeys,
    ] {
        let m = r.message();
        assert!(m.contains("Jw"), "{m}");
        assert!(!m.contains('"') && !m.contains('\\'), "{m}");
        assert!(!r.reason().is_empty());
    }
}
