//! Reads: pages, trace by id, search, recent traces.
//!
//! Compaction and retention replace blocks while reads run. A reader that finds a block's files
//! gone ([`StoreError::BlockGone`]: another process deleted them after this one listed the block)
//! takes the block list again and goes on where it was, so reads never fail because compaction
//! ran; a block whose `meta.json` is still there but whose data is gone is a fault.

use super::*;
use crate::attr_keys::RequiredKey;

/// Times a read takes the block list again before giving up with 503: each retry means
/// blocks were replaced under it, and compaction replaces a tenant's blocks once per cycle.
const BLOCK_LIST_RETRIES: usize = 5;
/// Head traces checked between two yields to the runtime (about 3 ms of matching at 10 spans
/// a trace).
const HEAD_TRACES_PER_YIELD: usize = 256;

/// What a search has so far: found traces, figures, and the ids of traces considered.
type SearchProgress<'a> = (
    &'a mut Vec<Found>,
    &'a mut SearchStats,
    &'a mut std::collections::HashSet<[u8; 16]>,
);

/// What a search may use beyond the request: attributes every match has (blocks without one of
/// them are skipped from their index), and blocks already answered another way.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    pub required_keys: Vec<RequiredKey>,
    /// Ids of blocks not to read (a tag listing took their keys from their index).
    pub skip_blocks: std::collections::HashSet<String>,
    /// Not to read blocks that have columns (a metrics query answered from them), whatever
    /// listing the search runs over.
    pub skip_blocks_with_columns: bool,
}

/// Blocks a search did not read, per reason (reported in the search response's `metrics`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SkippedBlocks {
    /// The block's time range lies outside the search's.
    pub outside_time_range: u64,
    /// The block's key set lacks an attribute every match has.
    pub attribute_absent: u64,
    /// The block's string table lacks the service the query asks for.
    pub service_absent: u64,
    /// No trace row of the block passes the time range, duration bounds and error hint.
    pub no_candidate_trace: u64,
    /// The search had its `limit` of traces before it came to the block.
    pub limit_reached: u64,
    /// Answered from the block's index (tag names over a whole block).
    pub answered_from_index: u64,
    /// Answered from the block's columns (a span-local metrics query).
    pub answered_from_columns: u64,
    /// No page's value filter holds a value every match has.
    pub value_absent: u64,
}

impl SkippedBlocks {
    pub fn total(&self) -> u64 {
        self.outside_time_range
            + self.attribute_absent
            + self.service_absent
            + self.no_candidate_trace
            + self.limit_reached
            + self.answered_from_index
            + self.answered_from_columns
            + self.value_absent
    }
}

