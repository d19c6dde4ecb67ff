//! The routing decision: plain Rust over a compiled [`Router`] and the
//! request headers, with no host in sight.

use kit::Headers;
use kit::claims::ClaimSource;
use kit::hash::{hash64, scale};
use kit::matcher::RequestMatch;

/// A compiled configuration.
#[derive(Debug)]
pub struct Router {
    /// Lowercase; the filter always sets or removes it.
    pub routing_header: String,
    pub services: Vec<Service>,
}

#[derive(Debug)]
pub struct Service {
    /// The service's `host` and `pathPrefix`, as one request match.
    pub selector: RequestMatch,
    pub rules: Vec<Rule>,
    /// The split, in config order.
    pub versions: Vec<Version>,
    pub sticky: Option<StickyKey>,
    pub pin: Option<PinCookie>,
    /// Mixed into the sticky hash, so one user's cohort differs per service.
    pub salt: String,
}

#[derive(Debug)]
pub struct Version {
    pub name: String,
    pub weight: u32,
    /// The running total of weights up to and including this version: the
    /// version owns hash buckets `upper - weight .. upper` of 100.
    pub upper: u32,
}

#[derive(Debug)]
pub struct Rule {
    /// The shared request match (`kit::matcher`).
    pub matcher: RequestMatch,
    /// Index into the service's versions.
    pub version: usize,
}

#[derive(Debug)]
pub enum StickyKey {
    Header(String),
    Cookie(String),
    Claim(ClaimSource),
}

#[derive(Debug)]
pub struct PinCookie {
    pub name: String,
    pub max_age_secs: Option<u64>,
}

/// Why a version was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The rule at this index matched.
    Rule(usize),
    /// A valid pin cookie.
    Pin,
    /// The hash of the sticky key.
    Sticky,
    /// A weighted random draw.
    Random,
}

/// What the filter does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'r> {
    /// The version to write to the routing header; `None` when no service
    /// matched, and the header must be removed.
    pub version: Option<&'r str>,
    pub reason: Option<Reason>,
    /// A `Set-Cookie` value to add to the response, pinning the client.
    pub set_cookie: Option<String>,
}

impl Router {
    /// Decides the version for a request. `random` is called only for a
    /// random draw.
    pub fn decide(&self, headers: &Headers, random: impl FnOnce() -> u64) -> Decision<'_> {
        let Some(service) = self.select(headers) else {
            return Decision {
                version: None,
                reason: None,
                set_cookie: None,
            };
        };
        let (index, reason) = service.choose(headers, random);
        let version = &service.versions[index];
        let set_cookie = match (&service.pin, reason) {
            (Some(pin), Reason::Random) => Some(pin.header_value(&version.name)),
            _ => None,
        };
        Decision {
            version: Some(&version.name),
            reason: Some(reason),
            set_cookie,
        }
    }

    /// The first service whose host and path prefix match.
    pub fn select(&self, headers: &Headers) -> Option<&Service> {
        self.services.iter().find(|s| s.selector.matches(headers))
    }
}

impl Service {
    /// Rule, then pin cookie, then sticky hash, then a random draw.
    fn choose(&self, headers: &Headers, random: impl FnOnce() -> u64) -> (usize, Reason) {
        if let Some((i, rule)) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matcher.matches(headers))
        {
            return (rule.version, Reason::Rule(i));
        }
        if let Some(pin) = &self.pin {
            // A pin reaches only a version in service: never an idle one.
            if let Some(i) = headers.cookie(&pin.name).and_then(|v| {
                self.versions
                    .iter()
                    .position(|ver| ver.weight > 0 && ver.name.as_bytes() == v)
            }) {
                return (i, Reason::Pin);
            }
        }
        if let Some(key) = self.sticky.as_ref().and_then(|s| s.key(headers)) {
            let mut salted = Vec::with_capacity(self.salt.len() + 1 + key.len());
            salted.extend_from_slice(self.salt.as_bytes());
            salted.push(0);
            salted.extend_from_slice(&key);
            return (
                self.bucket_owner(scale(hash64(&salted), 100)),
                Reason::Sticky,
            );
        }
        (self.bucket_owner(scale(random(), 100)), Reason::Random)
    }

    /// The version owning a bucket in `0..100`. Buckets are laid out by
    /// running weight total, so a weight change moves only the buckets
    /// between the old and new boundaries: with two versions, exactly the
    /// share that must move.
    fn bucket_owner(&self, bucket: u64) -> usize {
        self.versions
            .iter()
            .position(|v| bucket < u64::from(v.upper))
            .unwrap_or(self.versions.len() - 1)
    }
}

impl StickyKey {
    /// The key bytes; `None` when missing or empty.
    fn key(&self, headers: &Headers) -> Option<Vec<u8>> {
        let key = match self {
            StickyKey::Header(name) => headers.get(name).map(<[u8]>::to_vec),
            StickyKey::Cookie(name) => headers.cookie(name).map(<[u8]>::to_vec),
            StickyKey::Claim(source) => source.extract(headers).map(String::into_bytes),
        }?;
        (!key.is_empty()).then_some(key)
    }
}

impl PinCookie {
    fn header_value(&self, version: &str) -> String {
        match self.max_age_secs {
            Some(age) => format!(
                "{}={version}; Max-Age={age}; Path=/; HttpOnly; SameSite=Lax",
                self.name
            ),
            None => format!("{}={version}; Path=/; HttpOnly; SameSite=Lax", self.name),
        }
    }
}
