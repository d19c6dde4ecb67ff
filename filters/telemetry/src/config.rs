//! The `pluginConfig` as operators write it (camelCase, unknown fields
//! rejected), and its compilation into a [`Config`]. Every error names the
//! JSON path of the problem.
//!
//! | field                          | type                         | default              |
//! |--------------------------------|------------------------------|----------------------|
//! | `routes`                       | `[{name, pathPrefix│regex│match}]` | `[]`           |
//! | `dimensions`                   | list of dimension names      | `["route", "method", "response_code"]` |
//! | `versionHeader`                | header name                  | `x-route-version`    |
//! | `sourceWorkloadHeader`         | header name                  | none (required by `source_workload`) |
//! | `maxValuesPerLabel`            | 1..=10000                    | 100                  |
//! | `accessLog.enabled`            | bool                         | true                 |
//! | `accessLog.sample`             | 0.0..=1.0                    | 1.0                  |
//! | `accessLog.onlyErrors`         | bool (status >= 500 or none) | false                |
//! | `accessLog.includeQuery`       | bool (keep `?…` in `path`)   | false                |
//! | `accessLog.level`              | trace…critical               | info                 |
//! | `accessLog.userClaim`          | `{claim, fromHeader}`        | none                 |
//! | `accessLog.fields`             | list of [`LOG_FIELDS`]       | [`DEFAULT_LOG_FIELDS`] |
//! | `tracing.generateTraceparent`  | bool                         | false                |
//! | `tracing.responseHeader`       | header name                  | none                 |
//! | `anomaly`                      | see [`Anomaly`]              | none (off)           |
//! | `anomaly.enabled`              | bool                         | true                 |
//! | `anomaly.window`               | duration (multiple of 100ms) | `5s`                 |
//! | `anomaly.baseline`             | duration > window, <= 24h    | `60s`                |
//! | `anomaly.factor`               | number >= 1.0                | 3.0                  |
//! | `anomaly.minDelta`             | error-rate share >= 0.0      | 0.05                 |
//! | `anomaly.minLatencyDelta`      | duration                     | `25ms`               |
//! | `anomaly.minRequests`          | integer >= 1                 | 20                   |
//!
//! Dimensions: `route`, `method`, `response_code`, `response_code_class`,
//! `version`, `source_workload`, and `header:<name>` (label named after the
//! header, `-` as `_`).

use kit::ConfigError;
use kit::LogLevel;
use kit::claims::ClaimSource;
use kit::config::{header_name, join};
use kit::matcher::{RawMatch, RequestMatch, full_match};
use serde::Deserialize;

/// The largest `maxValuesPerLabel`.
pub const MAX_VALUES_LIMIT: u64 = 10_000;

/// Every access-log field that `accessLog.fields` may pick.
pub const LOG_FIELDS: &[&str] = &[
    "timestamp",
    "method",
    "path",
    "status",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "version",
    "route",
    "trace_id",
    "request_id",
    "user",
    "rate_limit_decision",
    "source_address",
];

/// The fields logged when `accessLog.fields` is absent: all but the last,
/// `source_address`.
pub const DEFAULT_LOG_FIELDS: &[&str] = match LOG_FIELDS.split_last() {
    Some((_, rest)) => rest,
    None => &[],
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default = "default_dimensions")]
    pub dimensions: Vec<String>,
    #[serde(default = "default_version_header")]
    pub version_header: String,
    #[serde(default)]
    pub source_workload_header: Option<String>,
    #[serde(default = "default_max_values")]
    pub max_values_per_label: u64,
    #[serde(default)]
    pub access_log: RawAccessLog,
    #[serde(default)]
    pub tracing: RawTracing,
    #[serde(default)]
    pub anomaly: Option<RawAnomaly>,
}

pub fn default_dimensions() -> Vec<String> {
    vec!["route".into(), "method".into(), "response_code".into()]
}

pub fn default_version_header() -> String {
    "x-route-version".to_string()
}

pub fn default_max_values() -> u64 {
    100
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    /// Shorthand for `match: {pathPrefix}`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Shorthand for `match: {pathRegex}`.
    #[serde(default)]
    pub regex: Option<String>,
    /// The shared request match (`kit::matcher`), for more than a path.
    #[serde(default, rename = "match")]
    pub matcher: Option<RawMatch>,
}

