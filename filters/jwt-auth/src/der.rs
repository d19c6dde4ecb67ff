//! The little DER that Envoy's `verify_signature` needs: SubjectPublicKeyInfo
//! for RSA and EC keys, and ECDSA signatures (JWS carries raw r‖s, BoringSSL
//! wants a DER SEQUENCE of two INTEGERs).

const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// The order n of P-256, big-endian.
pub const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The order n of P-384, big-endian.
pub const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A non-negative INTEGER from big-endian bytes.
fn integer(value: &[u8]) -> Vec<u8> {
    let skip = value.iter().take_while(|b| **b == 0).count();
    let mut v = value[skip..].to_vec();
    if v.first().is_none_or(|b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    tlv(0x02, &v)
}

fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn bit_string(content: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(content);
    tlv(0x03, &v)
}

/// SubjectPublicKeyInfo of an RSA key.
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let algorithm = sequence(&[&tlv(0x06, OID_RSA_ENCRYPTION), &[0x05, 0x00]]);
    let key = sequence(&[&integer(n), &integer(e)]);
    sequence(&[&algorithm, &bit_string(&key)])
}

/// SubjectPublicKeyInfo of an EC key given as an uncompressed point.
pub fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let algorithm = sequence(&[&tlv(0x06, OID_EC_PUBLIC_KEY), &tlv(0x06, curve_oid)]);
    sequence(&[&algorithm, &bit_string(point)])
}

/// Turns a raw r‖s ECDSA signature into DER, refusing r or s equal to 0 or
/// at or above the curve order (the "psychic signature" class of bugs).
pub fn ecdsa_raw_to_der(raw: &[u8], order: &[u8]) -> Option<Vec<u8>> {
    let half = order.len();
    if raw.len() != 2 * half {
        return None;
    }
    let (r, s) = raw.split_at(half);
    let in_range = |v: &[u8]| v.iter().any(|b| *b != 0) && v < order;
    if !in_range(r) || !in_range(s) {
        return None;
    }
    Some(sequence(&[&integer(r), &integer(s)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(integer(&[0, 0, 1]), vec![0x02, 0x01, 0x01]);
        assert_eq!(integer(&[0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer(&[0]), vec![0x02, 0x01, 0x00]);
        let long = tlv(0x04, &[7u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn ecdsa_range_is_checked() {
        let mut raw = [1u8; 64];
        assert!(ecdsa_raw_to_der(&raw, &P256_ORDER).is_some());
        raw[..32].fill(0);
        assert!(ecdsa_raw_to_der(&raw, &P256_ORDER).is_none(), "r = 0");
        let mut raw = [1u8; 64];
        raw[32..].copy_from_slice(&P256_ORDER);
        assert!(ecdsa_raw_to_der(&raw, &P256_ORDER).is_none(), "s = n");
        raw[32..].fill(0xff);
        assert!(ecdsa_raw_to_der(&raw, &P256_ORDER).is_none(), "s > n");
        assert!(
            ecdsa_raw_to_der(&[1u8; 63], &P256_ORDER).is_none(),
            "length"
        );
    }
}
