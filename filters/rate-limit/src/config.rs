//! The `pluginConfig` as operators write it (camelCase, unknown fields
//! rejected), and its compilation into a [`Config`] holding one
//! [`Buckets`] per rule. Every error names the JSON path of the problem.
//!
//! Key sources, one JSON shape each (exactly one source field per entry):
//!
//! | source          | JSON                                                  | key part                                   |
//! |-----------------|-------------------------------------------------------|--------------------------------------------|
//! | header          | `{"header": "x-user-id"}`                             | the first value (empty counts as missing)  |
//! | remote address  | `{"remoteAddress": {"xffTrustedHops": 0}}` (or `{}`)  | see [`crate::key`]                         |
//! | path            | `{"path": {}}`                                        | `:path` without query string or fragment   |
//! | method          | `{"method": {}}`                                      | `:method`                                  |
//! | query parameter | `{"query": "api_key"}`                                | the first value, decoded (empty = missing) |
//! | JWT claim       | `{"claim": "sub", "fromHeader": "x-jwt-payload"}`     | the claim ([`kit::claims::ClaimSource`])   |

use crate::gcra::{Buckets, FailureMode};
use crate::key::KeySource;
use governor::Quota;
use kit::ConfigError;
use kit::claims::ClaimSource;
use kit::config::{header_name, join, param_name};
use kit::matcher::{RawMatch, RequestMatch};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::num::NonZeroU32;

/// CAS attempts per check before the failure mode decides.
pub const MAX_RETRIES: u32 = 8;
/// The largest `maxKeys`: every slot is created at load, per rule.
pub const MAX_KEYS_LIMIT: u64 = 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawConfig {
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub response: RawResponse,
    #[serde(default)]
    pub rate_limit_headers: bool,
    #[serde(default)]
    pub failure_mode: RawFailureMode,
    #[serde(default = "default_max_keys")]
    pub max_keys: u64,
}

pub fn default_max_keys() -> u64 {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    /// The shared request match (`kit::matcher`); empty: every request.
    #[serde(default, rename = "match")]
    pub matcher: RawMatch,
    #[serde(default)]
    pub key: Vec<RawKeySource>,
    pub limit: RawLimit,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub on_missing_key: OnMissingKey,
}

/// One key source; exactly one of its source fields must be given (see the
/// module documentation for the shapes).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawKeySource {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub remote_address: Option<RawRemoteAddress>,
    #[serde(default)]
    pub path: Option<Empty>,
    #[serde(default)]
    pub method: Option<Empty>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(default)]
    pub from_header: Option<String>,
}

