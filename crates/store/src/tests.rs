//! The store against real files in temporary directories.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use threadline_otlp::TraceData;

use crate::{SearchRequest, Store, StoreConfig};

/// A store config with its WAL and blocks under `dir` and no cut by age (tests cut when they
/// mean to), plus the YAML lines in `extra`. Shared by the crate's tests.
pub(crate) fn config(dir: &std::path::Path, extra: &str) -> StoreConfig {
    let yaml = format!(
        "storage:\n  trace:\n    backend: local\n    wal: {{path: {}}}\n    local: {{path: {}}}\ningester: {{max_block_duration: 1h}}\n{extra}",
        dir.join("wal").display(),
        dir.join("blocks").display()
    );
    let config: StoreConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    assert!(config.validate().is_empty());
    config
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A trace of `spans` spans using every OTLP field, ending `age` ago.
fn request(
    trace: u8,
    spans: u8,
    service: &str,
    age: Duration,
    error: bool,
) -> ExportTraceServiceRequest {
    let end = now_nanos() - age.as_nanos() as u64;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv(
                        "service.name",
                        any_value::Value::StringValue(service.into()),
                    ),
                    kv(
                        "k8s.pod.name",
                        any_value::Value::StringValue("pod-1".into()),
                    ),
                ],
                dropped_attributes_count: 1,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.test".into(),
                    version: "1.2.3".into(),
                    ..Default::default()
                }),
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: vec![trace; 16],
                        span_id: vec![trace, i + 1, 0, 0, 0, 0, 0, 1],
                        parent_span_id: if i == 0 {
                            vec![]
                        } else {
                            vec![trace, 1, 0, 0, 0, 0, 0, 1]
                        },
                        trace_state: "vendor=x".into(),
                        flags: 0x301,
                        name: format!("GET /api/{i}"),
                        kind: 2,
                        start_time_unix_nano: end - 3_000_000_000,
                        end_time_unix_nano: end - u64::from(i) * 1_000_000,
                        attributes: vec![
                            kv(
                                "http.status_code",
                                any_value::Value::IntValue(200 + i64::from(i)),
                            ),
                            kv("ratio", any_value::Value::DoubleValue(0.25)),
                            kv("cached", any_value::Value::BoolValue(true)),
                            kv("raw", any_value::Value::BytesValue(vec![1, 2, 3])),
                            kv(
                                "list",
                                any_value::Value::ArrayValue(ArrayValue {
                                    values: vec![AnyValue {
                                        value: Some(any_value::Value::StringValue("a".into())),
                                    }],
                                }),
                            ),
                        ],
                        dropped_attributes_count: 2,
                        events: vec![Event {
                            time_unix_nano: end - 1_000,
                            name: "exception".into(),
                            attributes: vec![kv(
                                "exception.type",
                                any_value::Value::StringValue("E".into()),
                            )],
                            dropped_attributes_count: 0,
                        }],
                        links: vec![Link {
                            trace_id: vec![9; 16],
                            span_id: vec![9; 8],
                            trace_state: "a=b".into(),
                            ..Default::default()
                        }],
                        status: Some(Status {
                            code: if error && i == 1 { 2 } else { 0 },
                            message: if error && i == 1 {
                                "boom".into()
                            } else {
                                String::new()
                            },
                        }),
                        ..Default::default()
                    })
                    .collect(),
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn data(request: &ExportTraceServiceRequest) -> TraceData {
    TraceData::from_request(request)
}

#[tokio::test]
async fn spans_read_back_field_for_field_from_the_head_and_from_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), "")).await.unwrap();
    let sent = request(1, 3, "api", Duration::ZERO, true);
    store.append("single-tenant", &data(&sent)).await.unwrap();

    let from_head = store
        .trace_by_id("single-tenant", &[1; 16])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from_head.to_request().unwrap(), sent);

    let written = store.cut().await.unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].spans, 3);
    let from_block = store
        .trace_by_id("single-tenant", &[1; 16])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from_block.to_request().unwrap(), sent);
    assert!(store
        .trace_by_id("single-tenant", &[2; 16])
        .await
        .unwrap()
        .is_none());
}

