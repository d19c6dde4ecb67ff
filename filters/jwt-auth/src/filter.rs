//! The JWT filter over [`kit::Host`]: pick the rule, find the token, verify
//! it (cache, keys shared across workers, a pause while keys are fetched),
//! then forward claims or answer 401/403.

use crate::cache::{Entry, TokenCache};
use crate::config::{self, Config, JwksSource, Location, Requires};
use crate::jwks::KeySet;
use crate::sync::{FetchOutcome, RemoteKeys};
use crate::token::{self, Reject};
use crate::verify::{self, SignatureHost};
use kit::{
    Action, ConfigError, Filter, Headers, Host, HostError, HttpCallResponse, HttpFilter, MapType,
    MetricType, Wake,
};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

/// How often workers poll the shared JWKS and wake paused requests.
pub const TICK: Duration = Duration::from_millis(200);

/// Per-provider keys on this worker.
pub enum Keys {
    Inline(Rc<KeySet>),
    Remote(RemoteKeys),
}

impl Keys {
    fn current(&self) -> Rc<KeySet> {
        match self {
            Keys::Inline(k) => k.clone(),
            Keys::Remote(r) => r.keys(),
        }
    }
}

/// Counters, defined once per VM.
#[derive(Default)]
struct Metrics {
    ids: RefCell<Vec<(String, u32)>>,
}

impl Metrics {
    fn bump(&self, host: &dyn Host, name: &str) {
        let id = self
            .ids
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id);
        let id = match id {
            Some(id) => id,
            None => match host.define_metric(MetricType::Counter, &format!("jwt_auth.{name}")) {
                Ok(id) => {
                    self.ids.borrow_mut().push((name.to_string(), id));
                    id
                }
                Err(_) => return,
            },
        };
        let _ = host.increment_metric(id, 1);
    }
}

pub struct JwtAuth {
    pub config: Config,
    keys: Vec<Keys>,
    cache: RefCell<TokenCache>,
    /// Whether the host has `verify_signature`; learnt on first use.
    host_crypto: Cell<Option<bool>>,
    metrics: Metrics,
}

fn now_secs(host: &dyn Host) -> u64 {
    host.now()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn now_ms(host: &dyn Host) -> u64 {
    host.now()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

impl JwtAuth {
    pub fn new(config: Config, host: &dyn Host) -> JwtAuth {
        // Shared data is per process and Istio leaves vm_id empty: prefix
        // every key with this plugin's name (and the JWKS URI, so a new
        // config never reads an old provider's keys).
        let plugin = host.plugin_name("jwt-auth");
        let vm_id = host.random_u64() | 1;
        let keys = config
            .providers
            .iter()
            .map(|p| match &p.jwks {
                JwksSource::Inline(set) => Keys::Inline(Rc::new(set.clone())),
                JwksSource::Remote(remote) => {
                    let prefix = format!(
                        "mesh-filters/jwt-auth/{plugin}/{}/{:016x}",
                        p.name,
                        kit::hash::hash64(remote.uri.as_bytes())
                    );
                    let r = RemoteKeys::new(p, remote, prefix, vm_id);
                    r.init_shared(host);
                    Keys::Remote(r)
                }
            })
            .collect();
        JwtAuth {
            cache: RefCell::new(TokenCache::new(config.cache_entries)),
            config,
            keys,
            host_crypto: Cell::new(None),
            metrics: Metrics::default(),
        }
    }
}

impl Filter for JwtAuth {
    const NAME: &'static str = "jwt-auth";
    type Http = JwtHttp;

    fn configure(config: Option<&[u8]>, host: &dyn Host) -> Result<Self, ConfigError> {
        Ok(JwtAuth::new(config::compile_json(config)?, host))
    }

    fn new_http(self: &Rc<Self>) -> JwtHttp {
        JwtHttp {
            filter: Rc::clone(self),
            waiting: None,
        }
    }

    fn tick_period(&self) -> Option<Duration> {
        self.keys
            .iter()
            .any(|k| matches!(k, Keys::Remote(_)))
            .then_some(TICK)
    }

    fn on_tick(self: &Rc<Self>, host: &dyn Host) {
        let now = now_ms(host);
        for k in &self.keys {
            if let Keys::Remote(r) = k {
                r.tick(host, now);
            }
        }
    }

    fn on_http_call_response(
        self: &Rc<Self>,
        host: &dyn Host,
        token: u32,
        response: Option<HttpCallResponse>,
    ) {
        let now = now_ms(host);
        for k in &self.keys {
            if let Keys::Remote(r) = k
                && r.owns_call(token)
            {
                let outcome = match &response {
                    Some(resp) => r.on_response(host, now, resp.status, &resp.body),
                    None => {
                        r.on_call_failed(host, now);
                        FetchOutcome::Failure
                    }
                };
                self.metrics.bump(
                    host,
                    match outcome {
                        FetchOutcome::Success => "jwks_fetch.success",
                        FetchOutcome::Failure => "jwks_fetch.failure",
                    },
                );
            }
        }
    }
}

/// Envoy's `verify_signature` foreign function (BoringSSL), with its
/// protobuf arguments written by hand.
struct HostCrypto<'a> {
    host: &'a dyn Host,
    available: &'a Cell<Option<bool>>,
}

fn proto_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(field << 3 | 2);
    let mut len = bytes.len();
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
}

