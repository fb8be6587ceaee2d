//! Unit tests of every check, on hand-built traces, metrics and configs, with near-misses.

use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use threadline_otlp::proto::tonic::resource::v1::Resource;
use threadline_otlp::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan};
use threadline_otlp::TraceData;
use threadline_traceql::model::{Span, SpanKind, Trace, Value};

use crate::config_checks::{check_configs, CollectorFile};
use crate::metrics_checks::{check_metrics, parse_prometheus};
use crate::names::{id_kind, template};
use crate::pii::{classify_value, contains_card_number, is_iban, luhn_valid, PiiKind};
use crate::*;

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000 * MS;

fn tid(n: u32) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[12..].copy_from_slice(&n.to_be_bytes());
    id[0] = 0xab;
    id
}

fn sid(n: u32) -> [u8; 8] {
    let mut id = [0u8; 8];
    id[4..].copy_from_slice(&n.to_be_bytes());
    id[0] = 0x01;
    id
}

struct B {
    span: Span,
}

fn span(service: &str, name: &str, kind: SpanKind, id: u32, parent: Option<u32>) -> B {
    B {
        span: Span {
            span_id: sid(id),
            parent_span_id: parent.map(sid),
            name: name.into(),
            kind,
            start_unix_nano: T0,
            end_unix_nano: T0 + 10 * MS,
            resource_attributes: vec![("service.name".into(), Value::Str(service.into()))],
            ..Default::default()
        },
    }
}

impl B {
    fn at(mut self, start_ms: u64, end_ms: u64) -> B {
        self.span.start_unix_nano = T0 + start_ms * MS;
        self.span.end_unix_nano = T0 + end_ms * MS;
        self
    }
    fn attr(mut self, key: &str, value: &str) -> B {
        self.span
            .attributes
            .push((key.into(), Value::Str(value.into())));
        self
    }
    fn int(mut self, key: &str, value: i64) -> B {
        self.span.attributes.push((key.into(), Value::Int(value)));
        self
    }
    fn resource(mut self, key: &str, value: &str) -> B {
        self.span
            .resource_attributes
            .push((key.into(), Value::Str(value.into())));
        self
    }
}

fn trace(id: u32, spans: Vec<B>) -> Trace {
    let trace_id = tid(id);
    Trace {
        trace_id,
        spans: spans
            .into_iter()
            .map(|b| Span { trace_id, ..b.span })
            .collect(),
    }
}

fn analyze(traces: &[Trace]) -> Vec<Finding> {
    let mut analyzer = TraceAnalyzer::new(Thresholds::default());
    for t in traces {
        analyzer.add_trace(t);
    }
    analyzer.finish().0
}

fn kinds(findings: &[Finding]) -> Vec<&str> {
    let mut k: Vec<&str> = findings.iter().map(|f| f.kind.as_str()).collect();
    k.sort();
    k
}

/// frontend → orders, orders → payments over HTTP (with or without context).
fn checkout(n: u32, start_ms: u64, propagate: bool) -> Vec<Trace> {
    let s = start_ms;
    let mut spans = vec![
        span("frontend", "GET /checkout", SpanKind::Server, 1, None).at(s, s + 50),
        span("frontend", "POST", SpanKind::Client, 2, Some(1))
            .at(s + 1, s + 49)
            .attr("server.address", "orders")
            .int("server.port", 8080),
        span("orders", "POST /orders", SpanKind::Server, 3, Some(2))
            .at(s + 2, s + 48)
            .attr("server.address", "orders")
            .int("server.port", 8080),
        span("orders", "POST", SpanKind::Client, 4, Some(3))
            .at(s + 5, s + 40)
            .attr("url.full", "http://payments:9090/charge"),
        // A database call: no instrumented callee, never a finding.
        span("orders", "SELECT orders", SpanKind::Client, 5, Some(3))
            .at(s + 41, s + 45)
            .attr("server.address", "postgres")
            .int("server.port", 5432),
    ];
    let payments = span("payments", "POST /charge", SpanKind::Server, 6, Some(4))
        .at(s + 6, s + 39)
        .attr("server.address", "payments")
        .int("server.port", 9090);
    if propagate {
        spans.push(payments);
        vec![trace(n, spans)]
    } else {
        let mut root = payments;
        root.span.parent_span_id = None;
        vec![trace(n, spans), trace(n + 100_000, vec![root])]
    }
}

