//! Every manifest under `wasmplugins/` is one the API server would accept
//! (checked against the Istio CRDs, see `e2e::crd`), and every WasmPlugin's
//! `pluginConfig` is one its filter accepts (compiled with the filter's own
//! config code).

use e2e::crd;
use e2e::manifest;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn wasmplugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasmplugins")
}

/// One YAML document of one file, read the way the harness reads them.
struct Doc {
    /// Relative to `wasmplugins/`.
    file: String,
    /// 0-based among the file's non-empty documents.
    index: usize,
    value: Value,
}

impl Doc {
    fn name(&self) -> String {
        format!(
            "{}#{} ({} {})",
            self.file,
            self.index,
            self.value["kind"].as_str().unwrap_or("?"),
            self.value["metadata"]["name"].as_str().unwrap_or("?")
        )
    }
}

/// Every document of every `*.yaml` / `*.yml` file under `wasmplugins/`.
fn documents() -> Vec<Doc> {
    let root = wasmplugins_dir();
    let docs = manifest::documents(&root).unwrap_or_else(|e| panic!("{e:#}"));
    docs.into_iter()
        .map(|d| Doc {
            file: d
                .file
                .strip_prefix(&root)
                .expect("under wasmplugins/")
                .to_string_lossy()
                .replace('\\', "/"),
            index: d.index,
            value: d.value,
        })
        .collect()
}

fn api_version(doc: &Value) -> &str {
    doc["apiVersion"].as_str().unwrap_or("")
}

fn is_wasmplugin(doc: &Value) -> bool {
    doc["kind"] == "WasmPlugin" && api_version(doc).starts_with("extensions.istio.io/")
}

/// Checks one WasmPlugin document's pluginConfig, as the harness does.
fn check_wasmplugin(doc: &Value) -> Result<(), String> {
    let url = doc["spec"]["url"]
        .as_str()
        .ok_or("spec.url: expected a string")?;
    let file = manifest::module_file(url).ok_or("spec.url: no module name")?;
    let config = doc["spec"].get("pluginConfig");
    let plugin_name = doc["spec"]["pluginName"].as_str().unwrap_or("");
    manifest::check_plugin_config(&file, config, plugin_name).map_err(|e| format!("spec.{e}"))
}

fn reviews_example() -> Value {
    documents()
        .into_iter()
        .find(|d| d.file == "examples/reviews/canary-router.yaml")
        .expect("the reviews example")
        .value
}

