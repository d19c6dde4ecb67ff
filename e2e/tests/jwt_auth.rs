//! The JWT filter in a real Envoy 1.40, with a JWKS server on loopback and
//! tokens minted by an independent JOSE implementation (jsonwebtoken).

use e2e::jose::{self, Alg, TestKeys};
use e2e::jwks_server::JwksServer;
use e2e::{Harness, Options};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A manifest directory with one jwt-auth WasmPlugin (phase AUTHN).
fn manifest_dir(name: &str, config: &Value) -> PathBuf {
    let dir = e2e::envoy::target_dir()
        .join("e2e-fixtures")
        .join(format!("jwt-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: jwt-auth\n  namespace: bookinfo\nspec:\n  url: oci://registry.example.com/mesh-filters/jwt-auth:0.1.0\n  pluginName: jwt-auth\n  phase: AUTHN\n  pluginConfig: {config}\n"
    );
    std::fs::write(dir.join("jwt-auth.yaml"), yaml).unwrap();
    dir
}

fn provider(extra: Value) -> Value {
    jose::patch(
        json!({
            "name": "test",
            "issuer": jose::ISSUER,
            "audiences": [jose::AUDIENCE],
            "jwksUri": "http://keys.test.svc.cluster.local:8080/jwks",
            "outputPayloadToHeader": "x-jwt-payload",
            "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}],
            "timeout": "2s"
        }),
        extra,
    )
}

fn config(provider: Value) -> Value {
    json!({
        "providers": [provider],
        "rules": [
            {"match": {"pathPrefix": "/healthz"}, "requires": "none"},
            {"match": {"pathPrefix": "/public"}, "requires": "optional"},
            {"match": {"pathPrefix": "/"}, "requires": ["test"]}
        ]
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn assert_no_trap(h: &Harness) {
    let log = h.log();
    for bad in ["Uncaught", "panic", "RuntimeError", "unreachable"] {
        assert!(
            !log.contains(bad),
            "Envoy log shows a Wasm trap ({bad}):\n{log}"
        );
    }
}

#[test]
fn valid_tokens_of_every_algorithm_pass_and_claims_reach_the_upstream() {
    let keys = TestKeys::load().unwrap();
    let jwks = JwksServer::start(keys.corpus_jwks()).unwrap();
    let h = Harness::start_with(
        &manifest_dir("algs", &config(provider(json!({})))),
        Options {
            jwks_server: Some(jwks),
            ..Options::default()
        },
    )
    .unwrap();
    for alg in Alg::ALL {
        if alg.kty() == "oct" {
            continue; // HS* needs an inline key; see the inline test.
        }
        let key = keys.alg(alg);
        let token = key.token(jose::patch(jose::claims(now()), json!({"sub": "alice"})));
        let auth = bearer(&token);
        let r = h
            .get("/api", &[("authorization", auth.as_bytes())])
            .unwrap();
        assert_eq!(r.status, 200, "{alg:?}: {}", r.body);
        let seen = &r.json()["headers"];
        assert_eq!(seen["x-jwt-sub"], "alice", "{alg:?}");
        assert_eq!(seen["x-jwt-payload"], jose::segments(&token)[1], "{alg:?}");
        assert!(
            seen.get("authorization").is_none(),
            "{alg:?}: the token must be stripped"
        );
    }
    assert_no_trap(&h);
}

#[test]
fn missing_and_invalid_tokens_get_401_and_unmatched_paths_403() {
    let keys = TestKeys::load().unwrap();
    let jwks = JwksServer::start(keys.corpus_jwks()).unwrap();
    let h = Harness::start_with(
        &manifest_dir("deny", &config(provider(json!({})))),
        Options {
            jwks_server: Some(jwks),
            ..Options::default()
        },
    )
    .unwrap();
    let r = h.get("/api", &[]).unwrap();
    assert_eq!(r.status, 401);
    let www = r.header("www-authenticate").unwrap();
    assert!(www.starts_with("Bearer realm="), "{www}");
    assert!(www.contains("error=\"invalid_token\""), "{www}");
    assert_eq!(r.json()["error"], "invalid_token");

    let r = h
        .get("/api", &[("authorization", b"Bearer not.a.token")])
        .unwrap();
    assert_eq!(r.status, 401);
    assert!(!r.body.contains("not.a.token"));
    assert_eq!(h.get("/healthz", &[]).unwrap().status, 200);
    assert_eq!(h.get("/public", &[]).unwrap().status, 200);
    assert_eq!(
        h.get("/public", &[("authorization", b"Bearer x.y.z")])
            .unwrap()
            .status,
        401
    );
    // CORS preflight passes without a token.
    let r = e2e::client::request(
        "OPTIONS",
        &h.url("/api"),
        &[
            ("origin", b"https://app.test"),
            ("access-control-request-method", b"GET"),
        ],
    )
    .unwrap();
    assert_ne!(r.status, 401);
    // Spoofed output headers never reach the upstream.
    let r = h
        .get(
            "/healthz",
            &[("x-jwt-sub", b"admin"), ("x-jwt-payload", b"e30")],
        )
        .unwrap();
    assert!(r.json()["headers"].get("x-jwt-sub").is_none(), "{}", r.body);
    assert!(
        r.json()["headers"].get("x-jwt-payload").is_none(),
        "{}",
        r.body
    );
    assert_no_trap(&h);
}
