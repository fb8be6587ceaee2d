//! Immutable blocks: the traces of one tenant over a time span, sorted by trace id.
//!
//! A block is five objects under `<tenant>/<block id>/`:
//! * `data`: pages of about 1 MiB of traces (`[trace id][len u32][encoded spans]`...), each
//!   compressed with zstd. Encoded OTLP compresses well (resources, scopes and names repeat), and
//!   keeping it as it arrived means a trace is returned field for field, with no rebuilding.
//! * `index`: per trace its id, page, time bounds, root service and name, error flag, span count
//!   and services (names in a string table), sorted by trace id; loaded in memory, so trace by id
//!   is a binary search and one page read, and most searches read no page at all.
//!   Since `TLIDX2` the index also lists every attribute key of the block's spans per scope
//!   (span, resource, event, link, instrumentation): a query on an attribute the block does not
//!   have skips the block, and tag listings over a whole block read no page.
//! * `columns`: the span fields span-local metrics queries read, in Parquet, one row group per
//!   page ([`crate::columns`]).
//! * `values`: per page, a Bloom filter of its attribute values ([`crate::page_values`]).
//! * `meta.json`: tenant, time range, counts, size, compaction level. Written last: a block
//!   without it is incomplete and ignored.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use threadline_otlp::{TraceData, TraceDataBuilder};

use crate::attr_keys::{self, KeyScope, KeySet};
use crate::columns::ColumnsBuilder;
use crate::model::TraceSummary;
use crate::page_values::PageValuesBuilder;

/// Indexes written since attribute keys were added; `TLIDX1` (no keys) is still read.
const INDEX_MAGIC: &[u8; 6] = b"TLIDX2";
const INDEX_MAGIC_V1: &[u8; 6] = b"TLIDX1";
/// Bytes of the smallest encoded row (no services).
const ROW_MIN_BYTES: usize = 16 + 4 + 8 + 8 + 4 + 4 + 1 + 4 + 4;
/// Uncompressed bytes per page.
const PAGE_BYTES: usize = 1 << 20;
const ZSTD_LEVEL: i32 = 6;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockMeta {
    pub block_id: String,
    pub tenant: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub traces: u64,
    pub spans: u64,
    /// Bytes of `data` + `index`.
    pub size_bytes: u64,
    pub compaction_level: u32,
    /// When the block was written (seconds since the epoch).
    pub created_unix_secs: u64,
    /// The blocks compaction merged into this one: a process polling the bucket forgets them
    /// once it has loaded this block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compacted_from: Vec<String>,
    /// Bytes of the `columns` object (span fields in Parquet, see [`crate::columns`]); 0 for a
    /// block written without one (before columns, or when writing them failed): its metrics
    /// queries read the pages.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub columns_bytes: u64,
    /// Bytes of the `values` object (a Bloom filter of attribute values per page, see
    /// [`crate::page_values`]); 0 for a block written before them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub values_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One trace's row in the index: 56 bytes, no allocation of its own (a block's rows are most of
/// the memory its index takes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceRow {
    pub trace_id: [u8; 16],
    pub page: u32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub root_service: u32,
    pub root_name: u32,
    pub has_error: bool,
    pub spans: u32,
    /// The trace's services: an entry of [`BlockIndex::service_sets`] (traces of a block share
    /// a few sets).
    pub services: u32,
}

#[derive(Debug, Clone, Default)]
pub struct BlockIndex {
    /// (offset, length) of each compressed page in `data`.
    pub pages: Vec<(u64, u32)>,
    pub strings: Vec<String>,
    /// Sorted by trace id.
    pub rows: Vec<TraceRow>,
    /// The distinct sets of services of the rows (ids of `strings`).
    pub service_sets: Vec<Vec<u32>>,
    /// Every attribute key of the block's spans, per scope; None for an index written before
    /// keys were kept (such a block is never skipped for a missing key).
    pub keys: Option<KeySet>,
}

impl BlockIndex {
    pub fn find(&self, trace_id: &[u8; 16]) -> Option<&TraceRow> {
        self.rows
            .binary_search_by(|row| row.trace_id.cmp(trace_id))
            .ok()
            .map(|i| &self.rows[i])
    }

    /// The services (ids of `strings`) of `row`.
    pub fn services_of(&self, row: &TraceRow) -> &[u32] {
        self.service_sets
            .get(row.services as usize)
            .map_or(&[], Vec::as_slice)
    }

