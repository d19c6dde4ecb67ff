//! Istio manifests as the harness reads them: WasmPlugins (translated to
//! Envoy Wasm filters the way istiod does) and the VirtualServices whose
//! header matches become the harness's route table.

use anyhow::{Context, Result, bail};
use mesh_suite::registry;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// One WasmPlugin, with what the translation needs.
#[derive(Debug, Clone)]
pub struct WasmPlugin {
    pub namespace: String,
    pub name: String,
    /// `root_id` in Envoy; Istio uses `pluginName`.
    pub plugin_name: String,
    pub url: String,
    pub phase: Phase,
    pub priority: i64,
    pub fail_strategy: String,
    /// `sha256`: the manifest digest (`oci://`) or module digest
    /// (`http(s)://`) the module must have; empty when unset.
    pub sha256: String,
    /// `imagePullPolicy`, when set.
    pub image_pull_policy: Option<String>,
    /// `pluginConfig` as JSON; handed to Envoy as a `StringValue`.
    pub plugin_config: Option<Value>,
    pub source: PathBuf,
}

/// Filter-chain position, in Istio's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Authn,
    Authz,
    Stats,
    Unspecified,
}

/// A VirtualService HTTP route, reduced to what the harness routes on.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    /// Alternatives (any may match); each is a list of header conditions that
    /// must all hold, plus an optional URI prefix.
    pub matches: Vec<RouteMatch>,
    /// `(subset, weight)`.
    pub destinations: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    pub headers: Vec<(String, StringMatch)>,
    pub uri_prefix: Option<String>,
}

#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Debug, Clone, Default)]
pub struct Manifests {
    pub plugins: Vec<WasmPlugin>,
    pub routes: Vec<HttpRoute>,
}

/// Whether the harness runs every single-filter WasmPlugin as the suite
/// module instead (env `MESH_SUITE=1`), so that every e2e test also runs
/// against `mesh_suite.wasm`.
pub fn suite_mode() -> bool {
    std::env::var("MESH_SUITE").is_ok_and(|v| v == "1")
}

impl WasmPlugin {
    /// The config of filter `module` (e.g. `telemetry.wasm`) in this
    /// plugin: its pluginConfig when it runs that module, the stage's key
    /// when it runs the suite; `None` when it runs neither.
    pub fn config_for(&self, module: &str) -> Option<Value> {
        let file = self.module_file_name().ok()?;
        if file == module {
            return Some(self.plugin_config.clone().unwrap_or_else(|| json!({})));
        }
        if registry::suite().is_some_and(|s| s.module == file) {
            let key = registry::by_module(module)?.suite_key()?;
            return self
                .plugin_config
                .as_ref()?
                .get(key)
                .filter(|v| !v.is_null())
                .cloned();
        }
        None
    }

    /// The same plugin running the suite module, with its config under the
    /// stage's key; unchanged if it runs no filter the suite holds.
    pub fn as_suite(mut self) -> WasmPlugin {
        if let Ok(file) = self.module_file_name()
            && let Some(key) = registry::by_module(&file).and_then(|f| f.suite_key())
        {
            let config = self.plugin_config.take().unwrap_or_else(|| json!({}));
            self.plugin_config = Some(json!({ key: config }));
            self.url = "oci://registry.example.com/mesh-filters/mesh-suite:0.1.0".to_string();
        }
        self
    }

    /// `<namespace>.<name>`, as istiod names the filter.
    pub fn filter_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// The module this plugin runs, resolved to the build in `target/`:
    /// `file:///x/canary_router.wasm` and `oci://r/p/canary-router:1.0` both
    /// become `canary_router.wasm`.
    pub fn module_file_name(&self) -> Result<String> {
        match module_file(&self.url) {
            Some(file) => Ok(file),
            None => bail!(
                "{}: cannot tell the module from url {:?}",
                self.source.display(),
                self.url
            ),
        }
    }

