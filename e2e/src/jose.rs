//! JOSE for the jwt-auth tests: the test keys under `tests/fixtures/jwt`,
//! their public JWKs and JWKS documents, compact JWS minting with any header,
//! and a named corpus of valid and malformed tokens.
//!
//! Independent of the filter (which uses `jwt-simple`): signatures come from
//! the `jsonwebtoken` crate (RustCrypto backend), the JWK members are read
//! from the key material with the RustCrypto crates, and the JWS framing is
//! built here by hand, so a token can carry any header (`crit`, `jku`,
//! duplicate members, non-objects, ...) and any bytes.
//!
//! TEST KEYS ONLY: the keys are public, committed fixtures.

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

/// The corpus policy's issuer.
pub const ISSUER: &str = "https://issuer.test";
/// The corpus policy's only audience.
pub const AUDIENCE: &str = "api";
/// The corpus policy's clock skew, in seconds, for `exp`, `nbf` and `iat`.
pub const CLOCK_SKEW_SECS: u64 = 60;
/// The corpus policy's largest token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// The corpus policy's smallest RSA modulus, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// The HS256/HS384/HS512 test secret: 64 bytes, so it is as long as the
/// HS512 hash output (RFC 7518 section 3.2) and no validator can call it weak.
pub const HMAC_SECRET: &[u8; 64] =
    b"e2e-jwt-auth-TEST-ONLY-hmac-secret-never-use-outside-tests-0042!";
/// The order n of the P-256 group (big-endian): an ECDSA `s` (or `r`) must be
/// in [1, n-1].
pub const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The key fixtures: name, PKCS#8 private key PEM, SPKI public key PEM.
const FIXTURES: [(&str, &str, &str); 7] = [
    (
        "rsa-a",
        include_str!("../tests/fixtures/jwt/rsa-a.key.pem"),
        include_str!("../tests/fixtures/jwt/rsa-a.pub.pem"),
    ),
    (
        "rsa-b",
        include_str!("../tests/fixtures/jwt/rsa-b.key.pem"),
        include_str!("../tests/fixtures/jwt/rsa-b.pub.pem"),
    ),
    (
        "rsa-weak",
        include_str!("../tests/fixtures/jwt/rsa-weak.key.pem"),
        include_str!("../tests/fixtures/jwt/rsa-weak.pub.pem"),
    ),
    (
        "rsa-3072",
        include_str!("../tests/fixtures/jwt/rsa-3072.key.pem"),
        include_str!("../tests/fixtures/jwt/rsa-3072.pub.pem"),
    ),
    (
        "ec256",
        include_str!("../tests/fixtures/jwt/ec256.key.pem"),
        include_str!("../tests/fixtures/jwt/ec256.pub.pem"),
    ),
    (
        "ec384",
        include_str!("../tests/fixtures/jwt/ec384.key.pem"),
        include_str!("../tests/fixtures/jwt/ec384.pub.pem"),
    ),
    (
        "ed25519",
        include_str!("../tests/fixtures/jwt/ed25519.key.pem"),
        include_str!("../tests/fixtures/jwt/ed25519.pub.pem"),
    ),
];

/// The fixture names, e.g. `rsa-a` for `rsa-a.key.pem` and `rsa-a.pub.pem`.
pub fn fixture_names() -> Vec<&'static str> {
    FIXTURES.iter().map(|(name, _, _)| *name).collect()
}

/// The directory holding the key fixtures (`<name>.key.pem`, `<name>.pub.pem`).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt")
}

/// The JWS algorithms the test keys sign with.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    /// Every algorithm, in declaration order.
    pub const ALL: [Alg; 12] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
    ];

    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    /// The algorithm whose `alg` header value is exactly `name`.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The JWK `kty` of keys for this algorithm.
    pub fn kty(self) -> &'static str {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => "RSA",
            Alg::ES256 | Alg::ES384 => "EC",
            Alg::EdDSA => "OKP",
            Alg::HS256 | Alg::HS384 | Alg::HS512 => "oct",
        }
    }

    /// The same algorithm in the `jsonwebtoken` crate.
    pub fn jsonwebtoken(self) -> Algorithm {
        match self {
            Alg::RS256 => Algorithm::RS256,
            Alg::RS384 => Algorithm::RS384,
            Alg::RS512 => Algorithm::RS512,
            Alg::PS256 => Algorithm::PS256,
            Alg::PS384 => Algorithm::PS384,
            Alg::PS512 => Algorithm::PS512,
            Alg::ES256 => Algorithm::ES256,
            Alg::ES384 => Algorithm::ES384,
            Alg::EdDSA => Algorithm::EdDSA,
            Alg::HS256 => Algorithm::HS256,
            Alg::HS384 => Algorithm::HS384,
            Alg::HS512 => Algorithm::HS512,
        }
    }

    /// The fixture [`TestKeys`] uses for this algorithm (`None` for HMAC).
    pub fn default_fixture(self) -> Option<&'static str> {
        match self.kty() {
            "RSA" => Some("rsa-a"),
            "OKP" => Some("ed25519"),
            "oct" => None,
            _ if self == Alg::ES256 => Some("ec256"),
            _ => Some("ec384"),
        }
    }
}

/// Public key material, as read from the fixture.
#[derive(Debug, Clone)]
enum Public {
    Rsa {
        pem: &'static str,
        der: Vec<u8>,
        n: Vec<u8>,
        e: Vec<u8>,
        bits: usize,
    },
    Ec {
        pem: &'static str,
        der: Vec<u8>,
        crv: &'static str,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Ed {
        pem: &'static str,
        der: Vec<u8>,
        x: Vec<u8>,
    },
    Oct {
        secret: Vec<u8>,
    },
}

/// One signing key for one algorithm, with its `kid`.
#[derive(Debug, Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Alg,
    /// The fixture name (`None` for HMAC keys).
    fixture: Option<&'static str>,
    public: Public,
    encoding: EncodingKey,
}

