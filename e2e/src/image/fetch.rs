//! A WasmPlugin's module, fetched the way istio-agent fetches it before
//! Envoy sees it (Istio's `pkg/wasm`: the image fetcher and the module
//! cache):
//!
//! - `oci://`: resolve the tag and read the manifest: an OCI manifest, a
//!   Docker schema 2 manifest, or an index, of which the `linux/amd64` entry
//!   (or the only one) is taken, as Istio's fetcher takes it. The module comes
//!   from the compat variant's single tar+gzip layer (`plugin.wasm` in it) or
//!   from the oci variant's `application/vnd.module.wasm.content.layer.v1+wasm`
//!   layer, which must be one of exactly two layers. Every blob is checked
//!   against its digest. The WasmPlugin's `sha256` is compared with the
//!   manifest digest.
//! - `http://` and `https://`: download the module; `sha256` is compared with
//!   the module's own digest.
//! - Either way the module must start like Wasm (`\0asm` and a version).
//!
//! Refusals are errors, never a fallback: a digest mismatch, a missing tag,
//! an unreachable registry, a layer that is not Wasm, more than one
//! candidate layer. Istio takes the last of several tar+gzip layers; the
//! harness refuses them, because which one Envoy would run is then a guess.
//!
//! **Cache** (under `target/wasm-cache/` by default), by digest, as
//! istio-agent keeps it:
//! - `oci/<manifest digest>.wasm` and `http/<module digest>.wasm` hold the
//!   modules;
//! - `tags/<sha256 of the url>.json` remembers which manifest a tagged url
//!   resolved to.
//!
//! `imagePullPolicy` decides whether a tag is resolved again: `IfNotPresent`
//! uses the cache, `Always` asks the registry. Unset, it is `IfNotPresent`
//! unless the tag is `latest`. A module pinned by digest (`sha256`, or
//! `…@sha256:` in the url) is used from the cache under any policy, as
//! istio-agent does, since its content cannot change. `http(s)://` urls
//! are always downloaded unless `sha256` pins them.

use super::build::{Descriptor, Manifest};
use super::registry::{Registry, RegistryError};
use super::{
    DOCKER_LAYER, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
    PLUGIN_FILE, WASM_LAYER, is_wasm, sha256_hex,
};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest module the harness accepts (compressed or not): far above
/// any real filter, low enough that a hostile layer cannot fill the disk.
pub const MAX_MODULE: u64 = 256 * 1024 * 1024;

/// The largest image config read: configs are a few hundred bytes.
pub const MAX_CONFIG: u64 = 1024 * 1024;

/// A WasmPlugin's `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// `UNSPECIFIED_POLICY` or unset: `IfNotPresent`, except for `:latest`.
    #[default]
    Unspecified,
    IfNotPresent,
    Always,
}

impl PullPolicy {
    /// From the WasmPlugin field (the CRD's enum).
    pub fn parse(value: Option<&str>) -> Result<PullPolicy, String> {
        match value {
            None | Some("UNSPECIFIED_POLICY") => Ok(PullPolicy::Unspecified),
            Some("IfNotPresent") => Ok(PullPolicy::IfNotPresent),
            Some("Always") => Ok(PullPolicy::Always),
            Some(other) => Err(format!(
                "imagePullPolicy {other:?} is not one of UNSPECIFIED_POLICY, IfNotPresent, Always"
            )),
        }
    }

    /// Whether a cached resolution of `url`'s tag may be used.
    fn uses_cache(self, url: &str) -> bool {
        match self {
            PullPolicy::Always => false,
            PullPolicy::IfNotPresent => true,
            PullPolicy::Unspecified => !url.ends_with(":latest"),
        }
    }
}

/// Where a fetched module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From the registry or the web server, in this fetch.
    Pulled,
    /// From the cache, pulled by an earlier run.
    Cached,
}

/// A module ready for Envoy.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The module file, in the cache.
    pub path: PathBuf,
    /// Lowercase hex sha256 of the module.
    pub module_sha256: String,
    /// What a WasmPlugin's `sha256` is compared with: the manifest digest
    /// for `oci://`, the module digest for `http(s)://` (hex).
    pub digest: String,
    pub origin: Origin,
}