    /// Compiles the pluginConfig with the config code of the filter the
    /// module is built from, as the filter does at start; the error names
    /// the field, `spec.pluginConfig.services[0].split: …`.
    pub fn check_config(&self) -> Result<(), String> {
        let file = self
            .module_file_name()
            .map_err(|e| format!("spec.url: {e}"))?;
        check_plugin_config(&file, self.plugin_config.as_ref(), &self.plugin_name)
            .map_err(|e| format!("spec.{e}"))
    }

    /// The pluginConfig as the JSON string Envoy's `StringValue` carries.
    pub fn config_string(&self) -> String {
        match &self.plugin_config {
            Some(v) => v.to_string(),
            None => String::new(),
        }
    }
}

/// The module file a WasmPlugin url names, by its last path segment, in
/// the form `cargo xtask build` writes it:
/// `oci://registry/mesh-filters/canary-router:0.1.0`,
/// `oci://registry/mesh-filters/canary-router@sha256:…` and
/// `file:///opt/filters/canary_router.wasm?x#y` all name
/// `canary_router.wasm`. `None` when the url has no last segment.
pub fn module_file(url: &str) -> Option<String> {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let last = rest
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(rest);
    let last = last.split('@').next().unwrap_or(last);
    // An image name: drop the tag.
    let stem = last
        .strip_suffix(".wasm")
        .unwrap_or_else(|| last.split(':').next().unwrap_or(last));
    (!stem.is_empty()).then(|| format!("{}.wasm", stem.replace('-', "_")))
}

/// Compiles a `pluginConfig` with the config code of the filter whose
/// module is `module_file` (the filter registry says which), without a
/// host. The error starts with the field: `pluginConfig.services[0]…`.
pub fn check_plugin_config(
    module_file: &str,
    config: Option<&Value>,
    plugin_name: &str,
) -> Result<(), String> {
    let Some(filter) = registry::by_module(module_file) else {
        let known: Vec<&str> = registry::FILTERS.iter().map(|f| f.module).collect();
        return Err(format!(
            "url: no filter of this workspace builds {module_file} (known: {})",
            known.join(", ")
        ));
    };
    // Istio hands the filter its pluginConfig as JSON.
    let bytes = config.map(Value::to_string);
    let plugin_name = if plugin_name.is_empty() {
        filter.crate_name
    } else {
        plugin_name
    };
    (filter.compile)(bytes.as_deref().map(str::as_bytes), plugin_name).map_err(|e| {
        if e.path.is_empty() {
            format!("pluginConfig: {}", e.message)
        } else {
            format!("pluginConfig.{}: {}", e.path, e.message)
        }
    })
}

/// One YAML document of a manifest file.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: PathBuf,
    /// 0-based among the file's non-empty documents.
    pub index: usize,
    pub value: Value,
}

/// Every non-empty YAML document of the manifests at `path` (see
/// [`collect`]), files in order.
pub fn documents(path: &Path) -> Result<Vec<Document>> {
    let mut files = Vec::new();
    collect(path, &mut files)?;
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let values = crate::crd::parse_yaml_documents(&text)
            .map_err(|e| anyhow::anyhow!("parsing YAML in {}: {e}", file.display()))?;
        for (index, value) in values.into_iter().enumerate() {
            docs.push(Document {
                file: file.clone(),
                index,
                value,
            });
        }
    }
    Ok(docs)
}

