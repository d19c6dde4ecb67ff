//! Validation of manifests against the Istio CRDs (see e2e/istio-crds).
//!
//! A document is checked the way the Kubernetes API server checks a custom
//! resource with strict field validation (`kubectl apply --validate=strict`,
//! kubectl's default against a server that supports it):
//!
//! - the CRD that serves its `apiVersion` (group/version) and `kind` must be
//!   in `istio-crds/crds.yaml`;
//! - null fields that are not `nullable` are dropped first, as the API server
//!   prunes them;
//! - the `openAPIV3Schema` of that version is checked with the `jsonschema`
//!   crate (types, required fields, enums, patterns, lengths, `oneOf`...),
//!   with `additionalProperties: false` added to every object schema that
//!   does not preserve unknown fields, so an unknown field is an error;
//!   `metadata` is checked loosely (a DNS-subdomain `name` is required);
//! - `x-kubernetes-list-type` map/set uniqueness is checked;
//! - the `x-kubernetes-validations` CEL rules are evaluated by a real CEL
//!   interpreter, the `cel` crate (cel-rust), as the API server evaluates
//!   them with cel-go: each rule is compiled once per distinct text, then
//!   run with `self` bound to the value at the rule's schema node (skipped
//!   when that value is not of the node's type, which the schema check
//!   reports). Recognising rules by their text instead would break on every
//!   update of the CRDs file, and whatever rule a new file brings is checked
//!   as written. [`cel`] adds the Kubernetes CEL functions the rules call
//!   and the crate lacks (`isURL`, `url(...).getScheme()`, `duration` with
//!   Go's syntax). A rule that does not compile or cannot be evaluated (an
//!   unknown function, a type error, a result that is not a bool) is an
//!   error for its path, naming the rule and why, never a pass.
//!
//! Errors name the JSON path of the problem: `spec.match[0].mode: ...`.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `e2e/istio-crds/crds.yaml`.
pub fn crds_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("istio-crds/crds.yaml")
}

/// Validates one manifest document against the CRDs in [`crds_path`],
/// loaded once. See [`Crds::validate`].
pub fn validate(doc: &Value) -> Result<(), Vec<String>> {
    static CRDS: OnceLock<Result<Crds, String>> = OnceLock::new();
    match CRDS.get_or_init(Crds::load) {
        Ok(crds) => crds.validate(doc),
        Err(e) => Err(vec![e.clone()]),
    }
}

/// Whether an `apiVersion` belongs to an Istio API group (`*.istio.io`), the
/// documents the CRDs file is expected to describe.
pub fn is_istio_api_version(api_version: &str) -> bool {
    match api_version.split_once('/') {
        Some((group, _)) => group.ends_with(".istio.io"),
        None => false,
    }
}

/// Splits a multi-document YAML text into JSON values; empty documents
/// (a leading `---`, comments only) are skipped.
pub fn parse_yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de).map_err(|e| format!("YAML document {i}: {e}"))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The schemas of every version of every CRD in a CRDs file.
pub struct Crds {
    /// Keyed by (`group/version`, kind).
    versions: BTreeMap<(String, String), CrdVersion>,
    /// The CEL rules of every version, each compiled on first use.
    rules: cel::Rules,
}

struct CrdVersion {
    served: bool,
    /// The `openAPIV3Schema` as written, for the CEL rules and list types.
    schema: Value,
    /// The strict schema handed to `jsonschema` (see [`strict_schema`]).
    strict: Value,
    /// Compiled on first use: most kinds are never needed.
    validator: OnceLock<Result<jsonschema::Validator, String>>,
}

