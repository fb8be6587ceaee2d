//! The store: appends go to the WAL and the head (in memory, queryable at once); the head is
//! cut into a block every `max_block_duration`, or by the append that finds it holding
//! `max_block_bytes` (so memory stays bounded when blocks are written slower than spans arrive);
//! blocks are merged by compaction (streaming, page by page) and deleted by retention. Queries
//! read the head, heads being written out, and blocks.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use threadline_otlp::TraceData;
use threadline_traceql::model::Trace;
use tokio_util::sync::CancellationToken;

use crate::block::{self, BlockBuilder, BlockIndex, BlockMeta};
use crate::block_summary::BlockSummary;
use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::model::{to_model, TraceSummary};
use crate::page_values::PageValues;
use crate::wal::Wal;

mod block_list;
mod columns_scan;
mod compactor;
mod index_cache;
mod query;

pub use columns_scan::{ColumnsScanStats, NewEvaluator};
pub use query::{SearchOptions, SkippedBlocks};

use compactor::run_compaction_loop;

/// Memory for page value filters: they take 1.7 bytes per span (17.2 MB for the load
/// generator's 10M spans), so 32 MiB keeps those of about 19M spans; a search over more reads
/// the others again (LRU: a scan over all of them then reads every one).
const VALUE_CACHE_BYTES: usize = 32 << 20;

/// The tenant of every trace when multitenancy is off, as Tempo's.
pub const SINGLE_TENANT: &str = "single-tenant";

#[derive(Default)]
struct HeadTrace {
    parts: Vec<TraceData>,
    summary: TraceSummary,
}

/// Traces received since the last cut, per tenant.
#[derive(Default)]
struct Head {
    tenants: HashMap<String, HashMap<[u8; 16], HeadTrace>>,
    bytes: u64,
}

/// A block in the store: its meta and summary (in memory); its index rows are read through
/// the index cache ([`Store::block_index`]).
pub struct Block {
    pub meta: BlockMeta,
    pub summary: BlockSummary,
}

pub struct Store {
    config: StoreConfig,
    /// `auth`: credentials mapped to tenants, checked by the API and the receivers.
    auth: Option<Arc<crate::auth::TenantAuth>>,
    objects: Arc<dyn ObjectStore>,
    wal: Wal,
    /// Appends hold it shared (WAL then head); a cut holds it alone (WAL rotation + head swap).
    cut_lock: tokio::sync::RwLock<()>,
    /// One cut at a time, held until its blocks are written: a shutdown waits for a cut in
    /// progress instead of exiting under it.
    cutting: tokio::sync::Mutex<()>,
    head: Mutex<Head>,
    head_started: Mutex<Instant>,
    /// Heads being written as blocks: still queryable.
    flushing: RwLock<Vec<Arc<Head>>>,
    blocks: RwLock<Vec<Arc<Block>>>,
    /// Known blocks that the last refresh of the block list did not find and kept
    /// ([`Store::refresh_blocks`]). Held for a whole refresh: refreshes run one at a time, so
    /// "the last one" is well defined.
    unlisted_last_refresh: tokio::sync::Mutex<std::collections::HashSet<String>>,
    /// Decompressed pages recently read: (block id, page) → traces.
    page_cache: Mutex<PageCache>,
    /// Block index rows recently used, bounded by `storage::trace::index_cache_mib`.
    index_cache: index_cache::IndexCache,
    /// Page value filters recently used ([`VALUE_CACHE_BYTES`]).
    value_cache: index_cache::IndexCache<PageValues>,
    /// Service-graph and span metrics from what this store ingests: started on first use.
    generator: std::sync::OnceLock<Arc<crate::generator::Generator>>,
    stop: CancellationToken,
    /// The store itself, for work that must finish even if the request that started it is
    /// dropped (a cut started by an append).
    myself: std::sync::Weak<Store>,
}

/// The traces of one page, in order.
type PageTraces = Arc<Vec<([u8; 16], TraceData)>>;

#[derive(Default)]
struct PageCache {
    pages: HashMap<(String, u32), PageTraces>,
    order: std::collections::VecDeque<(String, u32)>,
}

const PAGE_CACHE_PAGES: usize = 64;