impl RawRoute {
    /// The route's compiled match: exactly one of `pathPrefix`, `regex`
    /// and `match` must be given.
    fn compile_match(&mut self, path: &str) -> Result<RequestMatch, ConfigError> {
        match (
            self.path_prefix.take(),
            self.regex.take(),
            self.matcher.take(),
        ) {
            (Some(p), None, None) => RawMatch::path_prefix(p).compile(path, full_match),
            (None, Some(r), None) => {
                let m = RawMatch {
                    path_regex: Some(r),
                    ..RawMatch::default()
                };
                // The error names the field as this shorthand spells it.
                m.compile(path, full_match)
                    .map_err(|e| ConfigError::new(e.path.replace("pathRegex", "regex"), e.message))
            }
            (None, None, Some(m)) => m.compile(&join(path, "match"), full_match),
            _ => Err(ConfigError::new(
                path,
                "expected exactly one of pathPrefix, regex, match",
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAccessLog {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "one")]
    pub sample: f64,
    #[serde(default)]
    pub only_errors: bool,
    #[serde(default)]
    pub include_query: bool,
    #[serde(default)]
    pub level: Level,
    #[serde(default)]
    pub user_claim: Option<ClaimSource>,
    #[serde(default)]
    pub fields: Option<Vec<String>>,
}

impl Default for RawAccessLog {
    fn default() -> Self {
        RawAccessLog {
            enabled: true,
            sample: 1.0,
            only_errors: false,
            include_query: false,
            level: Level::Info,
            user_claim: None,
            fields: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
    Critical,
}

impl Level {
    pub fn log_level(self) -> LogLevel {
        match self {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
            Level::Critical => LogLevel::Critical,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawTracing {
    #[serde(default)]
    pub generate_traceparent: bool,
    #[serde(default)]
    pub response_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAnomaly {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_window")]
    pub window: kit::Duration,
    #[serde(default = "default_baseline")]
    pub baseline: kit::Duration,
    #[serde(default = "default_factor")]
    pub factor: f64,
    #[serde(default = "default_min_delta")]
    pub min_delta: f64,
    #[serde(default = "default_min_latency_delta")]
    pub min_latency_delta: kit::Duration,
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

fn default_window() -> kit::Duration {
    kit::Duration(std::time::Duration::from_secs(5))
}

fn default_baseline() -> kit::Duration {
    kit::Duration(std::time::Duration::from_secs(60))
}

fn default_factor() -> f64 {
    3.0
}

fn default_min_delta() -> f64 {
    0.05
}

fn default_min_latency_delta() -> kit::Duration {
    kit::Duration(std::time::Duration::from_millis(25))
}

fn default_min_requests() -> u64 {
    20
}

/// One label dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    Route,
    Method,
    ResponseCode,
    ResponseCodeClass,
    Version,
    SourceWorkload,
    /// `header:<name>`: the (lowercased) header's first value.
    Header(String),
}

impl Dimension {
    /// The label (and Envoy tag) name.
    pub fn label(&self) -> String {
        match self {
            Dimension::Route => "route".into(),
            Dimension::Method => "method".into(),
            Dimension::ResponseCode => "response_code".into(),
            Dimension::ResponseCodeClass => "response_code_class".into(),
            Dimension::Version => "version".into(),
            Dimension::SourceWorkload => "source_workload".into(),
            Dimension::Header(h) => h
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: RequestMatch,
}

#[derive(Debug, Clone)]
pub struct AccessLog {
    pub enabled: bool,
    pub sample: f64,
    /// Log only responses with status >= 500.
    pub only_errors: bool,
    /// Keep the query string in `path` (it may hold secrets; off by default).
    pub include_query: bool,
    pub level: LogLevel,
    pub user_claim: Option<ClaimSource>,
    /// The fields to write, each one of [`LOG_FIELDS`].
    pub fields: Vec<&'static str>,
}

#[derive(Debug, Clone, Default)]
pub struct Tracing {
    pub generate_traceparent: bool,
    pub response_header: Option<String>,
}

/// The anomaly signal's settings (see [`crate::anomaly`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub enabled: bool,
    /// The length of one evaluated window.
    pub window: std::time::Duration,
    /// The EWMA horizon: each window weighs `window / baseline`, and the
    /// baseline is warm after `baseline / window` windows.
    pub baseline: std::time::Duration,
    /// Current must be at least `factor` x baseline...
    pub factor: f64,
    /// ...and at least this much above it: an error-rate share (0.05 is 5
    /// points)...
    pub min_delta: f64,
    /// ...or, for the p95 latency, this much.
    pub min_latency_delta: std::time::Duration,
    /// A window with fewer requests is neither judged nor learnt from.
    pub min_requests: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub routes: Vec<Route>,
    pub dimensions: Vec<Dimension>,
    pub version_header: String,
    pub source_workload_header: Option<String>,
    pub max_values_per_label: usize,
    pub access_log: AccessLog,
    pub tracing: Tracing,
    /// Present and enabled, else `None`.
    pub anomaly: Option<Anomaly>,
}

/// Parses and compiles a `pluginConfig`.
pub fn compile_json(bytes: Option<&[u8]>) -> Result<Config, ConfigError> {
    let raw: RawConfig = kit::config::parse_json(bytes)?;
    raw.compile()
}

/// A label value must be usable as is: the characters of
/// [`crate::labels::sanitize`].
fn check_label_value(path: &str, v: &str) -> Result<(), ConfigError> {
    if v.is_empty()
        || v.len() > crate::labels::MAX_VALUE_LEN
        || crate::labels::sanitize(v.as_bytes()) != v
    {
        return Err(ConfigError::new(
            path,
            format!(
                "expected 1 to {} characters of [A-Za-z0-9_.-], got {v:?}",
                crate::labels::MAX_VALUE_LEN
            ),
        ));
    }
    Ok(())
}

impl RawConfig {
    pub fn compile(self) -> Result<Config, ConfigError> {
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, mut r) in self.routes.into_iter().enumerate() {
            let path = format!("routes[{i}]");
            check_label_value(&join(&path, "name"), &r.name)?;
            if routes.iter().any(|x: &Route| x.name == r.name) {
                return Err(ConfigError::new(
                    join(&path, "name"),
                    format!("duplicate route name {:?}", r.name),
                ));
            }
            let matcher = r.compile_match(&path)?;
            routes.push(Route {
                name: r.name,
                matcher,
            });
        }

        let version_header = header_name("versionHeader", &self.version_header)?;
        let source_workload_header = self
            .source_workload_header
            .as_deref()
            .map(|h| header_name("sourceWorkloadHeader", h))
            .transpose()?;

        let mut dimensions: Vec<Dimension> = Vec::with_capacity(self.dimensions.len());
        for (i, d) in self.dimensions.iter().enumerate() {
            let path = format!("dimensions[{i}]");
            let dim = match d.as_str() {
                "route" => Dimension::Route,
                "method" => Dimension::Method,
                "response_code" => Dimension::ResponseCode,
                "response_code_class" => Dimension::ResponseCodeClass,
                "version" => Dimension::Version,
                "source_workload" => {
                    if source_workload_header.is_none() {
                        return Err(ConfigError::new(
                            path,
                            "source_workload needs sourceWorkloadHeader",
                        ));
                    }
                    Dimension::SourceWorkload
                }
                other => match other.strip_prefix("header:") {
                    Some(h) => Dimension::Header(header_name(&path, h)?),
                    None => {
                        return Err(ConfigError::new(
                            path,
                            format!(
                                "unknown dimension {other:?}; expected route, method, \
                                 response_code, response_code_class, version, \
                                 source_workload or header:<name>"
                            ),
                        ));
                    }
                },
            };
            if dimensions.iter().any(|x| x.label() == dim.label()) {
                return Err(ConfigError::new(
                    path,
                    format!("duplicate label {:?}", dim.label()),
                ));
            }
            if crate::metrics::RESERVED_LABELS.contains(&dim.label().as_str()) {
                return Err(ConfigError::new(
                    path,
                    format!("label {:?} is reserved", dim.label()),
                ));
            }
            dimensions.push(dim);
        }

        if !(1..=MAX_VALUES_LIMIT).contains(&self.max_values_per_label) {
            return Err(ConfigError::new(
                "maxValuesPerLabel",
                format!(
                    "expected 1 to {MAX_VALUES_LIMIT}, got {}",
                    self.max_values_per_label
                ),
            ));
        }

        let a = self.access_log;
        if !(0.0..=1.0).contains(&a.sample) {
            return Err(ConfigError::new(
                "accessLog.sample",
                format!("expected 0.0 to 1.0, got {}", a.sample),
            ));
        }
        let user_claim = match a.user_claim {
            Some(c) => {
                if c.claim.is_empty() {
                    return Err(ConfigError::new(
                        "accessLog.userClaim.claim",
                        "expected a claim name",
                    ));
                }
                let from_header = header_name("accessLog.userClaim.fromHeader", &c.from_header)?;
                Some(ClaimSource {
                    claim: c.claim,
                    from_header,
                })
            }
            None => None,
        };
        let fields = match &a.fields {
            None => DEFAULT_LOG_FIELDS.to_vec(),
            Some(list) => {
                let mut out: Vec<&'static str> = Vec::with_capacity(list.len());
                for (i, f) in list.iter().enumerate() {
                    let path = format!("accessLog.fields[{i}]");
                    let known = LOG_FIELDS
                        .iter()
                        .find(|k| **k == f.as_str())
                        .ok_or_else(|| {
                            ConfigError::new(
                                &path,
                                format!(
                                    "unknown field {f:?}; expected one of {}",
                                    LOG_FIELDS.join(", ")
                                ),
                            )
                        })?;
                    if out.contains(known) {
                        return Err(ConfigError::new(path, format!("duplicate field {f:?}")));
                    }
                    out.push(known);
                }
                out
            }
        };
        let access_log = AccessLog {
            enabled: a.enabled,
            sample: a.sample,
            only_errors: a.only_errors,
            include_query: a.include_query,
            level: a.level.log_level(),
            user_claim,
            fields,
        };

        let tracing = Tracing {
            generate_traceparent: self.tracing.generate_traceparent,
            response_header: self
                .tracing
                .response_header
                .as_deref()
                .map(|h| header_name("tracing.responseHeader", h))
                .transpose()?,
        };

        let anomaly = match self.anomaly {
            None => None,
            Some(r) => Some(compile_anomaly(r)?).filter(|a| a.enabled),
        };

        Ok(Config {
            routes,
            dimensions,
            version_header,
            source_workload_header,
            max_values_per_label: self.max_values_per_label as usize,
            access_log,
            tracing,
            anomaly,
        })
    }
}

fn compile_anomaly(r: RawAnomaly) -> Result<Anomaly, ConfigError> {
    if r.window.get().is_zero() {
        return Err(ConfigError::new(
            "anomaly.window",
            "expected a positive duration",
        ));
    }
    if r.baseline.get() <= r.window.get() {
        return Err(ConfigError::new(
            "anomaly.baseline",
            "expected a duration longer than window",
        ));
    }
    if !r.factor.is_finite() || r.factor < 1.0 {
        return Err(ConfigError::new(
            "anomaly.factor",
            format!("expected a number >= 1.0, got {}", r.factor),
        ));
    }
    if !r.min_delta.is_finite() || r.min_delta < 0.0 {
        return Err(ConfigError::new(
            "anomaly.minDelta",
            format!("expected a number >= 0.0, got {}", r.min_delta),
        ));
    }
    if !r.window.get().as_millis().is_multiple_of(100) {
        return Err(ConfigError::new(
            "anomaly.window",
            "expected a whole number of tenths of a second, like \"5s\" or \"500ms\"",
        ));
    }
    if r.baseline.get() > std::time::Duration::from_secs(24 * 3600) {
        return Err(ConfigError::new("anomaly.baseline", "expected at most 24h"));
    }
    if r.min_requests == 0 {
        return Err(ConfigError::new(
            "anomaly.minRequests",
            "expected at least 1",
        ));
    }
    Ok(Anomaly {
        enabled: r.enabled,
        window: r.window.get(),
        baseline: r.baseline.get(),
        factor: r.factor,
        min_delta: r.min_delta,
        min_latency_delta: r.min_latency_delta.get(),
        min_requests: r.min_requests,
    })
}
