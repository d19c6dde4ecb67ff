//! One Wasm image from one module, in either variant of the Wasm image
//! specification (solo-io/wasm, istio-ecosystem/wasm-extensions) that
//! Istio's image fetcher reads:
//!
//! - **compat** (the default): one `application/vnd.oci.image.layer.v1.tar+gzip`
//!   layer holding `plugin.wasm`, a standard OCI image config, and the
//!   `module.wasm.image/variant: compat` manifest annotation. Every registry
//!   and tool (docker, crane, skopeo) handles it.
//! - **oci**: the artifact variant. Exactly two layers, as Istio's fetcher
//!   requires: the runtime config (`application/vnd.module.wasm.config.v1+json`:
//!   `type: envoy_proxy`, the ABI versions the module exports, its root ids),
//!   which is also the manifest's config, and the module bytes as they are
//!   (`application/vnd.module.wasm.content.layer.v1+wasm`).
//!
//! The bytes are reproducible: the tar entry has mtime 0, uid/gid 0 and mode
//! 0644; gzip has no timestamp and an "unknown" OS byte; JSON is written
//! from structs and sorted maps, so its key order never depends on a hash
//! seed or a serde_json feature; `created` is only set from
//! `SOURCE_DATE_EPOCH`. Two builds of one module with the same [`Meta`] give
//! the same manifest digest, on any machine.

use super::{
    OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, PLUGIN_FILE, VARIANT_ANNOTATION, WASM_CONFIG, WASM_LAYER,
    is_wasm, sha256_digest, sha256_hex,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

/// `org.opencontainers.image.title`.
pub const TITLE: &str = "org.opencontainers.image.title";
/// `org.opencontainers.image.version`.
pub const VERSION: &str = "org.opencontainers.image.version";
/// `org.opencontainers.image.revision`.
pub const REVISION: &str = "org.opencontainers.image.revision";
/// `org.opencontainers.image.source`.
pub const SOURCE: &str = "org.opencontainers.image.source";
/// `org.opencontainers.image.created`.
pub const CREATED: &str = "org.opencontainers.image.created";

/// Which variant of the Wasm image specification to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    #[default]
    Compat,
    Oci,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Compat => "compat",
            Variant::Oci => "oci",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Variant, String> {
        match s {
            "compat" => Ok(Variant::Compat),
            "oci" => Ok(Variant::Oci),
            other => Err(format!(
                "unknown image variant {other:?}: expected compat or oci"
            )),
        }
    }
}

/// What an image says about itself: its name, tag and the standard
/// `org.opencontainers.image.*` annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The image name, which is also the module's root id: `canary-router`.
    pub name: String,
    /// The tag and `org.opencontainers.image.version`: the crate's version.
    pub version: String,
    /// The git commit, with `-dirty` when the tree has changes; `None`
    /// outside a git checkout.
    pub revision: Option<String>,
    /// Where the source is (`org.opencontainers.image.source`).
    pub source: Option<String>,
    /// RFC 3339 `created` time; only from `SOURCE_DATE_EPOCH`.
    pub created: Option<String>,
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest: OCI, or Docker schema 2 (same shape, with
/// `mediaType` set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Content addressed by its sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// `sha256:<hex>`.
    pub digest: String,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            annotations: BTreeMap::new(),
        }
    }

    /// The descriptor with an `org.opencontainers.image.title` annotation,
    /// the file name oras and crane give the blob.
    fn titled(&self, title: &str) -> Descriptor {
        let mut d = self.descriptor();
        d.annotations.insert(TITLE.to_string(), title.to_string());
        d
    }
}

/// A built image: its manifest and the blobs it references.
#[derive(Debug, Clone)]
pub struct Image {
    pub meta: Meta,
    pub variant: Variant,
    /// The manifest bytes exactly as pushed; the digest is theirs.
    pub manifest: Vec<u8>,
    /// `sha256:<hex>` of [`Image::manifest`]: the value a WasmPlugin's
    /// `sha256` pins (without the prefix).
    pub digest: String,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// Lowercase hex sha256 of the module.
    pub module_sha256: String,
    pub module_size: u64,
}

impl Image {
    /// The tag: the version.
    pub fn tag(&self) -> &str {
        &self.meta.version
    }