#[test]
fn lost_context_is_found_and_the_halves_are_paired() {
    let mut traces = Vec::new();
    for i in 0..25u32 {
        traces.extend(checkout(i, i as u64 * 100, i == 0));
    }
    let findings = analyze(&traces);
    assert_eq!(kinds(&findings), vec!["lost_context"], "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f.title, "orders → payments loses context on 96% of calls");
    assert_eq!(
        f.hop,
        Some(Hop {
            from: "orders".into(),
            to: "payments".into()
        })
    );
    assert_eq!((f.count, f.total), (24, 25));
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.examples.len(), 5);
    for e in &f.examples {
        let client: u32 = u32::from_str_radix(&e.trace_id[24..], 16).unwrap();
        let server = e.linked_trace_id.as_deref().unwrap();
        assert_eq!(server, hex::encode(tid(client + 100_000)), "wrong pair");
    }
    assert!(f.fix_config.as_deref().unwrap().contains("tracecontext"));
}

#[test]
fn clean_calls_and_uninstrumented_callees_give_nothing() {
    let mut traces = Vec::new();
    for i in 0..20u32 {
        traces.extend(checkout(i, i as u64 * 100, true));
    }
    assert_eq!(analyze(&traces), vec![]);
}

#[test]
fn a_root_outside_the_client_interval_is_not_its_other_half() {
    // Near-miss: payments' roots start after the calls ended: nothing to pair.
    let mut traces = Vec::new();
    for i in 0..10u32 {
        let mut t = checkout(i, i as u64 * 100, false);
        for s in &mut t[1].spans {
            s.start_unix_nano += 60 * MS;
            s.end_unix_nano += 60 * MS;
        }
        traces.extend(t);
    }
    traces.extend(checkout(99, 5000, true));
    let findings = analyze(&traces);
    assert!(!kinds(&findings).contains(&"lost_context"), "{findings:#?}");
    // The calls found no span of payments at all: payments did not record them.
    assert_eq!(kinds(&findings), vec!["callee_not_parent_based"]);
    assert_eq!(findings[0].services[0], "payments");
}

#[test]
fn a_callee_that_drops_sampled_calls_is_named() {
    let mut traces = Vec::new();
    for i in 0..10u32 {
        let mut t = checkout(i, i as u64 * 100, true);
        if i % 2 == 1 {
            t[0].spans.retain(|s| s.service_name() != "payments");
        }
        traces.extend(t);
    }
    let findings = analyze(&traces);
    assert_eq!(kinds(&findings), vec!["callee_not_parent_based"]);
    let f = &findings[0];
    assert_eq!(
        f.hop,
        Some(Hop {
            from: "orders".into(),
            to: "payments".into()
        })
    );
    assert_eq!((f.count, f.total), (5, 10));
}

#[test]
fn a_service_recording_unsampled_traces_is_not_parent_based() {
    let mut traces = Vec::new();
    for i in 0..10u32 {
        let mut t = checkout(i, i as u64 * 100, true);
        if i % 2 == 1 {
            // frontend and orders did not sample; payments recorded anyway.
            t[0].spans.retain(|s| s.service_name() == "payments");
        }
        traces.extend(t);
    }
    let findings = analyze(&traces);
    assert_eq!(
        kinds(&findings),
        vec!["sampling_not_parent_based"],
        "{findings:#?}"
    );
    assert_eq!(findings[0].services, vec!["payments".to_string()]);
    assert_eq!(findings[0].count, 5);
}

