//! The OTLP receiver over real sockets: real gRPC and HTTP clients, a recording next consumer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use threadline_config::ComponentId;
use threadline_otlp::proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use threadline_otlp::proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use threadline_otlp::proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use threadline_otlp::proto::tonic::resource::v1::Resource;
use threadline_otlp::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::OtlpReceiverFactory;
use crate::component::{Component, CreateContext, Host, ReceiverFactory};
use crate::consumer::ConsumeError;
use crate::rpc_status::{RetryInfo, RpcStatus, RETRY_INFO_TYPE_URL};
use crate::telemetry::Telemetry;
use crate::test_support::{free_port, Recorder};

struct Running {
    receiver: Arc<dyn Component>,
    recorder: Arc<Recorder>,
    host: Host,
    telemetry: Arc<Telemetry>,
    grpc: String,
    http: String,
}

fn start(extra_grpc: &str, extra_http: &str) -> Running {
    let (grpc_port, http_port) = (free_port(), free_port());
    let yaml = format!(
        "protocols:\n  grpc:\n    endpoint: 127.0.0.1:{grpc_port}\n{extra_grpc}  http:\n    endpoint: 127.0.0.1:{http_port}\n{extra_http}"
    );
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let recorder = Arc::new(Recorder::default());
    let host = Host::default();
    let telemetry = Telemetry::new("test");
    let id: ComponentId = "otlp".parse().unwrap();
    let ctx = CreateContext {
        id: &id,
        telemetry: &telemetry,
        host: &host,
    };
    let receiver = OtlpReceiverFactory
        .create_traces(&ctx, &config, recorder.clone())
        .unwrap();
    Running {
        receiver,
        recorder,
        host,
        telemetry,
        grpc: format!("http://127.0.0.1:{grpc_port}"),
        http: format!("http://127.0.0.1:{http_port}/v1/traces"),
    }
}

fn span(trace_id: [u8; 16], span_id: [u8; 8], name: &str) -> Span {
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_500_000_000,
        attributes: vec![KeyValue {
            key: "http.route".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(
                    "/api/v2/orders/{orderId}".into(),
                )),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("orders".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn two_spans() -> ExportTraceServiceRequest {
    request(vec![
        span([1; 16], [1; 8], "GET /api/v2/orders/{orderId}"),
        span([1; 16], [2; 8], "SELECT orders"),
    ])
}

async fn stop(running: &Running) {
    running
        .receiver
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn grpc_export_reaches_the_pipeline_unchanged() {
    let running = start("", "");
    let mut client = TraceServiceClient::connect(running.grpc.clone())
        .await
        .unwrap();
    let sent = two_spans();
    let response = client.export(sent.clone()).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);
    let received = running.recorder.batches();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].span_count(), 2);
    assert_eq!(received[0].to_request().unwrap(), sent);
    let metrics = running.telemetry.render();
    assert!(
        metrics.contains("otelcol_receiver_accepted_spans{receiver=\"otlp\"")
            || metrics.contains("receiver=\"otlp\",service_instance_id"),
        "{metrics}"
    );
    let accepted = running
        .telemetry
        .receiver(&"otlp".parse().unwrap(), "grpc")
        .accepted_spans
        .get();
    assert_eq!(accepted, 2);
    stop(&running).await;
}

#[tokio::test]
async fn grpc_gzip_and_zstd_requests_are_accepted() {
    use tonic::codec::CompressionEncoding;
    let running = start("", "");
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = TraceServiceClient::connect(running.grpc.clone())
            .await
            .unwrap()
            .send_compressed(encoding);
        client.export(two_spans()).await.unwrap();
    }
    assert_eq!(running.recorder.spans().len(), 4);
    stop(&running).await;
}

#[tokio::test]
async fn grpc_rejects_malformed_and_wrong_length_ids() {
    let running = start("", "");
    let mut client = TraceServiceClient::connect(running.grpc.clone())
        .await
        .unwrap();
    let mut bad = two_spans();
    bad.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1, 2, 3];
    let status = client.export(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("trace_id"),
        "{}",
        status.message()
    );
    assert!(running.recorder.spans().is_empty());
    // The server keeps serving.
    client.export(two_spans()).await.unwrap();
    assert_eq!(running.recorder.spans().len(), 2);
    stop(&running).await;
}

#[tokio::test]
async fn all_zero_trace_ids_are_rejected_as_partial_success() {
    let running = start("", "");
    let mut client = TraceServiceClient::connect(running.grpc.clone())
        .await
        .unwrap();
    let mut sent = two_spans();
    sent.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![0; 16];
    let response = client.export(sent).await.unwrap().into_inner();
    let partial = response.partial_success.expect("partial success reported");
    assert_eq!(partial.rejected_spans, 1);
    assert!(!partial.error_message.is_empty());
    let spans = running.recorder.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "SELECT orders");
    stop(&running).await;
}

