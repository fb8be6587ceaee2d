//! The `batch` processor: groups spans into larger requests by size and by time, as upstream's
//! `batchprocessor`. Batches are built by concatenating encoded requests, never by decoding them.
//!
//! `consume` hands data to one batching task over a bounded channel and returns once the task has
//! it (upstream acknowledges the same way), so a slow downstream slows receivers instead of growing
//! memory. The task sends a batch when it reaches `send_batch_size` spans or when `timeout` has
//! passed since its first span, split to at most `send_batch_max_size` spans.
//!
//! Unlike upstream, a batch the next stage refuses with a retryable error (an exporter's sending
//! queue is full, the memory limit is reached) is not dropped: it was acknowledged to the client
//! already. The batching task keeps it and offers it again with back-off, and while it holds a
//! refused batch, `consume` refuses new data with a retryable error, so receivers answer
//! `UNAVAILABLE`/503 and clients retry instead of being told their data was accepted. A batch is
//! dropped (logged and counted) only when refused permanently or still refused at the shutdown
//! deadline.
//!
//! With `metadata_keys`, as upstream, each distinct combination of those client-metadata values
//! gets its own batching task (at most `metadata_cardinality_limit` of them over the process's
//! life; past it, data of a new combination is refused permanently), and its batches go downstream
//! carrying exactly those metadata values. Without it, batches carry no client metadata.

mod config;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use threadline_config::ComponentId;
use threadline_otlp::{TraceData, TraceDataBuilder};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use config::BatchConfig;

use crate::client::{self, ClientInfo};
use crate::component::{About, Component, CreateContext, Processor, TypedProcessorFactory};
use crate::consumer::{ConsumeError, NextConsumer, TracesConsumer};
use crate::metrics;
use crate::telemetry::{BatchMetrics, ProcessorMetrics};

/// Requests waiting for the batching task; small, since each one is already a whole request.
const CHANNEL_CAPACITY: usize = 64;
/// First and longest wait before a refused batch is offered again. Short: an exporter queue frees
/// a slot as soon as one request is sent.
const RETRY_FIRST: Duration = Duration::from_millis(20);
const RETRY_LONGEST: Duration = Duration::from_secs(1);

pub struct BatchProcessorFactory;

impl TypedProcessorFactory for BatchProcessorFactory {
    type Config = BatchConfig;

    fn kind(&self) -> &'static str {
        "batch"
    }

    fn about(&self) -> About {
        About {
            upstream: "batchprocessor",
            metrics: &[metrics::PROCESSOR, metrics::BATCH],
        }
    }

    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: BatchConfig,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<dyn Processor>> {
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
    route: Route,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    shutdown: tokio_util::sync::CancellationToken,
    /// Cancelled at the shutdown deadline: a batch still refused then is dropped.
    deadline: tokio_util::sync::CancellationToken,
    metrics: ProcessorMetrics,
}

/// Where consumed data goes: the one batching task, or the task of its metadata combination.
enum Route {
    Single(BatcherInput),
    ByMetadata(Box<MetadataShards>),
}

/// One batching task per distinct combination of `keys` values, created on first use.
struct MetadataShards {
    keys: Vec<String>,
    /// 0 means no limit, as upstream.
    limit: usize,
    shards: std::sync::Mutex<HashMap<ClientInfo, BatcherInput>>,
    template: BatcherTemplate,
}

/// What every batching task of one processor shares.
#[derive(Clone)]
struct BatcherTemplate {
    id: ComponentId,
    timeout: Duration,
    send_batch_size: usize,
    send_batch_max_size: usize,
    next: NextConsumer,
    metrics: ProcessorMetrics,
    batch_metrics: BatchMetrics,
}

impl BatcherTemplate {
    fn spawn(
        &self,
        client: ClientInfo,
        shutdown: &tokio_util::sync::CancellationToken,
        deadline: &tokio_util::sync::CancellationToken,
    ) -> (BatcherInput, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let input = BatcherInput {
            sender,
            refused_downstream: Arc::new(AtomicBool::new(false)),
        };
        let batcher = Batcher {
            refused_downstream: input.refused_downstream.clone(),
            deadline: deadline.clone(),
            id: self.id.clone(),
            timeout: self.timeout,
            send_batch_size: self.send_batch_size,
            send_batch_max_size: self.send_batch_max_size,
            next: self.next.clone(),
            metrics: self.metrics.clone(),
            batch_metrics: self.batch_metrics.clone(),
            pending: Pending::default(),
            client,
        };
        (input, tokio::spawn(batcher.run(receiver, shutdown.clone())))
    }
}

/// The way into one batching task.
#[derive(Clone)]
struct BatcherInput {
    sender: mpsc::Sender<TraceData>,
    /// Set while the task holds a batch the next stage refused: new data is refused meanwhile.
    refused_downstream: Arc<AtomicBool>,
}