impl Crds {
    /// Loads [`crds_path`].
    pub fn load() -> Result<Crds, String> {
        let path = crds_path();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Crds::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads the CustomResourceDefinitions of a multi-document YAML text;
    /// other documents are ignored.
    pub fn from_yaml(text: &str) -> Result<Crds, String> {
        let mut versions = BTreeMap::new();
        for doc in parse_yaml_documents(text)? {
            if doc["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let spec = &doc["spec"];
            let name = doc["metadata"]["name"].as_str().unwrap_or("?");
            let (Some(group), Some(kind)) =
                (spec["group"].as_str(), spec["names"]["kind"].as_str())
            else {
                return Err(format!("CRD {name}: no spec.group or spec.names.kind"));
            };
            for v in spec["versions"].as_array().into_iter().flatten() {
                let (Some(version), Some(schema)) = (
                    v["name"].as_str(),
                    v.pointer("/schema/openAPIV3Schema")
                        .filter(|s| s.is_object()),
                ) else {
                    return Err(format!("CRD {name}: a version without name or schema"));
                };
                versions.insert(
                    (format!("{group}/{version}"), kind.to_string()),
                    CrdVersion {
                        served: v["served"].as_bool().unwrap_or(false),
                        schema: schema.clone(),
                        strict: strict_schema(schema),
                        validator: OnceLock::new(),
                    },
                );
            }
        }
        if versions.is_empty() {
            return Err("no CustomResourceDefinition found".to_string());
        }
        Ok(Crds {
            versions,
            rules: cel::Rules::new()?,
        })
    }

    /// The `(apiVersion, kind)` pairs served.
    pub fn served(&self) -> impl Iterator<Item = (&str, &str)> {
        self.versions
            .iter()
            .filter(|(_, v)| v.served)
            .map(|((a, k), _)| (a.as_str(), k.as_str()))
    }

    /// Validates one manifest document (see the module documentation).
    /// `Err` holds one readable line per problem, each naming a JSON path.
    pub fn validate(&self, doc: &Value) -> Result<(), Vec<String>> {
        let Some(obj) = doc.as_object() else {
            return Err(vec![
                "expected a Kubernetes object (a YAML mapping)".to_string(),
            ]);
        };
        let (Some(api_version), Some(kind)) = (
            obj.get("apiVersion").and_then(Value::as_str),
            obj.get("kind").and_then(Value::as_str),
        ) else {
            return Err(vec!["apiVersion and kind are required strings".to_string()]);
        };
        let crd = self.lookup(api_version, kind).map_err(|e| vec![e])?;
        let validator = crd
            .validator
            .get_or_init(|| compile(&crd.strict))
            .as_ref()
            .map_err(|e| vec![format!("{kind} {api_version}: {e}")])?;

        let mut doc = doc.clone();
        prune_non_nullable_nulls(&mut doc, &crd.schema, true);
        let mut errors: Vec<String> = validator
            .iter_errors(&doc)
            .flat_map(|e| describe(&e, &doc, &crd.strict))
            .collect();
        check_extensions(&self.rules, &crd.schema, &doc, "", &mut errors);
        let mut seen = BTreeSet::new();
        errors.retain(|e| seen.insert(e.clone()));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn lookup(&self, api_version: &str, kind: &str) -> Result<&CrdVersion, String> {
        if let Some(v) = self
            .versions
            .get(&(api_version.to_string(), kind.to_string()))
        {
            if v.served {
                return Ok(v);
            }
            return Err(format!(
                "{kind} {api_version}: the CRD has this version but does not serve it"
            ));
        }
        let served: Vec<&str> = self
            .served()
            .filter(|(_, k)| *k == kind)
            .map(|(a, _)| a)
            .collect();
        Err(if served.is_empty() {
            format!("kind {kind:?} ({api_version}): no CRD for it in istio-crds/crds.yaml")
        } else {
            format!(
                "{kind} {api_version}: no such version in istio-crds/crds.yaml; served: {}",
                served.join(", ")
            )
        })
    }
}

fn compile(strict: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::draft4::options()
        // Kubernetes checks `pattern` with Go's RE2, as does `regex`.
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .should_validate_formats(true)
        // Kubernetes checks `byte` (base64); `int32`, `double`... are ignored.
        .with_format("byte", is_base64)
        .build(strict)
        .map_err(|e| format!("cannot compile the CRD schema: {e}"))
}

fn is_base64(s: &str) -> bool {
    let b = s.as_bytes();
    let body = b
        .strip_suffix(b"==")
        .or_else(|| b.strip_suffix(b"="))
        .unwrap_or(b);
    b.len().is_multiple_of(4)
        && body
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// ObjectMeta, loosely: the fields a manifest may carry, a name required.
fn metadata_schema() -> Value {
    let string = json!({"type": "string"});
    let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    json!({
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": {
            "name": {
                "type": "string",
                "maxLength": 253,
                "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
            },
            "namespace": {
                "type": "string",
                "maxLength": 63,
                "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
            },
            "labels": string_map,
            "annotations": string_map,
            "generateName": string,
            "uid": string,
            "resourceVersion": string,
            "selfLink": string,
            "generation": {"type": "integer"},
            "creationTimestamp": {"type": ["string", "null"]},
            "deletionTimestamp": {"type": ["string", "null"]},
            "deletionGracePeriodSeconds": {"type": "integer"},
            "finalizers": {"type": "array", "items": string},
            "ownerReferences": {"type": "array", "items": {"type": "object"}},
            "managedFields": {"type": "array", "items": {"type": "object"}}
        }
    })
}

/// The CRD schema as the API server applies it with strict field
/// validation, in JSON Schema draft 4 terms: `additionalProperties: false`
/// on every object schema without `x-kubernetes-preserve-unknown-fields`,
/// `nullable: true` as a `null` type, and `apiVersion`, `kind` and
/// `metadata` at the root.
fn strict_schema(schema: &Value) -> Value {
    let mut strict = schema.clone();
    make_strict(&mut strict);
    if let Some(root) = strict.as_object_mut() {
        root.insert("type".into(), json!("object"));
        let props = root
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(props) = props {
            props.insert("apiVersion".into(), json!({"type": "string"}));
            props.insert("kind".into(), json!({"type": "string"}));
            props.insert("metadata".into(), metadata_schema());
        }
        let mut required: Vec<Value> = root
            .get("required")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for field in ["apiVersion", "kind", "metadata"] {
            if !required.iter().any(|r| r == field) {
                required.push(json!(field));
            }
        }
        root.insert("required".into(), Value::Array(required));
    }
    strict
}

fn make_strict(schema: &mut Value) {
    let Some(s) = schema.as_object_mut() else {
        return;
    };
    s.remove("description");
    let preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let is_object = s.contains_key("properties") || s.get("type") == Some(&json!("object"));
    if is_object && !preserve && !s.contains_key("additionalProperties") {
        s.insert("additionalProperties".into(), Value::Bool(false));
    }
    if s.get("nullable") == Some(&Value::Bool(true)) {
        if let Some(Value::String(t)) = s.get("type") {
            let t = t.clone();
            s.insert("type".into(), json!([t, "null"]));
        }
        if let Some(Value::Array(options)) = s.get_mut("enum") {
            options.push(Value::Null);
        }
    }
    for (key, value) in s.iter_mut() {
        match key.as_str() {
            "properties" => value
                .as_object_mut()
                .into_iter()
                .flat_map(|p| p.values_mut())
                .for_each(make_strict),
            "items" | "additionalProperties" | "not" => make_strict(value),
            "allOf" | "anyOf" | "oneOf" => value
                .as_array_mut()
                .into_iter()
                .flatten()
                .for_each(make_strict),
            _ => {}
        }
    }
}

/// Removes null fields whose schema is neither nullable nor defaulted, as
/// the API server does before validating (Kubernetes 1.20+). A null under an
/// unknown field stays, and is reported as unknown. In `metadata` (not in
/// the CRD) Go decodes a null as the field's zero value: dropped too.
fn prune_non_nullable_nulls(value: &mut Value, schema: &Value, root: bool) {
    match value {
        Value::Object(map) => {
            if root && let Some(Value::Object(meta)) = map.get_mut("metadata") {
                meta.retain(|_, v| !v.is_null());
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            let field_schema = |k: &str| props.and_then(|p| p.get(k)).or(extra);
            let prunable = |s: &Value| {
                s.get("nullable") != Some(&Value::Bool(true)) && s.get("default").is_none()
            };
            map.retain(|k, v| !(v.is_null() && field_schema(k).is_some_and(prunable)));
            for (k, v) in map.iter_mut() {
                if let Some(fs) = field_schema(k) {
                    prune_non_nullable_nulls(v, fs, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    prune_non_nullable_nulls(item, item_schema, false);
                }
            }
        }
        _ => {}
    }
}

/// `spec.match[0].mode`, `metadata.labels["app.kubernetes.io/name"]`.
fn join_key(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (plain, path.is_empty()) {
        (true, true) => key.to_string(),
        (true, false) => format!("{path}.{key}"),
        (false, _) => format!("{path}[{key:?}]"),
    }
}

fn join_index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn shown(path: &str) -> &str {
    if path.is_empty() { "<document>" } else { path }
}

/// The dotted path of a JSON pointer into `doc`.
fn instance_path(pointer: &str, doc: &Value) -> String {
    let mut path = String::new();
    let mut at = Some(doc);
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(items)) => match seg.parse::<usize>() {
                Ok(i) => {
                    path = join_index(&path, i);
                    at = items.get(i);
                }
                Err(_) => {
                    path = join_key(&path, &seg);
                    at = None;
                }
            },
            Some(Value::Object(map)) => {
                path = join_key(&path, &seg);
                at = map.get(&seg);
            }
            _ => {
                path = join_key(&path, &seg);
                at = None;
            }
        }
    }
    path
}

/// A value in an error message, cut short.
fn brief(value: &Value) -> String {
    let mut s = value.to_string();
    if s.chars().count() > 80 {
        s = s.chars().take(77).collect::<String>() + "...";
    }
    s
}

/// One jsonschema error as readable lines.
fn describe(e: &jsonschema::ValidationError<'_>, doc: &Value, strict: &Value) -> Vec<String> {
    use jsonschema::error::ValidationErrorKind as K;
    let path = instance_path(e.instance_path().as_str(), doc);
    // The schema object holding the failed keyword.
    let keyword_parent = || {
        let sp = e.schema_path().as_str();
        let parent = sp.rsplit_once('/').map_or("", |(p, _)| p);
        strict.pointer(parent)
    };
    match e.kind() {
        K::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|f| format!("{}: unknown field {f:?}", join_key(&path, f)))
            .collect(),
        K::Required { property } => {
            let field = property.as_str().unwrap_or("?");
            vec![format!(
                "{}: required field missing",
                join_key(&path, field)
            )]
        }
        K::Enum { options } => vec![format!(
            "{}: unsupported value {}: supported values: {}",
            shown(&path),
            brief(e.instance()),
            options
                .as_array()
                .map(|o| o
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        )],
        K::OneOfMultipleValid { .. } => {
            let fields: Vec<String> = keyword_parent()
                .and_then(|s| s.get("oneOf"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|b| b.get("required").and_then(Value::as_array))
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect();
            vec![if fields.is_empty() {
                format!("{}: matches more than one oneOf alternative", shown(&path))
            } else {
                format!(
                    "{}: at most one of {} may be set",
                    shown(&path),
                    fields.join(", ")
                )
            }]
        }
        K::OneOfNotValid { .. } => vec![format!(
            "{}: matches none of the oneOf alternatives",
            shown(&path)
        )],
        K::AnyOf { .. } => {
            let int_or_string = keyword_parent().and_then(|s| s.get("x-kubernetes-int-or-string"))
                == Some(&Value::Bool(true));
            vec![if int_or_string {
                format!(
                    "{}: expected an integer or a string, got {}",
                    shown(&path),
                    brief(e.instance())
                )
            } else {
                format!("{}: matches none of the anyOf alternatives", shown(&path))
            }]
        }
        _ => vec![format!(
            "{}: {}",
            shown(&path),
            e.masked_with(brief(e.instance()))
        )],
    }
}

/// The Kubernetes extensions JSON Schema has no keyword for: list-type
/// uniqueness and the CEL rules. A node's rules are skipped when its value
/// is not of the node's type: the schema check reports that, and the API
/// server runs no rule on such a value.
fn check_extensions(
    rules: &cel::Rules,
    schema: &Value,
    value: &Value,
    path: &str,
    errors: &mut Vec<String>,
) {
    let Some(s) = schema.as_object() else { return };
    if value.is_null() {
        return;
    }
    let validations = s
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .filter(|_| has_schema_type(s, value));
    for rule in validations.into_iter().flatten() {
        let text = rule["rule"].as_str().unwrap_or("");
        let message = rule["message"].as_str().unwrap_or("failed rule");
        match rules.eval(text, value, schema) {
            Ok(true) => {}
            Ok(false) => errors.push(format!(
                "{}: Invalid value: {}: {message}",
                shown(path),
                brief(value)
            )),
            Err(why) => errors.push(format!(
                "{}: Invalid value: {}: {message} (rule `{}` {why})",
                shown(path),
                brief(value),
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            )),
        }
    }
    if let Value::Array(items) = value {
        check_list_type(s, items, path, errors);
    }
    match value {
        Value::Object(map) => {
            let props = s.get("properties").and_then(Value::as_object);
            let extra = s.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                if let Some(fs) = props.and_then(|p| p.get(k)).or(extra) {
                    check_extensions(rules, fs, v, &join_key(path, k), errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = s.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check_extensions(rules, item_schema, v, &join_index(path, i), errors);
                }
            }
        }
        _ => {}
    }
}

/// Whether `value` has the `type` of schema `s` (any, when it names none).
fn has_schema_type(s: &Map<String, Value>, value: &Value) -> bool {
    let int_or_string = s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    match s.get("type").and_then(Value::as_str) {
        _ if int_or_string => value.is_string() || value.is_i64() || value.is_u64(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        _ => true,
    }
}

fn check_list_type(s: &Map<String, Value>, items: &[Value], path: &str, errors: &mut Vec<String>) {
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => {
            let keys: Vec<&str> = s
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let key: Vec<String> = keys.iter().map(|k| item[*k].to_string()).collect();
                if !seen.insert(key.clone()) {
                    errors.push(format!(
                        "{}: Duplicate value: {} {}",
                        join_index(path, i),
                        keys.join(","),
                        key.join(",")
                    ));
                }
            }
        }
        Some("set") => {
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    errors.push(format!(
                        "{}: Duplicate value: {}",
                        join_index(path, i),
                        brief(item)
                    ));
                }
            }
        }
        _ => {}
    }
}

