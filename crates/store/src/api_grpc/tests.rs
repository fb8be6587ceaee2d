//! The gRPC streaming API and the HTTP API on one real port: a tonic client over HTTP/2
//! cleartext (as Grafana dials, grafana/grafana 08602cc `pkg/tsdb/tempo/grpc.go`) and a plain
//! HTTP/1.1 client on the same listener.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::tempopb as pb;
use crate::{Store, SINGLE_TENANT};

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// One trace of one span `op-<id>` of `service`, 5 ms long, ending now.
fn trace(id: u8, service: &str) -> threadline_otlp::TraceData {
    let end = now_nanos();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![id; 16],
                    span_id: vec![id; 8],
                    name: format!("op-{id}"),
                    kind: 2,
                    start_time_unix_nano: end - 5_000_000,
                    end_time_unix_nano: end,
                    attributes: vec![text("http.route", &format!("/r{id}"))],
                    status: Some(Status::default()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    threadline_otlp::TraceData::from_request(&request)
}

/// A store with traces 1-3 in one block, 4-5 in another, 6 in the head (all of `api`) and 7
/// (`db`) in the head, served on a free port.
async fn serve() -> (tempfile::TempDir, Arc<Store>, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::tests::config(dir.path(), "");
    let store = Store::open(config).await.unwrap();
    for batch in [&[1u8, 2, 3][..], &[4, 5]] {
        for id in batch {
            store
                .append(SINGLE_TENANT, &trace(*id, "api"))
                .await
                .unwrap();
        }
        assert_eq!(store.cut().await.unwrap().len(), 1);
    }
    store.append(SINGLE_TENANT, &trace(6, "api")).await.unwrap();
    store.append(SINGLE_TENANT, &trace(7, "db")).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = crate::api::router(store.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (dir, store, address)
}

type Client = tonic::client::Grpc<tonic::transport::Channel>;

async fn client(address: std::net::SocketAddr) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

/// Every message of a server-streaming call, or its status.
async fn call<Req, Resp>(
    client: &mut Client,
    method: &'static str,
    message: Req,
) -> Result<Vec<Resp>, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    client.ready().await.unwrap();
    let mut request = tonic::Request::new(message);
    // Grafana's metadata: the tenant header and its user agent.
    request
        .metadata_mut()
        .insert("x-scope-orgid", "ignored-single-tenant".parse().unwrap());
    let path = PathAndQuery::from_static(method);
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let mut stream = client
        .server_streaming(request, path, codec)
        .await?
        .into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await? {
        messages.push(message);
    }
    Ok(messages)
}

async fn http1_get(address: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

fn ids(traces: &[pb::TraceSearchMetadata]) -> Vec<String> {
    let mut ids: Vec<String> = traces.iter().map(|t| t.trace_id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn grpc_and_http1_share_the_port_and_search_streams_each_block() {
    let (_dir, _store, address) = serve().await;

    // HTTP/1.1 on the port, as before.
    let (head, body) = http1_get(address, "/api/echo").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "echo");
    let query = "/api/search?q=%7B%20resource.service.name%20%3D%20%22api%22%20%7D";
    let (_, body) = http1_get(address, query).await;
    let http: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(http["traces"].as_array().unwrap().len(), 6);

    let mut grpc = client(address).await;
    let request = pb::SearchRequest {
        query: "{ resource.service.name = \"api\" }".into(),
        limit: 50,
        spans_per_span_set: 3,
        ..Default::default()
    };
    let messages: Vec<pb::SearchResponse> =
        call(&mut grpc, "/tempopb.StreamingQuerier/Search", request)
            .await
            .unwrap();
    // The head, then each block, found traces: three partial messages, then the whole answer.
    assert_eq!(messages.len(), 4, "{messages:?}");
    let (last, partial) = messages.split_last().unwrap();
    let mut streamed: Vec<String> = partial.iter().flat_map(|m| ids(&m.traces)).collect();
    streamed.sort();
    let expected: Vec<String> = (1..=6u8).map(|i| hex::encode([i; 16])).collect();
    assert_eq!(
        streamed, expected,
        "each trace once in the partial messages"
    );
    assert_eq!(
        ids(&last.traces),
        expected,
        "every trace in the last message"
    );
    assert_eq!(
        partial.iter().map(|m| m.traces.len()).collect::<Vec<_>>(),
        [1, 2, 3],
        "newest block first"
    );
    let jobs: Vec<(u32, u32)> = messages
        .iter()
        .map(|m| {
            m.metrics
                .as_ref()
                .map_or((0, 0), |x| (x.completed_jobs, x.total_jobs))
        })
        .collect();
    assert_eq!(jobs, [(1, 3), (2, 3), (3, 3), (3, 3)]);
    let metrics = last.metrics.clone().unwrap();
    assert_eq!((metrics.total_blocks, metrics.inspected_traces), (2, 6));
    assert!(metrics.total_block_bytes > 0 && metrics.inspected_bytes > 0);
    // The same answer as the HTTP search, field for field.
    let trace = last
        .traces
        .iter()
        .find(|t| t.trace_id == hex::encode([2u8; 16]));
    let trace = trace.unwrap();
    assert_eq!(
        (
            trace.root_service_name.as_str(),
            trace.root_trace_name.as_str()
        ),
        ("api", "op-2")
    );
    assert_eq!(trace.duration_ms, 5);
    assert_eq!(trace.span_sets.len(), 1);
    assert_eq!(trace.span_sets[0].matched, 1);
    assert_eq!(trace.span_sets[0].spans[0].duration_nanos, 5_000_000);
    assert_eq!(trace.service_stats["api"].span_count, 1);

    // HTTP/1.1 still answers after the HTTP/2 connection.
    let (head, body) = http1_get(address, "/ready").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ready");
}

#[tokio::test]
async fn tags_and_metrics_answer_over_grpc_and_errors_are_grpc_statuses() {
    let (_dir, _store, address) = serve().await;
    let mut grpc = client(address).await;

    let scopes: Vec<pb::SearchTagsV2Response> = call(
        &mut grpc,
        "/tempopb.StreamingQuerier/SearchTagsV2",
        pb::SearchTagsRequest::default(),
    )
    .await
    .unwrap();
    let last = scopes.last().unwrap();
    let scope = |name: &str| {
        last.scopes
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.tags.clone())
            .unwrap_or_default()
    };
    assert!(scope("resource").contains(&"service.name".to_string()));
    assert!(scope("span").contains(&"http.route".to_string()));

    let values: Vec<pb::SearchTagValuesV2Response> = call(
        &mut grpc,
        "/tempopb.StreamingQuerier/SearchTagValuesV2",
        pb::SearchTagValuesRequest {
            tag_name: "resource.service.name".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut services: Vec<String> = values
        .last()
        .unwrap()
        .tag_values
        .iter()
        .map(|v| v.value.clone())
        .collect();
    services.sort();
    assert_eq!(services, ["api", "db"]);

    let now = now_nanos();
    let range: Vec<pb::QueryRangeResponse> = call(
        &mut grpc,
        "/tempopb.StreamingQuerier/MetricsQueryRange",
        pb::QueryRangeRequest {
            query: "{ } | count_over_time() by (resource.service.name)".into(),
            start: now - 3_600_000_000_000,
            end: now + 60_000_000_000,
            step: 60_000_000_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let last = range.last().unwrap();
    let total = |service: &str| -> f64 {
        last.series
            .iter()
            .filter(|s| {
                s.labels.iter().any(|l| {
                    l.value.as_ref().and_then(|v| v.value.clone())
                        == Some(any_value::Value::StringValue(service.into()))
                })
            })
            .flat_map(|s| s.samples.iter().map(|p| p.value))
            .filter(|v| !v.is_nan())
            .sum()
    };
    assert_eq!((total("api"), total("db")), (6.0, 1.0));
    let jobs = last.metrics.clone().unwrap();
    assert_eq!((jobs.completed_jobs, jobs.total_jobs), (3, 3));

    let bad: Result<Vec<pb::SearchResponse>, _> = call(
        &mut grpc,
        "/tempopb.StreamingQuerier/Search",
        pb::SearchRequest {
            query: "{ span.a = }".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    let unknown: Result<Vec<pb::SearchResponse>, _> = call(
        &mut grpc,
        "/tempopb.StreamingQuerier/Nope",
        pb::SearchRequest::default(),
    )
    .await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::Unimplemented);
}
