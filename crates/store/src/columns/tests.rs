use std::collections::BTreeMap;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use threadline_otlp::TraceData;
use threadline_traceql::metrics::{Evaluator, RangeRequest};

use super::*;
use crate::model::to_model;

const S: u64 = 1_000_000_000;

/// Traces over an hour from 1000 s: several resources each (one of them without
/// `service.name`), every kind and status, durations from microseconds to seconds, and enough
/// bytes for several pages (row groups).
fn traces() -> BTreeMap<[u8; 16], TraceData> {
    traces_from(1000 * S, 6000)
}

fn traces_from(base: u64, count: u32) -> BTreeMap<[u8; 16], TraceData> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let services = ["frontend", "payments", "checkout", ""];
    let mut out = BTreeMap::new();
    for t in 0..count {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&next().to_le_bytes());
        trace_id[8..12].copy_from_slice(&t.to_le_bytes());
        let start = base + next() % (3600 * S);
        let resource_spans = (0..1 + next() % 3)
            .map(|r| {
                let service = services[((next() + r) % 4) as usize];
                let mut attributes = vec![kv("k8s.pod.name", &format!("pod-{}", next() % 50))];
                if !service.is_empty() {
                    attributes.push(kv("service.name", service));
                }
                ResourceSpans {
                    resource: Some(Resource {
                        attributes,
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: (0..1 + next() % 4)
                            .map(|_| Span {
                                trace_id: trace_id.to_vec(),
                                span_id: next().to_le_bytes().to_vec(),
                                name: ["GET /", "POST /pay", "SELECT"][(next() % 3) as usize]
                                    .into(),
                                kind: (next() % 7) as i32,
                                start_time_unix_nano: start + next() % S,
                                end_time_unix_nano: start + S + next() % (3 * S),
                                attributes: vec![kv("http.route", &format!("/r/{}", next() % 997))],
                                status: Some(Status {
                                    code: (next() % 3) as i32,
                                    message: String::new(),
                                }),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }
            })
            .collect();
        let request = ExportTraceServiceRequest { resource_spans };
        out.insert(trace_id, TraceData::from_request(&request));
    }
    out
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

#[test]
fn a_block_s_columns_hold_every_span_as_the_pages_do() {
    let traces = traces();
    let built = crate::block::build("b".into(), "t", traces.clone(), 0).expect("block builds");
    let bytes = built.columns.expect("the block has columns");
    assert_eq!(built.meta.columns_bytes, bytes.len() as u64);
    let file = ColumnFile::open(Bytes::from(bytes)).expect("columns open");
    assert_eq!(
        file.row_groups(),
        built.index.pages.len(),
        "one row group per page"
    );
    assert!(file.row_groups() > 1, "the test spans several pages");
    let mut read = Vec::new();
    let mut trace_count = 0;
    for group in 0..file.row_groups() {
        let part = file
            .spans(group, |row| {
                built.index.rows.get(row as usize).map(|r| r.trace_id)
            })
            .expect("row group reads");
        trace_count += part.traces;
        read.extend(part.spans.spans);
    }
    assert_eq!(trace_count, traces.len() as u64);
    let full: Vec<_> = traces
        .iter()
        .flat_map(|(id, data)| to_model(*id, data).spans)
        .collect();
    assert_eq!(read.len(), full.len());
    {
        for (got, want) in read.iter().zip(&full) {
            assert_eq!(got.trace_id, want.trace_id);
            assert_eq!(got.name, want.name);
            assert_eq!(got.kind, want.kind);
            assert_eq!(got.status, want.status);
            assert_eq!(got.start_unix_nano, want.start_unix_nano);
            assert_eq!(got.end_unix_nano, want.end_unix_nano);
            let service = |s: &threadline_traceql::model::Span| {
                s.resource_attributes
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            };
            assert_eq!(service(got), service(want));
        }
    }
}

#[test]
fn span_local_queries_give_from_columns_what_they_give_from_whole_traces() {
    let traces = traces();
    let built = crate::block::build("b".into(), "t", traces.clone(), 0).expect("block builds");
    let file = ColumnFile::open(Bytes::from(built.columns.expect("columns"))).expect("opens");
    let range = RangeRequest {
        start_unix_nano: 1000 * S,
        end_unix_nano: 1000 * S + 3600 * S,
        step_nanos: 60 * S,
        exemplars: 0,
        instant: false,
    };
    for text in [
        "{ } | rate() by (resource.service.name)",
        "{ kind = server } | quantile_over_time(duration, .5, .99) by (resource.service.name)",
        "{ status = error } | count_over_time() by (name)",
        "{ duration > 2ms && name != \"GET /\" } | histogram_over_time(duration)",
        "{ resource.service.name = \"payments\" } | avg_over_time(duration)",
    ] {
        let query = threadline_traceql::parse(text).expect("parses");
        assert!(answers(&query), "{text} is span-local");
        let mut whole = Evaluator::new(&query, &range).expect("evaluator");
        for (id, data) in &traces {
            whole.observe(&to_model(*id, data));
        }
        let mut columns = Evaluator::new(&query, &range).expect("evaluator");
        for group in 0..file.row_groups() {
            let part = file
                .spans(group, |row| {
                    built.index.rows.get(row as usize).map(|r| r.trace_id)
                })
                .expect("row group reads");
            columns.observe(&part.spans);
        }
        assert!(whole.spans_observed > 0, "{text} counts spans");
        assert_eq!(columns.spans_observed, whole.spans_observed, "{text}");
        let order = |s: &threadline_traceql::metrics::TimeSeries| format!("{:?}", s.labels);
        let mut a = columns.finish();
        let mut b = whole.finish();
        a.sort_by_key(order);
        b.sort_by_key(order);
        assert_eq!(
            a.iter()
                .map(|s| (&s.labels, &s.samples))
                .collect::<Vec<_>>(),
            b.iter()
                .map(|s| (&s.labels, &s.samples))
                .collect::<Vec<_>>(),
            "{text}"
        );
    }
}

#[test]
fn only_span_local_queries_over_columns_are_answered_from_them() {
    for (text, answered) in [
        ("{ } | rate()", true),
        ("{ trace:id != \"y\" } | count_over_time()", true),
        ("{ span:id != \"x\" } | count_over_time()", false),
        ("({ } | rate()) / ({ status = error } | rate())", true),
        ("{ } | rate() by (resource.service.name) | topk(3)", true),
        ("{ span.http.route = \"/\" } | rate()", false),
        ("{ } | rate() by (span.http.route)", false),
        ("{ .service.name = \"a\" } | rate()", false),
        ("{ nestedSetParent < 0 } | rate()", false),
        ("{ rootServiceName = \"a\" } | rate()", false),
        ("{ kind = server } >> { status = error } | rate()", false),
        ("{ } | compare({ status = error })", false),
        ("{ } | quantile_over_time(span.size, .9)", false),
        ("{ } | count() > 2 | rate()", false),
        ("{ status = error }", false),
    ] {
        let query = threadline_traceql::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(answers(&query), answered, "{text}");
    }
}

/// Through the store: blocks with columns, a block without (written before columns), and the
/// head, in one metrics query over HTTP's code path, against every trace evaluated whole.
#[tokio::test]
async fn the_store_answers_span_local_metrics_from_columns_pages_and_head_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let base = (now - 2 * 3600 * S) / S * S;
    let all = traces_from(base, 4500);
    let parts: Vec<Vec<(&[u8; 16], &TraceData)>> = {
        let list: Vec<_> = all.iter().collect();
        list.chunks(1500).map(|c| c.to_vec()).collect()
    };
    let tenant = crate::SINGLE_TENANT;
    let store = crate::Store::open(crate::tests::config(dir.path(), ""))
        .await
        .expect("store opens");
    for (i, part) in parts.iter().enumerate() {
        for (_, data) in part {
            store.append(tenant, data).await.expect("append");
        }
        if i < 2 {
            store.cut().await.expect("cut");
        }
    }
    let metas = store.block_metas();
    assert_eq!(metas.len(), 2);
    assert!(metas.iter().all(|m| m.columns_bytes > 0));

    let queries = [
        "{ } | rate() by (resource.service.name)",
        "{ kind = server } | quantile_over_time(duration, .99) by (resource.service.name)",
        "{ status = error } | count_over_time() by (name)",
    ];
    let params = |q: &str| crate::api_metrics::MetricsParams {
        q: Some(q.to_string()),
        start: Some((base / S).to_string()),
        end: Some((base / S + 3 * 3600).to_string()),
        step: Some("60".into()),
        ..Default::default()
    };
    let run = |store: std::sync::Arc<crate::Store>, q: &'static str| {
        let params = params(q);
        async move {
            let (mut series, figures) = crate::api_metrics::run(
                &store,
                &params,
                &axum::http::HeaderMap::new(),
                false,
                &|_, _| {},
            )
            .await
            .unwrap_or_else(|_| panic!("{q} runs"));
            series.sort_by_key(|s| format!("{:?}", s.labels));
            (series, figures.inspected_spans)
        }
    };
    let expected = |q: &str| {
        let query = threadline_traceql::parse(q).expect("parses");
        let range = RangeRequest {
            start_unix_nano: base,
            end_unix_nano: base + 3 * 3600 * S,
            step_nanos: 60 * S,
            exemplars: 100,
            instant: false,
        };
        let mut whole = Evaluator::new(&query, &range).expect("evaluator");
        for (id, data) in &all {
            whole.observe(&to_model(*id, data));
        }
        let spans = whole.spans_observed;
        let mut series = whole.finish();
        series.sort_by_key(|s| format!("{:?}", s.labels));
        (series, spans)
    };
    let samples = |series: &[threadline_traceql::metrics::TimeSeries]| {
        series
            .iter()
            .map(|s| (s.labels.clone(), s.samples.clone()))
            .collect::<Vec<_>>()
    };
    for q in queries {
        let (got, spans) = run(store.clone(), q).await;
        let (want, want_spans) = expected(q);
        assert!(want_spans > 0);
        assert_eq!(spans, want_spans, "{q}: spans counted");
        assert_eq!(samples(&got), samples(&want), "{q}");
    }

    // The first block as one written before columns: its meta names none.
    store.flush_and_close().await.expect("closes");
    drop(store);
    let old = metas
        .iter()
        .find(|m| m.start_unix_nano == metas.iter().map(|m| m.start_unix_nano).min().unwrap_or(0))
        .expect("a block");
    let block_dir = dir.path().join("blocks").join(tenant).join(&old.block_id);
    let mut meta = old.clone();
    meta.columns_bytes = 0;
    std::fs::write(
        block_dir.join("meta.json"),
        serde_json::to_vec(&meta).expect("json"),
    )
    .expect("meta written");
    std::fs::remove_file(block_dir.join(OBJECT)).expect("columns removed");
    let store = crate::Store::open(crate::tests::config(dir.path(), ""))
        .await
        .expect("store opens again");
    assert_eq!(
        store
            .block_metas()
            .iter()
            .filter(|m| m.columns_bytes == 0)
            .count(),
        1,
        "the old block alone has no columns (the head was written with them at close)"
    );
    for q in queries {
        let (got, spans) = run(store.clone(), q).await;
        let (want, want_spans) = expected(q);
        assert_eq!(spans, want_spans, "{q}: spans counted");
        assert_eq!(samples(&got), samples(&want), "{q}");
    }
    store.flush_and_close().await.expect("closes");
}
