//! Tag endpoints over the whole range asked (blocks and head, every scope, `start`/`end`/`q`/
//! `limit`), searches that skip blocks from their index and say why, and trace lookups that
//! find a trace outside the range asked and never return a span twice. Real HTTP on
//! 127.0.0.1, real block files.

mod common;

use std::path::Path;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::{json, Value as Json};
use threadline_otlp::TraceData;
use threadline_store::{Store, StoreConfig, SINGLE_TENANT};

fn config(dir: &Path) -> StoreConfig {
    let yaml = format!(
        "storage:\n  trace:\n    backend: local\n    wal: {{path: {}}}\n    local: {{path: {}}}\n\
         ingester: {{max_block_duration: 1h}}\ncompactor: {{compaction: {{compaction_cycle: 1h}}}}\n",
        dir.join("wal").display(),
        dir.join("blocks").display()
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(s: &str) -> any_value::Value {
    any_value::Value::StringValue(s.into())
}

/// Whole seconds, an hour apart, well inside retention.
fn at(hours_ago: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    now - now % 60 - hours_ago * 3600
}

/// One trace of one span at `secs` (unix seconds, 1 ms long) with an attribute in every scope,
/// each key prefixed by `tag` (the service is `{tag}-svc`).
fn trace(id: u8, secs: u64, tag: &str) -> TraceData {
    let start = secs * 1_000_000_000;
    TraceData::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", text(&format!("{tag}-svc"))),
                    kv(&format!("{tag}.res"), text("r")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: format!("{tag}-lib"),
                    attributes: vec![kv(&format!("{tag}.lib"), text("i"))],
                    ..Default::default()
                }),
                spans: vec![Span {
                    trace_id: vec![id; 16],
                    span_id: vec![id; 8],
                    name: format!("{tag}-op"),
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + 1_000_000,
                    attributes: vec![
                        kv(
                            &format!("{tag}.span"),
                            any_value::Value::IntValue(id as i64),
                        ),
                        kv("shared", text(tag)),
                    ],
                    events: vec![Event {
                        name: format!("{tag}-event"),
                        time_unix_nano: start,
                        attributes: vec![kv(&format!("{tag}.event"), text("e"))],
                        ..Default::default()
                    }],
                    links: vec![Link {
                        trace_id: vec![9; 16],
                        span_id: vec![9; 8],
                        attributes: vec![kv(&format!("{tag}.link"), text("l"))],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// GET `path`: (status, headers, body).
async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let answer = common::get(address, path, None).await;
    (answer.status, answer.head, answer.body)
}

async fn json_of(address: std::net::SocketAddr, path: &str) -> Json {
    let (status, _, body) = get(address, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The v2 answer as scope → tags.
fn scopes(answer: &Json) -> Vec<(String, Vec<String>)> {
    answer["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let tags = s["tags"].as_array().unwrap();
            let tags = tags.iter().map(|t| t.as_str().unwrap().to_string());
            (s["name"].as_str().unwrap().to_string(), tags.collect())
        })
        .collect()
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

/// Three traces an hour apart: `old` and `mid` in two blocks, `new` in the head.
async fn three_hours() -> (
    tempfile::TempDir,
    Arc<Store>,
    std::net::SocketAddr,
    [u64; 3],
) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    let times = [at(3), at(2), at(1)];
    store
        .append(SINGLE_TENANT, &trace(1, times[0], "old"))
        .await
        .unwrap();
    store.cut().await.unwrap();
    store
        .append(SINGLE_TENANT, &trace(2, times[1], "mid"))
        .await
        .unwrap();
    store.cut().await.unwrap();
    store
        .append(SINGLE_TENANT, &trace(3, times[2], "new"))
        .await
        .unwrap();
    assert_eq!(store.block_metas().len(), 2);
    let api = common::serve(store.clone()).await;
    (dir, store, api, times)
}

#[tokio::test]
async fn tag_names_cover_every_scope_over_blocks_and_head_within_the_range() {
    let (_dir, _store, api, t) = three_hours().await;
    let all = json_of(api, "/api/v2/search/tags").await;
    let mut expected = vec![];
    for (scope, suffix) in [
        ("span", "span"),
        ("resource", "res"),
        ("event", "event"),
        ("link", "link"),
        ("instrumentation", "lib"),
    ] {
        let mut tags: Vec<String> = ["mid", "new", "old"]
            .iter()
            .map(|tag| format!("{tag}.{suffix}"))
            .collect();
        match scope {
            "span" => tags.push("shared".into()),
            "resource" => tags.push("service.name".into()),
            _ => {}
        }
        tags.sort();
        expected.push((scope.to_string(), tags));
    }
    let intrinsics = threadline_store::tags::INTRINSICS;
    expected.push(("intrinsic".into(), strings(intrinsics)));
    assert_eq!(scopes(&all), expected);
    // No range and no `q`: both blocks answered from their index, only the head decoded.
    let reasons = &all["metrics"]["threadlineSkippedBlocks"];
    assert_eq!(reasons["answered from the block index"], 2, "{all}");
    assert_eq!(all["metrics"]["inspectedTraces"], 1, "{all}");

    // The middle hour only: the trace of that hour, from its block.
    let path = format!(
        "/api/v2/search/tags?scope=span&start={}&end={}",
        t[1] - 60,
        t[1] + 60
    );
    let mid = json_of(api, &path).await;
    assert_eq!(
        scopes(&mid),
        vec![("span".into(), strings(&["mid.span", "shared"]))]
    );
    // Up to the middle hour: old and mid, each block wholly inside, read from the index.
    let path = format!("/api/search/tags?end={}", t[1] + 60);
    let v1 = json_of(api, &path).await;
    let names: Vec<&str> = v1["tagNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"old.event") && names.contains(&"mid.lib"),
        "{v1}"
    );
    assert!(!names.iter().any(|n| n.starts_with("new.")), "{v1}");
    assert!(
        !names.contains(&"duration"),
        "v1 lists intrinsics only for scope=intrinsic: {v1}"
    );

    // `q` restricts the spans whose keys count; the head's trace only.
    let q = urlencode(r#"{resource.service.name="new-svc"}"#);
    let new = json_of(api, &format!("/api/v2/search/tags?scope=resource&q={q}")).await;
    assert_eq!(
        scopes(&new),
        vec![("resource".into(), strings(&["new.res", "service.name"]))]
    );
    // `limit` keeps the first names of each scope in order.
    let limited = json_of(api, "/api/v2/search/tags?scope=event&limit=2").await;
    assert_eq!(
        scopes(&limited),
        vec![("event".into(), strings(&["mid.event", "new.event"]))]
    );
    // Bad parameters are 400 naming them.
    for (path, word) in [
        ("/api/v2/search/tags?scope=bogus", "scope"),
        ("/api/search/tags?start=soon", "start"),
        ("/api/v2/search/tags?start=20&end=10", "start"),
        ("/api/v2/search/tag/span.x/values?limit=-1", "limit"),
        ("/api/v2/search/tag/nonsense/values", "tagName"),
    ] {
        let (status, _, body) = get(api, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(word), "{path}: {body}");
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn tag_values_are_typed_per_scope_and_bounded_by_range_and_q() {
    let (_dir, _store, api, t) = three_hours().await;
    let values = |answer: &Json| answer["tagValues"].clone();
    let shared = json_of(api, "/api/v2/search/tag/span.shared/values").await;
    assert_eq!(
        values(&shared),
        json!([
            {"type": "string", "value": "mid"},
            {"type": "string", "value": "new"},
            {"type": "string", "value": "old"}
        ])
    );
    assert!(shared["metrics"]["inspectedBytes"].is_string(), "{shared}");
    let ints = json_of(api, "/api/v2/search/tag/span.old.span/values").await;
    assert_eq!(values(&ints), json!([{"type": "int", "value": "1"}]));
    // A block without the key is skipped from its index.
    let reasons = &ints["metrics"]["threadlineSkippedBlocks"];
    assert_eq!(reasons["attribute absent from block"], 1, "{ints}");
    let event = json_of(api, "/api/v2/search/tag/event.mid.event/values").await;
    assert_eq!(values(&event), json!([{"type": "string", "value": "e"}]));
    let link = json_of(api, "/api/v2/search/tag/link.new.link/values").await;
    assert_eq!(values(&link), json!([{"type": "string", "value": "l"}]));
    let lib = json_of(api, "/api/v2/search/tag/instrumentation.old.lib/values").await;
    assert_eq!(values(&lib), json!([{"type": "string", "value": "i"}]));
    let names = json_of(
        api,
        &format!("/api/v2/search/tag/name/values?start={}", t[1] - 60),
    )
    .await;
    assert_eq!(
        values(&names),
        json!([{"type": "string", "value": "mid-op"}, {"type": "string", "value": "new-op"}])
    );
    let event_names = json_of(api, "/api/v2/search/tag/event:name/values?limit=1").await;
    assert_eq!(
        values(&event_names),
        json!([{"type": "string", "value": "mid-event"}])
    );
    let status = json_of(api, "/api/v2/search/tag/status/values").await;
    assert_eq!(
        values(&status),
        json!([
            {"type": "keyword", "value": "ok"},
            {"type": "keyword", "value": "error"},
            {"type": "keyword", "value": "unset"}
        ])
    );
    let q = urlencode(r#"{span.shared="old" || span.shared="new"}"#);
    let services = json_of(
        api,
        &format!("/api/v2/search/tag/resource.service.name/values?q={q}"),
    )
    .await;
    assert_eq!(
        values(&services),
        json!([{"type": "string", "value": "new-svc"}, {"type": "string", "value": "old-svc"}])
    );
    let v1 = json_of(
        api,
        &format!("/api/search/tag/service.name/values?end={}", t[1] + 60),
    )
    .await;
    assert_eq!(v1["tagValues"], json!(["mid-svc", "old-svc"]));
    // A `q` that does not parse (autocompletion of a query being typed) filters nothing.
    let partial = urlencode(r#"{span.shared="old" && "#);
    let loose = json_of(api, &format!("/api/search/tag/shared/values?q={partial}")).await;
    assert_eq!(loose["tagValues"], json!(["mid", "new", "old"]));
    assert!(
        loose["metrics"]["threadlineIgnoredQuery"].is_string(),
        "{loose}"
    );
}

#[tokio::test]
async fn searches_skip_blocks_from_their_index_and_say_why() {
    let (_dir, _store, api, t) = three_hours().await;
    let q = urlencode("{ span.new.span = 3 }");
    let found = json_of(api, &format!("/api/search?q={q}")).await;
    assert_eq!(found["traces"].as_array().unwrap().len(), 1, "{found}");
    let metrics = &found["metrics"];
    assert_eq!(metrics["totalBlocks"], 2, "{found}");
    assert_eq!(metrics["inspectedBlocks"], 0, "{found}");
    assert_eq!(metrics["skippedBlocks"], 2, "{found}");
    assert_eq!(
        metrics["threadlineSkippedBlocks"]["attribute absent from block"],
        2
    );
    let q = urlencode(r#"{ span.shared = "old" }"#);
    let path = format!("/api/search?q={q}&start={}&end={}", t[1] - 60, t[2] + 60);
    let none = json_of(api, &path).await;
    assert_eq!(none["traces"], json!([]), "{none}");
    let reasons = &none["metrics"]["threadlineSkippedBlocks"];
    assert_eq!(reasons["outside time range"], 1, "{none}");
    // The other block has the key but no page holds the value: its pages are not read.
    assert_eq!(reasons["no page holds a required value"], 1, "{none}");
    assert_eq!(none["metrics"]["inspectedBlocks"], 0, "{none}");
    // `||` cannot skip on one attribute: both blocks are read.
    let q = urlencode("{ span.old.span = 1 || span.mid.span = 2 }");
    let either = json_of(api, &format!("/api/search?q={q}")).await;
    assert_eq!(either["traces"].as_array().unwrap().len(), 2, "{either}");
    assert_eq!(either["metrics"]["inspectedBlocks"], 2, "{either}");
}

#[tokio::test]
async fn a_trace_is_found_outside_the_range_asked_and_no_span_comes_twice() {
    let (_dir, store, api, t) = three_hours().await;
    // Trace 1's span again, in the head (a client retry) and then in a third block.
    store
        .append(SINGLE_TENANT, &trace(1, t[0], "old"))
        .await
        .unwrap();
    let id = hex::encode([1u8; 16]);
    for when in ["before", "after"] {
        let range = format!("start={}&end={}", t[2] - 60, t[2] + 60);
        let (status, head, body) = get(api, &format!("/api/v2/traces/{id}?{range}")).await;
        assert_eq!(status, 200, "{when}: {body}");
        assert!(
            head.contains("threadline-trace-outside-range: true"),
            "{when}: {head}"
        );
        let answer: Json = serde_json::from_str(&body).unwrap();
        let spans = &answer["trace"]["resourceSpans"];
        let count: usize = spans
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["scopeSpans"].as_array().unwrap())
            .map(|s| s["spans"].as_array().unwrap().len())
            .sum();
        assert_eq!(count, 1, "{when} the cut: {answer}");
        store.cut().await.unwrap();
    }
    // Inside its range: no header.
    let range = format!("start={}&end={}", t[0] - 60, t[0] + 60);
    let (status, head, _) = get(api, &format!("/api/traces/{id}?{range}")).await;
    assert_eq!(status, 200);
    assert!(!head.contains("outside-range"), "{head}");
    let (status, _, body) = get(api, &format!("/api/v2/traces/{id}?start=9&end=3")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("start"), "{body}");
}

#[tokio::test]
async fn buildinfo_reports_a_version_grafana_enables_streaming_for() {
    let (_dir, _store, api, _) = three_hours().await;
    let info = json_of(api, "/api/status/buildinfo").await;
    let version = info["version"].as_str().unwrap();
    let parts: Vec<u64> = version.split('.').map(|p| p.parse().unwrap()).collect();
    // grafana/grafana datasource.ts featuresToTempoVersion: metrics streaming needs 2.7.0.
    assert!(parts >= vec![2, 7, 0], "{info}");
    assert_eq!(info["threadlineVersion"], env!("CARGO_PKG_VERSION"));
}

/// One span of trace `id` with span id `span` and one attribute `key` = 1, at `secs`.
fn span_with(id: u8, span: u8, key: &str, secs: u64) -> TraceData {
    let start = secs * 1_000_000_000;
    TraceData::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![id; 16],
                    span_id: vec![span; 8],
                    name: "part".into(),
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + 1000,
                    attributes: vec![kv(key, any_value::Value::IntValue(1))],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

#[tokio::test]
async fn a_match_split_over_blocks_that_each_lack_one_attribute_is_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    let t = at(1);
    store
        .append(SINGLE_TENANT, &span_with(7, 1, "left", t))
        .await
        .unwrap();
    store.cut().await.unwrap();
    store
        .append(SINGLE_TENANT, &span_with(7, 2, "right", t))
        .await
        .unwrap();
    store.cut().await.unwrap();
    // A trace elsewhere, in a third block lacking both keys: skipped from its index.
    store
        .append(SINGLE_TENANT, &span_with(8, 1, "other", t + 60))
        .await
        .unwrap();
    store.cut().await.unwrap();
    let api = common::serve(store.clone()).await;
    let q = urlencode("{ span.left = 1 } && { span.right = 1 }");
    let found = json_of(api, &format!("/api/search?q={q}")).await;
    let traces = found["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{found}");
    assert_eq!(traces[0]["traceID"], hex::encode([7u8; 16]));
    let reasons = &found["metrics"]["threadlineSkippedBlocks"];
    assert_eq!(reasons["attribute absent from block"], 1, "{found}");
    // One required attribute: both blocks without it are skipped, the match is found.
    let q = urlencode("{ span.right = 1 }");
    let found = json_of(api, &format!("/api/search?q={q}")).await;
    assert_eq!(found["traces"].as_array().unwrap().len(), 1, "{found}");
    let reasons = &found["metrics"]["threadlineSkippedBlocks"];
    assert_eq!(reasons["attribute absent from block"], 2, "{found}");
}

#[tokio::test]
async fn a_tags_search_skips_blocks_without_its_keys() {
    let (_dir, _store, api, _) = three_hours().await;
    let tags = urlencode("mid.span=2");
    let found = json_of(api, &format!("/api/search?tags={tags}")).await;
    assert_eq!(found["traces"].as_array().unwrap().len(), 1, "{found}");
    let reasons = &found["metrics"]["threadlineSkippedBlocks"];
    assert_eq!(reasons["attribute absent from block"], 1, "{found}");
    assert_eq!(found["metrics"]["inspectedBlocks"], 1, "{found}");
}

#[tokio::test]
async fn the_intrinsic_scope_is_tempos_list_and_reads_nothing() {
    let (_dir, _store, api, _) = three_hours().await;
    let v2 = json_of(api, "/api/v2/search/tags?scope=intrinsic").await;
    let intrinsics = strings(threadline_store::tags::INTRINSICS);
    assert_eq!(
        scopes(&v2),
        vec![("intrinsic".to_string(), intrinsics.clone())]
    );
    assert_eq!(v2["metrics"]["inspectedTraces"], 0, "{v2}");
    let v1 = json_of(api, "/api/search/tags?scope=intrinsic").await;
    let mut sorted = intrinsics;
    sorted.sort();
    assert_eq!(v1["tagNames"], json!(sorted));
    let kinds = json_of(api, "/api/v2/search/tag/span:kind/values?limit=2").await;
    assert_eq!(
        kinds["tagValues"],
        json!([{"type": "keyword", "value": "client"}, {"type": "keyword", "value": "server"}])
    );
}

#[tokio::test]
async fn metrics_queries_count_the_same_when_blocks_are_skipped_for_a_missing_attribute() {
    let (_dir, _store, api, t) = three_hours().await;
    let range = format!("start={}&end={}", t[0] - 60, t[2] + 60);
    for (q, count) in [
        ("{ span.mid.span = 2 } | count_over_time()", 1.0),
        (
            "{ span.mid.span = 2 || span.old.span = 1 } | count_over_time()",
            2.0,
        ),
        ("{ .shared =~ \"o.*|n.*\" } | count_over_time()", 2.0),
        ("{ span.nowhere = 1 } | count_over_time()", 0.0),
    ] {
        let path = format!("/api/metrics/query?q={}&{range}", urlencode(q));
        let answer = json_of(api, &path).await;
        let total: f64 = answer["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["value"].as_f64().unwrap_or(0.0))
            .sum();
        assert_eq!(total, count, "{q}: {answer}");
    }
}
