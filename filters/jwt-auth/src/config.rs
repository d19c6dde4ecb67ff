//! The `pluginConfig`: provider fields named as in Istio RequestAuthentication
//! `jwtRules`, so operators can copy theirs across. Parsed and compiled once;
//! every error names its JSON path.

use crate::jwks::KeySet;
use kit::ConfigError;
use kit::config::{RESERVED_HEADERS, header_name, join};
use kit::matcher::{RawMatch, RequestMatch};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawConfig {
    pub providers: Vec<RawProvider>,
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub cache: Option<RawCache>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawProvider {
    pub name: String,
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub jwks_cluster: Option<String>,
    #[serde(default)]
    pub jwks: Option<String>,
    #[serde(default)]
    pub timeout: Option<kit::Duration>,
    #[serde(default)]
    pub cache_duration: Option<kit::Duration>,
    #[serde(default)]
    pub from_headers: Option<Vec<RawFromHeader>>,
    #[serde(default)]
    pub from_params: Option<Vec<String>>,
    #[serde(default)]
    pub from_cookies: Option<Vec<String>>,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub output_claim_to_headers: Vec<RawClaimToHeader>,
    #[serde(default)]
    pub clock_skew: Option<kit::Duration>,
    #[serde(default = "default_true")]
    pub require_expiration: bool,
    #[serde(default)]
    pub max_token_bytes: Option<usize>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawFromHeader {
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawClaimToHeader {
    pub header: String,
    pub claim: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRule {
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    /// `"none"`, `"optional"` or a list of provider names.
    pub requires: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCache {
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
}

fn default_cache_entries() -> usize {
    DEFAULT_CACHE_ENTRIES
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_CACHE_DURATION: Duration = Duration::from_secs(600);
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
pub const DEFAULT_CACHE_ENTRIES: usize = 1000;
/// Larger skews would make a token valid for ages, and overflow time
/// arithmetic.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(3600);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// A compiled configuration.
#[derive(Debug)]
pub struct Config {
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    pub cache_entries: usize,
    /// Every output header of every provider (lowercase): removed from each
    /// request, so clients cannot spoof them.
    pub output_headers: Vec<String>,
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    pub timeout: Duration,
    pub cache_duration: Duration,
    pub locations: Vec<Location>,
    pub forward_original_token: bool,
    pub payload_header: Option<String>,
    pub claim_headers: Vec<(String, String)>,
    pub clock_skew: Duration,
    pub require_expiration: bool,
    pub max_token_bytes: usize,
}

#[derive(Debug)]
pub enum JwksSource {
    Inline(KeySet),
    Remote(RemoteJwks),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    pub uri: String,
    /// The Envoy cluster `dispatch_http_call` goes through.
    pub cluster: String,
    pub authority: String,
    pub path: String,
}

/// Where a token may be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Header { name: String, prefix: String },
    Param(String),
    Cookie(String),
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// The shared request match (`kit::matcher`); the first rule matching
    /// a request decides it.
    pub matcher: RequestMatch,
    pub requires: Requires,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requires {
    None,
    Optional,
    /// Indexes of the providers; a token valid for any of them will do.
    AnyOf(Vec<usize>),
}

pub fn compile_json(bytes: Option<&[u8]>) -> Result<Config, ConfigError> {
    kit::config::parse_json::<RawConfig>(bytes)?.compile()
}

impl RawConfig {
    pub fn compile(self) -> Result<Config, ConfigError> {
        if self.providers.is_empty() {
            return Err(ConfigError::new(
                "providers",
                "expected at least one provider",
            ));
        }
        let mut providers: Vec<Provider> = Vec::new();
        for (i, p) in self.providers.into_iter().enumerate() {
            let path = format!("providers[{i}]");
            let provider = p.compile(&path)?;
            if providers.iter().any(|q| q.name == provider.name) {
                return Err(ConfigError::new(
                    join(&path, "name"),
                    format!("provider {:?} appears twice", provider.name),
                ));
            }
            providers.push(provider);
        }
        if self.rules.is_empty() {
            return Err(ConfigError::new(
                "rules",
                "expected at least one rule (a path no rule matches is denied)",
            ));
        }
        let rules = self
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.compile(&format!("rules[{i}]"), &providers))
            .collect::<Result<_, _>>()?;
        let mut output_headers: Vec<String> = Vec::new();
        for p in &providers {
            for h in p
                .payload_header
                .iter()
                .chain(p.claim_headers.iter().map(|(h, _)| h))
            {
                if !output_headers.contains(h) {
                    output_headers.push(h.clone());
                }
            }
        }
        Ok(Config {
            providers,
            rules,
            cache_entries: self.cache.map_or(DEFAULT_CACHE_ENTRIES, |c| c.max_entries),
            output_headers,
        })
    }
}

impl RawProvider {
    fn compile(self, path: &str) -> Result<Provider, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new(join(path, "name"), "expected a name"));
        }
        if self.issuer.is_empty() {
            return Err(ConfigError::new(join(path, "issuer"), "expected an issuer"));
        }
        let jwks = match (self.jwks, self.jwks_uri) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    path,
                    "set either jwks or jwksUri, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(path, "expected jwks or jwksUri"));
            }
            (Some(doc), None) => {
                if self.jwks_cluster.is_some() {
                    return Err(ConfigError::new(
                        join(path, "jwksCluster"),
                        "jwksCluster goes with jwksUri",
                    ));
                }
                let set = KeySet::parse(doc.as_bytes())
                    .map_err(|e| ConfigError::new(join(path, "jwks"), e))?;
                if set.keys.is_empty() {
                    return Err(ConfigError::new(
                        join(path, "jwks"),
                        format!("no usable signing key ({})", set.skipped_summary()),
                    ));
                }
                JwksSource::Inline(set)
            }
            (None, Some(uri)) => JwksSource::Remote(parse_jwks_uri(
                &join(path, "jwksUri"),
                &uri,
                self.jwks_cluster,
            )?),
        };
        let (from_headers, from_params) = match (self.from_headers, self.from_params) {
            // Istio's default locations.
            (None, None) => (
                vec![RawFromHeader {
                    name: "Authorization".into(),
                    prefix: "Bearer ".into(),
                }],
                vec!["access_token".to_string()],
            ),
            (h, p) => (h.unwrap_or_default(), p.unwrap_or_default()),
        };
        let mut locations = Vec::new();
        for (i, h) in from_headers.into_iter().enumerate() {
            let name = header_name(&join(path, &format!("fromHeaders[{i}].name")), &h.name)?;
            locations.push(Location::Header {
                name,
                prefix: h.prefix,
            });
        }
        for (i, p) in from_params.into_iter().enumerate() {
            if p.is_empty() {
                return Err(ConfigError::new(
                    join(path, &format!("fromParams[{i}]")),
                    "expected a query parameter name",
                ));
            }
            locations.push(Location::Param(p));
        }
        for (i, c) in self
            .from_cookies
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if c.is_empty() || c.contains([';', '=', ' ']) {
                return Err(ConfigError::new(
                    join(path, &format!("fromCookies[{i}]")),
                    format!("expected a cookie name, got {c:?}"),
                ));
            }
            locations.push(Location::Cookie(c));
        }
        if locations.is_empty() {
            return Err(ConfigError::new(
                path,
                "expected at least one token location (fromHeaders, fromParams, fromCookies)",
            ));
        }
        let payload_header = self
            .output_payload_to_header
            .map(|h| output_header(&join(path, "outputPayloadToHeader"), &h))
            .transpose()?;
        let mut claim_headers = Vec::new();
        for (i, c) in self.output_claim_to_headers.into_iter().enumerate() {
            let p = join(path, &format!("outputClaimToHeaders[{i}]"));
            let header = output_header(&join(&p, "header"), &c.header)?;
            if c.claim.is_empty() {
                return Err(ConfigError::new(join(&p, "claim"), "expected a claim name"));
            }
            claim_headers.push((header, c.claim));
        }
        let timeout = self.timeout.map_or(DEFAULT_TIMEOUT, kit::Duration::get);
        if timeout.is_zero() {
            return Err(ConfigError::new(
                join(path, "timeout"),
                "expected more than 0s",
            ));
        }
        let cache_duration = self
            .cache_duration
            .map_or(DEFAULT_CACHE_DURATION, kit::Duration::get);
        if cache_duration < Duration::from_secs(1) {
            return Err(ConfigError::new(
                join(path, "cacheDuration"),
                "expected at least 1s",
            ));
        }
        let clock_skew = self
            .clock_skew
            .map_or(DEFAULT_CLOCK_SKEW, kit::Duration::get);
        if clock_skew > MAX_CLOCK_SKEW {
            return Err(ConfigError::new(
                join(path, "clockSkew"),
                "expected at most 1h",
            ));
        }
        if timeout > MAX_TIMEOUT {
            return Err(ConfigError::new(
                join(path, "timeout"),
                "expected at most 5m",
            ));
        }
        let max_token_bytes = self.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
        if max_token_bytes < 64 {
            return Err(ConfigError::new(
                join(path, "maxTokenBytes"),
                format!("expected at least 64, got {max_token_bytes}"),
            ));
        }
        Ok(Provider {
            name: self.name,
            issuer: self.issuer,
            audiences: self.audiences,
            jwks,
            timeout,
            cache_duration,
            locations,
            forward_original_token: self.forward_original_token,
            payload_header,
            claim_headers,
            clock_skew,
            require_expiration: self.require_expiration,
            max_token_bytes,
        })
    }
}

