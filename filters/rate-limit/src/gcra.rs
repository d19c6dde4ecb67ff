//! GCRA through `governor`, with its state in Envoy shared data so a limit
//! holds per Envoy process, however many worker VMs there are.
//!
//! - **Clock.** governor keeps each key's state relative to the instant its
//!   `RateLimiter` was built. Every VM must agree on that instant, so the
//!   limiter is built per check with a clock that reads 0 while it is built
//!   and host time (nanoseconds since the epoch) after.
//! - **Store.** Shared data cannot be deleted, and a CAS `set` on an absent
//!   key ignores the CAS, so each rule has `slots` keys created at start;
//!   every later write is a CAS. A key hashes to a slot that stores the key's
//!   hash with its theoretical arrival time (TAT). A slot whose bucket is
//!   full again (TAT in the past) is free to reuse. A clash with a live key
//!   goes to the overflow slot, which all such keys share, and is counted.
//! - **Contention.** Past `max_retries` CAS failures the decision follows
//!   the failure mode, and is counted.

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{NotUntil, Quota, RateLimiter};
use kit::{Host, HostError};
use std::cell::Cell;

/// What to do when shared data cannot be updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    Allow,
    Deny,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed, with this many requests left in the bucket.
    Allowed { remaining: u32 },
    /// Denied; retry after this many nanoseconds.
    Denied { retry_after: Nanos },
}

/// Counts of the unusual paths, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    pub overflow: bool,
    pub contention: bool,
}

/// One rule's buckets in shared data.
#[derive(Debug, Clone)]
pub struct Buckets {
    /// Shared-data key prefix, unique per plugin and rule.
    pub prefix: String,
    /// Slots for distinct keys (`maxKeys`); one more is the overflow slot.
    pub slots: u64,
    pub quota: Quota,
    pub max_retries: u32,
    pub failure_mode: FailureMode,
}

const SLOT_BYTES: usize = 16;

fn encode(owner: u64, tat: u64) -> [u8; SLOT_BYTES] {
    let mut out = [0u8; SLOT_BYTES];
    out[..8].copy_from_slice(&owner.to_le_bytes());
    out[8..].copy_from_slice(&tat.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<(u64, u64)> {
    let owner = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let tat = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((owner, tat))
}

impl Buckets {
    fn slot_key(&self, slot: u64) -> String {
        format!("{}/{slot}", self.prefix)
    }

    /// The overflow slot's index.
    fn overflow_slot(&self) -> u64 {
        self.slots
    }

    /// Creates every slot (and the overflow slot) if absent, so that every
    /// later write can be a CAS. Runs at configure time; idempotent.
    pub fn create(&self, host: &dyn Host) -> Result<(), HostError> {
        for slot in 0..=self.slots {
            let key = self.slot_key(slot);
            if host.shared_data(&key)?.is_none() {
                host.set_shared_data(&key, &encode(0, 0), None)?;
            }
        }
        Ok(())
    }

    /// Checks one request for `key_hash` (never 0, which marks a free slot)
    /// at `now` (host time).
    pub fn check(&self, host: &dyn Host, key_hash: u64, now: Nanos) -> (Outcome, Events) {
        let key = key_hash.max(1);
        let clock = HostClock {
            now: Cell::new(Nanos::from(0)),
        };
        let events = Cell::new(Events::default());
        let store = SharedStore {
            buckets: self,
            host,
            now,
            events: &events,
        };
        // Built while the clock reads 0: the limiter's start is the epoch on
        // every VM.
        let limiter: RateLimiter<u64, SharedStore<'_>, HostClock, StateInformationMiddleware> =
            RateLimiter::new(self.quota, store, clock);
        limiter.clock().now.set(now);
        let result = limiter.check_key(&key);
        let outcome = match result {
            Ok(snapshot) => Outcome::Allowed {
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => Outcome::Denied {
                retry_after: retry_after(&not_until, now),
            },
        };
        (outcome, events.get())
    }
}

fn retry_after(not_until: &NotUntil<Nanos>, now: Nanos) -> Nanos {
    let earliest: Nanos = not_until.earliest_possible();
    earliest.saturating_sub(now)
}

/// Host time, set before each check; 0 while the limiter is built.
pub struct HostClock {
    now: Cell<Nanos>,
}

impl Clock for HostClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        self.now.get()
    }
}

struct SharedStore<'a> {
    buckets: &'a Buckets,
    host: &'a dyn Host,
    now: Nanos,
    events: &'a Cell<Events>,
}

impl StateStore for SharedStore<'_> {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let b = self.buckets;
        let mut slot = key % b.slots.max(1);
        let mut owner = *key;
        for _ in 0..b.max_retries.max(1) {
            let skey = b.slot_key(slot);
            let Ok(Some(current)) = self.host.shared_data(&skey) else {
                break;
            };
            let Some((holder, tat)) = decode(&current.value) else {
                break;
            };
            let prior = if holder == owner {
                Some(Nanos::from(tat))
            } else if holder == 0 || tat <= self.now.as_u64() {
                // Free, or its bucket is full again: take it over.
                None
            } else if slot != b.overflow_slot() {
                // A live key holds it: share the overflow bucket.
                let mut e = self.events.get();
                e.overflow = true;
                self.events.set(e);
                slot = b.overflow_slot();
                owner = u64::MAX;
                continue;
            } else {
                Some(Nanos::from(tat))
            };
            let (value, new_tat) = f(prior)?;
            match self.host.set_shared_data(
                &skey,
                &encode(owner, new_tat.as_u64()),
                Some(current.cas),
            ) {
                Ok(()) => return Ok(value),
                Err(HostError::CasMismatch) => continue,
                Err(_) => break,
            }
        }
        // Contention (or a store failure): decide by the failure mode.
        let mut e = self.events.get();
        e.contention = true;
        self.events.set(e);
        match b.failure_mode {
            FailureMode::Allow => f(None).map(|(value, _)| value),
            // A TAT a full burst ahead makes GCRA refuse (its tolerance is
            // one interval less), with a retry-after of one interval.
            FailureMode::Deny => {
                let full = Nanos::from(b.quota.burst_size_replenished_in());
                f(Some(self.now + full)).map(|(value, _)| value)
            }
        }
    }
}
