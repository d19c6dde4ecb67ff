//! A running harness: demo upstreams, and a real Envoy configured from a
//! directory of manifests. Dropping it stops every process it started.

use crate::bootstrap::{self, Inputs};
use crate::client::{self, Response};
use crate::envoy::{self, Envoy};
use crate::manifest::{self, Manifests};
use crate::upstream::{Upstream, Upstreams};
use anyhow::{Context, Result};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The demo service's versions.
pub const VERSIONS: [&str; 2] = ["v1", "v2"];

#[derive(Default)]
pub struct Options {
    /// Start Envoy without `--mode validate` first (to see a start failure).
    pub skip_validate: bool,
    /// Extra clusters to point at loopback servers.
    pub extra_clusters: Vec<(String, SocketAddr)>,
    pub stats_config: Option<Value>,
}

pub struct Harness {
    pub envoy: Envoy,
    pub upstreams: Upstreams,
    /// The listener's address on loopback.
    pub listener: SocketAddr,
    pub manifests: Manifests,
    /// Where the generated config and Envoy's log are.
    pub dir: PathBuf,
}

/// Where the `.wasm` modules are built.
pub fn module_dir() -> PathBuf {
    envoy::target_dir().join("wasm32-wasip1/release")
}

/// A fresh directory for one run's config and log.
fn run_dir() -> Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = envoy::target_dir().join("e2e-runs").join(format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Renders the bootstrap for `manifests` into `dir/envoy.json`.
fn write_config(
    manifests: &Manifests,
    upstreams: &Upstreams,
    options: &Options,
    dir: &Path,
) -> Result<PathBuf> {
    let addrs: Vec<(String, SocketAddr)> = upstreams
        .servers
        .iter()
        .map(|u| (u.version().to_string(), u.addr))
        .collect();
    let config = bootstrap::render(&Inputs {
        manifests,
        upstreams: &addrs,
        module_dir: &module_dir(),
        extra_clusters: &options.extra_clusters,
        stats_config: options.stats_config.clone(),
    })?;
    let path = dir.join("envoy.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(path)
}

impl Harness {
    pub fn start(manifests: &Path) -> Result<Harness> {
        Harness::start_with(manifests, Options::default())
    }

    /// Reads the manifests, starts the upstreams, checks the generated
    /// config with `envoy --mode validate`, then starts Envoy.
    pub fn start_with(path: &Path, options: Options) -> Result<Harness> {
        let bin = envoy::ensure_envoy()?;
        let manifests = manifest::load(path)?;
        let upstreams = Upstreams::start(&VERSIONS)?;
        let dir = run_dir()?;
        let config = write_config(&manifests, &upstreams, &options, &dir)?;
        if !options.skip_validate {
            envoy::validate(&bin, &config)?;
        }
        let envoy = Envoy::start(&bin, &config, &dir)?;
        let listener = envoy.listener_address(bootstrap::LISTENER)?;
        Ok(Harness {
            envoy,
            upstreams,
            listener,
            manifests,
            dir,
        })
    }

    /// Renders the config for `path` and runs only `envoy --mode validate`.
    pub fn validate(path: &Path) -> Result<()> {
        let bin = envoy::ensure_envoy()?;
        let manifests = manifest::load(path)?;
        let upstreams = Upstreams::start(&VERSIONS)?;
        let dir = run_dir()?;
        let config = write_config(&manifests, &upstreams, &Options::default(), &dir)?;
        envoy::validate(&bin, &config)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listener, path)
    }

    pub fn get(&self, path: &str, headers: &[(&str, &[u8])]) -> Result<Response> {
        client::get(&self.url(path), headers)
    }

    pub fn upstream(&self, version: &str) -> Option<&Upstream> {
        self.upstreams.get(version)
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        self.envoy.log_text()
    }

    /// Envoy's admin `/stats/prometheus`.
    pub fn prometheus(&self) -> Result<String> {
        Ok(client::admin_get(self.envoy.admin, "/stats/prometheus")?.1)
    }

    /// Stops Envoy, then the upstreams.
    pub fn stop(&mut self) {
        self.envoy.stop();
        self.upstreams.stop();
    }
}