#[test]
fn orphans_and_several_roots() {
    let mut traces = Vec::new();
    for i in 0..4u32 {
        let mut t = checkout(i, i as u64 * 100, true);
        // orders' server span was lost: its client spans are orphans in a trace with a root.
        t[0].spans.retain(|s| s.name != "POST /orders");
        traces.extend(t);
    }
    for i in 10..13u32 {
        traces.push(trace(
            i,
            vec![
                span("worker", "job", SpanKind::Internal, 1, None),
                span("worker", "job", SpanKind::Internal, 2, None),
            ],
        ));
    }
    let findings = analyze(&traces);
    let orphan = findings
        .iter()
        .find(|f| f.kind == "orphan_spans")
        .expect("orphans");
    assert_eq!(orphan.services, vec!["orders".to_string()]);
    assert_eq!(orphan.count, 8);
    let roots = findings
        .iter()
        .find(|f| f.kind == "several_roots")
        .expect("roots");
    assert_eq!(roots.count, 3);
    assert_eq!(roots.services, vec!["worker".to_string()]);
}

fn request(spans: &[(&str, u32)]) -> TraceData {
    let resource_spans = spans
        .iter()
        .enumerate()
        .map(|(i, (service, flags))| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.to_string())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![ProtoSpan {
                    trace_id: vec![1; 16],
                    span_id: vec![i as u8 + 1; 8],
                    name: "x".into(),
                    flags: *flags,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    TraceData::from_request(&ExportTraceServiceRequest { resource_spans })
}

#[test]
fn spans_disagreeing_on_the_sampled_flag() {
    let mut analyzer = TraceAnalyzer::new(Thresholds::default());
    for i in 0..3 {
        // frontend sampled (0x301: remote parent, sampled); recommendations exported with 0.
        let data = request(&[
            ("frontend", 0x101),
            ("recommendations", 0x300),
            ("recommendations", 0x100),
        ]);
        analyzer.add_flags(tid(i), &data);
        // recommendations also sets the sampled bit elsewhere: it encodes the flags.
        analyzer.add_flags(tid(100 + i), &request(&[("recommendations", 0x101)]));
    }
    let findings = analyzer.finish().0;
    assert_eq!(kinds(&findings), vec!["sampled_flag_disagrees"]);
    assert_eq!(findings[0].services, vec!["recommendations".to_string()]);
    assert_eq!(findings[0].count, 3);
}

#[test]
fn sdks_that_leave_the_trace_flags_out_are_not_disagreeing() {
    // Near-miss: the Python SDK writes only the is-remote bits (0x100/0x300).
    let mut analyzer = TraceAnalyzer::new(Thresholds::default());
    for i in 0..5 {
        analyzer.add_flags(
            tid(i),
            &request(&[("frontend", 0x101), ("py", 0x100), ("py", 0x300)]),
        );
    }
    assert_eq!(analyzer.finish().0, vec![]);
}

/// frontend → shipping → warehouse, shipping's clock `skew_ms` ahead.
fn shipping(n: u32, s: u64, skew_ms: u64) -> Trace {
    trace(
        n,
        vec![
            span("frontend", "GET /ship", SpanKind::Server, 1, None).at(s, s + 100),
            span("frontend", "GET", SpanKind::Client, 2, Some(1)).at(s + 10, s + 90),
            span("shipping", "GET /ship", SpanKind::Server, 3, Some(2))
                .at(s + 20 + skew_ms, s + 80 + skew_ms),
            span("shipping", "GET", SpanKind::Client, 4, Some(3))
                .at(s + 30 + skew_ms, s + 70 + skew_ms),
            span("warehouse", "GET /stock", SpanKind::Server, 5, Some(4)).at(s + 40, s + 60),
            // A consumer running after its producer ended is normal.
            span("warehouse", "publish", SpanKind::Producer, 6, Some(5)).at(s + 41, s + 42),
            span("mailer", "process", SpanKind::Consumer, 7, Some(6)).at(s + 500, s + 510),
        ],
    )
}

#[test]
fn clock_skew_names_the_service_whose_clock_is_off() {
    let traces: Vec<Trace> = (0..10).map(|i| shipping(i, i as u64 * 1000, 300)).collect();
    let findings = analyze(&traces);
    assert_eq!(kinds(&findings), vec!["clock_skew"], "{findings:#?}");
    let f = &findings[0];
    assert_eq!(
        f.services,
        vec![
            "shipping".to_string(),
            "frontend".into(),
            "warehouse".into()
        ]
    );
    assert!(
        f.title.starts_with("shipping's clock is +300 ms off"),
        "{}",
        f.title
    );
    assert_eq!((f.count, f.total), (20, 20));
}

#[test]
fn no_skew_when_children_lie_inside_their_parents() {
    let traces: Vec<Trace> = (0..10).map(|i| shipping(i, i as u64 * 1000, 0)).collect();
    assert_eq!(analyze(&traces), vec![]);
    // Near-miss: 5 ms off is inside the tolerance.
    let traces: Vec<Trace> = (0..10).map(|i| shipping(i, i as u64 * 1000, 5)).collect();
    assert_eq!(analyze(&traces), vec![]);
}

#[test]
fn route_templates() {
    assert_eq!(
        template("GET /api/v2/orders/12345").as_deref(),
        Some("GET /api/v2/orders/{orderId}")
    );
    assert_eq!(
        template("GET /api/v2/orders"),
        None,
        "a numeric version is not an id"
    );
    assert_eq!(template("GET /api/v1.2/status"), None);
    assert_eq!(
        template("GET /users/3f2b8c1e-9d4a-4c6b-8e2f-1a2b3c4d5e6f/categories/77").as_deref(),
        Some("GET /users/{userId}/categories/{categoryId}")
    );
    assert_eq!(
        template("GET /blobs/9f86d081884c7d65").as_deref(),
        Some("GET /blobs/{blobId}")
    );
    assert_eq!(
        template("POST /invite/jane.doe@example.com").as_deref(),
        Some("POST /invite/{email}")
    );
    assert_eq!(
        template("GET /search?q=shoes").as_deref(),
        Some("GET /search")
    );
    assert_eq!(template("payments.Payments/Charge"), None);
    assert_eq!(template("SELECT orders"), None);
    assert_eq!(id_kind("oauth2"), None);
    assert_eq!(id_kind("base64"), None);
    assert_eq!(id_kind("v2"), None);
}

#[test]
fn span_names_with_ids_get_their_template() {
    let mut traces = Vec::new();
    for i in 0..30u32 {
        traces.push(trace(
            i,
            vec![
                span(
                    "catalog",
                    &format!("GET /api/v2/products/{}", 1000 + i),
                    SpanKind::Server,
                    1,
                    None,
                ),
                span(
                    "catalog",
                    "GET /api/v2/health",
                    SpanKind::Server,
                    2,
                    Some(1),
                ),
            ],
        ));
    }
    let findings = analyze(&traces);
    assert_eq!(kinds(&findings), vec!["span_name_has_ids"]);
    let f = &findings[0];
    assert_eq!(
        f.attribute.as_deref(),
        Some("GET /api/v2/products/{productId}")
    );
    assert_eq!(f.services, vec!["catalog".to_string()]);
    assert_eq!((f.count, f.total), (30, 60));
    assert!(f
        .fix_config
        .as_deref()
        .unwrap()
        .contains("replace_pattern(name"));
}

#[test]
fn too_many_distinct_names_without_ids() {
    let traces: Vec<Trace> = (0..250u32)
        .map(|i| {
            let word: String = (0..3)
                .map(|k| (b'a' + ((i / 26u32.pow(k)) % 26) as u8) as char)
                .collect();
            trace(
                i,
                vec![span(
                    "cms",
                    &format!("render {word}"),
                    SpanKind::Internal,
                    1,
                    None,
                )],
            )
        })
        .collect();
    let findings = analyze(&traces);
    assert_eq!(kinds(&findings), vec!["span_name_cardinality"]);
}

#[test]
fn card_numbers_need_a_valid_checksum_and_brand() {
    assert!(luhn_valid(&[
        4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
    ]));
    assert!(contains_card_number("4111 1111 1111 1111"));
    assert!(contains_card_number("card=5500-0000-0000-0004"));
    assert!(contains_card_number("378282246310005"));
    assert!(!contains_card_number("4111111111111112"), "Luhn fails");
    assert!(
        !contains_card_number("1234567812345670"),
        "no brand starts with 1"
    );
    assert!(
        !contains_card_number("order 41111111111111111111"),
        "too long"
    );
}

#[test]
fn iban_phone_tokens_and_keys() {
    assert!(is_iban("GB82WEST12345698765432"));
    assert!(is_iban("DE89 3704 0044 0532 0130 00"));
    assert!(!is_iban("GB83WEST12345698765432"), "checksum");
    assert_eq!(classify_value("+44 20 7946 0958"), Some(PiiKind::Phone));
    assert_eq!(classify_value("+1"), None);
    assert_eq!(classify_value("Bearer abc.def"), Some(PiiKind::BearerToken));
    assert_eq!(
        classify_value("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"),
        Some(PiiKind::Jwt)
    );
    assert_eq!(
        classify_value("sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        Some(PiiKind::ApiKey)
    );
    assert_eq!(
        classify_value("AKIAIOSFODNN7EXAMPLE"),
        Some(PiiKind::ApiKey)
    );
    assert_eq!(classify_value("jane.doe@example.com"), Some(PiiKind::Email));
    assert_eq!(classify_value("user@localhost"), None);
    assert_eq!(classify_value("GET /api/v2/orders"), None);
    assert_eq!(classify_value("1.45.2"), None);
    assert!(crate::pii::secret_key_name("db.password"));
    assert!(crate::pii::secret_key_name(
        "http.request.header.authorization"
    ));
    assert!(!crate::pii::secret_key_name("gen_ai.usage.input_tokens"));
}

#[test]
fn pii_in_attributes_is_reported_masked_with_a_processor_snippet() {
    let traces: Vec<Trace> = (0..3u32)
        .map(|i| {
            trace(
                i,
                vec![span("profile", "GET /profile", SpanKind::Server, 1, None)
                    .attr("user.email", "jane.doe@example.com")
                    // A test card in a test environment still counts.
                    .attr("payment.card", "4111111111111111")
                    .attr("db.password", "hunter2hunter2")
                    .attr("order.id", "1234567812345678")
                    .resource("deployment.environment", "test")],
            )
        })
        .collect();
    let findings = analyze(&traces);
    assert_eq!(
        kinds(&findings),
        vec!["pii_card_number", "pii_email", "pii_secret_key"]
    );
    let json = serde_json::to_string(&findings).unwrap();
    for secret in ["jane.doe", "example.com", "4111111111111111", "hunter2"] {
        assert!(!json.contains(secret), "{secret} leaked: {json}");
    }
    let email = findings.iter().find(|f| f.kind == "pii_email").unwrap();
    assert_eq!(email.attribute.as_deref(), Some("user.email"));
    assert_eq!(email.count, 3);
    let snippet = email.fix_config.as_deref().unwrap();
    assert!(
        snippet.contains("attributes/redact")
            && snippet.contains("key: user.email")
            && snippet.contains("action: hash")
    );
    let secret = findings
        .iter()
        .find(|f| f.kind == "pii_secret_key")
        .unwrap();
    assert!(secret
        .fix_config
        .as_deref()
        .unwrap()
        .contains("action: delete"));
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Copies of the seed's agent config and gateway resource (`../shared/seed`).
const SEED_AGENT: &str = include_str!("../testdata/seed-agent-config.yaml");
const SEED_GATEWAY_CR: &str = include_str!("../testdata/seed-gateway-collector.yaml");

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

#[test]
fn reports_order_by_impact_and_count_severities() {
    let mut report = Report::default();
    let mut base = check_metrics("x", &parse_prometheus("otelcol_processor_refused_spans{processor=\"memory_limiter\"} 3\notelcol_exporter_enqueue_failed_spans{exporter=\"otlp\"} 2\n").unwrap());
    report.findings.append(&mut base);
    report.sort();
    assert_eq!(report.findings[0].severity, Severity::Critical);
    assert_eq!(report.at_least(Severity::Warning), 2);
    assert_eq!(report.at_least(Severity::Critical), 1);
    assert!(render::text(&report).contains("== Pipeline health (2) =="));
    assert_eq!("warning".parse::<Severity>(), Ok(Severity::Warning));
    assert!("bad".parse::<Severity>().is_err());
    assert_eq!(parse_since("1h").unwrap(), 3600);
    assert!(parse_since("1x").is_err() && parse_since("").is_err() && parse_since("0m").is_err());
}