/// `VerifySignatureResult.result` (field 1, varint); other fields skipped.
fn proto_result(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        let tag = bytes[i];
        i += 1;
        let mut value: u64 = 0;
        let mut shift = 0;
        match tag & 7 {
            0 | 2 => {
                while i < bytes.len() {
                    let b = bytes[i];
                    i += 1;
                    value |= u64::from(b & 0x7f) << shift.min(63);
                    shift += 7;
                    if b & 0x80 == 0 {
                        break;
                    }
                }
                if tag == 0x08 {
                    return value == 1;
                }
                if tag & 7 == 2 {
                    i = i.saturating_add(value as usize);
                }
            }
            _ => return false,
        }
    }
    false
}

impl SignatureHost for HostCrypto<'_> {
    fn verify_signature(&self, hash: &str, spki: &[u8], sig: &[u8], text: &[u8]) -> Option<bool> {
        if self.available.get() == Some(false) {
            return None;
        }
        let mut args = Vec::with_capacity(spki.len() + sig.len() + text.len() + 32);
        proto_field(&mut args, 1, hash.as_bytes());
        proto_field(&mut args, 2, spki);
        proto_field(&mut args, 3, sig);
        proto_field(&mut args, 4, text);
        match self.host.call_foreign_function("verify_signature", &args) {
            Ok(result) => {
                self.available.set(Some(true));
                Some(result.is_some_and(|r| proto_result(&r)))
            }
            Err(HostError::NotFound) | Err(HostError::Unimplemented) => {
                log::info!("the host has no verify_signature; verifying with jwt-simple");
                self.available.set(Some(false));
                None
            }
            // A key BoringSSL will not import, or any other failure: invalid.
            Err(_) => Some(false),
        }
    }
}

/// Why a request waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitFor {
    /// The provider's first JWKS.
    Keys,
    /// A refetch for an unknown `kid`; the version seen when it was asked.
    Refetch(u64),
}

struct Waiting {
    since_ms: u64,
    token: String,
    location: Location,
    candidates: Vec<usize>,
    provider: usize,
    why: WaitFor,
}

enum Decision {
    Allow(Rc<Entry>),
    Deny(Reject),
    Wait { provider: usize, why: WaitFor },
}

pub struct JwtHttp {
    filter: Rc<JwtAuth>,
    waiting: Option<Waiting>,
}

fn is_cors_preflight(h: &Headers) -> bool {
    h.get(":method") == Some(b"OPTIONS")
        && h.contains("origin")
        && h.contains("access-control-request-method")
}

