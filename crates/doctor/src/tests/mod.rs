//! Unit tests of every check, on hand-built traces, metrics and configs, with near-misses.
//! The helpers here build traces; each file below tests one group of checks.

mod configs;
mod hops;
mod names_pii;
mod traces;

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

#[test]
fn the_text_report_wraps_prose_and_keeps_every_word() {
    let traces: Vec<Trace> = (0..3u32)
        .flat_map(|i| checkout(i, i as u64 * 100, false))
        .collect();
    let mut report = Report {
        since_seconds: 3600,
        findings: analyze(&traces),
        ..Default::default()
    };
    report.sort();
    let lost = &report.findings[0];
    assert_eq!(lost.kind, "lost_context");
    let text = render::text(&report);
    assert!(text.contains("[CRITICAL] orders → payments loses context on 100% of calls"));
    // Prose (detail, fix) is wrapped to 100 columns; the words all survive, in order.
    for line in text
        .lines()
        .filter(|l| !l.starts_with("  trace ") && !l.starts_with("    "))
    {
        assert!(
            line.chars().count() <= 100 || line.starts_with('['),
            "too long: {line}"
        );
    }
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains(&lost.detail), "{flat}");
    assert!(flat.contains(&format!("fix: {}", lost.fix)), "{flat}");
}
