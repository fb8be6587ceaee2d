//! Collector configs and collector metrics.

use super::*;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Copies of the seed's agent config and gateway resource (`../shared/seed`).
const SEED_AGENT: &str = include_str!("../../testdata/seed-agent-config.yaml");
const SEED_GATEWAY_CR: &str = include_str!("../../testdata/seed-gateway-collector.yaml");

#[test]
fn the_seed_layout_splits_traces() {
    let dir = tempfile::tempdir().unwrap();
    let agent = CollectorFile::load(&write(dir.path(), "agent.yaml", SEED_AGENT)).unwrap();
    let gateway = CollectorFile::load(&write(dir.path(), "gateway.yaml", SEED_GATEWAY_CR)).unwrap();
    assert_eq!(gateway.replicas, Some(3));
    let findings = check_configs(&[agent, gateway], Some(4000.0));
    assert_eq!(
        kinds(&findings),
        vec!["plaintext_export", "plaintext_export", "split_trace_layout"]
    );
    let split = findings
        .iter()
        .find(|f| f.kind == "split_trace_layout")
        .unwrap();
    assert_eq!(split.severity, Severity::Critical);
    assert!(split
        .fix_config
        .as_deref()
        .unwrap()
        .contains("hostname: otel-gateway-collector-headless.observability.svc"));
    // Near-miss: the corrected agent routes by trace id.
    let fixed = SEED_AGENT
        .replace("  otlp:\n    endpoint: otel-gateway-collector.observability.svc:4317\n    tls:\n      insecure: true\n",
                 "  loadbalancing:\n    protocol:\n      otlp:\n        tls:\n          insecure: false\n    resolver:\n      dns:\n        hostname: otel-gateway-collector-headless.observability.svc\n")
        .replace("exporters: [otlp]", "exporters: [loadbalancing]");
    let agent = CollectorFile::load(&write(dir.path(), "fixed.yaml", &fixed)).unwrap();
    let gateway = CollectorFile::load(&write(dir.path(), "gateway.yaml", SEED_GATEWAY_CR)).unwrap();
    let findings = check_configs(&[agent, gateway], Some(4000.0));
    assert_eq!(kinds(&findings), vec!["plaintext_export"], "{findings:#?}");
}

#[test]
fn pipeline_order_retries_and_decision_wait() {
    let dir = tempfile::tempdir().unwrap();
    let text = "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:4317\n\
processors:\n  memory_limiter:\n    check_interval: 1s\n    limit_mib: 100\n  batch: {}\n  tail_sampling:\n    decision_wait: 5s\n    policies: []\n\
exporters:\n  otlp:\n    endpoint: 127.0.0.1:5317\n    tls:\n      insecure: true\n    retry_on_failure:\n      enabled: false\n\
service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch, memory_limiter, tail_sampling]\n      exporters: [otlp]\n";
    let file = CollectorFile::load(&write(dir.path(), "gw.yaml", text)).unwrap();
    let findings = check_configs(&[file], Some(12_000.0));
    assert_eq!(
        kinds(&findings),
        vec![
            "batch_before_tail_sampling",
            "decision_wait_too_short",
            "export_without_retry_or_queue",
            "memory_limiter_not_first"
        ]
    );
    let first = findings
        .iter()
        .find(|f| f.kind == "memory_limiter_not_first")
        .unwrap();
    assert!(first
        .fix_config
        .as_deref()
        .unwrap()
        .contains("[memory_limiter, batch, tail_sampling]"));
    let wait = findings
        .iter()
        .find(|f| f.kind == "decision_wait_too_short")
        .unwrap();
    assert!(wait
        .fix_config
        .as_deref()
        .unwrap()
        .contains("decision_wait: 18s"));
    // Near-miss: traces shorter than decision_wait.
    let file = CollectorFile::load(&write(dir.path(), "gw.yaml", text)).unwrap();
    assert!(!kinds(&check_configs(&[file], Some(1_000.0))).contains(&"decision_wait_too_short"));
}

#[test]
fn bad_config_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = CollectorFile::load(&dir.path().join("missing.yaml"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("missing.yaml"), "{err}");
    let err = CollectorFile::load(&write(dir.path(), "bad.yaml", "receivers: ["))
        .err()
        .unwrap();
    assert!(err.to_string().contains("bad.yaml"), "{err}");
}

#[test]
fn collector_metrics() {
    let text = "# HELP otelcol_receiver_accepted_spans x\n# TYPE otelcol_receiver_accepted_spans counter\n\
otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"} 9000\n\
otelcol_receiver_refused_spans_total{receiver=\"otlp\",transport=\"grpc\"} 1000\n\
otelcol_exporter_sent_spans_total{exporter=\"otlp\"} 8000\n\
otelcol_exporter_send_failed_spans_total{exporter=\"otlp\"} 0\n\
otelcol_exporter_enqueue_failed_spans_total{exporter=\"otlp\"} 12\n\
otelcol_exporter_queue_size{exporter=\"otlp\"} 950\n\
otelcol_exporter_queue_capacity{exporter=\"otlp\"} 1000\n\
otelcol_processor_tail_sampling_sampling_late_span_age_count{processor=\"tail_sampling\"} 7\n\
otelcol_processor_tail_sampling_sampling_trace_dropped_too_early_total{processor=\"tail_sampling\"} 0\n";
    let samples = parse_prometheus(text).unwrap();
    let findings = check_metrics("http://gw:8888/metrics", &samples);
    assert_eq!(
        kinds(&findings),
        vec![
            "exporter_enqueue_failed_spans",
            "exporter_queue_near_capacity",
            "receiver_refused_spans",
            "tail_sampling_late_spans"
        ]
    );
    let refused = findings
        .iter()
        .find(|f| f.kind == "receiver_refused_spans")
        .unwrap();
    assert_eq!(
        (refused.count, refused.total, refused.severity),
        (1000, 10000, Severity::Critical)
    );
    let clean = "otelcol_receiver_accepted_spans_total{receiver=\"otlp\"} 5\notelcol_exporter_queue_size{exporter=\"otlp\"} 1\notelcol_exporter_queue_capacity{exporter=\"otlp\"} 1000\n";
    assert_eq!(
        check_metrics("x", &parse_prometheus(clean).unwrap()),
        vec![]
    );
    assert!(parse_prometheus("otelcol_x{a=\"b\" 1").is_err());
}
