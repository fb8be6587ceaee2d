//! The `otlp` exporter's configuration, and what it puts on the wire to a real gRPC backend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use threadline_config::settings::Compression;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::*;
use crate::component::{decode_config, Exporter, ExporterFactory};
use crate::consumer::ConsumeError;
use crate::exporters::testkit::{
    partial_success, traces, wait_until, yaml, GrpcBackend, TestContext, TestPki,
};
use threadline_config::ConfigErrors;

const WAIT: Duration = Duration::from_secs(10);

fn decode(text: &str) -> Result<OtlpExporterConfig, ConfigErrors> {
    decode_config(&yaml(text), "exporters::otlp")
}

fn error_text(text: &str) -> String {
    decode(text).unwrap_err().to_string()
}

/// An exporter that sends inside `consume`, so tests see each outcome directly.
fn direct_exporter(tc: &TestContext, config: &str) -> Arc<dyn Exporter> {
    let config = format!(
        "{config}\nsending_queue: {{enabled: false}}\nretry_on_failure: {{enabled: false}}"
    );
    OtlpExporterFactory
        .create_traces(&tc.ctx(), &yaml(&config))
        .unwrap()
}

#[test]
fn decodes_the_upstream_style_sample() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/exporters/otlp/testdata/config.yaml"
    ))
    .unwrap();
    let config = decode(&text).unwrap();
    assert_eq!(config.client.endpoint, "1.2.3.4:1234");
    assert_eq!(config.client.compression, Compression::Zstd);
    assert_eq!(
        config.client.tls.ca_file.as_deref(),
        Some("/var/lib/mycert.pem")
    );
    assert_eq!(config.timeout.as_duration(), Duration::from_secs(10));
    assert_eq!(config.sending_queue.num_consumers, 2);
    assert_eq!(config.sending_queue.queue_size, 10);
    assert_eq!(config.retry_on_failure.multiplier, 1.3);
    assert_eq!(
        config.retry_on_failure.max_elapsed_time.as_duration(),
        Duration::from_secs(600)
    );
    assert_eq!(
        config
            .client
            .headers
            .get("x-scope-orgid")
            .map(String::as_str),
        Some("tenant-1")
    );
    let keepalive = config.client.keepalive.as_ref().unwrap();
    assert_eq!(keepalive.time.as_duration(), Duration::from_secs(20));
    assert!(keepalive.permit_without_stream);
    assert!(config.client.wait_for_ready);
    assert_eq!(
        config.target().unwrap(),
        Target {
            host: "1.2.3.4".into(),
            port: 1234,
            tls: true
        }
    );
}

#[test]
fn defaults_are_upstreams() {
    let config = decode("endpoint: collector:4317").unwrap();
    assert_eq!(config.client.compression, Compression::Gzip);
    assert_eq!(config.timeout.as_duration(), Duration::from_secs(5));
    assert!(config.sending_queue.enabled);
    assert_eq!(config.sending_queue.num_consumers, 10);
    assert_eq!(config.sending_queue.queue_size, 1000);
    assert!(config.retry_on_failure.enabled);
    assert_eq!(
        config.retry_on_failure.initial_interval.as_duration(),
        Duration::from_secs(5)
    );
    assert_eq!(config.client.balancer_name, "round_robin");
    assert!(config.target().unwrap().tls, "TLS unless tls::insecure");
}

#[test]
fn endpoint_schemes_choose_tls() {
    let target = |text: &str| decode(text).unwrap().target().unwrap();
    assert!(target("endpoint: https://collector:4317\ntls: {insecure: true}").tls);
    assert!(!target("endpoint: http://collector:4317").tls);
    assert!(!target("endpoint: collector:4317\ntls: {insecure: true}").tls);
    let dns = target("endpoint: dns:///collector:4317\ntls: {insecure: true}");
    assert_eq!((dns.host.as_str(), dns.port), ("collector", 4317));
    let v6 = target("endpoint: \"[::1]:4317\"");
    assert_eq!((v6.host.as_str(), v6.port), ("::1", 4317));
}

