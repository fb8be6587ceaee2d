//! Self-telemetry: the collector's own metrics under the upstream `otelcol_*` names and labels, so
//! dashboards and alerts written for the OpenTelemetry Collector keep working.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use threadline_config::ComponentId;
use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;

/// Bucket bounds of `otelcol_processor_batch_batch_send_size`, as upstream.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0,
    6000.0, 7000.0, 8000.0, 9000.0, 10000.0, 20000.0, 30000.0, 50000.0, 100000.0,
];

/// The metric families of one collector process. Components take labelled children from here.
pub struct Telemetry {
    registry: Registry,
    started: Instant,
    receiver_accepted: IntCounterVec,
    receiver_refused: IntCounterVec,
    processor_refused: IntCounterVec,
    processor_incoming: IntCounterVec,
    processor_outgoing: IntCounterVec,
    batch_send_size: HistogramVec,
    batch_timeout_trigger: IntCounterVec,
    batch_size_trigger: IntCounterVec,
    exporter_sent: IntCounterVec,
    exporter_send_failed: IntCounterVec,
    exporter_enqueue_failed: IntCounterVec,
    exporter_queue_size: IntGaugeVec,
    exporter_queue_capacity: IntGaugeVec,
    tail_sampling: TailSamplingFamilies,
    process_rss: IntGauge,
    process_cpu: Gauge,
    process_uptime: Gauge,
}

/// Counters of one receiver on one transport.
#[derive(Clone)]
pub struct ReceiverMetrics {
    pub accepted_spans: IntCounter,
    pub refused_spans: IntCounter,
}

/// Counters of one processor.
#[derive(Clone)]
pub struct ProcessorMetrics {
    pub refused_spans: IntCounter,
    pub incoming_items: IntCounter,
    pub outgoing_items: IntCounter,
}

/// Metrics of one batch processor.
#[derive(Clone)]
pub struct BatchMetrics {
    pub send_size: Histogram,
    pub timeout_trigger: IntCounter,
    pub size_trigger: IntCounter,
}

/// Counters and gauges of one exporter.
#[derive(Clone)]
pub struct ExporterMetrics {
    pub sent_spans: IntCounter,
    pub send_failed_spans: IntCounter,
    pub enqueue_failed_spans: IntCounter,
    pub queue_size: IntGauge,
    pub queue_capacity: IntGauge,
}

fn counter_vec(
    registry: &Registry,
    const_labels: &std::collections::HashMap<String, String>,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    let opts = Opts::new(name, help).const_labels(const_labels.clone());
    let vec = IntCounterVec::new(opts, labels).expect("static metric definition is valid");
    registry
        .register(Box::new(vec.clone()))
        .expect("metric names are unique");
    vec
}