#[test]
fn acknowledged_spans_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    // A runtime dropped with the store in it: no flush, no cut, like kill -9.
    {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = Store::open(cfg.clone()).await.unwrap();
            for t in 1..=20 {
                store
                    .append(
                        "single-tenant",
                        &data(&request(t, 2, "api", Duration::ZERO, false)),
                    )
                    .await
                    .unwrap();
            }
        });
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(cfg).await.unwrap();
        for t in 1..=20u8 {
            let trace = store.trace_by_id("single-tenant", &[t; 16]).await.unwrap();
            assert_eq!(trace.map(|d| d.span_count()), Some(2), "trace {t}");
        }
        // Written to a block and replayed again: no span twice.
        store.cut().await.unwrap();
        let trace = store
            .trace_by_id("single-tenant", &[1; 16])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(trace.span_count(), 2);
    });
}

#[test]
fn a_torn_wal_tail_is_cut_off_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = Store::open(cfg.clone()).await.unwrap();
            store
                .append(
                    "single-tenant",
                    &data(&request(1, 2, "api", Duration::ZERO, false)),
                )
                .await
                .unwrap();
        });
    }
    let segment = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let good_len = std::fs::metadata(&segment).unwrap().len();
    // Half a record: a length that promises more than there is.
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    std::io::Write::write_all(&mut torn, &[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(torn);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(cfg).await.unwrap();
        assert!(store
            .trace_by_id("single-tenant", &[1; 16])
            .await
            .unwrap()
            .is_some());
    });
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), good_len);
}

fn block_dirs(dir: &std::path::Path, tenant: &str) -> Vec<String> {
    match std::fs::read_dir(dir.join("blocks").join(tenant)) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn compaction_merges_blocks_and_keeps_every_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(
        dir.path(),
        "compactor: {compaction: {compaction_cycle: 1h}}",
    ))
    .await
    .unwrap();
    for round in 0..3u8 {
        for t in 0..5u8 {
            let trace = round * 10 + t + 1;
            store
                .append(
                    "single-tenant",
                    &data(&request(trace, 2, "api", Duration::ZERO, false)),
                )
                .await
                .unwrap();
        }
        // A trace continuing across blocks.
        let mut late = request(100, 1, "api", Duration::ZERO, false);
        late.resource_spans[0].scope_spans[0].spans[0].span_id =
            vec![100, round + 1, 0, 0, 0, 0, 0, 2];
        store.append("single-tenant", &data(&late)).await.unwrap();
        store.cut().await.unwrap();
    }
    assert_eq!(block_dirs(dir.path(), "single-tenant").len(), 3);
    store.compact_and_expire().await.unwrap();
    // The inputs stay for compacted_block_retention (1h by default), marked compacted.
    let dirs = block_dirs(dir.path(), "single-tenant");
    assert_eq!(dirs.len(), 4, "{dirs:?}");
    let holding = |file: &str| {
        dirs.iter()
            .filter(|d| {
                dir.path()
                    .join("blocks/single-tenant")
                    .join(d)
                    .join(file)
                    .exists()
            })
            .count()
    };
    assert_eq!(
        (holding("meta.json"), holding("meta.compacted.json")),
        (1, 3)
    );
    assert_eq!(holding("data"), 4, "compacted blocks stay readable");
    let metas = store.block_metas();
    assert_eq!(metas.len(), 1);
    assert_eq!(metas[0].compaction_level, 1);
    assert_eq!(metas[0].traces, 16);
    let merged = store
        .trace_by_id("single-tenant", &[100; 16])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(merged.span_count(), 3, "the parts of a trace are merged");
    for trace in [1u8, 15, 25] {
        assert!(store
            .trace_by_id("single-tenant", &[trace; 16])
            .await
            .unwrap()
            .is_some());
    }
}

