//! The `debug` exporter: configuration, renderings, sampling and output through `tracing`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use threadline_otlp::proto::tonic::trace::v1::span::{Event, Link};
use threadline_otlp::proto::tonic::trace::v1::Status;

use super::*;
use crate::component::{decode_config, ExporterFactory};
use crate::exporters::testkit::{trace_request, traces, yaml, TestContext};
use threadline_config::ConfigErrors;

fn decode(text: &str) -> Result<DebugExporterConfig, ConfigErrors> {
    decode_config(&yaml(text), "exporters::debug")
}

#[test]
fn decodes_the_upstream_style_sample_and_defaults() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/exporters/debug/testdata/config.yaml"
    ))
    .unwrap();
    assert_eq!(
        decode(&text).unwrap(),
        DebugExporterConfig {
            verbosity: Verbosity::Detailed,
            sampling_initial: 10,
            sampling_thereafter: 50,
            use_internal_logger: false,
        }
    );
    assert_eq!(decode("").unwrap(), DebugExporterConfig::default());
    assert_eq!(
        decode("verbosity: normal").unwrap().verbosity,
        Verbosity::Normal
    );
    let err = decode("verbosity: none").unwrap_err().to_string();
    assert!(
        err.contains("exporters::debug::verbosity") && err.contains("basic, normal, detailed"),
        "{err}"
    );
    let err = decode("loglevel: debug").unwrap_err().to_string();
    assert!(err.contains("loglevel"), "{err}");
}

#[test]
fn basic_counts_resource_spans_and_spans() {
    let mut request = trace_request("a", 3);
    request
        .resource_spans
        .extend(trace_request("b", 2).resource_spans);
    let data = TraceData::from_request(&request);
    let writer = DebugWriter::new("debug".into(), DebugExporterConfig::default());
    assert_eq!(
        writer.render(&data).unwrap(),
        Some(Rendered {
            resource_spans: 2,
            spans: 5,
            body: None
        })
    );
}

#[test]
fn normal_writes_one_line_per_span() {
    let request = trace_request("svc", 2);
    let data = TraceData::from_request(&request);
    let writer = DebugWriter::new(
        "debug".into(),
        DebugExporterConfig {
            verbosity: Verbosity::Normal,
            ..DebugExporterConfig::default()
        },
    );
    let body = writer.render(&data).unwrap().unwrap().body.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 2);
    for (line, span) in lines
        .iter()
        .zip(&request.resource_spans[0].scope_spans[0].spans)
    {
        assert_eq!(
            *line,
            format!(
                "{} {} {} http.method=GET",
                span.name,
                hex::encode(&span.trace_id),
                hex::encode(&span.span_id)
            )
        );
    }
}

#[test]
fn detailed_writes_every_field() {
    let mut request = trace_request("svc", 1);
    let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
    span.parent_span_id = vec![0xab; 8];
    span.trace_state = "ot=th:0".into();
    span.status = Some(Status {
        message: "boom".into(),
        code: 2,
    });
    span.events.push(Event {
        time_unix_nano: 1_581_452_773_000_000_123,
        name: "retry".into(),
        attributes: span.attributes.clone(),
        dropped_attributes_count: 2,
    });
    span.links.push(Link {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        ..Default::default()
    });
    span.dropped_links_count = 3;
    let expected_span = span.clone();
    let data = TraceData::from_request(&request);
    let writer = DebugWriter::new(
        "debug".into(),
        DebugExporterConfig {
            verbosity: Verbosity::Detailed,
            ..DebugExporterConfig::default()
        },
    );
    let body = writer.render(&data).unwrap().unwrap().body.unwrap();
    let expected = format!(
        "ResourceSpans #0
Resource SchemaURL: 
Resource attributes:
     -> service.name: Str(svc)
ScopeSpans #0
ScopeSpans SchemaURL: 
InstrumentationScope threadline-test 1.0
Span #0
    Trace ID       : {trace_id}
    Parent ID      : abababababababab
    ID             : {span_id}
    Name           : svc-0
    Kind           : Server
    TraceState     : ot=th:0
    Start time     : 2023-11-14 22:13:20 +0000 UTC
    End time       : 2023-11-14 22:13:20.5 +0000 UTC
    Status code    : Error
    Status message : boom
Attributes:
     -> http.method: Str(GET)
Events:
SpanEvent #0
     -> Name: retry
     -> Timestamp: 2020-02-11 20:26:13.000000123 +0000 UTC
     -> DroppedAttributesCount: 2
     -> Attributes::
          -> http.method: Str(GET)
Links:
SpanLink #0
     -> Trace ID: 01010101010101010101010101010101
     -> ID: 0202020202020202
     -> TraceState: 
     -> DroppedAttributesCount: 0
    DroppedLinksCount: 3
",
        trace_id = hex::encode(&expected_span.trace_id),
        span_id = hex::encode(&expected_span.span_id),
    );
    assert_eq!(body, expected);
}

#[test]
fn timestamps_print_like_go() {
    assert_eq!(timestamp(0), "1970-01-01 00:00:00 +0000 UTC");
    assert_eq!(
        timestamp(1_581_452_772_000_000_321),
        "2020-02-11 20:26:12.000000321 +0000 UTC"
    );
    // 2000-02-29 (a leap day) 23:59:59.1
    assert_eq!(
        timestamp(951_868_799_100_000_000),
        "2000-02-29 23:59:59.1 +0000 UTC"
    );
}

#[test]
fn sampling_keeps_the_first_then_every_nth_each_second() {
    let start = Instant::now();
    let mut sampler = Sampler::new(2, 3);
    let kept: Vec<bool> = (0..8).map(|_| sampler.keep(start)).collect();
    assert_eq!(
        kept,
        vec![true, true, false, false, true, false, false, true]
    );
    // A new second starts over.
    assert!(sampler.keep(start + Duration::from_millis(1001)));
    assert!(sampler.keep(start + Duration::from_millis(1002)));

    let mut no_sampling = Sampler::new(2, 1);
    assert!((0..100).all(|_| no_sampling.keep(start)));
    let mut initial_only = Sampler::new(1, 0);
    assert!(initial_only.keep(start));
    assert!(!(0..10).any(|_| initial_only.keep(start)));
}

/// Collects formatted `tracing` events.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn writes_to_the_log_at_info_and_counts_sent_spans() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let tc = TestContext::new("debug/verbose");
    let exporter = DebugExporterFactory
        .create_traces(&tc.ctx(), &yaml("verbosity: normal"))
        .unwrap();
    exporter.consume(traces("logged", 3)).await.unwrap();
    exporter.shutdown(Instant::now()).await;

    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(output.contains("INFO"), "{output}");
    assert!(output.contains("TracesExporter"), "{output}");
    assert!(output.contains("exporter=debug/verbose"), "{output}");
    assert!(output.contains("resource_spans=1 spans=3"), "{output}");
    for i in 0..3 {
        assert!(output.contains(&format!("logged-{i} ")), "{output}");
    }
    assert_eq!(tc.metrics().sent_spans.get(), 3);
}