/// Why a module was refused. Messages leave out the plugin and url: the
/// caller puts them in front.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "sha256 mismatch: the WasmPlugin pins {expected} but the {what} is {actual}; Istio refuses this module too. Set sha256 to the digest `cargo xtask image --push` printed, or push the image it pins"
    )]
    DigestMismatch {
        expected: String,
        actual: String,
        what: &'static str,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    NotWasm(String),
    #[error("more than one candidate layer: {0}")]
    Ambiguous(String),
    #[error("{0}")]
    BadImage(String),
    #[error("downloading the module: {0}")]
    Http(String),
    #[error("{0}")]
    BadUrl(String),
    #[error("module cache {path}: {detail}")]
    Cache { path: String, detail: String },
}

/// Fetches modules into one cache directory.
pub struct Fetcher {
    cache: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct TagEntry {
    url: String,
    digest: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

/// Checks a WasmPlugin `sha256`: 64 lowercase hex digits (the CRD's
/// pattern), or empty for none.
fn expected_digest(sha256: Option<&str>) -> Result<Option<String>, FetchError> {
    match sha256 {
        None | Some("") => Ok(None),
        Some(s) if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(Some(s.to_string()))
        }
        Some(s) => Err(FetchError::BadUrl(format!(
            "sha256 {s:?} is not 64 lowercase hex digits"
        ))),
    }
}

impl Fetcher {
    pub fn new(cache: &Path) -> Fetcher {
        Fetcher {
            cache: cache.to_path_buf(),
        }
    }

    /// The default cache: `target/wasm-cache`.
    pub fn default_cache() -> PathBuf {
        crate::envoy::target_dir().join("wasm-cache")
    }

    /// Fetches the module `url` names (`oci://…`, `http://…`, `https://…`),
    /// checked against `sha256` when set, honouring `policy`.
    pub fn fetch(
        &self,
        url: &str,
        sha256: Option<&str>,
        policy: PullPolicy,
    ) -> Result<Fetched, FetchError> {
        let expected = expected_digest(sha256)?;
        if let Some(rest) = url.strip_prefix("oci://") {
            self.fetch_oci(url, rest, expected, policy)
        } else if url.starts_with("http://") || url.starts_with("https://") {
            self.fetch_http(url, expected)
        } else {
            Err(FetchError::BadUrl(format!(
                "cannot pull {url:?}: only oci://, http:// and https:// urls are fetched"
            )))
        }
    }

    fn module_path(&self, kind: &str, digest: &str) -> PathBuf {
        self.cache.join(kind).join(format!("{digest}.wasm"))
    }

    fn tag_path(&self, url: &str) -> PathBuf {
        self.cache
            .join("tags")
            .join(format!("{}.json", sha256_hex(url.as_bytes())))
    }

    fn cached(&self, kind: &str, digest: &str) -> Option<Fetched> {
        let path = self.module_path(kind, digest);
        let bytes = std::fs::read(&path).ok()?;
        // A cache file is named by the digest it was checked against; a
        // module changed on disk since is not used.
        let module_sha256 = sha256_hex(&bytes);
        let intact = match kind {
            "http" => module_sha256 == digest,
            _ => std::fs::read_to_string(path.with_extension("sha256"))
                .is_ok_and(|s| s.trim() == module_sha256),
        };
        (intact && is_wasm(&bytes)).then(|| Fetched {
            path,
            module_sha256,
            digest: digest.to_string(),
            origin: Origin::Cached,
        })
    }

    fn store(&self, kind: &str, digest: &str, module: &[u8]) -> Result<Fetched, FetchError> {
        let path = self.module_path(kind, digest);
        let module_sha256 = sha256_hex(module);
        write_atomic(&path, module)?;
        write_atomic(&path.with_extension("sha256"), module_sha256.as_bytes())?;
        Ok(Fetched {
            path,
            module_sha256,
            digest: digest.to_string(),
            origin: Origin::Pulled,
        })
    }