#[test]
fn invalid_settings_are_reported_by_path() {
    assert!(error_text("compression: gzip").contains("exporters::otlp::endpoint"));
    let text = error_text("endpoint: collector");
    assert!(
        text.contains("exporters::otlp::endpoint") && text.contains("missing port"),
        "{text}"
    );
    let text = error_text("endpoint: collector:http");
    assert!(text.contains("invalid port"), "{text}");
    let text = error_text("endpoint: collector:4317\nendpont: x");
    assert!(text.contains("endpont"), "{text}");
    let text = error_text("endpoint: collector:4317\ncompression: snappy");
    assert!(
        text.contains("snappy") && text.contains("gzip, zstd, none"),
        "{text}"
    );
    let text = error_text("endpoint: collector:4317\nbalancer_name: random");
    assert!(text.contains("balancer_name"), "{text}");
    let text = error_text("endpoint: collector:4317\nheaders: {\"bad header\": x}");
    assert!(text.contains("exporters::otlp::headers"), "{text}");
    let text = error_text("endpoint: collector:4317\nsending_queue: {queue_size: 0}");
    assert!(
        text.contains("exporters::otlp::sending_queue::queue_size"),
        "{text}"
    );
    let text = error_text("endpoint: collector:4317\nsending_queue: {sizer: spans}");
    assert!(text.contains("sending_queue::sizer"), "{text}");
    assert!(text.contains("requests, items, bytes"), "{text}");
    let text = error_text("endpoint: collector:4317\nretry_on_failure: {randomization_factor: 2}");
    assert!(
        text.contains("retry_on_failure::randomization_factor"),
        "{text}"
    );
}

#[tokio::test]
async fn sends_the_request_bytes_unchanged_with_gzip_and_headers() {
    let backend = GrpcBackend::start().await;
    let tc = TestContext::new("otlp");
    let exporter = direct_exporter(
        &tc,
        &format!(
            "endpoint: {}\ntls: {{insecure: true}}\nheaders: {{x-scope-orgid: tenant-7}}",
            backend.endpoint()
        ),
    );
    let data = traces("exact", 25);
    exporter.consume(data.clone()).await.unwrap();

    let received = backend.state.accepted();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].body,
        *data.as_bytes(),
        "same bytes as the pipeline's"
    );
    assert_eq!(received[0].request, data.to_request().unwrap());
    assert_eq!(received[0].encoding.as_deref(), Some("gzip"));
    assert_eq!(
        received[0].headers.get("x-scope-orgid").map(String::as_str),
        Some("tenant-7")
    );
    let user_agent = received[0]
        .headers
        .get("user-agent")
        .cloned()
        .unwrap_or_default();
    assert!(user_agent.contains("Threadline/"), "{user_agent}");
    assert_eq!(tc.metrics().sent_spans.get(), 25);
}

#[tokio::test]
async fn zstd_and_no_compression() {
    let backend = GrpcBackend::start().await;
    let tc = TestContext::new("otlp");
    for (compression, expected) in [("zstd", Some("zstd")), ("none", None)] {
        let exporter = direct_exporter(
            &tc,
            &format!(
                "endpoint: {}\ntls: {{insecure: true}}\ncompression: {compression}",
                backend.endpoint()
            ),
        );
        let data = traces(compression, 10);
        exporter.consume(data.clone()).await.unwrap();
        let last = backend.state.accepted().pop().unwrap();
        assert_eq!(last.body, *data.as_bytes());
        assert_eq!(last.encoding.as_deref(), expected, "{compression}");
    }
}

#[tokio::test]
async fn partial_success_counts_rejected_spans_as_failed() {
    let backend = GrpcBackend::start().await;
    backend
        .state
        .respond_with(|_| Ok(partial_success(3, "3 spans had no name")));
    let tc = TestContext::new("otlp");
    let exporter = direct_exporter(
        &tc,
        &format!("endpoint: {}\ntls: {{insecure: true}}", backend.endpoint()),
    );
    exporter.consume(traces("p", 10)).await.unwrap();
    assert_eq!(backend.state.attempts(), 1, "not retried");
    let metrics = tc.metrics();
    assert_eq!(metrics.sent_spans.get(), 7);
    assert_eq!(metrics.send_failed_spans.get(), 3);
}

#[tokio::test]
async fn unreachable_backend_is_retryable() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tc = TestContext::new("otlp");
    let exporter = direct_exporter(
        &tc,
        &format!("endpoint: 127.0.0.1:{port}\ntls: {{insecure: true}}"),
    );
    let err = exporter.consume(traces("x", 1)).await.unwrap_err();
    assert!(matches!(err, ConsumeError::Retryable { .. }), "{err:?}");
}