/// A search as the API asks it.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub start_unix_nano: Option<u64>,
    pub end_unix_nano: Option<u64>,
    pub min_duration_nanos: Option<u64>,
    pub max_duration_nanos: Option<u64>,
    pub limit: usize,
    /// Only traces with a span from one of these services (a hint; the matcher decides).
    pub service_hint: Option<String>,
    /// Only traces with an error span (a hint; the matcher decides).
    pub error_hint: bool,
}

impl SearchRequest {
    /// Whether a trace spanning `start..end` may match the request's time range, duration
    /// bounds and error hint.
    fn admits(&self, start_unix_nano: u64, end_unix_nano: u64, has_error: bool) -> bool {
        let duration = end_unix_nano.saturating_sub(start_unix_nano);
        self.start_unix_nano.is_none_or(|s| end_unix_nano >= s)
            && self.end_unix_nano.is_none_or(|e| start_unix_nano <= e)
            && self.min_duration_nanos.is_none_or(|m| duration >= m)
            && self.max_duration_nanos.is_none_or(|m| duration <= m)
            && (!self.error_hint || has_error)
    }
}

/// A trace that matched.
pub struct Found {
    pub trace_id: [u8; 16],
    pub summary: TraceSummary,
    pub trace: Trace,
}

/// What a search has so far, told after the heads and after each block: the gRPC streaming
/// API sends partial results from it. A job is the heads or one block (Tempo's jobs are
/// shards of blocks).
pub struct Progress<'a> {
    /// Every trace found so far, in the order found: the list only grows.
    pub found: &'a [Found],
    pub stats: SearchStats,
    pub completed_jobs: u32,
    pub total_jobs: u32,
    pub total_blocks: u32,
    pub total_block_bytes: u64,
}

/// Figures of a search, as Tempo reports them, and which blocks were skipped and why.
#[derive(Debug, Default, Clone, Copy)]
pub struct SearchStats {
    pub inspected_traces: u64,
    pub inspected_bytes: u64,
    /// Blocks of the tenant when the search started.
    pub total_blocks: u64,
    /// Blocks with at least one page read.
    pub inspected_blocks: u64,
    pub skipped: query::SkippedBlocks,
    /// Pages not read: their value filters lack a value every match has.
    pub pages_without_value: u64,
    /// Candidate traces not decoded: their bytes lack a required key or string value.
    pub traces_without_needle: u64,
}

#[cfg(feature = "cloud-storage")]
fn with_prefix<S: ObjectStore>(store: S, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
    }
}

fn object_store(config: &StoreConfig) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let trace = &config.storage.trace;
    match trace.backend.as_str() {
        #[cfg(feature = "cloud-storage")]
        "gcs" => {
            let gcs = trace
                .gcs
                .as_ref()
                .context("storage::trace::gcs is missing")?;
            let mut builder = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&gcs.bucket_name);
            if !gcs.service_account_path.is_empty() {
                builder = builder.with_service_account_path(&gcs.service_account_path);
            }
            Ok(with_prefix(
                builder.build().context("storage::trace::gcs")?,
                &gcs.prefix,
            ))
        }
        #[cfg(feature = "cloud-storage")]
        "azure" => {
            let azure = trace
                .azure
                .as_ref()
                .context("storage::trace::azure is missing")?;
            let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(&azure.container_name)
                .with_account(&azure.storage_account_name);
            if !azure.storage_account_key.is_empty() {
                builder = builder.with_access_key(&azure.storage_account_key);
            }
            if !azure.endpoint.is_empty() {
                builder = builder
                    .with_endpoint(azure.endpoint.clone())
                    .with_allow_http(azure.endpoint.starts_with("http://"));
            }
            Ok(with_prefix(
                builder.build().context("storage::trace::azure")?,
                &azure.prefix,
            ))
        }
        #[cfg(feature = "cloud-storage")]
        "s3" => {
            let s3 = trace.s3.as_ref().context("storage::trace::s3 is missing")?;
            let scheme = if s3.insecure { "http" } else { "https" };
            let store = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(&s3.bucket)
                .with_endpoint(format!("{scheme}://{}", s3.endpoint))
                .with_region(&s3.region)
                .with_access_key_id(&s3.access_key)
                .with_secret_access_key(&s3.secret_key)
                .with_allow_http(s3.insecure)
                .with_virtual_hosted_style_request(!s3.forcepathstyle)
                .build()
                .context("storage::trace::s3")?;
            Ok(with_prefix(store, &s3.prefix))
        }
        #[cfg(not(feature = "cloud-storage"))]
        backend @ ("gcs" | "azure" | "s3") => anyhow::bail!(
            "storage::trace::backend: {backend}: {}",
            threadline_config::built_without("cloud-storage")
        ),
        _ => {
            let local = trace
                .local
                .as_ref()
                .context("storage::trace::local::path is missing")?;
            std::fs::create_dir_all(&local.path)
                .with_context(|| format!("creating {}", local.path.display()))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&local.path)
                .with_context(|| format!("storage::trace::local::path {}", local.path.display()))?
                // A deleted block leaves no empty directory behind.
                .with_automatic_cleanup(true);
            Ok(Arc::new(store))
        }
    }
}

fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn block_path(tenant: &str, block_id: &str, file: &str) -> ObjectPath {
    ObjectPath::from(format!("{tenant}/{block_id}/{file}"))
}

fn new_block_id() -> String {
    // Time-ordered, then random: ids sort by creation and never collide between processes.
    format!("{:016x}-{:08x}", now_unix_nanos(), rand::random::<u32>())
}

impl Store {
    /// Opens the store: replays the WAL into the head, loads the blocks' indexes, and starts the
    /// cut, compaction and retention loops.
    pub async fn open(config: StoreConfig) -> anyhow::Result<Arc<Store>> {
        let objects = object_store(&config)?;
        Store::open_with_object_store(config, objects).await
    }

    /// [`Store::open`] with blocks in `objects` instead of the configured backend (an
    /// `object_store::memory::InMemory` in tests, or a store built by the caller).
    pub async fn open_with_object_store(
        config: StoreConfig,
        objects: Arc<dyn ObjectStore>,
    ) -> anyhow::Result<Arc<Store>> {
        let fsync = config.storage.trace.wal.fsync_policy();
        let (wal, records) =
            Wal::open(&config.storage.trace.wal.path, fsync).with_context(|| {
                format!(
                    "storage::trace::wal::path {}",
                    config.storage.trace.wal.path.display()
                )
            })?;
        let auth = match &config.auth {
            Some(auth) => Some(Arc::new(crate::auth::TenantAuth::new(auth)?)),
            None => None,
        };
        let index_cache_bytes = (config.storage.trace.index_cache_mib as usize) << 20;
        let store = Arc::new_cyclic(|myself| Store {
            myself: myself.clone(),
            auth,
            config,
            objects,
            wal,
            cut_lock: tokio::sync::RwLock::new(()),
            cutting: tokio::sync::Mutex::new(()),
            head: Mutex::new(Head::default()),
            head_started: Mutex::new(Instant::now()),
            flushing: RwLock::new(Vec::new()),
            blocks: RwLock::new(Vec::new()),
            unlisted_last_refresh: tokio::sync::Mutex::new(std::collections::HashSet::new()),
            page_cache: Mutex::new(PageCache::default()),
            index_cache: index_cache::IndexCache::new(index_cache_bytes),
            value_cache: index_cache::IndexCache::new(VALUE_CACHE_BYTES),
            generator: std::sync::OnceLock::new(),
            stop: CancellationToken::new(),
        });
        let replayed = records.len();
        for record in records {
            match TraceData::from_request_bytes(record.data) {
                Ok((data, _)) => store.add_to_head(&record.tenant, &data),
                Err(err) => tracing::warn!(error = %err, "skipping an undecodable WAL record"),
            }
        }
        if replayed > 0 {
            tracing::info!(requests = replayed, "replayed the write-ahead log");
        }
        store.refresh_blocks().await?;
        if store.config.ingests() {
            tokio::spawn(run_cut_loop(store.clone()));
        }
        tokio::spawn(run_compaction_loop(store.clone()));
        if store.config.compacts() {
            tokio::spawn(crate::tempo_blocks::run_import_loop(store.clone()));
        }
        Ok(store)
    }

    /// The bucket, for the Tempo block importer (`crate::tempo_blocks`).
    pub fn objects(&self) -> Arc<dyn ObjectStore> {
        self.objects.clone()
    }