/// The `x-kubernetes-validations` rules, compiled and evaluated with the
/// `cel` crate (cel-rust), plus the functions of the Kubernetes CEL
/// libraries the Istio CRDs use and the crate lacks.
pub mod cel {
    use ::cel::common::traits::Comparer;
    use ::cel::common::types::{
        CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt, Type,
    };
    use ::cel::common::value::{StaticVal, Val};
    use ::cel::{Context, DeclarationError, Env, ExecutionError, Program, Value as CelValue};
    use serde_json::Value;
    use std::any::Any;
    use std::cmp::Ordering;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, PoisonError};

    /// The environment rules run in, and each distinct rule compiled once.
    pub struct Rules {
        env: Arc<Env>,
        /// Keyed by the rule's text; a rule that does not compile keeps its
        /// parse error, reported each time the rule applies.
        programs: Mutex<HashMap<String, Arc<Result<Program, String>>>>,
    }

    impl Rules {
        /// The API server's environment, as far as the CRDs need it: the
        /// standard library with its macros (`has`, `all`, `exists`,
        /// `exists_one`...) and `matches` (RE2 syntax, through `regex`), the
        /// strings extension (`substring`, `indexOf`, ...: cel-go's
        /// `ext.Strings`, which Kubernetes enables), and [`kubernetes`].
        pub fn new() -> Result<Rules, String> {
            let mut env = Env::stdlib();
            env.add_extension(::cel::extensions::strings)
                .and_then(|()| env.add_extension(kubernetes))
                .map_err(|e| format!("cannot set up the CEL environment: {e}"))?;
            Ok(Rules {
                env: Arc::new(env),
                programs: Mutex::default(),
            })
        }

        /// `rule` compiled, or why it does not compile; compiled on first use.
        pub fn compile(&self, rule: &str) -> Arc<Result<Program, String>> {
            let mut programs = self.programs.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(program) = programs.get(rule) {
                return Arc::clone(program);
            }
            let program = Arc::new(self.env.compile(rule).map_err(|e| one_line(&e.to_string())));
            programs.insert(rule.to_string(), Arc::clone(&program));
            program
        }

        /// Evaluates `rule` with `self` bound to `value`, typed by `schema`
        /// (the schema node that holds the rule: a `number` is a double).
        /// `Err` says why the rule could not be compiled or evaluated, or
        /// that it gave no bool: the caller fails the rule with it.
        pub fn eval(&self, rule: &str, value: &Value, schema: &Value) -> Result<bool, String> {
            let program = self.compile(rule);
            let program = match program.as_ref() {
                Ok(program) => program,
                Err(e) => return Err(format!("does not compile: {e}")),
            };
            let mut context = Context::with_env(Arc::clone(&self.env));
            context.add_variable_as_val("self", to_val(value, schema));
            match program.execute(&context) {
                Ok(CelValue::Bool(b)) => Ok(b),
                Ok(other) => Err(format!("gives {other:?}, not a bool")),
                Err(e) => Err(format!("cannot be evaluated: {}", one_line(&e.to_string()))),
            }
        }

        /// Whether `function`, as a rule calls it, is declared: as a global
        /// function, `f(...)`, or as a member one, `x.f(...)`. Calling it
        /// with no arguments tells: an undeclared name is an undeclared
        /// reference, a declared one has no overload for that call.
        pub fn declares(&self, function: &str) -> bool {
            let context = Context::with_env(Arc::clone(&self.env));
            [format!("{function}()"), format!("null.{function}()")]
                .iter()
                .any(|probe| match self.env.compile(probe) {
                    Ok(program) => !matches!(
                        program.execute(&context),
                        Err(ExecutionError::UndeclaredReference(_))
                    ),
                    Err(_) => false,
                })
        }
    }

    /// A parse or evaluation error on one line, as error lines name one path
    /// each; without the parser's source excerpt (`| self >`, `| ......^`),
    /// which the line quotes the rule for anyway.
    fn one_line(text: &str) -> String {
        text.lines()
            .filter(|line| !line.trim_start().starts_with('|'))
            .flat_map(str::split_whitespace)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A manifest value as the CEL value the API server binds: JSON types
    /// as CEL's, an integer as an `int` unless its schema says `number`.
    /// Strings are borrowed, not copied. Unlike the API server, a string of
    /// `format: date-time` or `byte` stays a string: no rule of the CRDs
    /// file reaches one.
    fn to_val<'v>(value: &'v Value, schema: &Value) -> Box<dyn Val + 'v> {
        match value {
            Value::Null => Box::new(CelNull),
            Value::Bool(b) => Box::new(CelBool::from(*b)),
            Value::Number(n) => {
                let double = schema.get("type").and_then(Value::as_str) == Some("number");
                match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) if !double => Box::new(CelInt::from(i)),
                    (None, Some(u)) if !double => Box::new(CelUInt::from(u)),
                    _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
                }
            }
            Value::String(s) => Box::new(CelString::from(s.as_str())),
            Value::Array(items) => {
                let item_schema = schema.get("items").unwrap_or(&Value::Null);
                let items: Vec<Box<dyn Val + 'v>> =
                    items.iter().map(|item| to_val(item, item_schema)).collect();
                Box::new(CelList::from(items))
            }
            Value::Object(map) => {
                let props = schema.get("properties");
                let extra = schema.get("additionalProperties");
                let entries: HashMap<CelMapKey<'v>, Box<dyn Val + 'v>> = map
                    .iter()
                    .map(|(k, v)| {
                        let field_schema = props
                            .and_then(|p| p.get(k))
                            .or(extra)
                            .unwrap_or(&Value::Null);
                        (CelMapKey::from(k.as_str()), to_val(v, field_schema))
                    })
                    .collect();
                Box::new(CelMap::from(entries))
            }
        }
    }

    /// The functions of the Kubernetes CEL libraries that the CRDs call and
    /// the crate lacks, with the API server's semantics:
    ///
    /// - `isURL(string) -> bool` and `url(string) -> kubernetes.URL`, with
    ///   `getScheme()`: Kubernetes' URL library, which parses with Go's
    ///   `url.ParseRequestURI` ([`parse_request_uri`]);
    /// - `duration(string) -> google.protobuf.Duration`, compared with `<`,
    ///   `<=`, `>`, `>=`, `==`: cel-go parses with Go's `time.ParseDuration`
    ///   ([`parse_go_duration`]). The crate's own `duration()` (its `chrono`
    ///   feature, left off) accepts what Go rejects, `1sx` among it.
    fn kubernetes(env: &mut Env) -> Result<(), DeclarationError> {
        env.add_type(DURATION_TYPE.to_owned())?;
        env.add_type(URL_TYPE.to_owned())?;
        ::cel::add_overload!(env, fn duration: (CelString) -> Result<Duration>,
            id = "string_to_duration")?;
        ::cel::add_overload!(env, fn is_url: (CelString) -> CelBool, name = "isURL")?;
        ::cel::add_overload!(env, fn url: (CelString) -> Result<Url>, id = "string_to_url")?;
        ::cel::add_member_overload!(env, fn url_scheme: (Url) -> CelString, name = "getScheme")?;
        Ok(())
    }

    static DURATION_TYPE: Type = Type::new_unspecified_type("google.protobuf.Duration");
    static URL_TYPE: Type = Type::new_unspecified_type("kubernetes.URL");

    /// A CEL `duration`: nanoseconds, as Go's `time.Duration`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Duration(i128);

    impl Val for Duration {
        fn get_type(&self) -> &Type {
            &DURATION_TYPE
        }
        fn cel_type() -> &'static Type {
            &DURATION_TYPE
        }
        fn as_comparer(&self) -> Option<&dyn Comparer> {
            Some(self)
        }
        fn equals(&self, other: &dyn Val) -> bool {
            other.downcast_ref::<Duration>() == Some(self)
        }
        fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
            Box::new(*self)
        }
        fn as_any(&self) -> Option<&dyn Any> {
            Some(self)
        }
    }

    impl StaticVal for Duration {}

    impl Comparer for Duration {
        fn compare(&self, rhs: &dyn Val) -> Result<Ordering, ExecutionError> {
            match rhs.downcast_ref::<Duration>() {
                Some(rhs) => Ok(self.cmp(rhs)),
                None => Err(ExecutionError::UnexpectedType {
                    got: rhs.get_type().name().to_string(),
                    want: DURATION_TYPE.name().to_string(),
                }),
            }
        }
    }

    fn duration(text: &CelString<'_>) -> Result<Duration, ExecutionError> {
        parse_go_duration(text.inner())
            .map(Duration)
            .map_err(|e| ExecutionError::function_error("duration", e))
    }

    /// A `kubernetes.URL`: what `url()` parsed.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Url {
        text: String,
        /// Lowercased, "" for an absolute path.
        scheme: String,
    }

    impl Val for Url {
        fn get_type(&self) -> &Type {
            &URL_TYPE
        }
        fn cel_type() -> &'static Type {
            &URL_TYPE
        }
        fn equals(&self, other: &dyn Val) -> bool {
            other.downcast_ref::<Url>() == Some(self)
        }
        fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
            Box::new(self.clone())
        }
        fn as_any(&self) -> Option<&dyn Any> {
            Some(self)
        }
    }

    impl StaticVal for Url {}

    fn is_url(text: &CelString<'_>) -> CelBool {
        CelBool::from(parse_request_uri(text.inner()).is_ok())
    }

    fn url(text: &CelString<'_>) -> Result<Url, ExecutionError> {
        let text = text.inner();
        match parse_request_uri(text) {
            Ok(scheme) => Ok(Url {
                text: text.to_string(),
                scheme,
            }),
            Err(e) => Err(ExecutionError::function_error(
                "url",
                format!("URL parse error during conversion from string: {e}"),
            )),
        }
    }

    fn url_scheme(this: &Url) -> CelString<'static> {
        CelString::from(this.scheme.clone())
    }
    /// Go's `time.ParseDuration`, as CEL's `duration()` uses it: nanoseconds.
    pub fn parse_go_duration(input: &str) -> Result<i128, String> {
        let bad = || format!("invalid duration {input:?}");
        let (neg, mut rest) = match input.as_bytes().first() {
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            _ => (false, input),
        };
        if rest == "0" {
            return Ok(0);
        }
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total: f64 = 0.0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let number = &rest[..num_len];
            if number.is_empty() || number == "." || number.matches('.').count() > 1 {
                return Err(bad());
            }
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale: f64 = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                "" => return Err(format!("missing unit in duration {input:?}")),
                u => return Err(format!("unknown unit {u:?} in duration {input:?}")),
            };
            rest = &rest[unit_len..];
            total += number.parse::<f64>().map_err(|_| bad())? * scale;
        }
        if total > i64::MAX as f64 {
            return Err(bad());
        }
        let nanos = total.round() as i128;
        Ok(if neg { -nanos } else { nanos })
    }

    /// Go's `net/url.ParseRequestURI`, as the Kubernetes CEL `isURL` and
    /// `url` use it: the URL's scheme (lowercased, "" for an absolute path),
    /// or why it is not a URL.
    pub fn parse_request_uri(s: &str) -> Result<String, String> {
        if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err("invalid control character in URL".to_string());
        }
        if s.is_empty() {
            return Err("empty url".to_string());
        }
        if s == "*" {
            return Ok(String::new());
        }
        let (scheme, rest) = get_scheme(s)?;
        let scheme = scheme.to_ascii_lowercase();
        let rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
            &rest[..rest.len() - 1]
        } else {
            rest.split_once('?').map_or(rest, |(r, _)| r)
        };
        if !rest.starts_with('/') {
            if !scheme.is_empty() {
                return Ok(scheme); // opaque: "mailto:x"
            }
            return Err("invalid URI for request".to_string());
        }
        let mut path = rest;
        if !scheme.is_empty() && rest.starts_with("//") {
            let authority = &rest[2..];
            let (authority, p) = match authority.find('/') {
                Some(i) => (&authority[..i], &authority[i..]),
                None => (authority, ""),
            };
            parse_authority(authority)?;
            path = p;
        }
        check_escapes(path, false)?;
        Ok(scheme)
    }

    fn get_scheme(s: &str) -> Result<(&str, &str), String> {
        for (i, c) in s.bytes().enumerate() {
            match c {
                b'a'..=b'z' | b'A'..=b'Z' => {}
                b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
                b':' if i == 0 => return Err("missing protocol scheme".to_string()),
                b':' => return Ok((&s[..i], &s[i + 1..])),
                _ => return Ok(("", s)),
            }
        }
        Ok(("", s))
    }

    fn parse_authority(authority: &str) -> Result<(), String> {
        let (userinfo, host) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        if let Some(host) = host.strip_prefix('[') {
            let end = host.rfind(']').ok_or("missing ']' in host")?;
            valid_optional_port(&host[end + 1..])?;
        } else if let Some(i) = host.rfind(':') {
            valid_optional_port(&host[i..])?;
        }
        check_escapes(host, true)?;
        if let Some(u) = userinfo {
            let ok = u
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&c));
            if !ok {
                return Err("net/url: invalid userinfo".to_string());
            }
            check_escapes(u, false)?;
        }
        Ok(())
    }

    fn valid_optional_port(port: &str) -> Result<(), String> {
        if port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            Ok(())
        } else {
            Err(format!("invalid port {port:?} after host"))
        }
    }

    fn check_escapes(s: &str, host: bool) -> Result<(), String> {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c == b'%' {
                let hex = |j: usize| b.get(j).filter(|h| h.is_ascii_hexdigit());
                let (Some(h1), Some(_)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(format!(
                        "invalid URL escape {:?}",
                        &s[i..(i + 3).min(s.len())]
                    ));
                };
                if host && *h1 < b'8' && &s[i..i + 3] != "%25" {
                    return Err(format!("invalid URL escape {:?}", &s[i..i + 3]));
                }
                i += 3;
                continue;
            }
            let host_ok =
                c >= 0x80 || c.is_ascii_alphanumeric() || b"!$&'()*+,;=:[]<>\"-_.~".contains(&c);
            if host && !host_ok {
                return Err(format!("invalid character {:?} in host name", c as char));
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn good_wasmplugin() -> Value {
        json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {"name": "canary-router", "namespace": "istio-system"},
            "spec": {
                "selector": {"matchLabels": {"istio": "ingressgateway"}},
                "pluginName": "canary-router",
                "url": "oci://registry.example.com/mesh-filters/canary-router:0.1.0",
                "failStrategy": "FAIL_CLOSE",
                "match": [{"mode": "CLIENT", "ports": [{"number": 9080}]}],
                "priority": null,
                "pluginConfig": {"anything": {"goes": [1, 2]}}
            }
        })
    }

    fn errors(doc: &Value) -> Vec<String> {
        match validate(doc) {
            Ok(()) => Vec::new(),
            Err(e) => e,
        }
    }

    /// Validation fails, and some error line contains every one of `parts`.
    fn assert_fails(doc: &Value, parts: &[&str]) {
        let errs = errors(doc);
        assert!(
            errs.iter().any(|e| parts.iter().all(|p| e.contains(p))),
            "expected an error containing {parts:?}, got {errs:#?}"
        );
    }

    /// `doc` with the field or item at `pointer` set (added if missing).
    fn with(mut doc: Value, pointer: &str, value: Value) -> Value {
        let (parent, last) = pointer.rsplit_once('/').expect("a JSON pointer");
        match doc.pointer_mut(parent).expect("pointer into the document") {
            Value::Object(map) => {
                map.insert(last.to_string(), value);
            }
            Value::Array(items) => items[last.parse::<usize>().expect("an index")] = value,
            other => panic!("cannot set {last} in {other}"),
        }
        doc
    }

    #[test]
    fn a_good_wasmplugin_passes() {
        assert_eq!(errors(&good_wasmplugin()), Vec::<String>::new());
    }

    #[test]
    fn an_unknown_field_fails_naming_its_path() {
        let mut doc = good_wasmplugin();
        doc["spec"]["match"][0]["direction"] = json!("out");
        doc["spec"]["phaze"] = json!("AUTHN");
        let errs = errors(&doc);
        assert!(
            errs.contains(&r#"spec.match[0].direction: unknown field "direction""#.to_string()),
            "{errs:#?}"
        );
        assert!(
            errs.contains(&r#"spec.phaze: unknown field "phaze""#.to_string()),
            "{errs:#?}"
        );
        // Top level and metadata too.
        let doc = with(good_wasmplugin(), "/metadata/labelz", json!({}));
        assert_fails(&doc, &["metadata.labelz", "unknown field"]);
        let mut doc = good_wasmplugin();
        doc["specs"] = json!({});
        assert_fails(&doc, &["specs", "unknown field"]);
    }

    #[test]
    fn preserve_unknown_fields_is_honoured() {
        // pluginConfig is free-form; status preserves unknown fields too.
        let mut doc = good_wasmplugin();
        doc["status"] = json!({"whatever": 1});
        assert_eq!(errors(&doc), Vec::<String>::new());
    }

    #[test]
    fn a_bad_url_scheme_fails() {
        for url in [
            "ftp://example.com/x.wasm",
            "s3://bucket/x.wasm",
            "registry:5000/x",
        ] {
            let doc = with(good_wasmplugin(), "/spec/url", json!(url));
            assert_fails(
                &doc,
                &[
                    "spec.url",
                    "url must have schema one of [http, https, file, oci]",
                ],
            );
        }
        for url in [
            "file:///opt/filters/canary_router.wasm",
            "https://example.com/canary_router.wasm",
            "oci://registry.example.com:5000/f/canary-router@sha256:abc",
            // No scheme: Istio reads it as an OCI image reference.
            "registry.example.com/f/canary-router:0.1.0",
            "/opt/filters/canary_router.wasm",
        ] {
            let doc = with(good_wasmplugin(), "/spec/url", json!(url));
            assert_eq!(errors(&doc), Vec::<String>::new(), "{url}");
        }
    }

    #[test]
    fn a_bad_enum_fails() {
        let doc = with(
            good_wasmplugin(),
            "/spec/failStrategy",
            json!("FAIL_SOMETIMES"),
        );
        assert_fails(
            &doc,
            &["spec.failStrategy", "\"FAIL_SOMETIMES\"", "\"FAIL_CLOSE\""],
        );
        let doc = with(good_wasmplugin(), "/spec/match/0/mode", json!("OUTBOUND"));
        assert_fails(&doc, &["spec.match[0].mode", "unsupported value"]);
    }

    #[test]
    fn types_required_patterns_and_bounds() {
        let mut doc = good_wasmplugin();
        doc["spec"].as_object_mut().expect("spec").remove("url");
        assert_fails(&doc, &["spec.url: required field missing"]);
        let doc = with(good_wasmplugin(), "/spec/sha256", json!("abc"));
        assert_fails(&doc, &["spec.sha256", "does not match"]);
        let doc = with(good_wasmplugin(), "/spec/sha256", json!("a".repeat(64)));
        assert_eq!(errors(&doc), Vec::<String>::new());
        let doc = with(good_wasmplugin(), "/spec/priority", json!("high"));
        assert_fails(&doc, &["spec.priority"]);
        let doc = with(good_wasmplugin(), "/spec/match/0/ports/0/number", json!(0));
        assert_fails(&doc, &["spec.match[0].ports[0].number", "minimum"]);
        let mut doc = good_wasmplugin();
        doc["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("name");
        assert_fails(&doc, &["metadata.name: required field missing"]);
        let doc = with(good_wasmplugin(), "/metadata/name", json!("Canary_Router"));
        assert_fails(&doc, &["metadata.name"]);
    }

    #[test]
    fn non_nullable_nulls_are_pruned_like_the_api_server() {
        // `sha256:` with no value in YAML is null: dropped, not an error.
        let doc = with(good_wasmplugin(), "/spec/sha256", Value::Null);
        assert_eq!(errors(&doc), Vec::<String>::new());
    }

    #[test]
    fn wasmplugin_cel_rules() {
        let doc = with(
            good_wasmplugin(),
            "/spec/targetRefs",
            json!([{"kind": "Gateway", "name": "gw"}]),
        );
        assert_fails(
            &doc,
            &["spec:", "only one of targetRefs or selector can be set"],
        );
        let doc = with(
            good_wasmplugin(),
            "/spec/selector/matchLabels",
            json!({"app": "web*"}),
        );
        assert_fails(&doc, &["spec.selector.matchLabels.app", "wildcard"]);
        let doc = with(
            good_wasmplugin(),
            "/spec/vmConfig",
            json!({"env": [{"name": "A", "valueFrom": "HOST", "value": "x"}]}),
        );
        assert_fails(&doc, &["spec.vmConfig.env[0]", "value may only be set"]);
        let doc = with(
            good_wasmplugin(),
            "/spec/vmConfig",
            json!({"env": [{"name": "A"}, {"name": "A"}]}),
        );
        assert_fails(&doc, &["spec.vmConfig.env[1]", "Duplicate value"]);
    }

    #[test]
    fn other_kinds_oneof_and_durations() {
        let vs = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews"},
            "spec": {
                "hosts": ["reviews"],
                "http": [{
                    "match": [{"headers": {"x-route-version": {"exact": "v2"}}}],
                    "timeout": "5s",
                    "route": [{"destination": {"host": "reviews", "subset": "v2"}}]
                }]
            }
        });
        assert_eq!(errors(&vs), Vec::<String>::new());
        let doc = with(vs.clone(), "/spec/http/0/timeout", json!("0s"));
        assert_fails(&doc, &["spec.http[0].timeout", "greater than 1ms"]);
        let doc = with(vs.clone(), "/spec/http/0/timeout", json!("five seconds"));
        assert_fails(&doc, &["spec.http[0].timeout", "invalid duration"]);
        let doc = with(
            vs.clone(),
            "/spec/http/0/match/0/headers/x-route-version",
            json!({"exact": "v2", "prefix": "v"}),
        );
        assert_fails(
            &doc,
            &[
                "spec.http[0].match[0].headers.x-route-version:",
                "at most one of exact, prefix, regex",
            ],
        );
    }

    #[test]
    fn unknown_kinds_and_versions_fail() {
        let doc = with(
            good_wasmplugin(),
            "/apiVersion",
            json!("extensions.istio.io/v1"),
        );
        assert_fails(&doc, &["no such version", "extensions.istio.io/v1alpha1"]);
        let doc = with(good_wasmplugin(), "/kind", json!("WasmPlugins"));
        assert_fails(&doc, &["no CRD for it"]);
        assert!(is_istio_api_version("networking.istio.io/v1"));
        assert!(!is_istio_api_version("apps/v1"));
        assert!(!is_istio_api_version("v1"));
    }

    #[test]
    fn every_served_schema_compiles() {
        let crds = Crds::load().expect("CRDs load");
        let mut count = 0;
        for ((api_version, kind), v) in crds.versions.iter().filter(|(_, v)| v.served) {
            if let Err(e) = compile(&v.strict) {
                panic!("{kind} {api_version}: {e}");
            }
            count += 1;
        }
        assert!(count >= 12, "{count}");
        let served: Vec<(&str, &str)> = crds.served().collect();
        for pair in [
            ("extensions.istio.io/v1alpha1", "WasmPlugin"),
            ("networking.istio.io/v1", "VirtualService"),
            ("networking.istio.io/v1", "DestinationRule"),
        ] {
            assert!(served.contains(&pair), "{pair:?} not served");
        }
    }

    /// Values of the shape `schema` describes, for a rule at that node to
    /// run on: enum members, a few strings, objects with their required
    /// fields, and with one entry where the object is a map.
    fn samples(schema: &Value) -> Vec<Value> {
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            return options.clone();
        }
        let first = |s: &Value| samples(s).into_iter().next();
        if schema["x-kubernetes-int-or-string"] == true {
            return vec![json!(80), json!("80")];
        }
        match schema["type"].as_str() {
            Some("string") => vec![json!("1s"), json!("https://example.com/x"), json!("a")],
            Some("integer") => vec![json!(80)],
            Some("number") => vec![json!(1.5)],
            Some("boolean") => vec![json!(true)],
            Some("array") => {
                let mut lists = vec![json!([])];
                lists.extend(first(&schema["items"]).map(|item| json!([item])));
                lists
            }
            _ => {
                let mut base = Map::new();
                for field in schema["required"].as_array().into_iter().flatten() {
                    let field = field.as_str().expect("a field name");
                    if let Some(v) = first(&schema["properties"][field]) {
                        base.insert(field.to_string(), v);
                    }
                }
                let mut objects = vec![Value::Object(base.clone())];
                if let Some(v) = schema
                    .get("additionalProperties")
                    .filter(|a| a.is_object())
                    .and_then(first)
                {
                    base.insert("80".to_string(), v);
                    objects.push(Value::Object(base));
                }
                objects
            }
        }
    }

    /// Every rule of the CRDs file with the schema node holding it (one node
    /// per distinct rule).
    fn crd_rules(crds: &Crds) -> BTreeMap<String, Value> {
        fn collect(v: &Value, rules: &mut BTreeMap<String, Value>) {
            match v {
                Value::Object(m) => {
                    for r in m
                        .get("x-kubernetes-validations")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let rule = r["rule"].as_str().expect("a rule text").to_string();
                        rules.entry(rule).or_insert_with(|| v.clone());
                    }
                    m.values().for_each(|v| collect(v, rules));
                }
                Value::Array(a) => a.iter().for_each(|v| collect(v, rules)),
                _ => {}
            }
        }
        let mut rules = BTreeMap::new();
        for v in crds.versions.values() {
            collect(&v.schema, &mut rules);
        }
        rules
    }

    #[test]
    fn every_cel_rule_in_the_crds_file_compiles_and_evaluates() {
        let crds = Crds::load().expect("CRDs load");
        let rules = crd_rules(&crds);
        assert!(rules.len() > 20, "{rules:#?}");
        for (rule, schema) in &rules {
            let program = crds.rules.compile(rule);
            let program = match program.as_ref() {
                Ok(program) => program,
                Err(e) => panic!("{rule}: does not compile: {e}"),
            };
            // Every function it calls is declared, in the branches that the
            // samples below do not reach too.
            for function in program.references().functions() {
                if function.starts_with(['_', '@', '!', '-']) {
                    continue; // operators
                }
                assert!(
                    crds.rules.declares(function),
                    "{rule}: calls {function}(), which is not declared"
                );
            }
            let outcomes: Vec<(Value, Result<bool, String>)> = samples(schema)
                .into_iter()
                .map(|v| {
                    let outcome = crds.rules.eval(rule, &v, schema);
                    (v, outcome)
                })
                .collect();
            assert!(
                outcomes.iter().any(|(_, outcome)| outcome.is_ok()),
                "{rule}: evaluates on none of its samples: {outcomes:#?}"
            );
        }
        // The probe tells an undeclared function from a declared one.
        assert!(crds.rules.declares("isURL"));
        assert!(crds.rules.declares("getScheme"));
        assert!(crds.rules.declares("substring"));
        assert!(!crds.rules.declares("noSuchFunction"));
    }

    #[test]
    fn each_rule_is_compiled_once() {
        let rules = cel::Rules::new().expect("CEL environment");
        let first = rules.compile("self.size() == 0");
        assert!(first.is_ok());
        assert!(Arc::ptr_eq(&first, &rules.compile("self.size() == 0")));
        // A parse error is kept too.
        let bad = rules.compile("self ==");
        assert!(bad.is_err());
        assert!(Arc::ptr_eq(&bad, &rules.compile("self ==")));
    }

    /// `rule` on `value`, a node without schema.
    fn eval(rule: &str, value: Value) -> Result<bool, String> {
        static RULES: OnceLock<cel::Rules> = OnceLock::new();
        RULES
            .get_or_init(|| cel::Rules::new().expect("CEL environment"))
            .eval(rule, &value, &Value::Null)
    }

    #[test]
    fn cel_is_url() {
        for url in [
            "https://example.com/x",
            "oci://registry:5000/f/x@sha256:abc",
            "/abs/path",
            "mailto:someone",
        ] {
            assert_eq!(eval("isURL(self)", json!(url)), Ok(true), "{url}");
        }
        for not_url in ["", "rel/path", "http://host:port/", "http://a b/", ":x"] {
            assert_eq!(eval("isURL(self)", json!(not_url)), Ok(false), "{not_url}");
        }
        assert!(eval("isURL(1)", json!(null)).is_err());
    }

    #[test]
    fn cel_url_get_scheme() {
        let scheme = |url: &str| eval("url(self).getScheme() == 'oci'", json!(url));
        assert_eq!(scheme("oci://r/x"), Ok(true));
        assert_eq!(scheme("OCI://r/x"), Ok(true), "lowercased, as Go does");
        assert_eq!(scheme("https://r/x"), Ok(false));
        assert_eq!(eval("url(self).getScheme() == ''", json!("/abs")), Ok(true));
        assert_eq!(
            eval(
                r#"url(self).getScheme() in ["http", "https"]"#,
                json!("http://jwks.example.com/keys")
            ),
            Ok(true)
        );
        // url() of a string that is no URL is an error, as in Kubernetes.
        let e = scheme("rel/path").expect_err("not a URL");
        assert!(e.contains("URL parse error"), "{e}");
        assert!(e.contains("invalid URI for request"), "{e}");
        // getScheme is a method of URLs only.
        assert!(eval("self.getScheme() == ''", json!("/abs")).is_err());
    }

    #[test]
    fn cel_substring() {
        let rule = r#"self.startsWith("unix://") ? (self.substring(7, 8) == "/" || self.substring(7, 8) == "@") : true"#;
        assert_eq!(eval(rule, json!("unix:///var/run/x.sock")), Ok(true));
        assert_eq!(eval(rule, json!("unix://@abstract")), Ok(true));
        assert_eq!(eval(rule, json!("unix://relative")), Ok(false));
        assert_eq!(eval(rule, json!("1.2.3.4")), Ok(true));
        // Out of range is an error, not false.
        let e = eval(rule, json!("unix://")).expect_err("out of range");
        assert!(e.contains("index out of range: 8"), "{e}");
        assert!(eval("self.substring(-1) == ''", json!("abc")).is_err());
        assert!(eval("self.substring(2, 1) == ''", json!("abc")).is_err());
        // Code points, not bytes.
        assert_eq!(
            eval("self.substring(2) == '©o©αT'", json!("ta©o©αT")),
            Ok(true)
        );
        assert_eq!(
            eval("self.substring(2, 4) == '©o'", json!("ta©o©αT")),
            Ok(true)
        );
        assert_eq!(eval("self.substring(7) == ''", json!("ta©o©αT")), Ok(true));
    }

    #[test]
    fn cel_duration_comparison() {
        let rule = "duration(self) >= duration('1ms')";
        for ok in ["1ms", "1.5ms", "1000us", "5s", "1h30m", "0.001s"] {
            assert_eq!(eval(rule, json!(ok)), Ok(true), "{ok}");
        }
        for short in ["0s", "0", "999us", "999999ns", "-1h"] {
            assert_eq!(eval(rule, json!(short)), Ok(false), "{short}");
        }
        // Go's syntax: no days, no unit-less numbers, nothing trailing.
        for bad in ["five seconds", "1d", "1", "5sx", "", "1e3s"] {
            let e = eval(rule, json!(bad)).expect_err(bad);
            assert!(e.contains("duration"), "{bad}: {e}");
        }
        assert_eq!(
            eval("duration(self) == duration('90m')", json!("1h30m")),
            Ok(true)
        );
        assert_eq!(
            eval("duration(self) < duration('1h')", json!("59m59.999s")),
            Ok(true)
        );
        assert_eq!(
            eval("duration(self) > duration('1h')", json!("59m59.999s")),
            Ok(false)
        );
        // A duration compares with durations only.
        assert!(eval("duration(self) > 1", json!("1s")).is_err());
    }

    #[test]
    fn cel_core_functions_and_macros() {
        let ports = json!([{"number": 80}, {"number": 443}]);
        let unique = "self.all(l1, self.exists_one(l2, l1.number == l2.number))";
        assert_eq!(eval(unique, ports), Ok(true));
        assert_eq!(
            eval(unique, json!([{"number": 80}, {"number": 80}])),
            Ok(false)
        );
        let keys = "self.all(key, 0 < int(key) && int(key) <= 65535)";
        assert_eq!(eval(keys, json!({"80": {}, "8080": {}})), Ok(true));
        assert_eq!(eval(keys, json!({"70000": {}})), Ok(false));
        assert!(
            eval(keys, json!({"http": {}})).is_err(),
            "int() of no number"
        );
        let names = r#"self.all(key, size(key) < 63 && key.matches("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$"))"#;
        assert_eq!(eval(names, json!({"http-web": 1})), Ok(true));
        assert_eq!(eval(names, json!({"-web": 1})), Ok(false));
        assert_eq!(eval(names, json!({"a".repeat(63): 1})), Ok(false));
        let cidr = r#"!((has(self.addresses) ? self.addresses : []).exists(k, k.contains("/")) && !((has(self.resolution) ? self.resolution : "NONE") in ["STATIC", "NONE"]))"#;
        assert_eq!(eval(cidr, json!({"addresses": ["10.0.0.0/8"]})), Ok(true));
        assert_eq!(
            eval(
                cidr,
                json!({"addresses": ["10.0.0.0/8"], "resolution": "DNS"})
            ),
            Ok(false)
        );
        let unix = r#"self.startsWith("unix://") ? !self.endsWith("/") : true"#;
        assert_eq!(eval(unix, json!("unix:///x/")), Ok(false));
        assert_eq!(eval("self.size() == 0", json!("")), Ok(true));
        assert_eq!(eval("self.size() == 1", json!("α")), Ok(true));
        assert_eq!(eval("0 < self && self <= 65535", json!(65536)), Ok(false));
        // A missing field is an error, has() is the test.
        let upsert = r#"((has(self.operation) ? self.operation : "") == "UPSERT") ? (self.value != "") : true"#;
        assert_eq!(eval(upsert, json!({"operation": "REMOVE"})), Ok(true));
        assert!(eval(upsert, json!({"operation": "UPSERT"})).is_err());
    }

    #[test]
    fn a_rule_that_cannot_run_is_an_error_not_a_pass() {
        for (rule, value, reason) in [
            ("noSuchFunction(self)", json!("x"), "noSuchFunction"),
            ("self.noSuchMethod()", json!("x"), "noSuchMethod"),
            ("self ==", json!("x"), "does not compile"),
            ("self + 1 == 2", json!("x"), "cannot be evaluated"),
            ("self", json!("x"), "not a bool"),
            ("self.size()", json!("x"), "not a bool"),
        ] {
            let e = eval(rule, value).expect_err(rule);
            assert!(e.contains(reason), "{rule}: {e}");
        }
        // Through validation: the path, the message, the rule and why.
        let crds = Crds::from_yaml(
            r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.istio.io}
spec:
  group: example.istio.io
  names: {kind: Widget}
  versions:
  - name: v1
    served: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size:
                type: string
                x-kubernetes-validations:
                - rule: noSuchFunction(self)
                  message: size is checked
              count:
                type: integer
                x-kubernetes-validations:
                - rule: "self >"
              ratio:
                type: number
                x-kubernetes-validations:
                - rule: self < 1.0
"#,
        )
        .expect("CRDs");
        let doc = json!({
            "apiVersion": "example.istio.io/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"size": "x", "count": 1, "ratio": 2}
        });
        let errs = crds.validate(&doc).expect_err("rules fail");
        let expected = [
            "spec.size: Invalid value: \"x\": size is checked (rule `noSuchFunction(self)` cannot be evaluated: Undeclared reference to 'noSuchFunction')",
            "spec.count: Invalid value: 1: failed rule (rule `self >` does not compile:",
            "spec.ratio: Invalid value: 2: failed rule",
        ];
        for line in expected {
            assert!(
                errs.iter().any(|e| e.starts_with(line)),
                "{line}\n{errs:#?}"
            );
        }
        assert_eq!(errs.len(), 3, "{errs:#?}");
    }

    #[test]
    fn rules_skip_a_value_of_the_wrong_type() {
        // The schema check reports it; no rule runs on it.
        let doc = with(good_wasmplugin(), "/spec/url", json!(5));
        let errs = errors(&doc);
        assert!(errs.iter().any(|e| e.starts_with("spec.url")), "{errs:#?}");
        assert!(!errs.iter().any(|e| e.contains("rule")), "{errs:#?}");
    }

    #[test]
    fn go_url_and_duration_parsing() {
        use super::cel::{parse_go_duration, parse_request_uri};
        assert_eq!(parse_request_uri("OCI://r/x").as_deref(), Ok("oci"));
        assert_eq!(parse_request_uri("/abs/path").as_deref(), Ok(""));
        assert!(parse_request_uri("rel/path").is_err());
        assert!(parse_request_uri("http://a b/").is_err());
        assert!(parse_request_uri("http://host:port/").is_err());
        assert!(parse_request_uri(":x").is_err());
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5ms"), Ok(1_500_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert!(parse_go_duration("1").is_err());
        assert!(parse_go_duration("1d").is_err());
    }
}
