//! Active keys by hash, in memory, in front of sled.

use super::*;

/// Active keys by hash, in memory, so the hot path skips sled and JSON. Bounded, with two
/// generations for a cheap approximation of least-recently-used: fills go to `recent`; when it
/// holds half the capacity it becomes `older` (and the previous `older` is dropped). A hit in
/// `older` is moved back to `recent`, so keys in use survive every rotation and a hot set
/// larger than the cache costs misses in proportion, never a cliff where everything is evicted
/// at once.
///
/// Revocation must never be undone by a stale fill: a lookup reads the generation before it
/// reads sled and fills only if no invalidation happened since; every invalidation bumps the
/// generation and removes the entry under the write lock, after the revocation committed.
pub(crate) struct KeyCache {
    inner: std::sync::RwLock<KeyCacheInner>,
    capacity: usize,
}

#[derive(Default)]
struct KeyCacheInner {
    generation: u64,
    recent: HashMap<[u8; 32], Arc<KeyRecord>>,
    older: HashMap<[u8; 32], Arc<KeyRecord>>,
}

/// A cache answer: the record if cached, the generation seen, and whether the hit came from
/// the older half (and should be moved to the recent one).
pub(crate) struct Cached {
    /// The key, when it is cached.
    pub(crate) record: Option<Arc<KeyRecord>>,
    /// The cache's generation when it was read: a fill from a read older than an
    /// invalidation is refused.
    pub(crate) generation: u64,
    from_older: bool,
}

/// Most keys held in the lookup cache by default (about 400 bytes each: 20 MB).
pub const DEFAULT_KEY_CACHE_CAPACITY: usize = 50_000;

impl KeyCache {
    pub(crate) fn new(capacity: usize) -> KeyCache {
        KeyCache {
            inner: std::sync::RwLock::default(),
            capacity,
        }
    }

    pub(crate) fn get(&self, hash: &[u8; 32]) -> Cached {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let (record, from_older) = match inner.recent.get(hash) {
            Some(r) => (Some(Arc::clone(r)), false),
            None => (inner.older.get(hash).cloned(), true),
        };
        Cached {
            from_older: from_older && record.is_some(),
            record,
            generation: inner.generation,
        }
    }

    /// `get`, moving a hit in the older half back to the recent one.
    pub(crate) fn get_and_keep(&self, hash: &[u8; 32]) -> Cached {
        let cached = self.get(hash);
        if let (true, Some(record)) = (cached.from_older, &cached.record) {
            self.fill(*hash, record, cached.generation);
        }
        cached
    }

    pub(crate) fn fill(&self, hash: [u8; 32], record: &Arc<KeyRecord>, seen_generation: u64) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.generation != seen_generation || self.capacity == 0 {
            return;
        }
        inner.older.remove(&hash);
        if inner.recent.len() >= self.capacity.div_ceil(2) {
            inner.older = std::mem::take(&mut inner.recent);
        }
        inner.recent.insert(hash, Arc::clone(record));
    }

    pub(crate) fn invalidate(&self, hash: &[u8; 32]) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.generation += 1;
        inner.recent.remove(hash);
        inner.older.remove(hash);
    }

    /// Most keys held.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every key (when changes may have been missed and cannot be told apart).
    pub(crate) fn clear(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.generation += 1;
        inner.recent.clear();
        inner.older.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.recent.len() + inner.older.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> ([u8; 32], Arc<KeyRecord>) {
        let record = KeyRecord {
            id: format!("key_{n}"),
            team_id: "team_a".into(),
            project_id: None,
            name: format!("key {n}"),
            prefix: "bs_0000".into(),
            scopes: Vec::new(),
            expires_at: None,
            created_at: 0,
            revoked_at: None,
            last_used_at: None,
            hash: String::new(),
            rotated_to: None,
            rate_limit: None,
            disabled: false,
            created_by: None,
        };
        ([n; 32], Arc::new(record))
    }

    fn fill(cache: &KeyCache, n: u8) {
        let (hash, r) = record(n);
        let generation = cache.get(&hash).generation;
        cache.fill(hash, &r, generation);
    }

    fn cached(cache: &KeyCache, n: u8) -> bool {
        cache.get_and_keep(&[n; 32]).record.is_some()
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let cache = KeyCache::new(8);
        for n in 0..100 {
            fill(&cache, n);
            assert!(cache.len() <= 8, "{} entries after {n} fills", cache.len());
        }
        // Within the capacity, everything filled is still there.
        let cache = KeyCache::new(8);
        for n in 0..4 {
            fill(&cache, n);
        }
        assert!((0..4).all(|n| cached(&cache, n)));
    }

    #[test]
    fn a_key_in_use_survives_any_number_of_other_fills() {
        let cache = KeyCache::new(8);
        fill(&cache, 0);
        for n in 1..200 {
            fill(&cache, n);
            assert!(cached(&cache, 0), "the key in use was evicted at fill {n}");
        }
        // A key not used since is gone.
        assert!(!cached(&cache, 1));
    }

    #[test]
    fn invalidation_reaches_both_halves_and_blocks_stale_fills() {
        let cache = KeyCache::new(4);
        fill(&cache, 1);
        fill(&cache, 2);
        fill(&cache, 3); // rotates 1 and 2 into the older half
        cache.invalidate(&[1; 32]);
        assert!(!cached(&cache, 1), "removed from the older half");
        cache.invalidate(&[3; 32]);
        assert!(!cached(&cache, 3), "removed from the recent half");

        // A fill that read the generation before an invalidation is dropped.
        let (hash, r) = record(5);
        let seen = cache.get(&hash).generation;
        cache.invalidate(&hash);
        cache.fill(hash, &r, seen);
        assert!(!cached(&cache, 5));
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let cache = KeyCache::new(0);
        fill(&cache, 1);
        assert!(!cached(&cache, 1));
    }
}