impl TestKey {
    /// Loads fixture `name` (e.g. `rsa-a`) to sign with `alg`; its kid is
    /// `<name>-<alg in lowercase>`, e.g. `rsa-a-ps256`.
    pub fn load(name: &str, alg: Alg) -> Result<TestKey> {
        let (name, private_pem, public_pem) = FIXTURES
            .iter()
            .find(|(n, _, _)| *n == name)
            .copied()
            .ok_or_else(|| anyhow!("no key fixture {name:?}; have {:?}", fixture_names()))?;
        let der = pem_body(public_pem).with_context(|| format!("{name}.pub.pem"))?;
        let (public, encoding) = match alg.kty() {
            "RSA" => {
                use rsa::pkcs8::DecodePublicKey;
                use rsa::traits::PublicKeyParts;
                let key = rsa::RsaPublicKey::from_public_key_pem(public_pem)
                    .with_context(|| format!("{name}.pub.pem is not an RSA SPKI key"))?;
                let public = Public::Rsa {
                    pem: public_pem,
                    der,
                    n: key.n().to_bytes_be(),
                    e: key.e().to_bytes_be(),
                    bits: key.n().bits(),
                };
                (public, EncodingKey::from_rsa_pem(private_pem.as_bytes())?)
            }
            "EC" => {
                let (crv, x, y) = if alg == Alg::ES256 {
                    use p256::elliptic_curve::sec1::ToEncodedPoint;
                    use p256::pkcs8::DecodePublicKey;
                    let key = p256::PublicKey::from_public_key_pem(public_pem)
                        .with_context(|| format!("{name}.pub.pem is not a P-256 SPKI key"))?;
                    let point = key.to_encoded_point(false);
                    (
                        "P-256",
                        point.x().map(|x| x.to_vec()),
                        point.y().map(|y| y.to_vec()),
                    )
                } else {
                    use p384::elliptic_curve::sec1::ToEncodedPoint;
                    use p384::pkcs8::DecodePublicKey;
                    let key = p384::PublicKey::from_public_key_pem(public_pem)
                        .with_context(|| format!("{name}.pub.pem is not a P-384 SPKI key"))?;
                    let point = key.to_encoded_point(false);
                    (
                        "P-384",
                        point.x().map(|x| x.to_vec()),
                        point.y().map(|y| y.to_vec()),
                    )
                };
                let (Some(x), Some(y)) = (x, y) else {
                    bail!("{name}.pub.pem: the point at infinity");
                };
                let public = Public::Ec {
                    pem: public_pem,
                    der,
                    crv,
                    x,
                    y,
                };
                (public, EncodingKey::from_ec_pem(private_pem.as_bytes())?)
            }
            "OKP" => {
                use ed25519_dalek::pkcs8::DecodePublicKey;
                let key = ed25519_dalek::VerifyingKey::from_public_key_pem(public_pem)
                    .with_context(|| format!("{name}.pub.pem is not an Ed25519 SPKI key"))?;
                let public = Public::Ed {
                    pem: public_pem,
                    der,
                    x: key.to_bytes().to_vec(),
                };
                (public, EncodingKey::from_ed_pem(private_pem.as_bytes())?)
            }
            _ => bail!("{} is an HMAC algorithm: use TestKey::hmac", alg.name()),
        };
        let key = TestKey {
            kid: format!("{name}-{}", alg.name().to_ascii_lowercase()),
            alg,
            fixture: Some(name),
            public,
            encoding,
        };
        key.probe()?;
        Ok(key)
    }

    /// An HMAC key holding [`HMAC_SECRET`]; its kid is the algorithm in
    /// lowercase, e.g. `hs256`.
    pub fn hmac(alg: Alg) -> Result<TestKey> {
        TestKey::hmac_with(&alg.name().to_ascii_lowercase(), alg, HMAC_SECRET)
    }

    /// An HMAC key holding `secret`.
    pub fn hmac_with(kid: &str, alg: Alg, secret: &[u8]) -> Result<TestKey> {
        if alg.kty() != "oct" {
            bail!("{} is not an HMAC algorithm", alg.name());
        }
        let key = TestKey {
            kid: kid.to_string(),
            alg,
            fixture: None,
            public: Public::Oct {
                secret: secret.to_vec(),
            },
            encoding: EncodingKey::from_secret(secret),
        };
        key.probe()?;
        Ok(key)
    }

    /// The same key under another kid.
    pub fn with_kid(mut self, kid: &str) -> TestKey {
        self.kid = kid.to_string();
        self
    }

    /// Signs once, so that [`TestKey::signature`] cannot fail later.
    fn probe(&self) -> Result<()> {
        jsonwebtoken::crypto::sign(b"probe", &self.encoding, self.alg.jsonwebtoken())
            .with_context(|| format!("signing {} with key {}", self.alg.name(), self.kid))?;
        Ok(())
    }

    /// The fixture name (`None` for HMAC keys).
    pub fn fixture(&self) -> Option<&'static str> {
        self.fixture
    }

    /// The RSA modulus size in bits (`None` for other keys).
    pub fn rsa_bits(&self) -> Option<usize> {
        match &self.public {
            Public::Rsa { bits, .. } => Some(*bits),
            _ => None,
        }
    }

    /// The public key as SPKI PEM text, exactly as in the fixture file.
    pub fn public_pem(&self) -> Option<&'static str> {
        match &self.public {
            Public::Rsa { pem, .. } | Public::Ec { pem, .. } | Public::Ed { pem, .. } => Some(pem),
            Public::Oct { .. } => None,
        }
    }

    /// The public key as SPKI DER.
    pub fn public_der(&self) -> Option<&[u8]> {
        match &self.public {
            Public::Rsa { der, .. } | Public::Ec { der, .. } | Public::Ed { der, .. } => Some(der),
            Public::Oct { .. } => None,
        }
    }

    /// The HMAC secret (`None` for asymmetric keys).
    pub fn secret(&self) -> Option<&[u8]> {
        match &self.public {
            Public::Oct { secret } => Some(secret),
            _ => None,
        }
    }

    /// The public JWK (RFC 7517/7518): `kty`, `kid`, `use: "sig"`, `alg`, and
    /// `n`/`e` (RSA), `crv`/`x`/`y` (EC), `crv: "Ed25519"`/`x` (OKP) or `k` (oct).
    pub fn jwk(&self) -> Value {
        let mut jwk = match &self.public {
            Public::Rsa { n, e, .. } => json!({"kty": "RSA", "n": b64(n), "e": b64(e)}),
            Public::Ec { crv, x, y, .. } => {
                json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)})
            }
            Public::Ed { x, .. } => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x)}),
            Public::Oct { secret } => json!({"kty": "oct", "k": b64(secret)}),
        };
        jwk["kid"] = json!(self.kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(self.alg.name());
        jwk
    }

    /// The usual header: `{"alg": <alg>, "typ": "JWT", "kid": <kid>}`.
    pub fn header(&self) -> Value {
        json!({"alg": self.alg.name(), "typ": "JWT", "kid": self.kid})
    }

    /// A token with the usual header and these claims.
    pub fn token(&self, claims: Value) -> String {
        self.sign(self.header(), claims)
    }

    /// A compact JWS: `header` is used as is (whatever `alg`, `kid`, `crit`,
    /// ... it says, or even if it is not an object); the signature is always
    /// this key's algorithm.
    pub fn sign(&self, header: Value, claims: Value) -> String {
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    /// Like [`TestKey::sign`], with the header and payload JSON as raw text
    /// (duplicate members, odd spacing, invalid JSON...).
    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        self.sign_bytes(header.as_bytes(), payload.as_bytes())
    }

    /// Like [`TestKey::sign`], with the header and payload as raw bytes.
    pub fn sign_bytes(&self, header: &[u8], payload: &[u8]) -> String {
        self.sign_segments(&b64(header), &b64(payload))
    }

    /// Signs the two encoded segments exactly as given (even if they are not
    /// canonical base64url): `<header>.<payload>.<signature>`.
    pub fn sign_segments(&self, header: &str, payload: &str) -> String {
        let input = format!("{header}.{payload}");
        let signature = self.signature(input.as_bytes());
        format!("{input}.{signature}")
    }

    /// The base64url signature of `signing_input` with this key's algorithm.
    pub fn signature(&self, signing_input: &[u8]) -> String {
        #[allow(clippy::expect_used)]
        jsonwebtoken::crypto::sign(signing_input, &self.encoding, self.alg.jsonwebtoken())
            .expect("a test key signs: it signed a probe when loaded")
    }
}

