//! The JWT filter in a real Envoy 1.40, with a JWKS server on loopback and
//! tokens minted by an independent JOSE implementation (jsonwebtoken).
//!
//! Covered: the whole token corpus (remote and inline keys), claim and
//! payload headers, token stripping per location, spoofed output headers,
//! non-UTF-8 header values, key rotation and the refetch cooldown, one JWKS
//! fetch per process, JWKS faults failing closed and recovering, the
//! verified-token cache and counters, and the module's size.

use e2e::jose::{self, Alg, TestKey, TestKeys};
use e2e::jwks_server::{JwksServer, Mode};
use e2e::{Harness, Options};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A manifest directory with one jwt-auth WasmPlugin (phase AUTHN).
fn manifest_dir(name: &str, config: &Value) -> PathBuf {
    e2e::manifest::write_test_plugin(&format!("jwt-{name}"), "jwt-auth", Some("AUTHN"), config)
        .unwrap()
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
    let traps = h.wasm_traps();
    assert!(traps.is_empty(), "Envoy log shows a Wasm trap: {traps:#?}");
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

// ------------------------------------------------------------------ helpers

/// Envoy's name for a counter the filter defines as `jwt_auth.<name>`
/// (proxy-wasm metrics live under `wasmcustom.`); 0 until first bumped.
fn counter(h: &Harness, name: &str) -> u64 {
    h.stat(&format!("wasmcustom.jwt_auth.{name}")).unwrap_or(0)
}

/// Connections each Envoy worker accepted so far (the listener binds port 0).
fn worker_connections(h: &Harness) -> [u64; 2] {
    [0, 1].map(|w| {
        h.stat(&format!(
            "listener.127.0.0.1_0.worker_{w}.downstream_cx_total"
        ))
        .unwrap_or(0)
    })
}

/// A GET on a new connection (`connection: close`), so that successive calls
/// land on either worker, as the kernel spreads new connections.
fn fresh(h: &Harness, path: &str, headers: &[(&str, &[u8])]) -> e2e::client::Response {
    let mut all = headers.to_vec();
    all.push(("connection", b"close"));
    h.get(path, &all).unwrap()
}

/// The status of `GET path` with the token as a bearer, on a new connection.
fn status_with(h: &Harness, path: &str, token: &str) -> u16 {
    fresh(h, path, &[("authorization", bearer(token).as_bytes())]).status
}

/// Polls `check` every 100 ms until it holds; panics after `timeout`.
/// Returns how long it took.
fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts Envoy with one jwt-auth plugin and `jwks` serving every `jwksUri`.
fn start(name: &str, config: &Value, jwks: JwksServer) -> Harness {
    Harness::start_with(
        &manifest_dir(name, config),
        Options {
            jwks_server: Some(jwks),
            ..Options::default()
        },
    )
    .unwrap()
}

/// The JWKS server behind `h`.
fn jwks(h: &Harness) -> &JwksServer {
    h.jwks.as_ref().unwrap()
}

/// A fresh RS256 token (rsa-a) with the default claims and a unique `jti`,
/// so that it is never a verified-token cache hit.
fn fresh_token(keys: &TestKeys) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let jti = format!("fresh-{}", N.fetch_add(1, Ordering::Relaxed));
    keys.alg(Alg::RS256)
        .token(jose::patch(jose::claims(now()), json!({ "jti": jti })))
}

/// A raw HTTP/1.1 GET on a new connection, for header bytes the client
/// library refuses to send (it will not send a non-UTF-8 `Authorization`).
/// Returns the status and the body.
fn raw_get(h: &Harness, path: &str, headers: &[(&str, &[u8])]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(h.listener).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n",
        h.listener
    )
    .into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request).unwrap();
    // Read until the response is complete: Envoy waits up to a second for
    // the client to close first (its delayed close), so EOF comes late.
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    for _ in 0..10_000 {
        let n = stream.read(&mut chunk).unwrap();
        response.extend_from_slice(&chunk[..n]);
        if n == 0 || complete(&response) {
            break;
        }
    }
    let split = head_end(&response).unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let mut body = response.get(split + 4..).unwrap_or_default().to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Where an HTTP/1.1 message's head ends (before the blank line).
fn head_end(response: &[u8]) -> Option<usize> {
    response.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Whether `response` holds a whole HTTP/1.1 response.
fn complete(response: &[u8]) -> bool {
    let Some(end) = head_end(response) else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    let body = &response[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|n| body.len() >= n)
}

/// A chunked HTTP/1.1 body's data.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || body.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[(eol + 4 + size).min(body.len())..];
    }
    out
}

/// The `alg` in a token's header, if it has a readable one.
fn header_alg(token: &str) -> Option<String> {
    let header = jose::b64_decode(jose::segments(token).first()?).ok()?;
    let header: Value = serde_json::from_slice(&header).ok()?;
    header["alg"].as_str().map(str::to_string)
}

