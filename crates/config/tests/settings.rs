//! Decoding component sections into the shared settings types.

use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;
use threadline_config::settings::{
    Compression, GoDuration, GrpcClientSettings, GrpcServerSettings, HttpClientSettings,
    HttpServerSettings, QueueSettings, QueueSizer, RetrySettings, TimeoutSettings, TlsVersion,
    Transport,
};
use threadline_config::{
    decode_component, parse_collector_config, resolve, ComponentId, ConfigSources,
};

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap()
}

/// A batch processor config, as a component would write it.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
struct BatchConfig {
    timeout: GoDuration,
    send_batch_size: u32,
    metadata_keys: Vec<String>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            timeout: GoDuration::from_millis(200),
            send_batch_size: 8192,
            metadata_keys: Vec::new(),
        }
    }
}

/// An exporter that puts shared settings side by side at its top level, as upstream's do.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OtlpExporterConfig {
    #[serde(flatten)]
    client: GrpcClientSettings,
    #[serde(flatten)]
    timeout: TimeoutSettings,
    #[serde(default)]
    retry_on_failure: RetrySettings,
    #[serde(default)]
    sending_queue: QueueSettings,
}

#[test]
fn empty_section_gives_defaults() {
    let config: BatchConfig = decode_component(&Value::Null, "processors::batch").unwrap();
    assert_eq!(config, BatchConfig::default());
    let config: BatchConfig = decode_component(&yaml("{}"), "processors::batch").unwrap();
    assert_eq!(config, BatchConfig::default());
}

#[test]
fn errors_carry_the_full_path() {
    let err =
        decode_component::<BatchConfig>(&yaml("timeout: 5x"), "processors::batch").unwrap_err();
    assert_eq!(
        err.to_string(),
        "processors::batch::timeout: invalid duration \"5x\": unknown unit \"x\"; valid units are ns, us (or µs), ms, s, m, h"
    );

    let err = decode_component::<BatchConfig>(&yaml("send_batch_sise: 10"), "processors::batch")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("processors::batch"), "{err}");
    assert!(err.contains("unknown field `send_batch_sise`, expected one of `timeout`, `send_batch_size`, `metadata_keys`"), "{err}");

    let err = decode_component::<GrpcServerSettings>(
        &yaml("tls: {cert_file: a, key_fil: b}"),
        "receivers::otlp::protocols::grpc",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("receivers::otlp::protocols::grpc::tls"),
        "{err}"
    );
    assert!(err.contains("unknown field `key_fil`"), "{err}");

    let err =
        decode_component::<BatchConfig>(&yaml("metadata_keys: [a, {b: c}]"), "processors::batch")
            .unwrap_err()
            .to_string();
    assert!(
        err.starts_with("processors::batch::metadata_keys[1]: invalid type: map"),
        "{err}"
    );
}

#[test]
fn scalars_are_read_leniently_like_expanded_env_values() {
    // A string field given a number (e.g. `${env:PORT}` that expanded to 4317), a number field
    // given a quoted number, a list given a comma-separated string.
    let config: BatchConfig = decode_component(
        &yaml("timeout: 0\nsend_batch_size: '100'\nmetadata_keys: tenant,region"),
        "processors::batch",
    )
    .unwrap();
    assert_eq!(config.timeout, GoDuration::ZERO);
    assert_eq!(config.send_batch_size, 100);
    assert_eq!(config.metadata_keys, ["tenant", "region"]);

    let server: GrpcServerSettings = decode_component(&yaml("endpoint: 4317"), "x").unwrap();
    assert_eq!(server.endpoint, "4317");

    let err = decode_component::<BatchConfig>(&yaml("timeout: 5"), "processors::batch")
        .unwrap_err()
        .to_string();
    assert!(err.contains("a number needs a unit, e.g. \"5s\""), "{err}");
    let err = decode_component::<BatchConfig>(&yaml("send_batch_size: lots"), "processors::batch")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid type: string \"lots\", expected u32"),
        "{err}"
    );
}