/// The test keys.
#[derive(Debug, Clone)]
pub struct TestKeys {
    /// One key per algorithm, in [`Alg::ALL`] order: RS*/PS* on rsa-a
    /// (kid `rsa-a-rs256`, ...), ES256 on ec256 (`ec256-es256`), ES384 on
    /// ec384 (`ec384-es384`), EdDSA on ed25519 (`ed25519-eddsa`), HS* on
    /// [`HMAC_SECRET`] (`hs256`, ...).
    by_alg: Vec<TestKey>,
    /// RS256 on rsa-b (`rsa-b-rs256`): the rotation target; not in the
    /// corpus JWKS, where it plays the attacker's key.
    pub rsa_b: TestKey,
    /// RS256 on the 1024-bit rsa-weak (`rsa-weak-rs256`): must be rejected.
    pub rsa_weak: TestKey,
    /// RS256 on rsa-3072 (`rsa-3072-rs256`).
    pub rsa_3072: TestKey,
}

impl TestKeys {
    pub fn load() -> Result<TestKeys> {
        let by_alg = Alg::ALL
            .into_iter()
            .map(|alg| match alg.default_fixture() {
                Some(name) => TestKey::load(name, alg),
                None => TestKey::hmac(alg),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TestKeys {
            by_alg,
            rsa_b: TestKey::load("rsa-b", Alg::RS256)?,
            rsa_weak: TestKey::load("rsa-weak", Alg::RS256)?,
            rsa_3072: TestKey::load("rsa-3072", Alg::RS256)?,
        })
    }

    /// The key for `alg` (see [`TestKeys`]).
    pub fn alg(&self, alg: Alg) -> &TestKey {
        &self.by_alg[alg as usize]
    }

    /// Every key: one per algorithm, then rsa-b, rsa-weak, rsa-3072.
    pub fn all(&self) -> Vec<&TestKey> {
        let mut all: Vec<&TestKey> = self.by_alg.iter().collect();
        all.extend([&self.rsa_b, &self.rsa_weak, &self.rsa_3072]);
        all
    }

    /// The key whose kid is `kid`.
    pub fn find(&self, kid: &str) -> Option<&TestKey> {
        self.all().into_iter().find(|k| k.kid == kid)
    }

    /// The keys of the JWKS the [`corpus`] assumes: every key but rsa-b.
    /// It holds rsa-weak: a validator must skip (or refuse) that key
    /// alone, not the whole document.
    pub fn corpus_keys(&self) -> Vec<&TestKey> {
        self.all()
            .into_iter()
            .filter(|k| k.kid != self.rsa_b.kid)
            .collect()
    }

    /// The JWKS document the [`corpus`] assumes.
    pub fn corpus_jwks(&self) -> String {
        jwks(&self.corpus_keys())
    }
}

/// A JWKS document: `{"keys": [<jwk>, ...]}`.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

/// Unpadded base64url (RFC 7515 section 2).
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url: no padding, no other alphabet, no non-zero trailing bits.
pub fn b64_decode(text: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(text)
        .with_context(|| format!("not canonical unpadded base64url: {text:?}"))
}

/// The DER inside a PEM document.
fn pem_body(pem: &str) -> Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).context("PEM body is not base64")
}

/// The default claims at time `now`: issuer [`ISSUER`], audience
/// [`AUDIENCE`], subject `user-1`, issued now, expiring in an hour.
pub fn claims(now: u64) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "exp": now + 3600,
        "jti": format!("jti-{now}"),
    })
}

/// `value` (an object) with `set`'s members set; a `null` in `set` removes
/// the member (a top-level JSON merge patch, RFC 7396).
pub fn patch(mut value: Value, set: Value) -> Value {
    if let (Some(object), Value::Object(set)) = (value.as_object_mut(), set) {
        for (k, v) in set {
            if v.is_null() {
                object.remove(&k);
            } else {
                object.insert(k, v);
            }
        }
    }
    value
}

/// `value` (an object) with member `name` set to `v`, even `null`.
pub fn with_member(mut value: Value, name: &str, v: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.insert(name.to_string(), v);
    }
    value
}

/// An HMAC token keyed by arbitrary bytes: the RS256 to HS256 confusion
/// attack signs with an RSA public key's PEM text or DER as the secret.
pub fn sign_hmac(secret: &[u8], alg: Alg, header: Value, claims: Value) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    #[allow(clippy::expect_used)]
    let signature = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_secret(secret),
        alg.jsonwebtoken(),
    )
    .expect("HMAC signs with any key");
    format!("{input}.{signature}")
}

/// An unsecured JWS (`alg: none` style): `<header>.<payload>.` with an
/// empty signature.
pub fn unsigned(header: Value, claims: Value) -> String {
    format!("{}.{}.", b64(header.to_string()), b64(claims.to_string()))
}

/// The token's segments.
pub fn segments(token: &str) -> Vec<&str> {
    token.split('.').collect()
}