fn tls_server(pki: &TestPki, require_client_cert: bool) -> ServerTlsConfig {
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(
        &pki.server_cert_pem,
        &pki.server_key_pem,
    ));
    if require_client_cert {
        tls.client_ca_root(Certificate::from_pem(&pki.ca_pem))
    } else {
        tls
    }
}

#[tokio::test]
async fn tls_verifies_the_server_against_ca_file() {
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().unwrap();
    pki.write_to(dir.path());
    let backend = GrpcBackend::start_with(
        Some(tls_server(&pki, false)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let tc = TestContext::new("otlp");
    let ca = dir.path().join("ca.pem");

    let exporter = direct_exporter(
        &tc,
        &format!(
            "endpoint: localhost:{}\ntls: {{ca_file: {}}}",
            backend.addr.port(),
            ca.display()
        ),
    );
    exporter.consume(traces("tls", 2)).await.unwrap();
    assert_eq!(backend.state.accepted().len(), 1);

    // `https://` forces TLS even with `insecure: true`.
    let exporter = direct_exporter(
        &tc,
        &format!(
            "endpoint: https://localhost:{}\ntls: {{insecure: true, ca_file: {}}}",
            backend.addr.port(),
            ca.display()
        ),
    );
    exporter.consume(traces("https", 2)).await.unwrap();
    assert_eq!(backend.state.accepted().len(), 2);

    // The system's CAs do not know this server.
    let exporter = direct_exporter(&tc, &format!("endpoint: localhost:{}", backend.addr.port()));
    let err = exporter.consume(traces("untrusted", 1)).await.unwrap_err();
    assert!(matches!(err, ConsumeError::Retryable { .. }), "{err:?}");

    // ... unless verification is off.
    let exporter = direct_exporter(
        &tc,
        &format!(
            "endpoint: localhost:{}\ntls: {{insecure_skip_verify: true}}",
            backend.addr.port()
        ),
    );
    exporter.consume(traces("skip", 1)).await.unwrap();
    assert_eq!(backend.state.accepted().len(), 3);
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    // Valid for `localhost` only: dialing 127.0.0.1 works through `server_name_override`.
    let pki = TestPki::generate_for(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    pki.write_to(dir.path());
    let backend =
        GrpcBackend::start_with(Some(tls_server(&pki, true)), "127.0.0.1:0".parse().unwrap()).await;
    let tc = TestContext::new("otlp");
    let path = |name: &str| dir.path().join(name).display().to_string();

    let exporter = direct_exporter(
        &tc,
        &format!(
            "endpoint: 127.0.0.1:{}\ntls: {{ca_file: {}, cert_file: {}, key_file: {}, server_name_override: localhost}}",
            backend.addr.port(),
            path("ca.pem"),
            path("client.pem"),
            path("client.key")
        ),
    );
    exporter.consume(traces("mtls", 3)).await.unwrap();
    assert_eq!(backend.state.accepted().len(), 1);

    let without_cert = direct_exporter(
        &tc,
        &format!(
            "endpoint: localhost:{}\ntls: {{ca_file: {}}}",
            backend.addr.port(),
            path("ca.pem")
        ),
    );
    assert!(without_cert.consume(traces("anonymous", 1)).await.is_err());
    assert_eq!(backend.state.accepted().len(), 1);
}

#[tokio::test]
async fn reconnects_after_the_backend_restarts() {
    let backend = GrpcBackend::start().await;
    let addr = backend.addr;
    let tc = TestContext::new("otlp");
    let exporter = OtlpExporterFactory
        .create_traces(
            &tc.ctx(),
            &yaml(&format!(
                "endpoint: {addr}\ntls: {{insecure: true}}\nretry_on_failure: {{initial_interval: 50ms, max_interval: 100ms}}"
            )),
        )
        .unwrap();
    exporter.consume(traces("before", 1)).await.unwrap();
    assert!(wait_until(WAIT, || backend.state.accepted().len() == 1).await);
    backend.stop().await;

    exporter.consume(traces("during", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backend = GrpcBackend::start_with(None, addr).await;
    assert!(wait_until(WAIT, || backend.state.accepted().len() == 1).await);
    exporter
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
    assert_eq!(tc.metrics().sent_spans.get(), 2);
}