    fn fetch_oci(
        &self,
        url: &str,
        reference: &str,
        expected: Option<String>,
        policy: PullPolicy,
    ) -> Result<Fetched, FetchError> {
        let parsed: oci_client::Reference = reference
            .parse()
            .map_err(|e| FetchError::BadUrl(format!("{url:?} is not an image reference: {e}")))?;
        let pinned_in_url = parsed
            .digest()
            .and_then(|d| d.strip_prefix("sha256:"))
            .map(str::to_string);
        if let (Some(e), Some(p)) = (&expected, &pinned_in_url)
            && e != p
        {
            return Err(FetchError::DigestMismatch {
                expected: e.clone(),
                actual: p.clone(),
                what: "digest in the url",
            });
        }
        let pin = expected.clone().or(pinned_in_url);
        // A pinned module is content-addressed: any policy may use it.
        if let Some(pin) = &pin
            && let Some(hit) = self.cached("oci", pin)
        {
            return Ok(hit);
        }
        if pin.is_none() && policy.uses_cache(url) {
            let entry: Option<TagEntry> = std::fs::read(self.tag_path(url))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if let Some(entry) = entry.filter(|e| e.url == url)
                && let Some(hit) = self.cached("oci", &entry.digest)
            {
                return Ok(hit);
            }
        }

        let registry = Registry::new(parsed.resolve_registry(), false)?;
        let repository = parsed.repository().to_string();
        let accepted = [
            OCI_MANIFEST,
            DOCKER_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST_LIST,
        ];
        let (mut bytes, mut digest) = registry.manifest(&parsed, &accepted)?;
        let kind = media_type_of(&bytes);
        if kind.as_deref() == Some(OCI_INDEX) || kind.as_deref() == Some(DOCKER_MANIFEST_LIST) {
            let child = pick_platform(&bytes)?;
            (bytes, digest) =
                registry.manifest(&registry.by_digest(&repository, &child), &accepted)?;
        }
        let digest_hex = digest.trim_start_matches("sha256:").to_string();
        if let Some(e) = &expected
            && *e != digest_hex
        {
            return Err(FetchError::DigestMismatch {
                expected: e.clone(),
                actual: digest_hex,
                what: "image manifest digest",
            });
        }
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            FetchError::BadImage(format!(
                "the manifest {digest} is not an image manifest: {e}"
            ))
        })?;
        // The config is small; reading it verifies its digest like the rest.
        if manifest.config.size > MAX_CONFIG {
            return Err(FetchError::BadImage(format!(
                "the image config {} is {} bytes, over the {MAX_CONFIG}-byte limit",
                manifest.config.digest, manifest.config.size
            )));
        }
        registry.blob(&repository, &manifest.config)?;
        let module = extract(&registry, &repository, &manifest)?;
        if !is_wasm(&module) {
            return Err(FetchError::NotWasm(format!(
                "the image's module is not Wasm: it starts with {:?}, not \\0asm and a version",
                String::from_utf8_lossy(&module[..module.len().min(8)])
            )));
        }
        let fetched = self.store("oci", &digest_hex, &module)?;
        if parsed.digest().is_none() {
            let entry = TagEntry {
                url: url.to_string(),
                digest: digest_hex,
            };
            let json = serde_json::to_vec(&entry).map_err(|e| FetchError::Cache {
                path: self.cache.display().to_string(),
                detail: e.to_string(),
            })?;
            write_atomic(&self.tag_path(url), &json)?;
        }
        Ok(fetched)
    }

    fn fetch_http(&self, url: &str, expected: Option<String>) -> Result<Fetched, FetchError> {
        if let Some(pin) = &expected
            && let Some(hit) = self.cached("http", pin)
        {
            return Ok(hit);
        }
        let module = download(url)?;
        let actual = sha256_hex(&module);
        if let Some(e) = &expected
            && *e != actual
        {
            return Err(FetchError::DigestMismatch {
                expected: e.clone(),
                actual,
                what: "module's sha256",
            });
        }
        if !is_wasm(&module) {
            return Err(FetchError::NotWasm(format!(
                "the download is not Wasm: it starts with {:?}, not \\0asm and a version",
                String::from_utf8_lossy(&module[..module.len().min(8)])
            )));
        }
        self.store("http", &actual, &module)
    }
}

/// `mediaType` of a manifest document, if it says.
fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Versioned {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let v: Versioned = serde_json::from_slice(bytes).ok()?;
    // An OCI index may leave mediaType out; its `manifests` gives it away.
    v.media_type
        .or_else(|| v.manifests.is_some().then(|| OCI_INDEX.to_string()))
}

