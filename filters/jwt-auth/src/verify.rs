//! Token verification against a provider's keys. The verify routine comes
//! from the configured key (`kty`, `crv`, `alg`), never from the token header
//! alone. RS* and ES* go through the host's BoringSSL (`verify_signature`)
//! when it has it, else through jwt-simple, like PS*, EdDSA and HS*.

use crate::config::Provider;
use crate::der;
use crate::jwks::{Alg, Curve, Key, KeySet, Material};
use crate::token::{Parsed, Reject};
use jwt_simple::prelude::*;

/// Verifies a signature with the host's crypto: `Some(valid)`, or `None`
/// when the host cannot (then jwt-simple does it).
pub trait SignatureHost {
    fn verify_signature(
        &self,
        hash: &str,
        spki: &[u8],
        signature: &[u8],
        text: &[u8],
    ) -> Option<bool>;
}

/// A host without `verify_signature`: everything goes through jwt-simple.
pub struct PureRust;

impl SignatureHost for PureRust {
    fn verify_signature(&self, _: &str, _: &[u8], _: &[u8], _: &[u8]) -> Option<bool> {
        None
    }
}

/// A token that verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub provider: usize,
    pub exp: Option<u64>,
    /// The key that signed it, for the verified-token cache.
    pub key_fingerprint: u64,
}

/// Picks the provider by `iss` among `candidates` (indexes into `providers`).
pub fn provider_for<'p>(
    parsed: &Parsed,
    providers: &'p [Provider],
    candidates: &[usize],
) -> Result<(usize, &'p Provider), Reject> {
    let iss = parsed.iss.as_deref().ok_or(Reject::Issuer)?;
    candidates
        .iter()
        .filter_map(|&i| providers.get(i).map(|p| (i, p)))
        .find(|(_, p)| p.issuer == iss)
        .ok_or(Reject::Issuer)
}

/// Time, audience and expiry checks, with the provider's clock skew.
pub fn check_claims(parsed: &Parsed, provider: &Provider, now: u64) -> Result<(), Reject> {
    let skew = provider.clock_skew.as_secs();
    match parsed.exp {
        None if provider.require_expiration => return Err(Reject::Malformed("missing exp")),
        Some(exp) if now > exp.saturating_add(skew) => return Err(Reject::Expired),
        _ => {}
    }
    if let Some(nbf) = parsed.nbf
        && now.saturating_add(skew) < nbf
    {
        return Err(Reject::NotYetValid);
    }
    if let Some(iat) = parsed.iat
        && iat > now.saturating_add(skew)
    {
        return Err(Reject::IssuedInFuture);
    }
    if !provider.audiences.is_empty() && !parsed.aud.iter().any(|a| provider.audiences.contains(a))
    {
        return Err(Reject::Audience);
    }
    Ok(())
}

/// The keys that may have signed this token: matching `kid` if it has one
/// (every key otherwise, as Envoy does), suiting its `alg`, and bound to that
/// `alg` if the key names one.
pub fn candidate_keys<'k>(parsed: &Parsed, keys: &'k KeySet) -> Result<Vec<&'k Key>, Reject> {
    let by_kid: Vec<&Key> = match &parsed.kid {
        Some(kid) => keys
            .keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
            .collect(),
        None => keys.keys.iter().collect(),
    };
    if parsed.kid.is_some() && by_kid.is_empty() {
        return Err(Reject::UnknownKid);
    }
    let suitable: Vec<&Key> = by_kid
        .into_iter()
        .filter(|k| parsed.alg.suits(&k.material) && k.alg.is_none_or(|a| a == parsed.alg))
        .collect();
    if suitable.is_empty() {
        // A key exists but not for this alg: RS256→HS256 confusion ends here.
        return Err(Reject::BadSignature);
    }
    Ok(suitable)
}

