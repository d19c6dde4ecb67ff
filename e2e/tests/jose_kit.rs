//! The jwt-auth test kit itself: the key fixtures, the JWKs computed from
//! them, token minting, the token corpus (checked against jsonwebtoken's own
//! decoder and against a strict reference validator written here), and the
//! JWKS server. Native only; no Envoy.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use e2e::jose::{
    self, AUDIENCE, Alg, CLOCK_SKEW_SECS, CorpusToken, HMAC_SECRET, ISSUER, MAX_TOKEN_BYTES,
    MIN_RSA_BITS, P256_ORDER, Reject, TestKey, TestKeys, b64, b64_decode,
};
use e2e::jwks_server::{GARBAGE, JwksServer, Mode};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{DecodingKey, EncodingKey, Validation};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys::load().unwrap())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One corpus, shared (minting it signs ~150 tokens, some with RSA-3072).
fn corpus() -> &'static (u64, Vec<CorpusToken>) {
    static CORPUS: OnceLock<(u64, Vec<CorpusToken>)> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let now = now();
        (now, jose::corpus(keys(), now))
    })
}

fn token(name: &str) -> &'static CorpusToken {
    jose::corpus_token(&corpus().1, name).unwrap_or_else(|| panic!("no corpus token {name}"))
}

fn parts(token: &str) -> Vec<&str> {
    token.split('.').collect()
}

fn header_of(token: &str) -> Value {
    serde_json::from_slice(&b64_decode(parts(token)[0]).unwrap()).unwrap()
}

fn claims_of(token: &str) -> Value {
    serde_json::from_slice(&b64_decode(parts(token)[1]).unwrap()).unwrap()
}

/// Verifies the signature over the token's signing input exactly as sent.
fn verifies(token: &str, key: &DecodingKey, alg: Alg) -> bool {
    let (input, signature) = token.rsplit_once('.').unwrap();
    jsonwebtoken::crypto::verify(signature, input.as_bytes(), key, alg.jsonwebtoken())
        .unwrap_or(false)
}

fn decoding_key(key: &TestKey) -> DecodingKey {
    let jwk: Jwk = serde_json::from_value(key.jwk()).unwrap();
    DecodingKey::from_jwk(&jwk).unwrap()
}

// ---------------------------------------------------------------- fixtures

#[test]
fn fixtures_are_pkcs8_and_spki_pem_of_the_right_size() {
    let dir = jose::fixtures_dir();
    assert!(dir.join("README.md").is_file());
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains("TEST ONLY"), "README must say test-only");
    for name in jose::fixture_names() {
        let private = std::fs::read_to_string(dir.join(format!("{name}.key.pem"))).unwrap();
        let public = std::fs::read_to_string(dir.join(format!("{name}.pub.pem"))).unwrap();
        assert!(
            private.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{name}: PKCS#8"
        );
        assert!(
            public.starts_with("-----BEGIN PUBLIC KEY-----\n"),
            "{name}: SPKI"
        );
    }
    let k = keys();
    assert_eq!(k.alg(Alg::RS256).rsa_bits(), Some(2048));
    assert_eq!(k.rsa_b.rsa_bits(), Some(2048));
    assert_eq!(k.rsa_weak.rsa_bits(), Some(1024));
    assert_eq!(k.rsa_3072.rsa_bits(), Some(3072));
    assert_ne!(
        k.alg(Alg::RS256).public_der(),
        k.rsa_b.public_der(),
        "rotation needs two keys"
    );
    // The embedded fixtures are the files on disk.
    for key in k.all() {
        if let Some(name) = key.fixture() {
            let disk = std::fs::read_to_string(dir.join(format!("{name}.pub.pem"))).unwrap();
            assert_eq!(key.public_pem(), Some(disk.as_str()), "{name}");
        }
    }
}

#[test]
fn each_public_fixture_belongs_to_its_private_key() {
    let dir = jose::fixtures_dir();
    let read = |name: &str, kind: &str| {
        std::fs::read_to_string(dir.join(format!("{name}.{kind}.pem"))).unwrap()
    };
    for name in ["rsa-a", "rsa-b", "rsa-weak", "rsa-3072"] {
        use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(&read(name, "key")).unwrap();
        let public = rsa::RsaPublicKey::from_public_key_pem(&read(name, "pub")).unwrap();
        assert_eq!(private.to_public_key(), public, "{name}");
    }
    {
        use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
        let private = p256::SecretKey::from_pkcs8_pem(&read("ec256", "key")).unwrap();
        let public = p256::PublicKey::from_public_key_pem(&read("ec256", "pub")).unwrap();
        assert_eq!(private.public_key(), public);
    }
    {
        use p384::pkcs8::{DecodePrivateKey, DecodePublicKey};
        let private = p384::SecretKey::from_pkcs8_pem(&read("ec384", "key")).unwrap();
        let public = p384::PublicKey::from_public_key_pem(&read("ec384", "pub")).unwrap();
        assert_eq!(private.public_key(), public);
    }
    {
        use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
        let private = ed25519_dalek::SigningKey::from_pkcs8_pem(&read("ed25519", "key")).unwrap();
        let public =
            ed25519_dalek::VerifyingKey::from_public_key_pem(&read("ed25519", "pub")).unwrap();
        assert_eq!(private.verifying_key(), public);
    }
}