/// Writes a one-file manifest directory for tests: a WasmPlugin `name` in
/// namespace `bookinfo` running `module` (e.g. `canary-router`) at `phase`
/// (`None`: unspecified) with `config` as its pluginConfig. The directory is
/// under `target/e2e-fixtures`, unique per process.
pub fn write_test_plugin(
    dir_name: &str,
    module: &str,
    phase: Option<&str>,
    config: &Value,
) -> Result<PathBuf> {
    let dir = crate::envoy::target_dir()
        .join("e2e-fixtures")
        .join(format!("{dir_name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let phase = phase.map(|p| format!("  phase: {p}\n")).unwrap_or_default();
    let yaml = format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: {module}\n  namespace: bookinfo\nspec:\n  url: oci://registry.example.com/mesh-filters/{module}:0.1.0\n  pluginName: {module}\n{phase}  pluginConfig: {config}\n"
    );
    std::fs::write(dir.join(format!("{module}.yaml")), yaml)?;
    Ok(dir)
}

/// Reads a manifest file, or every `.yaml`/`.yml` file under a directory
/// (sorted, recursively). Kinds other than WasmPlugin and VirtualService are
/// accepted and ignored (DestinationRules, for example). With `MESH_SUITE=1`
/// the plugins run the suite module (see [`suite_mode`]).
pub fn load(path: &Path) -> Result<Manifests> {
    load_with(path, suite_mode())
}

/// [`load`], with the suite rewrite on or off: it maps plugins to a module
/// built here, so it is off when modules are pulled from their urls.
pub fn load_with(path: &Path, suite: bool) -> Result<Manifests> {
    let docs = documents(path)?;
    if docs.is_empty() {
        bail!("no .yaml manifests found at {}", path.display());
    }
    let mut out = Manifests::default();
    for Document { file, value, .. } in docs {
        match value.get("kind").and_then(Value::as_str) {
            Some("WasmPlugin") => out.plugins.push(
                wasm_plugin(&value, &file)
                    .with_context(|| format!("WasmPlugin in {}", file.display()))?,
            ),
            Some("VirtualService") => out.routes.extend(
                virtual_service(&value)
                    .with_context(|| format!("VirtualService in {}", file.display()))?,
            ),
            _ => {}
        }
    }
    if suite {
        out.plugins = out.plugins.into_iter().map(WasmPlugin::as_suite).collect();
    }
    // Istio's order: by phase, then by descending priority, then by name.
    out.plugins.sort_by(|a, b| {
        (a.phase, -a.priority, a.filter_name()).cmp(&(b.phase, -b.priority, b.filter_name()))
    });
    Ok(out)
}

/// `path` if it is a file, else every `.yaml`/`.yml` file below it, sorted
/// by path within each directory, depth first.
pub fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_file() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("listing {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect(&entry, files)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(entry);
        }
    }
    Ok(())
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn wasm_plugin(doc: &Value, file: &Path) -> Result<WasmPlugin> {
    let name = str_at(doc, "/metadata/name").context("metadata.name is missing")?;
    let namespace = str_at(doc, "/metadata/namespace").unwrap_or("default");
    let spec = doc.get("spec").context("spec is missing")?;
    let url = str_at(spec, "/url").context("spec.url is missing")?;
    if let Some(kind) = str_at(spec, "/type")
        && kind != "HTTP"
        && kind != "UNSPECIFIED_PLUGIN_TYPE"
    {
        bail!("spec.type {kind:?}: the harness runs HTTP plugins only");
    }
    let phase = match str_at(spec, "/phase").unwrap_or("UNSPECIFIED_PHASE") {
        "AUTHN" => Phase::Authn,
        "AUTHZ" => Phase::Authz,
        "STATS" => Phase::Stats,
        "UNSPECIFIED_PHASE" => Phase::Unspecified,
        other => bail!("spec.phase {other:?} is not an Istio phase"),
    };
    let priority = spec.get("priority").and_then(Value::as_i64).unwrap_or(0);
    Ok(WasmPlugin {
        namespace: namespace.to_string(),
        name: name.to_string(),
        plugin_name: str_at(spec, "/pluginName").unwrap_or("").to_string(),
        url: url.to_string(),
        phase,
        priority,
        fail_strategy: str_at(spec, "/failStrategy")
            .unwrap_or("FAIL_CLOSE")
            .to_string(),
        sha256: str_at(spec, "/sha256").unwrap_or("").to_string(),
        image_pull_policy: str_at(spec, "/imagePullPolicy").map(str::to_string),
        plugin_config: spec.get("pluginConfig").cloned(),
        source: file.to_path_buf(),
    })
}

fn string_match(v: &Value, at: &str) -> Result<StringMatch> {
    if let Some(s) = str_at(v, "/exact") {
        Ok(StringMatch::Exact(s.to_string()))
    } else if let Some(s) = str_at(v, "/prefix") {
        Ok(StringMatch::Prefix(s.to_string()))
    } else if let Some(s) = str_at(v, "/regex") {
        Ok(StringMatch::Regex(s.to_string()))
    } else {
        bail!("{at}: the harness supports exact, prefix and regex matches")
    }
}