/// Finds the token in the first location that holds one. The prefix is
/// compared as bytes (slicing text there could split a character), and a
/// token that is not UTF-8 is still a token: it fails the parse and is
/// refused, rather than counting as missing (which would let an `optional`
/// rule pass it, or a later location decide while it reaches the upstream).
fn extract(h: &Headers, locations: &[&Location]) -> Option<(String, Location)> {
    for loc in locations {
        let found = match loc {
            Location::Header { name, prefix } => h.get(name).and_then(|v| {
                let prefix = prefix.as_bytes();
                let t = v
                    .get(..prefix.len())
                    .filter(|head| head.eq_ignore_ascii_case(prefix))
                    .map(|_| &v[prefix.len()..])?;
                Some(String::from_utf8_lossy(t).trim().to_string())
            }),
            Location::Param(name) => h
                .query_param(name)
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
            Location::Cookie(name) => h
                .cookie(name)
                .map(|v| String::from_utf8_lossy(v).into_owned()),
        };
        if let Some(t) = found.filter(|t| !t.is_empty()) {
            return Some((t, (*loc).clone()));
        }
    }
    None
}

/// A claim as a header value: strings, numbers and booleans as they are,
/// arrays joined with commas; anything with control characters is dropped.
fn claim_value(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?
            .join(","),
        _ => return None,
    };
    (!s.bytes().any(|b| b.is_ascii_control())).then_some(s)
}

/// A claim by name; a dotted name (`realm_access.roles`) reaches into
/// objects when no top-level claim has that name.
fn claim_at<'a>(claims: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| {
        let mut parts = name.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |v, part| v.get(part))
    })
}

/// The query string without parameter `name`.
fn path_without_param(path: &[u8], name: &str) -> Vec<u8> {
    let Some(q) = path.iter().position(|b| *b == b'?') else {
        return path.to_vec();
    };
    let kept: Vec<&[u8]> = path[q + 1..]
        .split(|b| *b == b'&')
        .filter(|pair| {
            let key = pair.split(|b| *b == b'=').next().unwrap_or_default();
            kit::headers::percent_decode(key) != name.as_bytes()
        })
        .collect();
    let mut out = path[..q].to_vec();
    if !kept.is_empty() {
        out.push(b'?');
        out.extend_from_slice(&kept.join(&b'&'));
    }
    out
}

fn cookie_without(header: &[u8], name: &str) -> Vec<u8> {
    header
        .split(|b| *b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|c| {
            let key = c.split(|b| *b == b'=').next().unwrap_or_default();
            key.trim_ascii() != name.as_bytes()
        })
        .collect::<Vec<_>>()
        .join(&b"; "[..])
}

