//! The Envoy bootstrap the harness runs: one HTTP listener with the
//! WasmPlugins translated the way istiod does, a route table from the
//! VirtualServices, and one cluster per demo upstream.

use crate::manifest::{HttpRoute, Manifests, StringMatch, WasmPlugin};
use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;

pub const LISTENER: &str = "harness";

/// What the bootstrap is built from.
pub struct Inputs<'a> {
    pub manifests: &'a Manifests,
    /// `(version, address)` of each demo upstream.
    pub upstreams: &'a [(String, SocketAddr)],
    /// The module file each plugin runs, in the order of
    /// `manifests.plugins` (see [`crate::modules`]).
    pub modules: &'a [std::path::PathBuf],
    /// Extra `(cluster name, address)` pairs, e.g. Istio-named clusters such
    /// as `outbound|8080||keycloak.keycloak.svc.cluster.local`.
    pub extra_clusters: &'a [(String, SocketAddr)],
    /// `stats_config` for the bootstrap, if any.
    pub stats_config: Option<Value>,
}

pub fn render(inputs: &Inputs) -> Result<Value> {
    if inputs.modules.len() != inputs.manifests.plugins.len() {
        bail!(
            "{} modules for {} plugins",
            inputs.modules.len(),
            inputs.manifests.plugins.len()
        );
    }
    let http_filters: Vec<Value> = inputs
        .manifests
        .plugins
        .iter()
        .zip(inputs.modules)
        .map(|(plugin, module)| wasm_filter(plugin, module))
        .collect();

    let versions: Vec<&str> = inputs.upstreams.iter().map(|(v, _)| v.as_str()).collect();
    let routes = if inputs.manifests.routes.is_empty() {
        default_routes(&routing_header(inputs.manifests), &versions)
    } else {
        inputs
            .manifests
            .routes
            .iter()
            .map(|r| vs_routes(r, &versions))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect()
    };

    let mut clusters: Vec<Value> = inputs
        .upstreams
        .iter()
        .map(|(v, addr)| cluster(&format!("demo-{v}"), *addr))
        .collect();
    clusters.extend(inputs.extra_clusters.iter().map(|(n, a)| cluster(n, *a)));

    let mut bootstrap = skeleton("mesh-harness", routes, http_filters, clusters);
    if let Some(stats) = &inputs.stats_config {
        bootstrap["stats_config"] = stats.clone();
        // Histograms reach /stats/prometheus at each flush (default 5 s).
        bootstrap["stats_flush_interval"] = json!("1s");
    }
    Ok(bootstrap)
}

/// A bootstrap with the admin endpoint and one HTTP listener (named
/// [`LISTENER`]) on 127.0.0.1, both on ports Envoy picks, `http_filters`
/// followed by the router, and static `clusters`.
pub fn skeleton(
    node: &str,
    routes: Vec<Value>,
    mut http_filters: Vec<Value>,
    clusters: Vec<Value>,
) -> Value {
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    json!({
        "node": {"id": node, "cluster": node},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": LISTENER,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": LISTENER,
                        "route_config": {"name": LISTENER, "virtual_hosts": [{
                            "name": "demo", "domains": ["*"], "routes": routes
                        }]},
                        "http_filters": http_filters
                    }
                }]}]
            }],
            "clusters": clusters
        }
    })
}

/// An Envoy run from a bootstrap of our own (the native filters the suite
/// is compared with). Dropping it stops the process.
pub struct NativeEnvoy {
    pub envoy: crate::envoy::Envoy,
    pub listener: SocketAddr,
    /// Where the config and Envoy's log are.
    pub dir: std::path::PathBuf,
}

impl NativeEnvoy {
    /// Writes `bootstrap` (built on [`skeleton`]) under
    /// `target/e2e-runs/<prefix>…`, checks it with `envoy --mode validate`,
    /// starts Envoy (`--concurrency 2`) and reads the listener's address.
    pub fn start(prefix: &str, bootstrap: &Value) -> Result<NativeEnvoy> {
        let bin = crate::envoy::ensure_envoy()?;
        let dir = crate::harness::run_dir(prefix)?;
        let config = dir.join("envoy.json");
        std::fs::write(&config, serde_json::to_vec_pretty(bootstrap)?)?;
        crate::envoy::validate(&bin, &config)?;
        let envoy = crate::envoy::Envoy::start(&bin, &config, &dir)?;
        let listener = envoy.listener_address(LISTENER)?;
        Ok(NativeEnvoy {
            envoy,
            listener,
            dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listener, path)
    }

    /// The generated bootstrap.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.join("envoy.json")
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        self.envoy.log_text()
    }

    /// Stops Envoy.
    pub fn stop(&mut self) {
        self.envoy.stop();
    }
}

/// A Wasm filter as istiod writes it: name `<namespace>.<name>`, `root_id`
/// from `pluginName`, the config as a `StringValue`, an empty `vm_id`, and
/// the module as a local file (istio-agent has fetched it by then).
fn wasm_filter(plugin: &WasmPlugin, module: &Path) -> Value {
    let failure_policy = match plugin.fail_strategy.as_str() {
        "FAIL_OPEN" => "FAIL_OPEN",
        "FAIL_RELOAD" => "FAIL_RELOAD",
        _ => "FAIL_CLOSED",
    };
    let name = plugin.filter_name();
    json!({
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": plugin.plugin_name,
                "vm_config": {
                    "vm_id": "",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": module.to_string_lossy()}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin.config_string()
                },
                "failure_policy": failure_policy
            }
        }
    })
}

