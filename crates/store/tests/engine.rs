//! The storage engine through its public API, on real files (temporary directories) and on an
//! in-memory object store: streaming compaction, the memory bound on the head, failed cuts,
//! and the one-pass decoding into the TraceQL model.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::ObjectStore;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use threadline_loadgen::{PoolOptions, RequestPool, SPANS_PER_TRACE};
use threadline_otlp::TraceData;
use threadline_store::block::BlockIndex;
use threadline_store::model::to_model;
use threadline_store::{Store, StoreConfig, SINGLE_TENANT};
use threadline_traceql::model::{SpanKind, StatusCode, Value};

/// A store in `dir` that cuts and compacts only when told (`extra` adds YAML keys).
fn config(dir: &Path, extra: &str) -> StoreConfig {
    let yaml = format!(
        "storage:\n  trace:\n    backend: local\n    wal: {{path: {}}}\n    local: {{path: {}}}\n{extra}",
        dir.join("wal").display(),
        dir.join("blocks").display()
    );
    let yaml = if extra.contains("ingester") {
        yaml
    } else {
        format!("{yaml}ingester: {{max_block_duration: 1h}}\n")
    };
    let yaml = format!("{yaml}compactor: {{compaction: {{compaction_cycle: 1h}}}}\n");
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

/// The load generator's requests (10-span traces, ~9 attributes per span).
fn loadgen(traces_per_request: usize) -> RequestPool {
    RequestPool::generate(&PoolOptions {
        traces_per_request,
        total_traces: None,
        templates: 4,
        error_ratio: 0.1,
        slow_ratio: 0.1,
        seed: Some(11),
    })
    .unwrap()
}

fn rendered(pool: &RequestPool, sequence: u64) -> TraceData {
    TraceData::from_request_bytes(pool.render(sequence, now_nanos()).body)
        .unwrap()
        .0
}

fn trace_ids(data: &TraceData) -> Vec<[u8; 16]> {
    data.split_by_trace()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Span `number` (1-based) of trace `trace`, whose root is span 1.
fn span(trace: u8, number: u8) -> Span {
    let end = now_nanos();
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![trace, number, 0, 0, 0, 0, 0, 1],
        parent_span_id: if number == 1 {
            vec![]
        } else {
            vec![trace, 1, 0, 0, 0, 0, 0, 1]
        },
        trace_state: "vendor=x".into(),
        flags: 0x101,
        name: format!("step {number}"),
        kind: 3,
        start_time_unix_nano: end - 5_000_000,
        end_time_unix_nano: end - u64::from(number),
        attributes: vec![
            kv("step", any_value::Value::IntValue(i64::from(number))),
            kv("ok", any_value::Value::BoolValue(number != 3)),
        ],
        status: Some(Status {
            code: i32::from(number == 3) * 2,
            message: if number == 3 {
                "failed".into()
            } else {
                "".into()
            },
        }),
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("checkout".into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "test".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The spans of `data`, by span id.
fn spans_of(data: &TraceData) -> BTreeMap<Vec<u8>, Span> {
    data.to_request()
        .unwrap()
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .map(|s| (s.span_id.clone(), s))
        .collect()
}

fn block_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(dir.join("blocks").join(SINGLE_TENANT)) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn compaction_streams_multi_page_blocks_and_merges_traces_split_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), "")).await.unwrap();
    let pool = loadgen(50);
    let mut generated = Vec::new();
    // Trace 7 arrives in three parts, one per block; the third repeats span 2 (a retry).
    let parts = [
        vec![span(7, 1), span(7, 2)],
        vec![span(7, 3), span(7, 4)],
        vec![span(7, 2)],
    ];
    for (cut, part) in parts.iter().enumerate() {
        // About 3 MiB of spans per block: several 1 MiB pages.
        for sequence in 0..6 {
            let data = rendered(&pool, cut as u64 * 6 + sequence);
            generated.extend(trace_ids(&data));
            store.append(SINGLE_TENANT, &data).await.unwrap();
        }
        let split = TraceData::from_request(&request(part.clone()));
        store.append(SINGLE_TENANT, &split).await.unwrap();
        assert_eq!(store.cut().await.unwrap().len(), 1);
    }
    assert_eq!(block_dirs(dir.path()).len(), 3);

    store.compact_and_expire().await.unwrap();

    // The inputs stay, marked compacted, for compacted_block_retention (1h by default).
    let remaining: Vec<_> = block_dirs(dir.path())
        .into_iter()
        .filter(|d| d.join("meta.json").exists())
        .collect();
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    let metas = store.block_metas();
    assert_eq!(metas.len(), 1);
    assert_eq!(metas[0].compaction_level, 1);
    assert_eq!(metas[0].traces, generated.len() as u64 + 1);
    assert_eq!(
        metas[0].spans,
        (generated.len() * SPANS_PER_TRACE) as u64 + 4
    );
    let index = BlockIndex::decode(&std::fs::read(remaining[0].join("index")).unwrap()).unwrap();
    assert!(index.pages.len() > 3, "{} pages", index.pages.len());
    let data_len = std::fs::metadata(remaining[0].join("data")).unwrap().len();
    let columns_len = std::fs::metadata(remaining[0].join("columns"))
        .unwrap()
        .len();
    let values_len = std::fs::metadata(remaining[0].join("values"))
        .unwrap()
        .len();
    assert_eq!(metas[0].columns_bytes, columns_len);
    assert_eq!(metas[0].values_bytes, values_len);
    assert_eq!(
        metas[0].size_bytes,
        data_len + index.encode().len() as u64 + columns_len + values_len,
        "size_bytes counts data, index, columns and values"
    );

    for trace_id in &generated {
        let trace = store.trace_by_id(SINGLE_TENANT, trace_id).await.unwrap();
        assert_eq!(trace.map(|t| t.span_count()), Some(SPANS_PER_TRACE));
    }
    let split = store
        .trace_by_id(SINGLE_TENANT, &[7; 16])
        .await
        .unwrap()
        .unwrap();
    let expected: BTreeMap<Vec<u8>, Span> = (1..=4)
        .map(|n| span(7, n))
        .map(|s| (s.span_id.clone(), s))
        .collect();
    let stored = spans_of(&split);
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (id, span) in stored {
        let want = &expected[&id];
        // Timestamps come from the clock at construction: compare everything else exactly.
        assert_eq!(
            Span {
                start_time_unix_nano: 0,
                end_time_unix_nano: 0,
                ..span
            },
            Span {
                start_time_unix_nano: 0,
                end_time_unix_nano: 0,
                ..want.clone()
            }
        );
    }
    store.flush_and_close().await.unwrap();
}

