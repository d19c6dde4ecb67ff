//! Differential check: the whole token corpus goes through our jwt-auth
//! WasmPlugin and through Envoy's native `envoy.filters.http.jwt_authn`,
//! configured equivalently, in the same run. Both must reach the same
//! decision for every token, except the intended differences listed in
//! [`DIFFERENCES`] (and, for docs/jwt-auth.md, in `jwt_differences.md`). Ours
//! must never accept a token that native rejects.
//!
//! Both Envoys have two providers with the same issuer, audiences, token
//! location (`Authorization: Bearer`), clock skew (60 s) and no forwarding:
//! - `remote` (prefix `/`): the JWKS is fetched from one loopback
//!   [`JwksServer`] serving the corpus JWKS, through a STATIC cluster;
//! - `inline` (prefix `/inline/`): the same JWKS document inline (native
//!   `local_jwks`, our `jwks`).
//!
//! Every token is sent to both paths of both Envoys. The corpus JWKS holds
//! the HS* `oct` keys: ours takes shared secrets only inline, never from the
//! network, so the HS* tokens are compared on the inline path and are an
//! intended difference on the remote one. Native's verified-token cache is
//! off (no `jwt_cache_config`); ours is on, which changes nothing here since
//! each token is sent once per provider.

use e2e::client::{self, Response};
use e2e::jose::{self, CorpusToken, TestKeys};
use e2e::jwks_server::JwksServer;
use e2e::native_jwt;
use e2e::{Harness, Options};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What an Envoy answered a token with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// 200 from the upstream.
    Accept,
    /// 401 or 403 from the JWT filter.
    Reject,
    /// Any other status (e.g. 431 from Envoy's codec for a huge header).
    Status(u16),
}

impl Decision {
    /// 200 accepts; 401 and 403 reject (native answers 403 for an audience
    /// it does not allow, ours 401 for every invalid token).
    fn of(status: u16) -> Decision {
        match status {
            200 => Decision::Accept,
            401 | 403 => Decision::Reject,
            s => Decision::Status(s),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Decision::Accept => f.write_str("accept"),
            Decision::Reject => f.write_str("reject"),
            Decision::Status(s) => write!(f, "{s}"),
        }
    }
}

/// Which provider (JWKS source) a difference shows on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Jwks {
    Remote,
    Inline,
    Both,
}

impl Jwks {
    fn covers(self, path: Jwks) -> bool {
        self == Jwks::Both || self == path
    }
}

impl fmt::Display for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Jwks::Remote => "remote",
            Jwks::Inline => "inline",
            Jwks::Both => "both",
        })
    }
}

/// An intended difference: the decisions each filter reaches, and why.
struct Difference {
    token: &'static str,
    jwks: Jwks,
    native: Decision,
    ours: Decision,
    reason: &'static str,
}

use Decision::{Accept, Reject};
use Jwks::{Both, Remote};

/// One table entry.
const fn d(
    token: &'static str,
    jwks: Jwks,
    native: Decision,
    ours: Decision,
    reason: &'static str,
) -> Difference {
    Difference {
        token,
        jwks,
        native,
        ours,
        reason,
    }
}

// The reasons, one line each (they become the Markdown table's last column).
const HMAC_FROM_NETWORK: &str = "native takes `oct` (shared-secret) keys from a fetched JWKS; ours takes them only inline, so a JWKS endpoint cannot hand out HMAC secrets";
const JWK_OBJECT: &str = "native ignores a `jwk` header member; ours refuses the RFC 7515 `jwk` object form, which jwt-simple (one of its two verify paths) cannot read";
const SIZE: &str = "native has no token size limit (only Envoy's 60 KiB request-header limit); ours refuses tokens over `maxTokenBytes` (8192)";
const PADDING: &str = "native's base64url decoder (absl `WebSafeBase64Unescape`) accepts `=` padding; ours requires canonical unpadded base64url (RFC 7515)";
const WHITESPACE: &str = "native's base64url decoder skips whitespace inside a segment; ours rejects any character outside the base64url alphabet";
const TRAILING_BITS: &str = "native's base64url decoder ignores non-zero unused trailing bits; ours rejects them, so a token has exactly one encoding";
const TYP: &str =
    "native ignores `typ`; ours accepts only an absent `typ`, `JWT` or `at+jwt` (any case)";
const CRIT: &str = "native ignores `crit`; ours understands no JWS extension, so any `crit` names something unknown and is rejected (RFC 7515 4.1.11)";
const EMPTY_KID: &str = "native reads `kid: \"\"` as no kid and tries every key; ours looks for a key whose kid is empty and finds none";
const WEAK_RSA: &str =
    "native verifies with the 1024-bit RSA key in the JWKS; ours skips RSA keys under 2048 bits";