#[tokio::test]
async fn retention_deletes_blocks_past_their_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(
        dir.path(),
        "compactor: {compaction: {block_retention: 1h, compaction_cycle: 1h, \
         compacted_block_retention: 0s}}",
    ))
    .await
    .unwrap();
    store
        .append(
            "single-tenant",
            &data(&request(1, 2, "api", Duration::from_secs(2 * 3600), false)),
        )
        .await
        .unwrap();
    store.cut().await.unwrap();
    store
        .append(
            "single-tenant",
            &data(&request(2, 2, "api", Duration::ZERO, false)),
        )
        .await
        .unwrap();
    store.cut().await.unwrap();
    assert_eq!(block_dirs(dir.path(), "single-tenant").len(), 2);
    // Retention runs first; the one block left has nothing to merge with.
    store.compact_and_expire().await.unwrap();
    assert!(
        store
            .trace_by_id("single-tenant", &[1; 16])
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert!(store
        .trace_by_id("single-tenant", &[2; 16])
        .await
        .unwrap()
        .is_some());
    let remaining = block_dirs(dir.path(), "single-tenant");
    assert_eq!(remaining.len(), 1, "{remaining:?}");
}

#[tokio::test]
async fn tenants_never_see_each_others_traces() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), "multitenancy_enabled: true"))
        .await
        .unwrap();
    store
        .append("team-a", &data(&request(1, 2, "a", Duration::ZERO, true)))
        .await
        .unwrap();
    store
        .append("team-b", &data(&request(2, 2, "b", Duration::ZERO, true)))
        .await
        .unwrap();
    for cut in [false, true] {
        if cut {
            store.cut().await.unwrap();
        }
        assert!(store
            .trace_by_id("team-a", &[1; 16])
            .await
            .unwrap()
            .is_some());
        assert!(store
            .trace_by_id("team-b", &[1; 16])
            .await
            .unwrap()
            .is_none());
        let everything = |_: &threadline_traceql::model::Trace| true;
        let (found, _) = store
            .search("team-b", &SearchRequest::default(), &everything)
            .await
            .unwrap();
        let ids: Vec<[u8; 16]> = found.iter().map(|f| f.trace_id).collect();
        assert_eq!(ids, vec![[2; 16]]);
    }
    assert_eq!(block_dirs(dir.path(), "team-a").len(), 1);
    assert_eq!(block_dirs(dir.path(), "team-b").len(), 1);
}

#[tokio::test]
async fn search_applies_bounds_and_the_matcher_across_head_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<Store> = Store::open(config(dir.path(), "")).await.unwrap();
    store
        .append(
            "single-tenant",
            &data(&request(1, 3, "api", Duration::ZERO, true)),
        )
        .await
        .unwrap();
    store.cut().await.unwrap();
    store
        .append(
            "single-tenant",
            &data(&request(2, 3, "db", Duration::ZERO, false)),
        )
        .await
        .unwrap();
    let query = threadline_traceql::parse("{ status = error }").unwrap();
    let matcher = |t: &threadline_traceql::model::Trace| query.evaluate(t).is_some();
    let request = SearchRequest {
        error_hint: true,
        ..Default::default()
    };
    let (found, stats) = store
        .search("single-tenant", &request, &matcher)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].trace_id, [1; 16]);
    assert_eq!(found[0].summary.root_service, "api");
    assert_eq!(
        stats.inspected_traces, 1,
        "the error hint skipped the other trace unread"
    );
    let long = SearchRequest {
        min_duration_nanos: Some(10_000_000_000),
        ..Default::default()
    };
    let everything = |_: &threadline_traceql::model::Trace| true;
    assert!(store
        .search("single-tenant", &long, &everything)
        .await
        .unwrap()
        .0
        .is_empty());
}

#[test]
fn backends_are_validated_naming_the_key_and_the_allowed_values() {
    let errors = |yaml: &str| -> String {
        let config: StoreConfig = serde_yaml_ng::from_str(yaml).unwrap();
        threadline_config::ConfigErrors(config.validate()).to_string()
    };
    let wal = "wal: {path: /tmp/wal}";
    let text = errors(&format!("storage: {{trace: {{backend: ftp, {wal}}}}}"));
    assert!(
        text.contains("storage::trace::backend") && text.contains("local, s3, gcs, azure"),
        "{text}"
    );
    let text = errors(&format!("storage: {{trace: {{backend: gcs, {wal}}}}}"));
    assert!(text.contains("storage::trace::gcs"), "{text}");
    let text = errors(&format!("storage: {{trace: {{backend: azure, {wal}}}}}"));
    assert!(text.contains("storage::trace::azure"), "{text}");
    let text = errors(&format!(
        "target: reader\nstorage: {{trace: {{backend: local, local: {{path: /tmp/b}}, {wal}, }}}}"
    ));
    assert!(
        text.contains("target") && text.contains("ingester, querier, compactor"),
        "{text}"
    );
    let text = errors("storage: {trace: {backend: local, local: {path: /tmp/b}, wal: {path: /tmp/w, fsync: sometimes}}}");
    assert!(text.contains("storage::trace::wal::fsync"), "{text}");
    let unknown: Result<StoreConfig, _> =
        serde_yaml_ng::from_str("storage: {trace: {backend: local, wal: {path: /w}, bogus: 1}}");
    assert!(unknown.unwrap_err().to_string().contains("bogus"));
}

