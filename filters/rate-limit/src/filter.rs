//! The glue between Envoy and the rules: read the request once, let every
//! matching rule consume from its [`crate::gcra::Buckets`], answer a denial
//! with the configured response and `retry-after`, tell later filters the
//! decision (`rate_limit_decision`), and add the `RateLimit-Policy` and
//! `RateLimit` headers to the response (never in the request phase, where
//! Envoy refuses response headers).
//!
//! - An enforce-mode denial by any rule denies the request. A shadow-mode
//!   denial is counted, logged at debug and let through.
//! - `onMissingKey: "deny"` refuses a request missing a key part, with the
//!   configured response but no `retry-after` (retrying will not help).
//! - The headers report the most restrictive enforce-mode rule: the fewest
//!   remaining, then the longest reset. Shadow rules are not reported.
//! - Without host time, nothing is consumed and `failureMode` decides.

use crate::config::{Config, Mode, OnMissingKey, Rule};
use crate::gcra::{FailureMode, Outcome};
use crate::headers;
use governor::nanos::Nanos;
use kit::{Action, ConfigError, Filter, Host, HttpFilter, MapType, MetricType};
use std::rc::Rc;
use std::time::Duration;

/// The property later filters read.
pub const DECISION_PROPERTY: &str = kit::handoff::RATE_LIMIT_DECISION;

/// The counters of one rule, `rate_limit.<rule>.<counter>`.
pub const COUNTERS: [&str; 5] = [
    "allowed",
    "denied",
    "shadow_denied",
    "overflow",
    "contention",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    Allowed = 0,
    Denied = 1,
    ShadowDenied = 2,
    Overflow = 3,
    Contention = 4,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied,
    ShadowDenied,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::ShadowDenied => "shadow_denied",
        }
    }
}

pub struct RateLimit {
    pub config: Config,
    /// Per rule, the metric ids of [`COUNTERS`] (`None` if undefined).
    metrics: Vec<[Option<u32>; 5]>,
}

impl RateLimit {
    fn bump(&self, host: &dyn Host, rule: usize, counter: Counter) {
        if let Some(Some(id)) = self.metrics.get(rule).map(|m| m[counter as usize]) {
            let _ = host.increment_metric(id, 1);
        }
    }
}

impl Filter for RateLimit {
    const NAME: &'static str = "rate-limit";
    type Http = RateLimitHttp;

    fn configure(config: Option<&[u8]>, host: &dyn Host) -> Result<Self, ConfigError> {
        let plugin = host.plugin_name(Self::NAME);
        let config = crate::config::compile_json(config, &plugin)?;
        for (i, rule) in config.rules.iter().enumerate() {
            rule.buckets.create(host).map_err(|e| {
                ConfigError::new(
                    format!("rules[{i}]"),
                    format!("cannot create the rule's shared data: {e}"),
                )
            })?;
        }
        let metrics = config
            .rules
            .iter()
            .map(|r| {
                COUNTERS.map(|c| {
                    host.define_metric(MetricType::Counter, &format!("rate_limit.{}.{c}", r.name))
                        .ok()
                })
            })
            .collect();
        Ok(RateLimit { config, metrics })
    }

    fn new_http(self: &Rc<Self>) -> RateLimitHttp {
        RateLimitHttp {
            filter: Rc::clone(self),
            response_headers: None,
        }
    }
}

pub struct RateLimitHttp {
    filter: Rc<RateLimit>,
    /// `RateLimit-Policy` and `RateLimit`, added in the response phase.
    response_headers: Option<(String, String)>,
}

/// What the headers report for one rule: (remaining, reset secs, policy).
struct Report {
    remaining: u64,
    reset: u64,
    policy: String,
    ratelimit: String,
}

fn report(rule: &Rule, remaining: u32, reset: u64) -> Report {
    let limit = &rule.limit;
    Report {
        remaining: u64::from(remaining),
        reset,
        policy: headers::policy(
            &rule.name,
            u64::from(limit.burst),
            headers::window_secs(limit.burst, limit.interval()),
        ),
        ratelimit: headers::ratelimit(&rule.name, u64::from(remaining), reset),
    }
}

impl RateLimitHttp {
    fn set_decision(host: &dyn Host, decision: Decision) {
        if let Err(e) = host.set_property(&[DECISION_PROPERTY], decision.as_str().as_bytes()) {
            log::warn!("cannot set {DECISION_PROPERTY}: {e}");
        }
    }

    fn deny(&mut self, host: &dyn Host, retry_after: Option<Duration>) -> Action {
        let response = &self.filter.config.response;
        let retry = retry_after.map(|d| headers::ceil_secs(d).max(1).to_string());
        let mut out: Vec<(&str, &[u8])> = response
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        if let Some(r) = &retry {
            out.push(("retry-after", r.as_bytes()));
        }
        // A local reply may skip this filter's response phase: the headers
        // go with it, and are not added again.
        let extra = self.response_headers.take();
        if let Some((policy, ratelimit)) = &extra {
            out.push(("ratelimit-policy", policy.as_bytes()));
            out.push(("ratelimit", ratelimit.as_bytes()));
        }
        if let Err(e) =
            host.send_local_response(response.status, &out, &response.body, "rate_limited")
        {
            log::warn!("cannot send the rate-limit response: {e}");
        }
        Action::Pause
    }
}