#[tokio::test]
async fn an_append_that_finds_the_head_full_cuts_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let max = 64 * 1024;
    let store = Store::open(config(
        dir.path(),
        &format!("ingester: {{max_block_duration: 1h, max_block_bytes: {max}}}\n"),
    ))
    .await
    .unwrap();
    let pool = loadgen(3);
    let mut generated = Vec::new();
    let mut appended = 0;
    for sequence in 0..60 {
        let data = rendered(&pool, sequence);
        generated.extend(trace_ids(&data));
        appended += data.encoded_len() as u64;
        store.append(SINGLE_TENANT, &data).await.unwrap();
        // Never more than the limit plus the request that crossed it.
        assert!(
            store.head_bytes() < max + data.encoded_len() as u64,
            "head {} after append {sequence}",
            store.head_bytes()
        );
    }
    let blocks = store.block_metas().len() as u64;
    assert!(
        blocks >= appended / (2 * max),
        "{blocks} blocks for {appended} bytes"
    );
    for trace_id in &generated {
        let trace = store.trace_by_id(SINGLE_TENANT, trace_id).await.unwrap();
        assert_eq!(trace.map(|t| t.span_count()), Some(SPANS_PER_TRACE));
    }
    store.flush_and_close().await.unwrap();
}

#[test]
fn a_failed_cut_keeps_the_spans_queryable_and_durable_until_a_cut_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(cfg.clone()).await.unwrap();
        store
            .append(
                SINGLE_TENANT,
                &TraceData::from_request(&request(vec![span(1, 1)])),
            )
            .await
            .unwrap();
        // A file where the tenant's directory must go: writing the block fails.
        let tenant_dir = dir.path().join("blocks").join(SINGLE_TENANT);
        std::fs::write(&tenant_dir, b"in the way").unwrap();
        assert!(store.cut().await.is_err());
        let trace = store.trace_by_id(SINGLE_TENANT, &[1; 16]).await.unwrap();
        assert_eq!(trace.map(|t| t.span_count()), Some(1), "back in the head");

        std::fs::remove_file(&tenant_dir).unwrap();
        store
            .append(
                SINGLE_TENANT,
                &TraceData::from_request(&request(vec![span(2, 1)])),
            )
            .await
            .unwrap();
        let written = store.cut().await.unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].traces, 2, "the failed head is in the next block");
    });
    // Dropped without closing: whatever is acknowledged must come back from blocks or the WAL.
    drop(runtime);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(cfg).await.unwrap();
        for trace in [1u8, 2] {
            let found = store
                .trace_by_id(SINGLE_TENANT, &[trace; 16])
                .await
                .unwrap();
            assert_eq!(found.map(|t| t.span_count()), Some(1), "trace {trace}");
        }
    });
}

