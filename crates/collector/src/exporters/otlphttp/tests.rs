//! The `otlphttp` exporter's configuration, and what it sends to a real HTTP backend.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost::Message;
use threadline_config::settings::{Compression, TlsServerSettings};

use super::*;
use crate::component::{decode_config, Exporter, ExporterFactory};
use crate::consumer::ConsumeError;
use crate::exporters::testkit::{
    partial_success, traces, wait_until, yaml, HttpBackend, TestContext, TestPki,
};
use crate::rpc_status::RpcStatus;
use threadline_config::ConfigErrors;

const WAIT: Duration = Duration::from_secs(10);

fn decode(text: &str) -> Result<OtlpHttpExporterConfig, ConfigErrors> {
    decode_config(&yaml(text), "exporters::otlphttp")
}

fn error_text(text: &str) -> String {
    decode(text).unwrap_err().to_string()
}

fn create(tc: &TestContext, config: &str) -> Arc<dyn Exporter> {
    OtlpHttpExporterFactory
        .create_traces(&tc.ctx(), &yaml(config))
        .unwrap()
}

/// An exporter that sends inside `consume`, so tests see each outcome directly.
fn direct_exporter(tc: &TestContext, config: &str) -> Arc<dyn Exporter> {
    create(
        tc,
        &format!(
            "{config}\nsending_queue: {{enabled: false}}\nretry_on_failure: {{enabled: false}}"
        ),
    )
}

#[test]
fn decodes_the_upstream_style_sample() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/exporters/otlphttp/testdata/config.yaml"
    ))
    .unwrap();
    let config = decode(&text).unwrap();
    assert_eq!(config.encoding, Encoding::Json);
    assert_eq!(config.client.compression, Compression::Zstd);
    assert_eq!(config.client.timeout.as_duration(), Duration::from_secs(10));
    assert_eq!(config.client.max_idle_conns_per_host, Some(5));
    assert_eq!(config.sending_queue.queue_size, 10);
    assert_eq!(
        config.retry_on_failure.initial_interval.as_duration(),
        Duration::from_secs(10)
    );
    assert_eq!(
        config.traces_url().unwrap().as_str(),
        "https://traces.example.com:4318/custom/v1/traces"
    );
}

#[test]
fn defaults_and_url_composition_follow_upstream() {
    let config = decode("endpoint: http://collector:4318").unwrap();
    assert_eq!(config.client.timeout.as_duration(), Duration::from_secs(30));
    assert_eq!(config.client.compression, Compression::Gzip);
    assert_eq!(config.encoding, Encoding::Proto);
    assert_eq!(config.sending_queue.queue_size, 1000);
    assert_eq!(
        config.traces_url().unwrap().as_str(),
        "http://collector:4318/v1/traces"
    );

    let url = |text: &str| decode(text).unwrap().traces_url().unwrap().to_string();
    assert_eq!(
        url("endpoint: https://collector/"),
        "https://collector/v1/traces"
    );
    assert_eq!(
        url("endpoint: https://gw.example.com/otlp"),
        "https://gw.example.com/otlp/v1/traces"
    );
    assert_eq!(
        url("endpoint: https://collector\ntraces_endpoint: https://other:9999/ingest"),
        "https://other:9999/ingest"
    );
}

#[test]
fn invalid_settings_are_reported_by_path() {
    let text = error_text("compression: gzip");
    assert!(
        text.contains("at least one endpoint must be specified"),
        "{text}"
    );
    let text = error_text("endpoint: collector:4318");
    assert!(text.contains("exporters::otlphttp::endpoint"), "{text}");
    let text = error_text("traces_endpoint: ftp://collector/v1/traces");
    assert!(
        text.contains("exporters::otlphttp::traces_endpoint"),
        "{text}"
    );
    let text = error_text("endpoint: http://c:4318\nencoding: xml");
    assert!(
        text.contains("encoding") && text.contains("proto, json"),
        "{text}"
    );
    let text = error_text("endpoint: http://c:4318\nendpiont: x");
    assert!(text.contains("endpiont"), "{text}");
    let text = error_text("endpoint: http://c:4318\nsending_queue: {num_consumers: 0}");
    assert!(text.contains("sending_queue::num_consumers"), "{text}");
}