fn now_nanos(host: &dyn Host) -> Option<Nanos> {
    kit::clock::unix_nanos(host).map(Nanos::from)
}

impl HttpFilter for RateLimitHttp {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        let f = Rc::clone(&self.filter);
        let config = &f.config;
        let fail = |this: &mut Self, what: &str| -> Action {
            log::warn!("rate limit not applied: {what}");
            match config.failure_mode {
                FailureMode::Allow => {
                    Self::set_decision(host, Decision::Allowed);
                    Action::Continue
                }
                FailureMode::Deny => {
                    Self::set_decision(host, Decision::Denied);
                    this.deny(host, None)
                }
            }
        };
        let request = match host.headers(MapType::RequestHeaders) {
            Ok(h) => h,
            Err(e) => return fail(self, &format!("cannot read request headers: {e}")),
        };
        let matching: Vec<usize> = config
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matcher.matches(&request))
            .map(|(i, _)| i)
            .collect();
        if matching.is_empty() {
            Self::set_decision(host, Decision::Allowed);
            return Action::Continue;
        }
        let Some(now) = now_nanos(host) else {
            return fail(self, "no host time");
        };
        // `source.address`, read at most once, and only if a rule needs it.
        let needs_address = matching.iter().any(|&i| {
            config.rules[i]
                .key
                .iter()
                .any(crate::key::KeySource::needs_source_address)
        });
        let source_address = if needs_address {
            host.property(&["source", "address"]).ok().flatten()
        } else {
            None
        };

        let mut denied = false;
        let mut shadow_denied = false;
        let mut retry_after: Option<Duration> = None;
        let mut reported: Option<Report> = None;
        for i in matching {
            let rule = &config.rules[i];
            let shadow = rule.mode == Mode::Shadow;
            let Some(key) = crate::key::key_hash(&rule.key, &request, source_address.as_deref())
            else {
                if rule.on_missing_key == OnMissingKey::Deny {
                    if shadow {
                        log::debug!("rule {}: would deny: a key part is missing", rule.name);
                        f.bump(host, i, Counter::ShadowDenied);
                        shadow_denied = true;
                    } else {
                        f.bump(host, i, Counter::Denied);
                        denied = true;
                    }
                }
                continue;
            };
            let (outcome, events) = rule.buckets.check(host, key, now);
            if events.overflow {
                f.bump(host, i, Counter::Overflow);
            }
            if events.contention {
                f.bump(host, i, Counter::Contention);
            }
            let this_report = match outcome {
                Outcome::Allowed { remaining } => {
                    f.bump(host, i, Counter::Allowed);
                    let reset = headers::reset_after_allowed(
                        rule.limit.burst,
                        remaining,
                        rule.limit.interval(),
                    );
                    report(rule, remaining, reset)
                }
                Outcome::Denied { retry_after: wait } => {
                    let wait = Duration::from_nanos(wait.as_u64());
                    if shadow {
                        log::debug!(
                            "rule {}: would deny (retry after {}s)",
                            rule.name,
                            headers::ceil_secs(wait)
                        );
                        f.bump(host, i, Counter::ShadowDenied);
                        shadow_denied = true;
                        continue;
                    }
                    f.bump(host, i, Counter::Denied);
                    denied = true;
                    retry_after = Some(retry_after.map_or(wait, |r| r.max(wait)));
                    let reset =
                        headers::reset_after_denied(rule.limit.burst, wait, rule.limit.interval());
                    report(rule, 0, reset)
                }
            };
            if shadow {
                continue;
            }
            let tighter = reported.as_ref().is_none_or(|r| {
                (this_report.remaining, std::cmp::Reverse(this_report.reset))
                    < (r.remaining, std::cmp::Reverse(r.reset))
            });
            if tighter {
                reported = Some(this_report);
            }
        }
        if config.rate_limit_headers {
            self.response_headers = reported.map(|r| (r.policy, r.ratelimit));
        }
        let decision = if denied {
            Decision::Denied
        } else if shadow_denied {
            Decision::ShadowDenied
        } else {
            Decision::Allowed
        };
        Self::set_decision(host, decision);
        if denied {
            // Denied only for a missing key part: nothing to wait for.
            return self.deny(host, retry_after);
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        if let Some((policy, ratelimit)) = self.response_headers.take() {
            let result = host
                .set_header(
                    MapType::ResponseHeaders,
                    "ratelimit-policy",
                    policy.as_bytes(),
                )
                .and_then(|()| {
                    host.set_header(MapType::ResponseHeaders, "ratelimit", ratelimit.as_bytes())
                });
            if let Err(e) = result {
                log::warn!("cannot add the RateLimit headers: {e}");
            }
        }
        Action::Continue
    }
}
