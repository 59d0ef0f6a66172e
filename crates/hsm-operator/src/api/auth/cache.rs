//! A small time-bounded, size-bounded cache for review answers, so that a burst of requests
//! with one token costs one TokenReview and one SubjectAccessReview per access, not two API
//! calls each.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Answers kept for `ttl`, at most `capacity` of them.
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// An empty cache. A zero `ttl` or `capacity` keeps nothing.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        TtlCache {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The answer for `key` if it is younger than the TTL.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.entries.lock();
        match entries.get(key) {
            Some((at, value)) if at.elapsed() < self.ttl => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` for `key`; when full, expired answers go first, then the oldest.
    pub fn insert(&self, key: K, value: V) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// How many answers are kept now.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_and_the_size_stays_bounded() {
        let cache = TtlCache::new(Duration::from_millis(50), 3);
        for i in 0..10 {
            cache.insert(i, i * 10);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&9), Some(90));
        assert_eq!(cache.get(&0), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&9), None);
        let off = TtlCache::new(Duration::ZERO, 3);
        off.insert(1, 1);
        assert!(off.is_empty());
    }
}
