//! What of a block stays in memory for as long as the block is known: enough to find a trace by
//! id and to decide whether a search reads the block at all, in a few bytes per trace.
//!
//! The rows of a block's index (56 bytes per trace in memory) are loaded through a bounded
//! cache instead (`engine::index_cache`), so the store's memory no longer grows with the traces
//! it holds: a store of 100M traces held 11 GiB of rows in memory before (about 110 bytes each).
//!
//! Pages hold traces in trace id order, so the first id of each page finds the one page a trace
//! can be in; a Bloom filter of the block's trace ids (10 bits per trace, 1% false positives)
//! answers "not here" for the other blocks without a read.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use crate::attr_keys::KeySet;
use crate::block::BlockIndex;

/// Bits of the Bloom filter per trace: 1% false positives with [`HASHES`] hashes.
const BITS_PER_TRACE: usize = 10;
const HASHES: u64 = 7;

#[derive(Debug, Clone)]
pub struct BlockSummary {
    /// Per page: its first trace id and its (offset, length) in `data`.
    pages: Vec<PageRef>,
    /// Every attribute key of the block's spans (None: an index older than key sets).
    keys: Option<KeySet>,
    /// Every service name of the block's traces, sorted.
    services: Vec<String>,
    trace_ids: TraceIdFilter,
}

#[derive(Debug, Clone, Copy)]
struct PageRef {
    first_trace_id: [u8; 16],
    offset: u64,
    len: u32,
}

impl BlockSummary {
    pub fn of(index: &BlockIndex) -> BlockSummary {
        let mut pages: Vec<PageRef> = index
            .pages
            .iter()
            .map(|&(offset, len)| PageRef {
                first_trace_id: [0xff; 16],
                offset,
                len,
            })
            .collect();
        let mut trace_ids = TraceIdFilter::with_capacity(index.rows.len());
        let mut services = std::collections::BTreeSet::new();
        for row in &index.rows {
            trace_ids.insert(&row.trace_id);
            if let Some(page) = pages.get_mut(row.page as usize) {
                page.first_trace_id = page.first_trace_id.min(row.trace_id);
            }
            services.extend(index.services_of(row).iter().map(|s| index.string(*s)));
            services.insert(index.string(row.root_service));
        }
        BlockSummary {
            pages,
            keys: index.keys.clone(),
            services: services.into_iter().map(str::to_string).collect(),
            trace_ids,
        }
    }

    /// The page that holds `trace_id` if the block has it; None when the block certainly does
    /// not.
    pub fn page_of(&self, trace_id: &[u8; 16]) -> Option<u32> {
        if !self.trace_ids.may_contain(trace_id) {
            return None;
        }
        let after = self
            .pages
            .partition_point(|page| page.first_trace_id <= *trace_id);
        after.checked_sub(1).map(|page| page as u32)
    }

    /// Whether the block may hold spans of `trace_id` (false: it certainly does not).
    pub fn may_hold(&self, trace_id: &[u8; 16]) -> bool {
        self.page_of(trace_id).is_some()
    }

    /// (offset, length) of page `page` in `data`.
    pub fn page(&self, page: u32) -> Option<(u64, u32)> {
        self.pages
            .get(page as usize)
            .map(|page| (page.offset, page.len))
    }

    pub fn page_count(&self) -> u32 {
        self.pages.len() as u32
    }

    pub fn keys(&self) -> Option<&KeySet> {
        self.keys.as_ref()
    }

    /// Whether a trace of the block has a span of `service`.
    pub fn has_service(&self, service: &str) -> bool {
        self.services
            .binary_search_by(|s| s.as_str().cmp(service))
            .is_ok()
    }

    /// Bytes this summary holds in memory, roughly.
    pub fn memory_bytes(&self) -> usize {
        let services: usize = self.services.iter().map(|s| 24 + s.len()).sum();
        std::mem::size_of::<Self>()
            + self.pages.len() * std::mem::size_of::<PageRef>()
            + services
            + self.trace_ids.bits.len() * 8
    }
}

