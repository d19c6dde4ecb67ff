//! The JWT filter over [`kit::Host`]: pick the rule, find the token, verify
//! it (cache, keys shared across workers, a pause while keys are fetched),
//! then forward claims or answer 401/403.
//!
//! This is the glue between Envoy's callbacks and the rest of the crate: the
//! token is found by `extract`, signatures may be checked by the host through
//! `host_crypto`, and the headers of an allowed request are written by
//! `rewrite`.

use crate::cache::{Entry, TokenCache};
use crate::config::{self, Config, JwksSource, Location, Requires};
use crate::extract;
use crate::host_crypto::HostCrypto;
use crate::jwks::KeySet;
use crate::rewrite;
use crate::sync::{FetchOutcome, RemoteKeys};
use crate::token::{self, Reject};
use crate::verify;
use kit::clock::{unix_millis as now_ms, unix_secs as now_secs};
use kit::metrics::MetricIds;
use kit::{
    Action, ConfigError, Filter, Headers, Host, HttpCallResponse, HttpFilter, MapType, Wake,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

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

/// Counters, defined once per VM, by their name under `jwt_auth.`.
#[derive(Default)]
struct Metrics(MetricIds);

impl Metrics {
    fn bump(&self, host: &dyn Host, name: &str) {
        self.0.count(host, name, || format!("jwt_auth.{name}"), 1);
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

/// Why a request waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitFor {
    /// The provider's first JWKS.
    Keys,
    /// A refetch for an unknown `kid`; the version seen when it was asked.
    Refetch(u64),
}

/// The refusal for a wait that ends without its answer (the keys never came,
/// or the refetch did not publish the `kid`); one mapping for every place a
/// wait gives up.
impl From<WaitFor> for Reject {
    fn from(why: WaitFor) -> Reject {
        match why {
            WaitFor::Keys => Reject::NoKeys,
            WaitFor::Refetch(_) => Reject::UnknownKid,
        }
    }
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
        let crypto = HostCrypto::new(host, &f.host_crypto);
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
        rewrite::forward(host, &f.config.providers[entry.provider], entry, location);
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
        let headers = match host.headers(MapType::RequestHeaders) {
            Ok(h) => h,
            Err(e) => {
                log::warn!("cannot read request headers: {e}");
                self.deny(host, Reject::Malformed("unreadable request"));
                return Action::Pause;
            }
        };
        // Output headers are the filter's alone, whatever the rule.
        rewrite::strip_output_headers(host, &headers, &f.config.output_headers);
        let Some(rule) = f.config.rules.iter().find(|r| r.matcher.matches(&headers)) else {
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
        let Some((token, location)) = extract::find_token(&headers, &locations) else {
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
                self.deny(host, w.why.into());
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
                self.deny(host, why.into());
                Wake::Done
            }
        }
    }
}