fn gauge_vec(
    registry: &Registry,
    const_labels: &std::collections::HashMap<String, String>,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntGaugeVec {
    let opts = Opts::new(name, help).const_labels(const_labels.clone());
    let vec = IntGaugeVec::new(opts, labels).expect("static metric definition is valid");
    registry
        .register(Box::new(vec.clone()))
        .expect("metric names are unique");
    vec
}

impl Telemetry {
    /// Creates the metric families. `service_instance_id` identifies this process, as upstream's label does.
    pub fn new(service_instance_id: &str) -> Arc<Self> {
        let registry = Registry::new();
        let mut labels = std::collections::HashMap::new();
        labels.insert("service_name".to_string(), "threadline".to_string());
        labels.insert(
            "service_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        );
        labels.insert(
            "service_instance_id".to_string(),
            service_instance_id.to_string(),
        );
        let r = &registry;
        let l = &labels;
        let batch_send_size = HistogramVec::new(
            HistogramOpts::new(
                "otelcol_processor_batch_batch_send_size",
                "Number of units in the batch",
            )
            .const_labels(labels.clone())
            .buckets(BATCH_SIZE_BUCKETS.to_vec()),
            &["processor"],
        )
        .expect("static metric definition is valid");
        registry
            .register(Box::new(batch_send_size.clone()))
            .expect("metric names are unique");
        let gauge = |name: &str, help: &str| {
            let g = Gauge::with_opts(Opts::new(name, help).const_labels(labels.clone()))
                .expect("static metric definition is valid");
            registry
                .register(Box::new(g.clone()))
                .expect("metric names are unique");
            g
        };
        let process_cpu = gauge(
            "otelcol_process_cpu_seconds",
            "Total CPU user and system time in seconds",
        );
        let process_uptime = gauge("otelcol_process_uptime", "Uptime of the process in seconds");
        let process_rss = IntGauge::with_opts(
            Opts::new(
                "otelcol_process_memory_rss",
                "Total physical memory (resident set size) in bytes",
            )
            .const_labels(labels.clone()),
        )
        .expect("static metric definition is valid");
        registry
            .register(Box::new(process_rss.clone()))
            .expect("metric names are unique");

        Arc::new(Telemetry {
            receiver_accepted: counter_vec(
                r,
                l,
                "otelcol_receiver_accepted_spans",
                "Number of spans successfully pushed into the pipeline.",
                &["receiver", "transport"],
            ),
            receiver_refused: counter_vec(
                r,
                l,
                "otelcol_receiver_refused_spans",
                "Number of spans that could not be pushed into the pipeline.",
                &["receiver", "transport"],
            ),
            processor_refused: counter_vec(
                r,
                l,
                "otelcol_processor_refused_spans",
                "Number of spans that were rejected by the next component in the pipeline.",
                &["processor"],
            ),
            processor_incoming: counter_vec(
                r,
                l,
                "otelcol_processor_incoming_items",
                "Number of items passed to the processor.",
                &["processor", "otel_signal"],
            ),
            processor_outgoing: counter_vec(
                r,
                l,
                "otelcol_processor_outgoing_items",
                "Number of items emitted from the processor.",
                &["processor", "otel_signal"],
            ),
            batch_timeout_trigger: counter_vec(
                r,
                l,
                "otelcol_processor_batch_timeout_trigger_send",
                "Number of times the batch was sent due to a timeout trigger",
                &["processor"],
            ),
            batch_size_trigger: counter_vec(
                r,
                l,
                "otelcol_processor_batch_batch_size_trigger_send",
                "Number of times the batch was sent due to a size trigger",
                &["processor"],
            ),
            exporter_sent: counter_vec(
                r,
                l,
                "otelcol_exporter_sent_spans",
                "Number of spans successfully sent to destination.",
                &["exporter"],
            ),
            exporter_send_failed: counter_vec(
                r,
                l,
                "otelcol_exporter_send_failed_spans",
                "Number of spans in failed attempts to send to destination.",
                &["exporter"],
            ),
            exporter_enqueue_failed: counter_vec(
                r,
                l,
                "otelcol_exporter_enqueue_failed_spans",
                "Number of spans failed to be added to the sending queue.",
                &["exporter"],
            ),
            exporter_queue_size: gauge_vec(
                r,
                l,
                "otelcol_exporter_queue_size",
                "Current size of the retry queue (in batches)",
                &["exporter", "data_type"],
            ),
            exporter_queue_capacity: gauge_vec(
                r,
                l,
                "otelcol_exporter_queue_capacity",
                "Fixed capacity of the retry queue (in batches)",
                &["exporter", "data_type"],
            ),
            tail_sampling: TailSamplingFamilies::register(r, l),
            batch_send_size,
            process_rss,
            process_cpu,
            process_uptime,
            started: Instant::now(),
            registry,
        })
    }

    pub fn receiver(&self, id: &ComponentId, transport: &str) -> ReceiverMetrics {
        let id = id.to_string();
        ReceiverMetrics {
            accepted_spans: self.receiver_accepted.with_label_values(&[&id, transport]),
            refused_spans: self.receiver_refused.with_label_values(&[&id, transport]),
        }
    }

    pub fn processor(&self, id: &ComponentId) -> ProcessorMetrics {
        let id = id.to_string();
        ProcessorMetrics {
            refused_spans: self.processor_refused.with_label_values(&[&id]),
            incoming_items: self.processor_incoming.with_label_values(&[&id, "traces"]),
            outgoing_items: self.processor_outgoing.with_label_values(&[&id, "traces"]),
        }
    }

    pub fn batch(&self, id: &ComponentId) -> BatchMetrics {
        let id = id.to_string();
        BatchMetrics {
            send_size: self.batch_send_size.with_label_values(&[&id]),
            timeout_trigger: self.batch_timeout_trigger.with_label_values(&[&id]),
            size_trigger: self.batch_size_trigger.with_label_values(&[&id]),
        }
    }

    pub fn exporter(&self, id: &ComponentId) -> ExporterMetrics {
        let id = id.to_string();
        ExporterMetrics {
            sent_spans: self.exporter_sent.with_label_values(&[&id]),
            send_failed_spans: self.exporter_send_failed.with_label_values(&[&id]),
            enqueue_failed_spans: self.exporter_enqueue_failed.with_label_values(&[&id]),
            queue_size: self.exporter_queue_size.with_label_values(&[&id, "traces"]),
            queue_capacity: self
                .exporter_queue_capacity
                .with_label_values(&[&id, "traces"]),
        }
    }

    pub fn tail_sampling(&self, id: &ComponentId) -> TailSamplingMetrics {
        TailSamplingMetrics {
            processor: id.to_string(),
            families: self.tail_sampling.clone(),
        }
    }

    /// Renders every metric in the Prometheus text format, refreshing the process gauges first.
    pub fn render(&self) -> String {
        self.refresh_process_metrics();
        let mut out = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }

    fn refresh_process_metrics(&self) {
        self.process_uptime
            .set(self.started.elapsed().as_secs_f64());
        if let Some(rss) = crate::process::resident_memory_bytes() {
            self.process_rss.set(rss as i64);
        }
        if let Some(cpu) = crate::process::cpu_seconds() {
            self.process_cpu.set(cpu);
        }
    }

    /// Serves `GET /metrics` on `endpoint` until `shutdown` fires.
    pub async fn serve(
        self: Arc<Self>,
        endpoint: SocketAddr,
        shutdown: CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let listener = TcpListener::bind(endpoint)
            .await
            .with_context(|| format!("cannot bind the metrics endpoint {endpoint}"))?;
        let telemetry = self;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let telemetry = telemetry.clone();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        telemetry.render(),
                    )
                }
            }),
        );
        Ok(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        }))
    }
}

