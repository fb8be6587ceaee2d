//! Per-request cost of the exporter helper's paths, with a sender that does nothing: what the
//! queue itself adds in front of a real backend.
//!
//! * `direct`: queue disabled, the send runs inside `consume`.
//! * `memory_queue`: `consume` enqueues, 10 workers take requests off the queue.
//! * `persistent_queue/1_producer`: every request written and fsynced (file + directory) before
//!   `consume` returns, read back and deleted by the workers.
//! * `persistent_queue/8_producers`: the same with 8 concurrent `consume` calls, which share
//!   directory fsyncs.
//!
//! Run with `cargo bench -p threadline-collector --bench exporter_queue`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use threadline_collector::component::Component;
use threadline_collector::consumer::TracesConsumer;
use threadline_collector::exporters::helper::{
    Delivered, HelperSettings, QueuePolicy, QueuedRetrySender, RetryPolicy, SendError, Sender,
};
use threadline_collector::telemetry::Telemetry;
use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use threadline_otlp::TraceData;

/// Counts requests and returns at once.
#[derive(Clone, Default)]
struct CountingSender(Arc<AtomicU64>);

impl Sender for CountingSender {
    type Payload = TraceData;

    fn prepare(&self, data: TraceData) -> Result<TraceData, SendError> {
        Ok(data)
    }

    async fn send(&self, _data: &TraceData) -> Result<Delivered, SendError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Delivered::default())
    }
}

/// A 100-span request, about 6 KB.
fn request() -> TraceData {
    let spans = (0..100u8)
        .map(|i| Span {
            trace_id: vec![i.wrapping_add(1); 16],
            span_id: vec![i.wrapping_add(1); 8],
            name: format!("span-{i}"),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        })
        .collect();
    TraceData::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn exporter(queue: QueuePolicy, sent: &CountingSender) -> QueuedRetrySender<CountingSender> {
    let telemetry = Telemetry::new("bench");
    let settings = HelperSettings {
        exporter: "bench".into(),
        metrics: telemetry.exporter(&"otlp".parse().unwrap()),
        retry: RetryPolicy::default(),
        queue,
        attempt_timeout: Some(Duration::from_secs(5)),
    };
    QueuedRetrySender::start(sent.clone(), settings).unwrap()
}

/// Sends `iterations` requests from `producers` concurrent callers and waits until all are sent.
async fn run(
    exporter: Arc<QueuedRetrySender<CountingSender>>,
    sent: &CountingSender,
    data: &TraceData,
    iterations: u64,
    producers: u64,
) -> Duration {
    let before = sent.0.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for producer in 0..producers {
        let exporter = exporter.clone();
        let data = data.clone();
        let count = iterations / producers + u64::from(producer < iterations % producers);
        tasks.push(tokio::spawn(async move {
            for _ in 0..count {
                exporter.consume(data.clone()).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    while sent.0.load(Ordering::Relaxed) - before < iterations {
        tokio::task::yield_now().await;
    }
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let data = request();
    let mut group = c.benchmark_group("exporter_queue");
    group.throughput(Throughput::Elements(1));

    // Producers wait for room rather than being refused, so the figure is sustained throughput.
    let in_memory = |enabled| QueuePolicy {
        enabled,
        block_on_overflow: true,
        ..QueuePolicy::default()
    };
    for (name, policy) in [
        ("direct", in_memory(false)),
        ("memory_queue", in_memory(true)),
    ] {
        let sent = CountingSender::default();
        let exporter = Arc::new(runtime.block_on(async { exporter(policy, &sent) }));
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(run(exporter.clone(), &sent, &data, iterations, 1))
            })
        });
        runtime.block_on(exporter.shutdown(Instant::now() + Duration::from_secs(1)));
    }

    let dir = tempfile::tempdir().unwrap();
    for producers in [1u64, 8] {
        let sent = CountingSender::default();
        let policy = QueuePolicy {
            queue_size: 100_000,
            block_on_overflow: true,
            directory: Some(PathBuf::from(dir.path()).join(format!("queue-{producers}"))),
            ..QueuePolicy::default()
        };
        let exporter = Arc::new(runtime.block_on(async { exporter(policy, &sent) }));
        group.bench_function(format!("persistent_queue/{producers}_producers"), |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(run(exporter.clone(), &sent, &data, iterations, producers))
            })
        });
        runtime.block_on(exporter.shutdown(Instant::now() + Duration::from_secs(1)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(20);
    targets = bench
}
criterion_main!(benches);
