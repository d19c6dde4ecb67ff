//! JWKS documents: the keys the filter can use, and a count of those it
//! skipped (an `enc` key, an unsupported `kty` or `crv`, a short RSA key).
//! Skipped keys are never fatal: Keycloak publishes an `enc` key beside its
//! signing keys.

use crate::der;
use crate::token::b64url_lenient;
use serde_json::Value;

/// A JWS algorithm this filter accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// The exact (case-sensitive) JWS name; anything else is not accepted.
    pub fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            _ => return None,
        })
    }

    /// Whether a key of this material can verify this algorithm. The routine
    /// comes from the key, never from the token alone: an RSA key never
    /// verifies an HMAC.
    pub fn suits(self, material: &Material) -> bool {
        match (self, material) {
            (Alg::RS256 | Alg::RS384 | Alg::RS512, Material::Rsa { .. }) => true,
            (Alg::PS256 | Alg::PS384 | Alg::PS512, Material::Rsa { .. }) => true,
            (Alg::ES256, Material::Ec { curve, .. }) => *curve == Curve::P256,
            (Alg::ES384, Material::Ec { curve, .. }) => *curve == Curve::P384,
            (Alg::EdDSA, Material::Ed25519 { .. }) => true,
            (Alg::HS256 | Alg::HS384 | Alg::HS512, Material::Oct { .. }) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    P256,
    P384,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        spki: Vec<u8>,
    },
    /// `point` is uncompressed: 0x04 ‖ x ‖ y.
    Ec {
        curve: Curve,
        point: Vec<u8>,
        spki: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
    Oct {
        k: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub kid: Option<String>,
    /// The key's own `alg`, which then binds it to that algorithm.
    pub alg: Option<Alg>,
    pub material: Material,
    /// Identifies the key material, for the verified-token cache.
    pub fingerprint: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<Key>,
    /// Why each skipped key was skipped.
    pub skipped: Vec<String>,
}

pub const MIN_RSA_BITS: usize = 2048;
const MIN_OCT_BYTES: usize = 32;

impl KeySet {
    /// Parses a JWKS document. Errors only when the document itself is not
    /// a JWKS; unusable keys are skipped.
    pub fn parse(doc: &[u8]) -> Result<KeySet, String> {
        Self::parse_with(doc, true)
    }

    /// Parses a fetched JWKS: `oct` (shared secret) keys are accepted only
    /// inline in the config, never from the network.
    pub fn parse_remote(doc: &[u8]) -> Result<KeySet, String> {
        Self::parse_with(doc, false)
    }

    fn parse_with(doc: &[u8], allow_oct: bool) -> Result<KeySet, String> {
        let value: Value =
            serde_json::from_slice(doc).map_err(|e| format!("not a JWKS (invalid JSON: {e})"))?;
        let keys = value
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("not a JWKS (expected an object with a \"keys\" array)")?;
        let mut set = KeySet::default();
        for (i, k) in keys.iter().enumerate() {
            match parse_key(k, allow_oct) {
                Ok(key) => set.keys.push(key),
                Err(why) => {
                    let kid = k.get("kid").and_then(Value::as_str).unwrap_or("");
                    set.skipped.push(format!("keys[{i}] {kid:?}: {why}"));
                }
            }
        }
        Ok(set)
    }

    pub fn skipped_summary(&self) -> String {
        if self.skipped.is_empty() {
            "no keys".to_string()
        } else {
            format!("skipped {}", self.skipped.join("; "))
        }
    }

    pub fn contains_fingerprint(&self, fingerprint: u64) -> bool {
        self.keys.iter().any(|k| k.fingerprint == fingerprint)
    }
}

fn field<'a>(k: &'a Value, name: &str) -> Result<&'a str, String> {
    k.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing {name}"))
}

fn bytes(k: &Value, name: &str) -> Result<Vec<u8>, String> {
    b64url_lenient(field(k, name)?.as_bytes()).ok_or_else(|| format!("{name} is not base64url"))
}

fn parse_key(k: &Value, allow_oct: bool) -> Result<Key, String> {
    if !k.is_object() {
        return Err("not an object".into());
    }
    if let Some(u) = k.get("use")
        && u.as_str() != Some("sig")
    {
        return Err(format!("use {u} is not \"sig\""));
    }
    let alg = match k.get("alg") {
        None => None,
        Some(a) => Some(
            a.as_str()
                .and_then(Alg::from_name)
                .ok_or_else(|| format!("unsupported alg {a}"))?,
        ),
    };
    let kid = match k.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(format!("kid {other} is not a string")),
    };
    let kty = field(k, "kty")?;
    let material = match kty {
        "RSA" => {
            let n = bytes(k, "n")?;
            let e = bytes(k, "e")?;
            let n: Vec<u8> = n.iter().copied().skip_while(|b| *b == 0).collect();
            let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA key of {bits} bits, under {MIN_RSA_BITS}"));
            }
            if e.iter().all(|b| *b == 0) {
                return Err("RSA exponent is 0".into());
            }
            let spki = der::rsa_spki(&n, &e);
            Material::Rsa { n, e, spki }
        }
        "EC" => {
            let (curve, len, oid) = match field(k, "crv")? {
                "P-256" => (Curve::P256, 32, der::OID_P256),
                "P-384" => (Curve::P384, 48, der::OID_P384),
                other => return Err(format!("unsupported crv {other:?}")),
            };
            let x = bytes(k, "x")?;
            let y = bytes(k, "y")?;
            if x.len() != len || y.len() != len {
                return Err("EC coordinates of the wrong length".into());
            }
            let mut point = vec![0x04];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let spki = der::ec_spki(oid, &point);
            Material::Ec { curve, point, spki }
        }
        "OKP" => {
            let crv = field(k, "crv")?;
            if crv != "Ed25519" {
                return Err(format!("unsupported crv {crv:?}"));
            }
            let x = bytes(k, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 key of the wrong length".into());
            }
            Material::Ed25519 { x }
        }
        "oct" if !allow_oct => return Err("oct keys are accepted only inline".into()),
        "oct" => {
            let k = bytes(k, "k")?;
            if k.len() < MIN_OCT_BYTES {
                return Err(format!("oct key of {} bits, under 256", k.len() * 8));
            }
            Material::Oct { k }
        }
        other => return Err(format!("unsupported kty {other:?}")),
    };
    if let Some(alg) = alg
        && !alg.suits(&material)
    {
        return Err(format!("alg {alg:?} does not suit kty {kty}"));
    }
    let mut print = Vec::new();
    print.extend_from_slice(kty.as_bytes());
    print.extend_from_slice(kid.as_deref().unwrap_or("").as_bytes());
    match &material {
        Material::Rsa { n, e, .. } => {
            print.extend_from_slice(n);
            print.extend_from_slice(e);
        }
        Material::Ec { point, .. } => print.extend_from_slice(point),
        Material::Ed25519 { x } => print.extend_from_slice(x),
        Material::Oct { k } => print.extend_from_slice(k),
    }
    Ok(Key {
        kid,
        alg,
        material,
        fingerprint: kit::hash::hash64(&print),
    })
}