// ---------------------------------------------------------------- JWKs

#[test]
fn jwk_members_follow_rfc_7517_and_7518() {
    for key in keys().all() {
        let jwk = key.jwk();
        let o = jwk.as_object().unwrap();
        assert_eq!(o["kid"], json!(key.kid));
        assert_eq!(o["use"], json!("sig"));
        assert_eq!(o["alg"], json!(key.alg.name()));
        assert_eq!(o["kty"], json!(key.alg.kty()));
        let bytes = |m: &str| b64_decode(o[m].as_str().unwrap()).unwrap();
        let members: BTreeSet<&str> = o.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = match key.alg.kty() {
            "RSA" => {
                let n = bytes("n");
                assert_ne!(n[0], 0, "{}: n has no leading zero octet", key.kid);
                assert_eq!(n.len() * 8, key.rsa_bits().unwrap(), "{}", key.kid);
                assert_eq!(o["e"], json!("AQAB"));
                ["kty", "kid", "use", "alg", "n", "e"].into()
            }
            "EC" => {
                let size = if key.alg == Alg::ES256 { 32 } else { 48 };
                let crv = if key.alg == Alg::ES256 {
                    "P-256"
                } else {
                    "P-384"
                };
                assert_eq!(o["crv"], json!(crv));
                assert_eq!(bytes("x").len(), size, "x is padded to the field size");
                assert_eq!(bytes("y").len(), size, "y is padded to the field size");
                ["kty", "kid", "use", "alg", "crv", "x", "y"].into()
            }
            "OKP" => {
                assert_eq!(o["crv"], json!("Ed25519"));
                assert_eq!(bytes("x").len(), 32);
                ["kty", "kid", "use", "alg", "crv", "x"].into()
            }
            _ => {
                assert_eq!(bytes("k"), HMAC_SECRET.to_vec());
                ["kty", "kid", "use", "alg", "k"].into()
            }
        };
        assert_eq!(members, expected, "{}: exactly these members", key.kid);
    }
}

/// The JWK members computed here equal those jsonwebtoken derives from the
/// private keys on its own.
#[test]
fn jwks_agree_with_jsonwebtoken_derivation_from_the_private_keys() {
    let dir = jose::fixtures_dir();
    for key in keys().all() {
        let encoding = match (key.fixture(), key.alg.kty()) {
            (None, _) => EncodingKey::from_secret(HMAC_SECRET),
            (Some(name), kty) => {
                let pem = std::fs::read(dir.join(format!("{name}.key.pem"))).unwrap();
                match kty {
                    "RSA" => EncodingKey::from_rsa_pem(&pem).unwrap(),
                    "EC" => EncodingKey::from_ec_pem(&pem).unwrap(),
                    _ => EncodingKey::from_ed_pem(&pem).unwrap(),
                }
            }
        };
        let theirs = serde_json::to_value(
            Jwk::from_encoding_key(&encoding, key.alg.jsonwebtoken()).unwrap(),
        )
        .unwrap();
        let ours = key.jwk();
        let mut compared = 0;
        for member in ["n", "e", "crv", "x", "y", "k"] {
            assert_eq!(ours.get(member), theirs.get(member), "{} {member}", key.kid);
            compared += usize::from(ours.get(member).is_some());
        }
        assert!(compared >= 1, "{}: compared key material", key.kid);
    }
}

#[test]
fn jwks_document_parses_as_a_jwk_set() {
    let k = keys();
    let doc = k.corpus_jwks();
    let set: JwkSet = serde_json::from_str(&doc).unwrap();
    assert_eq!(set.keys.len(), k.corpus_keys().len());
    assert_eq!(set.keys.len(), k.all().len() - 1);
    assert!(
        set.find(&k.rsa_b.kid).is_none(),
        "rsa-b is not in the corpus JWKS"
    );
    assert!(set.find(&k.rsa_weak.kid).is_some());
    let kids: BTreeSet<String> = k.all().iter().map(|k| k.kid.clone()).collect();
    assert_eq!(kids.len(), k.all().len(), "kids are unique");
    let one = jose::jwks(&[k.alg(Alg::ES256)]);
    assert_eq!(
        serde_json::from_str::<Value>(&one).unwrap(),
        json!({"keys": [k.alg(Alg::ES256).jwk()]})
    );
}

