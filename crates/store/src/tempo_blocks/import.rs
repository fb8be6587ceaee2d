//! Importing Tempo's blocks into the store: every trace of a Tempo block is appended through
//! [`Store::append`] (so it is served by id, by TraceQL and by metrics queries exactly as
//! Threadline's own), then [`Store::cut`] writes it into Threadline blocks, and only then is the
//! import recorded as done. Tempo's files are only read.
//!
//! An import is recorded under `_threadline/tempo-imports/<tenant>/<blockID>.json` in the same
//! bucket (outside Tempo's block folders, and four path parts deep so that the store's block
//! listing never takes it for a block): `started` before the first append, `done` after the
//! cut. A crash in between leaves `started`: the next import of that block resumes, appending
//! only the spans the store does not hold yet (found by trace id and span id), so neither
//! duplicates nor losses follow, whatever part of the appends had reached the WAL or a block.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use threadline_otlp::{TraceData, TraceDataBuilder};

use super::convert::Dedicated;
use super::meta::TempoMeta;
use super::reader::TempoBlockReader;
use super::TempoBlockError;
use crate::Store;

/// Where imports are recorded, relative to the bucket (or its prefix).
pub const IMPORTS_PREFIX: &str = "_threadline/tempo-imports";

/// Traces per append: big enough to amortise the WAL write, small enough to stay far below a
/// request's worth of memory.
const TRACES_PER_APPEND: usize = 256;

/// A marker written by another importer is left alone until it is this old (an importer
/// refreshes its marker after every row group).
const STALE_MARKER: Duration = Duration::from_secs(300);

/// What one block's import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub tenant: String,
    pub block_id: String,
    pub traces: u64,
    pub spans: u64,
    /// Spans not appended because the store already held them (a resumed import).
    pub spans_already_present: u64,
    /// Traces (and spans with all-zero ids) of the block that are no valid OTLP: left out.
    pub traces_rejected: u64,
    pub spans_rejected: u64,
    pub resumed: bool,
}

/// A block whose import failed (unreadable or damaged): what and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub tenant: String,
    pub block_id: String,
    pub error: String,
}

/// What an import pass found.
#[derive(Debug, Default)]
pub struct ImportPass {
    pub imported: Vec<Imported>,
    /// Tempo blocks already imported earlier.
    pub already_done: usize,
    /// Blocks being imported by another process right now.
    pub busy: Vec<String>,
    /// Blocks that could not be imported; the others were.
    pub failed: Vec<Failed>,
}

/// A marker's `state`: `started` while an import runs, `done` once its blocks are written,
/// `failed` when the block could not be read to the end (retried, resuming, on the next start).
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    state: String,
    owner: String,
    updated_unix_secs: u64,
    #[serde(default)]
    traces: u64,
    #[serde(default)]
    spans: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    error: String,
}

