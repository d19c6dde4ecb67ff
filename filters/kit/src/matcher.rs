//! One request matcher for every filter: the canary's rules, the rate
//! limiter's and the JWT filter's `match`, and telemetry's routes all take
//! this shape, so an operator learns it once and a fix lands everywhere.
//!
//! ```json
//! {"pathPrefix": "/api", "methods": ["GET"], "host": "*.example.com",
//!  "headers": [{"name": "x-user-group", "exact": "beta"}],
//!  "cookies": [{"name": "tier", "present": true}],
//!  "queryParams": [{"name": "debug", "regex": "1|true"}]}
//! ```
//!
//! Every field is optional and every condition given must hold; an empty
//! match matches every request. The path is compared without its query
//! string (a request without one counts as `/`). `header`, `cookie` and
//! `query` take a single test each: older configs wrote them that way, and
//! they keep working.
//!
//! Regular expressions (`pathRegex`, `regex`) are compiled by the function
//! the filter passes to [`RawMatch::compile`]: [`full_match`] (regex-lite)
//! or [`no_regex`]. A filter that never passes `full_match` carries no
//! regex engine in its module, which keeps the JWT and rate-limit modules
//! within their size budgets.

use crate::config::{
    ConfigError, cookie_name, full_match_regex, header_name, is_token, join, param_name,
};
use crate::headers::Headers;
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// A compiled regular expression that must match a whole value.
pub trait Pattern: fmt::Debug {
    fn is_match(&self, text: &str) -> bool;
}

impl Pattern for regex_lite::Regex {
    fn is_match(&self, text: &str) -> bool {
        regex_lite::Regex::is_match(self, text)
    }
}

/// Compiles the regular expression at JSON path `path`.
pub type RegexCompiler = fn(path: &str, pattern: &str) -> Result<Arc<dyn Pattern>, ConfigError>;

/// Regexes as Istio writes them (RE2 syntax), anchored at both ends, with
/// regex-lite.
pub fn full_match(path: &str, pattern: &str) -> Result<Arc<dyn Pattern>, ConfigError> {
    Ok(Arc::new(full_match_regex(path, pattern)?))
}

/// Refuses every regex: for a filter whose module leaves the regex engine
/// out to stay small.
pub fn no_regex(path: &str, _pattern: &str) -> Result<Arc<dyn Pattern>, ConfigError> {
    Err(ConfigError::new(
        path,
        "this filter is built without regular expressions, to keep its module small; \
         use exact, prefix, pathPrefix or path (the mesh-suite module's other stages have them)",
    ))
}

/// A match as operators write it (camelCase; unknown fields rejected).
#[derive(Debug, Default, Clone)]
pub struct RawMatch {
    pub path_prefix: Option<String>,
    pub path: Option<String>,
    pub path_regex: Option<String>,
    pub methods: Vec<String>,
    pub host: Option<String>,
    pub headers: Vec<RawValueMatch>,
    pub header: Option<RawValueMatch>,
    pub cookies: Vec<RawValueMatch>,
    pub cookie: Option<RawValueMatch>,
    pub query_params: Vec<RawValueMatch>,
    pub query: Option<RawValueMatch>,
}

/// A test on one header, cookie or query parameter: exactly one of its
/// tests must be given.
#[derive(Debug, Clone, Default)]
pub struct RawValueMatch {
    pub name: String,
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
    pub present: Option<bool>,
}

// Both are deserialized by hand rather than derived. Every filter links
// this code, and the derived version (a field-name deserializer, a second
// visitor for structs written as arrays, all of it instantiated once per
// config type that holds a match) cost every module 15-20 KiB, pushing
// telemetry and JWT past their size budgets. Errors still name the field:
// the values go through the same `next_value` that tracks JSON paths.

const MATCH_FIELDS: &[&str] = &[
    "pathPrefix",
    "path",
    "pathRegex",
    "methods",
    "host",
    "headers",
    "header",
    "cookies",
    "cookie",
    "queryParams",
    "query",
];

const VALUE_FIELDS: &[&str] = &["name", "exact", "prefix", "regex", "present"];

/// A field name, checked while it is read: an unknown one fails inside
/// the key, so the JSON path of the error ends with the unknown field, as
/// with derived structs.
struct Field(&'static [&'static str]);

