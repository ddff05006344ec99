//! The warm pool: idle isolates kept for reuse, per function version, in
//! least-recently-used order, bounded by count and by memory.
//!
//! The pool is generic over what it holds so that its policy is tested
//! without V8; each worker thread owns one pool of its own isolates.

use lru::LruCache;

/// What the pool needs to know about an idle instance.
pub trait Pooled {
    /// The function version it runs (the pool key).
    fn key(&self) -> &str;
    /// Memory it holds while idle, in bytes.
    fn memory(&self) -> usize;
}

/// Bounds of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Most idle instances kept.
    pub max_instances: usize,
    /// Most memory kept in idle instances, in bytes.
    pub max_memory: usize,
}

/// Idle instances by key, least recently used first out.
pub struct WarmPool<T: Pooled> {
    entries: LruCache<String, Vec<T>>,
    count: usize,
    memory: usize,
    limits: PoolLimits,
}

impl<T: Pooled> WarmPool<T> {
    /// An empty pool.
    pub fn new(limits: PoolLimits) -> Self {
        Self {
            entries: LruCache::unbounded(),
            count: 0,
            memory: 0,
            limits,
        }
    }

    /// Takes an idle instance for `key`, if one is warm.
    pub fn checkout(&mut self, key: &str) -> Option<T> {
        let list = self.entries.get_mut(key)?;
        let item = list.pop()?;
        if list.is_empty() {
            self.entries.pop(key);
        }
        self.count -= 1;
        self.memory -= item.memory();
        Some(item)
    }

    /// Returns an instance to the pool and evicts what no longer fits.
    /// Evicted instances are returned so the caller decides how to drop them.
    pub fn checkin(&mut self, item: T) -> Vec<T> {
        self.count += 1;
        self.memory += item.memory();
        let key = item.key().to_string();
        match self.entries.get_mut(&key) {
            Some(list) => list.push(item),
            None => {
                self.entries.put(key, vec![item]);
            }
        }
        self.shrink()
    }

    fn shrink(&mut self) -> Vec<T> {
        let mut evicted = Vec::new();
        while self.count > self.limits.max_instances || self.memory > self.limits.max_memory {
            let Some((key, mut list)) = self.entries.pop_lru() else {
                break;
            };
            // Oldest-returned first: the front of the list.
            let item = list.remove(0);
            self.count -= 1;
            self.memory -= item.memory();
            if !list.is_empty() {
                self.entries.put(key.clone(), list);
                self.entries.demote(&key);
            }
            evicted.push(item);
        }
        evicted
    }

    /// Removes every idle instance of `key`.
    pub fn evict(&mut self, key: &str) -> Vec<T> {
        let list = self.entries.pop(key).unwrap_or_default();
        for item in &list {
            self.count -= 1;
            self.memory -= item.memory();
        }
        list
    }

    /// Removes everything.
    pub fn clear(&mut self) -> Vec<T> {
        let mut all = Vec::new();
        while let Some((_, list)) = self.entries.pop_lru() {
            all.extend(list);
        }
        self.count = 0;
        self.memory = 0;
        all
    }

    /// Idle instances held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Memory held by idle instances, in bytes.
    pub fn memory(&self) -> usize {
        self.memory
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(&'static str, usize);

    impl Pooled for Item {
        fn key(&self) -> &str {
            self.0
        }
        fn memory(&self) -> usize {
            self.1
        }
    }

    fn pool(max_instances: usize, max_memory: usize) -> WarmPool<Item> {
        WarmPool::new(PoolLimits {
            max_instances,
            max_memory,
        })
    }

    #[test]
    fn checked_in_instances_come_back_by_key() {
        let mut pool = pool(10, 1000);
        assert!(pool.checkin(Item("a", 10)).is_empty());
        assert!(pool.checkout("b").is_none());
        assert_eq!(pool.checkout("a"), Some(Item("a", 10)));
        assert!(pool.checkout("a").is_none());
        assert!(pool.is_empty());
        assert_eq!(pool.memory(), 0);
    }

    #[test]
    fn the_least_recently_used_key_is_evicted_first() {
        let mut pool = pool(2, 1000);
        pool.checkin(Item("a", 1));
        pool.checkin(Item("b", 1));
        let _ = pool.checkout("a").map(|a| pool.checkin(a));
        let evicted = pool.checkin(Item("c", 1));
        assert_eq!(evicted, vec![Item("b", 1)]);
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn memory_bounds_the_pool_too() {
        let mut pool = pool(100, 50);
        pool.checkin(Item("a", 30));
        let evicted = pool.checkin(Item("b", 30));
        assert_eq!(evicted, vec![Item("a", 30)]);
        assert_eq!(pool.memory(), 30);
    }

    #[test]
    fn evicting_a_key_removes_all_its_instances() {
        let mut pool = pool(10, 1000);
        pool.checkin(Item("a", 1));
        pool.checkin(Item("a", 2));
        pool.checkin(Item("b", 4));
        assert_eq!(pool.evict("a").len(), 2);
        assert_eq!((pool.len(), pool.memory()), (1, 4));
        assert_eq!(pool.clear().len(), 1);
        assert!(pool.is_empty());
    }
}
