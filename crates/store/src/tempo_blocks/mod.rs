//! Grafana Tempo's blocks, read: a bucket that holds blocks Tempo wrote (vParquet4, in Tempo's
//! layout `<tenant>/<blockID>/meta.json`, `data.parquet`, `bloom-*`, `index`) is served beside
//! Threadline's own blocks with no migration step. The store's importer ([`run_import_loop`],
//! started with the store where it compacts) finds such blocks and appends their traces to the
//! store, which cuts them into Threadline blocks; `threadline store convert` does the same once,
//! on demand. Tempo's files are never modified or deleted.
//!
//! The schema is Tempo's `tempodb/encoding/vparquet4/schema.go` at grafana/tempo commit
//! [`TEMPO_COMMIT`]; conversion follows its `ParquetTraceToTempopbTrace`.
//!
//! Why import rather than query Tempo's files in place: the store's search, metrics, tag and
//! trace-by-id paths (and their indexes and caches) then cover Tempo's traces with no second
//! query engine to keep in step, retention and compaction apply to them as to any block, and
//! the cost is paid once per block in the background.

pub mod convert;
pub mod import;
#[cfg(test)]
mod import_tests;
pub mod meta;
pub mod model;
pub mod reader;
pub mod schema;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

pub use import::{import_tempo_blocks, Failed, ImportPass, Imported, IMPORTS_PREFIX};
pub use meta::TempoMeta;
pub use reader::TempoBlockReader;

use crate::Store;

/// The grafana/tempo commit whose vParquet4 schema this module reads.
pub const TEMPO_COMMIT: &str = "ad33aa8fafc41a4ea58519f7b7a88b1aa1383224";

#[derive(Debug, thiserror::Error)]
pub enum TempoBlockError {
    #[error("Tempo block data.parquet: {0}")]
    Parquet(#[source] parquet::errors::ParquetError),
    #[error("Tempo block data.parquet, row group {0}: {1}")]
    RowGroup(usize, #[source] parquet::errors::ParquetError),
    #[error("Tempo block: trace id {0:?} is not 16 bytes")]
    BadTraceId(String),
    #[error("Tempo trace {0} is not valid OTLP: {1}")]
    InvalidTrace(String, String),
    #[error("Tempo block meta.json: {0}")]
    Meta(#[source] serde_json::Error),
    #[error("{0}: {1}")]
    Storage(String, #[source] object_store::Error),
    #[error("import marker {0}: {1}")]
    Marker(String, #[source] serde_json::Error),
    #[error("importing a Tempo block into the store: {0:#}")]
    Store(anyhow::Error),
    #[error("a Tempo block reader task: {0}")]
    Task(String),
}

/// Whether `block_id` is shaped as Tempo names its blocks (a UUID, `8-4-4-4-12` hex digits).
/// Threadline names its own `<16 hex>-<8 hex>`, so the store's block listing, compaction and
/// deletion leave every folder so named alone: Tempo's files are only ever read.
pub fn is_tempo_block_id(block_id: &str) -> bool {
    let groups: Vec<&str> = block_id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Who imports, as written in import markers: a store restarted with the same WAL resumes its
/// own unfinished imports at once.
pub fn importer_name(store: &Store) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    format!("{host}:{}", store.config().storage.trace.wal.path.display())
}

/// Imports Tempo's blocks at once and then every compaction cycle, until the store stops.
pub async fn run_import_loop(store: Arc<Store>) {
    let objects = store.objects();
    let every = store
        .config()
        .compactor
        .compaction
        .compaction_cycle
        .as_duration()
        .max(Duration::from_secs(1));
    let owner = importer_name(&store);
    let mut skip = HashSet::new();
    loop {
        if store.is_stopping() {
            return;
        }
        match import_tempo_blocks(&store, &objects, None, &owner, &mut skip).await {
            Ok(pass) => {
                // Each failure is logged where it happens (with the block); the block is left
                // for the next start, the others go on.
                if !pass.busy.is_empty() {
                    tracing::info!(blocks = ?pass.busy, "Tempo blocks being imported by another process");
                }
            }
            Err(err) => {
                if store.is_stopping() {
                    return;
                }
                tracing::error!(error = %err, "importing Tempo blocks failed; retrying next cycle");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = store.stopped() => return,
        }
    }
}
