//! The `batch` processor: groups spans into larger requests by size and by time, as upstream's
//! `batchprocessor`. Batches are built by concatenating encoded requests, never by decoding them.
//!
//! `consume` hands data to one batching task over a bounded channel and returns once the task has
//! it (upstream acknowledges the same way), so a slow downstream slows receivers instead of growing
//! memory. The task sends a batch when it reaches `send_batch_size` spans or when `timeout` has
//! passed since its first span, split to at most `send_batch_max_size` spans.

mod config;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_yaml_ng::Value;
use threadline_config::{ComponentId, ConfigErrors};
use threadline_otlp::{TraceData, TraceDataBuilder};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

pub use config::BatchConfig;

use crate::component::{decode_config, Component, CreateContext, Processor, ProcessorFactory};
use crate::consumer::{ConsumeError, NextConsumer, TracesConsumer};
use crate::telemetry::{BatchMetrics, ProcessorMetrics};

/// Requests waiting for the batching task; small, since each one is already a whole request.
const CHANNEL_CAPACITY: usize = 64;

pub struct BatchProcessorFactory;

impl ProcessorFactory for BatchProcessorFactory {
    fn kind(&self) -> &'static str {
        "batch"
    }

    fn validate(&self, config: &Value, path: &str) -> Result<(), ConfigErrors> {
        decode_config::<BatchConfig>(config, path).map(|_| ())
    }

    fn create_traces(
        &self,
        ctx: &CreateContext<'_>,
        config: &Value,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<dyn Processor>> {
        let config: BatchConfig = decode_config(config, &format!("processors::{}", ctx.id))?;
        Ok(Arc::new(BatchProcessor::start(
            ctx.id.clone(),
            &config,
            next,
            ctx.telemetry.processor(ctx.id),
            ctx.telemetry.batch(ctx.id),
        )))
    }
}

pub struct BatchProcessor {
    input: mpsc::Sender<TraceData>,
    task: Mutex<Option<JoinHandle<()>>>,
    shutdown: tokio_util::sync::CancellationToken,
    metrics: ProcessorMetrics,
}

impl BatchProcessor {
    pub fn start(
        id: ComponentId,
        config: &BatchConfig,
        next: NextConsumer,
        metrics: ProcessorMetrics,
        batch_metrics: BatchMetrics,
    ) -> Self {
        let (input, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let batcher = Batcher {
            id,
            timeout: config.timeout.0,
            send_batch_size: (config.send_batch_size as usize).max(1),
            send_batch_max_size: config.send_batch_max_size as usize,
            next,
            metrics: metrics.clone(),
            batch_metrics,
            pending: Pending::default(),
        };
        let task = tokio::spawn(batcher.run(receiver, shutdown.clone()));
        BatchProcessor {
            input,
            task: Mutex::new(Some(task)),
            shutdown,
            metrics,
        }
    }
}

#[async_trait]
impl TracesConsumer for BatchProcessor {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        let spans = data.span_count() as u64;
        match self.input.send(data).await {
            Ok(()) => {
                self.metrics.incoming_items.inc_by(spans);
                Ok(())
            }
            Err(_) => Err(ConsumeError::retryable(
                "the batch processor is shutting down",
            )),
        }
    }
}

#[async_trait]
impl Component for BatchProcessor {
    async fn shutdown(&self, deadline: Instant) {
        self.shutdown.cancel();
        if let Some(task) = self.task.lock().await.take() {
            let wait = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(wait, task).await;
        }
    }
}

/// The batching task's state.
struct Batcher {
    id: ComponentId,
    timeout: Duration,
    send_batch_size: usize,
    send_batch_max_size: usize,
    next: NextConsumer,
    metrics: ProcessorMetrics,
    batch_metrics: BatchMetrics,
    pending: Pending,
}

/// The requests of the batch being built. They are concatenated only when the batch is sent, into
/// one buffer of exactly the right size: growing a buffer as requests arrive would reallocate and,
/// by doubling, hold up to twice the batch's size while it waits in an exporter queue.
#[derive(Default)]
struct Pending {
    parts: Vec<TraceData>,
    spans: usize,
    bytes: usize,
}

impl Pending {
    fn push(&mut self, data: TraceData) {
        self.spans += data.span_count();
        self.bytes += data.encoded_len();
        self.parts.push(data);
    }

    fn span_count(&self) -> usize {
        self.spans
    }

    fn is_empty(&self) -> bool {
        self.spans == 0
    }

    fn take(&mut self) -> TraceData {
        let pending = std::mem::take(self);
        let mut builder = TraceDataBuilder::with_capacity(pending.bytes);
        for part in &pending.parts {
            builder.push(part);
        }
        builder.finish()
    }
}

impl Batcher {
    async fn run(
        mut self,
        mut receiver: mpsc::Receiver<TraceData>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        // When the current batch must go out; None while it is empty.
        let mut flush_at: Option<tokio::time::Instant> = None;
        loop {
            let timer = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = receiver.recv() => match received {
                    Some(data) => {
                        if self.pending.is_empty() {
                            flush_at = Some(tokio::time::Instant::now() + self.timeout);
                        }
                        self.pending.push(data);
                        if self.pending.span_count() >= self.send_batch_size {
                            self.send_full_batches().await;
                            if self.pending.is_empty() {
                                flush_at = None;
                            }
                        }
                    }
                    None => break,
                },
                _ = timer => {
                    self.batch_metrics.timeout_trigger.inc();
                    self.send_all().await;
                    flush_at = None;
                }
                _ = shutdown.cancelled() => break,
            }
        }
        // Shutting down: take what is still queued, then flush everything.
        receiver.close();
        while let Some(data) = receiver.recv().await {
            self.pending.push(data);
        }
        self.send_all().await;
    }

    /// Sends batches while at least `send_batch_size` spans are pending; the rest waits.
    async fn send_full_batches(&mut self) {
        self.batch_metrics.size_trigger.inc();
        let data = self.pending.take();
        let mut batches = if self.send_batch_max_size > 0 {
            data.into_batches(self.send_batch_max_size)
        } else {
            vec![data]
        };
        // Every batch but the last is full; a short last one waits for more spans or the timeout.
        if let Some(last) = batches.last() {
            if last.span_count() < self.send_batch_size {
                if let Some(last) = batches.pop() {
                    self.pending.push(last);
                }
            }
        }
        for batch in batches {
            self.send(batch).await;
        }
    }

    async fn send_all(&mut self) {
        let data = self.pending.take();
        if data.is_empty() {
            return;
        }
        let batches = if self.send_batch_max_size > 0 {
            data.into_batches(self.send_batch_max_size)
        } else {
            vec![data]
        };
        for batch in batches {
            self.send(batch).await;
        }
    }

    async fn send(&self, batch: TraceData) {
        let spans = batch.span_count();
        self.batch_metrics.send_size.observe(spans as f64);
        self.metrics.outgoing_items.inc_by(spans as u64);
        if let Err(err) = self.next.consume(batch).await {
            // As upstream: the batch was acknowledged upstream already; the failure is logged.
            tracing::warn!(processor = %self.id, spans, error = %err, "sending a batch failed");
        }
    }
}