/// Envoy's own limit on request headers (`max_request_headers_kb`, 60 KiB
/// by default): a longer token never reaches the filter; Envoy answers 431.
const ENVOY_MAX_HEADERS_BYTES: usize = 60 * 1024;

// -------------------------------------------------------------- the corpus

#[test]
fn the_whole_corpus_gets_its_decision_through_remote_and_inline_keys() {
    let keys = TestKeys::load().unwrap();
    // "remote": the corpus JWKS over HTTP, where oct keys are never taken.
    // "inline": the same document inline, where they are (HS* only inline).
    // Same issuer: the filter takes the first provider of the rule whose
    // issuer matches, so each has its own path.
    let remote = provider(json!({"name": "remote", "timeout": "5s"}));
    let inline = provider(json!({
        "name": "inline",
        "jwksUri": null,
        "jwks": keys.corpus_jwks(),
    }));
    let config = json!({
        "providers": [remote, inline],
        "rules": [
            {"match": {"pathPrefix": "/hs"}, "requires": ["inline"]},
            {"match": {"pathPrefix": "/"}, "requires": ["remote"]}
        ]
    });
    let h = start(
        "corpus",
        &config,
        JwksServer::start(keys.corpus_jwks()).unwrap(),
    );
    // The remote keys are in before the clock starts.
    let probe = fresh_token(&keys);
    wait_until(
        "the remote keys are fetched",
        Duration::from_secs(10),
        || status_with(&h, "/api", &probe) == 200,
    );

    let minted_at = now();
    let started = Instant::now();
    let corpus = jose::corpus(&keys, minted_at);
    let mut wrong = Vec::new();
    let mut oversized = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for t in &corpus {
        let hs = header_alg(&t.token).is_some_and(|a| a.starts_with("HS"));
        for (path, valid) in [("/api", t.valid && !hs), ("/hs", t.valid)] {
            let auth = bearer(&t.token);
            let r = h.get(path, &[("authorization", auth.as_bytes())]).unwrap();
            if t.token.len() > ENVOY_MAX_HEADERS_BYTES {
                // Refused by Envoy's codec before any filter runs.
                assert!(!t.valid, "{}", t.name);
                assert_eq!(r.status, 431, "{} on {path}", t.name);
                oversized.push(t.name.as_str());
                continue;
            }
            let expected = if valid { 200 } else { 401 };
            if r.status != expected {
                let message = r.json()["message"].as_str().unwrap_or_default().to_string();
                wrong.push(format!(
                    "{} on {path}: expected {expected}, got {} {message}",
                    t.name, r.status
                ));
                continue;
            }
            if valid {
                accepted += 1;
                let seen = &r.json()["headers"];
                assert_eq!(
                    seen["x-jwt-payload"],
                    jose::segments(&t.token)[1],
                    "{} on {path}",
                    t.name
                );
                assert!(seen.get("authorization").is_none(), "{}", t.name);
            } else {
                refused += 1;
                let www = r.header("www-authenticate").unwrap_or_default();
                assert!(
                    www.starts_with("Bearer realm=") && www.contains("error=\"invalid_token\""),
                    "{} on {path}: {www}",
                    t.name
                );
                assert_eq!(r.json()["error"], "invalid_token", "{}", t.name);
                // Nothing of the token or the keys comes back.
                let signature = jose::segments(&t.token).last().copied().unwrap_or_default();
                if signature.len() > 8 {
                    assert!(!r.body.contains(signature), "{}", t.name);
                    assert!(!www.contains(signature), "{}", t.name);
                }
                assert!(!r.body.contains(&jose::b64(jose::HMAC_SECRET)));
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "corpus: {} tokens, {} valid; {accepted} accepted and {refused} refused as expected; \
         {} over Envoy's header limit (431): {oversized:?}; {:?}",
        corpus.len(),
        corpus.iter().filter(|t| t.valid).count(),
        oversized.len(),
        elapsed
    );
    assert!(
        wrong.is_empty(),
        "{} decisions differ from the corpus:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The corpus keeps its decisions for 30 s after minting.
    assert!(
        now() < minted_at + 30,
        "the corpus run took {elapsed:?}: decisions at the skew edges are stale"
    );
    assert_no_trap(&h);
}

// --------------------------------------------------- on success, spoofing

/// Every output header of both providers in the locations test.
const OUTPUT_HEADERS: [&str; 10] = [
    "x-jwt-payload",
    "x-jwt-sub",
    "x-jwt-level",
    "x-jwt-ratio",
    "x-jwt-admin",
    "x-jwt-roles",
    "x-jwt-groups",
    "x-jwt-realm-roles",
    "x-jwt-missing",
    "x-keep-sub",
];

fn locations_config(keys: &TestKeys) -> Value {
    let claim = |header: &str, claim: &str| json!({"header": header, "claim": claim});
    json!({
        "providers": [
            provider(json!({
                "fromHeaders": [{"name": "Authorization", "prefix": "Bearer "}],
                "fromParams": ["access_token"],
                "fromCookies": ["token"],
                "outputClaimToHeaders": [
                    claim("x-jwt-sub", "sub"),
                    claim("x-jwt-level", "level"),
                    claim("x-jwt-ratio", "ratio"),
                    claim("x-jwt-admin", "admin"),
                    claim("x-jwt-roles", "roles"),
                    claim("x-jwt-groups", "groups"),
                    claim("x-jwt-realm-roles", "realm_access.roles"),
                    claim("x-jwt-missing", "missing"),
                ]
            })),
            {
                "name": "keep",
                "issuer": "https://keep.test",
                "jwks": jose::jwks(&[keys.alg(Alg::RS256)]),
                "forwardOriginalToken": true,
                "outputClaimToHeaders": [claim("x-keep-sub", "sub")]
            }
        ],
        "rules": [
            {"match": {"pathPrefix": "/healthz"}, "requires": "none"},
            {"match": {"pathPrefix": "/public"}, "requires": "optional"},
            {"match": {"pathPrefix": "/keep"}, "requires": ["keep"]},
            {"match": {"pathPrefix": "/"}, "requires": ["test"]}
        ]
    })
}

#[test]
fn claims_and_payload_reach_the_upstream_and_the_token_is_stripped_from_each_location() {
    let keys = TestKeys::load().unwrap();
    let rs = keys.alg(Alg::RS256);
    let h = start(
        "locations",
        &locations_config(&keys),
        JwksServer::start(keys.corpus_jwks()).unwrap(),
    );
    let claims = jose::patch(
        jose::claims(now()),
        json!({
            "sub": "alice",
            "level": 42,
            "ratio": 1.5,
            "admin": true,
            "roles": ["read", "write"],
            "groups": ["ops", 7, false],
            "realm_access": {"roles": ["a", "b"]},
        }),
    );
    let token = rs.token(claims.clone());
    let payload = jose::segments(&token)[1].to_string();
    let check_claims = |seen: &Value, how: &str| {
        for (header, value) in [
            ("x-jwt-sub", "alice"),
            ("x-jwt-level", "42"),
            ("x-jwt-ratio", "1.5"),
            ("x-jwt-admin", "true"),
            ("x-jwt-roles", "read,write"),
            ("x-jwt-groups", "ops,7,false"),
            ("x-jwt-realm-roles", "a,b"),
            ("x-jwt-payload", payload.as_str()),
        ] {
            assert_eq!(seen[header], value, "{how}: {header} in {seen}");
        }
        assert!(seen.get("x-jwt-missing").is_none(), "{how}: {seen}");
        let decoded = jose::b64_decode(seen["x-jwt-payload"].as_str().unwrap()).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&decoded).unwrap(),
            claims,
            "{how}"
        );
    };

    // Authorization: removed.
    let auth = bearer(&token);
    let r = h
        .get("/api", &[("authorization", auth.as_bytes())])
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    check_claims(&r.json()["headers"], "header");
    assert!(r.json()["headers"].get("authorization").is_none());

    // Query parameter: removed, the other parameters kept in order.
    let r = h
        .get(&format!("/api/x?a=1&access_token={token}&b=2"), &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    check_claims(&r.json()["headers"], "param");
    assert_eq!(r.json()["path"], "/api/x?a=1&b=2");
    let r = h.get(&format!("/api/x?access_token={token}"), &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["path"], "/api/x");

    // Cookie: removed, the other cookies kept.
    let cookie = format!("a=1; token={token}; b=2");
    let r = h.get("/api", &[("cookie", cookie.as_bytes())]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    check_claims(&r.json()["headers"], "cookie");
    assert_eq!(r.json()["headers"]["cookie"], "a=1; b=2");
    let cookie = format!("token={token}");
    let r = h.get("/api", &[("cookie", cookie.as_bytes())]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["headers"].get("cookie").is_none(), "{}", r.body);

    // forwardOriginalToken: kept, wherever it was.
    let keep = rs.token(jose::patch(
        jose::claims(now()),
        json!({"iss": "https://keep.test", "sub": "bob"}),
    ));
    let auth = bearer(&keep);
    let r = h
        .get("/keep", &[("authorization", auth.as_bytes())])
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["authorization"], auth);
    assert_eq!(r.json()["headers"]["x-keep-sub"], "bob");
    let path = format!("/keep?access_token={keep}&z=1");
    let r = h.get(&path, &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["path"], path);
    assert_no_trap(&h);
}

/// Output headers and the values the upstream must see.
type Outputs<'a> = &'a [(&'a str, &'a str)];

#[test]
fn spoofed_output_headers_never_reach_the_upstream_whatever_the_rule() {
    let keys = TestKeys::load().unwrap();
    let rs = keys.alg(Alg::RS256);
    let h = start(
        "spoof",
        &locations_config(&keys),
        JwksServer::start(keys.corpus_jwks()).unwrap(),
    );
    // Every output header, twice, one in capitals.
    let mut spoofed: Vec<(String, &[u8])> = Vec::new();
    for name in OUTPUT_HEADERS {
        spoofed.push((name.to_string(), b"spoofed"));
        spoofed.push((name.to_ascii_uppercase(), b"spoofed-again"));
    }
    // A token with a subject and nothing else the config outputs.
    let plain = rs.token(jose::patch(jose::claims(now()), json!({"sub": "carol"})));
    let keep = rs.token(jose::patch(
        jose::claims(now()),
        json!({"iss": "https://keep.test", "sub": "bob"}),
    ));
    let plain_auth = bearer(&plain);
    let keep_auth = bearer(&keep);
    // (case, path, bearer, output headers the upstream must see)
    let cases: [(&str, &str, Option<&str>, Outputs); 6] = [
        ("none", "/healthz", None, &[]),
        ("optional, no token", "/public", None, &[]),
        (
            "optional, token",
            "/public",
            Some(&plain_auth),
            &[("x-jwt-sub", "carol")],
        ),
        (
            "required, token",
            "/api",
            Some(&plain_auth),
            &[("x-jwt-sub", "carol")],
        ),
        (
            "other provider",
            "/keep",
            Some(&keep_auth),
            &[("x-keep-sub", "bob")],
        ),
        ("CORS preflight", "/api", None, &[]),
    ];
    for (what, path, auth, expected) in cases {
        let mut headers: Vec<(&str, &[u8])> =
            spoofed.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        if let Some(auth) = auth {
            headers.push(("authorization", auth.as_bytes()));
        }
        let method = if what == "CORS preflight" {
            headers.push(("origin", b"https://app.test"));
            headers.push(("access-control-request-method", b"GET"));
            "OPTIONS"
        } else {
            "GET"
        };
        let r = e2e::client::request(method, &h.url(path), &headers).unwrap();
        assert_eq!(r.status, 200, "{what}: {}", r.body);
        let seen = &r.json()["headers"];
        for name in OUTPUT_HEADERS {
            let want = expected.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
            if name == "x-jwt-payload" && what.ends_with(", token") {
                assert_eq!(seen[name], jose::segments(&plain)[1], "{what}");
                continue;
            }
            match want {
                Some(v) => assert_eq!(seen[name], v, "{what}: {name} in {seen}"),
                None => assert!(seen.get(name).is_none(), "{what}: {name} in {seen}"),
            }
        }
    }
    assert_no_trap(&h);
}

// ------------------------------------------------------------ non-UTF-8

/// Request headers, values as bytes.
type HeaderList<'a> = Vec<(&'a str, &'a [u8])>;

#[test]
fn non_utf8_header_values_get_a_clean_answer_and_no_trap() {
    let keys = TestKeys::load().unwrap();
    let h = start(
        "nonutf8",
        &locations_config(&keys),
        JwksServer::start(keys.corpus_jwks()).unwrap(),
    );
    let token = fresh_token(&keys);
    let valid = bearer(&token).into_bytes();
    let odd: &[u8] = &[0xff, 0xfe, b'a', 0x80];
    let with_odd_tail = [valid.as_slice(), odd].concat();
    let odd_bearer = [b"Bearer ".as_slice(), odd].concat();
    let odd_cookie = [b"token=".as_slice(), odd].concat();
    let cookie_and_odd = [format!("token={token}; junk=").as_bytes(), odd].concat();
    let cases: [(&str, HeaderList, u16); 10] = [
        ("odd bearer", vec![("authorization", &odd_bearer)], 401),
        ("odd authorization", vec![("authorization", odd)], 401),
        (
            "valid token, odd tail",
            vec![("authorization", &with_odd_tail)],
            401,
        ),
        ("odd token cookie", vec![("cookie", &odd_cookie)], 401),
        (
            "valid token, odd other header",
            vec![("authorization", &valid), ("x-odd", odd)],
            200,
        ),
        (
            "valid token, odd spoofed output header",
            vec![("authorization", &valid), ("x-jwt-sub", odd)],
            200,
        ),
        (
            "valid cookie beside an odd cookie",
            vec![("cookie", &cookie_and_odd)],
            200,
        ),
        (
            "odd everywhere",
            vec![
                ("authorization", odd),
                ("cookie", odd),
                ("x-jwt-payload", odd),
            ],
            401,
        ),
        ("odd cookie, no token", vec![("cookie", odd)], 401),
        (
            "odd user agent, valid token",
            vec![("user-agent", odd), ("authorization", &valid)],
            200,
        ),
    ];
    for (what, headers, expected) in &cases {
        for _ in 0..3 {
            let (status, body) = raw_get(&h, "/api", headers);
            assert_eq!(status, *expected, "{what}: {body}");
            if status == 200 {
                // The claim, never the client's copy.
                let seen: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(seen["headers"]["x-jwt-sub"], "user-1", "{what}");
                assert!(seen["headers"].get("authorization").is_none(), "{what}");
            } else {
                assert!(body.contains("invalid_token"), "{what}: {body}");
            }
        }
    }
    // A non-UTF-8 token in the query string (percent-encoded).
    let (status, _) = raw_get(&h, "/api?access_token=%FF%FEa%80", &[]);
    assert_eq!(status, 401);
    // No rule needs a token: odd values pass untouched but output headers go.
    let (status, body) = raw_get(
        &h,
        "/healthz",
        &[("authorization", odd), ("x-jwt-sub", odd)],
    );
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("x-jwt-sub"), "{body}");
    // A token that is not UTF-8 is a bad token, not a missing one: an
    // optional rule refuses it, and it does not let a later location decide
    // while it travels on to the upstream.
    let (status, body) = raw_get(&h, "/public", &[("authorization", &odd_bearer)]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = raw_get(&h, "/public?access_token=%FF", &[]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = raw_get(&h, "/public", &[("cookie", &odd_cookie)]);
    assert_eq!(status, 401, "{body}");
    let path = format!("/api?access_token={token}");
    let (status, body) = raw_get(&h, &path, &[("authorization", &odd_bearer)]);
    assert_eq!(status, 401, "{body}");
    // Valid UTF-8 that a text slice at the prefix length would split
    // (`Beare€`: the euro sign spans bytes 5 to 7): once a Wasm panic that
    // left the worker answering 503.
    for value in [
        "Beare\u{20ac}x",
        "\u{20ac}",
        "B\u{e9}arer x",
        "Bearer \u{1F600}.a.b",
    ] {
        for _ in 0..3 {
            let (status, body) = raw_get(&h, "/api", &[("authorization", value.as_bytes())]);
            assert_eq!(status, 401, "{value}: {body}");
        }
    }
    // The workers still serve.
    assert_eq!(status_with(&h, "/api", &token), 200);
    assert_no_trap(&h);
}

// ------------------------------------------------------------ key rotation

/// An RS256 token from `key` with the default claims (unique `jti`).
fn token_from(key: &TestKey) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let jti = format!("{}-{}", key.kid, N.fetch_add(1, Ordering::Relaxed));
    key.token(jose::patch(jose::claims(now()), json!({ "jti": jti })))
}

/// Sends tokens from `token` to `/api` on new connections, asserting each
/// gets `expected`, until both workers have taken some and at least `min`
/// were sent (at most 64: the kernel spreads new connections at random).
fn on_both_workers(
    h: &Harness,
    what: &str,
    expected: u16,
    min: usize,
    mut token: impl FnMut() -> String,
) {
    let before = worker_connections(h);
    for i in 1..=64 {
        let status = status_with(h, "/api", &token());
        assert_eq!(status, expected, "{what}: request {i}");
        let now = worker_connections(h);
        if i >= min && now[0] > before[0] && now[1] > before[1] {
            return;
        }
    }
    panic!("{what}: 64 new connections never reached both workers");
}

/// Waits for the first JWKS fetch to land: `token` passes.
fn wait_for_keys(h: &Harness, token: &str) {
    wait_until("the first JWKS is in", Duration::from_secs(15), || {
        status_with(h, "/api", token) == 200
    });
}

#[test]
fn a_new_kid_is_accepted_after_exactly_one_refetch_and_the_cooldown_refuses_at_once() {
    let keys = TestKeys::load().unwrap();
    let a = keys.alg(Alg::RS256);
    let b = &keys.rsa_b;
    let c = &keys.rsa_3072;
    // A long cacheDuration: every fetch after the first is a kid refetch.
    let config = config(provider(json!({"cacheDuration": "10m", "timeout": "5s"})));
    let h = start(
        "refetch",
        &config,
        JwksServer::start(jose::jwks(&[a])).unwrap(),
    );
    wait_for_keys(&h, &token_from(a));
    // Both workers have the keys and only one of them fetched.
    on_both_workers(&h, "rsa-a at start", 200, 4, || token_from(a));
    assert_eq!(
        jwks(&h).fetches(),
        1,
        "one fetch at start, whatever the workers"
    );

    // Rotation: rsa-b is published; its first token triggers one refetch.
    jwks(&h).set_document(jose::jwks(&[a, b]));
    let r = fresh(
        &h,
        "/api",
        &[("authorization", bearer(&token_from(b)).as_bytes())],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(jwks(&h).fetches(), 2, "exactly one refetch for the new kid");
    // Both workers now take rsa-b tokens, and rsa-a ones still, with no
    // further fetch: the other worker read the keys from shared data.
    on_both_workers(&h, "rsa-b after the refetch", 200, 4, || token_from(b));
    on_both_workers(&h, "rsa-a after the refetch", 200, 4, || token_from(a));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(jwks(&h).fetches(), 2);

    // Within the 30 s cooldown an unknown kid is refused at once, without a
    // fetch, even though the server would now have the key.
    jwks(&h).set_document(jose::jwks(&[a, b, c]));
    let denied = counter(&h, "denied.unknown_kid");
    for _ in 0..4 {
        let sent = Instant::now();
        let r = fresh(
            &h,
            "/api",
            &[("authorization", bearer(&token_from(c)).as_bytes())],
        );
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(r.body.contains("unknown key"), "{}", r.body);
        // Far below the 5 s timeout a paused request would wait.
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "{:?}",
            sent.elapsed()
        );
    }
    assert_eq!(counter(&h, "denied.unknown_kid"), denied + 4);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(jwks(&h).fetches(), 2, "no fetch within the cooldown");
    assert_eq!(counter(&h, "jwks_fetch.success"), 2);
    assert_no_trap(&h);
}

#[test]
fn old_keys_are_dropped_at_the_next_refresh_even_for_cached_tokens() {
    let keys = TestKeys::load().unwrap();
    let a = keys.alg(Alg::RS256);
    let b = &keys.rsa_b;
    let config = config(provider(json!({"cacheDuration": "2s", "timeout": "2s"})));
    let h = start(
        "drop",
        &config,
        JwksServer::start(jose::jwks(&[a, b])).unwrap(),
    );
    let old = token_from(a);
    let new = token_from(b);
    wait_for_keys(&h, &old);
    // Both tokens pass, on both workers, and are cached there.
    on_both_workers(&h, "rsa-a before", 200, 6, || old.clone());
    on_both_workers(&h, "rsa-b before", 200, 6, || new.clone());
    let hits = counter(&h, "cache.hit");
    assert!(hits >= 8, "repeat tokens are cache hits: {hits}");

    // rsa-a leaves the JWKS: at the next refresh its tokens are refused,
    // the cached one included.
    let fetched = jwks(&h).fetches();
    jwks(&h).set_document(jose::jwks(&[b]));
    let took = wait_until("a refresh drops rsa-a", Duration::from_secs(10), || {
        status_with(&h, "/api", &old) == 401
    });
    assert!(jwks(&h).fetches() > fetched, "a refresh happened");
    eprintln!("rsa-a refused {took:?} after it left the JWKS");
    on_both_workers(&h, "cached rsa-a token", 401, 6, || old.clone());
    on_both_workers(&h, "new rsa-a token", 401, 4, || token_from(a));
    on_both_workers(&h, "cached rsa-b token", 200, 6, || new.clone());
    on_both_workers(&h, "new rsa-b token", 200, 4, || token_from(b));
    assert_no_trap(&h);
}

// ------------------------------------------------- one fetch per process

#[test]
fn an_envoy_process_fetches_the_jwks_once_per_refresh_not_once_per_worker() {
    let keys = TestKeys::load().unwrap();
    let config = config(provider(json!({"cacheDuration": "3s", "timeout": "2s"})));
    let h = start(
        "once",
        &config,
        JwksServer::start(keys.corpus_jwks()).unwrap(),
    );
    let server = jwks(&h);
    assert!(
        server.wait_fetches(1, Duration::from_secs(15)),
        "no first fetch"
    );
    // Watch the fetch count for 7 s while requests land on both workers.
    let start = Instant::now();
    let window = Duration::from_secs(7);
    let before = worker_connections(&h);
    let mut fetched_at = vec![Duration::ZERO];
    let mut seen = 1;
    let mut requests = 0;
    while start.elapsed() < window {
        assert_eq!(status_with(&h, "/api", &fresh_token(&keys)), 200);
        requests += 1;
        for _ in 0..5 {
            let n = server.fetches();
            assert!(
                n <= seen + 1,
                "{} fetches at once at {:?}: one per worker?",
                n - seen,
                start.elapsed()
            );
            if n > seen {
                seen = n;
                fetched_at.push(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(40));
        }
    }
    let after = worker_connections(&h);
    let fetches = server.fetches();
    eprintln!(
        "{fetches} fetches in {:?} ({fetched_at:?}), {requests} requests, connections per worker {before:?} -> {after:?}",
        start.elapsed()
    );
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "requests reached both workers: {before:?} -> {after:?}"
    );
    // One per process: at 0, ~3 and ~6 s. One per worker would be ~6.
    assert!(
        (2..=4).contains(&fetches),
        "{fetches} fetches in 7 s with cacheDuration 3s"
    );
    for pair in fetched_at.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(1500),
            "two fetches {:?} apart: {fetched_at:?}",
            pair[1] - pair[0]
        );
    }
    let success = counter(&h, "jwks_fetch.success");
    assert!(
        success + 1 >= fetches && success <= fetches,
        "{success} successes for {fetches} fetches"
    );
    assert_no_trap(&h);
}