#[tokio::test]
async fn blocks_live_in_any_object_store() {
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = Store::open_with_object_store(config(dir.path(), ""), objects.clone())
        .await
        .unwrap();
    let sent = TraceData::from_request(&request(vec![span(3, 1), span(3, 2)]));
    store.append("team-a", &sent).await.unwrap();
    store
        .append(
            "team-b",
            &TraceData::from_request(&request(vec![span(4, 1)])),
        )
        .await
        .unwrap();
    assert_eq!(store.tenants(), ["team-a", "team-b"]);
    store.flush_and_close().await.unwrap();

    let mut names: Vec<String> = futures::TryStreamExt::try_collect::<Vec<_>>(objects.list(None))
        .await
        .unwrap()
        .into_iter()
        .map(|meta| {
            let parts: Vec<String> = meta
                .location
                .parts()
                .map(|p| p.as_ref().to_string())
                .collect();
            format!("{}/{}", parts[0], parts[2])
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "team-a/columns",
            "team-a/data",
            "team-a/index",
            "team-a/meta.json",
            "team-a/values",
            "team-b/columns",
            "team-b/data",
            "team-b/index",
            "team-b/meta.json",
            "team-b/values"
        ]
    );
    assert!(
        std::fs::read_dir(dir.path().join("blocks"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "nothing on the local backend"
    );

    // A second store on the same bucket (the WAL is empty after the clean close).
    let reader = Store::open_with_object_store(config(dir.path(), ""), objects)
        .await
        .unwrap();
    let read = reader
        .trace_by_id("team-a", &[3; 16])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(spans_of(&read), spans_of(&sent));
    assert!(reader
        .trace_by_id("team-b", &[3; 16])
        .await
        .unwrap()
        .is_none());
    assert_eq!(reader.tenants(), ["team-a", "team-b"]);
}

/// A request whose only span is encoded as `first` then `second`: one message, merged.
fn merged_span(first: &Span, second: &Span) -> TraceData {
    let mut span = first.encode_to_vec();
    span.extend(second.encode_to_vec());
    let mut scope = Vec::new();
    threadline_otlp::wire::encode_length_delimited(2, &span, &mut scope);
    let mut resource = Vec::new();
    threadline_otlp::wire::encode_length_delimited(2, &scope, &mut resource);
    let mut body = Vec::new();
    threadline_otlp::wire::encode_length_delimited(1, &resource, &mut body);
    TraceData::from_request_bytes(body.into()).unwrap().0
}

/// `to_model` reads each span in one pass; the views read field by field. Both must agree,
/// including protobuf's "last one wins" when a span's fields repeat (merged messages).
#[test]
fn the_model_has_every_field_the_views_read() {
    let pool = loadgen(5);
    let mut cases: Vec<TraceData> = (0..4).map(|s| rendered(&pool, s)).collect();
    let mut first = span(9, 1);
    first.status = Some(Status {
        code: 2,
        message: "first".into(),
    });
    let mut second = span(9, 1);
    second.name = "renamed".into();
    second.kind = 5;
    second.status = Some(Status {
        code: 1,
        message: "second".into(),
    });
    let merged = merged_span(&first, &second);
    cases.push(merged.clone());

    let mut checked = 0;
    for data in cases {
        for (trace_id, trace) in data.split_by_trace() {
            let model = to_model(trace_id, &trace);
            let mut index = 0;
            trace.for_each_span(|resource, _scope, view| {
                let span = &model.spans[index];
                index += 1;
                assert_eq!(span.trace_id, trace_id);
                assert_eq!(span.span_id, view.span_id());
                assert_eq!(span.parent_span_id, view.parent_span_id());
                assert_eq!(span.name, view.name());
                assert_eq!(span.kind as i32, view.kind());
                assert_eq!(span.status as i32, view.status_code());
                assert_eq!(span.status_message, view.status_message());
                assert_eq!(span.start_unix_nano, view.start_time_unix_nano());
                assert_eq!(span.end_unix_nano, view.end_time_unix_nano());
                let keys = |attributes: &[(String, Value)]| -> Vec<String> {
                    attributes.iter().map(|(k, _)| k.clone()).collect()
                };
                let expected: Vec<String> = view.attributes().map(|(k, _)| k.to_string()).collect();
                assert_eq!(keys(&span.attributes), expected);
                let expected: Vec<String> =
                    resource.attributes().map(|(k, _)| k.to_string()).collect();
                assert_eq!(keys(&span.resource_attributes), expected);
                checked += 1;
            });
            assert_eq!(index, model.spans.len());
        }
    }
    assert_eq!(checked, 4 * 5 * SPANS_PER_TRACE + 1);

    // The merged span spelled out: the second message's scalars win, attributes of both count.
    let model = to_model([9; 16], &merged);
    let span = &model.spans[0];
    assert_eq!(span.name, "renamed");
    assert_eq!(span.kind, SpanKind::Consumer);
    assert_eq!(span.status, StatusCode::Ok);
    assert_eq!(span.status_message, "second");
    assert_eq!(
        span.attributes,
        [
            ("step".to_string(), Value::Int(1)),
            ("ok".to_string(), Value::Bool(true)),
            ("step".to_string(), Value::Int(1)),
            ("ok".to_string(), Value::Bool(true)),
        ]
    );
    assert_eq!(
        span.resource_attributes,
        [] as [(String, Value); 0],
        "the merged request has no resource"
    );
}

#[test]
fn fsync_interval_acknowledges_written_records_that_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let yaml = format!(
        "storage:\n  trace:\n    backend: local\n    wal: {{path: {}, fsync: interval, fsync_interval: 50ms}}\n    local: {{path: {}}}\ningester: {{max_block_duration: 1h}}\n",
        dir.path().join("wal").display(),
        dir.path().join("blocks").display()
    );
    let interval: StoreConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    assert!(interval.validate().is_empty());
    assert_eq!(
        interval.storage.trace.wal.fsync_policy(),
        threadline_store::wal::Fsync::Interval(std::time::Duration::from_millis(50))
    );
    {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = Store::open(interval).await.unwrap();
            for trace in 1..=5u8 {
                let data = TraceData::from_request(&request(vec![span(trace, 1)]));
                store.append(SINGLE_TENANT, &data).await.unwrap();
            }
        });
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(cfg).await.unwrap();
        for trace in 1..=5u8 {
            let found = store
                .trace_by_id(SINGLE_TENANT, &[trace; 16])
                .await
                .unwrap();
            assert_eq!(found.map(|t| t.span_count()), Some(1), "trace {trace}");
        }
    });
}

#[test]
fn wal_settings_are_validated_by_name() {
    let errors = |wal: &str| -> String {
        let yaml = format!(
            "storage: {{trace: {{backend: local, local: {{path: /tmp/b}}, wal: {{path: /tmp/w, {wal}}}}}}}"
        );
        let config: StoreConfig = serde_yaml_ng::from_str(&yaml).unwrap();
        config
            .validate()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let text = errors("fsync: sometimes");
    assert!(text.contains("storage::trace::wal::fsync"), "{text}");
    assert!(text.contains("always, interval, never"), "{text}");
    let text = errors("fsync: interval, fsync_interval: 0s");
    assert!(
        text.contains("storage::trace::wal::fsync_interval"),
        "{text}"
    );
    assert_eq!(errors("fsync: interval"), "");
    assert_eq!(errors("fsync: never"), "");
}