    pub fn string(&self, index: u32) -> &str {
        self.strings.get(index as usize).map_or("", String::as_str)
    }

    /// The row's summary with its strings resolved.
    pub fn summary(&self, row: &TraceRow) -> TraceSummary {
        TraceSummary {
            start_unix_nano: row.start_unix_nano,
            end_unix_nano: row.end_unix_nano,
            root_service: self.string(row.root_service).to_string(),
            root_name: self.string(row.root_name).to_string(),
            has_error: row.has_error,
            spans: row.spans,
            services: self
                .services_of(row)
                .iter()
                .map(|s| self.string(*s).to_string())
                .collect(),
        }
    }

    /// Length of [`BlockIndex::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        let strings: usize = self.strings.iter().map(|s| 4 + s.len()).sum();
        let rows: usize = self
            .rows
            .iter()
            .map(|row| 16 + 4 + 8 + 8 + 4 + 4 + 1 + 4 + 4 + 4 * self.services_of(row).len())
            .sum();
        let keys: usize = self
            .keys
            .iter()
            .flat_map(KeySet::iter)
            .map(|(_, key)| 5 + key.len())
            .sum();
        INDEX_MAGIC.len() + 4 + 12 * self.pages.len() + 4 + strings + 4 + rows + 4 + keys
    }

    /// Bytes the index holds in memory, roughly (what the index cache counts).
    pub fn memory_bytes(&self) -> usize {
        // A heap allocation costs about 16 bytes besides its contents.
        let strings: usize = self.strings.iter().map(|s| 40 + s.len()).sum();
        let rows = self.rows.capacity() * std::mem::size_of::<TraceRow>();
        let service_sets: usize = self.service_sets.iter().map(|s| 40 + 4 * s.len()).sum();
        let keys: usize = self
            .keys
            .iter()
            .flat_map(KeySet::iter)
            .map(|(_, key)| 48 + key.len())
            .sum();
        std::mem::size_of::<Self>() + 12 * self.pages.len() + strings + rows + service_sets + keys
    }

    /// Whether the block's spans may have attribute `key` in `scope` (true when the index
    /// predates key sets).
    pub fn may_have_key(&self, scope: KeyScope, key: &str) -> bool {
        self.keys
            .as_ref()
            .is_none_or(|keys| keys.contains(scope, key))
    }

    /// The id of `text` in the string table, if the block has it.
    pub fn string_id(&self, text: &str) -> Option<u32> {
        self.strings
            .iter()
            .position(|s| s == text)
            .map(|i| i as u32)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(INDEX_MAGIC);
        put_u32(&mut out, self.pages.len() as u32);
        for (offset, len) in &self.pages {
            out.extend_from_slice(&offset.to_le_bytes());
            put_u32(&mut out, *len);
        }
        put_u32(&mut out, self.strings.len() as u32);
        for s in &self.strings {
            put_u32(&mut out, s.len() as u32);
            out.extend_from_slice(s.as_bytes());
        }
        put_u32(&mut out, self.rows.len() as u32);
        for row in &self.rows {
            out.extend_from_slice(&row.trace_id);
            put_u32(&mut out, row.page);
            out.extend_from_slice(&row.start_unix_nano.to_le_bytes());
            out.extend_from_slice(&row.end_unix_nano.to_le_bytes());
            put_u32(&mut out, row.root_service);
            put_u32(&mut out, row.root_name);
            out.push(u8::from(row.has_error));
            put_u32(&mut out, row.spans);
            let services = self.services_of(row);
            put_u32(&mut out, services.len() as u32);
            for s in services {
                put_u32(&mut out, *s);
            }
        }
        // Keys are written with their text (not string ids): the builder's string table is
        // final before keys are known to be complete, and key sets are small.
        let mut keys: Vec<(KeyScope, &str)> = self.keys.iter().flat_map(KeySet::iter).collect();
        keys.sort_unstable();
        put_u32(&mut out, keys.len() as u32);
        for (scope, key) in keys {
            out.push(scope as u8);
            put_u32(&mut out, key.len() as u32);
            out.extend_from_slice(key.as_bytes());
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<BlockIndex, BlockError> {
        let mut r = Reader { buf, at: 0 };
        let magic = r.take(INDEX_MAGIC.len())?;
        let has_keys = match magic {
            m if m == INDEX_MAGIC => true,
            m if m == INDEX_MAGIC_V1 => false,
            _ => return Err(BlockError::Corrupt("index: bad magic".into())),
        };
        let mut index = BlockIndex::default();
        let mut sets = ServiceSets::default();
        for _ in 0..r.u32()? {
            index.pages.push((r.u64()?, r.u32()?));
        }
        for _ in 0..r.u32()? {
            let len = r.u32()? as usize;
            let text = std::str::from_utf8(r.take(len)?)
                .map_err(|_| BlockError::Corrupt("index: string is not UTF-8".into()))?;
            index.strings.push(text.to_string());
        }
        let rows = r.u32()?;
        // Exactly: the rows are most of an index's memory, and pushing would leave up to half
        // of it unused. Capped, so a corrupt count cannot ask for more than the buffer holds.
        index
            .rows
            .reserve_exact((rows as usize).min(buf.len() / ROW_MIN_BYTES));
        for _ in 0..rows {
            let mut trace_id = [0u8; 16];
            trace_id.copy_from_slice(r.take(16)?);
            let page = r.u32()?;
            let start_unix_nano = r.u64()?;
            let end_unix_nano = r.u64()?;
            let root_service = r.u32()?;
            let root_name = r.u32()?;
            let has_error = r.take(1)?[0] != 0;
            let spans = r.u32()?;
            let services: Vec<u32> = (0..r.u32()?).map(|_| r.u32()).collect::<Result<_, _>>()?;
            let services = sets.intern(&mut index.service_sets, services);
            index.rows.push(TraceRow {
                trace_id,
                page,
                start_unix_nano,
                end_unix_nano,
                root_service,
                root_name,
                has_error,
                spans,
                services,
            });
        }
        if has_keys {
            let mut keys = KeySet::default();
            for _ in 0..r.u32()? {
                let scope = KeyScope::from_byte(r.take(1)?[0])
                    .ok_or_else(|| BlockError::Corrupt("index: unknown key scope".into()))?;
                let len = r.u32()? as usize;
                let key = std::str::from_utf8(r.take(len)?)
                    .map_err(|_| BlockError::Corrupt("index: key is not UTF-8".into()))?;
                keys.insert(scope, key);
            }
            index.keys = Some(keys);
        }
        Ok(index)
    }
}

/// Gives each distinct set of services one entry of `BlockIndex::service_sets`.
#[derive(Default)]
struct ServiceSets {
    ids: HashMap<Vec<u32>, u32>,
}

impl ServiceSets {
    fn intern(&mut self, sets: &mut Vec<Vec<u32>>, services: Vec<u32>) -> u32 {
        if let Some(id) = self.ids.get(&services) {
            return *id;
        }
        let id = sets.len() as u32;
        sets.push(services.clone());
        self.ids.insert(services, id);
        id
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block is damaged: {0}")]
    Corrupt(String),
    #[error("cannot decompress a page: {0}")]
    Decompress(#[from] std::io::Error),
    #[error("cannot compress a page: {0}")]
    Compress(std::io::Error),
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BlockError> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.buf.len());
        let end = end.ok_or_else(|| BlockError::Corrupt("truncated".into()))?;
        let slice = &self.buf[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, BlockError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, BlockError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// A block ready to upload.
pub struct BuiltBlock {
    pub meta: BlockMeta,
    pub index: BlockIndex,
    pub data: Vec<u8>,
    /// The `columns` object, when it could be written.
    pub columns: Option<Vec<u8>>,
    /// The `values` object.
    pub values: Vec<u8>,
}

/// What [`BlockBuilder::finish`] gives: the block's meta and its objects but `data`.
pub struct FinishedBlock {
    pub meta: BlockMeta,
    pub index: BlockIndex,
    pub columns: Option<Vec<u8>>,
    pub values: Vec<u8>,
}

/// Builds a block from whole traces (all parts of each trace given together). Pages are
/// compressed on every core, a few at a time.
pub fn build(
    block_id: String,
    tenant: &str,
    traces: BTreeMap<[u8; 16], TraceData>,
    compaction_level: u32,
) -> Result<BuiltBlock, BlockError> {
    let batch = 4 * compression_threads();
    let mut builder = BlockBuilder::new();
    let mut data = Vec::new();
    let mut pages = Vec::with_capacity(batch);
    let mut write = |builder: &mut BlockBuilder, pages: &mut Vec<Vec<u8>>| {
        for compressed in compress_pages(pages)? {
            builder.page_written(compressed.len());
            data.extend_from_slice(&compressed);
        }
        pages.clear();
        Ok::<(), BlockError>(())
    };
    for (trace_id, trace) in traces {
        if let Some(page) = builder.push(trace_id, &trace) {
            pages.push(page);
            if pages.len() >= batch {
                write(&mut builder, &mut pages)?;
            }
        }
    }
    pages.extend(builder.last_page());
    write(&mut builder, &mut pages)?;
    let finished = builder.finish(block_id, tenant, compaction_level);
    Ok(BuiltBlock {
        meta: finished.meta,
        index: finished.index,
        data,
        columns: finished.columns,
        values: finished.values,
    })
}

fn compression_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Compresses one page of `data`.
pub fn compress_page(page: &[u8]) -> Result<Vec<u8>, BlockError> {
    zstd::bulk::compress(page, ZSTD_LEVEL).map_err(BlockError::Compress)
}

/// Compresses `pages` in parallel (one thread per core), in order. Compression is most of the
/// cost of writing a block.
pub fn compress_pages(pages: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, BlockError> {
    let threads = compression_threads().min(pages.len());
    if threads <= 1 {
        return pages.iter().map(|page| compress_page(page)).collect();
    }
    let per_thread = pages.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = pages
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    let mut compressor =
                        zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(BlockError::Compress)?;
                    chunk
                        .iter()
                        .map(|page| compressor.compress(page).map_err(BlockError::Compress))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut compressed = Vec::with_capacity(pages.len());
        for worker in workers {
            let pages = worker.join().map_err(|_| {
                BlockError::Compress(std::io::Error::other("a compression thread panicked"))
            })??;
            compressed.extend(pages);
        }
        Ok(compressed)
    })
}

/// Builds a block one trace at a time, in ascending trace id order, so that a block of any size
/// (compaction output) needs one page in memory, not the whole block.
///
/// [`BlockBuilder::push`] hands back each full page (uncompressed); the caller compresses it
/// with [`compress_page`], appends it to `data` and reports its compressed length with
/// [`BlockBuilder::page_written`], in page order.
pub struct BlockBuilder {
    index: BlockIndex,
    interned: HashMap<String, u32>,
    service_sets: ServiceSets,
    page: Vec<u8>,
    /// Pages handed out so far: the page number of the next trace.
    pages_cut: u32,
    data_len: u64,
    start_unix_nano: u64,
    end_unix_nano: u64,
    spans: u64,
    /// None once writing columns failed: the block is whole without them (queries read pages).
    columns: Option<ColumnsBuilder>,
    values: PageValuesBuilder,
}

impl Default for BlockBuilder {
    fn default() -> Self {
        BlockBuilder::new()
    }
}

impl BlockBuilder {
    pub fn new() -> BlockBuilder {
        BlockBuilder {
            index: BlockIndex::default(),
            interned: HashMap::new(),
            service_sets: ServiceSets::default(),
            page: Vec::with_capacity(PAGE_BYTES + PAGE_BYTES / 4),
            pages_cut: 0,
            data_len: 0,
            start_unix_nano: u64::MAX,
            end_unix_nano: 0,
            spans: 0,
            columns: ColumnsBuilder::new()
                .inspect_err(
                    |err| tracing::warn!(error = %err, "a block is written without columns"),
                )
                .ok(),
            values: PageValuesBuilder::default(),
        }
    }

    fn intern(&mut self, text: &str) -> u32 {
        if let Some(i) = self.interned.get(text) {
            return *i;
        }
        let i = self.index.strings.len() as u32;
        self.index.strings.push(text.to_string());
        self.interned.insert(text.to_string(), i);
        i
    }

    /// Adds a whole trace; its id must be above every id pushed before. Returns the page it
    /// completed, if any.
    pub fn push(&mut self, trace_id: [u8; 16], trace: &TraceData) -> Option<Vec<u8>> {
        let summary = TraceSummary::of(trace);
        self.start_unix_nano = self.start_unix_nano.min(summary.start_unix_nano);
        self.end_unix_nano = self.end_unix_nano.max(summary.end_unix_nano);
        self.spans += u64::from(summary.spans);
        self.page.extend_from_slice(&trace_id);
        put_u32(&mut self.page, trace.encoded_len() as u32);
        self.page.extend_from_slice(trace.as_bytes());
        let services: Vec<u32> = summary.services.iter().map(|s| self.intern(s)).collect();
        let services = self
            .service_sets
            .intern(&mut self.index.service_sets, services);
        let row = TraceRow {
            trace_id,
            page: self.pages_cut,
            start_unix_nano: summary.start_unix_nano,
            end_unix_nano: summary.end_unix_nano,
            root_service: self.intern(&summary.root_service),
            root_name: self.intern(&summary.root_name),
            has_error: summary.has_error,
            spans: summary.spans,
            services,
        };
        if let Some(columns) = &mut self.columns {
            columns.push(self.index.rows.len() as u32, trace);
        }
        self.values.push(trace);
        self.index.rows.push(row);
        let keys = self.index.keys.get_or_insert_with(KeySet::default);
        attr_keys::for_each_key(trace, |scope, key| keys.insert(scope, key));
        if self.page.len() >= PAGE_BYTES {
            return self.last_page();
        }
        None
    }

    /// The page in progress, if it holds anything (call once all traces are pushed).
    pub fn last_page(&mut self) -> Option<Vec<u8>> {
        if self.page.is_empty() {
            return None;
        }
        self.pages_cut += 1;
        self.values.end_page();
        if let Some(columns) = &mut self.columns {
            if let Err(err) = columns.end_page() {
                tracing::warn!(error = %err, "a block is written without columns");
                self.columns = None;
            }
        }
        let capacity = self.page.capacity();
        Some(std::mem::replace(
            &mut self.page,
            Vec::with_capacity(capacity),
        ))
    }

    /// Records that the next page was appended to `data`, `compressed_len` bytes long.
    pub fn page_written(&mut self, compressed_len: usize) {
        self.index
            .pages
            .push((self.data_len, compressed_len as u32));
        self.data_len += compressed_len as u64;
    }

    pub fn is_empty(&self) -> bool {
        self.index.rows.is_empty()
    }

    /// The block's meta, index and columns object, once every page is written.
    pub fn finish(
        mut self,
        block_id: String,
        tenant: &str,
        compaction_level: u32,
    ) -> FinishedBlock {
        let columns = self.columns.take().and_then(|c| {
            c.finish()
                .inspect_err(
                    |err| tracing::warn!(error = %err, "a block is written without columns"),
                )
                .ok()
        });
        let columns_bytes = columns.as_ref().map_or(0, |c| c.len() as u64);
        let values = self.values.finish().encode();
        let values_bytes = values.len() as u64;
        // The index is kept (cached) after the block is written: no room left unused.
        self.index.rows.shrink_to_fit();
        self.index.service_sets.shrink_to_fit();
        let index_len = self.index.encoded_len() as u64;
        let meta = BlockMeta {
            block_id,
            tenant: tenant.to_string(),
            start_unix_nano: if self.start_unix_nano == u64::MAX {
                0
            } else {
                self.start_unix_nano
            },
            end_unix_nano: self.end_unix_nano,
            traces: self.index.rows.len() as u64,
            spans: self.spans,
            size_bytes: self.data_len + index_len + columns_bytes + values_bytes,
            compaction_level,
            created_unix_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            compacted_from: Vec::new(),
            columns_bytes,
            values_bytes,
        };
        FinishedBlock {
            meta,
            index: self.index,
            columns,
            values,
        }
    }
}

/// The traces of one decompressed page, in order.
pub fn page_traces(compressed: &[u8]) -> Result<Vec<([u8; 16], TraceData)>, BlockError> {
    let mut raw = Vec::with_capacity(PAGE_BYTES + PAGE_BYTES / 4);
    zstd::stream::read::Decoder::new(compressed)?.read_to_end(&mut raw)?;
    let raw = Bytes::from(raw);
    let mut r = Reader { buf: &raw, at: 0 };
    let mut traces = Vec::new();
    while r.at < raw.len() {
        let mut trace_id = [0u8; 16];
        trace_id.copy_from_slice(r.take(16)?);
        let len = r.u32()? as usize;
        let start = r.at;
        r.take(len)?;
        let (data, _) = TraceData::from_request_bytes(raw.slice(start..start + len))
            .map_err(|e| BlockError::Corrupt(format!("trace {}: {e}", hex::encode(trace_id))))?;
        traces.push((trace_id, data));
    }
    Ok(traces)
}

/// Merges parts of one trace, dropping spans that appear twice (a WAL replayed after its block
/// was written, or a client's retry).
pub fn merge_parts(parts: &[TraceData]) -> TraceData {
    if let [only] = parts {
        return only.clone();
    }
    let mut builder = TraceDataBuilder::new();
    let mut seen = std::collections::HashSet::new();
    for part in parts {
        let unique = part.retain_spans(|span| seen.insert(span.span_id()));
        builder.push(&unique);
    }
    builder.finish()
}