/// Fails on a field given twice, as derived structs do.
fn once<E: serde::de::Error>(
    seen: &mut u16,
    fields: &[&'static str],
    key: &'static str,
) -> Result<(), E> {
    let bit = 1u16 << fields.iter().position(|f| *f == key).unwrap_or(15);
    if *seen & bit != 0 {
        return Err(E::duplicate_field(key));
    }
    *seen |= bit;
    Ok(())
}

impl<'de> serde::de::DeserializeSeed<'de> for Field {
    type Value = &'static str;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<&'static str, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Field {
    type Value = &'static str;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<&'static str, E> {
        self.0
            .iter()
            .find(|f| **f == v)
            .copied()
            .ok_or_else(|| E::unknown_field(v, self.0))
    }
}

impl<'de> Deserialize<'de> for RawMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawMatch;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a request match")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawMatch, A::Error> {
                let mut m = RawMatch::default();
                let mut seen = 0;
                while let Some(key) = map.next_key_seed(Field(MATCH_FIELDS))? {
                    once(&mut seen, MATCH_FIELDS, key)?;
                    match key {
                        "pathPrefix" => m.path_prefix = map.next_value()?,
                        "path" => m.path = map.next_value()?,
                        "pathRegex" => m.path_regex = map.next_value()?,
                        "methods" => m.methods = map.next_value()?,
                        "host" => m.host = map.next_value()?,
                        "headers" => m.headers = map.next_value()?,
                        "header" => m.header = map.next_value()?,
                        "cookies" => m.cookies = map.next_value()?,
                        "cookie" => m.cookie = map.next_value()?,
                        "queryParams" => m.query_params = map.next_value()?,
                        _ => m.query = map.next_value()?,
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_map(Visitor)
    }
}

impl<'de> Deserialize<'de> for RawValueMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawValueMatch;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value test")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawValueMatch, A::Error> {
                let mut v = RawValueMatch::default();
                let mut name = None;
                let mut seen = 0;
                while let Some(key) = map.next_key_seed(Field(VALUE_FIELDS))? {
                    once(&mut seen, VALUE_FIELDS, key)?;
                    match key {
                        "name" => name = Some(map.next_value()?),
                        "exact" => v.exact = map.next_value()?,
                        "prefix" => v.prefix = map.next_value()?,
                        "regex" => v.regex = map.next_value()?,
                        _ => v.present = map.next_value()?,
                    }
                }
                v.name = name.ok_or_else(|| serde::de::Error::missing_field("name"))?;
                Ok(v)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// A compiled match.
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    path: Option<PathTest>,
    /// Upper case; empty means any.
    methods: Vec<String>,
    host: Option<HostMatch>,
    values: Vec<ValueMatch>,
}

#[derive(Debug, Clone)]
enum PathTest {
    Prefix(Vec<u8>),
    Exact(Vec<u8>),
    /// Anchored at both ends.
    Regex(Arc<dyn Pattern>),
}

/// A host as config names it: `reviews`, `*.example.com` or `*`, matched
/// without regard to case against the request's host without its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone)]
struct ValueMatch {
    source: Source,
    test: ValueTest,
}

#[derive(Debug, Clone)]
enum Source {
    Header(String),
    Cookie(String),
    Query(String),
}

#[derive(Debug, Clone)]
enum ValueTest {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    /// Anchored at both ends.
    Regex(Arc<dyn Pattern>),
    /// `true`: the value is there; `false`: it is not.
    Present(bool),
}

impl RawMatch {
    /// A match on nothing but a path prefix.
    pub fn path_prefix(prefix: impl Into<String>) -> RawMatch {
        RawMatch {
            path_prefix: Some(prefix.into()),
            ..RawMatch::default()
        }
    }

    /// Whether no condition is given (the match matches every request).
    pub fn is_empty(&self) -> bool {
        self.path_prefix.is_none()
            && self.path.is_none()
            && self.path_regex.is_none()
            && self.methods.is_empty()
            && self.host.is_none()
            && self.headers.is_empty()
            && self.header.is_none()
            && self.cookies.is_empty()
            && self.cookie.is_none()
            && self.query_params.is_empty()
            && self.query.is_none()
    }

    /// Compiles the match; `path` is its JSON path, for errors, and
    /// `regex` compiles its regular expressions ([`full_match`] or
    /// [`no_regex`]).
    // Config-time code runs once per plugin start. It is split into small
    // functions that are never inlined, which keeps the kit's opt-level 3
    // from inlining them all into one large function (it saved about 1 KiB
    // of each module).
    #[cold]
    pub fn compile(self, path: &str, regex: RegexCompiler) -> Result<RequestMatch, ConfigError> {
        let path_test = compile_paths(path, self.path_prefix, self.path, self.path_regex, regex)?;
        let methods = compile_methods(path, &self.methods)?;
        let host = match self.host {
            Some(h) => Some(compile_host(&join(path, "host"), &h)?),
            None => None,
        };
        let mut values = Vec::new();
        let mut add = |kind, one_field, one, many_field, many| {
            compile_values(
                &mut values,
                path,
                kind,
                one_field,
                one,
                many_field,
                many,
                regex,
            )
        };
        add(Kind::Header, "header", self.header, "headers", self.headers)?;
        add(Kind::Cookie, "cookie", self.cookie, "cookies", self.cookies)?;
        add(
            Kind::Query,
            "query",
            self.query,
            "queryParams",
            self.query_params,
        )?;
        Ok(RequestMatch {
            path: path_test,
            methods,
            host,
            values,
        })
    }
}

/// At most one of the three path tests.
#[cold]
#[inline(never)]
fn compile_paths(
    path: &str,
    prefix: Option<String>,
    exact: Option<String>,
    regex_text: Option<String>,
    regex: RegexCompiler,
) -> Result<Option<PathTest>, ConfigError> {
    Ok(Some(match (prefix, exact, regex_text) {
        (None, None, None) => return Ok(None),
        (Some(p), None, None) => {
            absolute_path(&join(path, "pathPrefix"), &p)?;
            PathTest::Prefix(p.into_bytes())
        }
        (None, Some(p), None) => {
            absolute_path(&join(path, "path"), &p)?;
            PathTest::Exact(p.into_bytes())
        }
        (None, None, Some(p)) => PathTest::Regex(regex(&join(path, "pathRegex"), &p)?),
        _ => {
            return Err(ConfigError::new(
                path,
                "expected at most one of pathPrefix, path, pathRegex",
            ));
        }
    }))
}

/// Upper-case HTTP methods.
#[cold]
#[inline(never)]
fn compile_methods(path: &str, methods: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::with_capacity(methods.len());
    for (i, m) in methods.iter().enumerate() {
        if !is_token(m) {
            return Err(ConfigError::new(
                join(path, &format!("methods[{i}]")),
                format!("expected an HTTP method like \"GET\", got {m:?}"),
            ));
        }
        out.push(m.to_ascii_uppercase());
    }
    Ok(out)
}

/// The single-test field and the list field of one kind of value.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn compile_values(
    out: &mut Vec<ValueMatch>,
    path: &str,
    kind: Kind,
    one_field: &str,
    one: Option<RawValueMatch>,
    many_field: &str,
    many: Vec<RawValueMatch>,
    regex: RegexCompiler,
) -> Result<(), ConfigError> {
    if let Some(v) = one {
        out.push(v.compile(&join(path, one_field), kind, regex)?);
    }
    for (i, v) in many.into_iter().enumerate() {
        out.push(v.compile(&join(path, &format!("{many_field}[{i}]")), kind, regex)?);
    }
    Ok(())
}

