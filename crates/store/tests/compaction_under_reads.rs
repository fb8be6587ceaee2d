//! Reads never fail because compaction or retention ran: a store restarted over many small blocks
//! (some traces split across two blocks, one block past retention) is searched and looked up in
//! loops, by itself and by a querier polling the same bucket, while its compactor merges and
//! expires the blocks. Every read succeeds and returns whole traces.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use threadline_otlp::TraceData;
use threadline_store::{SearchRequest, Store, StoreConfig, SINGLE_TENANT};

/// Blocks written before the restart.
const BLOCKS: u8 = 12;
/// New traces per block; each has 4 spans, 2 in its block and 2 in the next one.
const TRACES_PER_BLOCK: u8 = 5;
const SPANS_PER_TRACE: usize = 4;

/// A store on `dir/blocks` with its own WAL `dir/<wal>`; it cuts and compacts only when told.
fn config(dir: &Path, wal: &str, extra: &str) -> StoreConfig {
    let yaml = format!(
        "storage:\n  trace:\n    backend: local\n    wal: {{path: {}}}\n    local: {{path: {}}}\n\
         ingester: {{max_block_duration: 1h}}\n{extra}",
        dir.join(wal).display(),
        dir.join("blocks").display()
    );
    let config: StoreConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    config
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn trace_id(block: u8, trace: u8) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[0] = block + 1;
    id[1] = trace + 1;
    id[15] = 0x5a;
    id
}

/// Spans `numbers` of trace `id`, ending `age_nanos` ago.
fn spans(id: [u8; 16], numbers: std::ops::RangeInclusive<u8>, age_nanos: u64) -> Vec<Span> {
    let end = now_nanos() - age_nanos;
    numbers
        .map(|n| Span {
            trace_id: id.to_vec(),
            span_id: vec![id[0], id[1], n, 0, 0, 0, 0, 1],
            name: format!("step {n}"),
            kind: 2,
            start_time_unix_nano: end - 1_000_000,
            end_time_unix_nano: end,
            ..Default::default()
        })
        .collect()
}

fn data(spans: Vec<Span>) -> TraceData {
    TraceData::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("checkout".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    })
}

/// Writes the small blocks and closes the store; returns the span count of every trace that
/// must stay readable, and the id of the one trace past retention (in a block of its own).
async fn write_small_blocks(dir: &Path) -> (BTreeMap<[u8; 16], usize>, [u8; 16]) {
    let store = Store::open(config(dir, "wal", "")).await.unwrap();
    let expired = [0xee; 16];
    let two_hours = 2 * 3600 * 1_000_000_000;
    store
        .append(SINGLE_TENANT, &data(spans(expired, 1..=1, two_hours)))
        .await
        .unwrap();
    assert_eq!(store.cut().await.unwrap().len(), 1);
    let mut expected = BTreeMap::new();
    for block in 0..BLOCKS {
        let mut batch = Vec::new();
        for trace in 0..TRACES_PER_BLOCK {
            batch.extend(spans(trace_id(block, trace), 1..=2, 0));
            // The second half of the previous block's traces.
            if block > 0 {
                batch.extend(spans(trace_id(block - 1, trace), 3..=4, 0));
            }
        }
        if block == BLOCKS - 1 {
            for trace in 0..TRACES_PER_BLOCK {
                batch.extend(spans(trace_id(block, trace), 3..=4, 0));
            }
        }
        store.append(SINGLE_TENANT, &data(batch)).await.unwrap();
        assert_eq!(store.cut().await.unwrap().len(), 1);
        for trace in 0..TRACES_PER_BLOCK {
            expected.insert(trace_id(block, trace), SPANS_PER_TRACE);
        }
    }
    store.flush_and_close().await.unwrap();
    (expected, expired)
}

/// A querier (no ingest, no compaction) over the same bucket, with its own WAL directory.
async fn open_querier(dir: &Path, wal: &str, compaction: &str) -> Arc<Store> {
    Store::open(config(dir, wal, &format!("target: querier\n{compaction}")))
        .await
        .unwrap()
}