/// A client that gives up while its append cuts the full head (a gRPC deadline drops the
/// append's future half-way) loses nothing acknowledged: the cut finishes in its own task.
#[tokio::test]
async fn an_append_dropped_while_it_cuts_the_head_loses_no_acknowledged_trace() {
    use futures::FutureExt;

    let dir = tempfile::tempdir().unwrap();
    let mut every_append_cuts = config(dir.path(), "");
    every_append_cuts.ingester.max_block_bytes = 1;
    let store = Store::open(every_append_cuts.clone()).await.unwrap();
    for trace in 1..=20u8 {
        let sent = data(&request(trace, 2, "api", Duration::ZERO, false));
        store.append("single-tenant", &sent).await.unwrap();
    }
    // Trace 20 is in the head. This append finds the head full and starts its cut; its client
    // gives up at the first wait (the future is polled once and dropped), unacknowledged.
    let abandoned = data(&request(21, 2, "api", Duration::ZERO, false));
    assert!(store
        .append("single-tenant", &abandoned)
        .now_or_never()
        .is_none());
    let sent = data(&request(22, 2, "api", Duration::ZERO, false));
    store.append("single-tenant", &sent).await.unwrap();
    store.flush_and_close().await.unwrap();
    drop(store);

    let reopened = Store::open(every_append_cuts).await.unwrap();
    for trace in (1..=20u8).chain([22]) {
        assert!(
            reopened
                .trace_by_id("single-tenant", &[trace; 16])
                .await
                .unwrap()
                .is_some(),
            "acknowledged trace {trace} was lost"
        );
    }
}

#[tokio::test]
async fn with_no_memory_for_index_rows_every_read_still_finds_what_the_blocks_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut sent = Vec::new();
    {
        let store = Store::open(config(dir.path(), "")).await.unwrap();
        for block in 0..4u8 {
            for n in 0..5u8 {
                let trace = 1 + block * 5 + n;
                let service = if trace % 2 == 0 { "api" } else { "db" };
                let request = request(trace, 2, service, Duration::ZERO, trace % 3 == 0);
                store
                    .append("single-tenant", &data(&request))
                    .await
                    .unwrap();
                sent.push((trace, request));
            }
            store.cut().await.unwrap();
        }
        assert!(
            store.index_cache_bytes() > 0,
            "blocks just written keep their rows"
        );
    }
    let mut no_cache = config(dir.path(), "");
    no_cache.storage.trace.index_cache_mib = 0;
    let store = Store::open(no_cache).await.unwrap();
    assert_eq!(store.blocks("single-tenant").len(), 4);
    for (trace, request) in &sent {
        let found = store
            .trace_by_id("single-tenant", &[*trace; 16])
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("trace {trace}"));
        assert_eq!(&found.to_request().unwrap(), request);
    }
    assert!(store
        .trace_by_id("single-tenant", &[99; 16])
        .await
        .unwrap()
        .is_none());
    let query = threadline_traceql::parse("{ status = error }").unwrap();
    let matcher = |t: &threadline_traceql::model::Trace| query.evaluate(t).is_some();
    let hinted = SearchRequest {
        service_hint: Some("api".into()),
        error_hint: true,
        limit: 100,
        ..Default::default()
    };
    let (found, _) = store
        .search("single-tenant", &hinted, &matcher)
        .await
        .unwrap();
    let mut ids: Vec<u8> = found.iter().map(|f| f.trace_id[0]).collect();
    ids.sort_unstable();
    // Errors are the multiples of 3; `api` the even traces.
    assert_eq!(ids, vec![6, 12, 18]);
    assert_eq!(store.index_cache_bytes(), 0, "nothing kept with no room");
}