/// The index entry Istio's fetcher would take: `linux/amd64`, or the only
/// entry.
fn pick_platform(index: &[u8]) -> Result<String, FetchError> {
    let index: Index = serde_json::from_slice(index)
        .map_err(|e| FetchError::BadImage(format!("the image index does not parse: {e}")))?;
    let images: Vec<&IndexEntry> = index
        .manifests
        .iter()
        .filter(|m| {
            m.media_type
                .as_deref()
                .is_none_or(|t| t == OCI_MANIFEST || t == DOCKER_MANIFEST)
        })
        .collect();
    if let [only] = images.as_slice() {
        return Ok(only.digest.clone());
    }
    images
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .map(|m| m.digest.clone())
        .ok_or_else(|| {
            FetchError::BadImage(format!(
                "the image index has {} images and none for linux/amd64, the platform Istio's fetcher picks",
                images.len()
            ))
        })
}

/// The module in `manifest`'s layers, by the rules in the module doc.
fn extract(
    registry: &Registry,
    repository: &str,
    manifest: &Manifest,
) -> Result<Vec<u8>, FetchError> {
    let types: Vec<&str> = manifest
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    let raw: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == WASM_LAYER)
        .collect();
    let tarred: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == OCI_LAYER || l.media_type == DOCKER_LAYER)
        .collect();
    let check_size = |l: &Descriptor| {
        if l.size > MAX_MODULE {
            Err(FetchError::BadImage(format!(
                "layer {} is {} bytes, over the {MAX_MODULE}-byte limit",
                l.digest, l.size
            )))
        } else {
            Ok(())
        }
    };
    match (raw.as_slice(), tarred.as_slice()) {
        ([], []) => Err(FetchError::BadImage(format!(
            "no layer holds a module: the layers are {types:?}; expected one {OCI_LAYER} (or {DOCKER_LAYER}) layer holding {PLUGIN_FILE}, or the oci variant's {WASM_LAYER} layer"
        ))),
        ([layer], []) => {
            if manifest.layers.len() != 2 {
                return Err(FetchError::BadImage(format!(
                    "an oci-variant image has exactly two layers (the runtime config and the module), as Istio's fetcher requires; this one has {}: {types:?}",
                    manifest.layers.len()
                )));
            }
            check_size(layer)?;
            Ok(registry.blob(repository, layer)?)
        }
        ([], [layer]) => {
            check_size(layer)?;
            let gz = registry.blob(repository, layer)?;
            plugin_from_tar_gz(&gz)
        }
        _ => Err(FetchError::Ambiguous(format!(
            "the layers are {types:?}; one {WASM_LAYER} layer or one tar+gzip layer was expected, so which module Envoy would run is unclear"
        ))),
    }
}