/// Looks up and searches every trace until `stop`; returns what went wrong.
async fn read_in_a_loop(
    who: &'static str,
    store: Arc<Store>,
    expected: Arc<BTreeMap<[u8; 16], usize>>,
    expired: [u8; 16],
    stop: Arc<AtomicBool>,
) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut rounds = 0;
    let everything = |_: &threadline_traceql::model::Trace| true;
    while !stop.load(Ordering::Relaxed) || rounds < 3 {
        rounds += 1;
        // As a request handler would between requests: a round over cached pages never waits
        // on I/O, and a task that never yields keeps the runtime's timers from firing.
        tokio::task::yield_now().await;
        for (id, spans) in expected.iter() {
            match store.trace_by_id(SINGLE_TENANT, id).await {
                Ok(Some(trace)) if trace.span_count() == *spans => {}
                Ok(Some(trace)) => problems.push(format!(
                    "{who}: trace {} has {} spans, {spans} sent",
                    hex::encode(id),
                    trace.span_count()
                )),
                Ok(None) => problems.push(format!("{who}: trace {} not found", hex::encode(id))),
                Err(err) => problems.push(format!("{who}: trace {}: {err:#}", hex::encode(id))),
            }
        }
        let request = SearchRequest {
            limit: usize::MAX,
            ..Default::default()
        };
        match store.search(SINGLE_TENANT, &request, &everything).await {
            Ok((found, _)) => {
                let found: BTreeMap<[u8; 16], usize> = found
                    .iter()
                    .map(|f| (f.trace_id, f.trace.spans.len()))
                    .collect();
                for (id, spans) in expected.iter() {
                    if found.get(id) != Some(spans) {
                        problems.push(format!(
                            "{who}: search: trace {} has {:?} spans, {spans} sent",
                            hex::encode(id),
                            found.get(id)
                        ));
                    }
                }
                if found.get(&expired).is_some_and(|n| *n != 1) {
                    problems.push(format!(
                        "{who}: search: the expired trace came back partial"
                    ));
                }
            }
            Err(err) => problems.push(format!("{who}: search: {err:#}")),
        }
        if problems.len() > 20 {
            break;
        }
    }
    (rounds, problems)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn searches_and_lookups_while_compaction_and_retention_run_see_only_whole_traces() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, expired) = write_small_blocks(dir.path()).await;
    let expected = Arc::new(expected);

    // The restart: the store that compacts, and a querier polling the same bucket. Compacted
    // blocks are deleted in the cycle that replaced them (`compacted_block_retention: 0s`, no
    // grace period): the hardest case, where readers lose blocks they listed and must recover.
    let compaction = "compactor: {compaction: {compaction_cycle: 1h, block_retention: 1h, \
                      compacted_block_retention: 0s, max_compaction_objects: 3}}";
    let store = Store::open(config(dir.path(), "wal", compaction))
        .await
        .unwrap();
    let querier = open_querier(dir.path(), "querier-wal", compaction).await;
    assert_eq!(store.block_metas().len(), usize::from(BLOCKS) + 1);

    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for (who, reader) in [
        ("store", &store),
        ("querier", &querier),
        ("store", &store),
        ("querier", &querier),
    ] {
        readers.push(tokio::spawn(read_in_a_loop(
            who,
            reader.clone(),
            expected.clone(),
            expired,
            stop.clone(),
        )));
    }
    let poller = {
        let (querier, stop) = (querier.clone(), stop.clone());
        let errors = Arc::new(Mutex::new(Vec::new()));
        let found = errors.clone();
        let task = tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Err(err) = querier.refresh_blocks().await {
                    found.lock().unwrap().push(format!("refresh: {err:#}"));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        (task, errors)
    };
    // Merge until one block is left (3 at a time: several rounds, each replacing blocks that
    // readers hold).
    let mut cycles = 0;
    while store.block_metas().len() > 1 && cycles < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.compact_and_expire().await.unwrap();
        cycles += 1;
    }
    assert_eq!(store.block_metas().len(), 1, "after {cycles} cycles");
    stop.store(true, Ordering::Relaxed);

    let mut problems = Vec::new();
    for reader in readers {
        let (rounds, found) = reader.await.unwrap();
        assert!(rounds >= 3);
        problems.extend(found);
    }
    poller.0.await.unwrap();
    problems.extend(poller.1.lock().unwrap().drain(..));
    assert!(
        problems.is_empty(),
        "{} problems: {problems:#?}",
        problems.len()
    );

    // Nothing was lost, and the expired trace is gone, for both processes.
    querier.refresh_blocks().await.unwrap();
    for reader in [&store, &querier] {
        assert!(reader
            .trace_by_id(SINGLE_TENANT, &expired)
            .await
            .unwrap()
            .is_none());
        for (id, spans) in expected.iter() {
            let trace = reader.trace_by_id(SINGLE_TENANT, id).await.unwrap();
            assert_eq!(trace.map(|t| t.span_count()), Some(*spans));
        }
    }
}

/// The compacting store and a querier over `dir`'s bucket: one compaction merges every block,
/// and deletes the inputs at once. Also returns the compaction settings, for more queriers.
async fn store_and_querier_merging_everything(
    dir: &Path,
) -> (Arc<Store>, Arc<Store>, &'static str) {
    let compaction = "compactor: {compaction: {compaction_cycle: 1h, block_retention: 1h, \
                      compacted_block_retention: 0s, max_compaction_objects: 100}}";
    let store = Store::open(config(dir, "wal", compaction)).await.unwrap();
    let querier = open_querier(dir, "querier-wal", compaction).await;
    (store, querier, compaction)
}

