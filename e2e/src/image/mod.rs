//! Wasm OCI images, the way Istio ships modules to sidecars.
//!
//! - [`build`]: one image per module, in either variant of the Wasm image
//!   specification that Istio's fetcher reads, byte for byte reproducible;
//! - [`layout`]: the OCI image layout on disk (`target/images/<name>/`);
//! - [`meta`]: the tag and `org.opencontainers.image.*` annotations, from
//!   `cargo metadata` and git;
//! - [`registry`]: push and pull through `oci-client`, with credentials from
//!   the Docker config and errors that say what to do;
//! - [`fetch`]: what istio-agent does before Envoy sees a module: resolve,
//!   verify digests, extract, check it is Wasm, compare the WasmPlugin's
//!   `sha256`, cache by digest;
//! - [`manifests`]: copies of the shipped WasmPlugins pinned to pushed
//!   images.

pub mod build;
pub mod fetch;
pub mod layout;
pub mod manifests;
pub mod meta;
pub mod registry;

pub use build::{Blob, Descriptor, Image, Manifest, Meta, Variant};

/// An OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index (a list of manifests, one per platform).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// A Docker image manifest, schema 2: what `docker push` writes.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A Docker manifest list (multi-platform).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The image config of a standard OCI image (the compat variant's).
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The image config `docker push` writes.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// A gzip-compressed tar layer: the compat variant's only layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker's gzip-compressed tar layer, which Istio also reads as compat.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The oci variant's runtime config (`type`, ABI versions, root ids).
pub const WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
/// The oci variant's layer: the module bytes as they are.
pub const WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";

/// The manifest annotation that marks a compat image with an OCI layer.
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";
/// The file the compat layer holds the module as.
pub const PLUGIN_FILE: &str = "plugin.wasm";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// The lowercase hex sha256 of `bytes`, as a WasmPlugin's `sha256` holds it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in hash.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether `bytes` start like a Wasm binary: the magic `\0asm` and a 4-byte
/// version, the check istio-agent makes before it hands a module to Envoy.
pub fn is_wasm(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes.starts_with(b"\0asm")
}

/// Whether a registry host (with or without a port) is on loopback:
/// `127.0.0.1`, any `127.x.y.z`, `localhost` or `[::1]`. These are reached
/// over plain HTTP, as a local registry serves it.
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries() {
        for r in [
            "127.0.0.1:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "localhost:5000",
            "LOCALHOST",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback_registry(r), "{r}");
        }
        for r in [
            "registry.example.com",
            "10.0.0.1:5000",
            "ghcr.io",
            "localhost.example.com:5000",
            "[::2]:5000",
        ] {
            assert!(!is_loopback_registry(r), "{r}");
        }
    }

    #[test]
    fn digests_and_magic() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_wasm(b"\0asm\x01\0\0\0"));
        assert!(!is_wasm(b"\0asm"));
        assert!(!is_wasm(b"#!/bin/sh\n"));
    }
}
