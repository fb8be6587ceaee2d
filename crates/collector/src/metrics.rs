//! The metric families each component type emits, as the generated reference lists them.
//!
//! The families are registered in [`telemetry`](crate::telemetry) (under upstream's names, help
//! texts and labels); each factory's `about()` names the groups below that its component takes
//! children of. Tests check both ways: every family here is registered with this type, help and
//! these labels, and a started component has children in exactly the families it declares.

/// What kind of Prometheus family a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric family: name, type, help and the labels besides the common ones
/// (`service_name`, `service_version`, `service_instance_id`).
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

const fn def(
    name: &'static str,
    kind: MetricKind,
    help: &'static str,
    labels: &'static [&'static str],
) -> MetricDef {
    MetricDef {
        name,
        kind,
        help,
        labels,
    }
}

use MetricKind::{Counter, Gauge, Histogram};

/// Every receiver, per transport.
pub const RECEIVER: &[MetricDef] = &[
    def(
        "otelcol_receiver_accepted_spans",
        Counter,
        "Number of spans successfully pushed into the pipeline.",
        &["receiver", "transport"],
    ),
    def(
        "otelcol_receiver_refused_spans",
        Counter,
        "Number of spans that could not be pushed into the pipeline.",
        &["receiver", "transport"],
    ),
];

/// Processors that count what passes through them (upstream's `processorhelper`).
pub const PROCESSOR: &[MetricDef] = &[
    def(
        "otelcol_processor_incoming_items",
        Counter,
        "Number of items passed to the processor.",
        &["processor", "otel_signal"],
    ),
    def(
        "otelcol_processor_outgoing_items",
        Counter,
        "Number of items emitted from the processor.",
        &["processor", "otel_signal"],
    ),
    def(
        "otelcol_processor_refused_spans",
        Counter,
        "Number of spans that were rejected by the next component in the pipeline.",
        &["processor"],
    ),
];

/// The `batch` processor's own.
pub const BATCH: &[MetricDef] = &[
    def(
        "otelcol_processor_batch_batch_send_size",
        Histogram,
        "Number of units in the batch",
        &["processor"],
    ),
    def(
        "otelcol_processor_batch_batch_size_trigger_send",
        Counter,
        "Number of times the batch was sent due to a size trigger",
        &["processor"],
    ),
    def(
        "otelcol_processor_batch_timeout_trigger_send",
        Counter,
        "Number of times the batch was sent due to a timeout trigger",
        &["processor"],
    ),
];

/// Every exporter (upstream's `exporterhelper`).
pub const EXPORTER: &[MetricDef] = &[
    def(
        "otelcol_exporter_sent_spans",
        Counter,
        "Number of spans successfully sent to destination.",
        &["exporter"],
    ),
    def(
        "otelcol_exporter_send_failed_spans",
        Counter,
        "Number of spans in failed attempts to send to destination.",
        &["exporter"],
    ),
    def(
        "otelcol_exporter_enqueue_failed_spans",
        Counter,
        "Number of spans failed to be added to the sending queue.",
        &["exporter"],
    ),
    def(
        "otelcol_exporter_queue_size",
        Gauge,
        "Current size of the retry queue (in batches)",
        &["exporter", "data_type"],
    ),
    def(
        "otelcol_exporter_queue_capacity",
        Gauge,
        "Fixed capacity of the retry queue (in batches)",
        &["exporter", "data_type"],
    ),
];

/// The `tail_sampling` processor's, as contrib's `tailsamplingprocessor`.
pub const TAIL_SAMPLING: &[MetricDef] = &[
    def(
        "otelcol_processor_tail_sampling_count_traces_sampled",
        Counter,
        "Count of traces that were sampled or not per sampling policy",
        &["processor", "policy", "sampled", "decision"],
    ),
    def(
        "otelcol_processor_tail_sampling_count_spans_sampled",
        Counter,
        "Count of spans that were sampled or not per sampling policy",
        &["processor", "policy", "sampled", "decision"],
    ),
    def(
        "otelcol_processor_tail_sampling_global_count_traces_sampled",
        Counter,
        "Global count of traces that were sampled or not by at least one policy",
        &["processor", "sampled"],
    ),
    def(
        "otelcol_processor_tail_sampling_sampling_decision_latency",
        Histogram,
        "Latency (in microseconds) of a given sampling policy",
        &["processor", "policy"],
    ),
    def(
        "otelcol_processor_tail_sampling_sampling_decision_timer_latency",
        Histogram,
        "Latency (in milliseconds) of each run of the sampling decision timer",
        &["processor"],
    ),
    def(
        "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early",
        Counter,
        "Count of traces that needed to be dropped before the configured wait time",
        &["processor"],
    ),
    def(
        "otelcol_processor_tail_sampling_sampling_traces_on_memory",
        Gauge,
        "Tracks the number of traces current on memory",
        &["processor"],
    ),
    def(
        "otelcol_processor_tail_sampling_new_trace_id_received",
        Counter,
        "Counts the arrival of new traces",
        &["processor"],
    ),
    def(
        "otelcol_processor_tail_sampling_sampling_late_span_age",
        Histogram,
        "Time (in seconds) from the sampling decision was taken and the arrival of a late span",
        &["processor"],
    ),
    def(
        "otelcol_processor_tail_sampling_early_releases_from_cache_decision",
        Counter,
        "Number of spans that were able to be immediately released due to a decision cache hit.",
        &["processor", "sampled"],
    ),
];

/// Every group, for the tests that check them against the registered families.
pub const ALL: &[&[MetricDef]] = &[RECEIVER, PROCESSOR, BATCH, EXPORTER, TAIL_SAMPLING];