const WEAK_RSA_NO_KID: &str = "without a kid native tries every key, the 1024-bit RSA key included; ours skips RSA keys under 2048 bits";
const EXP_ZERO: &str = "native reads `exp: 0` as no `exp` at all (and does not require one); ours reads it as expired in 1970";
const IAT: &str = "native never checks `iat`; ours rejects an `iat` further in the future than the clock skew (60 s)";
const NO_EXP: &str =
    "native does not require `exp`; ours does (`requireExpiration` defaults to true)";
const NUMBER_TIME: &str = "native reads any JSON number as a time, truncating a fraction; ours requires JSON integers (stricter than RFC 7519 NumericDate)";

/// The intended differences, also in `jwt_differences.md` (the test
/// `differences_markdown_matches_the_table` keeps the two equal).
#[rustfmt::skip]
const DIFFERENCES: &[Difference] = &[
    d("valid_hs256",                   Remote, Accept, Reject, HMAC_FROM_NETWORK),
    d("valid_hs384",                   Remote, Accept, Reject, HMAC_FROM_NETWORK),
    d("valid_hs512",                   Remote, Accept, Reject, HMAC_FROM_NETWORK),
    d("jwk_header_object_trusted_key", Both,   Accept, Reject, JWK_OBJECT),
    d("too_large_by_one",              Both,   Accept, Reject, SIZE),
    d("too_large",                     Both,   Accept, Reject, SIZE),
    d("b64_padded_header",             Both,   Accept, Reject, PADDING),
    d("b64_padded_payload",            Both,   Accept, Reject, PADDING),
    d("b64_padded_signature",          Both,   Accept, Reject, PADDING),
    d("b64_whitespace_payload",        Both,   Accept, Reject, WHITESPACE),
    d("b64_trailing_bits_header",      Both,   Accept, Reject, TRAILING_BITS),
    d("b64_trailing_bits_signature",   Both,   Accept, Reject, TRAILING_BITS),
    d("typ_secevent",                  Both,   Accept, Reject, TYP),
    d("typ_dpop",                      Both,   Accept, Reject, TYP),
    d("typ_jose",                      Both,   Accept, Reject, TYP),
    d("typ_empty",                     Both,   Accept, Reject, TYP),
    d("typ_not_string",                Both,   Accept, Reject, TYP),
    d("crit_exp",                      Both,   Accept, Reject, CRIT),
    d("crit_b64",                      Both,   Accept, Reject, CRIT),
    d("crit_unknown",                  Both,   Accept, Reject, CRIT),
    d("crit_empty",                    Both,   Accept, Reject, CRIT),
    d("crit_not_array",                Both,   Accept, Reject, CRIT),
    d("kid_empty",                     Both,   Accept, Reject, EMPTY_KID),
    d("weak_rsa_1024",                 Both,   Accept, Reject, WEAK_RSA),
    d("weak_rsa_1024_no_kid",          Both,   Accept, Reject, WEAK_RSA_NO_KID),
    d("exp_zero",                      Both,   Accept, Reject, EXP_ZERO),
    d("iat_future",                    Both,   Accept, Reject, IAT),
    d("iat_beyond_skew",               Both,   Accept, Reject, IAT),
    d("missing_exp",                   Both,   Accept, Reject, NO_EXP),
    d("exp_float",                     Both,   Accept, Reject, NUMBER_TIME),
    d("exp_float_integral",            Both,   Accept, Reject, NUMBER_TIME),
    d("exp_exponent",                  Both,   Accept, Reject, NUMBER_TIME),
    d("iat_float",                     Both,   Accept, Reject, NUMBER_TIME),
];

/// The two paths: one per provider.
const PATHS: [(Jwks, &str); 2] = [(Jwks::Remote, "/api"), (Jwks::Inline, "/inline/api")];

const JWKS_URI: &str = "http://keys.test.svc.cluster.local:8080/jwks";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn markdown_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jwt_differences.md")
}

/// Our config, the counterpart of `native_jwt::jwt_authn`.
fn our_config(inline_jwks: &str) -> Value {
    let provider = |name: &str| {
        json!({
            "name": name,
            "issuer": jose::ISSUER,
            "audiences": [jose::AUDIENCE],
            "fromHeaders": [{"name": "Authorization", "prefix": "Bearer "}],
            "forwardOriginalToken": false,
            "clockSkew": format!("{}s", jose::CLOCK_SKEW_SECS),
            "requireExpiration": true,
            "maxTokenBytes": jose::MAX_TOKEN_BYTES,
            "timeout": "2s"
        })
    };
    let remote = jose::patch(
        provider(native_jwt::REMOTE),
        json!({"jwksUri": JWKS_URI, "cacheDuration": "600s"}),
    );
    let inline = jose::patch(provider(native_jwt::INLINE), json!({"jwks": inline_jwks}));
    json!({
        "providers": [remote, inline],
        "rules": [
            {"match": {"pathPrefix": native_jwt::INLINE_PREFIX}, "requires": [native_jwt::INLINE]},
            {"match": {"pathPrefix": "/"}, "requires": [native_jwt::REMOTE]}
        ]
    })
}