#[tokio::test]
async fn posts_the_request_bytes_gzipped_to_v1_traces() {
    let backend = HttpBackend::start(None).await;
    let tc = TestContext::new("otlphttp");
    let exporter = direct_exporter(
        &tc,
        &format!(
            "endpoint: {}\nheaders: {{x-api-key: secret}}",
            backend.url("http")
        ),
    );
    let data = traces("exact", 30);
    exporter.consume(data.clone()).await.unwrap();

    let received = backend.state.accepted();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].body,
        *data.as_bytes(),
        "same bytes as the pipeline's"
    );
    assert_eq!(received[0].encoding.as_deref(), Some("gzip"));
    assert_eq!(
        received[0].content_type.as_deref(),
        Some("application/x-protobuf")
    );
    assert_eq!(
        received[0].headers.get("x-api-key").map(String::as_str),
        Some("secret")
    );
    assert!(received[0].headers["user-agent"].contains("Threadline/"));
    assert_eq!(backend.state.paths.lock().unwrap()[0], "/v1/traces");
    assert_eq!(tc.metrics().sent_spans.get(), 30);
}

#[tokio::test]
async fn zstd_no_compression_and_json() {
    let backend = HttpBackend::start(None).await;
    let tc = TestContext::new("otlphttp");
    for (settings, encoding, content_type) in [
        ("compression: zstd", Some("zstd"), "application/x-protobuf"),
        ("compression: none", None, "application/x-protobuf"),
        ("encoding: json", Some("gzip"), "application/json"),
    ] {
        let exporter = direct_exporter(
            &tc,
            &format!(
                "traces_endpoint: {}/custom\n{settings}",
                backend.url("http")
            ),
        );
        let data = traces("variant", 4);
        exporter.consume(data.clone()).await.unwrap();
        let last = backend.state.accepted().pop().unwrap();
        assert_eq!(last.encoding.as_deref(), encoding, "{settings}");
        assert_eq!(
            last.content_type.as_deref(),
            Some(content_type),
            "{settings}"
        );
        assert_eq!(last.request, data.to_request().unwrap(), "{settings}");
        if content_type != "application/json" {
            assert_eq!(last.body, *data.as_bytes());
        }
    }
    assert!(backend
        .state
        .paths
        .lock()
        .unwrap()
        .iter()
        .all(|p| p == "/custom"));
}