impl BatchProcessor {
    pub fn start(
        id: ComponentId,
        config: &BatchConfig,
        next: NextConsumer,
        metrics: ProcessorMetrics,
        batch_metrics: BatchMetrics,
    ) -> Self {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let deadline = tokio_util::sync::CancellationToken::new();
        let template = BatcherTemplate {
            id,
            timeout: config.timeout.0,
            send_batch_size: (config.send_batch_size as usize).max(1),
            send_batch_max_size: config.send_batch_max_size as usize,
            next,
            metrics: metrics.clone(),
            batch_metrics,
        };
        // Validation rejected duplicates already; a config built in code falls back to them as given.
        let keys = client::normalize_keys(&config.metadata_keys)
            .unwrap_or_else(|_| config.metadata_keys.clone());
        let (route, tasks) = if keys.is_empty() {
            let (input, task) = template.spawn(ClientInfo::default(), &shutdown, &deadline);
            (Route::Single(input), vec![task])
        } else {
            let shards = MetadataShards {
                keys,
                limit: config.metadata_cardinality_limit as usize,
                shards: std::sync::Mutex::new(HashMap::new()),
                template,
            };
            (Route::ByMetadata(Box::new(shards)), Vec::new())
        };
        BatchProcessor {
            route,
            tasks: std::sync::Mutex::new(tasks),
            shutdown,
            deadline,
            metrics,
        }
    }

    /// The input of the batching task for the data being consumed, started if it is new.
    fn input(&self) -> Result<BatcherInput, ConsumeError> {
        let shards = match &self.route {
            Route::Single(input) => return Ok(input.clone()),
            Route::ByMetadata(shards) => shards,
        };
        let partition = client::current().restricted_to(&shards.keys);
        // The table is complete after every insert, so a guard poisoned by a panic elsewhere is
        // still good to use.
        let mut map = shards.shards.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(input) = map.get(&partition) {
            return Ok(input.clone());
        }
        if self.shutdown.is_cancelled() {
            return Err(ConsumeError::retryable(
                "the batch processor is shutting down",
            ));
        }
        if shards.limit != 0 && map.len() >= shards.limit {
            // Upstream's error, permanent: retrying cannot make room.
            return Err(ConsumeError::Permanent(format!(
                "too many batcher metadata-value combinations (metadata_cardinality_limit {})",
                shards.limit
            )));
        }
        let (input, task) =
            shards
                .template
                .spawn(partition.clone(), &self.shutdown, &self.deadline);
        // Registered under the table's lock, after the shutdown check: `shutdown` either sees
        // this task or none is started.
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
        map.insert(partition, input.clone());
        Ok(input)
    }

    /// Distinct metadata combinations batched so far (1 without `metadata_keys`).
    pub fn metadata_cardinality(&self) -> usize {
        match &self.route {
            Route::Single(_) => 1,
            Route::ByMetadata(shards) => shards
                .shards
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
        }
    }
}

#[async_trait]
impl TracesConsumer for BatchProcessor {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        let spans = data.span_count() as u64;
        let input = self.input()?;
        if input.refused_downstream.load(Ordering::Relaxed) {
            self.metrics.refused_spans.inc_by(spans);
            return Err(ConsumeError::Retryable {
                message: "the next stage is refusing data (sending queue full or memory limit \
                          reached); retry later"
                    .into(),
                retry_after: Some(RETRY_LONGEST),
            });
        }
        match input.sender.send(data).await {
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
        // Cancelled under the shard table's lock, so that no batching task starts after it.
        match &self.route {
            Route::ByMetadata(shards) => {
                let _table = shards.shards.lock().unwrap_or_else(PoisonError::into_inner);
                self.shutdown.cancel();
            }
            Route::Single(_) => self.shutdown.cancel(),
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        let wait = deadline.saturating_duration_since(Instant::now());
        let all_stopped = futures::future::join_all(tasks);
        tokio::pin!(all_stopped);
        if tokio::time::timeout(wait, &mut all_stopped).await.is_err() {
            // Tasks still offering a refused batch drop it now (logged and counted), then stop.
            self.deadline.cancel();
            all_stopped.await;
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
    /// The metadata this task's batches carry downstream.
    client: ClientInfo,
    refused_downstream: Arc<AtomicBool>,
    deadline: tokio_util::sync::CancellationToken,
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

    /// Hands a batch to the next stage, offering it again with back-off while it is refused with
    /// a retryable error (new data is refused meanwhile, see the module doc).
    async fn send(&self, batch: TraceData) {
        let spans = batch.span_count();
        self.batch_metrics.send_size.observe(spans as f64);
        let mut wait = RETRY_FIRST;
        loop {
            let sent = client::scope(self.client.clone(), self.next.consume(batch.clone())).await;
            let err = match sent {
                Ok(()) => {
                    self.metrics.outgoing_items.inc_by(spans as u64);
                    self.refused_downstream.store(false, Ordering::Relaxed);
                    return;
                }
                Err(err) => err,
            };
            if err.is_permanent() {
                // Retrying cannot help; the batch was acknowledged upstream already.
                tracing::error!(processor = %self.id, spans, error = %err, "the next stage refused a batch permanently; dropping it");
                return;
            }
            if !self.refused_downstream.swap(true, Ordering::Relaxed) {
                tracing::warn!(processor = %self.id, spans, error = %err, "the next stage refused a batch; holding it and refusing new data until it is accepted");
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.deadline.cancelled() => {
                    self.refused_downstream.store(false, Ordering::Relaxed);
                    tracing::error!(processor = %self.id, spans, error = %err, "shutdown deadline: the next stage still refuses a batch; dropping it");
                    return;
                }
            }
            wait = (wait * 2).min(RETRY_LONGEST);
        }
    }
}