fn send(url: &str, token: &str) -> Response {
    let auth = format!("Bearer {token}");
    client::get(url, &[("authorization", auth.as_bytes())]).unwrap()
}

fn status(url: &str, token: &str) -> u16 {
    send(url, token).status
}

/// One token on one path: what each side decided.
struct Outcome<'c> {
    token: &'c CorpusToken,
    jwks: Jwks,
    native: Decision,
    ours: Decision,
    native_status: u16,
    ours_status: u16,
}

fn expected<'d>(name: &str, jwks: Jwks) -> Option<&'d Difference> {
    DIFFERENCES
        .iter()
        .find(|d| d.token == name && d.jwks.covers(jwks))
}

/// The table as Markdown rows, in order.
fn markdown_rows() -> Vec<String> {
    DIFFERENCES
        .iter()
        .map(|d| {
            format!(
                "| `{}` | {} | {} | {} | {} |",
                d.token, d.jwks, d.native, d.ours, d.reason
            )
        })
        .collect()
}

#[test]
fn differences_markdown_matches_the_table() {
    let text = std::fs::read_to_string(markdown_path()).unwrap();
    let rows: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| l.trim_end().to_string())
        .collect();
    assert_eq!(
        rows,
        markdown_rows(),
        "{} must list exactly the DIFFERENCES table, in order; expected rows:\n{}",
        markdown_path().display(),
        markdown_rows().join("\n")
    );
    for d in DIFFERENCES {
        assert!(!d.reason.contains('|'), "{}: no '|' in a reason", d.token);
        assert_ne!(d.native, d.ours, "{}: not a difference", d.token);
    }
}