#[tokio::test]
async fn retry_after_seconds_is_waited_for() {
    let backend = HttpBackend::start(None).await;
    backend.state.respond_with(|n| match n {
        0 => (429, vec![("Retry-After".into(), "1".into())], Vec::new()),
        _ => (200, Vec::new(), Vec::new()),
    });
    let tc = TestContext::new("otlphttp");
    let exporter = create(
        &tc,
        &format!(
            "endpoint: {}\nretry_on_failure: {{initial_interval: 10ms, randomization_factor: 0}}",
            backend.url("http")
        ),
    );
    exporter.consume(traces("a", 1)).await.unwrap();
    assert!(wait_until(WAIT, || backend.state.accepted().len() == 1).await);
    let received = backend.state.received.lock().unwrap().clone();
    let gap = received[1].at - received[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    assert!(gap < Duration::from_millis(2500), "retried after {gap:?}");
}

#[tokio::test]
async fn retry_after_http_date_is_waited_for() {
    let backend = HttpBackend::start(None).await;
    backend.state.respond_with(|n| match n {
        0 => {
            let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
            (503, vec![("Retry-After".into(), date)], Vec::new())
        }
        _ => (200, Vec::new(), Vec::new()),
    });
    let tc = TestContext::new("otlphttp");
    let exporter = create(
        &tc,
        &format!(
            "endpoint: {}\nretry_on_failure: {{initial_interval: 10ms, randomization_factor: 0}}",
            backend.url("http")
        ),
    );
    exporter.consume(traces("a", 1)).await.unwrap();
    assert!(wait_until(WAIT, || backend.state.accepted().len() == 1).await);
    let received = backend.state.received.lock().unwrap().clone();
    let gap = received[1].at - received[0].at;
    // HTTP dates have one-second resolution: the wait is between 1 and 2 seconds.
    assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
    assert!(gap < Duration::from_millis(3000), "retried after {gap:?}");
}

#[tokio::test]
async fn gateway_errors_are_retried_and_client_errors_are_not() {
    let backend = HttpBackend::start(None).await;
    backend.state.respond_with(|n| match n {
        0 => (502, Vec::new(), Vec::new()),
        1 => (504, Vec::new(), Vec::new()),
        2 => (200, Vec::new(), Vec::new()),
        _ => {
            let status = RpcStatus {
                code: 3,
                message: "span name too long".into(),
                details: Vec::new(),
            };
            (
                400,
                vec![("Content-Type".into(), "application/x-protobuf".into())],
                status.encode_to_vec(),
            )
        }
    });
    let tc = TestContext::new("otlphttp");
    let exporter = create(
        &tc,
        &format!(
            "endpoint: {}\nsending_queue: {{enabled: false}}\nretry_on_failure: {{initial_interval: 10ms}}",
            backend.url("http")
        ),
    );
    exporter.consume(traces("retried", 2)).await.unwrap();
    assert_eq!(backend.state.attempts(), 3);

    let err = exporter.consume(traces("rejected", 5)).await.unwrap_err();
    let ConsumeError::Permanent(message) = &err else {
        panic!("{err:?}");
    };
    assert!(message.contains("HTTP Status Code 400"), "{message}");
    assert!(message.contains("span name too long"), "{message}");
    assert_eq!(backend.state.attempts(), 4, "a 400 is not retried");
    let metrics = tc.metrics();
    assert_eq!(metrics.sent_spans.get(), 2);
    assert_eq!(metrics.send_failed_spans.get(), 5);
}

#[tokio::test]
async fn partial_success_counts_rejected_spans_as_failed() {
    let backend = HttpBackend::start(None).await;
    backend.state.respond_with(|_| {
        (
            200,
            vec![("Content-Type".into(), "application/x-protobuf".into())],
            partial_success(2, "2 spans too old").encode_to_vec(),
        )
    });
    let tc = TestContext::new("otlphttp");
    let exporter = direct_exporter(&tc, &format!("endpoint: {}", backend.url("http")));
    exporter.consume(traces("p", 9)).await.unwrap();
    let metrics = tc.metrics();
    assert_eq!(metrics.sent_spans.get(), 7);
    assert_eq!(metrics.send_failed_spans.get(), 2);
}

fn tls_backend_config(pki: &TestPki, client_ca_file: Option<String>) -> rustls::ServerConfig {
    TlsServerSettings {
        cert_pem: Some(pki.server_cert_pem.clone()),
        key_pem: Some(pki.server_key_pem.clone()),
        client_ca_file,
        ..TlsServerSettings::default()
    }
    .build_rustls()
    .unwrap()
}

#[tokio::test]
async fn https_with_ca_file_and_server_name_override() {
    let pki = TestPki::generate_for(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    pki.write_to(dir.path());
    let backend = HttpBackend::start(Some(tls_backend_config(&pki, None))).await;
    let tc = TestContext::new("otlphttp");
    let ca = dir.path().join("ca.pem").display().to_string();
    let port = backend.addr.port();

    let exporter = direct_exporter(
        &tc,
        &format!("endpoint: https://localhost:{port}\ntls: {{ca_file: {ca}}}"),
    );
    exporter.consume(traces("tls", 1)).await.unwrap();

    // The certificate does not name 127.0.0.1 ...
    let exporter = direct_exporter(
        &tc,
        &format!("endpoint: https://127.0.0.1:{port}\ntls: {{ca_file: {ca}}}"),
    );
    let err = exporter.consume(traces("wrong-name", 1)).await.unwrap_err();
    assert!(matches!(err, ConsumeError::Retryable { .. }), "{err:?}");

    // ... unless told which name to expect.
    let exporter = direct_exporter(
        &tc,
        &format!(
            "endpoint: https://127.0.0.1:{port}\ntls: {{ca_file: {ca}, server_name_override: localhost}}"
        ),
    );
    exporter.consume(traces("override", 1)).await.unwrap();
    assert_eq!(backend.state.accepted().len(), 2);
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().unwrap();
    pki.write_to(dir.path());
    let path = |name: &str| dir.path().join(name).display().to_string();
    let backend = HttpBackend::start(Some(tls_backend_config(&pki, Some(path("ca.pem"))))).await;
    let tc = TestContext::new("otlphttp");
    let port = backend.addr.port();

    let exporter = direct_exporter(
        &tc,
        &format!(
            "endpoint: https://localhost:{port}\ntls: {{ca_file: {}, cert_file: {}, key_file: {}}}",
            path("ca.pem"),
            path("client.pem"),
            path("client.key")
        ),
    );
    exporter.consume(traces("mtls", 2)).await.unwrap();
    assert_eq!(backend.state.accepted().len(), 1);

    let anonymous = direct_exporter(
        &tc,
        &format!(
            "endpoint: https://localhost:{port}\ntls: {{ca_file: {}}}",
            path("ca.pem")
        ),
    );
    assert!(anonymous.consume(traces("anonymous", 1)).await.is_err());
    assert_eq!(backend.state.accepted().len(), 1);
}

#[test]
fn retry_after_parsing() {
    assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon"), None);
    let retryable = |code: u16| {
        matches!(
            classify(StatusCode::from_u16(code).unwrap(), None, String::new()),
            SendError::Retryable { .. }
        )
    };
    assert!([429, 502, 503, 504].into_iter().all(retryable));
    assert!(![400, 401, 403, 404, 405, 413, 500, 501]
        .into_iter()
        .any(retryable));
}
