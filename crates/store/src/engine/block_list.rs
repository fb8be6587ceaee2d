//! The block list of a process that shares its bucket: blocks other processes wrote are loaded,
//! blocks compaction or retention removed are forgotten.
//!
//! A listing is not a snapshot. Walking the bucket while a compactor runs can miss an input of a
//! merge (deleted before the walk reached it) and also the block that replaced it (written after
//! the walk passed it); forgetting the input then would leave its traces with parts missing. So
//! a known block that a listing lacks is forgotten only when a loaded block names it in
//! `compacted_from`, when it is past this process's `block_retention`, or when the previous
//! refresh lacked it too; a listing that leaves a block
//! unexplained is taken once more and the two are joined. Reads that meet a block whose files
//! are gone refresh and try again ([`StoreError::BlockGone`](crate::error::StoreError)).

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;

use super::{block_path, Block, Store};
use crate::block::{BlockIndex, BlockMeta};

impl Store {
    /// Loads the blocks in storage that are not known yet (written by another process sharing
    /// the bucket), and forgets those deleted (see the module's comment for when).
    pub async fn refresh_blocks(&self) -> anyhow::Result<()> {
        let mut unlisted_before = self.unlisted_last_refresh.lock().await;
        let mut listed = self.list_and_load_blocks().await?;
        if !self.unexplained(&listed, &unlisted_before).is_empty() {
            listed.extend(self.list_and_load_blocks().await?);
        }
        let unlisted = self.unexplained(&listed, &unlisted_before);
        let replaced = self.replaced_or_expired(&listed);
        self.blocks.write().retain(|b| {
            let id = &b.meta.block_id;
            let keep = !replaced.contains(id) && (listed.contains(id) || unlisted.contains(id));
            if !keep {
                self.index_cache.remove(id);
                self.value_cache.remove(id);
            }
            keep
        });
        *unlisted_before = unlisted;
        Ok(())
    }

    /// Known blocks that `listed` lacks, that no loaded block replaced, and that the last
    /// refresh did not already miss: they stay in the list until the next refresh.
    fn unexplained(
        &self,
        listed: &HashSet<String>,
        unlisted_before: &HashSet<String>,
    ) -> HashSet<String> {
        let replaced = self.replaced_or_expired(listed);
        self.blocks
            .read()
            .iter()
            .map(|b| &b.meta.block_id)
            .filter(|id| {
                !listed.contains(*id) && !replaced.contains(*id) && !unlisted_before.contains(*id)
            })
            .cloned()
            .collect()
    }

    /// Blocks that a listed block was merged from, and blocks past retention (retention
    /// deletes them with nothing in their place).
    fn replaced_or_expired(&self, listed: &HashSet<String>) -> HashSet<String> {
        let retention = self
            .config
            .compactor
            .compaction
            .block_retention
            .as_duration();
        let oldest_kept = super::now_unix_nanos().saturating_sub(retention.as_nanos() as u64);
        let blocks = self.blocks.read();
        let merged = blocks
            .iter()
            .filter(|b| listed.contains(&b.meta.block_id))
            .flat_map(|b| b.meta.compacted_from.iter().cloned());
        let expired = blocks
            .iter()
            .filter(|b| !listed.contains(&b.meta.block_id) && b.meta.end_unix_nano < oldest_kept)
            .map(|b| b.meta.block_id.clone());
        merged.chain(expired).collect()
    }

    /// Lists the bucket's blocks (their `meta.json`), loads those not known yet, and returns
    /// the ids listed. Tempo's blocks are left to `tempo_blocks`; a block that fails to load is
    /// logged and skipped.
    async fn list_and_load_blocks(&self) -> anyhow::Result<HashSet<String>> {
        let metas: Vec<ObjectPath> = self
            .objects
            .list(None)
            .map_ok(|m| m.location)
            .try_filter(|p| futures::future::ready(p.filename() == Some("meta.json")))
            .try_collect()
            .await
            .context("listing blocks")?;
        let known: HashSet<String> = self
            .blocks
            .read()
            .iter()
            .map(|b| b.meta.block_id.clone())
            .collect();
        let mut listed = HashSet::new();
        for path in metas {
            let parts: Vec<_> = path.parts().collect();
            let [tenant, block_id, _] = parts.as_slice() else {
                continue;
            };
            if crate::tempo_blocks::is_tempo_block_id(block_id.as_ref()) {
                continue; // Tempo's: imported by `tempo_blocks`, never loaded as ours
            }
            let (tenant, block_id) = (tenant.as_ref().to_string(), block_id.as_ref().to_string());
            listed.insert(block_id.clone());
            if known.contains(&block_id) {
                continue;
            }
            match self.load_block(&tenant, &block_id).await {
                Ok(block) => self.blocks.write().push(Arc::new(block)),
                Err(err) => {
                    tracing::warn!(tenant, block = block_id, error = %format!("{err:#}"), "skipping a block")
                }
            }
        }
        Ok(listed)
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
        Ok(self.keep_index(meta, index))
    }
}