    /// Whether the store is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves when the store starts shutting down.
    pub async fn stopped(&self) {
        self.stop.cancelled().await
    }

    pub(crate) fn generator_cell(&self) -> &std::sync::OnceLock<Arc<crate::generator::Generator>> {
        &self.generator
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn auth(&self) -> Option<&Arc<crate::auth::TenantAuth>> {
        self.auth.as_ref()
    }

    /// Stores `data` for `tenant`; durable (per the fsync policy) and queryable on return.
    ///
    /// An append that finds the head full (`max_block_bytes`) first cuts it, after any cut in
    /// progress: memory stays bounded (the head plus one head being written) when spans arrive
    /// faster than blocks are written, and the slowdown reaches clients as backpressure.
    pub async fn append(&self, tenant: &str, data: &TraceData) -> anyhow::Result<()> {
        if self.head_bytes() >= self.config.ingester.max_block_bytes {
            // Before taking `cut_lock`, which a cut needs alone. In a task of its own: the client
            // may give up (a gRPC deadline drops this future), and a cut dropped half-way would
            // leave the head it took written nowhere while a later cut removes its WAL segment:
            // acknowledged spans lost (seen at 10M spans under load: 25% of the traces).
            match self.myself.upgrade() {
                Some(store) => tokio::spawn(async move { store.cut_full_head().await })
                    .await
                    .context("cutting the full head")??,
                None => self.cut_full_head().await?,
            }
        }
        let _shared = self.cut_lock.read().await;
        self.wal
            .append(tenant, data.as_bytes().clone())
            .await
            .context("writing the WAL")?;
        self.add_to_head(tenant, data);
        Ok(())
    }

    /// Cuts the head if it is (still) full once any cut in progress is done.
    async fn cut_full_head(&self) -> anyhow::Result<()> {
        let one_at_a_time = self.cutting.lock().await;
        if self.head_bytes() >= self.config.ingester.max_block_bytes {
            self.cut_holding(one_at_a_time).await?;
        }
        Ok(())
    }

    /// Encoded bytes received since the last cut (what `max_block_bytes` limits).
    pub fn head_bytes(&self) -> u64 {
        self.head.lock().bytes
    }

    fn add_to_head(&self, tenant: &str, data: &TraceData) {
        let mut head = self.head.lock();
        head.bytes += data.encoded_len() as u64;
        let traces = head.tenants.entry(tenant.to_string()).or_default();
        for (trace_id, part) in data.split_by_trace() {
            let trace = traces.entry(trace_id).or_default();
            trace.summary.add(&part);
            trace.parts.push(part);
        }
    }

    /// Cuts the head into a block now (also done by the cut loop). Returns the blocks written.
    pub async fn cut(&self) -> anyhow::Result<Vec<BlockMeta>> {
        let one_at_a_time = self.cutting.lock().await;
        self.cut_holding(one_at_a_time).await
    }

    /// The cut, by a caller holding `cutting`.
    async fn cut_holding(
        &self,
        _one_at_a_time: tokio::sync::MutexGuard<'_, ()>,
    ) -> anyhow::Result<Vec<BlockMeta>> {
        let (head, sealed) = {
            let _alone = self.cut_lock.write().await;
            let head = std::mem::take(&mut *self.head.lock());
            {
                let mut started = self.head_started.lock();
                *started = Instant::now();
            }
            if head.tenants.is_empty() {
                return Ok(Vec::new());
            }
            let sealed = match self.wal.rotate().await {
                Ok(sealed) => sealed,
                Err(err) => {
                    self.restore_to_head(&head, |_| true);
                    return Err(err).context("rotating the WAL");
                }
            };
            (Arc::new(head), sealed)
        };
        {
            let mut flushing = self.flushing.write();
            flushing.push(head.clone());
        }
        let mut written: Vec<BlockMeta> = Vec::new();
        let mut failure = None;
        for (tenant, traces) in &head.tenants {
            let traces: BTreeMap<[u8; 16], TraceData> = traces
                .iter()
                .map(|(id, t)| (*id, block::merge_parts(&t.parts)))
                .collect();
            match self.write_block(tenant, traces, 0).await {
                Ok(meta) => written.push(meta),
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        if failure.is_some() {
            // The tenants not written go back into the head (before leaving `flushing`, so that
            // queries never miss them): still queryable, and in the next cut. Their WAL segments
            // stay until that cut succeeds.
            self.restore_to_head(&head, |tenant| {
                !written.iter().any(|meta| meta.tenant == tenant)
            });
        }
        {
            let mut flushing = self.flushing.write();
            flushing.retain(|h| !Arc::ptr_eq(h, &head));
        }
        if let Some(err) = failure {
            return Err(err);
        }
        // Only now is the WAL's copy redundant.
        self.wal
            .remove_through(sealed)
            .context("removing flushed WAL segments")?;
        Ok(written)
    }

    /// Adds the traces of `cut` (a head whose cut failed) for the tenants `restore` picks back into
    /// the current head.
    fn restore_to_head(&self, cut: &Head, restore: impl Fn(&str) -> bool) {
        let mut head = self.head.lock();
        let mut bytes = 0;
        for (tenant, traces) in cut.tenants.iter().filter(|(t, _)| restore(t)) {
            let into = head.tenants.entry(tenant.clone()).or_default();
            for (trace_id, trace) in traces {
                let into = into.entry(*trace_id).or_default();
                for part in &trace.parts {
                    into.summary.add(part);
                    into.parts.push(part.clone());
                    bytes += part.encoded_len() as u64;
                }
            }
        }
        head.bytes += bytes;
    }

    async fn write_block(
        &self,
        tenant: &str,
        traces: BTreeMap<[u8; 16], TraceData>,
        level: u32,
    ) -> anyhow::Result<BlockMeta> {
        // Compression is seconds of CPU for a large head: off the async workers.
        let owned_tenant = tenant.to_string();
        let built = tokio::task::spawn_blocking(move || {
            block::build(new_block_id(), &owned_tenant, traces, level)
        })
        .await
        .context("building a block")?
        .context("building a block")?;
        let id = built.meta.block_id.clone();
        self.put_block_file(tenant, &id, "data", built.data).await?;
        if let Some(columns) = built.columns {
            self.put_block_file(tenant, &id, crate::columns::OBJECT, columns)
                .await?;
        }
        self.put_block_file(tenant, &id, crate::page_values::OBJECT, built.values)
            .await?;
        self.put_block_file(tenant, &id, "index", built.index.encode())
            .await?;
        // meta.json last: its presence marks the block complete.
        self.put_block_file(tenant, &id, "meta.json", serde_json::to_vec(&built.meta)?)
            .await?;
        let meta = built.meta.clone();
        let block = self.keep_index(built.meta, built.index);
        self.blocks.write().push(Arc::new(block));
        tracing::info!(tenant, block = %meta.block_id, traces = meta.traces, spans = meta.spans, bytes = meta.size_bytes, level, "wrote block");
        Ok(meta)
    }

    /// The block of `meta` and `index`, whose index goes into the cache (a block just written
    /// or loaded is likely to be searched).
    fn keep_index(&self, meta: BlockMeta, index: BlockIndex) -> Block {
        let summary = BlockSummary::of(&index);
        self.index_cache.insert(&meta.block_id, Arc::new(index));
        Block { meta, summary }
    }

    /// The index of `block`: from the cache, or read from the bucket (and cached).
    pub async fn block_index(&self, block: &Block) -> anyhow::Result<Arc<BlockIndex>> {
        if let Some(index) = self.index_cache.get(&block.meta.block_id) {
            return Ok(index);
        }
        let bytes = self.get_block_file(block, "index", None).await?;
        let index = tokio::task::spawn_blocking(move || BlockIndex::decode(&bytes))
            .await
            .context("decoding an index")?
            .with_context(|| format!("decoding the index of block {}", block.meta.block_id))?;
        let index = Arc::new(index);
        self.index_cache.insert(&block.meta.block_id, index.clone());
        Ok(index)
    }

    /// The page value filters of `block` (from the cache, or read and cached); None for a
    /// block written before them.
    pub(super) async fn page_values(
        &self,
        block: &Block,
    ) -> anyhow::Result<Option<Arc<PageValues>>> {
        if block.meta.values_bytes == 0 {
            return Ok(None);
        }
        if let Some(values) = self.value_cache.get(&block.meta.block_id) {
            return Ok(Some(values));
        }
        let bytes = self
            .get_block_file(block, crate::page_values::OBJECT, None)
            .await?;
        let values = PageValues::decode(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "decoding the value filters of block {}/{}: {e}",
                block.meta.tenant,
                block.meta.block_id
            )
        })?;
        let values = Arc::new(values);
        self.value_cache
            .insert(&block.meta.block_id, values.clone());
        Ok(Some(values))
    }

    /// Bytes of block indexes held in memory now.
    pub fn index_cache_bytes(&self) -> usize {
        self.index_cache.bytes()
    }

    /// Reads `file` of `block` (a byte range of it, or all). A file that is gone is
    /// [`StoreError::BlockGone`], so that readers refresh the block list and try again.
    async fn get_block_file(
        &self,
        block: &Block,
        file: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> anyhow::Result<Bytes> {
        let path = block_path(&block.meta.tenant, &block.meta.block_id, file);
        let result = match range {
            Some(range) => self.objects.get_range(&path, range).await,
            None => match self.objects.get(&path).await {
                Ok(got) => got.bytes().await,
                Err(err) => Err(err),
            },
        };
        result.map_err(|err| match err {
            object_store::Error::NotFound { .. } => anyhow::Error::new(StoreError::BlockGone {
                tenant: block.meta.tenant.clone(),
                block_id: block.meta.block_id.clone(),
                source: err,
            }),
            err => anyhow::Error::new(err).context(format!("reading {path}")),
        })
    }

    /// Writes one file of a block.
    async fn put_block_file(
        &self,
        tenant: &str,
        block_id: &str,
        file: &str,
        bytes: Vec<u8>,
    ) -> anyhow::Result<()> {
        let path = block_path(tenant, block_id, file);
        self.objects
            .put(&path, PutPayload::from(bytes))
            .await
            .with_context(|| format!("writing {path}"))?;
        Ok(())
    }

    /// Deletes one file of a block; one already gone is no error.
    async fn delete_block_file(
        &self,
        tenant: &str,
        block_id: &str,
        file: &str,
    ) -> anyhow::Result<()> {
        let path = block_path(tenant, block_id, file);
        match self.objects.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err).with_context(|| format!("deleting {path}")),
        }
    }