#[tokio::test]
async fn grpc_oversized_message_is_resource_exhausted() {
    let running = start("    max_recv_msg_size_mib: 1\n", "");
    let mut client = TraceServiceClient::connect(running.grpc.clone())
        .await
        .unwrap();
    let mut big = span([7; 16], [7; 8], "big");
    big.attributes.push(KeyValue {
        key: "payload".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("x".repeat(2 * 1024 * 1024))),
        }),
        ..Default::default()
    });
    let status = client.export(request(vec![big])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    client.export(two_spans()).await.unwrap();
    stop(&running).await;
}

#[tokio::test]
async fn refusals_carry_retry_hints() {
    let running = start("", "");
    running.host.memory_pressure.set_refusing(true);
    let mut client = TraceServiceClient::connect(running.grpc.clone())
        .await
        .unwrap();
    let status = client.export(two_spans()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let details = RpcStatus::decode(status.details()).unwrap();
    assert_eq!(details.details[0].type_url, RETRY_INFO_TYPE_URL);
    let retry = RetryInfo::decode(&details.details[0].value[..]).unwrap();
    assert!(retry.retry_delay.unwrap().seconds >= 1);

    let http = reqwest::Client::new();
    let response = http
        .post(&running.http)
        .header("content-type", "application/x-protobuf")
        .body(two_spans().encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    assert!(running.recorder.spans().is_empty());

    running.host.memory_pressure.set_refusing(false);
    running
        .recorder
        .fail_with(Some(ConsumeError::Permanent("backend said no".into())));
    let status = client.export(two_spans()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("backend said no"));
    stop(&running).await;
}

async fn post(
    running: &Running,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(&running.http)
        .header("content-type", content_type);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    request.body(body).send().await.unwrap()
}

#[tokio::test]
async fn http_protobuf_with_every_encoding() {
    let running = start("", "");
    let body = two_spans().encode_to_vec();
    let gzip = {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&body).unwrap();
        encoder.finish().unwrap()
    };
    let zstd = zstd::encode_all(&body[..], 3).unwrap();
    for (encoding, payload) in [
        (None, body.clone()),
        (Some("gzip"), gzip),
        (Some("zstd"), zstd),
    ] {
        let response = post(&running, "application/x-protobuf", encoding, payload).await;
        assert_eq!(response.status(), 200, "{encoding:?}");
        assert_eq!(response.headers()["content-type"], "application/x-protobuf");
        let decoded = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
        assert_eq!(decoded.partial_success, None);
    }
    assert_eq!(running.recorder.spans().len(), 6);
    stop(&running).await;
}

#[tokio::test]
async fn http_json_is_accepted_with_hex_ids() {
    let running = start("", "");
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"orders"}}]},
        "scopeSpans":[{"scope":{"name":"manual"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "parentSpanId":"eee19b7ec3c1b173","name":"GET /api/v2/orders/{orderId}","kind":2,
        "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
        "attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}}],"status":{"code":2,"message":"boom"}}]}]}]}"#;
    let response = post(&running, "application/json", None, body.as_bytes().to_vec()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let spans = running.recorder.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(
        hex::encode(&spans[0].trace_id),
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(hex::encode(&spans[0].parent_span_id), "eee19b7ec3c1b173");
    assert_eq!(spans[0].start_time_unix_nano, 1544712660000000000);
    assert_eq!(spans[0].status.as_ref().unwrap().code, 2);
    stop(&running).await;
}

#[tokio::test]
async fn http_bad_input_gets_the_prescribed_status() {
    let running = start("", "    max_request_body_size: 1048576\n");
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        ("application/x-protobuf", None, vec![0x0a, 0xff, 0xff, 0x01], 400),
        ("application/json", None, b"{\"resourceSpans\": [".to_vec(), 400),
        ("application/json", None, br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"abc","spanId":"eee19b7ec3c1b174"}]}]}]}"#.to_vec(), 400),
        ("text/plain", None, b"hello".to_vec(), 415),
        ("application/x-protobuf", Some("gzip"), b"not gzip".to_vec(), 400),
        ("application/x-protobuf", Some("br"), two_spans().encode_to_vec(), 415),
        ("application/x-protobuf", None, vec![0u8; 2 * 1024 * 1024], 413),
    ];
    for (content_type, encoding, body, expected) in cases {
        let response = post(&running, content_type, encoding, body).await;
        assert_eq!(
            response.status().as_u16(),
            expected,
            "{content_type} {encoding:?}"
        );
        if expected == 400 && content_type == "application/x-protobuf" {
            let status = RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
            assert!(!status.message.is_empty());
        }
    }
    let response = reqwest::get(&running.http).await.unwrap();
    assert_eq!(response.status(), 405);
    // Still serving after all of that.
    let response = post(
        &running,
        "application/x-protobuf",
        None,
        two_spans().encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(running.recorder.spans().len(), 2);
    stop(&running).await;
}

