//! The rows of block indexes, read from the bucket when a search needs them and kept in a cache
//! bounded in bytes (`storage::trace::index_cache_mib`), least recently used out first.
//!
//! Blocks keep only their [`BlockSummary`](crate::block_summary::BlockSummary) in memory for
//! good, so memory does not grow with the traces stored. A search over more blocks than fit
//! reads the indexes of the others again (a few milliseconds per 100k traces from local disk).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::block::BlockIndex;
use crate::page_values::PageValues;

// The same cache type holds blocks' page value filters ([`PageValues`]), in a store's second
// cache with a capacity of its own.

/// What the cache holds: it knows its size in memory.
pub(super) trait Sized64 {
    fn memory_bytes(&self) -> usize;
}

impl Sized64 for BlockIndex {
    fn memory_bytes(&self) -> usize {
        BlockIndex::memory_bytes(self)
    }
}

impl Sized64 for PageValues {
    fn memory_bytes(&self) -> usize {
        PageValues::memory_bytes(self)
    }
}

pub(super) struct IndexCache<T = BlockIndex> {
    capacity_bytes: usize,
    inner: Mutex<Entries<T>>,
}

struct Entries<T> {
    /// Block id → index, its size, and when it was last used.
    by_block: HashMap<String, Entry<T>>,
    bytes: usize,
    clock: u64,
}

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries {
            by_block: HashMap::new(),
            bytes: 0,
            clock: 0,
        }
    }
}

struct Entry<T> {
    index: Arc<T>,
    bytes: usize,
    last_used: u64,
}

impl<T: Sized64> IndexCache<T> {
    pub(super) fn new(capacity_bytes: usize) -> IndexCache<T> {
        IndexCache {
            capacity_bytes,
            inner: Mutex::new(Entries::default()),
        }
    }

    pub(super) fn get(&self, block_id: &str) -> Option<Arc<T>> {
        let mut entries = self.inner.lock();
        entries.clock += 1;
        let now = entries.clock;
        let entry = entries.by_block.get_mut(block_id)?;
        entry.last_used = now;
        Some(entry.index.clone())
    }

    /// Keeps `index`, evicting the least recently used indexes beyond the capacity. An index
    /// larger than the whole cache is not kept.
    pub(super) fn insert(&self, block_id: &str, index: Arc<T>) {
        let bytes = index.memory_bytes();
        if bytes > self.capacity_bytes {
            return;
        }
        let mut entries = self.inner.lock();
        entries.clock += 1;
        let last_used = entries.clock;
        if let Some(old) = entries.by_block.insert(
            block_id.to_string(),
            Entry {
                index,
                bytes,
                last_used,
            },
        ) {
            entries.bytes -= old.bytes;
        }
        entries.bytes += bytes;
        while entries.bytes > self.capacity_bytes {
            // Blocks number in the hundreds: a scan is cheaper than keeping an order.
            let Some(oldest) = entries
                .by_block
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            if let Some(gone) = entries.by_block.remove(&oldest) {
                entries.bytes -= gone.bytes;
            }
        }
    }

    /// Forgets the index of a block that is gone.
    pub(super) fn remove(&self, block_id: &str) {
        let mut entries = self.inner.lock();
        if let Some(gone) = entries.by_block.remove(block_id) {
            entries.bytes -= gone.bytes;
        }
    }

    /// Bytes held now.
    pub(super) fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::TraceRow;

    fn index(traces: usize) -> Arc<BlockIndex> {
        Arc::new(BlockIndex {
            rows: vec![
                TraceRow {
                    trace_id: [1; 16],
                    page: 0,
                    start_unix_nano: 0,
                    end_unix_nano: 0,
                    root_service: 0,
                    root_name: 0,
                    has_error: false,
                    spans: 1,
                    services: 0,
                };
                traces
            ],
            ..BlockIndex::default()
        })
    }

    #[test]
    fn holds_no_more_than_its_capacity_and_evicts_the_least_recently_used() {
        let one = index(1000).memory_bytes();
        let cache = IndexCache::new(3 * one);
        for block in ["a", "b", "c"] {
            cache.insert(block, index(1000));
        }
        assert!(cache.get("a").is_some()); // a is now more recent than b
        cache.insert("d", index(1000));
        assert!(cache.bytes() <= 3 * one);
        assert!(cache.get("b").is_none(), "b was the least recently used");
        for kept in ["a", "c", "d"] {
            assert!(cache.get(kept).is_some(), "{kept}");
        }
        cache.remove("a");
        assert!(cache.get("a").is_none());
        assert_eq!(cache.bytes(), 2 * one);
    }

    #[test]
    fn an_index_larger_than_the_cache_is_returned_but_not_kept() {
        let cache = IndexCache::new(100);
        cache.insert("big", index(1000));
        assert!(cache.get("big").is_none());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn inserting_a_block_again_does_not_count_it_twice() {
        let cache = IndexCache::new(usize::MAX);
        cache.insert("a", index(10));
        cache.insert("a", index(10));
        assert_eq!(cache.bytes(), index(10).memory_bytes());
    }
}