fn virtual_service(doc: &Value) -> Result<Vec<HttpRoute>> {
    let empty = Vec::new();
    let http = doc
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let mut routes = Vec::new();
    for (i, route) in http.iter().enumerate() {
        let mut matches = Vec::new();
        for (j, m) in route
            .get("match")
            .and_then(Value::as_array)
            .unwrap_or(&empty)
            .iter()
            .enumerate()
        {
            let mut rm = RouteMatch::default();
            if let Some(headers) = m.get("headers").and_then(Value::as_object) {
                for (name, sm) in headers {
                    let at = format!("http[{i}].match[{j}].headers.{name}");
                    rm.headers
                        .push((name.to_ascii_lowercase(), string_match(sm, &at)?));
                }
            }
            if let Some(uri) = m.get("uri") {
                match string_match(uri, &format!("http[{i}].match[{j}].uri"))? {
                    StringMatch::Prefix(p) => rm.uri_prefix = Some(p),
                    _ => bail!("http[{i}].match[{j}].uri: the harness supports prefix only"),
                }
            }
            matches.push(rm);
        }
        let mut destinations = Vec::new();
        for (j, d) in route
            .get("route")
            .and_then(Value::as_array)
            .unwrap_or(&empty)
            .iter()
            .enumerate()
        {
            let subset = str_at(d, "/destination/subset")
                .with_context(|| format!("http[{i}].route[{j}].destination.subset is missing"))?;
            let weight = d.get("weight").and_then(Value::as_u64).unwrap_or(100) as u32;
            destinations.push((subset.to_string(), weight));
        }
        if destinations.is_empty() {
            bail!("http[{i}]: expected at least one route destination");
        }
        routes.push(HttpRoute {
            matches,
            destinations,
        });
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(url: &str) -> WasmPlugin {
        WasmPlugin {
            namespace: "ns".into(),
            name: "n".into(),
            plugin_name: "p".into(),
            url: url.into(),
            phase: Phase::Unspecified,
            priority: 0,
            fail_strategy: "FAIL_CLOSE".into(),
            sha256: String::new(),
            image_pull_policy: None,
            plugin_config: None,
            source: PathBuf::from("x.yaml"),
        }
    }

    #[test]
    fn module_names_from_urls() {
        for url in [
            "oci://registry.example.com/mesh/canary-router:0.1.0",
            "oci://registry.example.com/mesh/canary-router@sha256:abc",
            "file:///opt/wasm/canary_router.wasm",
            "https://example.com/m/canary-router.wasm",
        ] {
            assert_eq!(
                plugin(url).module_file_name().unwrap(),
                "canary_router.wasm",
                "{url}"
            );
        }
    }

    #[test]
    fn plugins_are_ordered_by_phase_then_descending_priority() {
        let dir = std::env::temp_dir().join(format!("manifest-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let doc = |name: &str, phase: &str, priority: i64| {
            format!(
                "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: {name}\n  namespace: ns\nspec:\n  url: file:///m/{name}.wasm\n  pluginName: {name}-root\n  {phase}\n  priority: {priority}\n"
            )
        };
        let docs = [
            doc("none-low", "", 1),
            doc("stats", "phase: STATS", 0),
            doc("authz", "phase: AUTHZ", 0),
            doc("authn-low", "phase: AUTHN", 1),
            doc("authn-high", "phase: AUTHN", 10),
            doc("none-high", "", 5),
        ];
        std::fs::write(dir.join("all.yaml"), docs.join("---\n")).unwrap();
        let m = load(&dir).unwrap();
        let order: Vec<String> = m.plugins.iter().map(|p| p.name.clone()).collect();
        assert_eq!(
            order,
            [
                "authn-high",
                "authn-low",
                "authz",
                "stats",
                "none-high",
                "none-low"
            ]
        );
        assert_eq!(m.plugins[0].filter_name(), "ns.authn-high");
        assert_eq!(m.plugins[0].plugin_name, "authn-high-root");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
