//! A running harness: demo upstreams, and a real Envoy configured from a
//! directory of manifests. Dropping it stops every process it started.

use crate::bootstrap::{self, Inputs};
use crate::client::{self, Response};
use crate::envoy::{self, Envoy};
use crate::jose::{self, Alg, TestKeys};
use crate::jwks_server::JwksServer;
use crate::manifest::{self, Manifests};
use crate::modules::{self, Module, Pull};
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
    /// The JWKS server for every `jwksUri` in the plugins; without one, the
    /// harness starts its own serving the demo keys.
    pub jwks_server: Option<JwksServer>,
    /// Whether to fetch the plugins' `oci://` and `http(s)://` urls as
    /// istio-agent does, instead of running the modules built here.
    pub pull: Pull,
}

/// The JWKS clusters the plugins' providers fetch through: `jwksCluster`, or
/// Istio's `outbound|PORT||HOST` derived from `jwksUri`.
pub fn jwks_clusters(manifests: &Manifests) -> Vec<String> {
    let mut out = Vec::new();
    for p in &manifests.plugins {
        let config = p.config_for("jwt_auth.wasm");
        let providers = config
            .as_ref()
            .and_then(|c| c.get("providers"))
            .and_then(Value::as_array);
        for provider in providers.into_iter().flatten() {
            let Some(uri) = provider.get("jwksUri").and_then(Value::as_str) else {
                continue;
            };
            let cluster = provider
                .get("jwksCluster")
                .and_then(Value::as_str)
                .map(str::to_string);
            if let Ok(remote) = jwt_auth::config::parse_jwks_uri("jwksUri", uri, cluster)
                && !out.contains(&remote.cluster)
            {
                out.push(remote.cluster);
            }
        }
    }
    out
}