    /// The manifest digest's hex, without `sha256:`.
    pub fn digest_hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }

    /// Every blob the manifest references, once each (the oci variant's
    /// runtime config is both its config and its first layer).
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut out: Vec<&Blob> = Vec::new();
        for b in std::iter::once(&self.config).chain(&self.layers) {
            if !out.iter().any(|o| o.digest == b.digest) {
                out.push(b);
            }
        }
        out
    }

    /// Bytes a registry stores for this image: the manifest and its blobs.
    pub fn size(&self) -> u64 {
        self.manifest.len() as u64
            + self
                .blobs()
                .iter()
                .map(|b| b.bytes.len() as u64)
                .sum::<u64>()
    }

    pub fn manifest_media_type(&self) -> &'static str {
        OCI_MANIFEST
    }
}

/// Why a module cannot become an image.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{name}: the module is not Wasm (it does not start with \\0asm and a version)")]
    NotWasm { name: String },
    #[error("{name}: the module does not parse as Wasm: {detail}")]
    Parse { name: String, detail: String },
    #[error(
        "{name}: the module exports no proxy_abi_version_* function, so Envoy would not load it as a proxy-wasm filter"
    )]
    NoAbi { name: String },
    #[error("{name}: packing the layer: {detail}")]
    Pack { name: String, detail: String },
}

/// The oci variant's runtime config, as the specification lays it out.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeConfig<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    abi_versions: Vec<String>,
    config: RootIds<'a>,
}

#[derive(Serialize)]
struct RootIds<'a> {
    root_ids: Vec<&'a str>,
}

/// A standard OCI image config: what `docker`, crane and skopeo expect of
/// the compat variant's config blob.
#[derive(Serialize)]
struct ImageConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<&'a str>,
    architecture: &'a str,
    os: &'a str,
    config: BTreeMap<String, String>,
    rootfs: RootFs,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

