//! A strict parse of a compact JWS before any key is touched: three
//! segments, canonical base64url, JSON objects with unique names, a known
//! `alg`, no `crit`, and integer time claims. Everything jwt-simple or
//! BoringSSL sees afterwards has passed this.

use crate::jwks::Alg;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Canonical base64url: no padding, no stray characters, zero trailing bits.
const STRICT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// For JWK members, where some publishers pad.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub fn b64url_strict(input: &[u8]) -> Option<Vec<u8>> {
    STRICT.decode(input).ok()
}

pub fn b64url_lenient(input: &[u8]) -> Option<Vec<u8>> {
    LENIENT.decode(input).ok()
}

/// The latest time claim accepted: 9999-12-31T23:59:59Z.
pub const MAX_TIME: u64 = 253_402_300_799;

/// Why a token was refused. The text is safe to show the client: it never
/// holds key material or token contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Missing,
    Malformed(&'static str),
    Expired,
    NotYetValid,
    IssuedInFuture,
    BadSignature,
    UnknownKid,
    Issuer,
    Audience,
    /// The keys are not there yet (the JWKS could not be fetched in time).
    NoKeys,
}

impl Reject {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Reject::Missing => "missing",
            Reject::Malformed(_) => "malformed",
            Reject::Expired | Reject::NotYetValid | Reject::IssuedInFuture => "expired",
            Reject::BadSignature => "bad_signature",
            Reject::UnknownKid | Reject::NoKeys => "unknown_kid",
            Reject::Issuer => "issuer",
            Reject::Audience => "audience",
        }
    }

    /// The `error_description` and body message.
    pub fn message(self) -> String {
        match self {
            Reject::Missing => "Jwt is missing".into(),
            Reject::Malformed(why) => format!("Jwt is malformed: {why}"),
            Reject::Expired => "Jwt is expired".into(),
            Reject::NotYetValid => "Jwt is not yet valid".into(),
            Reject::IssuedInFuture => "Jwt is issued in the future".into(),
            Reject::BadSignature => "Jwt verification fails".into(),
            Reject::UnknownKid => "Jwt is signed by an unknown key".into(),
            Reject::Issuer => "Jwt issuer is not configured".into(),
            Reject::Audience => "Audiences in Jwt are not allowed".into(),
            Reject::NoKeys => "Jwks is not available".into(),
        }
    }
}

/// A token that passed the strict parse (its signature is not yet checked).
#[derive(Debug, Clone)]
pub struct Parsed<'t> {
    pub token: &'t str,
    /// `header.payload`, the signed bytes.
    pub signing_input: &'t str,
    pub payload_b64: &'t str,
    pub signature: Vec<u8>,
    pub alg: Alg,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    pub iss: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
}

/// A JSON object whose member names are unique; serde_json alone keeps the
/// last of two equal names, which lets a token say two things at once.
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueObject, A::Error> {
                let mut map = Map::new();
                while let Some((k, v)) = access.next_entry::<String, Value>()? {
                    if map.contains_key(&k) {
                        return Err(serde::de::Error::custom("duplicate member name"));
                    }
                    map.insert(k, v);
                }
                Ok(UniqueObject(map))
            }
        }
        deserializer.deserialize_map(V)
    }
}

fn object(segment: &str, what: &'static str) -> Result<Map<String, Value>, Reject> {
    let json = b64url_strict(segment.as_bytes()).ok_or(Reject::Malformed(what))?;
    serde_json::from_slice::<UniqueObject>(&json)
        .map(|o| o.0)
        .map_err(|_| Reject::Malformed(what))
}

fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, Reject> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(t) if t <= MAX_TIME => Ok(Some(t)),
            _ => Err(Reject::Malformed("time claims must be integers in range")),
        },
    }
}

pub fn parse(token: &str, max_bytes: usize) -> Result<Parsed<'_>, Reject> {
    if token.len() > max_bytes {
        return Err(Reject::Malformed("token too large"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reject::Malformed("expected three segments"));
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(Reject::Malformed("empty segment"));
    }
    let header = object(h, "bad header")?;
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some(a) if a.eq_ignore_ascii_case("none") => {
            return Err(Reject::Malformed("alg none is not allowed"));
        }
        Some(a) => Alg::from_name(a).ok_or(Reject::Malformed("unsupported alg"))?,
        None => return Err(Reject::Malformed("missing alg")),
    };
    match header.get("typ") {
        None => {}
        Some(Value::String(t))
            if t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("at+jwt") => {}
        Some(_) => return Err(Reject::Malformed("unsupported typ")),
    }
    // No extension is understood, so any `crit` names something unknown.
    if header.contains_key("crit") {
        return Err(Reject::Malformed("unsupported crit"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(Reject::Malformed("kid must be a string")),
    };
    // jku, x5u, jwk and x5c are never fetched or trusted: keys come only from
    // the configured JWKS. jwt-simple (one of the two verify paths) types
    // them strictly, so they are held to those types here: one decision,
    // whichever path checks the signature. An RFC 7515 `jwk` object is
    // refused for that reason.
    for name in ["cty", "jku", "jwk", "x5u", "x5t", "x5t#S256"] {
        if header.get(name).is_some_and(|v| !v.is_string()) {
            return Err(Reject::Malformed("unsupported header member"));
        }
    }
    if let Some(x5c) = header.get("x5c")
        && !x5c
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string))
    {
        return Err(Reject::Malformed("unsupported header member"));
    }
    if header.contains_key("salt") {
        return Err(Reject::Malformed("unsupported header member"));
    }
    let claims = object(p, "bad payload")?;
    for name in ["sub", "jti", "nonce"] {
        if claims.get(name).is_some_and(|v| !v.is_string()) {
            return Err(Reject::Malformed("sub, jti and nonce must be strings"));
        }
    }
    let signature =
        b64url_strict(s.as_bytes()).ok_or(Reject::Malformed("bad signature encoding"))?;
    let iss = match claims.get("iss") {
        None => None,
        Some(Value::String(i)) => Some(i.clone()),
        Some(_) => return Err(Reject::Malformed("iss must be a string")),
    };
    let aud = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or(Reject::Malformed("aud must be a string or strings"))?,
        Some(_) => return Err(Reject::Malformed("aud must be a string or strings")),
    };
    Ok(Parsed {
        token,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload_b64: p,
        signature,
        alg,
        kid,
        exp: time_claim(&claims, "exp")?,
        nbf: time_claim(&claims, "nbf")?,
        iat: time_claim(&claims, "iat")?,
        iss,
        aud,
        claims,
    })
}