/// The families of upstream's `tailsamplingprocessor` (same names and labels).
#[derive(Clone)]
struct TailSamplingFamilies {
    count_traces_sampled: IntCounterVec,
    count_spans_sampled: IntCounterVec,
    global_count_traces_sampled: IntCounterVec,
    decision_latency: HistogramVec,
    decision_timer_latency: HistogramVec,
    trace_dropped_too_early: IntCounterVec,
    traces_on_memory: IntGaugeVec,
    new_trace_id_received: IntCounterVec,
    late_span_age: HistogramVec,
    early_releases_from_cache: IntCounterVec,
}

fn histogram_vec(
    registry: &Registry,
    const_labels: &std::collections::HashMap<String, String>,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help)
        .const_labels(const_labels.clone())
        .buckets(buckets);
    let vec = HistogramVec::new(opts, labels).expect("static metric definition is valid");
    registry
        .register(Box::new(vec.clone()))
        .expect("metric names are unique");
    vec
}

impl TailSamplingFamilies {
    fn register(r: &Registry, l: &std::collections::HashMap<String, String>) -> Self {
        const P: &str = "otelcol_processor_tail_sampling_";
        let name = |suffix: &str| format!("{P}{suffix}");
        let micros = vec![
            1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 750.0,
            1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 50000.0,
        ];
        TailSamplingFamilies {
            count_traces_sampled: counter_vec(r, l, &name("count_traces_sampled"), "Count of traces that were sampled or not per sampling policy", &["processor", "policy", "sampled", "decision"]),
            count_spans_sampled: counter_vec(r, l, &name("count_spans_sampled"), "Count of spans that were sampled or not per sampling policy", &["processor", "policy", "sampled", "decision"]),
            global_count_traces_sampled: counter_vec(r, l, &name("global_count_traces_sampled"), "Global count of traces that were sampled or not by at least one policy", &["processor", "sampled"]),
            decision_latency: histogram_vec(r, l, &name("sampling_decision_latency"), "Latency (in microseconds) of a given sampling policy", &["processor", "policy"], micros.clone()),
            decision_timer_latency: histogram_vec(r, l, &name("sampling_decision_timer_latency"), "Latency (in milliseconds) of each run of the sampling decision timer", &["processor"], vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0]),
            trace_dropped_too_early: counter_vec(r, l, &name("sampling_trace_dropped_too_early"), "Count of traces that needed to be dropped before the configured wait time", &["processor"]),
            traces_on_memory: gauge_vec(r, l, &name("sampling_traces_on_memory"), "Tracks the number of traces current on memory", &["processor"]),
            new_trace_id_received: counter_vec(r, l, &name("new_trace_id_received"), "Counts the arrival of new traces", &["processor"]),
            late_span_age: histogram_vec(r, l, &name("sampling_late_span_age"), "Time (in seconds) from the sampling decision was taken and the arrival of a late span", &["processor"], vec![1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]),
            early_releases_from_cache: counter_vec(r, l, &name("early_releases_from_cache_decision"), "Number of spans that were able to be immediately released due to a decision cache hit.", &["processor", "sampled"]),
        }
    }
}

