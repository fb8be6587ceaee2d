//! One tenant's generator: its registry, the service-graphs pairing and the span-metrics
//! counters, with Tempo's metric names, labels and units (seconds, bytes).

use std::time::Instant;

use super::config::{MetricsGeneratorConfig, SERVICE_GRAPHS, SPAN_METRICS};
use super::filter::SpanFilter;
use super::pairing::{Edge, Outcome, Pairer, Unpaired};
use super::registry::{Limits, MetricId, MetricKind, Registry, Sample};
use super::span::{kind_label, status_label, SpanSource};

struct Graph {
    pairer: Pairer,
    filter: SpanFilter,
    prefix: bool,
    virtual_node_label: bool,
    dimension_count: usize,
    request_total: MetricId,
    failed_total: MetricId,
    server_seconds: MetricId,
    client_seconds: MetricId,
    unpaired_total: MetricId,
}

struct Spans {
    filter: SpanFilter,
    service: bool,
    span_name: bool,
    span_kind: bool,
    status_code: bool,
    status_message: bool,
    dimensions: Vec<String>,
    calls_total: MetricId,
    latency: MetricId,
    size_total: MetricId,
}

pub struct Instance {
    pub registry: Registry,
    graph: Option<Graph>,
    spans: Option<Spans>,
    /// Spans left out by `filter_policies`.
    pub filtered_spans: u64,
}

/// A Prometheus label name from an attribute name (`http.method` -> `http_method`).
pub fn sanitize_label(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

impl Instance {
    pub fn new(config: &MetricsGeneratorConfig) -> Instance {
        let mut registry = Registry::new(Limits {
            max_active_series: config.max_active_series,
            max_cardinality_per_label: config.max_cardinality_per_label,
            max_label_value_length: config.registry.max_label_value_length,
            stale_duration: config.registry.stale_duration.as_duration(),
        });
        let graph = config.runs(SERVICE_GRAPHS).then(|| {
            let c = &config.processor.service_graphs;
            let mut labels: Vec<String> = ["client", "server", "connection_type"]
                .map(String::from)
                .to_vec();
            for d in &c.dimensions {
                if c.enable_client_server_prefix {
                    labels.push(sanitize_label(&format!("client_{d}")));
                    labels.push(sanitize_label(&format!("server_{d}")));
                } else {
                    labels.push(sanitize_label(d));
                }
            }
            if c.enable_virtual_node_label {
                labels.push("virtual_node".into());
            }
            let buckets: std::sync::Arc<[f64]> = c.histogram_buckets.clone().into();
            Graph {
                pairer: Pairer::new(c),
                // Validated with the config.
                filter: SpanFilter::new(&c.filter_policies).unwrap_or_default(),
                prefix: c.enable_client_server_prefix,
                virtual_node_label: c.enable_virtual_node_label,
                dimension_count: c.dimensions.len(),
                request_total: registry.add(
                    "traces_service_graph_request_total",
                    "Requests between two nodes of the service graph.",
                    MetricKind::Counter,
                    labels.clone(),
                ),
                failed_total: registry.add(
                    "traces_service_graph_request_failed_total",
                    "Failed requests between two nodes of the service graph.",
                    MetricKind::Counter,
                    labels.clone(),
                ),
                server_seconds: registry.add(
                    "traces_service_graph_request_server_seconds",
                    "Duration of the server span of requests between two nodes, in seconds.",
                    MetricKind::Histogram(buckets.clone()),
                    labels.clone(),
                ),
                client_seconds: registry.add(
                    "traces_service_graph_request_client_seconds",
                    "Duration of the client span of requests between two nodes, in seconds.",
                    MetricKind::Histogram(buckets),
                    labels,
                ),
                unpaired_total: registry.add(
                    "traces_service_graph_unpaired_spans_total",
                    "Client or server spans whose other half never arrived within `wait`, by the \
                     service that sent them and the peer attribute they carried.",
                    MetricKind::Counter,
                    ["client", "server", "peer_attribute", "peer"]
                        .map(String::from)
                        .to_vec(),
                ),
            }
        });
        let spans = config.runs(SPAN_METRICS).then(|| {
            let c = &config.processor.span_metrics;
            let i = &c.intrinsic_dimensions;
            let mut labels = Vec::new();
            for (on, name) in [
                (i.service, "service"),
                (i.span_name, "span_name"),
                (i.span_kind, "span_kind"),
                (i.status_code, "status_code"),
                (i.status_message, "status_message"),
            ] {
                if on {
                    labels.push(name.to_string());
                }
            }
            labels.extend(c.dimensions.iter().map(|d| sanitize_label(d)));
            Spans {
                filter: SpanFilter::new(&c.filter_policies).unwrap_or_default(),
                service: i.service,
                span_name: i.span_name,
                span_kind: i.span_kind,
                status_code: i.status_code,
                status_message: i.status_message,
                dimensions: c.dimensions.clone(),
                calls_total: registry.add(
                    "traces_spanmetrics_calls_total",
                    "Spans, by service, name, kind and status.",
                    MetricKind::Counter,
                    labels.clone(),
                ),
                latency: registry.add(
                    "traces_spanmetrics_latency",
                    "Span durations, in seconds.",
                    MetricKind::Histogram(c.histogram_buckets.clone().into()),
                    labels.clone(),
                ),
                size_total: registry.add(
                    "traces_spanmetrics_size_total",
                    "Encoded size of spans, in bytes.",
                    MetricKind::Counter,
                    labels,
                ),
            }
        });
        Instance {
            registry,
            graph,
            spans,
            filtered_spans: 0,
        }
    }

    pub fn waiting_halves(&self) -> usize {
        self.graph.as_ref().map_or(0, |g| g.pairer.waiting())
    }

    pub fn dropped_spans(&self) -> u64 {
        self.graph.as_ref().map_or(0, |g| g.pairer.dropped_spans)
    }

    pub fn add<'a>(&mut self, span: &impl SpanSource<'a>, now: Instant) {
        if let Some(spans) = &self.spans {
            if spans.filter.is_empty() || spans.filter.keeps(span) {
                span_metrics(&mut self.registry, spans, span, now);
            } else {
                self.filtered_spans += 1;
            }
        }
        if let Some(graph) = &mut self.graph {
            if span.essentials().service.is_empty() {
                return;
            }
            if !(graph.filter.is_empty() || graph.filter.keeps(span)) {
                self.filtered_spans += 1;
                return;
            }
            if let Some(edge) = graph.pairer.add(span, now) {
                record_edge(&mut self.registry, graph, &edge, now);
            }
        }
    }

    /// Halves that waited too long become virtual-node edges or unpaired counts.
    pub fn expire(&mut self, now: Instant) {
        let Some(graph) = &mut self.graph else { return };
        for outcome in graph.pairer.expire(now) {
            match outcome {
                Outcome::Edge(edge) => record_edge(&mut self.registry, graph, &edge, now),
                Outcome::Unpaired(u) => record_unpaired(&mut self.registry, graph, &u, now),
            }
        }
    }
}