/// Checks the claims, then the signature against the candidate keys.
pub fn verify(
    parsed: &Parsed,
    provider_index: usize,
    provider: &Provider,
    keys: &KeySet,
    now: u64,
    crypto: &dyn SignatureHost,
) -> Result<Verified, Reject> {
    check_claims(parsed, provider, now)?;
    let candidates = candidate_keys(parsed, keys)?;
    let mut last = Reject::BadSignature;
    for key in candidates {
        match verify_signature(parsed, key, provider, now, crypto) {
            Ok(()) => {
                return Ok(Verified {
                    provider: provider_index,
                    exp: parsed.exp,
                    key_fingerprint: key.fingerprint,
                });
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn hash_name(alg: Alg) -> &'static str {
    match alg {
        Alg::RS384 | Alg::PS384 | Alg::ES384 | Alg::HS384 => "sha384",
        Alg::RS512 | Alg::PS512 | Alg::HS512 => "sha512",
        _ => "sha256",
    }
}

fn verify_signature(
    parsed: &Parsed,
    key: &Key,
    provider: &Provider,
    now: u64,
    crypto: &dyn SignatureHost,
) -> Result<(), Reject> {
    let text = parsed.signing_input.as_bytes();
    match (&key.material, parsed.alg) {
        (Material::Rsa { spki, .. }, Alg::RS256 | Alg::RS384 | Alg::RS512) => {
            if let Some(ok) =
                crypto.verify_signature(hash_name(parsed.alg), spki, &parsed.signature, text)
            {
                return if ok {
                    Ok(())
                } else {
                    Err(Reject::BadSignature)
                };
            }
        }
        (Material::Ec { curve, spki, .. }, Alg::ES256 | Alg::ES384) => {
            let order: &[u8] = match curve {
                Curve::P256 => &der::P256_ORDER,
                Curve::P384 => &der::P384_ORDER,
            };
            let sig = der::ecdsa_raw_to_der(&parsed.signature, order)
                .ok_or(Reject::Malformed("bad ECDSA signature"))?;
            if let Some(ok) = crypto.verify_signature(hash_name(parsed.alg), spki, &sig, text) {
                return if ok {
                    Ok(())
                } else {
                    Err(Reject::BadSignature)
                };
            }
        }
        _ => {}
    }
    jwt_simple_verify(parsed, key, provider, now)
}

/// jwt-simple, with options that neither loosen nor tighten the checks
/// already made: our clock skew, our time, our size limit, and no issuer or
/// audience of its own.
fn jwt_simple_verify(
    parsed: &Parsed,
    key: &Key,
    provider: &Provider,
    now: u64,
) -> Result<(), Reject> {
    let options = VerificationOptions {
        time_tolerance: Some(Duration::from_secs(provider.clock_skew.as_secs())),
        artificial_time: Some(UnixTimeStamp::from_secs(now)),
        max_token_length: Some(provider.max_token_bytes),
        max_header_length: Some(provider.max_token_bytes),
        ..Default::default()
    };
    let token = parsed.token;
    let bad = |_| Reject::BadSignature;
    let result = match (&key.material, parsed.alg) {
        (Material::Rsa { n, e, .. }, alg) => match alg {
            Alg::RS256 => RS256PublicKey::from_components(n, e)
                .and_then(|k| k.verify_token::<NoCustomClaims>(token, Some(options))),
            Alg::RS384 => RS384PublicKey::from_components(n, e)
                .and_then(|k| k.verify_token::<NoCustomClaims>(token, Some(options))),
            Alg::RS512 => RS512PublicKey::from_components(n, e)
                .and_then(|k| k.verify_token::<NoCustomClaims>(token, Some(options))),
            Alg::PS256 => PS256PublicKey::from_components(n, e)
                .and_then(|k| k.verify_token::<NoCustomClaims>(token, Some(options))),
            Alg::PS384 => PS384PublicKey::from_components(n, e)
                .and_then(|k| k.verify_token::<NoCustomClaims>(token, Some(options))),
            Alg::PS512 => PS512PublicKey::from_components(n, e)
                .and_then(|k| k.verify_token::<NoCustomClaims>(token, Some(options))),
            _ => return Err(Reject::BadSignature),
        },
        (Material::Ec { point, .. }, Alg::ES256) => ES256PublicKey::from_bytes(point)
            .and_then(|k| k.verify_token::<NoCustomClaims>(token, Some(options))),
        (Material::Ec { point, .. }, Alg::ES384) => ES384PublicKey::from_bytes(point)
            .and_then(|k| k.verify_token::<NoCustomClaims>(token, Some(options))),
        (Material::Ed25519 { x }, Alg::EdDSA) => Ed25519PublicKey::from_bytes(x)
            .and_then(|k| k.verify_token::<NoCustomClaims>(token, Some(options))),
        (Material::Oct { k }, Alg::HS256) => {
            HS256Key::from_bytes(k).verify_token::<NoCustomClaims>(token, Some(options))
        }
        (Material::Oct { k }, Alg::HS384) => {
            HS384Key::from_bytes(k).verify_token::<NoCustomClaims>(token, Some(options))
        }
        (Material::Oct { k }, Alg::HS512) => {
            HS512Key::from_bytes(k).verify_token::<NoCustomClaims>(token, Some(options))
        }
        _ => return Err(Reject::BadSignature),
    };
    result.map(|_| ()).map_err(bad)
}