impl JwtHttp {
    fn decide(&self, host: &dyn Host, token_str: &str, candidates: &[usize]) -> Decision {
        let f = &*self.filter;
        let now = now_secs(host);
        // The cache: the same token, still unexpired, its key still published.
        let cached = f.cache.borrow_mut().get(token_str);
        if let Some(e) = cached {
            let p = &f.config.providers[e.provider];
            let fresh = e
                .exp
                .is_none_or(|exp| now <= exp.saturating_add(p.clock_skew.as_secs()));
            let signed = f.keys[e.provider]
                .current()
                .contains_fingerprint(e.key_fingerprint);
            if !fresh || !signed {
                f.cache.borrow_mut().remove(token_str);
            } else if candidates.contains(&e.provider) {
                f.metrics.bump(host, "cache.hit");
                return Decision::Allow(e);
            }
            // Still valid, but for a provider this rule does not take: the
            // entry stays, and this request is decided anew.
        }
        f.metrics.bump(host, "cache.miss");
        let max = candidates
            .iter()
            .map(|&i| f.config.providers[i].max_token_bytes)
            .max()
            .unwrap_or(config::DEFAULT_MAX_TOKEN_BYTES);
        let parsed = match token::parse(token_str, max) {
            Ok(p) => p,
            Err(r) => return Decision::Deny(r),
        };
        let (index, provider) = match verify::provider_for(&parsed, &f.config.providers, candidates)
        {
            Ok(p) => p,
            Err(r) => return Decision::Deny(r),
        };
        if token_str.len() > provider.max_token_bytes {
            return Decision::Deny(Reject::Malformed("token too large"));
        }
        let keys = f.keys[index].current();
        if keys.keys.is_empty() {
            // Remote keys not fetched yet.
            if let Err(r) = verify::check_claims(&parsed, provider, now) {
                return Decision::Deny(r);
            }
            return Decision::Wait {
                provider: index,
                why: WaitFor::Keys,
            };
        }
        let crypto = HostCrypto {
            host,
            available: &f.host_crypto,
        };
        let mut result = verify::verify(&parsed, index, provider, &keys, now, &crypto);
        // Another worker may have published new keys since this one last
        // polled (every TICK): read them before refusing the kid or asking
        // for a refetch, or a rotated kid is refused here for up to a tick.
        if matches!(result, Err(Reject::UnknownKid))
            && let Keys::Remote(r) = &f.keys[index]
        {
            let seen = r.version();
            r.poll(host);
            if r.version() != seen {
                result = verify::verify(&parsed, index, provider, &r.keys(), now, &crypto);
            }
        }
        match result {
            Ok(v) => {
                let entry = Rc::new(Entry {
                    token: token_str.to_string(),
                    provider: v.provider,
                    exp: v.exp,
                    key_fingerprint: v.key_fingerprint,
                    payload_b64: parsed.payload_b64.to_string(),
                    claims: parsed.claims.clone(),
                });
                f.cache.borrow_mut().insert(Rc::clone(&entry));
                Decision::Allow(entry)
            }
            Err(Reject::UnknownKid) => match &f.keys[index] {
                Keys::Remote(r) if r.request_refetch(host, now_ms(host)) => Decision::Wait {
                    provider: index,
                    why: WaitFor::Refetch(r.version()),
                },
                _ => Decision::Deny(Reject::UnknownKid),
            },
            Err(r) => Decision::Deny(r),
        }
    }

    /// Forwards the payload and claims; strips the token unless told not to.
    fn allow(&self, host: &dyn Host, entry: &Entry, location: &Location) {
        let f = &*self.filter;
        let p = &f.config.providers[entry.provider];
        let req = MapType::RequestHeaders;
        if let Some(h) = &p.payload_header {
            let _ = host.set_header(req, h, entry.payload_b64.as_bytes());
        }
        for (header, claim) in &p.claim_headers {
            if let Some(v) = claim_at(&entry.claims, claim).and_then(claim_value) {
                let _ = host.set_header(req, header, v.as_bytes());
            }
        }
        if !p.forward_original_token {
            let result = match location {
                Location::Header { name, .. } => host.remove_header(req, name),
                Location::Param(name) => match host.header(req, ":path") {
                    Ok(Some(path)) => {
                        host.set_header(req, ":path", &path_without_param(&path, name))
                    }
                    other => other.map(|_| ()),
                },
                Location::Cookie(name) => match host.header(req, "cookie") {
                    Ok(Some(c)) => {
                        let rest = cookie_without(&c, name);
                        if rest.is_empty() {
                            host.remove_header(req, "cookie")
                        } else {
                            host.set_header(req, "cookie", &rest)
                        }
                    }
                    other => other.map(|_| ()),
                },
            };
            if let Err(e) = result {
                log::warn!("cannot remove the token from the request: {e}");
            }
        }
        f.metrics.bump(host, "allowed");
    }

    fn deny(&self, host: &dyn Host, reject: Reject) {
        self.filter
            .metrics
            .bump(host, &format!("denied.{}", reject.reason()));
        let message = reject.message();
        let realm = host
            .header(MapType::RequestHeaders, ":authority")
            .ok()
            .flatten()
            .map(|a| String::from_utf8_lossy(&a).replace(['"', '\\'], ""))
            .unwrap_or_default();
        let www = format!(
            "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{message}\""
        );
        let body = serde_json::json!({"error": "invalid_token", "message": message}).to_string();
        let headers: [(&str, &[u8]); 2] = [
            ("www-authenticate", www.as_bytes()),
            ("content-type", b"application/json"),
        ];
        if let Err(e) = host.send_local_response(401, &headers, body.as_bytes(), "jwt_auth_denied")
        {
            log::warn!("cannot send the 401: {e}");
        }
    }