fn marker_path(tenant: &str, block_id: &str) -> ObjectPath {
    ObjectPath::from(format!("{IMPORTS_PREFIX}/{tenant}/{block_id}.json"))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What looking at one Tempo block folder came to.
enum Outcome {
    Imported(Imported),
    AlreadyDone,
    Busy,
    /// Not a block this module reads (another format): not looked at again.
    NotRead,
}

/// Imports the Tempo blocks of `objects` (only those of `tenant` if given) that are not
/// imported yet. `owner` names this importer in the markers: the same owner resumes its own
/// unfinished imports at once, another waits until the marker is stale. A block that fails is
/// logged, marked `failed` and put in `skip`; the pass goes on with the others. Only a failed
/// listing of the bucket fails the pass.
pub async fn import_tempo_blocks(
    store: &Store,
    objects: &Arc<dyn ObjectStore>,
    tenant: Option<&str>,
    owner: &str,
    skip: &mut HashSet<String>,
) -> Result<ImportPass, TempoBlockError> {
    let listed: Vec<object_store::ObjectMeta> = objects
        .list(None)
        .try_collect()
        .await
        .map_err(|e| TempoBlockError::Storage("listing the bucket".into(), e))?;
    let mut pass = ImportPass::default();
    for object in listed {
        let parts: Vec<String> = object
            .location
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        let [block_tenant, block_id, file] = parts.as_slice() else {
            continue;
        };
        if file != "meta.json"
            || !super::is_tempo_block_id(block_id)
            || skip.contains(block_id)
            || tenant.is_some_and(|t| t != block_tenant)
        {
            continue;
        }
        if store.is_stopping() {
            break;
        }
        match import_if_due(store, objects, &object.location, block_tenant, owner).await {
            Ok(Outcome::Imported(imported)) => {
                skip.insert(block_id.clone());
                pass.imported.push(imported);
            }
            Ok(Outcome::AlreadyDone) => {
                skip.insert(block_id.clone());
                pass.already_done += 1;
            }
            Ok(Outcome::NotRead) => {
                skip.insert(block_id.clone());
            }
            Ok(Outcome::Busy) => pass.busy.push(block_id.clone()),
            Err(err) => {
                let error = err.to_string();
                tracing::error!(
                    tenant = %block_tenant,
                    block = %block_id,
                    error = %error,
                    "cannot import a Tempo block: it is left as it is and retried on the next start; other blocks go on"
                );
                let marked = write_marker(
                    objects,
                    block_tenant,
                    block_id,
                    "failed",
                    owner,
                    (0, 0),
                    &error,
                )
                .await;
                if let Err(marker_err) = marked {
                    tracing::warn!(block = %block_id, error = %marker_err, "cannot record the failed import");
                }
                skip.insert(block_id.clone());
                pass.failed.push(Failed {
                    tenant: block_tenant.clone(),
                    block_id: block_id.clone(),
                    error,
                });
            }
        }
    }
    Ok(pass)
}

/// Imports one Tempo block unless it is done, being imported elsewhere, or not vParquet4.
async fn import_if_due(
    store: &Store,
    objects: &Arc<dyn ObjectStore>,
    meta_path: &ObjectPath,
    tenant: &str,
    owner: &str,
) -> Result<Outcome, TempoBlockError> {
    let meta_bytes = get(objects, meta_path).await?;
    let meta: TempoMeta = serde_json::from_slice(&meta_bytes).map_err(TempoBlockError::Meta)?;
    if !meta.is_supported() {
        tracing::warn!(
            tenant,
            block = %meta.block_id,
            format = %meta.format,
            "a Tempo block in a format Threadline does not read (only vParquet4): not served"
        );
        return Ok(Outcome::NotRead);
    }
    let resumed = match read_marker(objects, tenant, &meta.block_id).await? {
        Some(m) if m.state == "done" => return Ok(Outcome::AlreadyDone),
        Some(m)
            if m.state == "started"
                && m.owner != owner
                && now_secs() < m.updated_unix_secs + STALE_MARKER.as_secs() =>
        {
            return Ok(Outcome::Busy)
        }
        Some(_) => true,
        None => false,
    };
    let imported = import_block(store, objects, tenant, &meta, owner, resumed).await?;
    Ok(Outcome::Imported(imported))
}

async fn import_block(
    store: &Store,
    objects: &Arc<dyn ObjectStore>,
    tenant: &str,
    meta: &TempoMeta,
    owner: &str,
    resumed: bool,
) -> Result<Imported, TempoBlockError> {
    let block_id = meta.block_id.as_str();
    write_marker(objects, tenant, block_id, "started", owner, (0, 0), "").await?;
    let data = get(
        objects,
        &ObjectPath::from(format!("{tenant}/{block_id}/data.parquet")),
    )
    .await?;
    let dedicated = Dedicated {
        resource: meta.dedicated_names("resource"),
        span: meta.dedicated_names("span"),
    };
    let reader = Arc::new(TempoBlockReader::new(data, dedicated)?);
    let mut imported = Imported {
        tenant: tenant.to_string(),
        block_id: block_id.to_string(),
        traces: 0,
        spans: 0,
        spans_already_present: 0,
        traces_rejected: 0,
        spans_rejected: 0,
        resumed,
    };
    for index in 0..reader.row_groups() {
        // Decoding is CPU work: off the async workers.
        let group_reader = reader.clone();
        let group = tokio::task::spawn_blocking(move || group_reader.read_row_group(index))
            .await
            .map_err(|e| TempoBlockError::Task(e.to_string()))??;
        for reason in &group.rejected {
            tracing::warn!(tenant, block = block_id, reason = %reason, "a trace of a Tempo block is left out");
        }
        imported.traces_rejected += group.rejected.len() as u64;
        imported.spans_rejected += group.rejected_spans;
        for chunk in group.traces.chunks(TRACES_PER_APPEND) {
            let mut batch = TraceDataBuilder::new();
            for (trace_id, data) in chunk {
                let data = if resumed {
                    let (missing, present) = not_yet_stored(store, tenant, trace_id, data).await?;
                    imported.spans_already_present += present;
                    missing
                } else {
                    data.clone()
                };
                imported.traces += 1;
                imported.spans += data.span_count() as u64;
                batch.push(&data);
            }
            if !batch.is_empty() {
                store
                    .append(tenant, &batch.finish())
                    .await
                    .map_err(TempoBlockError::Store)?;
            }
        }
        write_marker(objects, tenant, block_id, "started", owner, (0, 0), "").await?;
    }
    // Durable in Threadline blocks before the import counts as done.
    store.cut().await.map_err(TempoBlockError::Store)?;
    write_marker(
        objects,
        tenant,
        block_id,
        "done",
        owner,
        (imported.traces, imported.spans),
        "",
    )
    .await?;
    tracing::info!(
        tenant,
        block = block_id,
        traces = imported.traces,
        spans = imported.spans,
        already_present = imported.spans_already_present,
        traces_rejected = imported.traces_rejected,
        spans_rejected = imported.spans_rejected,
        resumed,
        "imported a Tempo block"
    );
    Ok(imported)
}

/// The spans of `data` that the store does not hold yet, and how many it does.
async fn not_yet_stored(
    store: &Store,
    tenant: &str,
    trace_id: &[u8; 16],
    data: &TraceData,
) -> Result<(TraceData, u64), TempoBlockError> {
    let Some(stored) = store
        .trace_by_id(tenant, trace_id)
        .await
        .map_err(TempoBlockError::Store)?
    else {
        return Ok((data.clone(), 0));
    };
    let mut have = HashSet::new();
    stored.for_each_span(|_, _, span| {
        have.insert(span.span_id());
    });
    let missing = data.retain_spans(|span| !have.contains(&span.span_id()));
    let present = (data.span_count() - missing.span_count()) as u64;
    Ok((missing, present))
}

async fn get(objects: &Arc<dyn ObjectStore>, path: &ObjectPath) -> Result<Bytes, TempoBlockError> {
    let what = || format!("reading {path}");
    objects
        .get(path)
        .await
        .map_err(|e| TempoBlockError::Storage(what(), e))?
        .bytes()
        .await
        .map_err(|e| TempoBlockError::Storage(what(), e))
}

async fn read_marker(
    objects: &Arc<dyn ObjectStore>,
    tenant: &str,
    block_id: &str,
) -> Result<Option<Marker>, TempoBlockError> {
    let path = marker_path(tenant, block_id);
    match objects.get(&path).await {
        Ok(found) => {
            let bytes = found
                .bytes()
                .await
                .map_err(|e| TempoBlockError::Storage(format!("reading {path}"), e))?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| TempoBlockError::Marker(path.to_string(), e))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(TempoBlockError::Storage(format!("reading {path}"), e)),
    }
}

async fn write_marker(
    objects: &Arc<dyn ObjectStore>,
    tenant: &str,
    block_id: &str,
    state: &str,
    owner: &str,
    (traces, spans): (u64, u64),
    error: &str,
) -> Result<(), TempoBlockError> {
    let path = marker_path(tenant, block_id);
    let marker = Marker {
        state: state.to_string(),
        owner: owner.to_string(),
        updated_unix_secs: now_secs(),
        traces,
        spans,
        error: error.to_string(),
    };
    let bytes =
        serde_json::to_vec(&marker).map_err(|e| TempoBlockError::Marker(path.to_string(), e))?;
    objects
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|e| TempoBlockError::Storage(format!("writing {path}"), e))?;
    Ok(())
}