#[test]
fn the_walk_finds_every_manifest() {
    let docs = documents();
    let found: Vec<(String, String, String)> = docs
        .iter()
        .map(|d| {
            (
                d.file.clone(),
                d.value["kind"].as_str().unwrap_or("").to_string(),
                d.value["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    for (file, kind, name) in [
        (
            "canary-router/wasmplugin.yaml",
            "WasmPlugin",
            "canary-router",
        ),
        (
            "examples/reviews/canary-router.yaml",
            "WasmPlugin",
            "canary-router",
        ),
        (
            "examples/reviews/virtualservice.yaml",
            "VirtualService",
            "reviews",
        ),
        (
            "examples/reviews/destinationrule.yaml",
            "DestinationRule",
            "reviews",
        ),
        ("jwt-auth/wasmplugin.yaml", "WasmPlugin", "jwt-auth"),
        ("examples/keycloak/jwt-auth.yaml", "WasmPlugin", "jwt-auth"),
        ("rate-limit/wasmplugin.yaml", "WasmPlugin", "rate-limit"),
        ("telemetry/wasmplugin.yaml", "WasmPlugin", "telemetry"),
        ("mesh-suite/wasmplugin.yaml", "WasmPlugin", "mesh-suite"),
        (
            "telemetry/bootstrap-override.yaml",
            "ConfigMap",
            "mesh-filters-telemetry-bootstrap",
        ),
        (
            "examples/telemetry/telemetry.yaml",
            "WasmPlugin",
            "telemetry",
        ),
        (
            "examples/telemetry/productpage-patch.yaml",
            "Deployment",
            "productpage-v1",
        ),
        (
            "examples/ratelimit/rate-limit.yaml",
            "WasmPlugin",
            "rate-limit",
        ),
    ] {
        assert!(
            found
                .iter()
                .any(|(f, k, n)| f == file && k == kind && n == name),
            "{kind} {name} not found in wasmplugins/{file}; found {found:#?}"
        );
    }
}

#[test]
fn every_istio_manifest_is_valid_against_the_crds() {
    let docs = documents();
    let mut checked = 0;
    let mut failures = Vec::new();
    for doc in &docs {
        if !crd::is_istio_api_version(api_version(&doc.value)) {
            continue; // Not an Istio resource: no CRD here to check it with.
        }
        checked += 1;
        if let Err(errors) = crd::validate(&doc.value) {
            for e in errors {
                failures.push(format!("{}: {e}", doc.name()));
            }
        }
    }
    assert!(checked >= 4, "only {checked} Istio documents checked");
    assert!(
        failures.is_empty(),
        "manifests the API server would reject:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_wasmplugin_config_compiles_with_its_filter() {
    let docs = documents();
    let mut checked = 0;
    let mut failures = Vec::new();
    for doc in docs.iter().filter(|d| is_wasmplugin(&d.value)) {
        checked += 1;
        if let Err(e) = check_wasmplugin(&doc.value) {
            failures.push(format!("{}: {e}", doc.name()));
        }
    }
    assert!(checked >= 2, "only {checked} WasmPlugins checked");
    assert!(
        failures.is_empty(),
        "pluginConfigs the filters would reject:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_bad_plugin_config_fails_naming_its_path() {
    let mut doc = reviews_example();
    assert_eq!(check_wasmplugin(&doc), Ok(()));
    doc["spec"]["pluginConfig"]["services"][0]["split"] =
        json!([{"version": "v1", "weight": 80}, {"version": "v2", "weight": 10}]);
    let err = check_wasmplugin(&doc).expect_err("weights 80+10 must be rejected");
    assert!(
        err.starts_with("spec.pluginConfig.services[0].split:") && err.contains("100"),
        "{err}"
    );

    let mut doc = reviews_example();
    doc["spec"]["pluginConfig"]["services"][0]["rules"][0]["version"] = json!("v3");
    let err = check_wasmplugin(&doc).expect_err("a version not in split");
    assert!(
        err.starts_with("spec.pluginConfig.services[0].rules[0].version:"),
        "{err}"
    );

    let mut doc = reviews_example();
    doc["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("pluginConfig");
    let err = check_wasmplugin(&doc).expect_err("no pluginConfig");
    assert!(err.contains("services"), "{err}");
}

#[test]
fn a_bad_manifest_fails_the_crd_check() {
    let mut doc = reviews_example();
    doc["spec"]["url"] = json!("ftp://registry.example.com/canary-router.wasm");
    doc["spec"]["match"][0]["mode"] = json!("OUTBOUND");
    doc["spec"]["pluginConfg"] = json!({});
    let errors = crd::validate(&doc).expect_err("invalid manifest");
    let all = errors.join("\n");
    for part in [
        "spec.url: Invalid value",
        "spec.match[0].mode: unsupported value \"OUTBOUND\"",
        "spec.pluginConfg: unknown field",
    ] {
        assert!(all.contains(part), "{part:?} not in:\n{all}");
    }
}

#[test]
fn unknown_modules_fail_clearly() {
    let mut doc = reviews_example();
    doc["spec"]["url"] = json!("oci://registry.example.com/mesh-filters/rate-limiter:1.0.0");
    let err = check_wasmplugin(&doc).expect_err("unknown module");
    assert!(
        err.starts_with("spec.url: no filter of this workspace builds rate_limiter.wasm")
            && err.contains("rate_limit.wasm"),
        "{err}"
    );
}

#[test]
fn module_names_come_from_the_last_url_segment() {
    for url in [
        "oci://registry.example.com/mesh-filters/canary-router:0.1.0",
        "oci://registry.example.com:5000/mesh-filters/canary-router@sha256:0123abcd",
        "file:///opt/filters/canary_router.wasm",
        "https://example.com/releases/canary_router.wasm?download=1",
        "https://example.com/releases/canary_router.wasm#v1",
        "registry.example.com/canary-router",
    ] {
        assert_eq!(
            manifest::module_file(url).as_deref(),
            Some("canary_router.wasm"),
            "{url}"
        );
    }
    assert_eq!(manifest::module_file("oci://"), None);
}

/// The reviews example is one unit: the routing header the plugin writes is
/// the one the VirtualService matches, and every version it can pick is a
/// DestinationRule subset the VirtualService routes to.
#[test]
fn the_reviews_example_hangs_together() {
    let docs = documents();
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d.file.starts_with("examples/reviews/") && d.value["kind"] == kind)
            .map(|d| &d.value)
            .unwrap_or_else(|| panic!("no {kind} in examples/reviews/"))
    };
    let (plugin, vs, dr) = (
        find("WasmPlugin"),
        find("VirtualService"),
        find("DestinationRule"),
    );
    assert_eq!(plugin["spec"]["match"], json!([{"mode": "CLIENT"}]));
    let config = &plugin["spec"]["pluginConfig"];
    let header = config["routingHeader"].as_str().expect("routingHeader");
    let subsets: Vec<&str> = dr["spec"]["subsets"]
        .as_array()
        .expect("subsets")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    let routes = vs["spec"]["http"].as_array().expect("http routes");
    let routed: Vec<&str> = routes
        .iter()
        .flat_map(|r| r["route"].as_array().into_iter().flatten())
        .filter_map(|d| d["destination"]["subset"].as_str())
        .collect();
    for service in config["services"].as_array().expect("services") {
        let host = service["host"].as_str().expect("host");
        assert!(
            vs["spec"]["hosts"]
                .as_array()
                .expect("hosts")
                .contains(&json!(host)),
            "VirtualService hosts lack {host}"
        );
        assert_eq!(dr["spec"]["host"], host);
        for split in service["split"].as_array().expect("split") {
            let version = split["version"].as_str().expect("version");
            assert!(subsets.contains(&version), "no subset {version}");
            assert!(routed.contains(&version), "no route to {version}");
            // Each non-default version is reached through the routing header.
            let matched = routes.iter().any(|r| {
                r["match"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["headers"][header]["exact"] == version)
                    && r["route"][0]["destination"]["subset"] == version
            });
            let is_default = routes.last().is_some_and(|r| {
                r.get("match").is_none() && r["route"][0]["destination"]["subset"] == version
            });
            assert!(
                matched || is_default,
                "version {version}: no route matching {header}: {version}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Telemetry: the Istio setup matches the shipped Envoy settings
// ---------------------------------------------------------------------------

fn shipped_json(rel: &str) -> Value {
    let text = std::fs::read_to_string(wasmplugins_dir().join(rel)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn doc(file: &str, kind: &str) -> Value {
    documents()
        .into_iter()
        .find(|d| d.file == file && d.value["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in wasmplugins/{file}"))
        .value
}

/// The custom bootstrap JSON of a bootstrap-override ConfigMap.
fn custom_bootstrap(file: &str) -> Value {
    let cm = doc(file, "ConfigMap");
    let text = cm["data"]["custom_bootstrap.json"]
        .as_str()
        .unwrap_or_else(|| panic!("{file}: no data.custom_bootstrap.json"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{file}: custom_bootstrap.json: {e}"))
}

#[test]
fn the_bootstrap_overrides_carry_the_shipped_stats_tags_and_buckets() {
    let tags = shipped_json("stats_tags.json");
    let buckets = shipped_json("telemetry/histogram_buckets.json");
    assert_eq!(
        tags,
        telemetry::metrics::stats_tags(),
        "regenerate stats_tags.json"
    );
    let gateway = custom_bootstrap("telemetry/bootstrap-override.yaml");
    assert_eq!(
        gateway,
        json!({"stats_config": {"stats_tags": tags, "histogram_bucket_settings": buckets}})
    );
    // The sidecar example takes its buckets from the annotation instead.
    let sidecar = custom_bootstrap("examples/telemetry/bootstrap-override.yaml");
    assert_eq!(sidecar, json!({"stats_config": {"stats_tags": tags}}));

    let patch = doc("examples/telemetry/productpage-patch.yaml", "Deployment");
    let annotations = &patch["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["sidecar.istio.io/bootstrapOverride"],
        doc("examples/telemetry/bootstrap-override.yaml", "ConfigMap")["metadata"]["name"]
    );
    // Envoy's component log levels, `name:level,...`; istio-proxy's default
    // is warning, which would drop the access log (info).
    let levels = annotations["sidecar.istio.io/componentLogLevel"]
        .as_str()
        .expect("componentLogLevel");
    assert!(
        levels.split(',').any(|l| l.trim() == "wasm:info"),
        "componentLogLevel {levels:?} without wasm:info"
    );
    // pilot-agent reads the annotation as map[string][]float64 (stat-name
    // prefix to buckets) and makes each entry a histogram_bucket_settings
    // prefix match: it must be the shipped settings, duration buckets first.
    let from_annotation: Value = serde_json::from_str(
        annotations["sidecar.istio.io/statsHistogramBuckets"]
            .as_str()
            .expect("statsHistogramBuckets"),
    )
    .expect("statsHistogramBuckets: JSON");
    let shipped: serde_json::Map<String, Value> = buckets
        .as_array()
        .expect("histogram_buckets.json: a list")
        .iter()
        .map(|b| {
            let prefix = b["match"]["prefix"].as_str().expect("match.prefix");
            assert_eq!(b["match"].as_object().map(|m| m.len()), Some(1), "{b}");
            (prefix.to_string(), b["buckets"].clone())
        })
        .collect();
    let duration = &shipped["wasmcustom.request_duration_milliseconds"];
    assert_eq!(
        from_annotation["wasmcustom.request_duration_milliseconds"], *duration,
        "the annotation's duration buckets"
    );
    assert_eq!(from_annotation, Value::Object(shipped));
}

/// The metric names and the label names a PromQL expression uses. Enough
/// PromQL for the dashboard: selectors with matchers, ranges, functions and
/// aggregations with `by` / `without`, binary operators, numbers.
fn promql_names(expr: &str) -> (Vec<String>, Vec<String>) {
    fn is_ident(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_' || c == ':'
    }
    fn skip_string(chars: &[char], mut i: usize) -> usize {
        let quote = chars[i];
        i += 1;
        while i < chars.len() && chars[i] != quote {
            i += if chars[i] == '\\' { 2 } else { 1 };
        }
        i + 1
    }
    let chars: Vec<char> = expr.chars().collect();
    let (mut metrics, mut labels) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '[' {
            // A range or subquery: `[$__rate_interval]`, `[5m:1m]`.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // Label matchers: `name="v"`, `name=~"v"`, `name!="v"`.
            i += 1;
            while i < chars.len() && chars[i] != '}' {
                if chars[i] == '"' || chars[i] == '\'' || chars[i] == '`' {
                    i = skip_string(&chars, i);
                } else if chars[i].is_ascii_alphabetic() || chars[i] == '_' {
                    let start = i;
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                    labels.push(chars[start..i].iter().collect());
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            // A number (0.95, 1e3) or a duration (5m).
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = chars.get(j) == Some(&'(');
            let grouping = [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ];
            let keywords = [
                "bool",
                "and",
                "or",
                "unless",
                "offset",
                "inf",
                "nan",
                "group_left",
                "group_right",
            ];
            // Aggregations may put `by (...)` before their parentheses.
            let aggregations = [
                "sum",
                "min",
                "max",
                "avg",
                "group",
                "stddev",
                "stdvar",
                "count",
                "count_values",
                "bottomk",
                "topk",
                "quantile",
                "limitk",
                "limit_ratio",
            ];
            if call && grouping.contains(&word.as_str()) {
                let end = chars[j..]
                    .iter()
                    .position(|&c| c == ')')
                    .map_or(chars.len(), |p| j + p);
                let inner: String = chars[j + 1..end].iter().collect();
                labels.extend(
                    inner
                        .split(',')
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from),
                );
                i = end + 1;
            } else if !call
                && !keywords.contains(&word.to_lowercase().as_str())
                && !aggregations.contains(&word.as_str())
            {
                metrics.push(word);
            }
        } else {
            i += 1;
        }
    }
    (metrics, labels)
}

#[test]
fn promql_names_finds_metrics_and_labels() {
    let (m, l) = promql_names(
        r#"histogram_quantile(0.95, sum by (route, le) (rate(request_duration_milliseconds_bucket{route=~"$route", version!="a,b{c}"}[$__rate_interval]))) / on (route) group_left sum(x_total) without (kind) > bool 1e3"#,
    );
    assert_eq!(m, ["request_duration_milliseconds_bucket", "x_total"]);
    assert_eq!(l, ["route", "le", "route", "version", "route", "kind"]);
}

#[test]
fn the_grafana_dashboard_uses_only_metrics_and_labels_the_filter_makes() {
    let dashboard = shipped_json("telemetry/grafana-dashboard.json");
    let tags: Vec<String> = shipped_json("stats_tags.json")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag_name"].as_str().unwrap().to_string())
        .collect();
    // What the filter emits, as Prometheus names (Envoy strips `wasmcustom.`
    // and adds `_bucket` / `_sum` / `_count` to histograms).
    let metrics = [
        "requests_total",
        "request_duration_milliseconds_bucket",
        "request_duration_milliseconds_sum",
        "request_duration_milliseconds_count",
        "request_bytes_bucket",
        "request_bytes_sum",
        "request_bytes_count",
        "response_bytes_bucket",
        "response_bytes_sum",
        "response_bytes_count",
        "label_overflow_total",
        "route_anomaly",
    ];
    let mut exprs = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "expr" && v.is_string() {
                        out.push(v.as_str().unwrap_or_default().to_string());
                    } else {
                        walk(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard["panels"], &mut exprs);
    assert!(exprs.len() >= 8, "{exprs:?}");
    // The template variables: `label_values(<metric>, <label>)`.
    let mut variables = 0;
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if var["type"] == "datasource" {
            assert_eq!(var["query"], "prometheus", "{var}");
            continue;
        }
        let q = var["definition"].as_str().expect("a query variable");
        assert_eq!(var["query"]["query"], q, "{var}");
        let args = q
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("expected label_values(metric, label): {q}"));
        exprs.push(format!(
            "sum by ({}) ({})",
            args.split(',').nth(1).unwrap_or(""),
            args.split(',').next().unwrap_or("")
        ));
        variables += 1;
    }
    assert!(variables >= 2, "route and version variables");
    let mut used_metrics = std::collections::BTreeSet::new();
    let mut used_labels = std::collections::BTreeSet::new();
    for e in &exprs {
        let (ms, ls) = promql_names(e);
        assert!(!ms.is_empty(), "no metric in {e}");
        for m in ms {
            assert!(metrics.contains(&m.as_str()), "unknown metric {m} in {e}");
            used_metrics.insert(m);
        }
        for l in ls {
            assert!(
                l == "le" || tags.contains(&l),
                "label {l} in {e} is not a tag of stats_tags.json"
            );
            used_labels.insert(l);
        }
    }
    for m in [
        "requests_total",
        "request_duration_milliseconds_bucket",
        "request_bytes_sum",
        "response_bytes_sum",
        "label_overflow_total",
        "route_anomaly",
    ] {
        assert!(used_metrics.contains(m), "the dashboard never uses {m}");
    }
    // The labels of requests_total and the histograms come from the
    // configured dimensions: the shipped configs must have every one the
    // dashboard uses (`label` and `kind` are the fixed labels of
    // label_overflow_total and route_anomaly).
    for file in [
        "telemetry/wasmplugin.yaml",
        "examples/telemetry/telemetry.yaml",
    ] {
        let plugin = doc(file, "WasmPlugin");
        let dimensions = &plugin["spec"]["pluginConfig"]["dimensions"];
        for l in &used_labels {
            if ["le", "label", "kind"].contains(&l.as_str()) {
                continue;
            }
            assert!(
                dimensions
                    .as_array()
                    .is_some_and(|d| d.iter().any(|d| d == l.as_str())),
                "{file}: the dashboard uses label {l}, not in dimensions {dimensions}"
            );
        }
    }
    let anomaly_panel = dashboard["panels"].as_array().unwrap().iter().any(|p| {
        p["title"]
            .as_str()
            .is_some_and(|t| t.to_lowercase().contains("anomal"))
            && p["targets"].to_string().contains("route_anomaly")
    });
    assert!(anomaly_panel, "an anomaly panel");
    assert_eq!(dashboard["templating"]["list"][0]["name"], "datasource");
    for p in dashboard["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
    }
}