    fn forbid(&self, host: &dyn Host) {
        self.filter.metrics.bump(host, "denied.no_rule");
        let body = r#"{"error":"forbidden","message":"no rule matches this path"}"#;
        let headers: [(&str, &[u8]); 1] = [("content-type", b"application/json")];
        if let Err(e) = host.send_local_response(403, &headers, body.as_bytes(), "jwt_auth_no_rule")
        {
            log::warn!("cannot send the 403: {e}");
        }
    }
}

impl HttpFilter for JwtHttp {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        let f = Rc::clone(&self.filter);
        let req = MapType::RequestHeaders;
        let headers = match host.headers(req) {
            Ok(h) => h,
            Err(e) => {
                log::warn!("cannot read request headers: {e}");
                self.deny(host, Reject::Malformed("unreadable request"));
                return Action::Pause;
            }
        };
        // Output headers are the filter's alone, whatever the rule.
        for h in &f.config.output_headers {
            if headers.contains(h) {
                let _ = host.remove_header(req, h);
            }
        }
        let path = headers.path_without_query().unwrap_or(b"/");
        let Some(rule) = f.config.rules.iter().find(|r| r.path.matches(path)) else {
            self.forbid(host);
            return Action::Pause;
        };
        if is_cors_preflight(&headers) {
            return Action::Continue;
        }
        let (candidates, optional): (Vec<usize>, bool) = match &rule.requires {
            Requires::None => return Action::Continue,
            Requires::Optional => ((0..f.config.providers.len()).collect(), true),
            Requires::AnyOf(list) => (list.clone(), false),
        };
        let locations: Vec<&Location> = candidates
            .iter()
            .flat_map(|&i| f.config.providers[i].locations.iter())
            .collect();
        let Some((token, location)) = extract(&headers, &locations) else {
            if optional {
                return Action::Continue;
            }
            self.deny(host, Reject::Missing);
            return Action::Pause;
        };
        match self.decide(host, &token, &candidates) {
            Decision::Allow(entry) => {
                self.allow(host, &entry, &location);
                Action::Continue
            }
            Decision::Deny(r) => {
                self.deny(host, r);
                Action::Pause
            }
            Decision::Wait { provider, why } => {
                self.waiting = Some(Waiting {
                    since_ms: now_ms(host),
                    token,
                    location,
                    candidates,
                    provider,
                    why,
                });
                Action::Pause
            }
        }
    }

    fn on_wake(&mut self, host: &dyn Host) -> Wake {
        let Some(w) = self.waiting.take() else {
            return Wake::Resume;
        };
        let f = Rc::clone(&self.filter);
        let timeout = f.config.providers[w.provider].timeout.as_millis() as u64;
        let timed_out = now_ms(host) >= w.since_ms.saturating_add(timeout);
        let ready = match (&f.keys[w.provider], w.why) {
            (Keys::Remote(r), WaitFor::Keys) => !r.keys().keys.is_empty(),
            (Keys::Remote(r), WaitFor::Refetch(seen)) => r.version() != seen,
            (Keys::Inline(_), _) => true,
        };
        if !ready {
            if timed_out {
                self.deny(
                    host,
                    match w.why {
                        WaitFor::Keys => Reject::NoKeys,
                        WaitFor::Refetch(_) => Reject::UnknownKid,
                    },
                );
                return Wake::Done;
            }
            self.waiting = Some(w);
            return Wake::Wait;
        }
        match self.decide(host, &w.token, &w.candidates) {
            Decision::Allow(entry) => {
                self.allow(host, &entry, &w.location);
                Wake::Resume
            }
            Decision::Deny(r) => {
                self.deny(host, r);
                Wake::Done
            }
            // Still unknown after the refetch, or a second wait: refuse.
            Decision::Wait { why, .. } => {
                self.deny(
                    host,
                    match why {
                        WaitFor::Keys => Reject::NoKeys,
                        WaitFor::Refetch(_) => Reject::UnknownKid,
                    },
                );
                Wake::Done
            }
        }
    }
}
