//! Tempo's HTTP API answers each kind of store error with its status and a plain-text message
//! naming the problem: 400 bad request, 404 unknown trace or tenant, 503 the store cannot serve
//! now, 500 a real fault. Real HTTP on 127.0.0.1, real block files.

mod common;

use std::path::Path;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use threadline_otlp::TraceData;
use threadline_store::{SearchRequest, Store, StoreConfig, StoreError, SINGLE_TENANT};

fn config(dir: &Path, extra: &str) -> StoreConfig {
    let yaml = format!(
        "storage:\n  trace:\n    backend: local\n    wal: {{path: {}}}\n    local: {{path: {}}}\n\
         ingester: {{max_block_duration: 1h}}\ncompactor: {{compaction: {{compaction_cycle: 1h}}}}\n{extra}",
        dir.join("wal").display(),
        dir.join("blocks").display()
    );
    let config: StoreConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    config
}

fn one_span(trace: u8) -> TraceData {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    TraceData::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![trace; 16],
                    span_id: vec![trace; 8],
                    name: "work".into(),
                    start_time_unix_nano: now - 1000,
                    end_time_unix_nano: now,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// GET `path` (with `org`'s X-Scope-OrgID if given): (status, body).
async fn get(address: std::net::SocketAddr, path: &str, org: Option<&str>) -> (u16, String) {
    let answer = common::get(address, path, org).await;
    (answer.status, answer.body)
}

fn block_dir(dir: &Path, tenant: &str) -> std::path::PathBuf {
    let mut dirs: Vec<_> = std::fs::read_dir(dir.join("blocks").join(tenant))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.remove(0)
}

#[tokio::test]
async fn bad_requests_are_400_unknown_traces_404_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), "")).await.unwrap();
    store.append(SINGLE_TENANT, &one_span(1)).await.unwrap();
    let api = common::serve(store.clone()).await;

    let (status, body) = get(api, "/api/traces/not-hex", None).await;
    assert_eq!(
        (status, body.contains("invalid trace id")),
        (400, true),
        "{body}"
    );
    let (status, body) = get(api, "/api/search?limit=many", None).await;
    assert_eq!(
        (status, body.contains("invalid limit")),
        (400, true),
        "{body}"
    );
    let (status, body) = get(api, "/api/search?start=20&end=10", None).await;
    assert_eq!((status, body.contains("start")), (400, true), "{body}");
    let (status, body) = get(api, "/api/search?q=%7B%20status%20%3D", None).await;
    assert_eq!((status, body.contains("TraceQL")), (400, true), "{body}");

    let (status, body) = get(
        api,
        &format!("/api/traces/{}", hex::encode([2u8; 16])),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains(&hex::encode([2u8; 16])), "{body}");
    let (status, _) = get(
        api,
        &format!("/api/traces/{}", hex::encode([1u8; 16])),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // The engine says the same to library callers, by kind.
    let backwards = SearchRequest {
        start_unix_nano: Some(20),
        end_unix_nano: Some(10),
        ..Default::default()
    };
    let err = match store.search(SINGLE_TENANT, &backwards, &|_| true).await {
        Err(err) => err,
        Ok(_) => panic!("a search ending before it starts was accepted"),
    };
    assert!(
        matches!(StoreError::of(&err), Some(StoreError::InvalidRequest(_))),
        "{err:#}"
    );
}

#[tokio::test]
async fn an_unknown_tenant_is_404_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), "multitenancy_enabled: true"))
        .await
        .unwrap();
    store.append("team-a", &one_span(1)).await.unwrap();
    store.cut().await.unwrap();
    let api = common::serve(store.clone()).await;
    let trace = format!("/api/traces/{}", hex::encode([1u8; 16]));
    for path in [
        trace.as_str(),
        "/api/search",
        "/api/search/tags",
        "/api/v2/search/tag/name/values",
    ] {
        let (status, body) = get(api, path, Some("team-b")).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("\"team-b\""), "{path}: {body}");
        let (status, body) = get(api, path, Some("team-a")).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[tokio::test]
async fn a_closing_store_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), "")).await.unwrap();
    store.append(SINGLE_TENANT, &one_span(1)).await.unwrap();
    let api = common::serve(store.clone()).await;
    assert_eq!(get(api, "/api/search", None).await.0, 200);
    store.flush_and_close().await.unwrap();
    for path in ["/api/search", "/api/search/tags"] {
        let (status, body) = get(api, path, None).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body.contains("shutting down"), "{path}: {body}");
    }
    let (status, _) = get(
        api,
        &format!("/api/traces/{}", hex::encode([1u8; 16])),
        None,
    )
    .await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn damaged_blocks_are_500_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), "")).await.unwrap();
    store.append(SINGLE_TENANT, &one_span(1)).await.unwrap();
    store.cut().await.unwrap();
    let api = common::serve(store.clone()).await;
    let trace = format!("/api/traces/{}", hex::encode([1u8; 16]));
    assert_eq!(get(api, &trace, None).await.0, 200);

    let block = block_dir(dir.path(), SINGLE_TENANT);
    let id = block.file_name().unwrap().to_string_lossy().to_string();
    // Overwritten with garbage of the same length: the page no longer decodes.
    let len = std::fs::metadata(block.join("data")).unwrap().len() as usize;
    std::fs::write(block.join("data"), vec![0x55; len]).unwrap();
    // A fresh store: nothing of the block cached.
    store.flush_and_close().await.unwrap();
    let store = Store::open(config(dir.path(), "")).await.unwrap();
    let api = common::serve(store.clone()).await;
    let (status, body) = get(api, &trace, None).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains(&format!("{id}/data")), "{body}");

    // Its data gone while its meta.json stays: a fault, not "deleted by compaction".
    std::fs::remove_file(block.join("data")).unwrap();
    let (status, body) = get(api, "/api/search", None).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains(&id) && body.contains("missing"), "{body}");
}