impl Store {
    pub(super) async fn page(&self, block: &Block, page: u32) -> anyhow::Result<PageTraces> {
        let key = (block.meta.block_id.clone(), page);
        if let Some(hit) = self.page_cache.lock().pages.get(&key).cloned() {
            return Ok(hit);
        }
        let traces = Arc::new(self.read_page(block, page).await?);
        {
            let mut cache = self.page_cache.lock();
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
    pub(super) async fn read_page(
        &self,
        block: &Block,
        page: u32,
    ) -> anyhow::Result<Vec<([u8; 16], TraceData)>> {
        let (offset, len) = block.summary.page(page).context("page out of range")?;
        let path = block_path(&block.meta.tenant, &block.meta.block_id, "data");
        let bytes: Bytes = self
            .get_block_file(block, "data", Some(offset..offset + u64::from(len)))
            .await?;
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
        // The summary names the one page the trace can be on; a false positive of its filter
        // costs a page read that finds nothing.
        let Some(page) = block.summary.page_of(trace_id) else {
            return Ok(None);
        };
        let page = self.page(block, page).await?;
        Ok(page
            .iter()
            .find(|(id, _)| id == trace_id)
            // A copy of its own: a slice would keep the whole decompressed page alive.
            .map(|(_, data)| data.compacted()))
    }

    fn head_parts(&self, tenant: &str, trace_id: &[u8; 16]) -> Vec<TraceData> {
        let mut parts = Vec::new();
        {
            let head = self.head.lock();
            if let Some(t) = head.tenants.get(tenant).and_then(|t| t.get(trace_id)) {
                parts.extend(t.parts.iter().cloned());
            }
        }
        {
            let flushing = self.flushing.read();
            for head in flushing.iter() {
                if let Some(t) = head.tenants.get(tenant).and_then(|t| t.get(trace_id)) {
                    parts.extend(t.parts.iter().cloned());
                }
            }
        }
        parts
    }

    /// Fails with [`StoreError::Unavailable`] once the store is closing.
    pub(super) fn check_open(&self) -> anyhow::Result<()> {
        if self.stop.is_cancelled() {
            return Err(StoreError::Unavailable(
                "the store is shutting down: ask another replica or retry after the restart".into(),
            )
            .into());
        }
        Ok(())
    }

    /// After a read failed with `err`: Ok when the read may go on over a fresh block list
    /// (`err` was a block that compaction or retention removed), else the error to return.
    pub(super) async fn recover_from_vanished_block(
        &self,
        err: anyhow::Error,
        attempts: &mut usize,
    ) -> anyhow::Result<()> {
        let Some(StoreError::BlockGone {
            tenant, block_id, ..
        }) = StoreError::of(&err)
        else {
            return Err(err);
        };
        *attempts += 1;
        if *attempts > BLOCK_LIST_RETRIES {
            return Err(StoreError::Unavailable(format!(
                "blocks were replaced {BLOCK_LIST_RETRIES} times while this read ran \
                 (compaction or retention); retry: {err:#}"
            ))
            .into());
        }
        let meta = block_path(tenant, block_id, "meta.json");
        match self.objects.head(&meta).await {
            Ok(_) => {
                return Err(StoreError::Fault(anyhow::anyhow!(
                    "block {tenant}/{block_id} is damaged: its meta.json is present but its data \
                     is missing ({err:#})"
                ))
                .into())
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(head_err) => {
                return Err(head_err).with_context(|| format!("reading {meta} after: {err:#}"))
            }
        }
        tracing::debug!(
            tenant,
            block = block_id,
            "a block went away during a read; taking the block list again"
        );
        // Forgotten by the refresh once a block that replaced it is loaded, or at the next one.
        self.refresh_blocks().await
    }

    /// Every stored span of a trace (from the head and every block), or None.
    pub async fn trace_by_id(
        &self,
        tenant: &str,
        trace_id: &[u8; 16],
    ) -> anyhow::Result<Option<TraceData>> {
        self.check_open()?;
        let mut attempts = 0;
        loop {
            match self.trace_by_id_once(tenant, trace_id).await {
                Err(err) => self.recover_from_vanished_block(err, &mut attempts).await?,
                found => return found,
            }
        }
    }

    /// [`Store::trace_by_id`] over the block list as it is now.
    async fn trace_by_id_once(
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
        self.search_with(tenant, request, &SearchOptions::default(), matches, &|_| {})
            .await
    }

    /// [`Store::search`] with `options` (attributes every match has, blocks not to read),
    /// telling `progress` what it has after the heads and after each block (the gRPC streaming
    /// API sends partial results from it).
    pub async fn search_with(
        &self,
        tenant: &str,
        request: &SearchRequest,
        options: &SearchOptions,
        matches: &(dyn Fn(&Trace) -> bool + Sync),
        progress: &(dyn Fn(Progress<'_>) + Sync),
    ) -> anyhow::Result<(Vec<Found>, SearchStats)> {
        self.check_open()?;
        if let (Some(start), Some(end)) = (request.start_unix_nano, request.end_unix_nano) {
            if start > end {
                return Err(StoreError::InvalidRequest(format!(
                    "invalid start: the search starts ({start} ns) after it ends ({end} ns)"
                ))
                .into());
            }
        }
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
        {
            let head = self.head.lock();
            collect(&head);
        }
        {
            let flushing = self.flushing.read();
            for head in flushing.iter() {
                collect(head);
            }
        }
        head_candidates.sort_by_key(|c| std::cmp::Reverse(c.1.start_unix_nano));
        for (checked, (trace_id, _)) in head_candidates.into_iter().enumerate() {
            if found.len() >= limit {
                break;
            }
            // Head traces are in memory and never wait: without a yield now and then, a long
            // search holds its runtime worker, and requests queued on that worker (a second
            // query the admission limit should refuse at once, a probe) wait for it to end.
            if checked % HEAD_TRACES_PER_YIELD == HEAD_TRACES_PER_YIELD - 1 {
                tokio::task::yield_now().await;
            }
            if !seen.insert(trace_id) {
                continue;
            }
            if let Some(data) = self.trace_by_id(tenant, &trace_id).await? {
                self.consider(trace_id, data, matches, &mut found, &mut stats);
            }
        }

        // Blocks: a block that goes away under the search is read again from the list that
        // replaced it, skipping the traces already considered.
        let mut attempts = 0;
        loop {
            // Block figures are those of the last listing: a retry starts them again.
            stats.total_blocks = 0;
            stats.inspected_blocks = 0;
            stats.skipped = SkippedBlocks::default();
            stats.pages_without_value = 0;
            stats.traces_without_needle = 0;
            let mut state = (&mut found, &mut stats, &mut seen);
            match self
                .search_blocks(
                    tenant,
                    request,
                    (options, matches),
                    limit,
                    &mut state,
                    progress,
                )
                .await
            {
                Ok(()) => break,
                Err(err) => self.recover_from_vanished_block(err, &mut attempts).await?,
            }
        }
        Ok((found, stats))
    }

    /// The block part of [`Store::search`], over the block list as it is now, adding to
    /// `state` (found, stats, trace ids considered) and telling `progress` after each block.
    async fn search_blocks(
        &self,
        tenant: &str,
        request: &SearchRequest,
        (options, matches): (&SearchOptions, &(dyn Fn(&Trace) -> bool + Sync)),
        limit: usize,
        state: &mut SearchProgress<'_>,
        progress: &(dyn Fn(Progress<'_>) + Sync),
    ) -> anyhow::Result<()> {
        let (found, stats, seen) = state;
        let blocks = self.blocks_of(tenant);
        stats.total_blocks = blocks.len() as u64;
        let total_block_bytes = blocks.iter().map(|b| b.meta.size_bytes).sum();
        // Jobs: the heads (done when this runs), then each block.
        let report = |found: &[Found], stats: SearchStats, blocks_done: usize| {
            progress(Progress {
                found,
                stats,
                completed_jobs: blocks_done as u32 + 1,
                total_jobs: blocks.len() as u32 + 1,
                total_blocks: blocks.len() as u32,
                total_block_bytes,
            })
        };
        let mut pages_read = 0u64;
        // What every match has, once for all blocks: its values' hashes (for pages' value
        // filters) and its keys' and string values' bytes (for each candidate's encoding).
        let value_hashes: Vec<Vec<u64>> = options
            .required_keys
            .iter()
            .filter_map(RequiredKey::value_hashes)
            .collect();
        let needles = crate::page_values::Needles::of(&options.required_keys);
        for (block_number, block) in blocks.iter().enumerate() {
            // Told at the start of each block (every `continue` below ends one), and at the end.
            report(found.as_slice(), **stats, block_number);
            if found.len() >= limit {
                stats.skipped.limit_reached += 1;
                continue;
            }
            if options.skip_blocks.contains(&block.meta.block_id) {
                stats.skipped.answered_from_index += 1;
                continue;
            }
            if options.skip_blocks_with_columns && block.meta.columns_bytes > 0 {
                stats.skipped.answered_from_columns += 1;
                continue;
            }
            if request
                .start_unix_nano
                .is_some_and(|s| block.meta.end_unix_nano < s)
                || request
                    .end_unix_nano
                    .is_some_and(|e| block.meta.start_unix_nano > e)
            {
                stats.skipped.outside_time_range += 1;
                continue;
            }
            // An attribute every match has, missing from the block's key set: no page can hold
            // a match (answered from the index alone, grafana/tempo #4422). With one required
            // attribute, a match split over blocks is found from the part that has it; with
            // several, its parts may each lack one, so a block holding split traces is read.
            if let Some(keys) = block.summary.keys() {
                if options.required_keys.iter().any(|k| !k.present_in(keys))
                    && (options.required_keys.len() < 2
                        || !self.has_split_traces(tenant, &blocks, block_number).await?)
                {
                    stats.skipped.attribute_absent += 1;
                    continue;
                }
            }
            // A block without the hinted service holds no candidate.
            if request
                .service_hint
                .as_ref()
                .is_some_and(|name| !block.summary.has_service(name))
            {
                stats.skipped.service_absent += 1;
                continue;
            }
            let index = self.block_index(block).await?;
            // The service hint as an id of this block's string table.
            let service = match &request.service_hint {
                Some(name) => match index.string_id(name) {
                    Some(id) => Some(id),
                    None => {
                        stats.skipped.service_absent += 1;
                        continue;
                    }
                },
                None => None,
            };
            // A value every match has, missing from a page's value filter: the page holds no
            // match. Several required attributes may each be in another part of a split trace,
            // so then only a block without split traces is judged by its pages' values.
            let values = match value_hashes.is_empty() {
                true => None,
                false => match self.page_values(block).await? {
                    Some(values)
                        if options.required_keys.len() < 2
                            || !self.has_split_traces(tenant, &blocks, block_number).await? =>
                    {
                        Some(values)
                    }
                    _ => None,
                },
            };
            let mut pages_without_value = 0u64;
            let mut block_read = false;
            // Rows are in trace id order, as pages: each run of rows of one page is checked
            // against the index, then the page is read if any row may match. The rows are
            // compared as they are: this loop runs over every trace of the block.
            for rows in index.rows.chunk_by(|a, b| a.page == b.page) {
                if found.len() >= limit {
                    break;
                }
                if values
                    .as_ref()
                    .is_some_and(|v| !v.may_hold_all(rows[0].page, &value_hashes))
                {
                    pages_without_value += 1;
                    continue;
                }
                let candidates: std::collections::HashSet<[u8; 16]> = rows
                    .iter()
                    .filter(|row| {
                        request.admits(row.start_unix_nano, row.end_unix_nano, row.has_error)
                            && service.is_none_or(|id| index.services_of(row).contains(&id))
                            && !seen.contains(&row.trace_id)
                    })
                    .map(|row| row.trace_id)
                    .collect();
                if candidates.is_empty() {
                    continue;
                }
                block_read = true;
                // Pages in the cache never wait: yield now and then, so that a long search
                // over cached pages does not hold a runtime worker to itself.
                pages_read += 1;
                if pages_read.is_multiple_of(16) {
                    tokio::task::yield_now().await;
                }
                let traces = self.page(block, rows[0].page).await?;
                for (trace_id, data) in traces.iter().filter(|(id, _)| candidates.contains(id)) {
                    if found.len() >= limit {
                        break;
                    }
                    if seen.contains(trace_id) {
                        continue;
                    }
                    // The whole trace: parts in other blocks or the head (rare) are merged in.
                    // Marked seen only once read, so a retry after a vanished block reads it.
                    let elsewhere =
                        self.has_parts_elsewhere(tenant, trace_id, &blocks, block_number);
                    // A whole trace lacking a required key or string value in its bytes cannot
                    // match: not decoded (nor marked seen: nothing else holds any of it).
                    if !elsewhere && !needles.all_in(data.as_bytes()) {
                        stats.traces_without_needle += 1;
                        continue;
                    }
                    let data = if elsewhere {
                        match self.trace_by_id_once(tenant, trace_id).await? {
                            Some(data) => data,
                            None => continue,
                        }
                    } else {
                        data.clone()
                    };
                    seen.insert(*trace_id);
                    self.consider(*trace_id, data, matches, found, stats);
                }
            }
            if block_read {
                stats.inspected_blocks += 1;
            } else if pages_without_value > 0 {
                stats.skipped.value_absent += 1;
            } else {
                stats.skipped.no_candidate_trace += 1;
            }
            stats.pages_without_value += pages_without_value;
        }
        report(found.as_slice(), **stats, blocks.len());
        Ok(())
    }

    /// Whether a trace of `blocks[at]` has spans in another block or in a head. Only blocks
    /// whose time range overlaps this one's can hold parts of its traces; their indexes are
    /// read only for ids their filters do not rule out.
    async fn has_split_traces(
        &self,
        tenant: &str,
        blocks: &[Arc<Block>],
        at: usize,
    ) -> anyhow::Result<bool> {
        let block = &blocks[at];
        let index = self.block_index(block).await?;
        if self.any_in_heads(tenant, &index) {
            return Ok(true);
        }
        let overlapping: Vec<&Arc<Block>> = blocks
            .iter()
            .enumerate()
            .filter(|(i, b)| {
                *i != at
                    && b.meta.start_unix_nano <= block.meta.end_unix_nano
                    && b.meta.end_unix_nano >= block.meta.start_unix_nano
            })
            .map(|(_, b)| b)
            .collect();
        for other in overlapping {
            let maybe: Vec<[u8; 16]> = index
                .rows
                .iter()
                .map(|row| row.trace_id)
                .filter(|id| other.summary.may_hold(id))
                .collect();
            if maybe.is_empty() {
                continue;
            }
            let other_index = self.block_index(other).await?;
            if maybe.iter().any(|id| other_index.find(id).is_some()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether a trace of `index` has spans in the head or a head being written.
    fn any_in_heads(&self, tenant: &str, index: &BlockIndex) -> bool {
        let in_head = |head: &Head| {
            head.tenants.get(tenant).is_some_and(|traces| {
                index
                    .rows
                    .iter()
                    .any(|row| traces.contains_key(&row.trace_id))
            })
        };
        in_head(&self.head.lock()) || self.flushing.read().iter().any(|h| in_head(h))
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
        in_head(&self.head.lock())
            || self.flushing.read().iter().any(|h| in_head(h))
            || blocks
                .iter()
                .enumerate()
                .any(|(i, b)| i != except && b.summary.may_hold(trace_id))
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

    /// The blocks of `tenant`, newest first (their meta and index, in memory).
    pub fn blocks(&self, tenant: &str) -> Vec<Arc<Block>> {
        self.blocks_of(tenant)
    }

    /// Recent traces of `tenant` (head first, then the newest blocks), for tag listings.
    pub async fn recent_traces(
        &self,
        tenant: &str,
        max_traces: usize,
    ) -> anyhow::Result<Vec<Trace>> {
        self.check_open()?;
        let mut attempts = 0;
        loop {
            match self.recent_traces_once(tenant, max_traces).await {
                Err(err) => self.recover_from_vanished_block(err, &mut attempts).await?,
                traces => return traces,
            }
        }
    }

    async fn recent_traces_once(
        &self,
        tenant: &str,
        max_traces: usize,
    ) -> anyhow::Result<Vec<Trace>> {
        let mut traces = Vec::new();
        let ids: Vec<[u8; 16]> = self
            .head
            .lock()
            .tenants
            .get(tenant)
            .map(|t| t.keys().take(max_traces).copied().collect())
            .unwrap_or_default();
        for id in ids {
            let parts = self.head_parts(tenant, &id);
            traces.push(to_model(id, &block::merge_parts(&parts)));
        }
        'blocks: for block in self.blocks_of(tenant) {
            for page in 0..block.summary.page_count() {
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
}