    fn blocks_of(&self, tenant: &str) -> Vec<Arc<Block>> {
        let mut blocks: Vec<Arc<Block>> = self
            .blocks
            .read()
            .iter()
            .filter(|b| b.meta.tenant == tenant)
            .cloned()
            .collect();
        // Newest first: searches stop at `limit`, and recent traces are what users look for.
        blocks.sort_by_key(|b| std::cmp::Reverse(b.meta.end_unix_nano));
        blocks
    }

    /// Tenants with data: in the head, being written, or in blocks. Sorted.
    pub fn tenants(&self) -> Vec<String> {
        let mut tenants = std::collections::BTreeSet::new();
        {
            let head = self.head.lock();
            tenants.extend(head.tenants.keys().cloned());
        }
        {
            let flushing = self.flushing.read();
            for head in flushing.iter() {
                tenants.extend(head.tenants.keys().cloned());
            }
        }
        {
            let blocks = self.blocks.read();
            tenants.extend(blocks.iter().map(|b| b.meta.tenant.clone()));
        }
        tenants.into_iter().collect()
    }

    pub fn block_metas(&self) -> Vec<BlockMeta> {
        self.blocks.read().iter().map(|b| b.meta.clone()).collect()
    }

    /// Writes the head as a block and stops the loops (clean shutdown; nothing to replay).
    pub async fn flush_and_close(&self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.cut().await.map(|_| ())
    }
}

async fn run_cut_loop(store: Arc<Store>) {
    let every = store.config.ingester.max_block_duration.as_duration();
    let max_bytes = store.config.ingester.max_block_bytes;
    let mut tick = tokio::time::interval(Duration::from_millis(250).min(every));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = store.stop.cancelled() => return,
        }
        let age = store.head_started.lock().elapsed();
        if age >= every || store.head_bytes() >= max_bytes {
            if let Err(err) = store.cut().await {
                tracing::error!(error = %format!("{err:#}"), "cutting the head into a block failed; it stays in the WAL");
            }
        }
    }
}
