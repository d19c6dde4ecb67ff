//! A claim from the JWT payload that the JWT filter forwards in a header
//! (base64url JSON, as Envoy's `forward_payload_header`).

use crate::config::{ConfigError, header_name, join};
use crate::headers::Headers;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Deserialize;

/// Where a claim comes from: `{"claim": "sub", "fromHeader": "x-jwt-payload"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimSource {
    /// The claim name; a dotted name (`realm_access.role`) reaches into objects.
    pub claim: String,
    #[serde(default = "default_payload_header")]
    pub from_header: String,
}

pub fn default_payload_header() -> String {
    "x-jwt-payload".to_string()
}

/// Payloads above this size are ignored rather than decoded.
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl ClaimSource {
    /// Compiles the `claim` and `fromHeader` fields of a key source at JSON
    /// path `path`: `None` when neither is given, an error when `fromHeader`
    /// comes without `claim` or a name is not valid. Canary stickiness and
    /// rate-limit keys read claims the same way.
    pub fn compile(
        path: &str,
        claim: Option<String>,
        from_header: Option<String>,
    ) -> Result<Option<ClaimSource>, ConfigError> {
        let Some(claim) = claim else {
            return match from_header {
                Some(_) => Err(ConfigError::new(
                    join(path, "fromHeader"),
                    "fromHeader goes with claim",
                )),
                None => Ok(None),
            };
        };
        if claim.is_empty() {
            return Err(ConfigError::new(
                join(path, "claim"),
                "expected a claim name",
            ));
        }
        let from_header = match from_header {
            Some(h) => header_name(&join(path, "fromHeader"), &h)?,
            None => default_payload_header(),
        };
        Ok(Some(ClaimSource { claim, from_header }))
    }

    /// The claim as a string (numbers and booleans as their JSON text), or
    /// `None` when the header, the claim or a valid payload is missing.
    pub fn extract(&self, headers: &Headers) -> Option<String> {
        claim_from_payload(headers.get(&self.from_header)?, &self.claim)
    }
}

pub fn claim_from_payload(encoded: &[u8], claim: &str) -> Option<String> {
    if encoded.len() > MAX_PAYLOAD_BYTES {
        return None;
    }
    let json = URL_SAFE_ANY_PADDING.decode(encoded.trim_ascii()).ok()?;
    let payload: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let value = payload
        .get(claim)
        .or_else(|| claim.split('.').try_fold(&payload, |v, part| v.get(part)))?;
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn reads_claims() {
        let p = b64(r#"{"sub":"alice","n":7,"realm_access":{"role":"staff"}}"#);
        assert_eq!(
            claim_from_payload(p.as_bytes(), "sub").as_deref(),
            Some("alice")
        );
        assert_eq!(claim_from_payload(p.as_bytes(), "n").as_deref(), Some("7"));
        assert_eq!(
            claim_from_payload(p.as_bytes(), "realm_access.role").as_deref(),
            Some("staff")
        );
        assert_eq!(claim_from_payload(p.as_bytes(), "realm_access"), None);
        assert_eq!(claim_from_payload(p.as_bytes(), "missing"), None);
        let padded = base64::engine::general_purpose::URL_SAFE.encode(r#"{"sub":"bob"}"#);
        assert_eq!(
            claim_from_payload(padded.as_bytes(), "sub").as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(claim_from_payload(b"%%%", "sub"), None);
        assert_eq!(claim_from_payload(b64("not json").as_bytes(), "sub"), None);
        assert_eq!(claim_from_payload(&[0xff, 0xfe], "sub"), None);
    }
}