/// The deterministic case: a querier listed the blocks, then the compactor merged them and
/// deleted the inputs at once. The querier's next reads find the files gone, take the block
/// list again and answer in full.
#[tokio::test]
async fn a_querier_whose_blocks_were_compacted_away_reads_the_merged_block() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, _) = write_small_blocks(dir.path()).await;
    let (store, querier, compaction) = store_and_querier_merging_everything(dir.path()).await;
    let listed = querier.block_metas().len();
    store.compact_and_expire().await.unwrap();
    assert_eq!(store.block_metas().len(), 1);
    // The querier still lists every input block, whose files are gone.
    assert_eq!(querier.block_metas().len(), listed);

    let (id, spans) = expected.iter().next().unwrap();
    let trace = querier.trace_by_id(SINGLE_TENANT, id).await.unwrap();
    assert_eq!(trace.map(|t| t.span_count()), Some(*spans));
    assert_eq!(
        querier.block_metas().len(),
        1,
        "the block list was taken again"
    );

    // And a search that starts over a stale list.
    let stale = open_querier(dir.path(), "stale-wal", compaction).await;
    store
        .append(SINGLE_TENANT, &data(spans_of_new_trace()))
        .await
        .unwrap();
    store.cut().await.unwrap();
    stale.refresh_blocks().await.unwrap();
    store.compact_and_expire().await.unwrap();
    let request = SearchRequest {
        limit: usize::MAX,
        ..Default::default()
    };
    let (found, _) = stale
        .search(SINGLE_TENANT, &request, &|_| true)
        .await
        .unwrap();
    let found: BTreeMap<[u8; 16], usize> = found
        .iter()
        .map(|f| (f.trace_id, f.trace.spans.len()))
        .collect();
    for (id, spans) in expected.iter() {
        assert_eq!(found.get(id), Some(spans), "trace {}", hex::encode(id));
    }
    assert_eq!(found.len(), expected.len() + 1);
}

fn spans_of_new_trace() -> Vec<Span> {
    spans([0x77; 16], 1..=2, 0)
}

/// A listing is not a snapshot: a walk of the bucket can pass the merged block's folder before
/// its `meta.json` is written and reach the inputs after they are deleted. Hidden here by
/// renaming the merged block's `meta.json`: the querier keeps the inputs it knows (their traces
/// are not cut in half) until it sees the block that names them as its sources.
#[tokio::test]
async fn a_listing_that_misses_the_merged_block_keeps_its_inputs_until_the_merged_block_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, expired) = write_small_blocks(dir.path()).await;
    let (store, querier, _) = store_and_querier_merging_everything(dir.path()).await;
    let inputs: Vec<String> = querier
        .block_metas()
        .into_iter()
        .filter(|m| m.start_unix_nano > 0 && m.end_unix_nano > now_nanos() - 3_600_000_000_000)
        .map(|m| m.block_id)
        .collect();
    assert_eq!(inputs.len(), usize::from(BLOCKS));
    store.compact_and_expire().await.unwrap();
    let merged = store.block_metas().remove(0);
    let mut sources = merged.compacted_from.clone();
    sources.sort();
    let mut sorted_inputs = inputs.clone();
    sorted_inputs.sort();
    assert_eq!(sources, sorted_inputs, "the merged block names its sources");

    let meta = dir
        .path()
        .join("blocks")
        .join(&merged.tenant)
        .join(&merged.block_id)
        .join("meta.json");
    let hidden = meta.with_file_name("meta.json.hidden");
    std::fs::rename(&meta, &hidden).unwrap();
    querier.refresh_blocks().await.unwrap();
    let mut kept: Vec<String> = querier
        .block_metas()
        .into_iter()
        .map(|m| m.block_id)
        .collect();
    kept.sort();
    assert_eq!(
        kept, sorted_inputs,
        "the inputs are kept (the expired block is forgotten: past retention)"
    );

    std::fs::rename(&hidden, &meta).unwrap();
    querier.refresh_blocks().await.unwrap();
    let listed: Vec<String> = querier
        .block_metas()
        .into_iter()
        .map(|m| m.block_id)
        .collect();
    assert_eq!(listed, vec![merged.block_id.clone()]);
    assert!(querier
        .trace_by_id(SINGLE_TENANT, &expired)
        .await
        .unwrap()
        .is_none());
    for (id, spans) in expected.iter() {
        let trace = querier.trace_by_id(SINGLE_TENANT, id).await.unwrap();
        assert_eq!(trace.map(|t| t.span_count()), Some(*spans));
    }
}