/// The routing header of the first canary-router plugin, else the default.
fn routing_header(manifests: &Manifests) -> String {
    manifests
        .plugins
        .iter()
        .filter_map(|p| p.config_for("canary_router.wasm"))
        .find_map(|c| c.get("routingHeader")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "x-route-version".to_string())
        .to_ascii_lowercase()
}

/// Without VirtualServices: `<header>: <version>` picks that version's
/// upstream, anything else goes to the first.
fn default_routes(header: &str, versions: &[&str]) -> Vec<Value> {
    let mut routes: Vec<Value> = versions
        .iter()
        .map(|v| {
            json!({
                "match": {"prefix": "/", "headers": [{"name": header, "string_match": {"exact": v}}]},
                "route": {"cluster": format!("demo-{v}")}
            })
        })
        .collect();
    if let Some(first) = versions.first() {
        routes
            .push(json!({"match": {"prefix": "/"}, "route": {"cluster": format!("demo-{first}")}}));
    }
    routes
}

fn vs_routes(route: &HttpRoute, versions: &[&str]) -> Result<Vec<Value>> {
    for (subset, _) in &route.destinations {
        if !versions.contains(&subset.as_str()) {
            bail!("VirtualService subset {subset:?}: the harness has demo upstreams {versions:?}");
        }
    }
    let action = if route.destinations.len() == 1 {
        json!({"cluster": format!("demo-{}", route.destinations[0].0)})
    } else {
        let clusters: Vec<Value> = route
            .destinations
            .iter()
            .map(|(s, w)| json!({"name": format!("demo-{s}"), "weight": w}))
            .collect();
        json!({"weighted_clusters": {"clusters": clusters}})
    };
    if route.matches.is_empty() {
        return Ok(vec![json!({"match": {"prefix": "/"}, "route": action})]);
    }
    Ok(route
        .matches
        .iter()
        .map(|m| {
            let headers: Vec<Value> = m
                .headers
                .iter()
                .map(|(name, sm)| {
                    let string_match = match sm {
                        StringMatch::Exact(v) => json!({"exact": v}),
                        StringMatch::Prefix(v) => json!({"prefix": v}),
                        StringMatch::Regex(v) => json!({"safe_regex": {"regex": v}}),
                    };
                    json!({"name": name, "string_match": string_match})
                })
                .collect();
            json!({
                "match": {"prefix": m.uri_prefix.as_deref().unwrap_or("/"), "headers": headers},
                "route": action
            })
        })
        .collect())
}

/// A static cluster of one loopback endpoint.
pub fn cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}}
        }}]}]}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Phase, WasmPlugin};
    use std::path::PathBuf;

    #[test]
    fn wasm_filters_are_translated_as_istiod_does() {
        let dir = std::env::temp_dir().join(format!("bootstrap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("canary_router.wasm"), b"\0asm").unwrap();
        let plugin = WasmPlugin {
            namespace: "bookinfo".into(),
            name: "canary".into(),
            plugin_name: "canary-router".into(),
            url: "oci://registry.example.com/x/canary-router:1".into(),
            phase: Phase::Unspecified,
            priority: 0,
            fail_strategy: "FAIL_OPEN".into(),
            sha256: String::new(),
            image_pull_policy: None,
            plugin_config: Some(json!({"routingHeader": "x-v", "services": []})),
            source: PathBuf::from("p.yaml"),
        };
        let manifests = Manifests {
            plugins: vec![plugin],
            routes: vec![],
        };
        let upstreams = [
            ("v1".to_string(), SocketAddr::from(([127, 0, 0, 1], 1001))),
            ("v2".to_string(), SocketAddr::from(([127, 0, 0, 1], 1002))),
        ];
        let b = render(&Inputs {
            manifests: &manifests,
            upstreams: &upstreams,
            modules: &[dir.join("canary_router.wasm")],
            extra_clusters: &[],
            stats_config: None,
        })
        .unwrap();
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let f = &hcm["http_filters"][0];
        assert_eq!(f["name"], "bookinfo.canary");
        let c = &f["typed_config"]["config"];
        assert_eq!(c["root_id"], "canary-router");
        assert_eq!(c["vm_config"]["vm_id"], "");
        assert_eq!(c["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
        assert_eq!(
            c["configuration"]["@type"],
            "type.googleapis.com/google.protobuf.StringValue"
        );
        let config: Value =
            serde_json::from_str(c["configuration"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(config["routingHeader"], "x-v");
        assert_eq!(c["failure_policy"], "FAIL_OPEN");
        assert_eq!(hcm["http_filters"][1]["name"], "envoy.filters.http.router");
        // No VirtualService: the plugin's routing header picks the upstream.
        let routes = &hcm["route_config"]["virtual_hosts"][0]["routes"];
        assert_eq!(routes[1]["match"]["headers"][0]["name"], "x-v");
        assert_eq!(routes[1]["route"]["cluster"], "demo-v2");
        assert_eq!(routes[2]["route"]["cluster"], "demo-v1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