/// The `stats_config` for the telemetry plugins among `manifests`, if any:
/// [`telemetry_stats_config`], plus a tag for each `header:<name>`
/// dimension (those labels are per config, so the shipped file cannot hold
/// them; operators add the same entry, see wasmplugins/README.md).
fn telemetry_stats_for(manifests: &Manifests) -> Result<Option<Value>> {
    let mut config: Option<Value> = None;
    for p in &manifests.plugins {
        let Some(telemetry_config) = p.config_for("telemetry.wasm") else {
            continue;
        };
        let stats = match config.as_mut() {
            Some(c) => c,
            None => config.insert(telemetry_stats_config()?),
        };
        let compiled =
            telemetry::config::compile_json(Some(telemetry_config.to_string().as_bytes()))
                .map_err(|e| anyhow::anyhow!("WasmPlugin {}: pluginConfig: {e}", p.name))?;
        let wanted = telemetry::metrics::stats_tags_for(&compiled.dimensions);
        if let (Some(tags), Some(wanted)) = (stats["stats_tags"].as_array_mut(), wanted.as_array())
        {
            for t in wanted {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
        }
    }
    Ok(config)
}

/// `stats_config` with the shipped `wasmplugins/stats_tags.json`, which turns
/// the telemetry filter's `;label=value` stat names into Prometheus labels,
/// and `wasmplugins/telemetry/histogram_buckets.json`, the buckets of its
/// histograms.
pub fn telemetry_stats_config() -> Result<Value> {
    let read = |rel: &str| -> Result<Value> {
        let path = envoy::workspace_root().join(rel);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    };
    Ok(serde_json::json!({
        "stats_tags": read("wasmplugins/stats_tags.json")?,
        "histogram_bucket_settings": read("wasmplugins/telemetry/histogram_buckets.json")?,
    }))
}

pub fn demo_jwks() -> Result<String> {
    let keys = TestKeys::load()?;
    Ok(jose::jwks(&[keys.alg(Alg::RS256), keys.alg(Alg::ES256)]))
}

pub struct Harness {
    pub envoy: Envoy,
    pub upstreams: Upstreams,
    /// Serves every provider's `jwksUri`, when a plugin has one.
    pub jwks: Option<JwksServer>,
    /// The listener's address on loopback.
    pub listener: SocketAddr,
    pub manifests: Manifests,
    /// The module each plugin runs, in the order of `manifests.plugins`.
    pub modules: Vec<Module>,
    /// Where the generated config and Envoy's log are.
    pub dir: PathBuf,
}

/// Where the `.wasm` modules are built.
pub fn module_dir() -> PathBuf {
    envoy::target_dir().join("wasm32-wasip1/release")
}

/// A fresh directory for one run's config and log, under
/// `target/e2e-runs/<prefix><pid>-<n>`.
pub fn run_dir(prefix: &str) -> Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = envoy::target_dir().join("e2e-runs").join(format!(
        "{prefix}{}-{}",
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
    modules: &[Module],
    upstreams: &Upstreams,
    options: &Options,
    dir: &Path,
) -> Result<PathBuf> {
    let addrs: Vec<(String, SocketAddr)> = upstreams
        .servers
        .iter()
        .map(|u| (u.version().to_string(), u.addr))
        .collect();
    let paths: Vec<PathBuf> = modules.iter().map(|m| m.path.clone()).collect();
    let config = bootstrap::render(&Inputs {
        manifests,
        upstreams: &addrs,
        modules: &paths,
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

    /// Reads the manifests, finds (or pulls) their modules, starts the
    /// upstreams, checks the generated config with `envoy --mode validate`,
    /// then starts Envoy.
    pub fn start_with(path: &Path, mut options: Options) -> Result<Harness> {
        let bin = envoy::ensure_envoy()?;
        let manifests = manifest::load_with(path, manifest::suite_mode() && !options.pull.enabled)?;
        // Before anything starts: a refused module stops the run here.
        let modules = modules::resolve(&manifests, &options.pull)?;
        let upstreams = Upstreams::start(&VERSIONS)?;
        let dir = run_dir("")?;
        let clusters = jwks_clusters(&manifests);
        let jwks = match (options.jwks_server.take(), clusters.is_empty()) {
            (Some(server), _) => Some(server),
            (None, false) => Some(JwksServer::start(demo_jwks()?)?),
            (None, true) => None,
        };
        if let Some(server) = &jwks {
            for c in clusters {
                options.extra_clusters.push((c, server.addr));
            }
        }
        if options.stats_config.is_none() {
            options.stats_config = telemetry_stats_for(&manifests)?;
        }
        let config = write_config(&manifests, &modules, &upstreams, &options, &dir)?;
        if !options.skip_validate {
            envoy::validate(&bin, &config)?;
        }
        let envoy = Envoy::start(&bin, &config, &dir)?;
        let listener = envoy.listener_address(bootstrap::LISTENER)?;
        Ok(Harness {
            envoy,
            upstreams,
            jwks,
            listener,
            manifests,
            modules,
            dir,
        })
    }

    /// Renders the config for `path` and runs only `envoy --mode validate`.
    pub fn validate(path: &Path) -> Result<()> {
        let bin = envoy::ensure_envoy()?;
        let manifests = manifest::load(path)?;
        let modules = modules::resolve(&manifests, &Pull::default())?;
        let upstreams = Upstreams::start(&VERSIONS)?;
        let dir = run_dir("")?;
        // JWKS clusters need only exist for validation; nothing is fetched.
        let loopback = SocketAddr::from(([127, 0, 0, 1], 9));
        let options = Options {
            extra_clusters: jwks_clusters(&manifests)
                .into_iter()
                .map(|c| (c, loopback))
                .collect(),
            stats_config: telemetry_stats_for(&manifests)?,
            ..Options::default()
        };
        let config = write_config(&manifests, &modules, &upstreams, &options, &dir)?;
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

    /// Lines of Envoy's log that show a Wasm trap or a panic.
    pub fn wasm_traps(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                ["Uncaught", "panic", "RuntimeError", "unreachable"]
                    .iter()
                    .any(|bad| l.contains(bad))
            })
            .map(str::to_string)
            .collect()
    }

    /// Envoy's admin `/stats/prometheus`.
    pub fn prometheus(&self) -> Result<String> {
        Ok(client::admin_get(self.envoy.admin, "/stats/prometheus")?.1)
    }

    /// Stops Envoy, then the upstreams and the JWKS server.
    pub fn stop(&mut self) {
        self.envoy.stop();
        self.upstreams.stop();
        if let Some(j) = self.jwks.as_mut() {
            j.stop();
        }
    }

    /// A counter or gauge from Envoy's admin `/stats`, by its full name.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let (_, body) = client::admin_get(self.envoy.admin, "/stats?format=json").ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["stats"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)?
            .get("value")?
            .as_u64()
    }
}