/// Builds the image of `module` in `variant`.
pub fn build(module: &[u8], meta: &Meta, variant: Variant) -> Result<Image, BuildError> {
    let name = meta.name.clone();
    if !is_wasm(module) {
        return Err(BuildError::NotWasm { name });
    }
    let abi_versions = abi_versions(module).map_err(|detail| BuildError::Parse {
        name: name.clone(),
        detail,
    })?;
    if abi_versions.is_empty() {
        return Err(BuildError::NoAbi { name });
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(TITLE.to_string(), meta.name.clone());
    annotations.insert(VERSION.to_string(), meta.version.clone());
    if let Some(r) = &meta.revision {
        annotations.insert(REVISION.to_string(), r.clone());
    }
    if let Some(s) = &meta.source {
        annotations.insert(SOURCE.to_string(), s.clone());
    }
    if let Some(c) = &meta.created {
        annotations.insert(CREATED.to_string(), c.clone());
    }
    let (config, layers) = match variant {
        Variant::Compat => {
            annotations.insert(VARIANT_ANNOTATION.to_string(), "compat".to_string());
            let tar = tar_of(PLUGIN_FILE, module).map_err(|e| BuildError::Pack {
                name: name.clone(),
                detail: e.to_string(),
            })?;
            let diff_id = sha256_digest(&tar);
            let layer = Blob::new(
                OCI_LAYER,
                gzip(&tar).map_err(|e| BuildError::Pack {
                    name: name.clone(),
                    detail: e.to_string(),
                })?,
            );
            let config = Blob::new(
                OCI_CONFIG,
                to_json(
                    &name,
                    &ImageConfig {
                        created: meta.created.as_deref(),
                        architecture: "wasm",
                        os: "wasip1",
                        config: BTreeMap::new(),
                        rootfs: RootFs {
                            kind: "layers",
                            diff_ids: vec![diff_id],
                        },
                    },
                )?,
            );
            (config, vec![layer])
        }
        Variant::Oci => {
            let runtime = Blob::new(
                WASM_CONFIG,
                to_json(
                    &name,
                    &RuntimeConfig {
                        kind: "envoy_proxy",
                        abi_versions,
                        config: RootIds {
                            root_ids: vec![meta.name.as_str()],
                        },
                    },
                )?,
            );
            let content = Blob::new(WASM_LAYER, module.to_vec());
            (runtime.clone(), vec![runtime, content])
        }
    };
    let layer_titles: &[&str] = match variant {
        Variant::Compat => &[],
        Variant::Oci => &["runtime-config.json", PLUGIN_FILE],
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: config.descriptor(),
        layers: layers
            .iter()
            .enumerate()
            .map(|(i, l)| match layer_titles.get(i) {
                Some(t) => l.titled(t),
                None => l.descriptor(),
            })
            .collect(),
        annotations,
    };
    let manifest_bytes = to_json(&name, &manifest)?;
    Ok(Image {
        meta: meta.clone(),
        variant,
        digest: sha256_digest(&manifest_bytes),
        manifest: manifest_bytes,
        config,
        layers,
        module_sha256: sha256_hex(module),
        module_size: module.len() as u64,
    })
}

/// JSON bytes of one of the documents above.
fn to_json<T: Serialize>(name: &str, value: &T) -> Result<Vec<u8>, BuildError> {
    serde_json::to_vec(value).map_err(|e| BuildError::Pack {
        name: name.to_string(),
        detail: e.to_string(),
    })
}

/// The `proxy_abi_version_*` functions `module` exports, sorted: the ABI
/// versions Envoy can run it with.
pub fn abi_versions(module: &[u8]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        let payload = payload.map_err(|e| e.to_string())?;
        if let wasmparser::Payload::ExportSection(reader) = payload {
            for export in reader {
                let export = export.map_err(|e| e.to_string())?;
                if export.name.starts_with("proxy_abi_version_") {
                    out.push(export.name.to_string());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A tar of one regular file with fixed metadata: mtime 0, uid/gid 0, no
/// user or group names, mode 0644.
pub fn tar_of(file: &str, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut header = tar::Header::new_ustar();
    header.set_path(file)?;
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, bytes)?;
    builder.into_inner()
}

/// gzip at the best level with no file name, mtime 0 and the "unknown" OS
/// byte, so the output depends on the input alone.
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// The smallest proxy-wasm-looking module: the header, one function type,
    /// one function exported as `proxy_abi_version_0_2_1`.
    pub fn tiny_module() -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend_from_slice(&[0x01, 0x04, 0x01, 0x60, 0x00, 0x00]); // type: () -> ()
        m.extend_from_slice(&[0x03, 0x02, 0x01, 0x00]); // func 0: type 0
        let name = b"proxy_abi_version_0_2_1";
        let mut export = vec![0x01, name.len() as u8];
        export.extend_from_slice(name);
        export.extend_from_slice(&[0x00, 0x00]); // func index 0
        m.push(0x07);
        m.push(export.len() as u8);
        m.extend_from_slice(&export);
        m.extend_from_slice(&[0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b]); // body: end
        m
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::tiny_module;
    use super::*;

    fn meta() -> Meta {
        Meta {
            name: "canary-router".into(),
            version: "0.1.0".into(),
            revision: Some("0123abc".into()),
            source: Some("https://example.com/mesh-filters".into()),
            created: None,
        }
    }

    #[test]
    fn compat_image_has_one_tar_gzip_layer_with_plugin_wasm() {
        let module = tiny_module();
        let image = build(&module, &meta(), Variant::Compat).unwrap();
        let m: Manifest = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(m.schema_version, 2);
        assert_eq!(m.media_type.as_deref(), Some(OCI_MANIFEST));
        assert_eq!(m.config.media_type, OCI_CONFIG);
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].media_type, OCI_LAYER);
        assert_eq!(m.annotations[VARIANT_ANNOTATION], "compat");
        assert_eq!(m.annotations[TITLE], "canary-router");
        assert_eq!(m.annotations[VERSION], "0.1.0");
        assert_eq!(m.annotations[REVISION], "0123abc");
        assert_eq!(m.annotations[SOURCE], "https://example.com/mesh-filters");
        assert!(!m.annotations.contains_key(CREATED));
        // The tar inside holds plugin.wasm, byte for byte, with fixed metadata.
        let gz = &image.layers[0].bytes;
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime");
        assert_eq!(gz[9], 255, "gzip OS byte");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("plugin.wasm"));
        let h = entry.header();
        assert_eq!(h.mode().unwrap(), 0o644);
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        assert_eq!(bytes, module);
        assert!(entries.next().is_none());
        // The config's diff_id is the uncompressed tar's digest.
        let config: serde_json::Value = serde_json::from_slice(&image.config.bytes).unwrap();
        let tar = tar_of(PLUGIN_FILE, &module).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256_digest(&tar));
        assert!(config.get("created").is_none());
        assert_eq!(image.module_sha256, sha256_hex(&module));
        assert_eq!(image.digest, sha256_digest(&image.manifest));
    }

    #[test]
    fn oci_image_has_the_runtime_config_and_the_raw_module() {
        let module = tiny_module();
        let image = build(&module, &meta(), Variant::Oci).unwrap();
        let m: Manifest = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(m.config.media_type, WASM_CONFIG);
        assert_eq!(m.layers.len(), 2);
        assert_eq!(m.layers[0].media_type, WASM_CONFIG);
        assert_eq!(m.layers[0].digest, m.config.digest);
        assert_eq!(m.layers[1].media_type, WASM_LAYER);
        assert_eq!(m.layers[1].digest, sha256_digest(&module));
        assert_eq!(m.layers[1].annotations[TITLE], "plugin.wasm");
        assert!(!m.annotations.contains_key(VARIANT_ANNOTATION));
        let runtime: serde_json::Value = serde_json::from_slice(&image.config.bytes).unwrap();
        assert_eq!(
            runtime,
            serde_json::json!({
                "type": "envoy_proxy",
                "abiVersions": ["proxy_abi_version_0_2_1"],
                "config": {"root_ids": ["canary-router"]}
            })
        );
        // The shared blob is pushed once.
        assert_eq!(image.blobs().len(), 2);
        assert_eq!(image.layers[1].bytes, module);
    }

    #[test]
    fn builds_are_byte_for_byte_equal_and_meta_changes_the_digest() {
        let module = tiny_module();
        for variant in [Variant::Compat, Variant::Oci] {
            let a = build(&module, &meta(), variant).unwrap();
            let b = build(&module, &meta(), variant).unwrap();
            assert_eq!(a.manifest, b.manifest);
            assert_eq!(a.digest, b.digest);
            let mut dirty = meta();
            dirty.revision = Some("0123abc-dirty".into());
            assert_ne!(build(&module, &dirty, variant).unwrap().digest, a.digest);
        }
    }

    #[test]
    fn created_comes_only_from_meta() {
        let mut m = meta();
        m.created = Some("2026-01-01T00:00:00Z".into());
        let image = build(&tiny_module(), &m, Variant::Compat).unwrap();
        let manifest: Manifest = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest.annotations[CREATED], "2026-01-01T00:00:00Z");
        let config: serde_json::Value = serde_json::from_slice(&image.config.bytes).unwrap();
        assert_eq!(config["created"], "2026-01-01T00:00:00Z");
    }

    #[test]
    fn json_keys_are_in_a_fixed_order() {
        let image = build(&tiny_module(), &meta(), Variant::Compat).unwrap();
        let text = String::from_utf8(image.manifest.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"#),
            "{text}"
        );
        let annotations = text.split(r#""annotations":"#).last().unwrap();
        let order: Vec<usize> = [VARIANT_ANNOTATION, REVISION, SOURCE, TITLE, VERSION]
            .iter()
            .map(|k| annotations.find(k).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{annotations}");
    }

    #[test]
    fn refuses_what_is_not_a_proxy_wasm_module() {
        let m = meta();
        assert!(matches!(
            build(b"#!/bin/sh\necho\n", &m, Variant::Compat),
            Err(BuildError::NotWasm { .. })
        ));
        let bare = b"\0asm\x01\0\0\0".to_vec();
        assert!(matches!(
            build(&bare, &m, Variant::Oci),
            Err(BuildError::NoAbi { .. })
        ));
        let mut broken = tiny_module();
        broken.truncate(12);
        assert!(matches!(
            build(&broken, &m, Variant::Oci),
            Err(BuildError::Parse { .. })
        ));
    }

    #[test]
    fn variants_parse() {
        assert_eq!("compat".parse::<Variant>().unwrap(), Variant::Compat);
        assert_eq!("oci".parse::<Variant>().unwrap(), Variant::Oci);
        assert!(
            "docker"
                .parse::<Variant>()
                .unwrap_err()
                .contains("compat or oci")
        );
    }
}