// ---------------------------------------------------------------- signing

#[test]
fn sign_uses_the_header_as_is_and_verifies_for_every_algorithm() {
    let now = now();
    for alg in Alg::ALL {
        let key = keys().alg(alg);
        let header = json!({
            "alg": alg.name(), "kid": key.kid, "typ": "at+JWT",
            "crit": ["x-test"], "x-test": 1, "jku": "https://attacker.test/j",
        });
        let claims = jose::claims(now);
        let token = key.sign(header.clone(), claims.clone());
        assert_eq!(header_of(&token), header, "{}", alg.name());
        assert_eq!(claims_of(&token), claims);
        assert!(verifies(&token, &decoding_key(key), alg), "{}", alg.name());
        // And the other way round: what the test asks for, even a lie.
        let lie = key.sign(json!({"alg": "none"}), claims.clone());
        assert_eq!(header_of(&lie), json!({"alg": "none"}));
        assert!(verifies(&lie, &decoding_key(key), alg));
    }
    let raw = keys().alg(Alg::HS256).sign_raw("{\"a\":1,\"a\":2}", "[]");
    assert_eq!(
        b64_decode(parts(&raw)[0]).unwrap(),
        b"{\"a\":1,\"a\":2}".to_vec()
    );
}

#[test]
fn encoding_helpers() {
    assert_eq!(jose::pad("YQ"), "YQ==");
    assert_eq!(jose::pad("YWI"), "YWI=");
    assert_eq!(jose::pad("YWJj"), "YWJj");
    assert_eq!(jose::std_alphabet("a-b_c"), "a+b/c");
    assert_eq!(jose::resegment("a.b.c", 2), "a.b");
    assert_eq!(jose::resegment("a.b.c", 5), "a.b.c.c.c");
    assert_eq!(jose::resegment("a.b.c", 0), "");
    // "a" is "YQ"; 'Q' = 16 has 4 unused bits.
    assert_eq!(jose::set_trailing_bits("YQ").as_deref(), Some("YR"));
    assert_eq!(jose::set_trailing_bits("YWJj"), None);
    assert!(
        b64_decode("YR").is_err(),
        "strict decoding rejects trailing bits"
    );
    assert_eq!(lenient().decode("YR").unwrap(), b"a");
    assert!(b64_decode("YQ==").is_err());
    assert!(b64_decode("+/").is_err());
    let header = json!({"alg": "HS256"}).to_string();
    assert_ne!(jose::unaligned(&header).len() % 3, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&jose::spaced(&header, 2)).unwrap(),
        json!({"alg": "HS256"})
    );
    // DER of r || s, checked against p256's own DER parser.
    let es = keys().alg(Alg::ES256);
    let token = es.token(jose::claims(now()));
    let raw = jose::signature_bytes(&token).unwrap();
    let der = jose::ecdsa_der_signature(&raw);
    let parsed = p256::ecdsa::Signature::from_der(&der).unwrap();
    assert_eq!(parsed.to_bytes().to_vec(), raw);
    // Tokens of an exact size, whatever the length modulo 4.
    let hs = keys().alg(Alg::HS256);
    let claims = jose::claims(now());
    for len in 300..340 {
        let t = jose::sized_token(hs, &hs.header(), &claims, len).unwrap();
        assert_eq!(t.len(), len);
        assert!(verifies(&t, &decoding_key(hs), Alg::HS256));
    }
    assert!(jose::sized_token(hs, &hs.header(), &claims, 50).is_none());
}

fn lenient() -> GeneralPurpose {
    GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

// ---------------------------------------------------------------- corpus

/// A JWKS key as the reference validator holds it.
struct RefKey {
    kid: String,
    alg: String,
    kty: String,
    rsa_bits: Option<usize>,
    key: DecodingKey,
}

fn ref_keys(doc: &str) -> Vec<RefKey> {
    let doc: Value = serde_json::from_str(doc).unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|jwk| {
            let parsed: Jwk = serde_json::from_value(jwk.clone()).unwrap();
            RefKey {
                kid: jwk["kid"].as_str().unwrap().to_string(),
                alg: jwk["alg"].as_str().unwrap().to_string(),
                kty: jwk["kty"].as_str().unwrap().to_string(),
                rsa_bits: jwk["n"].as_str().map(|n| {
                    let n = b64_decode(n).unwrap();
                    n.len() * 8 - n[0].leading_zeros() as usize
                }),
                key: DecodingKey::from_jwk(&parsed).unwrap(),
            }
        })
        .collect()
}

