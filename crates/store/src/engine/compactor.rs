//! Compaction and retention.
//!
//! Neither deletes a block that readers may be using. A block that is merged into a bigger one
//! or passes `block_retention` is *marked compacted*, as Tempo marks it: `meta.compacted.json`
//! is written and `meta.json` removed, so no new read (here or in a process polling the bucket)
//! picks it up, while reads that listed it earlier go on reading its data. Its files are deleted
//! `compacted_block_retention` later (Tempo's key and default, 1h). A reader that still loses a
//! block takes the block list again (`query.rs`).

use futures::TryStreamExt;

use super::*;

/// The file that marks a block compacted; its age is the object's modification time.
const COMPACTED_META: &str = "meta.compacted.json";

impl Store {
    /// Merges small blocks of each tenant, marks blocks past retention compacted, and deletes
    /// the files of blocks marked compacted longer than `compacted_block_retention` ago.
    pub async fn compact_and_expire(&self) -> anyhow::Result<()> {
        self.refresh_blocks().await?;
        let compaction = &self.config.compactor.compaction;
        let retention = compaction.block_retention.as_duration();
        let oldest_kept = now_unix_nanos().saturating_sub(retention.as_nanos() as u64);
        let expired: Vec<Arc<Block>> = self
            .blocks
            .read()
            .iter()
            .filter(|b| b.meta.end_unix_nano < oldest_kept)
            .cloned()
            .collect();
        for block in expired {
            tracing::info!(tenant = %block.meta.tenant, block = %block.meta.block_id, "a block passed retention");
            self.blocks
                .write()
                .retain(|b| b.meta.block_id != block.meta.block_id);
            self.index_cache.remove(&block.meta.block_id);
            self.value_cache.remove(&block.meta.block_id);
            self.mark_compacted(&block).await?;
        }

        let tenants: std::collections::BTreeSet<String> = self
            .blocks
            .read()
            .iter()
            .map(|b| b.meta.tenant.clone())
            .collect();
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
            let merged = self.merge_blocks(&tenant, &group).await?;
            let meta = merged.meta.clone();
            // One swap: a read sees the inputs or the merged block, never both nor neither.
            {
                let mut blocks = self.blocks.write();
                // A refresh running meanwhile may have loaded the merged block already.
                blocks.retain(|b| {
                    b.meta.block_id != meta.block_id
                        && !group.iter().any(|g| g.meta.block_id == b.meta.block_id)
                });
                blocks.push(Arc::new(merged));
            }
            for block in &group {
                self.index_cache.remove(&block.meta.block_id);
                self.value_cache.remove(&block.meta.block_id);
            }
            tracing::info!(tenant, merged = group.len(), into = %meta.block_id, "compacted blocks");
            for block in &group {
                self.mark_compacted(block).await?;
            }
        }
        self.delete_compacted_blocks().await
    }

    /// Marks `block` compacted: `meta.compacted.json` first, then `meta.json` goes (a crash in
    /// between leaves a block that is both, which [`Store::delete_compacted_blocks`] removes).
    async fn mark_compacted(&self, block: &Block) -> anyhow::Result<()> {
        let (tenant, id) = (&block.meta.tenant, &block.meta.block_id);
        self.put_block_file(tenant, id, COMPACTED_META, serde_json::to_vec(&block.meta)?)
            .await?;
        self.delete_block_file(tenant, id, "meta.json").await
    }

    /// Deletes the files of blocks marked compacted at least `compacted_block_retention` ago.
    async fn delete_compacted_blocks(&self) -> anyhow::Result<()> {
        let keep = self
            .config
            .compactor
            .compaction
            .compacted_block_retention
            .as_duration();
        let listed: Vec<object_store::ObjectMeta> = self
            .objects
            .list(None)
            .try_collect()
            .await
            .context("listing blocks")?;
        let now = now_unix_nanos();
        for marker in listed
            .iter()
            .filter(|m| m.location.filename() == Some(COMPACTED_META))
        {
            let marked = marker
                .last_modified
                .timestamp_nanos_opt()
                .unwrap_or(0)
                .max(0) as u64;
            if now.saturating_sub(marked) < keep.as_nanos() as u64 {
                continue;
            }
            let parts: Vec<_> = marker.location.parts().collect();
            let [tenant, block_id, _] = parts.as_slice() else {
                continue;
            };
            let (tenant, id) = (tenant.as_ref(), block_id.as_ref());
            if crate::tempo_blocks::is_tempo_block_id(id) {
                continue; // compacted by Tempo: its files are Tempo's to delete
            }
            // meta.json first (present only after a crash while marking), the marker last: a
            // crash part-way leaves a block that the next cycle finishes deleting.
            for file in [
                "meta.json",
                "index",
                "data",
                crate::columns::OBJECT,
                crate::page_values::OBJECT,
                COMPACTED_META,
            ] {
                self.delete_block_file(tenant, id, file).await?;
            }
            tracing::info!(tenant, block = id, "deleted a compacted block");
        }
        Ok(())
    }

    /// Writes the traces of `group` (blocks of `tenant`) as one block. Streaming: the inputs
    /// are merged page by page in trace id order and the output is uploaded in parts, so memory
    /// holds one page per input and a few output parts, whatever the blocks' sizes.
    /// The caller puts the new block in the list.
    async fn merge_blocks(&self, tenant: &str, group: &[Arc<Block>]) -> anyhow::Result<Block> {
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
        let finished = builder.finish(block_id.clone(), tenant, level);
        let (mut meta, index) = (finished.meta, finished.index);
        meta.compacted_from = group.iter().map(|b| b.meta.block_id.clone()).collect();
        if let Some(columns) = finished.columns {
            self.put_block_file(tenant, &block_id, crate::columns::OBJECT, columns)
                .await?;
        }
        self.put_block_file(
            tenant,
            &block_id,
            crate::page_values::OBJECT,
            finished.values,
        )
        .await?;
        self.put_block_file(tenant, &block_id, "index", index.encode())
            .await?;
        // meta.json last: its presence marks the block complete.
        self.put_block_file(tenant, &block_id, "meta.json", serde_json::to_vec(&meta)?)
            .await?;
        tracing::info!(tenant, block = %meta.block_id, traces = meta.traces, spans = meta.spans, bytes = meta.size_bytes, level, "wrote block");
        Ok(self.keep_index(meta, index))
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
            if self.next_page >= self.block.summary.page_count() {
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

pub(super) async fn run_compaction_loop(store: Arc<Store>) {
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
