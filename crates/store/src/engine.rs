//! The store: appends go to the WAL and the head (in memory, queryable at once); the head is
//! cut into a block every `max_block_duration`, or by the append that finds it holding
//! `max_block_bytes` (so memory stays bounded when blocks are written slower than spans arrive);
//! blocks are merged by compaction (streaming, page by page) and deleted by retention. Queries
//! read the head, heads being written out, and blocks.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use threadline_otlp::TraceData;
use threadline_traceql::model::Trace;
use tokio_util::sync::CancellationToken;

use crate::block::{self, BlockBuilder, BlockIndex, BlockMeta};
use crate::config::StoreConfig;
use crate::model::{to_model, TraceSummary};
use crate::wal::Wal;

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

/// A block in the store: its meta and index (in memory).
pub struct Block {
    pub meta: BlockMeta,
    pub index: BlockIndex,
}

pub struct Store {
    config: StoreConfig,
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
    /// Decompressed pages recently read: (block id, page) → traces.
    page_cache: Mutex<PageCache>,
    stop: CancellationToken,
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

/// Figures of a search, as Tempo reports them.
#[derive(Debug, Default, Clone, Copy)]
pub struct SearchStats {
    pub inspected_traces: u64,
    pub inspected_bytes: u64,
}

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
        let store = Arc::new(Store {
            config,
            objects,
            wal,
            cut_lock: tokio::sync::RwLock::new(()),
            cutting: tokio::sync::Mutex::new(()),
            head: Mutex::new(Head::default()),
            head_started: Mutex::new(Instant::now()),
            flushing: RwLock::new(Vec::new()),
            blocks: RwLock::new(Vec::new()),
            page_cache: Mutex::new(PageCache::default()),
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
        Ok(store)
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Stores `data` for `tenant`; durable (per the fsync policy) and queryable on return.
    ///
    /// An append that finds the head full (`max_block_bytes`) first cuts it, after any cut in
    /// progress: memory stays bounded (the head plus one head being written) when spans arrive
    /// faster than blocks are written, and the slowdown reaches clients as backpressure.
    pub async fn append(&self, tenant: &str, data: &TraceData) -> anyhow::Result<()> {
        if self.head_bytes() >= self.config.ingester.max_block_bytes {
            // Before taking `cut_lock`, which a cut needs alone.
            self.cut_full_head().await?;
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
        self.head.lock().map(|h| h.bytes).unwrap_or(0)
    }

    fn add_to_head(&self, tenant: &str, data: &TraceData) {
        let Ok(mut head) = self.head.lock() else {
            return;
        };
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
            let head = match self.head.lock() {
                Ok(mut head) => std::mem::take(&mut *head),
                Err(_) => anyhow::bail!("head lock poisoned"),
            };
            if let Ok(mut started) = self.head_started.lock() {
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
        if let Ok(mut flushing) = self.flushing.write() {
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
        if let Ok(mut flushing) = self.flushing.write() {
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
        let Ok(mut head) = self.head.lock() else {
            return;
        };
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
        let put = |file: &str, bytes: Vec<u8>| {
            let path = block_path(tenant, &id, file);
            let objects = self.objects.clone();
            async move {
                objects
                    .put(&path, PutPayload::from(bytes))
                    .await
                    .with_context(|| format!("writing {path}"))
            }
        };
        put("data", built.data).await?;
        put("index", built.index.encode()).await?;
        // meta.json last: its presence marks the block complete.
        put("meta.json", serde_json::to_vec(&built.meta)?).await?;
        let meta = built.meta.clone();
        if let Ok(mut blocks) = self.blocks.write() {
            blocks.push(Arc::new(Block {
                meta: built.meta,
                index: built.index,
            }));
        }
        tracing::info!(tenant, block = %meta.block_id, traces = meta.traces, spans = meta.spans, bytes = meta.size_bytes, level, "wrote block");
        Ok(meta)
    }

    /// Loads the blocks in storage that are not known yet (written by another process sharing
    /// the bucket), and forgets those deleted.
    pub async fn refresh_blocks(&self) -> anyhow::Result<()> {
        let listed: Vec<object_store::ObjectMeta> = self
            .objects
            .list(None)
            .try_collect()
            .await
            .context("listing blocks")?;
        let metas: Vec<ObjectPath> = listed
            .into_iter()
            .map(|m| m.location)
            .filter(|p| p.filename() == Some("meta.json"))
            .collect();
        let known: std::collections::HashSet<String> = self
            .blocks
            .read()
            .map(|b| b.iter().map(|b| b.meta.block_id.clone()).collect())
            .unwrap_or_default();
        let mut present = std::collections::HashSet::new();
        for path in metas {
            let parts: Vec<_> = path.parts().collect();
            let [tenant, block_id, _] = parts.as_slice() else {
                continue;
            };
            let (tenant, block_id) = (tenant.as_ref().to_string(), block_id.as_ref().to_string());
            present.insert(block_id.clone());
            if known.contains(&block_id) {
                continue;
            }
            match self.load_block(&tenant, &block_id).await {
                Ok(block) => {
                    if let Ok(mut blocks) = self.blocks.write() {
                        blocks.push(Arc::new(block));
                    }
                }
                Err(err) => {
                    tracing::warn!(tenant, block = block_id, error = %err, "skipping a block")
                }
            }
        }
        if let Ok(mut blocks) = self.blocks.write() {
            blocks.retain(|b| present.contains(&b.meta.block_id));
        }
        Ok(())
    }

    async fn load_block(&self, tenant: &str, block_id: &str) -> anyhow::Result<Block> {
        let get = |file: &str| {
            let path = block_path(tenant, block_id, file);
            let objects = self.objects.clone();
            async move {
                let result = objects
                    .get(&path)
                    .await
                    .with_context(|| format!("reading {path}"))?;
                result
                    .bytes()
                    .await
                    .with_context(|| format!("reading {path}"))
            }
        };
        let meta: BlockMeta = serde_json::from_slice(&get("meta.json").await?)?;
        let index = BlockIndex::decode(&get("index").await?)?;
        Ok(Block { meta, index })
    }

    fn blocks_of(&self, tenant: &str) -> Vec<Arc<Block>> {
        let mut blocks: Vec<Arc<Block>> = self
            .blocks
            .read()
            .map(|b| {
                b.iter()
                    .filter(|b| b.meta.tenant == tenant)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        // Newest first: searches stop at `limit`, and recent traces are what users look for.
        blocks.sort_by_key(|b| std::cmp::Reverse(b.meta.end_unix_nano));
        blocks
    }

    async fn page(&self, block: &Block, page: u32) -> anyhow::Result<PageTraces> {
        let key = (block.meta.block_id.clone(), page);
        if let Some(hit) = self
            .page_cache
            .lock()
            .ok()
            .and_then(|c| c.pages.get(&key).cloned())
        {
            return Ok(hit);
        }
        let traces = Arc::new(self.read_page(block, page).await?);
        if let Ok(mut cache) = self.page_cache.lock() {
            cache.pages.insert(key.clone(), traces.clone());
            cache.order.push_back(key);
            while cache.order.len() > PAGE_CACHE_PAGES {
                if let Some(old) = cache.order.pop_front() {
                    cache.pages.remove(&old);
                }
            }
        }
        Ok(traces)
    }

    /// Reads and decodes one page, bypassing the cache.
    async fn read_page(
        &self,
        block: &Block,
        page: u32,
    ) -> anyhow::Result<Vec<([u8; 16], TraceData)>> {
        let (offset, len) = *block
            .index
            .pages
            .get(page as usize)
            .context("page out of range")?;
        let path = block_path(&block.meta.tenant, &block.meta.block_id, "data");
        let bytes: Bytes = self
            .objects
            .get_range(&path, offset..offset + u64::from(len))
            .await
            .with_context(|| format!("reading {path}"))?;
        // Decompressing and checking a page is about a millisecond of CPU.
        let traces = tokio::task::spawn_blocking(move || block::page_traces(&bytes))
            .await
            .context("decoding a page")?
            .with_context(|| format!("decoding page {page} of {path}"))?;
        Ok(traces)
    }

    async fn block_trace(
        &self,
        block: &Block,
        trace_id: &[u8; 16],
    ) -> anyhow::Result<Option<TraceData>> {
        let Some(row) = block.index.find(trace_id) else {
            return Ok(None);
        };
        let page = self.page(block, row.page).await?;
        Ok(page
            .iter()
            .find(|(id, _)| id == trace_id)
            // A copy of its own: a slice would keep the whole decompressed page alive.
            .map(|(_, data)| data.compacted()))
    }

    fn head_parts(&self, tenant: &str, trace_id: &[u8; 16]) -> Vec<TraceData> {
        let mut parts = Vec::new();
        if let Ok(head) = self.head.lock() {
            if let Some(t) = head.tenants.get(tenant).and_then(|t| t.get(trace_id)) {
                parts.extend(t.parts.iter().cloned());
            }
        }
        if let Ok(flushing) = self.flushing.read() {
            for head in flushing.iter() {
                if let Some(t) = head.tenants.get(tenant).and_then(|t| t.get(trace_id)) {
                    parts.extend(t.parts.iter().cloned());
                }
            }
        }
        parts
    }

    /// Every stored span of a trace (from the head and every block), or None.
    pub async fn trace_by_id(
        &self,
        tenant: &str,
        trace_id: &[u8; 16],
    ) -> anyhow::Result<Option<TraceData>> {
        let mut parts = self.head_parts(tenant, trace_id);
        for block in self.blocks_of(tenant) {
            if let Some(part) = self.block_trace(&block, trace_id).await? {
                parts.push(part);
            }
        }
        if parts.is_empty() {
            return Ok(None);
        }
        Ok(Some(block::merge_parts(&parts)))
    }

    /// Traces of `tenant` that pass the request's bounds and `matches`, newest blocks first, at
    /// most `limit`.
    pub async fn search(
        &self,
        tenant: &str,
        request: &SearchRequest,
        matches: &(dyn Fn(&Trace) -> bool + Sync),
    ) -> anyhow::Result<(Vec<Found>, SearchStats)> {
        let limit = if request.limit == 0 {
            20
        } else {
            request.limit
        };
        let mut found: Vec<Found> = Vec::new();
        let mut stats = SearchStats::default();
        let mut seen = std::collections::HashSet::new();
        let passes = |summary: &TraceSummary| {
            request.admits(
                summary.start_unix_nano,
                summary.end_unix_nano,
                summary.has_error,
            ) && request
                .service_hint
                .as_ref()
                .is_none_or(|s| summary.services.contains(s))
        };

        // The head and heads being flushed: candidates are collected under the lock, checked after.
        let mut head_candidates: Vec<([u8; 16], TraceSummary)> = Vec::new();
        let mut collect = |head: &Head| {
            if let Some(traces) = head.tenants.get(tenant) {
                for (id, t) in traces {
                    if passes(&t.summary) {
                        head_candidates.push((*id, t.summary.clone()));
                    }
                }
            }
        };
        if let Ok(head) = self.head.lock() {
            collect(&head);
        }
        if let Ok(flushing) = self.flushing.read() {
            for head in flushing.iter() {
                collect(head);
            }
        }
        head_candidates.sort_by_key(|c| std::cmp::Reverse(c.1.start_unix_nano));
        for (trace_id, _) in head_candidates {
            if found.len() >= limit {
                break;
            }
            if !seen.insert(trace_id) {
                continue;
            }
            if let Some(data) = self.trace_by_id(tenant, &trace_id).await? {
                self.consider(trace_id, data, matches, &mut found, &mut stats);
            }
        }

        let blocks = self.blocks_of(tenant);
        for (block_number, block) in blocks.iter().enumerate() {
            if found.len() >= limit {
                break;
            }
            if request
                .start_unix_nano
                .is_some_and(|s| block.meta.end_unix_nano < s)
                || request
                    .end_unix_nano
                    .is_some_and(|e| block.meta.start_unix_nano > e)
            {
                continue;
            }
            // The service hint as an id of this block's string table; a block without the name
            // holds no candidate.
            let service = match &request.service_hint {
                Some(name) => match block.index.string_id(name) {
                    Some(id) => Some(id),
                    None => continue,
                },
                None => None,
            };
            // Rows are in trace id order, as pages: each run of rows of one page is checked
            // against the index, then the page is read if any row may match. The rows are
            // compared as they are: this loop runs over every trace of the block.
            for rows in block.index.rows.chunk_by(|a, b| a.page == b.page) {
                if found.len() >= limit {
                    break;
                }
                let candidates: std::collections::HashSet<[u8; 16]> = rows
                    .iter()
                    .filter(|row| {
                        request.admits(row.start_unix_nano, row.end_unix_nano, row.has_error)
                            && service.is_none_or(|id| row.services.contains(&id))
                            && !seen.contains(&row.trace_id)
                    })
                    .map(|row| row.trace_id)
                    .collect();
                if candidates.is_empty() {
                    continue;
                }
                let traces = self.page(block, rows[0].page).await?;
                for (trace_id, data) in traces.iter().filter(|(id, _)| candidates.contains(id)) {
                    if found.len() >= limit {
                        break;
                    }
                    if !seen.insert(*trace_id) {
                        continue;
                    }
                    // The whole trace: parts in other blocks or the head (rare) are merged in.
                    let data = if self.has_parts_elsewhere(tenant, trace_id, &blocks, block_number)
                    {
                        match self.trace_by_id(tenant, trace_id).await? {
                            Some(data) => data,
                            None => continue,
                        }
                    } else {
                        data.clone()
                    };
                    self.consider(*trace_id, data, matches, &mut found, &mut stats);
                }
            }
        }
        Ok((found, stats))
    }

    /// Whether a trace has spans outside `blocks[except]`: in another block or in a head.
    fn has_parts_elsewhere(
        &self,
        tenant: &str,
        trace_id: &[u8; 16],
        blocks: &[Arc<Block>],
        except: usize,
    ) -> bool {
        let in_head = |head: &Head| {
            head.tenants
                .get(tenant)
                .is_some_and(|t| t.contains_key(trace_id))
        };
        self.head.lock().map(|h| in_head(&h)).unwrap_or(false)
            || self
                .flushing
                .read()
                .map(|f| f.iter().any(|h| in_head(h)))
                .unwrap_or(false)
            || blocks
                .iter()
                .enumerate()
                .any(|(i, b)| i != except && b.index.find(trace_id).is_some())
    }

    fn consider(
        &self,
        trace_id: [u8; 16],
        data: TraceData,
        matches: &(dyn Fn(&Trace) -> bool + Sync),
        found: &mut Vec<Found>,
        stats: &mut SearchStats,
    ) {
        stats.inspected_traces += 1;
        stats.inspected_bytes += data.encoded_len() as u64;
        let trace = to_model(trace_id, &data);
        if matches(&trace) {
            found.push(Found {
                trace_id,
                summary: TraceSummary::of(&data),
                trace,
            });
        }
    }

    /// Recent traces of `tenant` (head first, then the newest blocks), for tag listings.
    pub async fn recent_traces(
        &self,
        tenant: &str,
        max_traces: usize,
    ) -> anyhow::Result<Vec<Trace>> {
        let mut traces = Vec::new();
        let ids: Vec<[u8; 16]> = self
            .head
            .lock()
            .map(|h| {
                h.tenants
                    .get(tenant)
                    .map(|t| t.keys().take(max_traces).copied().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        for id in ids {
            let parts = self.head_parts(tenant, &id);
            traces.push(to_model(id, &block::merge_parts(&parts)));
        }
        'blocks: for block in self.blocks_of(tenant) {
            for page in 0..block.index.pages.len() as u32 {
                for (id, data) in self.page(&block, page).await?.iter() {
                    if traces.len() >= max_traces {
                        break 'blocks;
                    }
                    traces.push(to_model(*id, data));
                }
            }
        }
        Ok(traces)
    }

    /// Tenants with data: in the head, being written, or in blocks. Sorted.
    pub fn tenants(&self) -> Vec<String> {
        let mut tenants = std::collections::BTreeSet::new();
        if let Ok(head) = self.head.lock() {
            tenants.extend(head.tenants.keys().cloned());
        }
        if let Ok(flushing) = self.flushing.read() {
            for head in flushing.iter() {
                tenants.extend(head.tenants.keys().cloned());
            }
        }
        if let Ok(blocks) = self.blocks.read() {
            tenants.extend(blocks.iter().map(|b| b.meta.tenant.clone()));
        }
        tenants.into_iter().collect()
    }

    pub fn block_metas(&self) -> Vec<BlockMeta> {
        self.blocks
            .read()
            .map(|b| b.iter().map(|b| b.meta.clone()).collect())
            .unwrap_or_default()
    }

    /// Merges small blocks of each tenant, then deletes blocks past retention.
    pub async fn compact_and_expire(&self) -> anyhow::Result<()> {
        self.refresh_blocks().await?;
        let compaction = &self.config.compactor.compaction;
        let retention = compaction.block_retention.as_duration();
        let oldest_kept = now_unix_nanos().saturating_sub(retention.as_nanos() as u64);
        let expired: Vec<Arc<Block>> = self
            .blocks
            .read()
            .map(|b| {
                b.iter()
                    .filter(|b| b.meta.end_unix_nano < oldest_kept)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for block in expired {
            tracing::info!(tenant = %block.meta.tenant, block = %block.meta.block_id, "deleting a block past retention");
            self.delete_block(&block).await?;
        }

        let tenants: std::collections::BTreeSet<String> = self
            .blocks
            .read()
            .map(|b| b.iter().map(|b| b.meta.tenant.clone()).collect())
            .unwrap_or_default();
        for tenant in tenants {
            let mut small: Vec<Arc<Block>> = self
                .blocks_of(&tenant)
                .into_iter()
                .filter(|b| b.meta.size_bytes < compaction.max_block_bytes / 2)
                .collect();
            small.sort_by_key(|b| b.meta.start_unix_nano);
            let mut group = Vec::new();
            let mut bytes = 0;
            for block in small {
                if group.len() >= compaction.max_compaction_objects
                    || bytes + block.meta.size_bytes > compaction.max_block_bytes
                {
                    break;
                }
                bytes += block.meta.size_bytes;
                group.push(block);
            }
            if group.len() < 2 {
                continue;
            }
            let meta = self.merge_blocks(&tenant, &group).await?;
            tracing::info!(tenant, merged = group.len(), into = %meta.block_id, "compacted blocks");
            for block in &group {
                self.delete_block(block).await?;
            }
        }
        Ok(())
    }

    /// Writes the traces of `group` (blocks of `tenant`) as one block. Streaming: the inputs
    /// are merged page by page in trace id order and the output is uploaded in parts, so memory
    /// holds one page per input and a few output parts, whatever the blocks' sizes.
    async fn merge_blocks(&self, tenant: &str, group: &[Arc<Block>]) -> anyhow::Result<BlockMeta> {
        let level = group
            .iter()
            .map(|b| b.meta.compaction_level)
            .max()
            .unwrap_or(0)
            + 1;
        let block_id = new_block_id();
        let data_path = block_path(tenant, &block_id, "data");
        let mut data = WriteMultipart::new(
            self.objects
                .put_multipart(&data_path)
                .await
                .with_context(|| format!("writing {data_path}"))?,
        );
        let mut builder = BlockBuilder::new();
        // Pages are compressed a few at a time, on every core.
        let mut pages = Vec::new();
        let merged = async {
            let mut inputs: Vec<PageCursor> = group.iter().cloned().map(PageCursor::new).collect();
            // The input whose next trace id is the lowest comes first.
            let mut next: BinaryHeap<Reverse<([u8; 16], usize)>> = BinaryHeap::new();
            for (i, input) in inputs.iter_mut().enumerate() {
                if let Some(id) = input.peek(self).await? {
                    next.push(Reverse((id, i)));
                }
            }
            while let Some(&Reverse((trace_id, _))) = next.peek() {
                // Every part of this trace, one per input holding it.
                let mut parts = Vec::new();
                while let Some(&Reverse((id, i))) = next.peek() {
                    if id != trace_id {
                        break;
                    }
                    next.pop();
                    parts.extend(inputs[i].take());
                    if let Some(id) = inputs[i].peek(self).await? {
                        next.push(Reverse((id, i)));
                    }
                }
                if let Some(page) = builder.push(trace_id, &block::merge_parts(&parts)) {
                    pages.push(page);
                    if pages.len() >= PAGES_PER_BATCH {
                        write_pages(&mut data, &mut builder, std::mem::take(&mut pages)).await?;
                    }
                }
            }
            pages.extend(builder.last_page());
            write_pages(&mut data, &mut builder, pages).await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(err) = merged {
            // Leaves no partial upload behind.
            let _ = data.abort().await;
            return Err(err);
        }
        data.finish()
            .await
            .with_context(|| format!("writing {data_path}"))?;
        let (meta, index) = builder.finish(block_id.clone(), tenant, level);
        let put = |file: &str, bytes: Vec<u8>| {
            let path = block_path(tenant, &block_id, file);
            let objects = self.objects.clone();
            async move {
                objects
                    .put(&path, PutPayload::from(bytes))
                    .await
                    .with_context(|| format!("writing {path}"))
            }
        };
        put("index", index.encode()).await?;
        // meta.json last: its presence marks the block complete.
        put("meta.json", serde_json::to_vec(&meta)?).await?;
        if let Ok(mut blocks) = self.blocks.write() {
            blocks.push(Arc::new(Block {
                meta: meta.clone(),
                index,
            }));
        }
        tracing::info!(tenant, block = %meta.block_id, traces = meta.traces, spans = meta.spans, bytes = meta.size_bytes, level, "wrote block");
        Ok(meta)
    }

    async fn delete_block(&self, block: &Block) -> anyhow::Result<()> {
        let (tenant, id) = (&block.meta.tenant, &block.meta.block_id);
        // meta.json first: without it, other readers treat the block as gone.
        for file in ["meta.json", "index", "data"] {
            let path = block_path(tenant, id, file);
            match self.objects.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(err).with_context(|| format!("deleting {path}")),
            }
        }
        if let Ok(mut blocks) = self.blocks.write() {
            blocks.retain(|b| b.meta.block_id != *id);
        }
        Ok(())
    }

    /// Writes the head as a block and stops the loops (clean shutdown; nothing to replay).
    pub async fn flush_and_close(&self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.cut().await.map(|_| ())
    }
}

/// Pages compressed together by compaction.
const PAGES_PER_BATCH: usize = 8;

/// Compresses `pages` (off the async workers) and appends them to the block's `data` upload.
async fn write_pages(
    data: &mut WriteMultipart,
    builder: &mut BlockBuilder,
    pages: Vec<Vec<u8>>,
) -> anyhow::Result<()> {
    let compressed = tokio::task::spawn_blocking(move || block::compress_pages(&pages))
        .await
        .context("compressing pages")??;
    for page in compressed {
        builder.page_written(page.len());
        data.put(Bytes::from(page));
    }
    // A few parts in flight at most: memory stays bounded when storage is slow.
    data.wait_for_capacity(4)
        .await
        .context("uploading a block")?;
    Ok(())
}

/// Reads a block's traces in order, one page at a time (for compaction).
struct PageCursor {
    block: Arc<Block>,
    next_page: u32,
    page: std::vec::IntoIter<([u8; 16], TraceData)>,
    current: Option<([u8; 16], TraceData)>,
}

impl PageCursor {
    fn new(block: Arc<Block>) -> PageCursor {
        PageCursor {
            block,
            next_page: 0,
            page: Vec::new().into_iter(),
            current: None,
        }
    }

    /// The id of the next trace, reading the next page when needed; None at the end.
    async fn peek(&mut self, store: &Store) -> anyhow::Result<Option<[u8; 16]>> {
        loop {
            if let Some((id, _)) = &self.current {
                return Ok(Some(*id));
            }
            if let Some(trace) = self.page.next() {
                self.current = Some(trace);
                continue;
            }
            if self.next_page as usize >= self.block.index.pages.len() {
                return Ok(None);
            }
            // Uncached: compaction reads each page once and must not evict the readers' pages.
            self.page = store
                .read_page(&self.block, self.next_page)
                .await?
                .into_iter();
            self.next_page += 1;
        }
    }

    /// The trace last peeked.
    fn take(&mut self) -> Option<TraceData> {
        self.current.take().map(|(_, data)| data)
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
        let age = store
            .head_started
            .lock()
            .map(|s| s.elapsed())
            .unwrap_or_default();
        if age >= every || store.head_bytes() >= max_bytes {
            if let Err(err) = store.cut().await {
                tracing::error!(error = %format!("{err:#}"), "cutting the head into a block failed; it stays in the WAL");
            }
        }
    }
}

async fn run_compaction_loop(store: Arc<Store>) {
    let every = store
        .config
        .compactor
        .compaction
        .compaction_cycle
        .as_duration();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = store.stop.cancelled() => return,
        }
        let result = if store.config.compacts() {
            store.compact_and_expire().await
        } else {
            // Other processes write and compact: pick up their blocks, forget deleted ones.
            store.refresh_blocks().await
        };
        if let Err(err) = result {
            tracing::error!(error = %format!("{err:#}"), "compaction, retention or block refresh failed");
        }
    }
}