/// A strict validator for the corpus policy, written independently of the
/// corpus builder: the first failing check, in the order [`Reject`] lists.
fn reference_validate(token: &str, jwks: &[RefKey], now: u64) -> Result<Value, Reject> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Reject::TooLarge);
    }
    let segs = parts(token);
    if segs.len() != 3 {
        return Err(Reject::Segments);
    }
    let decoded: Vec<Vec<u8>> = segs
        .iter()
        .map(|s| URL_SAFE_NO_PAD.decode(s))
        .collect::<Result<_, _>>()
        .map_err(|_| Reject::Base64)?;
    let dup = |is_dup: bool, other: Reject| {
        if is_dup {
            Reject::DuplicateMember
        } else {
            other
        }
    };
    let header = jose::strict_object(&decoded[0]).map_err(|d| dup(d, Reject::Header))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::from_name)
        .ok_or(Reject::Alg)?;
    match header.get("typ") {
        None => {}
        Some(Value::String(t))
            if t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("at+jwt") => {}
        Some(_) => return Err(Reject::Typ),
    }
    if header.contains_key("crit") {
        return Err(Reject::Crit);
    }
    if header.get("jwk").is_some_and(|v| !v.is_string()) {
        return Err(Reject::HeaderMember);
    }
    let input = format!("{}.{}", segs[0], segs[1]);
    let weak = |k: &RefKey| k.rsa_bits.is_some_and(|b| b < MIN_RSA_BITS);
    let verify = |k: &RefKey| {
        jsonwebtoken::crypto::verify(segs[2], input.as_bytes(), &k.key, alg.jsonwebtoken())
            .unwrap_or(false)
    };
    match header.get("kid") {
        Some(kid) => {
            let kid = kid.as_str().ok_or(Reject::UnknownKey)?;
            let key = jwks
                .iter()
                .find(|k| k.kid == kid)
                .ok_or(Reject::UnknownKey)?;
            if key.alg != alg.name() || key.kty != alg.kty() {
                return Err(Reject::KeyMismatch);
            }
            if weak(key) {
                return Err(Reject::WeakKey);
            }
            if !verify(key) {
                return Err(Reject::Signature);
            }
        }
        None => {
            let candidates: Vec<&RefKey> = jwks
                .iter()
                .filter(|k| k.alg == alg.name() && k.kty == alg.kty() && !weak(k))
                .collect();
            if candidates.is_empty() {
                return Err(Reject::UnknownKey);
            }
            if !candidates.into_iter().any(verify) {
                return Err(Reject::Signature);
            }
        }
    }
    let claims = jose::strict_object(&decoded[1]).map_err(|d| dup(d, Reject::Payload))?;
    let mut times = BTreeMap::new();
    for name in ["exp", "nbf", "iat"] {
        if let Some(v) = claims.get(name) {
            let t = v
                .as_i64()
                .map(i128::from)
                .or(v.as_u64().map(i128::from))
                .ok_or(Reject::ClaimType)?;
            times.insert(name, t);
        }
    }
    let (now, skew) = (i128::from(now), i128::from(CLOCK_SKEW_SECS));
    let exp = times.get("exp").ok_or(Reject::MissingExp)?;
    if now > exp + skew {
        return Err(Reject::Expired);
    }
    if times.get("nbf").is_some_and(|nbf| now + skew < *nbf) {
        return Err(Reject::NotYetValid);
    }
    if times.get("iat").is_some_and(|iat| now + skew < *iat) {
        return Err(Reject::IssuedInFuture);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
        return Err(Reject::Issuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(a)) => a.iter().any(|a| a.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    if !aud_ok {
        return Err(Reject::Audience);
    }
    Ok(Value::Object(claims))
}

#[test]
fn corpus_is_well_formed() {
    let (_, corpus) = corpus();
    let names: BTreeSet<&str> = corpus.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), corpus.len(), "names are unique");
    for t in corpus {
        assert_eq!(t.valid, t.reject.is_none(), "{}", t.name);
    }
    let used: BTreeSet<String> = corpus
        .iter()
        .filter_map(|t| t.reject.map(|r| format!("{r:?}")))
        .collect();
    assert_eq!(
        used.len(),
        21,
        "every Reject variant is exercised: {used:?}"
    );
    for name in [
        "valid_rs256",
        "valid_rs384",
        "valid_rs512",
        "valid_ps256",
        "valid_ps384",
        "valid_ps512",
        "valid_es256",
        "valid_es384",
        "valid_eddsa",
        "valid_hs256",
        "valid_hs384",
        "valid_hs512",
        "valid_aud_array",
        "valid_exactly_max_size",
        "too_large_by_one",
        "b64_std_alphabet",
        "b64_trailing_bits_header",
        "b64_trailing_bits_signature",
        "expired",
        "nbf_future",
        "iat_future",
        "missing_exp",
        "iss_wrong",
        "aud_wrong",
        "exp_float",
        "exp_string",
        "unknown_kid",
        "valid_missing_kid",
        "weak_rsa_1024",
        "confusion_hs256_pem",
        "confusion_hs256_der",
        "es256_r_zero",
        "es256_s_equals_n",
        "payload_duplicate_iss",
        "alg_none",
        "jku_attacker",
        "x5u_attacker",
        "jwk_header_attacker_key",
        "x5c_attacker",
    ] {
        assert!(names.contains(name), "corpus has {name}");
    }
    eprintln!(
        "corpus: {} tokens, {} valid",
        corpus.len(),
        corpus.iter().filter(|t| t.valid).count()
    );
}

