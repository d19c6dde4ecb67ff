//! Envoy's `verify_signature` foreign function: the proxy checks a signature
//! with its own BoringSSL, faster than the same check compiled to Wasm.
//!
//! The function takes its arguments as a serialized protobuf message and
//! answers with another. Only a handful of length-delimited fields go in and
//! one boolean comes back, so both are written and read here by hand rather
//! than with a protobuf library, which would weigh on the module's size.
//!
//! Whether the host has the function at all is learnt on the first call and
//! remembered; a host without it (or a test host) leaves every check to
//! jwt-simple.

use crate::verify::SignatureHost;
use kit::{Host, HostError};
use std::cell::Cell;

/// Envoy's `verify_signature` foreign function (BoringSSL), with its
/// protobuf arguments written by hand.
pub(crate) struct HostCrypto<'a> {
    host: &'a dyn Host,
    /// Whether the host has `verify_signature`: `None` until the first call.
    available: &'a Cell<Option<bool>>,
}

impl<'a> HostCrypto<'a> {
    pub(crate) fn new(host: &'a dyn Host, available: &'a Cell<Option<bool>>) -> HostCrypto<'a> {
        HostCrypto { host, available }
    }
}

/// Appends a length-delimited field (wire type 2): the tag, the length as a
/// varint, then the bytes.
fn proto_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(field << 3 | 2);
    let mut len = bytes.len();
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
}

/// `VerifySignatureResult.result` (field 1, varint); other fields skipped.
fn proto_result(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        let tag = bytes[i];
        i += 1;
        let mut value: u64 = 0;
        let mut shift = 0;
        match tag & 7 {
            0 | 2 => {
                while i < bytes.len() {
                    let b = bytes[i];
                    i += 1;
                    value |= u64::from(b & 0x7f) << shift.min(63);
                    shift += 7;
                    if b & 0x80 == 0 {
                        break;
                    }
                }
                if tag == 0x08 {
                    return value == 1;
                }
                if tag & 7 == 2 {
                    i = i.saturating_add(value as usize);
                }
            }
            _ => return false,
        }
    }
    false
}

impl SignatureHost for HostCrypto<'_> {
    fn verify_signature(&self, hash: &str, spki: &[u8], sig: &[u8], text: &[u8]) -> Option<bool> {
        if self.available.get() == Some(false) {
            return None;
        }
        let mut args = Vec::with_capacity(spki.len() + sig.len() + text.len() + 32);
        proto_field(&mut args, 1, hash.as_bytes());
        proto_field(&mut args, 2, spki);
        proto_field(&mut args, 3, sig);
        proto_field(&mut args, 4, text);
        match self.host.call_foreign_function("verify_signature", &args) {
            Ok(result) => {
                self.available.set(Some(true));
                Some(result.is_some_and(|r| proto_result(&r)))
            }
            Err(HostError::NotFound) | Err(HostError::Unimplemented) => {
                log::info!("the host has no verify_signature; verifying with jwt-simple");
                self.available.set(Some(false));
                None
            }
            // A key BoringSSL will not import, or any other failure: invalid.
            Err(_) => Some(false),
        }
    }
}