/// Counters of one tail-sampling policy, resolved once (label lookups cost more than the
/// decision itself).
pub struct PolicyMetrics {
    /// (traces, spans) per decision, in the order given to [`TailSamplingMetrics::policy`].
    pub by_decision: Vec<(IntCounter, IntCounter)>,
    /// Microseconds spent deciding.
    pub latency: Histogram,
}

/// The tail_sampling metrics of one processor.
#[derive(Clone)]
pub struct TailSamplingMetrics {
    processor: String,
    families: TailSamplingFamilies,
}

impl TailSamplingMetrics {
    /// The counters of one policy, for each of `decisions` (labels as upstream's: `decision`,
    /// and `sampled` "true" when the decision samples).
    pub fn policy(&self, policy: &str, decisions: &[(&str, bool)]) -> PolicyMetrics {
        let by_decision = decisions
            .iter()
            .map(|(decision, sampled)| {
                let sampled = if *sampled { "true" } else { "false" };
                let labels = [self.processor.as_str(), policy, sampled, decision];
                (
                    self.families
                        .count_traces_sampled
                        .with_label_values(&labels),
                    self.families.count_spans_sampled.with_label_values(&labels),
                )
            })
            .collect();
        PolicyMetrics {
            by_decision,
            latency: self
                .families
                .decision_latency
                .with_label_values(&[self.processor.as_str(), policy]),
        }
    }

    /// `global_count_traces_sampled` for sampled = false and true.
    pub fn final_decisions(&self) -> [IntCounter; 2] {
        ["false", "true"].map(|sampled| {
            self.families
                .global_count_traces_sampled
                .with_label_values(&[self.processor.as_str(), sampled])
        })
    }

    pub fn timer_run(&self, millis: f64) {
        self.families
            .decision_timer_latency
            .with_label_values(&[self.processor.as_str()])
            .observe(millis);
    }

    pub fn dropped_too_early(&self) -> IntCounter {
        self.families
            .trace_dropped_too_early
            .with_label_values(&[self.processor.as_str()])
    }

    pub fn traces_on_memory(&self) -> IntGauge {
        self.families
            .traces_on_memory
            .with_label_values(&[self.processor.as_str()])
    }

    pub fn new_trace(&self) -> IntCounter {
        self.families
            .new_trace_id_received
            .with_label_values(&[self.processor.as_str()])
    }

    pub fn late_span(&self, age_seconds: f64, sampled: bool) {
        self.families
            .late_span_age
            .with_label_values(&[self.processor.as_str()])
            .observe(age_seconds);
        let sampled = if sampled { "true" } else { "false" };
        self.families
            .early_releases_from_cache
            .with_label_values(&[self.processor.as_str(), sampled])
            .inc();
    }
}