#[test]
fn exporter_with_flattened_settings_decodes_and_rejects_unknown_keys() {
    let section = yaml(
        "endpoint: gw:4317\ntls: {insecure: true}\ntimeout: 10s\ncompression: none\n\
         retry_on_failure: {max_elapsed_time: 1m}\nsending_queue: {queue_size: 50}",
    );
    let config: OtlpExporterConfig = decode_component(&section, "exporters::otlp").unwrap();
    assert_eq!(config.client.endpoint, "gw:4317");
    assert!(config.client.tls.insecure);
    assert_eq!(config.client.compression, Compression::None);
    assert_eq!(config.client.balancer_name, "round_robin");
    assert_eq!(
        config.timeout.timeout.as_duration(),
        Duration::from_secs(10)
    );
    assert_eq!(
        config.retry_on_failure.max_elapsed_time.as_duration(),
        Duration::from_secs(60)
    );
    assert_eq!(
        config.retry_on_failure.initial_interval.as_duration(),
        Duration::from_secs(5)
    );
    assert_eq!(config.sending_queue.queue_size, 50);
    assert_eq!(config.sending_queue.num_consumers, 10);

    let defaults: OtlpExporterConfig =
        decode_component(&yaml("endpoint: gw:4317"), "exporters::otlp").unwrap();
    assert_eq!(
        defaults.timeout.timeout.as_duration(),
        Duration::from_secs(5)
    );
    assert_eq!(defaults.client.compression, Compression::Gzip);

    let err = decode_component::<OtlpExporterConfig>(
        &yaml("endpoint: x\nendpiont: y"),
        "exporters::otlp",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field `endpiont`"), "{err}");
}

#[test]
fn compression_choices() {
    let compression = |text: &str| {
        decode_component::<GrpcClientSettings>(
            &yaml(&format!("compression: {text}")),
            "exporters::otlp",
        )
        .map(|c| c.compression)
    };
    assert_eq!(compression("gzip").unwrap(), Compression::Gzip);
    assert_eq!(compression("zstd").unwrap(), Compression::Zstd);
    assert_eq!(compression("none").unwrap(), Compression::None);
    assert_eq!(compression("''").unwrap(), Compression::None);
    let err = compression("snappy").unwrap_err().to_string();
    assert_eq!(
        err,
        "exporters::otlp::compression: compression \"snappy\" is not supported; supported: gzip, zstd, none"
    );
    assert!(compression("brotli")
        .unwrap_err()
        .to_string()
        .contains("unknown compression \"brotli\""));
}

#[test]
fn documented_upstream_settings_decode() {
    let root = resolve(&ConfigSources {
        configs: vec![format!(
            "{}/testdata/full-settings.yaml",
            env!("CARGO_MANIFEST_DIR")
        )],
        sets: Vec::new(),
    })
    .unwrap();
    let config = parse_collector_config(&root).unwrap();
    let otlp = &config.receivers[&ComponentId::new("otlp")];

    let grpc: GrpcServerSettings = decode_component(
        &otlp["protocols"]["grpc"],
        "receivers::otlp::protocols::grpc",
    )
    .unwrap();
    assert_eq!(grpc.max_recv_msg_size_mib, 16);
    assert_eq!(grpc.transport, Transport::Tcp);
    let keepalive = grpc.keepalive.unwrap();
    assert_eq!(
        keepalive
            .server_parameters
            .unwrap()
            .max_connection_age
            .as_duration(),
        Duration::from_secs(60)
    );
    assert!(keepalive.enforcement_policy.unwrap().permit_without_stream);
    let tls = grpc.tls.unwrap();
    assert_eq!(tls.client_ca_file.as_deref(), Some("/certs/ca.crt"));
    // `min_version: 1.3` unquoted is a YAML number; it still reads as the version.
    assert_eq!(tls.min_version, Some(TlsVersion::V1_3));

    let http: HttpServerSettings = decode_component(
        &otlp["protocols"]["http"],
        "receivers::otlp::protocols::http",
    )
    .unwrap();
    assert_eq!(http.traces_url_path, "/custom/traces");
    assert_eq!(http.metrics_url_path, "/v1/metrics");
    assert_eq!(http.max_request_body_size, 20 * 1024 * 1024);
    assert_eq!(http.cors.unwrap().max_age, 7200);

    let exporter: OtlpExporterConfig = decode_component(
        &config.exporters[&ComponentId::new("otlp")],
        "exporters::otlp",
    )
    .unwrap();
    assert_eq!(exporter.client.compression, Compression::Zstd);
    assert_eq!(
        exporter.client.tls.server_name_override.as_deref(),
        Some("gateway.internal")
    );
    assert!(exporter.client.validate().is_empty());
    assert!(exporter.retry_on_failure.max_elapsed_time.is_zero());
    assert!(exporter.retry_on_failure.validate().is_empty());
    let queue = &exporter.sending_queue;
    assert_eq!(queue.sizer, QueueSizer::Items);
    assert!(queue.blocks_when_full());
    assert_eq!(
        queue.storage,
        Some(ComponentId::with_name("file_storage", "queue"))
    );
    assert_eq!(queue.batch.as_ref().unwrap().max_size, 2000);
    assert!(queue.validate().is_empty());

    let telemetry = &config.service.telemetry;
    assert_eq!(
        telemetry.metrics.prometheus_endpoint().as_deref(),
        Some("0.0.0.0:9888")
    );
    assert!(telemetry.logs.encoding.is_json());
}

#[test]
fn defaults_equal_upstream() {
    let grpc = GrpcServerSettings::default();
    assert_eq!(grpc.max_recv_msg_size_mib, 4);
    let http = HttpServerSettings::default();
    assert_eq!(
        (
            http.traces_url_path.as_str(),
            http.metrics_url_path.as_str(),
            http.logs_url_path.as_str()
        ),
        ("/v1/traces", "/v1/metrics", "/v1/logs")
    );
    let client = HttpClientSettings::default();
    assert_eq!(client.compression, Compression::Gzip);
    assert_eq!(client.max_idle_conns, Some(100));
    let retry = RetrySettings::default();
    assert!(retry.enabled);
    assert_eq!(
        (
            retry.initial_interval.as_duration(),
            retry.max_interval.as_duration(),
            retry.max_elapsed_time.as_duration()
        ),
        (
            Duration::from_secs(5),
            Duration::from_secs(30),
            Duration::from_secs(300)
        )
    );
    assert_eq!((retry.randomization_factor, retry.multiplier), (0.5, 1.5));
    let queue = QueueSettings::default();
    assert!(queue.enabled && !queue.blocks_when_full());
    assert_eq!(
        (queue.num_consumers, queue.queue_size, queue.sizer),
        (10, 1000, QueueSizer::Requests)
    );
    assert_eq!(
        TimeoutSettings::default().timeout.as_duration(),
        Duration::from_secs(5)
    );
}

#[test]
fn validation_names_fields_and_allowed_values() {
    let retry: RetrySettings = decode_component(
        &yaml("randomization_factor: 2\nmax_elapsed_time: 1s\ninitial_interval: 5s"),
        "exporters::otlp::retry_on_failure",
    )
    .unwrap();
    let errors: Vec<String> = retry.validate().iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "randomization_factor: must be within [0, 1], got 2",
            "max_elapsed_time: must not be less than initial_interval",
            "max_elapsed_time: must not be less than max_interval",
        ]
    );

    let queue: QueueSettings = decode_component(
        &yaml("num_consumers: 0\nbatch: {flush_timeout: 0, min_size: 10, max_size: 5}"),
        "q",
    )
    .unwrap();
    let errors: Vec<String> = queue.validate().iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "num_consumers: must be positive",
            "batch::flush_timeout: must be positive",
            "batch::max_size: must be greater than or equal to min_size",
        ]
    );
    let err =
        decode_component::<QueueSettings>(&yaml("sizer: spans"), "exporters::otlp::sending_queue")
            .unwrap_err()
            .to_string();
    assert_eq!(
        err,
        "exporters::otlp::sending_queue::sizer: unknown sizer \"spans\"; expected one of: requests, items, bytes"
    );

    let client: GrpcClientSettings =
        decode_component(&yaml("balancer_name: random"), "exporters::otlp").unwrap();
    let errors: Vec<String> = client.validate().iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "endpoint: must be set to the server's host:port",
            "balancer_name: invalid balancer_name \"random\"; expected one of: round_robin, pick_first",
        ]
    );
    assert_eq!(
        GrpcClientSettings {
            endpoint: "https://gw:4317".into(),
            ..Default::default()
        }
        .host_port(),
        "gw:4317"
    );
}
