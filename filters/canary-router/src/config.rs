//! The `pluginConfig` as operators write it (camelCase, unknown fields
//! rejected), and its compilation into a [`Router`]. Every error names the
//! JSON path of the problem.

use crate::route::{PinCookie, Router, Rule, Service, StickyKey, Version};
use kit::ConfigError;
use kit::claims::ClaimSource;
use kit::config::{RESERVED_HEADERS, cookie_name, header_name, join};
use kit::matcher::RawMatch;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawConfig {
    /// The request header the filter owns and the routes match on.
    #[serde(default = "default_routing_header")]
    pub routing_header: String,
    pub services: Vec<RawService>,
}

pub fn default_routing_header() -> String {
    "x-route-version".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawService {
    pub host: String,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    pub split: Vec<RawSplit>,
    #[serde(default)]
    pub sticky_by: Option<RawSticky>,
    #[serde(default)]
    pub set_cookie: Option<RawSetCookie>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRule {
    /// The shared request match (`kit::matcher`); every condition given
    /// must hold, as in an Istio `HTTPMatchRequest`.
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    pub version: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawSplit {
    pub version: String,
    pub weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawSticky {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(default)]
    pub from_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawSetCookie {
    pub name: String,
    #[serde(default)]
    pub max_age: Option<kit::Duration>,
}

/// Parses and compiles a `pluginConfig`.
pub fn compile_json(bytes: Option<&[u8]>) -> Result<Router, ConfigError> {
    kit::config::parse_json::<RawConfig>(bytes)?.compile()
}

impl RawConfig {
    pub fn compile(self) -> Result<Router, ConfigError> {
        let routing_header = header_name("routingHeader", &self.routing_header)?;
        if RESERVED_HEADERS.contains(&routing_header.as_str()) {
            return Err(ConfigError::new(
                "routingHeader",
                format!(
                    "{routing_header:?} has a meaning of its own; choose a header the filter can own, like \"x-route-version\""
                ),
            ));
        }
        if self.services.is_empty() {
            return Err(ConfigError::new(
                "services",
                "expected at least one service",
            ));
        }
        let services = self
            .services
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.compile(&format!("services[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Router {
            routing_header,
            services,
        })
    }
}

impl RawService {
    fn compile(self, path: &str) -> Result<Service, ConfigError> {
        // Compiled under the service's own path, so errors name
        // `services[0].host` and `services[0].pathPrefix`.
        let selector = RawMatch {
            host: Some(self.host.clone()),
            path_prefix: self.path_prefix,
            ..RawMatch::default()
        }
        .compile(path, kit::matcher::full_match)?;
        let versions = compile_split(&join(path, "split"), &self.split)?;
        let rules = self
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.compile(&join(path, &format!("rules[{i}]")), &versions))
            .collect::<Result<_, _>>()?;
        let sticky = self
            .sticky_by
            .map(|s| s.compile(&join(path, "stickyBy")))
            .transpose()?;
        let pin = self
            .set_cookie
            .map(|c| -> Result<PinCookie, ConfigError> {
                let max_age_secs = c.max_age.map(|d| d.get().as_secs());
                // Max-Age=0 would delete the cookie at once.
                if max_age_secs == Some(0) {
                    return Err(ConfigError::new(
                        join(path, "setCookie.maxAge"),
                        "expected at least 1s (cookies count whole seconds)",
                    ));
                }
                Ok(PinCookie {
                    name: cookie_name(&join(path, "setCookie.name"), &c.name)?,
                    max_age_secs,
                })
            })
            .transpose()?;
        Ok(Service {
            salt: self.host.to_ascii_lowercase(),
            selector,
            rules,
            versions,
            sticky,
            pin,
        })
    }
}

fn compile_split(path: &str, split: &[RawSplit]) -> Result<Vec<Version>, ConfigError> {
    if split.is_empty() {
        return Err(ConfigError::new(path, "expected at least one version"));
    }
    let mut versions: Vec<Version> = Vec::with_capacity(split.len());
    let mut upper = 0u32;
    for (i, s) in split.iter().enumerate() {
        let vpath = format!("{path}[{i}].version");
        let valid = !s.version.is_empty()
            && s.version.len() <= 63
            && s.version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid {
            return Err(ConfigError::new(
                vpath,
                format!(
                    "expected a version name of letters, digits, '-', '_' or '.', got {:?}",
                    s.version
                ),
            ));
        }
        if versions.iter().any(|v| v.name == s.version) {
            return Err(ConfigError::new(
                vpath,
                format!("version {:?} appears twice", s.version),
            ));
        }
        upper = upper.saturating_add(s.weight);
        versions.push(Version {
            name: s.version.clone(),
            weight: s.weight,
            upper,
        });
    }
    if upper != 100 {
        return Err(ConfigError::new(
            path,
            format!("weights must total 100, got {upper}"),
        ));
    }
    Ok(versions)
}

impl RawRule {
    fn compile(self, path: &str, versions: &[Version]) -> Result<Rule, ConfigError> {
        let version = versions
            .iter()
            .position(|v| v.name == self.version)
            .ok_or_else(|| {
                let known: Vec<&str> = versions.iter().map(|v| v.name.as_str()).collect();
                ConfigError::new(
                    join(path, "version"),
                    format!(
                        "unknown version {:?}: every version a rule names must appear in split ({})",
                        self.version,
                        known.join(", ")
                    ),
                )
            })?;
        let mpath = join(path, "match");
        if self.matcher.is_empty() {
            return Err(ConfigError::new(
                mpath,
                "expected at least one condition (header, cookie, query, a path, methods or host)",
            ));
        }
        let matcher = self.matcher.compile(&mpath, kit::matcher::full_match)?;
        Ok(Rule { matcher, version })
    }
}

impl RawSticky {
    fn compile(self, path: &str) -> Result<StickyKey, ConfigError> {
        let one_of = "expected exactly one of header, cookie, claim";
        let claim = ClaimSource::compile(path, self.claim, self.from_header)?;
        match (self.header, self.cookie, claim) {
            (Some(h), None, None) => Ok(StickyKey::Header(header_name(&join(path, "header"), &h)?)),
            (None, Some(c), None) => Ok(StickyKey::Cookie(cookie_name(&join(path, "cookie"), &c)?)),
            (None, None, Some(claim)) => Ok(StickyKey::Claim(claim)),
            _ => Err(ConfigError::new(path, one_of)),
        }
    }
}
