//! The module file each WasmPlugin runs in the harness, and where it came
//! from:
//!
//! - **built here** (the default): the url's last path segment names a module
//!   `cargo xtask build` wrote (`oci://…/canary-router:0.1.0` and
//!   `file:///…/canary_router.wasm` both become
//!   `target/wasm32-wasip1/release/canary_router.wasm`);
//! - **pulled** (`--pull`): `oci://` and `http(s)://` urls are fetched as
//!   istio-agent fetches them (see [`crate::image::fetch`]), `sha256` and
//!   `imagePullPolicy` included. A refusal names the plugin and its url, and
//!   Envoy is not started. `file://` urls still map to the build, since
//!   they name a file inside the proxy's container.

use crate::image::fetch::{Fetcher, Origin, PullPolicy};
use crate::manifest::{Manifests, WasmPlugin};
use anyhow::{Result, bail};
use std::path::PathBuf;

/// Where a module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleOrigin {
    /// The module `cargo xtask build` wrote.
    Built,
    /// Fetched from the plugin's url by this run.
    Pulled,
    /// From the pull cache, fetched from the plugin's url by an earlier run.
    Cached,
}

/// The module one plugin runs.
#[derive(Debug, Clone)]
pub struct Module {
    pub path: PathBuf,
    /// Lowercase hex sha256 of the module file.
    pub sha256: String,
    pub origin: ModuleOrigin,
    /// For a pulled module, the digest its url resolved to (the image
    /// manifest for `oci://`, the module for `http(s)://`).
    pub digest: Option<String>,
}

impl Module {
    /// Where the module came from, for the banner: `built here`, `pulled
    /// from <url>, digest <d>`, or the same from the cache.
    pub fn describe(&self, url: &str) -> String {
        let digest = self.digest.as_deref().unwrap_or("?");
        match self.origin {
            ModuleOrigin::Built => "built here".to_string(),
            ModuleOrigin::Pulled => format!("pulled from {url}, digest {digest}"),
            ModuleOrigin::Cached => {
                format!("pulled from {url} by an earlier run, from the cache; digest {digest}")
            }
        }
    }
}

/// How [`resolve`] finds modules.
#[derive(Debug, Clone, Default)]
pub struct Pull {
    /// Fetch `oci://` and `http(s)://` urls instead of using the build.
    pub enabled: bool,
    /// The pull cache; `target/wasm-cache` when `None`.
    pub cache: Option<PathBuf>,
}

fn built(plugin: &WasmPlugin) -> Result<Module> {
    let path = crate::harness::module_dir().join(plugin.module_file_name()?);
    let Ok(bytes) = std::fs::read(&path) else {
        bail!(
            "{}: module {} is not built; run `cargo xtask build`",
            plugin.source.display(),
            path.display()
        );
    };
    Ok(Module {
        path,
        sha256: crate::image::sha256_hex(&bytes),
        origin: ModuleOrigin::Built,
        digest: None,
    })
}

fn fetched(fetcher: &Fetcher, plugin: &WasmPlugin) -> Result<Module> {
    let refused = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "WasmPlugin {} ({}), url {}: {e}",
            plugin.filter_name(),
            plugin.source.display(),
            plugin.url
        )
    };
    let policy = PullPolicy::parse(plugin.image_pull_policy.as_deref()).map_err(|e| refused(&e))?;
    let sha256 = Some(plugin.sha256.as_str()).filter(|s| !s.is_empty());
    let got = fetcher
        .fetch(&plugin.url, sha256, policy)
        .map_err(|e| refused(&e))?;
    Ok(Module {
        path: got.path,
        sha256: got.module_sha256,
        origin: match got.origin {
            Origin::Pulled => ModuleOrigin::Pulled,
            Origin::Cached => ModuleOrigin::Cached,
        },
        digest: Some(got.digest),
    })
}

/// The module of every plugin of `manifests`, in their order.
pub fn resolve(manifests: &Manifests, pull: &Pull) -> Result<Vec<Module>> {
    let fetcher = Fetcher::new(&pull.cache.clone().unwrap_or_else(Fetcher::default_cache));
    manifests
        .plugins
        .iter()
        .map(|plugin| {
            let remote = ["oci://", "http://", "https://"]
                .iter()
                .any(|s| plugin.url.starts_with(s));
            if pull.enabled && remote {
                fetched(&fetcher, plugin)
            } else {
                built(plugin)
            }
        })
        .collect()
}