// ------------------------------------------------------------- JWKS faults

/// The JWKS server misbehaves from the start: requests wait, paused, for
/// the provider's 1 s `timeout`, then are refused 401 (fail closed); once the
/// server serves again, valid tokens pass on both workers.
fn jwks_fault_at_start_fails_closed_then_recovers(name: &str, mode: Mode) {
    let keys = TestKeys::load().unwrap();
    let server = JwksServer::start(keys.corpus_jwks()).unwrap();
    server.set_mode(mode.clone()).unwrap();
    let config = config(provider(json!({"timeout": "1s", "cacheDuration": "10m"})));
    let h = start(name, &config, server);
    let token = fresh_token(&keys);
    for _ in 0..2 {
        let sent = Instant::now();
        let r = fresh(&h, "/api", &[("authorization", bearer(&token).as_bytes())]);
        let waited = sent.elapsed();
        assert_eq!(r.status, 401, "{mode:?}: {}", r.body);
        assert_eq!(r.json()["message"], "Jwks is not available", "{mode:?}");
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(www.contains("error=\"invalid_token\""), "{mode:?}: {www}");
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(6),
            "{mode:?}: paused {waited:?} for a 1 s timeout"
        );
    }
    wait_until("a failed fetch is counted", Duration::from_secs(10), || {
        counter(&h, "jwks_fetch.failure") >= 1
    });
    assert_eq!(counter(&h, "jwks_fetch.success"), 0, "{mode:?}");
    assert_no_trap(&h);

    jwks(&h).set_mode(Mode::Serve).unwrap();
    let took = wait_until(
        "valid tokens pass once the JWKS server serves",
        Duration::from_secs(10),
        || status_with(&h, "/api", &token) == 200,
    );
    eprintln!("{mode:?}: recovered {took:?} after the server served again");
    on_both_workers(&h, &format!("{mode:?} recovered"), 200, 4, || {
        fresh_token(&keys)
    });
    assert!(counter(&h, "jwks_fetch.success") >= 1);
    assert_no_trap(&h);
}