/// A Bloom filter of trace ids.
#[derive(Debug, Clone)]
struct TraceIdFilter {
    bits: Vec<u64>,
}

impl TraceIdFilter {
    fn with_capacity(traces: usize) -> TraceIdFilter {
        let words = (traces * BITS_PER_TRACE).div_ceil(64).max(1);
        TraceIdFilter {
            bits: vec![0; words],
        }
    }

    /// The bit positions of `trace_id`, by double hashing (Kirsch and Mitzenmacher). Trace ids
    /// are hashed rather than used as they are: tests and some SDKs make ids that are not
    /// random.
    fn positions(&self, trace_id: &[u8; 16]) -> impl Iterator<Item = usize> {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(trace_id);
        let (h1, h2) = (hash & 0xffff_ffff, (hash >> 32) | 1);
        let bits = self.bits.len() as u64 * 64;
        (0..HASHES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % bits) as usize)
    }

    fn insert(&mut self, trace_id: &[u8; 16]) {
        let positions: Vec<usize> = self.positions(trace_id).collect();
        for bit in positions {
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
    }

    fn may_contain(&self, trace_id: &[u8; 16]) -> bool {
        self.positions(trace_id)
            .all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::TraceRow;

    fn id(n: u64) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&n.to_be_bytes());
        id
    }

    /// An index of `traces` traces with ids 0, 2, 4, ... on pages of 100 traces each.
    fn index(traces: u64) -> BlockIndex {
        let pages = traces.div_ceil(100);
        BlockIndex {
            pages: (0..pages).map(|p| (p * 1000, 1000)).collect(),
            strings: vec!["frontend".into(), "GET /".into(), "cart".into()],
            rows: (0..traces)
                .map(|n| TraceRow {
                    trace_id: id(2 * n),
                    page: (n / 100) as u32,
                    start_unix_nano: 1,
                    end_unix_nano: 2,
                    root_service: 0,
                    root_name: 1,
                    has_error: false,
                    spans: 1,
                    services: 0,
                })
                .collect(),
            service_sets: vec![vec![0, 2]],
            keys: None,
        }
    }

    #[test]
    fn every_trace_of_the_block_is_found_on_its_page() {
        let index = index(10_000);
        let summary = BlockSummary::of(&index);
        for row in &index.rows {
            assert_eq!(summary.page_of(&row.trace_id), Some(row.page));
        }
        assert_eq!(summary.page(3), Some((3000, 1000)));
        assert_eq!(summary.page_count(), 100);
    }

    #[test]
    fn about_one_percent_of_absent_ids_pass_the_filter() {
        let summary = BlockSummary::of(&index(10_000));
        let false_positives = (0..10_000u64)
            .filter(|n| summary.may_hold(&id(2 * n + 1)))
            .count();
        // 1% expected; 2% leaves room for the hash's luck, and still fails a broken filter.
        assert!(false_positives < 200, "{false_positives} of 10,000");
        assert!(false_positives > 0, "a filter this small has some");
    }

    #[test]
    fn services_are_the_names_of_every_trace() {
        let summary = BlockSummary::of(&index(10));
        assert!(summary.has_service("frontend"));
        assert!(summary.has_service("cart"));
        assert!(!summary.has_service("GET /"));
        assert!(!summary.has_service("payments"));
    }

    #[test]
    fn it_is_a_small_fraction_of_the_rows_it_summarises() {
        let index = index(100_000);
        let summary = BlockSummary::of(&index);
        // 10 bits per trace plus 32 bytes per page of 100 traces: under 2 bytes per trace,
        // where the rows take 56.
        assert!(
            summary.memory_bytes() < 2 * 100_000,
            "{} bytes",
            summary.memory_bytes()
        );
        assert!(index.memory_bytes() > 50 * 100_000);
    }
}