#[test]
fn the_corpus_gets_the_same_decision_from_native_jwt_authn_except_listed_differences() {
    let started = Instant::now();
    let keys = TestKeys::load().unwrap();
    let jwks_doc = keys.corpus_jwks();
    let server = JwksServer::start(jwks_doc.clone()).unwrap();
    let mut h = Harness::start_with(
        &e2e::manifest::write_test_plugin(
            "jwt-differential",
            "jwt-auth",
            Some("AUTHN"),
            &our_config(&jwks_doc),
        )
        .unwrap(),
        Options {
            jwks_server: Some(server),
            ..Options::default()
        },
    )
    .unwrap();
    let jwks_addr = h.jwks.as_ref().unwrap().addr;
    let upstream = h.upstream("v1").unwrap().addr;
    let mut native = native_jwt::start(&native_jwt::Inputs {
        issuer: jose::ISSUER,
        audiences: &[jose::AUDIENCE],
        clock_skew_secs: jose::CLOCK_SKEW_SECS,
        jwks_server: jwks_addr,
        jwks_path: "/jwks",
        inline_jwks: &jwks_doc,
        upstream,
    })
    .unwrap();
    eprintln!(
        "ours: {} (config {}); native: {} (config {}); started in {:?}",
        h.listener,
        h.dir.join("envoy.json").display(),
        native.listener,
        native.config_path().display(),
        started.elapsed()
    );

    // Warm-up: both providers of both Envoys accept a valid token (ours may
    // hold the first request until its first JWKS fetch), and neither
    // forwards the token.
    let warm = keys.alg(jose::Alg::RS256).token(jose::claims(now()));
    for (jwks, path) in PATHS {
        for (side, url) in [("ours", h.url(path)), ("native", native.url(path))] {
            let deadline = Instant::now() + Duration::from_secs(20);
            let r = loop {
                let r = send(&url, &warm);
                if r.status == 200 || Instant::now() > deadline {
                    break r;
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            assert_eq!(r.status, 200, "{side} {jwks}: warm-up: {}", r.body);
            assert!(
                r.json()["headers"].get("authorization").is_none(),
                "{side} {jwks}: the token must not be forwarded"
            );
        }
    }

    let now = now();
    let corpus_started = Instant::now();
    let corpus = jose::corpus(&keys, now);
    let mut outcomes = Vec::new();
    for token in &corpus {
        for (jwks, path) in PATHS {
            let ours_status = status(&h.url(path), &token.token);
            let native_status = status(&native.url(path), &token.token);
            outcomes.push(Outcome {
                token,
                jwks,
                native: Decision::of(native_status),
                ours: Decision::of(ours_status),
                native_status,
                ours_status,
            });
        }
    }
    let corpus_time = corpus_started.elapsed();
    assert!(
        corpus_time < Duration::from_secs(30),
        "the corpus holds its decisions for 30 s; sending it took {corpus_time:?}"
    );

    // Every difference, listed or not, for the log.
    eprintln!("differences: token | jwks | native | ours | corpus says");
    for o in outcomes.iter().filter(|o| o.native != o.ours) {
        eprintln!(
            "{} | {} | {} {} | {} {} | {:?}",
            o.token.name, o.jwks, o.native, o.native_status, o.ours, o.ours_status, o.token.reject
        );
    }

    // Ours never accepts what native rejects: unconditional, whatever the table says.
    let looser: Vec<String> = outcomes
        .iter()
        .filter(|o| o.ours == Decision::Accept && o.native != Decision::Accept)
        .map(|o| format!("{} ({}): native {}", o.token.name, o.jwks, o.native))
        .collect();
    assert!(
        looser.is_empty(),
        "ours accepts tokens native rejects:\n{}",
        looser.join("\n")
    );

    // The same decision, except the listed differences, exactly as listed.
    let mut failures = Vec::new();
    for o in &outcomes {
        match expected(&o.token.name, o.jwks) {
            Some(d) if (d.native, d.ours) != (o.native, o.ours) => failures.push(format!(
                "{} ({}): listed as native {} / ours {}, got native {} / ours {}",
                o.token.name, o.jwks, d.native, d.ours, o.native, o.ours
            )),
            Some(_) => {}
            None if o.native != o.ours => failures.push(format!(
                "{} ({}): unlisted difference: native {}, ours {} (corpus: {:?})",
                o.token.name, o.jwks, o.native, o.ours, o.token.reject
            )),
            None => {}
        }
    }
    // Statuses: ours answers every invalid token 401 (RFC 6750); native
    // answers 403 only for an audience it does not allow.
    for o in &outcomes {
        if o.ours == Decision::Reject && o.ours_status != 401 {
            failures.push(format!(
                "{} ({}): ours answered {}",
                o.token.name, o.jwks, o.ours_status
            ));
        }
        if o.native_status == 403 && o.token.reject != Some(jose::Reject::Audience) {
            failures.push(format!(
                "{} ({}): native answered 403, the corpus says {:?}",
                o.token.name, o.jwks, o.token.reject
            ));
        }
    }
    // No stale entries: every listed token is in the corpus.
    let names: BTreeSet<&str> = corpus.iter().map(|t| t.name.as_str()).collect();
    for d in DIFFERENCES {
        if !names.contains(d.token) {
            failures.push(format!("{}: listed, but not in the corpus", d.token));
        }
    }
    // Where the table does not say otherwise (HS* on the remote path), ours
    // decides as the corpus says; a header over Envoy's 60 KiB limit gets
    // 431 before any filter runs.
    for o in outcomes
        .iter()
        .filter(|o| expected(&o.token.name, o.jwks).is_none())
    {
        let want = match o.token.reject {
            None => Decision::Accept,
            Some(jose::Reject::TooLarge) if o.ours == Decision::Status(431) => {
                Decision::Status(431)
            }
            Some(_) => Decision::Reject,
        };
        if o.ours != want {
            failures.push(format!(
                "{} ({}): ours {}, the corpus says {:?}",
                o.token.name, o.jwks, o.ours, o.token.reject
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let traps = h.wasm_traps();
    assert!(traps.is_empty(), "Wasm trap in our Envoy's log: {traps:#?}");
    eprintln!(
        "{} tokens x {} paths through both Envoys in {corpus_time:?}; {} listed differences; total {:?}",
        corpus.len(),
        PATHS.len(),
        DIFFERENCES.len(),
        started.elapsed()
    );
    // Native's remote provider really fetched from the shared JWKS server,
    // and never verified a token from its (disabled) cache.
    let (_, stats) = client::admin_get(native.envoy.admin, "/stats?filter=jwt_authn").unwrap();
    let stat = |name: &str| {
        stats
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("http.{}.jwt_authn.{name}: ", native_jwt::LISTENER))
            })
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    assert!(stat("jwks_fetch_success").unwrap_or(0) >= 1, "{stats}");
    assert_eq!(stat("jwks_fetch_failed"), Some(0), "{stats}");
    assert_eq!(stat("jwt_cache_hit"), Some(0), "{stats}");
    native.stop();
    h.stop();
}