fn output_header(path: &str, name: &str) -> Result<String, ConfigError> {
    let name = header_name(path, name)?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(ConfigError::new(
            path,
            format!("{name:?} cannot be an output header: the filter removes client copies of it"),
        ));
    }
    Ok(name)
}

/// Splits `http(s)://host[:port]/path` and derives Istio's cluster name
/// `outbound|PORT||HOST` unless one is given.
pub fn parse_jwks_uri(
    path: &str,
    uri: &str,
    cluster: Option<String>,
) -> Result<RemoteJwks, ConfigError> {
    let bad = || ConfigError::new(path, format!("expected an http(s) URL, got {uri:?}"));
    let (scheme, rest) = uri.split_once("://").ok_or_else(bad)?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return Err(bad()),
    };
    let (authority, url_path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    let (host, port) = match authority.rsplit_once(':') {
        // A colon inside an IPv6 literal (`[::1]`) is no port separator.
        Some((h, p)) if !p.contains(']') => match p.parse::<u16>() {
            Ok(port) => (h, port),
            Err(_) => return Err(bad()),
        },
        _ => (authority, default_port),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(RemoteJwks {
        uri: uri.to_string(),
        cluster: cluster.unwrap_or_else(|| format!("outbound|{port}||{host}")),
        authority: authority.to_string(),
        path: url_path.to_string(),
    })
}

impl RawRule {
    fn compile(self, path: &str, providers: &[Provider]) -> Result<Rule, ConfigError> {
        let matcher = self
            .matcher
            .compile(&join(path, "match"), kit::matcher::no_regex)?;
        let rpath = join(path, "requires");
        let requires = match &self.requires {
            serde_json::Value::String(s) if s == "none" => Requires::None,
            serde_json::Value::String(s) if s == "optional" => Requires::Optional,
            serde_json::Value::Array(names) if !names.is_empty() => {
                let mut indexes = Vec::new();
                for (i, n) in names.iter().enumerate() {
                    let name = n.as_str().ok_or_else(|| {
                        ConfigError::new(format!("{rpath}[{i}]"), "expected a provider name")
                    })?;
                    let index = providers
                        .iter()
                        .position(|p| p.name == name)
                        .ok_or_else(|| {
                            ConfigError::new(
                                format!("{rpath}[{i}]"),
                                format!("unknown provider {name:?}"),
                            )
                        })?;
                    indexes.push(index);
                }
                Requires::AnyOf(indexes)
            }
            other => {
                return Err(ConfigError::new(
                    rpath,
                    format!(
                        "expected \"none\", \"optional\" or a non-empty list of provider names, got {other}"
                    ),
                ));
            }
        };
        Ok(Rule { matcher, requires })
    }
}