/// `{}`: a source with no options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRemoteAddress {
    #[serde(default)]
    pub xff_trusted_hops: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawLimit {
    pub requests: u32,
    pub per: kit::Duration,
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissingKey {
    #[default]
    Skip,
    Deny,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawFailureMode {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawResponse {
    #[serde(default = "default_status")]
    pub status: u32,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Default for RawResponse {
    fn default() -> Self {
        RawResponse {
            status: default_status(),
            body: String::new(),
            headers: BTreeMap::new(),
        }
    }
}

pub fn default_status() -> u32 {
    429
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub rules: Vec<Rule>,
    pub response: Response,
    pub rate_limit_headers: bool,
    pub failure_mode: FailureMode,
    pub max_keys: u64,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub matcher: RequestMatch,
    pub key: Vec<KeySource>,
    pub limit: Limit,
    pub mode: Mode,
    pub on_missing_key: OnMissingKey,
    pub buckets: Buckets,
}

/// The limit as configured: `requests` per `per`, with `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub requests: u32,
    pub per: std::time::Duration,
    pub burst: u32,
}

impl Limit {
    /// The time one request's quota takes to come back (`per / requests`).
    pub fn interval(&self) -> std::time::Duration {
        self.per / self.requests.max(1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u32,
    pub body: Vec<u8>,
    /// Lowercase names, in name order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Parses and compiles a `pluginConfig`. `plugin_name` prefixes the
/// shared-data keys: `mesh-filters/rate-limit/<plugin_name>/<rule name>`.
pub fn compile_json(bytes: Option<&[u8]>, plugin_name: &str) -> Result<Config, ConfigError> {
    kit::config::parse_json::<RawConfig>(bytes)?.compile(plugin_name)
}

fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl RawConfig {
    pub fn compile(self, plugin_name: &str) -> Result<Config, ConfigError> {
        if self.max_keys == 0 || self.max_keys > MAX_KEYS_LIMIT {
            return Err(ConfigError::new(
                "maxKeys",
                format!("expected 1 to {MAX_KEYS_LIMIT}, got {}", self.max_keys),
            ));
        }
        let failure_mode = match self.failure_mode {
            RawFailureMode::Allow => FailureMode::Allow,
            RawFailureMode::Deny => FailureMode::Deny,
        };
        if self.rules.is_empty() {
            return Err(ConfigError::new("rules", "expected at least one rule"));
        }
        let response = self.response.compile("response")?;
        let mut rules: Vec<Rule> = Vec::with_capacity(self.rules.len());
        for (i, raw) in self.rules.into_iter().enumerate() {
            let path = format!("rules[{i}]");
            if rules.iter().any(|r| r.name == raw.name) {
                return Err(ConfigError::new(
                    join(&path, "name"),
                    format!("rule name {:?} appears twice", raw.name),
                ));
            }
            rules.push(raw.compile(&path, plugin_name, self.max_keys, failure_mode)?);
        }
        Ok(Config {
            rules,
            response,
            rate_limit_headers: self.rate_limit_headers,
            failure_mode,
            max_keys: self.max_keys,
        })
    }
}

impl RawResponse {
    fn compile(self, path: &str) -> Result<Response, ConfigError> {
        if !(400..=599).contains(&self.status) {
            return Err(ConfigError::new(
                join(path, "status"),
                format!("expected an error status (400 to 599), got {}", self.status),
            ));
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in self.headers {
            let hpath = join(path, &format!("headers.{name}"));
            let lower = header_name(&hpath, &name)?;
            if lower == "retry-after" || lower == "content-length" {
                return Err(ConfigError::new(
                    hpath,
                    format!("{lower:?} is set by the filter"),
                ));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(ConfigError::new(
                    hpath,
                    "header values cannot hold CR, LF or NUL",
                ));
            }
            headers.push((lower, value.into_bytes()));
        }
        Ok(Response {
            status: self.status,
            body: self.body.into_bytes(),
            headers,
        })
    }
}

impl RawRule {
    fn compile(
        self,
        path: &str,
        plugin_name: &str,
        max_keys: u64,
        failure_mode: FailureMode,
    ) -> Result<Rule, ConfigError> {
        if !valid_rule_name(&self.name) {
            return Err(ConfigError::new(
                join(path, "name"),
                format!(
                    "expected 1 to 63 letters, digits, '-', '_' or '.', got {:?}",
                    self.name
                ),
            ));
        }
        let matcher = self
            .matcher
            .compile(&join(path, "match"), kit::matcher::no_regex)?;
        let key = self
            .key
            .into_iter()
            .enumerate()
            .map(|(i, k)| k.compile(&join(path, &format!("key[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        let lpath = join(path, "limit");
        let limit = self.limit.compile(&lpath)?;
        let quota =
            Quota::with_period(limit.interval())
                .ok_or_else(|| {
                    ConfigError::new(
                        lpath.clone(),
                        "per / requests is under a nanosecond; lower requests or raise per",
                    )
                })?
                .allow_burst(NonZeroU32::new(limit.burst).ok_or_else(|| {
                    ConfigError::new(join(&lpath, "burst"), "expected at least 1")
                })?);
        Ok(Rule {
            buckets: Buckets {
                prefix: format!("mesh-filters/rate-limit/{plugin_name}/{}", self.name),
                slots: max_keys,
                quota,
                max_retries: MAX_RETRIES,
                failure_mode,
            },
            name: self.name,
            matcher,
            key,
            limit,
            mode: self.mode,
            on_missing_key: self.on_missing_key,
        })
    }
}

impl RawLimit {
    fn compile(&self, path: &str) -> Result<Limit, ConfigError> {
        if self.requests == 0 {
            return Err(ConfigError::new(
                join(path, "requests"),
                "expected at least 1",
            ));
        }
        let per = self.per.get();
        if per.is_zero() {
            return Err(ConfigError::new(
                join(path, "per"),
                "expected a duration above 0, like \"1m\"",
            ));
        }
        let burst = self.burst.unwrap_or(self.requests);
        if burst == 0 {
            return Err(ConfigError::new(join(path, "burst"), "expected at least 1"));
        }
        Ok(Limit {
            requests: self.requests,
            per,
            burst,
        })
    }
}

impl RawKeySource {
    fn compile(self, path: &str) -> Result<KeySource, ConfigError> {
        let given = [
            self.header.is_some(),
            self.remote_address.is_some(),
            self.path.is_some(),
            self.method.is_some(),
            self.query.is_some(),
            self.claim.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ConfigError::new(
                path,
                "expected exactly one key source: header, remoteAddress, path, method, query or claim",
            ));
        }
        let claim = ClaimSource::compile(path, self.claim, self.from_header)?;
        Ok(if let Some(h) = self.header {
            KeySource::Header(header_name(&join(path, "header"), &h)?)
        } else if let Some(r) = self.remote_address {
            KeySource::RemoteAddress {
                xff_trusted_hops: r.xff_trusted_hops,
            }
        } else if self.path.is_some() {
            KeySource::Path
        } else if self.method.is_some() {
            KeySource::Method
        } else if let Some(q) = self.query {
            KeySource::Query(param_name(&join(path, "query"), &q)?)
        } else if let Some(claim) = claim {
            KeySource::Claim(claim)
        } else {
            return Err(ConfigError::new(path, "expected a key source"));
        })
    }
}
