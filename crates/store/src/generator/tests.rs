//! The generator end to end in-process: OTLP bytes in, series out (pairing across late spans,
//! virtual nodes, cardinality limits), and the JSON graph from a real store.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use threadline_otlp::TraceData;

use super::config::MetricsGeneratorConfig;
use super::exposition;
use super::Generator;

const SECOND: u64 = 1_000_000_000;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

struct S {
    trace: u8,
    id: u8,
    parent: u8,
    kind: i32,
    name: &'static str,
    millis: u64,
    error: bool,
    attributes: Vec<(&'static str, &'static str)>,
}

fn span(trace: u8, id: u8, parent: u8, kind: i32, name: &'static str, millis: u64) -> S {
    S {
        trace,
        id,
        parent,
        kind,
        name,
        millis,
        error: false,
        attributes: Vec::new(),
    }
}

fn batch(service: &str, spans: Vec<S>) -> TraceData {
    let start = 1_700_000_000 * SECOND;
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: spans
                    .into_iter()
                    .map(|s| Span {
                        trace_id: vec![s.trace; 16],
                        span_id: vec![s.id; 8],
                        parent_span_id: if s.parent == 0 {
                            vec![]
                        } else {
                            vec![s.parent; 8]
                        },
                        name: s.name.into(),
                        kind: s.kind,
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + s.millis * 1_000_000,
                        attributes: s.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
                        status: Some(Status {
                            code: if s.error { 2 } else { 0 },
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    TraceData::from_request(&request)
}

fn generator(extra: &str) -> std::sync::Arc<Generator> {
    let yaml = format!("processors: [service-graphs, span-metrics]\n{extra}");
    let config: MetricsGeneratorConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    let mut errors = Vec::new();
    config.validate(&mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    Generator::start(config)
}

fn page(g: &Generator) -> String {
    exposition::render(g, &[("t".to_string(), Vec::new())])
}

/// The value of the sample line that starts with `series` (name and labels, exactly).
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

const CLIENT: i32 = 3;
const SERVER: i32 = 2;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

#[test]
fn a_server_span_arriving_minutes_after_its_client_pairs_once() {
    let g = generator("processor: {service_graphs: {wait: 10m}}");
    let t0 = Instant::now();
    // The server span first is fine too; here the client comes first, the server 5 minutes later.
    g.observe(
        "t",
        &batch("frontend", vec![span(1, 1, 0, SERVER, "GET /", 300)]),
        t0,
    );
    g.observe(
        "t",
        &batch("frontend", vec![span(1, 2, 1, CLIENT, "POST /orders", 250)]),
        t0,
    );
    g.tick(t0 + Duration::from_secs(240));
    let mut server = span(1, 3, 2, SERVER, "POST /orders", 240);
    server.error = true;
    g.observe(
        "t",
        &batch("orders", vec![server]),
        t0 + Duration::from_secs(300),
    );
    // Past `wait` for the first halves, within `stale_duration` (15m) of the last update.
    g.tick(t0 + Duration::from_secs(700));
    let p = page(&g);
    let edge = r#"{client="frontend",server="orders",connection_type=""}"#;
    assert_eq!(
        value(&p, &format!("traces_service_graph_request_total{edge}")),
        Some(1.0),
        "{p}"
    );
    assert_eq!(
        value(
            &p,
            &format!("traces_service_graph_request_failed_total{edge}")
        ),
        Some(1.0)
    );
    // 0.24 s server side: first bucket with le >= 0.24 is 0.4.
    let bucket = |le: &str| {
        value(
            &p,
            &format!(
                r#"traces_service_graph_request_server_seconds_bucket{{client="frontend",server="orders",connection_type="",le="{le}"}}"#
            ),
        )
    };
    assert_eq!(bucket("0.2"), Some(0.0));
    assert_eq!(bucket("0.4"), Some(1.0));
    // The root server span is an edge from `user`.
    assert_eq!(
        value(
            &p,
            r#"traces_service_graph_request_total{client="user",server="frontend",connection_type="virtual_node"}"#
        ),
        Some(1.0)
    );
    assert!(
        !p.contains("traces_service_graph_unpaired_spans_total{"),
        "{p}"
    );
    // Span metrics: one series per service, name, kind, status.
    assert_eq!(
        value(
            &p,
            r#"traces_spanmetrics_calls_total{service="orders",span_name="POST /orders",span_kind="SPAN_KIND_SERVER",status_code="STATUS_CODE_ERROR"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn halves_that_never_meet_are_unpaired_with_their_service_and_peer() {
    let g = generator("processor: {service_graphs: {wait: 30s}}");
    let t0 = Instant::now();
    let mut external = span(2, 2, 1, CLIENT, "charge", 100);
    external.attributes = vec![("peer.service", "stripe")];
    let lonely = span(2, 3, 1, CLIENT, "GET /x", 100);
    g.observe("t", &batch("payments", vec![external, lonely]), t0);
    g.observe(
        "t",
        &batch("inventory", vec![span(2, 9, 8, SERVER, "reserve", 10)]),
        t0,
    );
    g.tick(t0 + Duration::from_secs(29));
    let p = page(&g);
    assert!(!p.contains("stripe"), "not expired yet: {p}");
    g.tick(t0 + Duration::from_secs(31));
    let p = page(&g);
    assert_eq!(
        value(
            &p,
            r#"traces_service_graph_request_total{client="payments",server="stripe",connection_type="virtual_node"}"#
        ),
        Some(1.0),
        "{p}"
    );
    let unpaired = |labels: &str| {
        value(
            &p,
            &format!("traces_service_graph_unpaired_spans_total{labels}"),
        )
    };
    assert_eq!(
        unpaired(r#"{client="payments",server="",peer_attribute="peer.service",peer="stripe"}"#),
        Some(1.0)
    );
    assert_eq!(
        unpaired(r#"{client="payments",server="",peer_attribute="",peer=""}"#),
        Some(1.0)
    );
    assert_eq!(
        unpaired(r#"{client="",server="inventory",peer_attribute="",peer=""}"#),
        Some(1.0)
    );
}

#[test]
fn database_and_messaging_calls_are_edges_with_their_connection_type() {
    let g = generator("");
    let t0 = Instant::now();
    let mut db = span(3, 2, 1, CLIENT, "SELECT orders", 30);
    db.attributes = vec![
        ("db.system.name", "postgresql"),
        ("server.address", "orders-db"),
    ];
    let mut old_db = span(3, 3, 1, CLIENT, "GET", 5);
    old_db.attributes = vec![("db.system", "redis")];
    let produce = span(3, 4, 1, PRODUCER, "orders publish", 2);
    g.observe("t", &batch("orders", vec![db, old_db, produce]), t0);
    g.observe(
        "t",
        &batch(
            "inventory",
            vec![span(3, 5, 4, CONSUMER, "orders process", 7)],
        ),
        t0,
    );
    let p = page(&g);
    for (server, connection) in [
        ("orders-db", "database"),
        ("redis", "database"),
        ("inventory", "messaging_system"),
    ] {
        assert_eq!(
            value(
                &p,
                &format!(
                    r#"traces_service_graph_request_total{{client="orders",server="{server}",connection_type="{connection}"}}"#
                )
            ),
            Some(1.0),
            "{server}: {p}"
        );
    }
}

#[test]
fn cardinality_limits_overflow_and_count_what_they_dropped() {
    let g = generator("max_cardinality_per_label: 3\nmax_active_series: 1000");
    let t0 = Instant::now();
    let spans = (10..20).map(|i| {
        let name: &'static str = Box::leak(format!("GET /item/{i}").into_boxed_str());
        span(4, i, 0, 1, name, 1)
    });
    g.observe("t", &batch("orders", spans.collect()), t0);
    let p = page(&g);
    assert_eq!(
        value(
            &p,
            r#"traces_spanmetrics_calls_total{service="orders",span_name="__cardinality_overflow__",span_kind="SPAN_KIND_INTERNAL",status_code="STATUS_CODE_UNSET"}"#
        ),
        Some(7.0),
        "{p}"
    );
    // 7 values replaced in each of the three span-metrics metrics.
    assert_eq!(
        value(
            &p,
            r#"tempo_metrics_generator_registry_label_values_limited_total{label_name="span_name"}"#
        ),
        Some(21.0)
    );

    let g = generator("max_active_series: 2");
    let spans = (10..15).map(|i| {
        let name: &'static str = Box::leak(format!("op{i}").into_boxed_str());
        span(5, i, 0, 1, name, 1)
    });
    g.observe("t", &batch("orders", spans.collect()), t0);
    let p = page(&g);
    assert_eq!(
        value(
            &p,
            r#"traces_spanmetrics_calls_total{metric_overflow="true"}"#
        ),
        Some(4.0),
        "{p}"
    );
    assert_eq!(
        value(&p, "tempo_metrics_generator_registry_active_series"),
        Some(2.0)
    );
    assert!(value(&p, "tempo_metrics_generator_registry_series_limited_total").unwrap() > 0.0);
}

#[test]
fn filter_policies_leave_spans_out() {
    let g = generator(
        "processor: {span_metrics: {filter_policies: [{include: {match_type: strict, attributes: [{key: kind, value: SPAN_KIND_SERVER}]}}]}}",
    );
    g.observe(
        "t",
        &batch(
            "orders",
            vec![
                span(6, 1, 0, SERVER, "in", 1),
                span(6, 2, 1, CLIENT, "out", 1),
            ],
        ),
        Instant::now(),
    );
    let p = page(&g);
    assert!(p.contains(r#"span_name="in""#), "{p}");
    assert!(!p.contains(r#"span_name="out""#), "{p}");
    assert_eq!(
        value(&p, "tempo_metrics_generator_spans_filtered_total"),
        Some(1.0)
    );
}

#[test]
fn remote_write_request_is_sorted_snappy_protobuf_with_a_zero_first_sample() {
    let g = generator("");
    g.observe(
        "t",
        &batch("orders", vec![span(7, 1, 0, SERVER, "in", 1)]),
        Instant::now(),
    );
    let (_, instance) = g.tenants().into_iter().next().unwrap();
    let mut instance = instance.lock().unwrap();
    let extra = vec![("tenant".to_string(), "t".to_string())];
    let request = super::remote_write::write_request(&mut instance, &extra, 1000);
    let calls = request
        .timeseries
        .iter()
        .find(|t| {
            t.labels
                .iter()
                .any(|l| l.value == "traces_spanmetrics_calls_total")
        })
        .unwrap();
    let names: Vec<&str> = calls.labels.iter().map(|l| l.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(names.contains(&"tenant"));
    assert_eq!(calls.samples.len(), 2);
    assert_eq!(
        (calls.samples[0].value, calls.samples[0].timestamp),
        (0.0, 999)
    );
    assert_eq!(
        (calls.samples[1].value, calls.samples[1].timestamp),
        (1.0, 1000)
    );
    let again = super::remote_write::write_request(&mut instance, &extra, 2000);
    assert!(again.timeseries.iter().all(|t| t.samples.len() == 1));
    let encoded = prost::Message::encode_to_vec(&request);
    let compressed = snap::raw::Encoder::new().compress_vec(&encoded).unwrap();
    let decoded = snap::raw::Decoder::new()
        .decompress_vec(&compressed)
        .unwrap();
    let back: super::remote_write::WriteRequest = prost::Message::decode(&decoded[..]).unwrap();
    assert_eq!(back, request);
}

#[tokio::test]
async fn the_json_graph_comes_from_stored_traces_of_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::tests::config(dir.path(), "");
    let store = crate::Store::open(config).await.unwrap();
    // Ten traces frontend -> orders (one failing, slow) -> postgres.
    for t in 1..=10u8 {
        store
            .append(
                "single-tenant",
                &batch(
                    "frontend",
                    vec![
                        span(t, 1, 0, SERVER, "GET /", 50),
                        span(t, 2, 1, CLIENT, "POST", 40),
                    ],
                ),
            )
            .await
            .unwrap();
        let mut server = span(t, 3, 2, SERVER, "POST", if t == 10 { 900 } else { 30 });
        server.error = t == 10;
        let mut db = span(t, 4, 3, CLIENT, "SELECT", 5);
        db.attributes = vec![("db.system.name", "postgresql")];
        store
            .append("single-tenant", &batch("orders", vec![server, db]))
            .await
            .unwrap();
    }
    let start = 1_700_000_000 - 10;
    let edges = {
        let found = std::sync::Mutex::new(Vec::new());
        let config = crate::generator::config::ServiceGraphsConfig::default();
        store
            .search(
                "single-tenant",
                &crate::SearchRequest {
                    limit: usize::MAX,
                    ..Default::default()
                },
                &|trace| {
                    let mut pairer = super::pairing::Pairer::new(&config);
                    for s in &trace.spans {
                        let s = super::span::ModelSpan::new(s);
                        found.lock().unwrap().extend(pairer.add(&s, Instant::now()));
                    }
                    false
                },
            )
            .await
            .unwrap();
        found.into_inner().unwrap()
    };
    let graph = crate::api_service_graph::build_graph(&edges, start, start + 20);
    let edge = |s: &str, t: &str| {
        graph
            .edges
            .iter()
            .find(|e| e.source == s && e.target == t)
            .unwrap()
    };
    let orders = edge("frontend", "orders");
    assert_eq!((orders.stats.requests, orders.stats.errors), (10, 1));
    assert_eq!(orders.stats.error_rate, 0.1);
    assert_eq!(orders.stats.rate, 0.5);
    assert_eq!(orders.stats.p50_ms, 30.0);
    assert_eq!(orders.stats.p99_ms, 900.0);
    assert_eq!(edge("orders", "postgresql").connection_type, "database");
    assert_eq!(edge("user", "frontend").connection_type, "virtual_node");
    let node = |id: &str| graph.nodes.iter().find(|n| n.id == id).unwrap();
    assert_eq!(node("postgresql").kind, "database");
    assert_eq!(node("user").kind, "external");
    assert_eq!(node("orders").kind, "service");
    assert_eq!(node("orders").stats.requests, 10);
    let json = serde_json::to_value(&graph).unwrap();
    let keys: Vec<&str> = json["edges"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    for key in [
        "source",
        "target",
        "connectionType",
        "requests",
        "errors",
        "rate",
        "errorRate",
        "p50Ms",
        "p95Ms",
        "p99Ms",
    ] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
}

#[tokio::test]
async fn shutdown_sends_the_series_counted_since_the_last_collection() {
    use std::sync::{Arc, Mutex};
    // A real HTTP receiver on 127.0.0.1 that keeps every remote-write body it gets.
    let received: Arc<Mutex<Vec<bytes::Bytes>>> = Arc::default();
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/api/v1/write",
        axum::routing::post(move |body: bytes::Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // A collection interval far longer than the test: only the shutdown flush can send.
    let g = generator(&format!(
        "registry: {{collection_interval: 1h}}\nstorage: {{remote_write: [{{url: \"http://{addr}/api/v1/write\"}}]}}"
    ));
    g.observe(
        "t",
        &batch("orders", vec![span(7, 1, 0, SERVER, "in", 1)]),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(received.lock().unwrap().is_empty());
    g.flush_remote_write(Instant::now() + Duration::from_secs(10))
        .await;
    let bodies = received.lock().unwrap().clone();
    server.abort();
    assert_eq!(bodies.len(), 1);
    let decoded = snap::raw::Decoder::new()
        .decompress_vec(&bodies[0])
        .unwrap();
    let request: super::remote_write::WriteRequest = prost::Message::decode(&decoded[..]).unwrap();
    let calls = request
        .timeseries
        .iter()
        .find(|t| {
            t.labels
                .iter()
                .any(|l| l.value == "traces_spanmetrics_calls_total")
        })
        .expect("the calls counter is sent");
    assert_eq!(calls.samples.last().map(|s| s.value), Some(1.0));
    assert_eq!(g.remote_write_stats().map(|s| s.sent), Some(1));
}
