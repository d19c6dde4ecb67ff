//! One JWKS fetch per Envoy process, not one per worker. Each worker VM runs
//! this on its tick:
//!
//! - it polls the provider's version in shared data and re-reads the keys
//!   when the version changes;
//! - when a refresh is due (at start, every `cacheDuration`, or on a token
//!   with an unknown `kid`, at most once per 30 s), the worker that wins a
//!   compare-and-swap lease fetches with `dispatch_http_call`, then writes the
//!   document and a new version.
//!
//! Shared data cannot be deleted, and a CAS `set` on an absent key ignores the
//! CAS, so the keys are created once at configure time and every later write
//! is a CAS. Nothing is fetched from configure, which also runs in a
//! throwaway VM.

use crate::config::{Provider, RemoteJwks};
use crate::jwks::KeySet;
use kit::{Host, HostError};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// The least time between two refetches for an unknown `kid`.
pub const REFETCH_COOLDOWN_MS: u64 = 30_000;
/// How soon a failed fetch is tried again.
pub const RETRY_MS: u64 = 1_000;

/// The lease record: who fetches, until when, and when the next refresh and
/// the last unknown-`kid` refetch are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lease {
    pub owner: u64,
    pub expires_ms: u64,
    pub next_refresh_ms: u64,
    pub last_refetch_ms: u64,
}

impl Lease {
    fn encode(&self) -> Vec<u8> {
        format!(
            "{}:{}:{}:{}",
            self.owner, self.expires_ms, self.next_refresh_ms, self.last_refetch_ms
        )
        .into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Lease> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut it = text.split(':').map(|p| p.parse::<u64>().ok());
        Some(Lease {
            owner: it.next()??,
            expires_ms: it.next()??,
            next_refresh_ms: it.next()??,
            last_refetch_ms: it.next()??,
        })
    }
}

/// What happened on a tick, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    Success,
    Failure,
}

/// One remote provider's keys on one worker.
pub struct RemoteKeys {
    pub remote: RemoteJwks,
    prefix: String,
    timeout_ms: u64,
    refresh_ms: u64,
    vm_id: u64,
    keys: RefCell<Rc<KeySet>>,
    version: Cell<u64>,
    refetch_wanted: Cell<bool>,
    in_flight: Cell<Option<u32>>,
}

fn read_u64(host: &dyn Host, key: &str) -> Option<(u64, u32)> {
    let v = host.shared_data(key).ok()??;
    let n = std::str::from_utf8(&v.value).ok()?.parse().ok()?;
    Some((n, v.cas))
}

impl RemoteKeys {
    /// `prefix` names this plugin and provider in shared data.
    pub fn new(provider: &Provider, remote: &RemoteJwks, prefix: String, vm_id: u64) -> RemoteKeys {
        RemoteKeys {
            remote: remote.clone(),
            prefix,
            timeout_ms: provider.timeout.as_millis() as u64,
            refresh_ms: provider.cache_duration.as_millis() as u64,
            vm_id,
            keys: RefCell::new(Rc::new(KeySet::default())),
            version: Cell::new(0),
            refetch_wanted: Cell::new(false),
            in_flight: Cell::new(None),
        }
    }

    fn key(&self, what: &str) -> String {
        format!("{}/{what}", self.prefix)
    }

    /// Creates the shared keys if absent, so later writes can all be CAS.
    pub fn init_shared(&self, host: &dyn Host) {
        for (what, initial) in [
            ("version", b"0".to_vec()),
            ("lease", Lease::default().encode()),
        ] {
            let key = self.key(what);
            if matches!(host.shared_data(&key), Ok(None)) {
                let _ = host.set_shared_data(&key, &initial, None);
            }
        }
    }

    /// The keys this worker has now (empty until the first fetch lands).
    pub fn keys(&self) -> Rc<KeySet> {
        self.keys.borrow().clone()
    }

    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Whether a refetch for an unknown `kid` may start now; if so, asks for
    /// one on the next tick. `false`: within the cooldown, reject at once.
    pub fn request_refetch(&self, host: &dyn Host, now_ms: u64) -> bool {
        let lease = self.lease(host).map(|(l, _)| l).unwrap_or_default();
        if lease.last_refetch_ms != 0
            && now_ms < lease.last_refetch_ms.saturating_add(REFETCH_COOLDOWN_MS)
        {
            return false;
        }
        self.refetch_wanted.set(true);
        true
    }

    fn lease(&self, host: &dyn Host) -> Option<(Lease, u32)> {
        let v = host.shared_data(&self.key("lease")).ok()??;
        Some((Lease::decode(&v.value)?, v.cas))
    }

    /// Re-reads the keys if another worker published a new version.
    pub fn poll(&self, host: &dyn Host) {
        let Some((version, _)) = read_u64(host, &self.key("version")) else {
            return;
        };
        if version == self.version.get() {
            return;
        }
        if let Ok(Some(doc)) = host.shared_data(&self.key("doc"))
            && let Ok(set) = KeySet::parse_remote(&doc.value)
            && !set.keys.is_empty()
        {
            *self.keys.borrow_mut() = Rc::new(set);
        }
        self.version.set(version);
    }