/// `plugin.wasm` (by base name, as Istio looks for it) from a tar.gz layer.
pub fn plugin_from_tar_gz(gz: &[u8]) -> Result<Vec<u8>, FetchError> {
    let bad = |e: std::io::Error| FetchError::BadImage(format!("the layer is not a tar.gz: {e}"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut found: Option<Vec<u8>> = None;
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        if path.file_name().and_then(|n| n.to_str()) != Some(PLUGIN_FILE) {
            continue;
        }
        if found.is_some() {
            return Err(FetchError::Ambiguous(format!(
                "the layer holds {PLUGIN_FILE} more than once"
            )));
        }
        let mut bytes = Vec::new();
        entry
            .take(MAX_MODULE + 1)
            .read_to_end(&mut bytes)
            .map_err(bad)?;
        if bytes.len() as u64 > MAX_MODULE {
            return Err(FetchError::BadImage(format!(
                "{PLUGIN_FILE} is over the {MAX_MODULE}-byte limit"
            )));
        }
        found = Some(bytes);
    }
    found.ok_or_else(|| FetchError::BadImage(format!("the layer holds no {PLUGIN_FILE}")))
}

/// GETs an http(s) module url, following redirects, with timeouts.
fn download(url: &str) -> Result<Vec<u8>, FetchError> {
    super::registry::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FetchError::Http(format!("starting the I/O runtime: {e}")))?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| FetchError::Http(e.to_string()))?;
    runtime.block_on(async {
        let response = client.get(url).send().await.map_err(|e| {
            FetchError::Http(format!(
                "cannot reach {}: {}",
                host_of(url),
                super::registry::chain(&e)
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Http(format!("the server answered {status}")));
        }
        if response.content_length().is_some_and(|n| n > MAX_MODULE) {
            return Err(FetchError::Http(format!(
                "the module is over the {MAX_MODULE}-byte limit"
            )));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| FetchError::Http(super::registry::chain(&e)))?;
        Ok(body.to_vec())
    })
}

fn host_of(url: &str) -> &str {
    url.split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
        .unwrap_or(url)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// concurrent reader sees the old file or the new one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let err = |e: std::io::Error| FetchError::Cache {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policies() {
        assert_eq!(PullPolicy::parse(None).unwrap(), PullPolicy::Unspecified);
        assert_eq!(
            PullPolicy::parse(Some("Always")).unwrap(),
            PullPolicy::Always
        );
        assert!(PullPolicy::parse(Some("Never")).is_err());
        assert!(PullPolicy::Unspecified.uses_cache("oci://r/x:0.1.0"));
        assert!(!PullPolicy::Unspecified.uses_cache("oci://r/x:latest"));
        assert!(PullPolicy::IfNotPresent.uses_cache("oci://r/x:latest"));
        assert!(!PullPolicy::Always.uses_cache("oci://r/x:0.1.0"));
    }

    #[test]
    fn sha256_must_be_64_lowercase_hex() {
        assert_eq!(expected_digest(Some("")).unwrap(), None);
        let ok = "a".repeat(64);
        assert_eq!(expected_digest(Some(&ok)).unwrap(), Some(ok));
        assert!(expected_digest(Some(&"A".repeat(64))).is_err());
        assert!(expected_digest(Some("abc")).is_err());
    }

    #[test]
    fn index_picks_linux_amd64_or_the_only_image() {
        let one = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1}]}"#;
        assert_eq!(pick_platform(one).unwrap(), "sha256:a");
        let two = br#"{"manifests":[
            {"digest":"sha256:arm","platform":{"os":"linux","architecture":"arm64"}},
            {"digest":"sha256:amd","platform":{"os":"linux","architecture":"amd64"}}]}"#;
        assert_eq!(pick_platform(two).unwrap(), "sha256:amd");
        let none = br#"{"manifests":[
            {"digest":"sha256:arm","platform":{"os":"linux","architecture":"arm64"}},
            {"digest":"sha256:s390","platform":{"os":"linux","architecture":"s390x"}}]}"#;
        assert!(
            pick_platform(none)
                .unwrap_err()
                .to_string()
                .contains("linux/amd64")
        );
        assert_eq!(media_type_of(two).as_deref(), Some(OCI_INDEX));
    }

    #[test]
    fn plugin_wasm_is_found_by_base_name_once() {
        let tar_gz = |entries: &[(&str, &[u8])]| {
            let mut b = tar::Builder::new(Vec::new());
            for (name, bytes) in entries {
                let mut h = tar::Header::new_ustar();
                h.set_path(name).unwrap();
                h.set_size(bytes.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append(&h, *bytes).unwrap();
            }
            crate::image::build::gzip(&b.into_inner().unwrap()).unwrap()
        };
        let m: &[u8] = b"\0asm\x01\0\0\0";
        assert_eq!(
            plugin_from_tar_gz(&tar_gz(&[("README", b"hi"), ("plugin.wasm", m)])).unwrap(),
            m
        );
        assert_eq!(
            plugin_from_tar_gz(&tar_gz(&[("opt/plugin.wasm", m)])).unwrap(),
            m
        );
        assert!(matches!(
            plugin_from_tar_gz(&tar_gz(&[("plugin.wasm", m), ("x/plugin.wasm", m)])),
            Err(FetchError::Ambiguous(_))
        ));
        assert!(matches!(
            plugin_from_tar_gz(&tar_gz(&[("filter.wasm", m)])),
            Err(FetchError::BadImage(_))
        ));
        assert!(matches!(
            plugin_from_tar_gz(b"not gzip"),
            Err(FetchError::BadImage(_))
        ));
    }
}