fn span_metrics<'a>(
    registry: &mut Registry,
    spans: &Spans,
    span: &impl SpanSource<'a>,
    now: Instant,
) {
    let e = span.essentials();
    let dims: Vec<String> = spans
        .dimensions
        .iter()
        .map(|d| {
            span.attribute(d)
                .map(|v| v.into_owned())
                .unwrap_or_default()
        })
        .collect();
    // The intrinsic labels on the stack: a Vec per span was a measurable part of the cost.
    let mut head = [""; 5];
    let mut n = 0;
    for (on, value) in [
        (spans.service, e.service),
        (spans.span_name, e.name),
        (spans.span_kind, kind_label(e.kind)),
        (spans.status_code, status_label(e.status_code)),
        (spans.status_message, e.status_message),
    ] {
        if on {
            head[n] = value;
            n += 1;
        }
    }
    let all: Vec<&str>;
    let values: &[&str] = if dims.is_empty() {
        &head[..n]
    } else {
        all = head[..n]
            .iter()
            .copied()
            .chain(dims.iter().map(String::as_str))
            .collect();
        &all
    };
    registry.record(
        &[
            Sample::Inc(spans.calls_total, 1.0),
            Sample::Observe(spans.latency, e.duration_seconds()),
            Sample::Inc(spans.size_total, e.size as f64),
        ],
        values,
        now,
    );
}

fn record_edge(registry: &mut Registry, graph: &Graph, edge: &Edge, now: Instant) {
    let mut values: Vec<&str> = vec![&edge.client, &edge.server, edge.connection_type];
    fn text(v: &Option<String>) -> &str {
        v.as_deref().unwrap_or("")
    }
    for i in 0..graph.dimension_count {
        let client = edge.client_dimensions.get(i).map_or("", text);
        let server = edge.server_dimensions.get(i).map_or("", text);
        if graph.prefix {
            values.push(client);
            values.push(server);
        } else {
            // One label for both ends (Tempo: either value may win); the server's when present.
            values.push(if server.is_empty() { client } else { server });
        }
    }
    if graph.virtual_node_label {
        values.push(edge.virtual_end.map_or("", |(end, _)| end));
    }
    let samples = [
        Sample::Inc(graph.request_total, 1.0),
        Sample::Observe(graph.server_seconds, edge.server_seconds),
        Sample::Observe(graph.client_seconds, edge.client_seconds),
        Sample::Inc(graph.failed_total, 1.0),
    ];
    // A failed edge also counts in `failed_total`; a call that did not fail creates no series
    // there (as before: failed_total only has series for edges that failed).
    let samples = if edge.failed {
        &samples[..]
    } else {
        &samples[..3]
    };
    registry.record(samples, &values, now);
}

fn record_unpaired(registry: &mut Registry, graph: &Graph, u: &Unpaired, now: Instant) {
    let (client, server) = if u.side == "client" {
        (u.service.as_str(), "")
    } else {
        ("", u.service.as_str())
    };
    registry.inc(
        graph.unpaired_total,
        &[client, server, &u.peer_attribute, &u.peer],
        1.0,
        now,
    );
}