#[test]
fn jwks_server_down_at_start_fails_closed_then_recovers_when_it_comes_back() {
    jwks_fault_at_start_fails_closed_then_recovers("fault-down", Mode::Down);
}

#[test]
fn jwks_answering_500_fails_closed_then_recovers() {
    jwks_fault_at_start_fails_closed_then_recovers("fault-500", Mode::Status(500));
}

#[test]
fn jwks_answering_garbage_fails_closed_then_recovers() {
    jwks_fault_at_start_fails_closed_then_recovers("fault-garbage", Mode::Garbage);
}

#[test]
fn jwks_slower_than_the_timeout_fails_closed_then_recovers() {
    jwks_fault_at_start_fails_closed_then_recovers(
        "fault-slow",
        Mode::Slow(Duration::from_secs(3)),
    );
}

#[test]
fn a_failed_refresh_keeps_the_last_good_keys() {
    let keys = TestKeys::load().unwrap();
    let config = config(provider(json!({"timeout": "1s", "cacheDuration": "1s"})));
    let h = start(
        "last-good",
        &config,
        JwksServer::start(keys.corpus_jwks()).unwrap(),
    );
    wait_for_keys(&h, &fresh_token(&keys));
    let good = jwks(&h).document();
    // A document with keys, none usable: an encryption key, a 1024-bit RSA
    // key, an oct key (never taken from the network) and an unknown curve.
    let mut enc = keys.alg(Alg::RS256).jwk();
    enc["use"] = json!("enc");
    enc["kid"] = json!("enc-key");
    let mut p521 = keys.alg(Alg::ES256).jwk();
    p521["crv"] = json!("P-521");
    p521["alg"] = json!("ES512");
    let unusable = json!({"keys": [
        enc,
        keys.rsa_weak.jwk(),
        keys.alg(Alg::HS256).jwk(),
        p521,
    ]})
    .to_string();
    let cases = [
        ("500", Mode::Status(500), None),
        ("garbage", Mode::Garbage, None),
        (
            "empty key list",
            Mode::Serve,
            Some(r#"{"keys":[]}"#.to_string()),
        ),
        ("only unusable keys", Mode::Serve, Some(unusable)),
        (
            "not a JWKS",
            Mode::Serve,
            Some(r#"{"error":"maintenance"}"#.to_string()),
        ),
        ("down", Mode::Down, None),
    ];
    for (what, mode, document) in cases {
        if let Some(doc) = document {
            jwks(&h).set_document(doc);
        }
        jwks(&h).set_mode(mode).unwrap();
        let failures = counter(&h, "jwks_fetch.failure");
        wait_until(
            &format!("a refresh fails ({what})"),
            Duration::from_secs(10),
            || counter(&h, "jwks_fetch.failure") > failures,
        );
        // Tokens never seen before (no cache hit) still verify, on both
        // workers, with the keys of the last good fetch.
        on_both_workers(&h, what, 200, 4, || fresh_token(&keys));
        jwks(&h).set_mode(Mode::Serve).unwrap();
        jwks(&h).set_document(good.clone());
    }
    let successes = counter(&h, "jwks_fetch.success");
    wait_until("a refresh succeeds again", Duration::from_secs(10), || {
        counter(&h, "jwks_fetch.success") > successes
    });
    assert_eq!(status_with(&h, "/api", &fresh_token(&keys)), 200);
    assert_no_trap(&h);
}

// ------------------------------------------------- cache, counters, size

#[test]
fn repeated_tokens_are_cache_hits_and_every_counter_moves() {
    let keys = TestKeys::load().unwrap();
    let rs = keys.alg(Alg::RS256);
    // No clock skew, so that a short-lived token expires quickly.
    let config = config(provider(json!({"clockSkew": "0s", "timeout": "2s"})));
    let h = start(
        "cache",
        &config,
        JwksServer::start(keys.corpus_jwks()).unwrap(),
    );
    wait_for_keys(&h, &fresh_token(&keys));
    let c = |name: &str| counter(&h, name);

    // The same token five times on one kept-alive connection (one worker):
    // one miss, then hits.
    let (hit, miss, allowed) = (c("cache.hit"), c("cache.miss"), c("allowed"));
    let auth = bearer(&fresh_token(&keys));
    for _ in 0..5 {
        let r = h
            .get("/api", &[("authorization", auth.as_bytes())])
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let (hits, misses) = (c("cache.hit") - hit, c("cache.miss") - miss);
    assert_eq!(c("allowed") - allowed, 5);
    assert_eq!(hits + misses, 5);
    // At most one miss per worker, should the connection have changed.
    assert!((1..=2).contains(&misses), "{misses} misses, {hits} hits");
    assert!(hits >= 3, "{misses} misses, {hits} hits");
    // A new token is a miss.
    let miss = c("cache.miss");
    assert_eq!(status_with(&h, "/api", &fresh_token(&keys)), 200);
    assert_eq!(c("cache.miss"), miss + 1);

    // A cached token is refused once it expires.
    let exp = now() + 2;
    let short = rs.token(jose::patch(
        jose::claims(now()),
        json!({"exp": exp, "jti": "short"}),
    ));
    let auth = bearer(&short);
    let hit = c("cache.hit");
    for _ in 0..2 {
        let r = h
            .get("/api", &[("authorization", auth.as_bytes())])
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(c("cache.hit") > hit, "the short-lived token is cached");
    let expired = c("denied.expired");
    wait_until("the cached token expires", Duration::from_secs(8), || {
        h.get("/api", &[("authorization", auth.as_bytes())])
            .unwrap()
            .status
            == 401
    });
    assert!(now() > exp, "refused only after exp");
    assert!(c("denied.expired") > expired);

    // Each refusal is counted under its reason.
    let signed = fresh_token(&keys);
    let bad_signature = jose::with_signature(&signed, &[7u8; 256]);
    let claims = |set: Value| rs.token(jose::patch(jose::claims(now()), set));
    let cases: [(&str, Option<String>); 7] = [
        ("missing", None),
        ("malformed", Some("x.y.z".to_string())),
        ("bad_signature", Some(bad_signature)),
        (
            "expired",
            Some(claims(json!({"exp": now() - 3600, "iat": now() - 7200}))),
        ),
        ("issuer", Some(claims(json!({"iss": "https://evil.test"})))),
        ("audience", Some(claims(json!({"aud": "other"})))),
        ("unknown_kid", Some(token_from(&keys.rsa_b))),
    ];
    for (reason, token) in cases {
        let name = format!("denied.{reason}");
        let before = c(&name);
        let auth = token.map(|t| bearer(&t));
        let headers: Vec<(&str, &[u8])> = auth
            .iter()
            .map(|a| ("authorization", a.as_bytes()))
            .collect();
        let r = h.get("/api", &headers).unwrap();
        assert_eq!(r.status, 401, "{reason}: {}", r.body);
        assert_eq!(c(&name), before + 1, "{name}");
    }
    // Every fetch the server saw is one counted success (the unknown kid
    // above made a refetch).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c("jwks_fetch.success"), jwks(&h).fetches());
    assert_eq!(c("jwks_fetch.failure"), 0);
    assert_no_trap(&h);
}

#[test]
fn jwt_auth_wasm_is_at_most_600_kib() {
    let path = e2e::harness::module_dir().join("jwt_auth.wasm");
    let size = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask build`)", path.display()))
        .len();
    eprintln!("{}: {} KiB", path.display(), size / 1024);
    assert!(size <= 600 * 1024, "{} is {size} bytes", path.display());
}