/// The token cut to its first `n` segments, or with its last segment
/// repeated until it has `n` (`n == 0`: the empty string).
pub fn resegment(token: &str, n: usize) -> String {
    let mut parts: Vec<&str> = token.split('.').take(n).collect();
    let last = parts.last().copied().unwrap_or_default();
    while !parts.is_empty() && parts.len() < n {
        parts.push(last);
    }
    parts.join(".")
}

/// `<header>.<payload>`, the signing input (everything before the last dot).
pub fn signing_input(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(input, _)| input)
}

/// The token with its signature segment replaced by `signature` (bytes).
pub fn with_signature(token: &str, signature: &[u8]) -> String {
    format!("{}.{}", signing_input(token), b64(signature))
}

/// The token's signature bytes (strictly decoded).
pub fn signature_bytes(token: &str) -> Result<Vec<u8>> {
    let (_, signature) = token.rsplit_once('.').context("no signature segment")?;
    b64_decode(signature)
}

/// The segment with `=` padding, as standard base64 would have it.
pub fn pad(segment: &str) -> String {
    let mut padded = segment.to_string();
    while !padded.len().is_multiple_of(4) {
        padded.push('=');
    }
    padded
}

/// The text in the standard base64 alphabet (`-` to `+`, `_` to `/`).
pub fn std_alphabet(text: &str) -> String {
    text.replace('-', "+").replace('_', "/")
}

/// The segment with one of the unused low bits of its last character set:
/// lenient decoders read the same bytes; strict ones reject it. `None` when
/// the segment has no unused bits (its length is a multiple of 4).
pub fn set_trailing_bits(segment: &str) -> Option<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if !matches!(segment.len() % 4, 2 | 3) {
        return None;
    }
    let last = *segment.as_bytes().last()?;
    let value = ALPHABET.iter().position(|&c| c == last)?;
    let mut out = segment[..segment.len() - 1].to_string();
    out.push(char::from(ALPHABET[value | 1]));
    (out != segment).then_some(out)
}

/// JSON text with `spaces` spaces after its first `{`: the same object,
/// another length.
pub fn spaced(json: &str, spaces: usize) -> String {
    json.replacen('{', &format!("{{{}", " ".repeat(spaces)), 1)
}

/// JSON text (an object) respaced so that its base64url has unused bits
/// and needs padding (its length is not a multiple of 3).
pub fn unaligned(json: &str) -> String {
    (0..3)
        .map(|k| spaced(json, k))
        .find(|s| s.len() % 3 != 0)
        .unwrap_or_else(|| json.to_string())
}

/// An ECDSA P-256 signature `r || s` in the JWS (raw, 64-byte) form.
pub fn p256_raw_signature(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    [r.as_slice(), s.as_slice()].concat()
}

