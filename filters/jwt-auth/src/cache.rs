//! The verified-token cache: a bounded LRU per VM, keyed by the SHA-256 of
//! the token, with the full token compared on a hit. An entry holds until the
//! token expires or the key that signed it leaves the JWKS.

use lru::LruCache;
use serde_json::{Map, Value};
use std::num::NonZeroUsize;

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
    lru: Option<LruCache<[u8; 32], Entry>>,
}

impl TokenCache {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            lru: NonZeroUsize::new(capacity).map(LruCache::new),
        }
    }

    pub fn key(token: &str) -> [u8; 32] {
        hmac_sha256::Hash::hash(token.as_bytes())
    }

    /// The entry for `token`, if the very same token is cached. The caller
    /// still checks expiry and the signing key.
    pub fn get(&mut self, token: &str) -> Option<&Entry> {
        let lru = self.lru.as_mut()?;
        lru.get(&Self::key(token)).filter(|e| e.token == token)
    }

    pub fn remove(&mut self, token: &str) {
        if let Some(lru) = self.lru.as_mut() {
            lru.pop(&Self::key(token));
        }
    }

    pub fn insert(&mut self, entry: Entry) {
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