    /// The tick: poll, then start a fetch if one is due and the lease is won.
    pub fn tick(&self, host: &dyn Host, now_ms: u64) {
        self.poll(host);
        if self.in_flight.get().is_some() {
            return;
        }
        let Some((lease, cas)) = self.lease(host) else {
            self.init_shared(host);
            return;
        };
        let refetch = self.refetch_wanted.get()
            && (lease.last_refetch_ms == 0
                || now_ms >= lease.last_refetch_ms.saturating_add(REFETCH_COOLDOWN_MS));
        if !refetch && now_ms < lease.next_refresh_ms {
            self.refetch_wanted.set(false);
            return;
        }
        if lease.owner != 0 && now_ms < lease.expires_ms {
            return; // Another worker is fetching.
        }
        let won = Lease {
            owner: self.vm_id,
            expires_ms: now_ms + self.timeout_ms + 1_000,
            last_refetch_ms: if refetch {
                now_ms
            } else {
                lease.last_refetch_ms
            },
            ..lease
        };
        if host
            .set_shared_data(&self.key("lease"), &won.encode(), Some(cas))
            .is_err()
        {
            return; // Lost the race.
        }
        self.refetch_wanted.set(false);
        let headers: [(&str, &[u8]); 4] = [
            (":method", b"GET"),
            (":path", self.remote.path.as_bytes()),
            (":authority", self.remote.authority.as_bytes()),
            ("accept", b"application/json"),
        ];
        match host.http_call(
            &self.remote.cluster,
            &headers,
            &[],
            std::time::Duration::from_millis(self.timeout_ms),
        ) {
            Ok(token) => self.in_flight.set(Some(token)),
            Err(e) => {
                log::warn!(
                    "cannot fetch JWKS from {} (cluster {}): {e}",
                    self.remote.uri,
                    self.remote.cluster
                );
                self.release(host, now_ms, false);
            }
        }
    }

    /// Whether `token` is this provider's fetch.
    pub fn owns_call(&self, token: u32) -> bool {
        self.in_flight.get() == Some(token)
    }

    /// A fetch's answer: publish a usable JWKS, keep the last good keys
    /// otherwise.
    pub fn on_response(
        &self,
        host: &dyn Host,
        now_ms: u64,
        status: u16,
        body: &[u8],
    ) -> FetchOutcome {
        self.in_flight.set(None);
        let parsed = if status == 200 {
            KeySet::parse_remote(body)
        } else {
            Err(format!("HTTP status {status}"))
        };
        let ok = match parsed {
            Ok(set) if !set.keys.is_empty() => {
                if !set.skipped.is_empty() {
                    log::info!("JWKS {}: {}", self.remote.uri, set.skipped_summary());
                }
                self.publish(host, body, set)
            }
            Ok(set) => {
                log::warn!(
                    "JWKS {} has no usable signing key ({}); keeping the last keys",
                    self.remote.uri,
                    set.skipped_summary()
                );
                false
            }
            Err(e) => {
                log::warn!(
                    "JWKS fetch from {} failed: {e}; keeping the last keys",
                    self.remote.uri
                );
                false
            }
        };
        self.release(host, now_ms, ok);
        if ok {
            FetchOutcome::Success
        } else {
            FetchOutcome::Failure
        }
    }

    fn publish(&self, host: &dyn Host, doc: &[u8], set: KeySet) -> bool {
        if let Err(e) = host.set_shared_data(&self.key("doc"), doc, None) {
            log::warn!("cannot share the JWKS: {e}");
            return false;
        }
        // Bump the version with CAS; the lease makes this worker the only
        // writer, so a retry or two settles any clash.
        for _ in 0..3 {
            let (version, cas) = read_u64(host, &self.key("version")).unwrap_or((0, 0));
            let next = version + 1;
            match host.set_shared_data(&self.key("version"), next.to_string().as_bytes(), Some(cas))
            {
                Ok(()) => {
                    *self.keys.borrow_mut() = Rc::new(set);
                    self.version.set(next);
                    return true;
                }
                Err(HostError::CasMismatch) => continue,
                Err(e) => {
                    log::warn!("cannot share the JWKS version: {e}");
                    return false;
                }
            }
        }
        false
    }

    fn release(&self, host: &dyn Host, now_ms: u64, ok: bool) {
        let next = now_ms + if ok { self.refresh_ms } else { RETRY_MS };
        for _ in 0..3 {
            let Some((lease, cas)) = self.lease(host) else {
                return;
            };
            if lease.owner != self.vm_id {
                return;
            }
            let released = Lease {
                owner: 0,
                expires_ms: 0,
                next_refresh_ms: next,
                ..lease
            };
            if host
                .set_shared_data(&self.key("lease"), &released.encode(), Some(cas))
                .is_ok()
            {
                return;
            }
        }
    }

    /// A call that failed before any response (reset, timeout).
    pub fn on_call_failed(&self, host: &dyn Host, now_ms: u64) {
        self.in_flight.set(None);
        log::warn!("JWKS fetch from {} got no response", self.remote.uri);
        self.release(host, now_ms, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_round_trips() {
        let l = Lease {
            owner: 7,
            expires_ms: 8,
            next_refresh_ms: 9,
            last_refetch_ms: 10,
        };
        assert_eq!(Lease::decode(&l.encode()), Some(l));
        assert_eq!(Lease::decode(b"1:2:3"), None);
        assert_eq!(Lease::decode(&[0xff]), None);
    }
}