/// A raw `r || s` ECDSA signature re-encoded as an ASN.1 DER
/// `SEQUENCE { INTEGER r, INTEGER s }`, as X.509 has it and JWS must not.
pub fn ecdsa_der_signature(raw: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let mut v = bytes[start..].to_vec();
        if v.first().is_none_or(|&b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [integer(r), integer(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

/// A token of exactly `len` bytes: `claims` gains a `pad` member of `x`s
/// and the header JSON gains spaces as needed. `None` if `len` is too short.
pub fn sized_token(key: &TestKey, header: &Value, claims: &Value, len: usize) -> Option<String> {
    let signature_len = key.signature(b"length probe").len();
    let claims_empty_pad = with_member(claims.clone(), "pad", json!("")).to_string();
    for spaces in 0..4 {
        let header_text = spaced(&header.to_string(), spaces);
        let header_len = b64(&header_text).len();
        // The payload's base64url length; unpadded base64 never has length 4k+1.
        let payload_len = len.checked_sub(header_len + signature_len + 2)?;
        let payload_bytes = match payload_len % 4 {
            0 => payload_len / 4 * 3,
            2 => payload_len / 4 * 3 + 1,
            3 => payload_len / 4 * 3 + 2,
            _ => continue,
        };
        let pad = payload_bytes.checked_sub(claims_empty_pad.len())?;
        let claims = with_member(claims.clone(), "pad", json!("x".repeat(pad)));
        let token = key.sign_raw(&header_text, &claims.to_string());
        return (token.len() == len).then_some(token);
    }
    None
}

/// Why a strict validator rejects a corpus token: the first check, in
/// this order, that fails. A filter may well notice another defect first;
/// only `valid` is the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLarge,
    /// Not exactly three dot-separated segments.
    Segments,
    /// A segment is not canonical unpadded base64url (padding, `+`/`/`,
    /// other characters, whitespace, non-zero trailing bits, bad length).
    Base64,
    /// The header is not a UTF-8 JSON object.
    Header,
    /// The header or the payload names a member twice.
    DuplicateMember,
    /// `alg` missing, not a string, `none` in any case, or unsupported.
    Alg,
    /// `typ` present and not `JWT` or `at+jwt` (any case).
    Typ,
    /// `crit` present (even empty: RFC 7515 forbids `[]`).
    Crit,
    /// A `jwk` header member that is not a string (the RFC 7515 object form):
    /// refused before any key is tried, since jwt-simple, one of the
    /// filter's two verify paths, cannot read it.
    HeaderMember,
    /// No JWKS key has the token's kid (or, without a kid, the token's alg).
    UnknownKey,
    /// The kid's key is for another algorithm or key type (RS256 to HS256
    /// confusion, PS256 on an RS256 key, ...).
    KeyMismatch,
    /// The kid's key is RSA below [`MIN_RSA_BITS`].
    WeakKey,
    /// The signature does not verify (with the kid's key, or without a kid
    /// with any usable key for the alg).
    Signature,
    /// The payload is not a UTF-8 JSON object.
    Payload,
    /// `exp`, `nbf` or `iat` is not a JSON integer.
    ClaimType,
    /// No `exp`.
    MissingExp,
    /// `now > exp + skew`.
    Expired,
    /// `now < nbf - skew`.
    NotYetValid,
    /// `now < iat - skew`.
    IssuedInFuture,
    /// `iss` is not exactly [`ISSUER`].
    Issuer,
    /// `aud` is not [`AUDIENCE`] nor an array holding it.
    Audience,
}

/// One named corpus token and what a strict validator decides.
#[derive(Debug, Clone)]
pub struct CorpusToken {
    pub name: String,
    pub token: String,
    /// Accept (true) or reject (false), under the corpus policy (see [`corpus`]).
    pub valid: bool,
    /// Why a strict validator rejects it (`None` when valid).
    pub reject: Option<Reject>,
}

struct Corpus {
    tokens: Vec<CorpusToken>,
}

impl Corpus {
    fn ok(&mut self, name: &str, token: String) {
        self.push(name, token, None);
    }

    fn bad(&mut self, name: &str, reject: Reject, token: String) {
        self.push(name, token, Some(reject));
    }

    fn push(&mut self, name: &str, token: String, reject: Option<Reject>) {
        self.tokens.push(CorpusToken {
            name: name.to_string(),
            token,
            valid: reject.is_none(),
            reject,
        });
    }
}

/// The header `key.header()` patched with `set` (a `null` removes a member).
fn header_with(key: &TestKey, set: Value) -> Value {
    patch(key.header(), set)
}

/// The token corpus at time `now`, for a validator with this policy: issuer
/// [`ISSUER`], audiences `[AUDIENCE]`, clock skew [`CLOCK_SKEW_SECS`], `exp`
/// required, `exp`/`nbf`/`iat` JSON integers, at most [`MAX_TOKEN_BYTES`],
/// RSA keys of at least [`MIN_RSA_BITS`], `typ` absent or `JWT`/`at+jwt` in
/// any case, any `crit` rejected; the keys are those of
/// [`TestKeys::corpus_jwks`]. `jku`, `x5u`, `jwk` and `x5c` headers are
/// ignored: keys come from the JWKS only. A token without a kid is checked
/// against every usable JWKS key for its alg.
///
/// Every token has exactly one defect (none for the valid ones), named by
/// `reject`.
///
/// Use the corpus within 30 s of `now`: the tokens at the edges of the
/// skew (`exp` 20 s ago, `nbf`/`iat` 20 s ahead; `exp`/`nbf`/`iat` 150 s
/// beyond) keep their decision for at least that long.
pub fn corpus(keys: &TestKeys, now: u64) -> Vec<CorpusToken> {
    use Reject as R;
    let mut c = Corpus { tokens: Vec::new() };
    let rs = keys.alg(Alg::RS256);
    let ps = keys.alg(Alg::PS256);
    let es = keys.alg(Alg::ES256);
    let hs = keys.alg(Alg::HS256);
    let attacker = &keys.rsa_b;
    let base = claims(now);
    let good = rs.token(base.clone());
    let good_parts = segments(&good);
    let (good_h, good_p, good_s) = (good_parts[0], good_parts[1], good_parts[2]);
    let at = |set: Value| patch(base.clone(), set);
    let set = |name: &str, v: Value| with_member(base.clone(), name, v);

    // Valid: one per algorithm, and the edges of the policy.
    for alg in Alg::ALL {
        let name = format!("valid_{}", alg.name().to_ascii_lowercase());
        c.ok(&name, keys.alg(alg).token(base.clone()));
    }
    c.ok("valid_rs256_rsa3072", keys.rsa_3072.token(base.clone()));
    c.ok(
        "valid_typ_absent",
        rs.sign(header_with(rs, json!({"typ": null})), base.clone()),
    );
    for (name, typ) in [
        ("valid_typ_jwt_lowercase", "jwt"),
        ("valid_typ_at_jwt", "at+jwt"),
        ("valid_typ_at_jwt_uppercase", "AT+JWT"),
    ] {
        c.ok(
            name,
            rs.sign(header_with(rs, json!({"typ": typ})), base.clone()),
        );
    }
    c.ok(
        "valid_aud_array",
        rs.token(at(json!({"aud": ["other", AUDIENCE]}))),
    );
    c.ok(
        "valid_exp_within_skew",
        rs.token(at(json!({"exp": now - 20, "iat": now - 3600}))),
    );
    c.ok(
        "valid_nbf_within_skew",
        rs.token(at(json!({"nbf": now + 20}))),
    );
    c.ok(
        "valid_iat_within_skew",
        rs.token(at(json!({"iat": now + 20}))),
    );
    c.ok("valid_no_iat", rs.token(at(json!({"iat": null}))));
    c.ok(
        "valid_unicode_claims",
        rs.token(at(
            json!({"sub": "üser-\u{1F600}", "name": "O'Brien \"quoted\" \\ /"}),
        )),
    );
    c.ok(
        "valid_missing_kid",
        rs.sign(header_with(rs, json!({"kid": null})), base.clone()),
    );
    c.ok(
        "valid_missing_kid_es256",
        es.sign(header_with(es, json!({"kid": null})), base.clone()),
    );
    // Keys come from the JWKS only: these headers are ignored, not fetched.
    c.ok(
        "valid_jku_ignored",
        rs.sign(
            header_with(rs, json!({"jku": "https://attacker.test/jwks.json"})),
            base.clone(),
        ),
    );
    c.ok(
        "valid_x5u_ignored",
        rs.sign(
            header_with(rs, json!({"x5u": "https://attacker.test/cert.pem"})),
            base.clone(),
        ),
    );
    c.bad(
        "jwk_header_object_trusted_key",
        R::HeaderMember,
        rs.sign(
            header_with(rs, json!({"jwk": attacker.jwk()})),
            base.clone(),
        ),
    );
    let attacker_x5c = json!([STANDARD.encode(attacker.public_der().unwrap_or_default())]);
    c.ok(
        "valid_x5c_ignored",
        rs.sign(header_with(rs, json!({"x5c": attacker_x5c})), base.clone()),
    );
    if let Some(t) = sized_token(rs, &rs.header(), &base, MAX_TOKEN_BYTES) {
        c.ok("valid_exactly_max_size", t);
    }

    // Size.
    if let Some(t) = sized_token(rs, &rs.header(), &base, MAX_TOKEN_BYTES + 1) {
        c.bad("too_large_by_one", R::TooLarge, t);
    }
    if let Some(t) = sized_token(rs, &rs.header(), &base, 2 * MAX_TOKEN_BYTES) {
        c.bad("too_large", R::TooLarge, t);
    }
    c.bad("too_large_garbage", R::TooLarge, "a".repeat(64 * 1024));

    // Segments.
    c.bad("empty_token", R::Segments, String::new());
    c.bad("segments_1", R::Segments, resegment(&good, 1));
    c.bad("segments_2", R::Segments, resegment(&good, 2));
    c.bad("segments_4", R::Segments, resegment(&good, 4));
    c.bad(
        "segments_5_jwe",
        R::Segments,
        format!(
            "{}.{}.{}.{}.{}",
            b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#),
            b64([7u8; 256]),
            b64([1u8; 12]),
            good_p,
            b64([2u8; 16])
        ),
    );
    c.bad("empty_segments", R::Header, "..".to_string());

    // Base64url.
    let header_unaligned = unaligned(&rs.header().to_string());
    let payload_unaligned = unaligned(&base.to_string());
    c.bad(
        "b64_padded_header",
        R::Base64,
        rs.sign_segments(&pad(&b64(&header_unaligned)), good_p),
    );
    c.bad(
        "b64_padded_payload",
        R::Base64,
        rs.sign_segments(good_h, &pad(&b64(&payload_unaligned))),
    );
    c.bad(
        "b64_padded_signature",
        R::Base64,
        format!("{}.{}", signing_input(&good), pad(good_s)),
    );
    // Signed over the base64url text, sent in the standard alphabet.
    let std_token = (0..64)
        .map(|i| rs.token(at(json!({"jti": format!("std-{i}")}))))
        .map(|t| std_alphabet(&t))
        .find(|t| t.contains(['+', '/']));
    if let Some(t) = std_token {
        c.bad("b64_std_alphabet", R::Base64, t);
    }
    let mut bad_char = good_s.to_string();
    bad_char.replace_range(10..11, "!");
    c.bad(
        "b64_bad_char_signature",
        R::Base64,
        format!("{}.{bad_char}", signing_input(&good)),
    );
    let mid = good_p.len() / 2;
    let spaced_payload = format!("{} {}", &good_p[..mid], &good_p[mid..]);
    c.bad(
        "b64_whitespace_payload",
        R::Base64,
        rs.sign_segments(good_h, &spaced_payload),
    );
    if let Some(h) = set_trailing_bits(&b64(&header_unaligned)) {
        c.bad(
            "b64_trailing_bits_header",
            R::Base64,
            rs.sign_segments(&h, good_p),
        );
    }
    if let Some(s) = set_trailing_bits(good_s) {
        c.bad(
            "b64_trailing_bits_signature",
            R::Base64,
            format!("{}.{s}", signing_input(&good)),
        );
    }
    // 342 + 3 characters: no base64 string has length 4k+1.
    c.bad("b64_impossible_length", R::Base64, format!("{good}AAA"));

    // Header JSON.
    let payload_text = base.to_string();
    for (name, header) in [
        ("header_json_array", r#"["RS256"]"#),
        ("header_json_string", r#""RS256""#),
        ("header_json_null", "null"),
        ("header_json_number", "256"),
        ("header_not_json", "{alg:RS256}"),
        (
            "header_trailing_garbage",
            r#"{"alg":"RS256","typ":"JWT","kid":"rsa-a-rs256"}x"#,
        ),
    ] {
        c.bad(name, R::Header, rs.sign_raw(header, &payload_text));
    }
    c.bad(
        "header_not_utf8",
        R::Header,
        rs.sign_bytes(
            b"{\"alg\":\"RS256\",\"kid\":\"\xff\xfe\"}",
            payload_text.as_bytes(),
        ),
    );
    c.bad(
        "header_duplicate_alg",
        R::DuplicateMember,
        rs.sign_raw(
            &format!(
                r#"{{"alg":"none","typ":"JWT","kid":"{}","alg":"RS256"}}"#,
                rs.kid
            ),
            &payload_text,
        ),
    );
    c.bad(
        "header_duplicate_kid",
        R::DuplicateMember,
        rs.sign_raw(
            &format!(
                r#"{{"alg":"RS256","typ":"JWT","kid":"{}","kid":"{}"}}"#,
                attacker.kid, rs.kid
            ),
            &payload_text,
        ),
    );

    // alg.
    for (name, alg) in [
        ("alg_none", "none"),
        ("alg_none_capitalized", "None"),
        ("alg_none_uppercase", "NONE"),
        ("alg_none_mixed_case", "nOnE"),
    ] {
        c.bad(
            name,
            R::Alg,
            unsigned(header_with(rs, json!({"alg": alg})), base.clone()),
        );
    }
    c.bad(
        "alg_none_no_kid",
        R::Alg,
        unsigned(json!({"alg": "none", "typ": "JWT"}), base.clone()),
    );
    c.bad(
        "alg_none_with_signature",
        R::Alg,
        rs.sign(header_with(rs, json!({"alg": "none"})), base.clone()),
    );
    c.bad(
        "alg_missing",
        R::Alg,
        rs.sign(header_with(rs, json!({"alg": null})), base.clone()),
    );
    c.bad(
        "alg_lowercase",
        R::Alg,
        rs.sign(header_with(rs, json!({"alg": "rs256"})), base.clone()),
    );
    c.bad(
        "alg_not_string",
        R::Alg,
        rs.sign(header_with(rs, json!({"alg": 256})), base.clone()),
    );
    c.bad(
        "alg_unsupported_es256k",
        R::Alg,
        es.sign(header_with(es, json!({"alg": "ES256K"})), base.clone()),
    );

    // typ.
    for (name, typ) in [
        ("typ_secevent", json!("secevent+jwt")),
        ("typ_dpop", json!("dpop+jwt")),
        ("typ_jose", json!("JOSE")),
        ("typ_empty", json!("")),
        ("typ_not_string", json!(1)),
    ] {
        c.bad(
            name,
            R::Typ,
            rs.sign(header_with(rs, json!({ "typ": typ })), base.clone()),
        );
    }

    // crit.
    for (name, set) in [
        ("crit_exp", json!({"crit": ["exp"]})),
        ("crit_b64", json!({"crit": ["b64"], "b64": false})),
        (
            "crit_unknown",
            json!({"crit": ["urn:example:x"], "urn:example:x": true}),
        ),
        ("crit_empty", json!({"crit": []})),
        ("crit_not_array", json!({"crit": "exp"})),
    ] {
        c.bad(name, R::Crit, rs.sign(header_with(rs, set), base.clone()));
    }

    // Keys.
    c.bad(
        "unknown_kid",
        R::UnknownKey,
        rs.sign(header_with(rs, json!({"kid": "no-such-kid"})), base.clone()),
    );
    c.bad(
        "kid_empty",
        R::UnknownKey,
        rs.sign(header_with(rs, json!({"kid": ""})), base.clone()),
    );
    c.bad(
        "kid_not_string",
        R::UnknownKey,
        rs.sign(header_with(rs, json!({"kid": 7})), base.clone()),
    );
    c.bad(
        "rsa_b_not_in_jwks",
        R::UnknownKey,
        attacker.token(base.clone()),
    );
    c.bad(
        "weak_rsa_1024",
        R::WeakKey,
        keys.rsa_weak.token(base.clone()),
    );
    // Without a kid, the weak key must not be a candidate either.
    c.bad(
        "weak_rsa_1024_no_kid",
        R::Signature,
        keys.rsa_weak.sign(
            header_with(&keys.rsa_weak, json!({"kid": null})),
            base.clone(),
        ),
    );
    c.bad(
        "key_mismatch_ps256_on_rs256_key",
        R::KeyMismatch,
        ps.sign(header_with(ps, json!({"kid": rs.kid})), base.clone()),
    );
    let es384 = keys.alg(Alg::ES384);
    c.bad(
        "key_mismatch_es256_on_es384_key",
        R::KeyMismatch,
        es.sign(header_with(es, json!({"kid": es384.kid})), base.clone()),
    );
    c.bad(
        "key_mismatch_rs256_on_hs256_key",
        R::KeyMismatch,
        rs.sign(header_with(rs, json!({"kid": hs.kid})), base.clone()),
    );
    // RS256 to HS256: HMAC keyed by the RSA public key, kid naming it.
    let confusion = header_with(rs, json!({"alg": "HS256"}));
    let pem = rs.public_pem().unwrap_or_default();
    let der = rs.public_der().unwrap_or_default();
    c.bad(
        "confusion_hs256_pem",
        R::KeyMismatch,
        sign_hmac(pem.as_bytes(), Alg::HS256, confusion.clone(), base.clone()),
    );
    c.bad(
        "confusion_hs256_pem_trimmed",
        R::KeyMismatch,
        sign_hmac(
            pem.trim().as_bytes(),
            Alg::HS256,
            confusion.clone(),
            base.clone(),
        ),
    );
    c.bad(
        "confusion_hs256_der",
        R::KeyMismatch,
        sign_hmac(der, Alg::HS256, confusion.clone(), base.clone()),
    );
    c.bad(
        "confusion_hs256_pem_no_kid",
        R::Signature,
        sign_hmac(
            pem.as_bytes(),
            Alg::HS256,
            json!({"alg": "HS256", "typ": "JWT"}),
            base.clone(),
        ),
    );

    // Signatures.
    c.bad(
        "empty_signature",
        R::Signature,
        format!("{good_h}.{good_p}."),
    );
    let tampered = b64(at(json!({"sub": "admin"})).to_string());
    c.bad(
        "signature_tampered_payload",
        R::Signature,
        format!("{good_h}.{tampered}.{good_s}"),
    );
    c.bad(
        "signature_other_key_trusted_kid",
        R::Signature,
        attacker.sign(rs.header(), base.clone()),
    );
    let signature = signature_bytes(&good).unwrap_or_default();
    c.bad(
        "signature_truncated",
        R::Signature,
        with_signature(&good, &signature[..signature.len().saturating_sub(1)]),
    );
    let mut flipped = signature.clone();
    if let Some(b) = flipped.get_mut(100) {
        *b ^= 0x01;
    }
    c.bad(
        "signature_bit_flip",
        R::Signature,
        with_signature(&good, &flipped),
    );
    c.bad(
        "hs256_wrong_secret",
        R::Signature,
        sign_hmac(
            b"another-secret-of-sixty-four-bytes-another-secret-of-sixty-four",
            Alg::HS256,
            hs.header(),
            base.clone(),
        ),
    );
    let es_good = es.token(base.clone());
    let es_sig = signature_bytes(&es_good).unwrap_or_default();
    let mut es_r = [0u8; 32];
    let mut es_s = [0u8; 32];
    if es_sig.len() == 64 {
        es_r.copy_from_slice(&es_sig[..32]);
        es_s.copy_from_slice(&es_sig[32..]);
    }
    let zero = [0u8; 32];
    for (name, r, s) in [
        ("es256_r_zero", &zero, &es_s),
        ("es256_r_and_s_zero", &zero, &zero),
        ("es256_s_zero", &es_r, &zero),
        ("es256_s_equals_n", &es_r, &P256_ORDER),
        ("es256_s_max", &es_r, &[0xff; 32]),
        ("es256_r_equals_n", &P256_ORDER, &es_s),
    ] {
        c.bad(
            name,
            R::Signature,
            with_signature(&es_good, &p256_raw_signature(r, s)),
        );
    }
    c.bad(
        "es256_der_signature",
        R::Signature,
        with_signature(&es_good, &ecdsa_der_signature(&es_sig)),
    );

    // Keys in the header: never trusted.
    let attacker_header = |set: Value| header_with(attacker, set);
    c.bad(
        "jwk_header_attacker_key",
        R::HeaderMember,
        attacker.sign(
            attacker_header(json!({"jwk": attacker.jwk()})),
            base.clone(),
        ),
    );
    c.bad(
        "jwk_header_attacker_key_no_kid",
        R::HeaderMember,
        attacker.sign(
            attacker_header(json!({"jwk": attacker.jwk(), "kid": null})),
            base.clone(),
        ),
    );
    c.bad(
        "jwk_header_attacker_key_trusted_kid",
        R::HeaderMember,
        attacker.sign(
            attacker_header(json!({"jwk": attacker.jwk(), "kid": rs.kid})),
            base.clone(),
        ),
    );
    let attacker_secret = b"attacker-chosen-hmac-secret-attacker-chosen-hmac-secret-0123456";
    c.bad(
        "jwk_header_attacker_hmac_no_kid",
        R::HeaderMember,
        sign_hmac(
            attacker_secret,
            Alg::HS256,
            json!({"alg": "HS256", "typ": "JWT", "jwk": {"kty": "oct", "k": b64(attacker_secret)}}),
            base.clone(),
        ),
    );
    c.bad(
        "jku_attacker",
        R::UnknownKey,
        attacker.sign(
            attacker_header(json!({"jku": "https://attacker.test/jwks.json"})),
            base.clone(),
        ),
    );
    c.bad(
        "x5u_attacker",
        R::UnknownKey,
        attacker.sign(
            attacker_header(json!({"x5u": "https://attacker.test/cert.pem"})),
            base.clone(),
        ),
    );
    c.bad(
        "x5c_attacker",
        R::UnknownKey,
        attacker.sign(
            attacker_header(json!({"x5c": attacker_x5c.clone()})),
            base.clone(),
        ),
    );
    c.bad(
        "x5c_attacker_no_kid",
        R::Signature,
        attacker.sign(
            attacker_header(json!({"x5c": attacker_x5c, "kid": null})),
            base.clone(),
        ),
    );

    // Payload JSON.
    for (name, payload) in [
        ("payload_json_array", r#"["api"]"#),
        ("payload_json_string", r#""api""#),
        ("payload_json_true", "true"),
        ("payload_json_null", "null"),
        ("payload_not_json", "{iss:x}"),
        ("payload_empty", ""),
    ] {
        c.bad(
            name,
            R::Payload,
            rs.sign_raw(&rs.header().to_string(), payload),
        );
    }
    let not_utf8 = [
        format!(
            r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{},"sub":""#,
            now + 3600
        )
        .as_bytes(),
        b"\xff\xfe",
        b"\"}",
    ]
    .concat();
    c.bad(
        "payload_not_utf8",
        R::Payload,
        rs.sign_bytes(rs.header().to_string().as_bytes(), &not_utf8),
    );
    let header_text = rs.header().to_string();
    let dup = |text: String| rs.sign_raw(&header_text, &text);
    c.bad(
        "payload_duplicate_iss",
        R::DuplicateMember,
        dup(format!(
            r#"{{"iss":"https://evil.test","aud":"{AUDIENCE}","exp":{},"iss":"{ISSUER}"}}"#,
            now + 3600
        )),
    );
    c.bad(
        "payload_duplicate_exp",
        R::DuplicateMember,
        dup(format!(
            r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{},"exp":{}}}"#,
            now - 3600,
            now + 3600
        )),
    );
    c.bad(
        "payload_duplicate_aud",
        R::DuplicateMember,
        dup(format!(
            r#"{{"iss":"{ISSUER}","aud":"other","exp":{},"aud":"{AUDIENCE}"}}"#,
            now + 3600
        )),
    );

    // Time claims.
    c.bad(
        "expired",
        R::Expired,
        rs.token(at(json!({"exp": now - 3600, "iat": now - 7200}))),
    );
    c.bad(
        "expired_beyond_skew",
        R::Expired,
        rs.token(at(json!({"exp": now - 150, "iat": now - 3600}))),
    );
    c.bad("exp_negative", R::Expired, rs.token(at(json!({"exp": -1}))));
    c.bad("exp_zero", R::Expired, rs.token(at(json!({"exp": 0}))));
    c.bad(
        "nbf_future",
        R::NotYetValid,
        rs.token(at(json!({"nbf": now + 3600}))),
    );
    c.bad(
        "nbf_beyond_skew",
        R::NotYetValid,
        rs.token(at(json!({"nbf": now + 150}))),
    );
    c.bad(
        "iat_future",
        R::IssuedInFuture,
        rs.token(at(json!({"iat": now + 3600}))),
    );
    c.bad(
        "iat_beyond_skew",
        R::IssuedInFuture,
        rs.token(at(json!({"iat": now + 150}))),
    );
    c.bad(
        "missing_exp",
        R::MissingExp,
        rs.token(at(json!({"exp": null}))),
    );
    c.bad(
        "exp_float",
        R::ClaimType,
        rs.token(at(json!({"exp": (now + 3600) as f64 + 0.5}))),
    );
    c.bad(
        "exp_float_integral",
        R::ClaimType,
        rs.token(at(json!({"exp": (now + 3600) as f64}))),
    );
    let exponent = base.to_string().replace(
        &format!("\"exp\":{}", now + 3600),
        &format!("\"exp\":{}e0", now + 3600),
    );
    c.bad(
        "exp_exponent",
        R::ClaimType,
        rs.sign_raw(&header_text, &exponent),
    );
    c.bad(
        "exp_string",
        R::ClaimType,
        rs.token(at(json!({"exp": (now + 3600).to_string()}))),
    );
    c.bad("exp_null", R::ClaimType, rs.token(set("exp", Value::Null)));
    c.bad("exp_bool", R::ClaimType, rs.token(at(json!({"exp": true}))));
    c.bad(
        "nbf_string",
        R::ClaimType,
        rs.token(at(json!({"nbf": (now - 60).to_string()}))),
    );
    c.bad(
        "iat_float",
        R::ClaimType,
        rs.token(at(json!({"iat": now as f64 + 0.25}))),
    );

    // Issuer.
    for (name, iss) in [
        ("iss_wrong", json!("https://evil.test")),
        ("iss_trailing_slash", json!(format!("{ISSUER}/"))),
        ("iss_case", json!("https://ISSUER.test")),
        ("iss_not_string", json!([ISSUER])),
    ] {
        c.bad(name, R::Issuer, rs.token(at(json!({ "iss": iss }))));
    }
    c.bad("iss_missing", R::Issuer, rs.token(at(json!({"iss": null}))));

    // Audience.
    for (name, aud) in [
        ("aud_wrong", json!("other")),
        ("aud_array_without_api", json!(["other", "web"])),
        ("aud_empty_array", json!([])),
        ("aud_case", json!("API")),
        ("aud_prefix", json!("api2")),
        ("aud_not_string", json!(1)),
    ] {
        c.bad(name, R::Audience, rs.token(at(json!({ "aud": aud }))));
    }
    c.bad(
        "aud_missing",
        R::Audience,
        rs.token(at(json!({"aud": null}))),
    );

    c.tokens
}

/// The corpus token named `name`.
pub fn corpus_token<'a>(corpus: &'a [CorpusToken], name: &str) -> Option<&'a CorpusToken> {
    corpus.iter().find(|t| t.name == name)
}

/// An object's members in order, duplicates kept: `None` if `text` is not
/// one JSON object.
pub fn object_members(text: &[u8]) -> Option<Vec<(String, Value)>> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    struct Members(Vec<(String, Value)>);
    struct MembersVisitor;
    impl<'de> Visitor<'de> for MembersVisitor {
        type Value = Members;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
            let mut members = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, Value>()? {
                members.push((k, v));
            }
            Ok(Members(members))
        }
    }
    impl<'de> serde::Deserialize<'de> for Members {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
            d.deserialize_map(MembersVisitor)
        }
    }
    let text = std::str::from_utf8(text).ok()?;
    serde_json::from_str::<Members>(text).ok().map(|m| m.0)
}

/// A JSON object's members as a map, or `Err(true)` if a name repeats,
/// `Err(false)` if `text` is not one UTF-8 JSON object.
pub fn strict_object(text: &[u8]) -> std::result::Result<Map<String, Value>, bool> {
    let members = object_members(text).ok_or(false)?;
    let mut map = Map::new();
    for (k, v) in members {
        if map.insert(k, v).is_some() {
            return Err(true);
        }
    }
    Ok(map)
}