/// Checks that a configured path (or prefix) starts with `/`, as every
/// `:path` Envoy passes on does: one without it would never match.
#[cold]
pub fn absolute_path(path: &str, value: &str) -> Result<(), ConfigError> {
    if value.starts_with('/') {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("expected a path starting with \"/\", got {value:?}"),
        ))
    }
}

/// Compiles a host as config names it: `reviews`, `*.example.com` or `*`,
/// without a port.
#[cold]
pub fn compile_host(path: &str, host: &str) -> Result<HostMatch, ConfigError> {
    let host = host.to_ascii_lowercase();
    if host == "*" {
        return Ok(HostMatch::Any);
    }
    let (suffix, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(ConfigError::new(
            path,
            format!(
                "expected a host name (\"reviews\"), a wildcard (\"*.example.com\") or \"*\"; no port, got {host:?}"
            ),
        ));
    }
    Ok(if suffix {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_string())
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Header,
    Cookie,
    Query,
}

impl RawValueMatch {
    fn compile(
        self,
        path: &str,
        kind: Kind,
        regex: RegexCompiler,
    ) -> Result<ValueMatch, ConfigError> {
        let name_path = join(path, "name");
        let source = match kind {
            Kind::Header => Source::Header(header_name(&name_path, &self.name)?),
            Kind::Cookie => Source::Cookie(cookie_name(&name_path, &self.name)?),
            Kind::Query => Source::Query(param_name(&name_path, &self.name)?),
        };
        let test = match (self.exact, self.prefix, self.regex, self.present) {
            (Some(v), None, None, None) => ValueTest::Exact(v.into_bytes()),
            (None, Some(v), None, None) => ValueTest::Prefix(v.into_bytes()),
            (None, None, Some(v), None) => ValueTest::Regex(regex(&join(path, "regex"), &v)?),
            (None, None, None, Some(p)) => ValueTest::Present(p),
            _ => {
                return Err(ConfigError::new(
                    path,
                    "expected exactly one of exact, prefix, regex, present",
                ));
            }
        };
        Ok(ValueMatch { source, test })
    }
}

impl RequestMatch {
    /// Whether the request matches every condition.
    pub fn matches(&self, headers: &Headers) -> bool {
        if let Some(test) = &self.path {
            let path = headers.path_without_query().unwrap_or(b"/");
            let ok = match test {
                PathTest::Prefix(p) => path.starts_with(p),
                PathTest::Exact(p) => path == p.as_slice(),
                // A non-UTF-8 path never matches a regex.
                PathTest::Regex(re) => std::str::from_utf8(path).is_ok_and(|s| re.is_match(s)),
            };
            if !ok {
                return false;
            }
        }
        if !self.methods.is_empty() {
            let method = headers.get(":method").unwrap_or_default();
            if !self.methods.iter().any(|m| m.as_bytes() == method) {
                return false;
            }
        }
        if let Some(host) = &self.host
            && !headers.host().is_some_and(|h| host.matches(h))
        {
            return false;
        }
        self.values.iter().all(|v| v.matches(headers))
    }

    /// Whether the match has no condition at all.
    pub fn is_any(&self) -> bool {
        self.path.is_none()
            && self.methods.is_empty()
            && self.host.is_none()
            && self.values.is_empty()
    }
}

impl HostMatch {
    /// Whether `host` (without its port) is this one.
    pub fn matches(&self, host: &[u8]) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(name) => host.eq_ignore_ascii_case(name.as_bytes()),
            HostMatch::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

impl ValueMatch {
    fn matches(&self, headers: &Headers) -> bool {
        let value: Option<Cow<'_, [u8]>> = match &self.source {
            Source::Header(name) => headers.get(name).map(Into::into),
            Source::Cookie(name) => headers.cookie(name).map(Into::into),
            Source::Query(name) => headers.query_param(name).map(Into::into),
        };
        match (&self.test, value) {
            (ValueTest::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (ValueTest::Exact(e), Some(v)) => *v == **e,
            (ValueTest::Prefix(p), Some(v)) => v.starts_with(p),
            // A non-UTF-8 value never matches a regex.
            (ValueTest::Regex(re), Some(v)) => {
                std::str::from_utf8(&v).is_ok_and(|s| re.is_match(s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(json: &str) -> Result<RequestMatch, ConfigError> {
        let raw: RawMatch = serde_json::from_str(json).unwrap();
        raw.compile("m", full_match)
    }

    fn req(pairs: &[(&str, &str)]) -> Headers {
        Headers::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_bytes().to_vec())))
    }

    #[test]
    fn an_empty_match_matches_everything() {
        let m = compile("{}").unwrap();
        assert!(m.is_any());
        assert!(m.matches(&req(&[])));
        assert!(RawMatch::default().is_empty());
    }

    #[test]
    fn paths_ignore_the_query() {
        let r = req(&[(":path", "/api/v1?x=/other")]);
        assert!(compile(r#"{"pathPrefix": "/api"}"#).unwrap().matches(&r));
        assert!(compile(r#"{"path": "/api/v1"}"#).unwrap().matches(&r));
        assert!(!compile(r#"{"path": "/api"}"#).unwrap().matches(&r));
        assert!(
            compile(r#"{"pathRegex": "/api/v[0-9]+"}"#)
                .unwrap()
                .matches(&r)
        );
        assert!(!compile(r#"{"pathRegex": "/api"}"#).unwrap().matches(&r));
        // No path at all counts as "/".
        assert!(compile(r#"{"path": "/"}"#).unwrap().matches(&req(&[])));
    }

    #[test]
    fn methods_host_and_values() {
        let m = compile(
            r#"{"methods": ["get", "POST"], "host": "*.example.com",
                "headers": [{"name": "X-Group", "exact": "beta"}],
                "cookie": {"name": "tier", "present": true},
                "queryParams": [{"name": "debug", "regex": "1|true"}]}"#,
        )
        .unwrap();
        let good = [
            (":method", "GET"),
            (":authority", "api.Example.com:8080"),
            (":path", "/x?debug=true"),
            ("x-group", "beta"),
            ("cookie", "a=1; tier=gold"),
        ];
        assert!(m.matches(&req(&good)));
        for (i, bad) in [
            (":method", "DELETE"),
            (":authority", "example.com"),
            (":path", "/x?debug=yes"),
            ("x-group", "beta2"),
            ("cookie", "a=1"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut pairs = good.to_vec();
            pairs[i] = bad;
            assert!(!m.matches(&req(&pairs)), "{bad:?}");
        }
    }

    #[test]
    fn absent_and_prefix_tests() {
        let m = compile(
            r#"{"header": {"name": "x-a", "present": false},
                "headers": [{"name": "x-b", "prefix": "ab"}]}"#,
        )
        .unwrap();
        assert!(m.matches(&req(&[("x-b", "abc")])));
        assert!(!m.matches(&req(&[("x-a", ""), ("x-b", "abc")])));
        assert!(!m.matches(&req(&[("x-b", "ba")])));
    }

    #[test]
    fn errors_name_their_path() {
        let cases = [
            (
                r#"{"pathPrefix": "api"}"#,
                "m.pathPrefix",
                "starting with \"/\"",
            ),
            (r#"{"path": "api"}"#, "m.path", "starting with \"/\""),
            (
                r#"{"pathPrefix": "/a", "path": "/a"}"#,
                "m",
                "at most one of",
            ),
            (r#"{"pathRegex": "("}"#, "m.pathRegex", "invalid regex"),
            (r#"{"methods": ["G T"]}"#, "m.methods[0]", "HTTP method"),
            (r#"{"host": "a:80"}"#, "m.host", "no port"),
            (
                r#"{"headers": [{"name": "x"}]}"#,
                "m.headers[0]",
                "exactly one of",
            ),
            (
                r#"{"header": {"name": "a b", "exact": ""}}"#,
                "m.header.name",
                "header name",
            ),
            (
                r#"{"cookies": [{"name": "a;", "present": true}]}"#,
                "m.cookies[0].name",
                "cookie name",
            ),
            (
                r#"{"query": {"name": "", "present": true}}"#,
                "m.query.name",
                "parameter name",
            ),
            (
                r#"{"queryParams": [{"name": "q", "regex": "["}]}"#,
                "m.queryParams[0].regex",
                "invalid regex",
            ),
        ];
        for (json, path, message) in cases {
            let e = compile(json).unwrap_err();
            assert_eq!(e.path, path, "{json}");
            assert!(e.message.contains(message), "{json}: {}", e.message);
        }
    }

    #[test]
    fn unknown_and_repeated_fields_are_refused() {
        let e = serde_json::from_str::<RawMatch>(r#"{"pathPrefix": "/a", "pathPrefix": "/b"}"#)
            .unwrap_err();
        assert!(
            e.to_string().contains("duplicate field `pathPrefix`"),
            "{e}"
        );
        let e = serde_json::from_str::<RawMatch>(r#"{"header": {"name": "a", "name": "b"}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("duplicate field `name`"), "{e}");
        let e = serde_json::from_str::<RawMatch>(r#"{"uri": "/"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `uri`"), "{e}");
        let e = serde_json::from_str::<RawMatch>(r#"{"header": {"exact": "x"}}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `name`"), "{e}");
    }

    #[test]
    fn a_filter_may_leave_regexes_out() {
        for json in [
            r#"{"pathRegex": "/a"}"#,
            r#"{"headers": [{"name": "x", "regex": "a"}]}"#,
        ] {
            let raw: RawMatch = serde_json::from_str(json).unwrap();
            let e = raw.compile("m", no_regex).unwrap_err();
            assert!(e.message.contains("without regular expressions"), "{e}");
        }
        let raw: RawMatch = serde_json::from_str(r#"{"pathPrefix": "/a"}"#).unwrap();
        assert!(raw.compile("m", no_regex).is_ok());
    }

    #[test]
    fn hosts() {
        let exact = compile_host("h", "Reviews").unwrap();
        assert!(exact.matches(b"reviews"));
        assert!(!exact.matches(b"reviews.x"));
        let suffix = compile_host("h", "*.example.com").unwrap();
        assert!(suffix.matches(b"a.EXAMPLE.com"));
        assert!(!suffix.matches(b"example.com"));
        assert!(!suffix.matches(b".example.com"));
        assert!(compile_host("h", "*").unwrap().matches(b"anything"));
    }
}
