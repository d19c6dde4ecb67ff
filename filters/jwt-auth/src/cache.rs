//! The verified-token cache: a bounded LRU per VM, keyed by a hash of the
//! token's last bytes, with the full token compared on a hit. An entry holds
//! until the token expires or the key that signed it leaves the JWKS.
//!
//! Only verified tokens are stored, and their last bytes are signature bytes
//! no client can choose without the signing key, so a short hash over them
//! spreads entries as well as a digest of the whole token, for a fraction of
//! the cost on every request (a SHA-256 of a 600-byte token costs more than
//! the rest of the cached path). A clash is only a miss: the full token is
//! compared. Entries are shared (`Rc`): a hit copies nothing.

use lru::LruCache;
use serde_json::{Map, Value};
use std::num::NonZeroUsize;
use std::rc::Rc;

/// How many of the token's last bytes the cache key covers.
const KEY_BYTES: usize = 32;

#[derive(Debug, Clone)]
pub struct Entry {
    pub token: String,
    pub provider: usize,
    pub exp: Option<u64>,
    pub key_fingerprint: u64,
    pub payload_b64: String,
    pub claims: Map<String, Value>,
}

pub struct TokenCache {
    lru: Option<LruCache<u64, Rc<Entry>>>,
}

impl TokenCache {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            lru: NonZeroUsize::new(capacity).map(LruCache::new),
        }
    }

    pub fn key(token: &str) -> u64 {
        let bytes = token.as_bytes();
        kit::hash::hash64(&bytes[bytes.len().saturating_sub(KEY_BYTES)..])
    }

    /// The entry for `token`, if the very same token is cached. The caller
    /// still checks expiry and the signing key.
    pub fn get(&mut self, token: &str) -> Option<Rc<Entry>> {
        let lru = self.lru.as_mut()?;
        lru.get(&Self::key(token))
            .filter(|e| e.token == token)
            .cloned()
    }

    pub fn remove(&mut self, token: &str) {
        let key = Self::key(token);
        if let Some(lru) = self.lru.as_mut()
            && lru.peek(&key).is_some_and(|e| e.token == token)
        {
            lru.pop(&key);
        }
    }

    pub fn insert(&mut self, entry: Rc<Entry>) {
        if let Some(lru) = self.lru.as_mut() {
            lru.put(Self::key(&entry.token), entry);
        }
    }

    pub fn len(&self) -> usize {
        self.lru.as_ref().map_or(0, LruCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