#[test]
fn corpus_decisions_match_a_strict_reference_validator() {
    let (now, corpus) = corpus();
    let jwks = ref_keys(&keys().corpus_jwks());
    let mut wrong = Vec::new();
    for t in corpus {
        let got = reference_validate(&t.token, &jwks, *now).err();
        if got != t.reject {
            wrong.push(format!(
                "{}: corpus says {:?}, reference {got:?}",
                t.name, t.reject
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every valid token also passes jsonwebtoken's own `decode`, with the JWK
/// the kit produced (by kid; without a kid, the JWK for its alg).
#[test]
fn valid_corpus_tokens_decode_with_jsonwebtoken_and_the_produced_jwk() {
    let (_, corpus) = corpus();
    let set: JwkSet = serde_json::from_str(&keys().corpus_jwks()).unwrap();
    let mut checked = 0;
    for t in corpus.iter().filter(|t| t.valid) {
        let header = header_of(&t.token);
        let alg = Alg::from_name(header["alg"].as_str().unwrap()).unwrap();
        let jwk = match header["kid"].as_str() {
            Some(kid) => set.find(kid).unwrap().clone(),
            None => {
                let kid = &keys().alg(alg).kid;
                set.find(kid).unwrap().clone()
            }
        };
        let mut validation = Validation::new(alg.jsonwebtoken());
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = CLOCK_SKEW_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        let data = jsonwebtoken::decode::<Value>(&t.token, &key, &validation)
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(data.claims["iss"], json!(ISSUER), "{}", t.name);
        checked += 1;
    }
    assert!(checked >= 25, "{checked} valid tokens");
}

#[test]
fn malformed_tokens_are_malformed_as_intended() {
    let k = keys();
    let rs_key = decoding_key(k.alg(Alg::RS256));
    let segs = |name: &str| parts(&token(name).token).len();
    assert_eq!(token("empty_token").token, "");
    assert_eq!(segs("segments_1"), 1);
    assert_eq!(segs("segments_2"), 2);
    assert_eq!(segs("segments_4"), 4);
    assert_eq!(segs("segments_5_jwe"), 5);

    // Padding: the only flaw; the signature covers the padded text.
    for (name, i) in [
        ("b64_padded_header", 0),
        ("b64_padded_payload", 1),
        ("b64_padded_signature", 2),
    ] {
        let t = &token(name).token;
        let seg = parts(t)[i];
        assert!(seg.ends_with('='), "{name}");
        assert!(lenient().decode(seg).is_ok(), "{name}");
        assert!(b64_decode(seg).is_err(), "{name}");
        if i < 2 {
            assert!(verifies(t, &rs_key, Alg::RS256), "{name}");
        }
    }
    let std = &token("b64_std_alphabet").token;
    assert!(std.contains(['+', '/']));
    let url = std.replace('+', "-").replace('/', "_");
    assert!(verifies(&url, &rs_key, Alg::RS256));
    for (name, i) in [
        ("b64_trailing_bits_header", 0),
        ("b64_trailing_bits_signature", 2),
    ] {
        let t = &token(name).token;
        let seg = parts(t)[i];
        assert!(b64_decode(seg).is_err(), "{name}: strict decoding fails");
        let bytes = lenient().decode(seg).unwrap();
        assert_eq!(b64(&bytes).len(), seg.len(), "{name}");
        assert_ne!(b64(&bytes), seg, "{name}: only the unused bits differ");
        if i == 0 {
            // Lenient decoders see a fine header, and the signature is good.
            assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
            assert!(verifies(t, &rs_key, Alg::RS256), "{name}");
        } else {
            let canonical = format!("{}.{}", jose::signing_input(t), b64(&bytes));
            assert!(verifies(&canonical, &rs_key, Alg::RS256), "{name}");
        }
    }
    assert!(token("b64_bad_char_signature").token.contains('!'));
    assert!(token("b64_whitespace_payload").token.contains(' '));
    assert_eq!(parts(&token("b64_impossible_length").token)[2].len() % 4, 1);

    // Non-object JSON, signed properly.
    for name in [
        "header_json_array",
        "header_json_string",
        "header_json_null",
        "header_json_number",
    ] {
        let t = &token(name).token;
        let h: Value = serde_json::from_slice(&b64_decode(parts(t)[0]).unwrap()).unwrap();
        assert!(!h.is_object(), "{name}");
        assert!(verifies(t, &rs_key, Alg::RS256), "{name}");
    }
    for name in [
        "payload_json_array",
        "payload_json_string",
        "payload_json_true",
        "payload_json_null",
    ] {
        let t = &token(name).token;
        let p: Value = serde_json::from_slice(&b64_decode(parts(t)[1]).unwrap()).unwrap();
        assert!(!p.is_object(), "{name}");
        assert!(verifies(t, &rs_key, Alg::RS256), "{name}");
    }
    for name in ["header_not_utf8", "payload_not_utf8"] {
        let t = &token(name).token;
        let i = usize::from(name.starts_with("payload"));
        assert!(String::from_utf8(b64_decode(parts(t)[i]).unwrap()).is_err());
        assert!(verifies(t, &rs_key, Alg::RS256), "{name}");
    }

    // Duplicate members: last-wins parsers accept; the signature is good.
    for (name, i, member) in [
        ("header_duplicate_alg", 0, "alg"),
        ("header_duplicate_kid", 0, "kid"),
        ("payload_duplicate_iss", 1, "iss"),
        ("payload_duplicate_exp", 1, "exp"),
        ("payload_duplicate_aud", 1, "aud"),
    ] {
        let t = &token(name).token;
        let text = b64_decode(parts(t)[i]).unwrap();
        let members = jose::object_members(&text).unwrap();
        assert_eq!(
            members.iter().filter(|(m, _)| m == member).count(),
            2,
            "{name}"
        );
        assert_eq!(jose::strict_object(&text), Err(true), "{name}");
        let last_wins: Value = serde_json::from_slice(&text).unwrap();
        assert!(last_wins.is_object());
        assert!(verifies(t, &rs_key, Alg::RS256), "{name}");
    }
    // ... and what a last-wins parser sees is the valid value.
    assert_eq!(
        claims_of(&token("payload_duplicate_iss").token)["iss"],
        json!(ISSUER)
    );
    assert_eq!(
        header_of(&token("header_duplicate_alg").token)["alg"],
        json!("RS256")
    );

    // alg none, in several casings, with an empty signature.
    let mut casings = BTreeSet::new();
    for name in [
        "alg_none",
        "alg_none_capitalized",
        "alg_none_uppercase",
        "alg_none_mixed_case",
        "alg_none_no_kid",
    ] {
        let t = &token(name).token;
        let alg = header_of(t)["alg"].as_str().unwrap().to_string();
        assert!(alg.eq_ignore_ascii_case("none"));
        casings.insert(alg);
        assert!(t.ends_with('.'), "{name}: empty signature");
        assert_eq!(segs(name), 3);
    }
    assert_eq!(casings.len(), 4);

    // ECDSA signatures out of range: p256 itself refuses them.
    let es_good = k.alg(Alg::ES256).token(jose::claims(corpus().0));
    let good_sig = jose::signature_bytes(&es_good).unwrap();
    for (name, r_zero, s_zero, s_ge_n, r_ge_n) in [
        ("es256_r_zero", true, false, false, false),
        ("es256_r_and_s_zero", true, true, false, false),
        ("es256_s_zero", false, true, false, false),
        ("es256_s_equals_n", false, false, true, false),
        ("es256_s_max", false, false, true, false),
        ("es256_r_equals_n", false, false, false, true),
    ] {
        let sig = jose::signature_bytes(&token(name).token).unwrap();
        assert_eq!(sig.len(), 64, "{name}");
        let (r, s) = sig.split_at(32);
        assert_eq!(r.iter().all(|&b| b == 0), r_zero, "{name}");
        assert_eq!(s.iter().all(|&b| b == 0), s_zero, "{name}");
        assert_eq!(s >= P256_ORDER.as_slice(), s_ge_n, "{name}");
        assert_eq!(r >= P256_ORDER.as_slice(), r_ge_n, "{name}");
        if !r_zero && !r_ge_n {
            assert_eq!(r, &good_sig[..32], "{name}: r of a real signature");
        }
        assert!(p256::ecdsa::Signature::from_slice(&sig).is_err(), "{name}");
    }
    let der = jose::signature_bytes(&token("es256_der_signature").token).unwrap();
    assert_eq!(der[0], 0x30);
    assert!(p256::ecdsa::Signature::from_der(&der).is_ok());

    // RS256 to HS256: HMAC keyed by the RSA public key's PEM text / DER.
    let rs = k.alg(Alg::RS256);
    let pem = rs.public_pem().unwrap();
    for (name, secret) in [
        ("confusion_hs256_pem", pem.as_bytes()),
        ("confusion_hs256_pem_trimmed", pem.trim().as_bytes()),
        ("confusion_hs256_der", rs.public_der().unwrap()),
        ("confusion_hs256_pem_no_kid", pem.as_bytes()),
    ] {
        let t = &token(name).token;
        let h = header_of(t);
        assert_eq!(h["alg"], json!("HS256"), "{name}");
        if name.ends_with("no_kid") {
            assert!(h.get("kid").is_none());
        } else {
            assert_eq!(h["kid"], json!(rs.kid), "{name}");
        }
        assert!(
            verifies(t, &DecodingKey::from_secret(secret), Alg::HS256),
            "{name}"
        );
    }

    // Sizes.
    assert_eq!(token("valid_exactly_max_size").token.len(), MAX_TOKEN_BYTES);
    assert_eq!(token("too_large_by_one").token.len(), MAX_TOKEN_BYTES + 1);
    assert!(verifies(
        &token("too_large_by_one").token,
        &rs_key,
        Alg::RS256
    ));
    assert!(token("too_large").token.len() > MAX_TOKEN_BYTES);

    // Key-bearing headers.
    for (name, member) in [
        ("jku_attacker", "jku"),
        ("x5u_attacker", "x5u"),
        ("x5c_attacker", "x5c"),
        ("x5c_attacker_no_kid", "x5c"),
        ("jwk_header_attacker_key", "jwk"),
        ("jwk_header_attacker_key_no_kid", "jwk"),
        ("jwk_header_attacker_key_trusted_kid", "jwk"),
        ("jwk_header_attacker_hmac_no_kid", "jwk"),
        ("valid_jku_ignored", "jku"),
        ("valid_x5u_ignored", "x5u"),
        ("valid_x5c_ignored", "x5c"),
        ("jwk_header_object_trusted_key", "jwk"),
    ] {
        assert!(
            header_of(&token(name).token).get(member).is_some(),
            "{name}"
        );
    }
    // The attacker's token verifies with the key it carries.
    let t = &token("jwk_header_attacker_key_trusted_kid").token;
    let carried: Jwk = serde_json::from_value(header_of(t)["jwk"].clone()).unwrap();
    assert!(verifies(
        t,
        &DecodingKey::from_jwk(&carried).unwrap(),
        Alg::RS256
    ));

    // Time claims of the wrong type.
    let exp = |name: &str| claims_of(&token(name).token)["exp"].clone();
    assert!(exp("exp_float").is_f64());
    assert!(exp("exp_float_integral").is_f64());
    assert!(exp("exp_exponent").is_f64());
    assert!(exp("exp_string").is_string());
    assert!(exp("exp_null").is_null());
    assert!(claims_of(&token("missing_exp").token).get("exp").is_none());
    assert!(
        claims_of(&token("valid_aud_array").token)["aud"]
            .as_array()
            .is_some()
    );
}

// ---------------------------------------------------------------- JWKS server

/// A minimal HTTP/1.1 GET with `Connection: close`: (status, content-type,
/// body).
fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String, String)> {
    http_request(addr, "GET", path, timeout)
}

fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(parse_response(&raw))
}

fn parse_response(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

fn refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

const T: Duration = Duration::from_secs(5);

#[test]
fn jwks_server_serves_the_document_on_any_path_and_counts() {
    let doc = keys().corpus_jwks();
    let server = JwksServer::start(doc.clone()).unwrap();
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
    assert_eq!(server.fetches(), 0);
    for (i, path) in ["/", "/.well-known/jwks.json", "/a/b?c=d"]
        .iter()
        .enumerate()
    {
        let (status, ctype, body) = http_get(server.addr, path, T).unwrap();
        assert_eq!((status, ctype.as_str()), (200, "application/json"));
        assert_eq!(body, doc);
        assert_eq!(server.fetches(), i as u64 + 1);
    }
    // The harness client too.
    let resp = e2e::client::get(&server.url("/jwks"), &[]).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), serde_json::from_str::<Value>(&doc).unwrap());
    assert_eq!(server.fetches(), 4);
    let (status, _, _) = http_request(server.addr, "POST", "/", T).unwrap();
    assert_eq!(status, 405);
    let (status, _, body) = http_request(server.addr, "HEAD", "/", T).unwrap();
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(server.fetches(), 6, "every request counts");
    assert!(server.wait_fetches(6, Duration::ZERO));
    assert!(!server.wait_fetches(7, Duration::from_millis(50)));

    let other = jose::jwks(&[&keys().rsa_b]);
    server.set_document(other.clone());
    assert_eq!(server.document(), other);
    assert_eq!(http_get(server.addr, "/", T).unwrap().2, other);
}

#[test]
fn jwks_server_failure_modes() {
    let server = JwksServer::start("{\"keys\":[]}").unwrap();
    server.set_mode(Mode::Status(500)).unwrap();
    assert_eq!(server.mode(), Mode::Status(500));
    let (status, ctype, body) = http_get(server.addr, "/", T).unwrap();
    assert_eq!((status, ctype.as_str()), (500, "application/json"));
    assert!(!body.contains("keys"));
    server.set_mode(Mode::Status(404)).unwrap();
    assert_eq!(http_get(server.addr, "/", T).unwrap().0, 404);

    server.set_mode(Mode::Garbage).unwrap();
    let (status, ctype, body) = http_get(server.addr, "/", T).unwrap();
    assert_eq!((status, ctype.as_str()), (200, "application/json"));
    assert_eq!(body, GARBAGE);
    assert!(serde_json::from_str::<Value>(&body).is_err());

    server
        .set_mode(Mode::Slow(Duration::from_millis(600)))
        .unwrap();
    let started = Instant::now();
    let (status, _, body) = http_get(server.addr, "/", T).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!((status, body.as_str()), (200, "{\"keys\":[]}"));
    // A client with a shorter timeout gives up; the request still counts.
    let before = server.fetches();
    let err = http_get(server.addr, "/", Duration::from_millis(100)).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    assert!(server.wait_fetches(before + 1, T));

    server.set_mode(Mode::Serve).unwrap();
    assert_eq!(http_get(server.addr, "/", T).unwrap().0, 200);
    assert_eq!(server.fetches(), 6);
}

#[test]
fn jwks_server_goes_down_and_comes_back_on_the_same_port() {
    let server = JwksServer::start("{\"keys\":[]}").unwrap();
    let addr = server.addr;

    // A keep-alive connection, open when the server goes down.
    let mut kept = TcpStream::connect_timeout(&addr, T).unwrap();
    kept.set_read_timeout(Some(T)).unwrap();
    write!(kept, "GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..100 {
        let n = kept.read(&mut buf).unwrap();
        raw.extend_from_slice(&buf[..n]);
        if n == 0 || String::from_utf8_lossy(&raw).ends_with("{\"keys\":[]}") {
            break;
        }
    }
    assert_eq!(parse_response(&raw).0, 200);

    for round in 0..3 {
        server.set_mode(Mode::Down).unwrap();
        assert!(refused(addr), "round {round}: refused while down");
        assert!(http_get(addr, "/", T).is_err());
        if round == 0 {
            let closed = match kept.read(&mut buf) {
                Ok(0) => true,
                Err(e) => e.kind() == ErrorKind::ConnectionReset,
                Ok(_) => false,
            };
            assert!(closed, "open connections are closed on Down");
        }
        // Down twice is still down.
        server.set_mode(Mode::Down).unwrap();
        assert!(refused(addr));

        server.set_mode(Mode::Serve).unwrap();
        assert_eq!(server.addr, addr);
        let (status, _, body) = http_get(addr, "/", T).unwrap();
        assert_eq!((status, body.as_str()), (200, "{\"keys\":[]}"));
    }
    assert_eq!(server.fetches(), 4);

    // Coming back in a failure mode listens too.
    server.set_mode(Mode::Down).unwrap();
    server.set_mode(Mode::Status(503)).unwrap();
    assert_eq!(http_get(addr, "/", T).unwrap().0, 503);
}

#[test]
fn dropping_the_jwks_server_stops_it() {
    let server = JwksServer::start("{}").unwrap();
    let addr = server.addr;
    assert_eq!(http_get(addr, "/", T).unwrap().0, 200);
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(refused(addr));
}

#[test]
fn slow_requests_do_not_hold_up_down() {
    let server = JwksServer::start("{}").unwrap();
    server
        .set_mode(Mode::Slow(Duration::from_secs(60)))
        .unwrap();
    let addr = server.addr;
    let client = std::thread::spawn(move || http_get(addr, "/", Duration::from_secs(30)));
    assert!(server.wait_fetches(1, T));
    let started = Instant::now();
    server.set_mode(Mode::Down).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    // The pending request's connection is closed without an answer.
    match client.join().unwrap() {
        Ok((status, _, _)) => assert_eq!(status, 0, "no response"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(refused(addr));
}