#[tokio::test]
async fn a_busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&format!(
        "protocols:\n  grpc:\n    endpoint: 127.0.0.1:{port}\n"
    ))
    .unwrap();
    let host = Host::default();
    let telemetry = Telemetry::new("test");
    let id: ComponentId = "otlp".parse().unwrap();
    let ctx = CreateContext {
        id: &id,
        telemetry: &telemetry,
        host: &host,
    };
    let err = match OtlpReceiverFactory.create_traces(&ctx, &config, Arc::new(Recorder::default()))
    {
        Err(err) => format!("{err:#}"),
        Ok(_) => panic!("binding a busy port succeeded"),
    };
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("receivers::otlp"), "{err}");
}

#[tokio::test]
async fn tls_and_mutual_tls_on_both_transports() {
    use crate::exporters::testkit::TestPki;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate();
    pki.write_to(dir.path());
    let tls = format!(
        "    tls:\n      cert_file: {0}/server.pem\n      key_file: {0}/server.key\n      client_ca_file: {0}/ca.pem\n",
        dir.path().display()
    );
    let running = start(&tls, &tls);

    // gRPC with a client certificate: accepted.
    let grpc_url = running
        .grpc
        .replace("http://127.0.0.1", "https://localhost");
    let channel = Channel::from_shared(grpc_url.clone())
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.ca_pem))
                .identity(Identity::from_pem(
                    &pki.client_cert_pem,
                    &pki.client_key_pem,
                ))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    TraceServiceClient::new(channel)
        .export(two_spans())
        .await
        .unwrap();

    // gRPC without one: the handshake is refused.
    let anonymous = Channel::from_shared(grpc_url)
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.ca_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await;
    let refused = match anonymous {
        Err(_) => true,
        Ok(channel) => TraceServiceClient::new(channel)
            .export(two_spans())
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate got through");

    // HTTP with and without a client certificate.
    let http_url = running
        .http
        .replace("http://127.0.0.1", "https://localhost");
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
    let identity = reqwest::Identity::from_pem(
        format!("{}{}", pki.client_cert_pem, pki.client_key_pem).as_bytes(),
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .identity(identity)
        .resolve("localhost", running_addr(&running.http))
        .build()
        .unwrap();
    let response = client
        .post(&http_url)
        .header("content-type", "application/x-protobuf")
        .body(two_spans().encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let anonymous = reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve("localhost", running_addr(&running.http))
        .build()
        .unwrap();
    assert!(anonymous
        .post(&http_url)
        .header("content-type", "application/x-protobuf")
        .body(two_spans().encode_to_vec())
        .send()
        .await
        .is_err());
    assert_eq!(running.recorder.spans().len(), 4);
    stop(&running).await;
}

fn running_addr(url: &str) -> std::net::SocketAddr {
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// As upstream's `include_metadata`: a protocol with it passes the request's headers on as client
/// metadata, one without it passes none.
#[tokio::test]
async fn include_metadata_passes_request_headers_on_per_protocol() {
    for (grpc_included, extra_grpc, extra_http) in [
        (true, "    include_metadata: true\n", ""),
        (false, "", "    include_metadata: true\n"),
    ] {
        let running = start(extra_grpc, extra_http);
        let mut client = TraceServiceClient::connect(running.grpc.clone())
            .await
            .unwrap();
        let mut request = tonic::Request::new(two_spans());
        request
            .metadata_mut()
            .insert("x-scope-orgid", "acme".parse().unwrap());
        client.export(request).await.unwrap();
        let response = reqwest::Client::new()
            .post(&running.http)
            .header("content-type", "application/x-protobuf")
            .header("X-Scope-OrgID", "globex")
            .body(two_spans().encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let clients = running.recorder.clients();
        assert_eq!(clients.len(), 2);
        let (grpc, http) = (&clients[0], &clients[1]);
        if grpc_included {
            assert_eq!(grpc.get("X-Scope-OrgID"), ["acme"]);
            assert!(http.is_empty(), "{http:?}");
        } else {
            assert!(grpc.is_empty(), "{grpc:?}");
            assert_eq!(http.get("x-scope-orgid"), ["globex"]);
            assert_eq!(http.get("content-type"), ["application/x-protobuf"]);
        }
        stop(&running).await;
    }
}
