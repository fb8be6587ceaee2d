//! What every exporter shares, after upstream's `exporterhelper`: a sending queue (in memory, or on
//! disk through `file_storage`), retries with exponential back-off, a per-attempt timeout and the
//! `otelcol_exporter_*` metrics.
//!
//! An exporter implements [`Sender`] (one attempt at sending one request) and wraps it in a
//! [`QueuedRetrySender`], which is the running exporter the pipeline sees:
//!
//! ```text
//! consume ─▶ Sender::prepare ─▶ sending_queue ─▶ num_consumers workers ─▶ retry loop ─▶ Sender::send
//!            (or, with the queue disabled, prepare and the retry loop run inside consume)
//! ```
//!
//! * `prepare` turns a request into what is sent (for the OTLP exporters: the compressed body).
//!   It runs once per request, on the blocking pool, before the request waits in an in-memory
//!   queue: the queue holds the compressed form (about a ninth of the size for gzip), retries
//!   reuse it, and when compression cannot keep up, `consume` waits for a free preparer, which
//!   slows the pipeline (and, through it, the receivers) instead of filling memory. At most one
//!   request per CPU is prepared at a time. A persistent queue stores requests as received and
//!   prepares them when they are read back.
//! * The queue holds `queue_size` units of its `sizer`, as upstream: requests (the default),
//!   items (spans) or bytes (of the request as received). A request larger than the whole queue
//!   is taken when the queue is empty rather than never.
//! * A full queue refuses data (`ConsumeError::Retryable`, counted in
//!   `otelcol_exporter_enqueue_failed_spans`) unless `block_on_overflow`/`blocking` is set. Behind
//!   a batch processor the refusal reaches the receivers, which answer with the retryable status
//!   (see `processors/batch`): nothing acknowledged is dropped for a full queue.
//! * Retryable failures are retried with back-off; a throttle hint from the server (gRPC
//!   `RetryInfo`, HTTP `Retry-After`) makes the wait at least that long.
//! * Data that fails permanently, or whose retries run out, is dropped, logged at error level and
//!   counted in `otelcol_exporter_send_failed_spans`.
//! * `shutdown(deadline)` stops accepting; an in-memory queue keeps sending until the deadline; a
//!   persistent queue finishes the sends in flight and leaves the rest on disk for the next start.

mod backoff;
mod config;
mod persistent;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use threadline_config::settings::QueueSizer;
use threadline_otlp::TraceData;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use backoff::{Backoff, RetryPolicy};
pub use config::{queue_policy, retry_policy, validate as validate_settings, QueueError};
pub use persistent::{DiskQueue, ReadError};

use crate::component::{Component, Exporter};
use crate::consumer::{ConsumeError, TracesConsumer};
use crate::telemetry::ExporterMetrics;

/// Why one attempt to send a request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// May succeed later. `throttle` is the server's hint of how long to wait.
    #[error("{message}")]
    Retryable {
        message: String,
        throttle: Option<Duration>,
    },
    /// Will never succeed; the data is dropped.
    #[error("{0}")]
    Permanent(String),
}

impl SendError {
    pub fn retryable(message: impl Into<String>) -> Self {
        SendError::Retryable {
            message: message.into(),
            throttle: None,
        }
    }
}

/// A request the backend accepted. `rejected_spans` of it were refused in a partial success
/// (already logged by the sender); they are counted as failed and not retried, as upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    pub rejected_spans: u64,
}

/// One attempt at sending one request to the backend.
pub trait Sender: Send + Sync + 'static {
    /// What an attempt sends, built once per request and reused by every retry.
    type Payload: Send + Sync + 'static;

    /// Builds the payload of a request (encoding, compression). CPU-bound: the helper runs it on
    /// the blocking pool. An error is permanent: the request is dropped and counted.
    fn prepare(&self, data: TraceData) -> Result<Self::Payload, SendError>;

    fn send(
        &self,
        payload: &Self::Payload,
    ) -> impl Future<Output = Result<Delivered, SendError>> + Send;
}

/// How requests wait to be sent (`sending_queue`, resolved).
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePolicy {
    /// `false`: send inside `consume`, and hand errors back to the pipeline.
    pub enabled: bool,
    /// Workers sending concurrently.
    pub num_consumers: usize,
    /// What the queue holds, in `sizer` units.
    pub queue_size: usize,
    /// What `queue_size` counts.
    pub sizer: QueueSizer,
    /// Wait for room instead of refusing data when the queue is full.
    pub block_on_overflow: bool,
    /// Keep the queue in this directory (persistent queue) instead of in memory.
    pub directory: Option<PathBuf>,
}

impl Default for QueuePolicy {
    /// Upstream's defaults.
    fn default() -> Self {
        QueuePolicy {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
            sizer: QueueSizer::Requests,
            block_on_overflow: false,
            directory: None,
        }
    }
}

/// Everything a [`QueuedRetrySender`] needs besides the [`Sender`].
pub struct HelperSettings {
    /// The exporter's id, for logs.
    pub exporter: String,
    pub metrics: ExporterMetrics,
    pub retry: RetryPolicy,
    pub queue: QueuePolicy,
    /// Limit of one attempt (`timeout`); `None` leaves it to the sender (e.g. an HTTP client timeout).
    pub attempt_timeout: Option<Duration>,
}

/// Why a send with retries did not succeed.
enum Failure {
    /// The backend refused the data for good.
    Permanent(String),
    /// Retryable, but retries are disabled or used up.
    GaveUp {
        message: String,
        throttle: Option<Duration>,
    },
    /// The shutdown deadline passed first.
    Interrupted(String),
}

impl Failure {
    fn reason(&self) -> &str {
        match self {
            Failure::Permanent(reason)
            | Failure::GaveUp {
                message: reason, ..
            }
            | Failure::Interrupted(reason) => reason,
        }
    }
}

const DROPPING: &str = "Exporting failed. Dropping data.";

/// The retry loop and the metrics, shared by `consume` and the queue workers.
struct Core<S> {
    sender: S,
    exporter: String,
    metrics: ExporterMetrics,
    retry: RetryPolicy,
    attempt_timeout: Option<Duration>,
    /// Cancelled at the shutdown deadline: back-off waits and attempts in flight end there.
    deadline_reached: CancellationToken,
    /// Cancelled at shutdown when waiting is pointless (a persistent queue keeps the data for the
    /// next start): back-off waits end at once; attempts in flight still get until the deadline.
    stop_waiting: CancellationToken,
}

impl<S: Sender> Core<S> {
    /// [`Sender::prepare`] on the blocking pool, so that compressing a large batch never holds up
    /// the async workers that serve receivers.
    /// The client info of the data is visible to `prepare` (`headers_setter`'s `from_context`).
    async fn prepare(self: &Arc<Self>, data: TraceData) -> Result<S::Payload, String> {
        let core = self.clone();
        let info = crate::client::current();
        let prepare = move || crate::client::sync_scope(info, || core.sender.prepare(data));
        match tokio::task::spawn_blocking(prepare).await {
            Ok(Ok(payload)) => Ok(payload),
            Ok(Err(err)) => Err(err.to_string()),
            Err(join) => Err(format!("preparing the request failed: {join}")),
        }
    }

    async fn send_with_retry(&self, data: &S::Payload) -> Result<Delivered, Failure> {
        let mut backoff = Backoff::start(&self.retry);
        loop {
            let result = tokio::select! {
                result = self.attempt(data) => Some(result),
                _ = self.deadline_reached.cancelled() => None,
            };
            let Some(result) = result else {
                return Err(Failure::Interrupted(
                    "the exporter was shut down before the data could be sent".into(),
                ));
            };
            let (message, throttle) = match result {
                Ok(delivered) => return Ok(delivered),
                Err(SendError::Permanent(message)) => return Err(Failure::Permanent(message)),
                Err(SendError::Retryable { message, throttle }) => (message, throttle),
            };
            let Some(delay) = backoff.next_delay(throttle) else {
                let message = if self.retry.enabled {
                    format!("no more retries left: {message}")
                } else {
                    message
                };
                return Err(Failure::GaveUp { message, throttle });
            };
            tracing::info!(
                exporter = %self.exporter,
                error = %message,
                interval = ?delay,
                "Exporting failed. Will retry the request after interval."
            );
            let interrupted = tokio::select! {
                _ = tokio::time::sleep(delay) => false,
                _ = self.stop_waiting.cancelled() => true,
                _ = self.deadline_reached.cancelled() => true,
            };
            if interrupted {
                return Err(Failure::Interrupted(format!(
                    "the exporter was shut down while waiting to retry: {message}"
                )));
            }
        }
    }

    async fn attempt(&self, data: &S::Payload) -> Result<Delivered, SendError> {
        match self.attempt_timeout {
            None => self.sender.send(data).await,
            Some(limit) => tokio::time::timeout(limit, self.sender.send(data))
                .await
                .unwrap_or_else(|_| {
                    Err(SendError::retryable(format!(
                        "the request timed out after {limit:?}"
                    )))
                }),
        }
    }

    fn record_delivered(&self, spans: u64, delivered: Delivered) {
        let rejected = delivered.rejected_spans.min(spans);
        self.metrics.sent_spans.inc_by(spans - rejected);
        self.metrics.send_failed_spans.inc_by(rejected);
    }

    /// Counts and logs data that is lost for good.
    fn record_dropped(&self, spans: u64, reason: &str, log_message: &'static str) {
        self.metrics.send_failed_spans.inc_by(spans);
        tracing::error!(exporter = %self.exporter, spans, reason, "{log_message}");
    }
}

/// A request waiting in the sending queue.
enum Queued<P> {
    /// Prepared, in memory.
    InMemory { payload: P, spans: u64 },
    /// In the persistent queue; read back and prepared when its turn comes.
    OnDisk { disk: Arc<DiskQueue>, seq: u64 },
}

/// A request in the queue with the room it takes (`sizer` units), given back when a worker takes
/// it. Requests recovered from disk at start take none: they are never refused.
struct Entry<P> {
    queued: Queued<P>,
    units: u32,
    _room: Option<OwnedSemaphorePermit>,
}

struct Queue<P> {
    /// Taken at shutdown so that nothing more is accepted.
    intake: Mutex<Option<mpsc::UnboundedSender<Entry<P>>>>,
    /// Shared by the workers; each takes the next request in turn.
    outlet: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Entry<P>>>>,
    /// The queue's capacity in `sizer` units; an entry holds its units until a worker takes it.
    room: Arc<Semaphore>,
    capacity: u32,
    sizer: QueueSizer,
    /// Requests being prepared before they enter an in-memory queue: one permit per CPU.
    preparers: Arc<Semaphore>,
    preparer_count: u32,
    block_on_overflow: bool,
    disk: Option<Arc<DiskQueue>>,
    /// Persistent queue only: cancelled at shutdown so workers take no new request.
    stop_taking: CancellationToken,
    workers: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// A running exporter: queue, retries and metrics around a [`Sender`].
pub struct QueuedRetrySender<S: Sender> {
    core: Arc<Core<S>>,
    queue: Option<Queue<S::Payload>>,
    shut_down: AtomicBool,
}

impl<S: Sender> QueuedRetrySender<S> {
    /// Starts the queue workers (in the current tokio runtime). With a persistent queue, the
    /// requests left on disk by a previous run are queued first.
    pub fn start(sender: S, settings: HelperSettings) -> Result<Self, QueueError> {
        let core = Arc::new(Core {
            sender,
            exporter: settings.exporter,
            metrics: settings.metrics,
            retry: settings.retry,
            attempt_timeout: settings.attempt_timeout,
            deadline_reached: CancellationToken::new(),
            stop_waiting: CancellationToken::new(),
        });
        let policy = settings.queue;
        if !policy.enabled {
            return Ok(QueuedRetrySender {
                core,
                queue: None,
                shut_down: AtomicBool::new(false),
            });
        }

        let (disk, recovered) = match &policy.directory {
            None => (None, Vec::new()),
            Some(dir) => {
                let (disk, recovered) =
                    DiskQueue::open(dir).map_err(|source| QueueError::Open {
                        path: dir.clone(),
                        source,
                    })?;
                if !recovered.is_empty() {
                    tracing::info!(
                        exporter = %core.exporter,
                        requests = recovered.len(),
                        directory = %dir.display(),
                        "sending the requests left in the persistent queue by the previous run"
                    );
                }
                (Some(Arc::new(disk)), recovered)
            }
        };
        // Requests found on disk are never dropped: they are queued outside the capacity.
        let capacity = policy
            .queue_size
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let (intake, outlet) = mpsc::unbounded_channel();
        if let Some(disk) = &disk {
            for seq in recovered {
                let queued = Queued::OnDisk {
                    disk: disk.clone(),
                    seq,
                };
                let entry = Entry {
                    queued,
                    units: 1,
                    _room: None,
                };
                if intake.send(entry).is_ok() {
                    core.metrics.queue_size.inc();
                }
            }
        }
        core.metrics.queue_capacity.set(policy.queue_size as i64);

        let outlet = Arc::new(tokio::sync::Mutex::new(outlet));
        let preparer_count = preparer_count();
        let stop_taking = CancellationToken::new();
        let workers = (0..policy.num_consumers.max(1))
            .map(|_| {
                tokio::spawn(run_worker(
                    core.clone(),
                    outlet.clone(),
                    stop_taking.clone(),
                ))
            })
            .collect();
        Ok(QueuedRetrySender {
            core,
            queue: Some(Queue {
                intake: Mutex::new(Some(intake)),
                outlet,
                room: Arc::new(Semaphore::new(capacity)),
                capacity: capacity as u32,
                sizer: policy.sizer,
                preparers: Arc::new(Semaphore::new(preparer_count as usize)),
                preparer_count,
                block_on_overflow: policy.block_on_overflow,
                disk,
                stop_taking,
                workers: tokio::sync::Mutex::new(workers),
            }),
            shut_down: AtomicBool::new(false),
        })
    }

    /// Sends inside the call; errors go back to the pipeline (queue disabled).
    async fn send_now(&self, data: TraceData) -> Result<(), ConsumeError> {
        let spans = data.span_count() as u64;
        let payload = match self.core.prepare(data).await {
            Ok(payload) => payload,
            Err(message) => {
                self.core
                    .record_dropped(spans, &message, "Exporting failed. Rejecting data.");
                return Err(ConsumeError::Permanent(message));
            }
        };
        match self.core.send_with_retry(&payload).await {
            Ok(delivered) => {
                self.core.record_delivered(spans, delivered);
                Ok(())
            }
            Err(Failure::Permanent(message)) => {
                self.core
                    .record_dropped(spans, &message, "Exporting failed. Rejecting data.");
                Err(ConsumeError::Permanent(message))
            }
            Err(Failure::GaveUp { message, throttle }) => {
                self.core
                    .record_dropped(spans, &message, "Exporting failed. Rejecting data.");
                Err(ConsumeError::Retryable {
                    message,
                    retry_after: throttle,
                })
            }
            Err(Failure::Interrupted(message)) => {
                self.core
                    .record_dropped(spans, &message, "Exporting failed. Rejecting data.");
                Err(ConsumeError::retryable(message))
            }
        }
    }

    async fn enqueue(
        &self,
        queue: &Queue<S::Payload>,
        data: TraceData,
    ) -> Result<(), ConsumeError> {
        let spans = data.span_count() as u64;
        let intake = queue.intake.lock().ok().and_then(|intake| intake.clone());
        let Some(intake) = intake else {
            return Err(shutting_down());
        };
        // An in-memory request is prepared first; waiting for a preparer is the back-pressure.
        let preparer = match &queue.disk {
            Some(_) => None,
            None => tokio::select! {
                permit = queue.preparers.clone().acquire_owned() => {
                    Some(permit.map_err(|_| shutting_down())?)
                }
                _ = self.core.deadline_reached.cancelled() => return Err(shutting_down()),
            },
        };
        let units = match queue.sizer {
            QueueSizer::Requests => 1,
            QueueSizer::Items => spans,
            QueueSizer::Bytes => data.encoded_len() as u64,
        }
        .clamp(1, u64::from(queue.capacity)) as u32;
        let room = if queue.block_on_overflow {
            tokio::select! {
                permit = queue.room.clone().acquire_many_owned(units) => {
                    permit.map_err(|_| shutting_down())?
                }
                _ = self.core.deadline_reached.cancelled() => return Err(shutting_down()),
            }
        } else {
            match queue.room.clone().try_acquire_many_owned(units) {
                Ok(permit) => permit,
                Err(_) => {
                    self.core.metrics.enqueue_failed_spans.inc_by(spans);
                    tracing::warn!(
                        exporter = %self.core.exporter,
                        spans,
                        "sending_queue is full: refusing data. Try increasing queue_size."
                    );
                    return Err(ConsumeError::retryable("sending queue is full"));
                }
            }
        };
        let entry = move |queued| Entry {
            queued,
            units,
            _room: Some(room),
        };
        let Some(disk) = &queue.disk else {
            // Counted when the room is taken, so that a worker's decrement never runs first. The
            // intake is held until the prepared request is in it, even at shutdown.
            self.core.metrics.queue_size.add(i64::from(units));
            let core = self.core.clone();
            tokio::spawn(async move {
                match core.prepare(data).await {
                    Ok(payload) => {
                        if intake
                            .send(entry(Queued::InMemory { payload, spans }))
                            .is_err()
                        {
                            core.metrics.queue_size.sub(i64::from(units));
                            core.record_dropped(spans, "the sending queue was closed", DROPPING);
                        }
                    }
                    Err(message) => {
                        core.metrics.queue_size.sub(i64::from(units));
                        core.record_dropped(spans, &message, DROPPING);
                    }
                }
                drop(preparer);
            });
            return Ok(());
        };
        match disk.write(&data).await {
            Ok(seq) => {
                self.core.metrics.queue_size.add(i64::from(units));
                let queued = Queued::OnDisk {
                    disk: disk.clone(),
                    seq,
                };
                if intake.send(entry(queued)).is_err() {
                    // Closed by shutdown meanwhile: the request stays on disk for the next start.
                    self.core.metrics.queue_size.sub(i64::from(units));
                }
                Ok(())
            }
            Err(err) => {
                self.core.metrics.enqueue_failed_spans.inc_by(spans);
                let message = format!(
                    "cannot write to the persistent queue in {}: {err}",
                    disk.directory().display()
                );
                tracing::error!(exporter = %self.core.exporter, spans, error = %message, "Dropping data: the persistent queue cannot store it.");
                Err(ConsumeError::retryable(message))
            }
        }
    }
}

/// Requests prepared at once: one per CPU (compression is CPU-bound; more would only queue for
/// the cores).
pub(crate) fn preparer_count() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(1024) as u32)
}

fn shutting_down() -> ConsumeError {
    ConsumeError::retryable("the exporter is shutting down")
}

/// Takes requests from the queue and sends them, one at a time, until the queue is closed and
/// empty, the persistent queue is told to stop, or the shutdown deadline passes.
async fn run_worker<S: Sender>(
    core: Arc<Core<S>>,
    outlet: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Entry<S::Payload>>>>,
    stop_taking: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = core.deadline_reached.cancelled() => None,
            _ = stop_taking.cancelled() => None,
            next = async { outlet.lock().await.recv().await } => next,
        };
        let Some(Entry {
            queued,
            units,
            _room: room,
        }) = next
        else {
            return;
        };
        // Taken off the queue: its room is free for the next request while this one is sent.
        drop(room);
        core.metrics.queue_size.sub(i64::from(units));
        match queued {
            Queued::InMemory { payload, spans } => {
                match core.send_with_retry(&payload).await {
                    Ok(delivered) => core.record_delivered(spans, delivered),
                    // Memory keeps nothing past a shutdown either: every failure is a loss.
                    Err(failure) => core.record_dropped(spans, failure.reason(), DROPPING),
                }
            }
            Queued::OnDisk { disk, seq } => send_from_disk(&core, &disk, seq).await,
        }
    }
}

async fn send_from_disk<S: Sender>(core: &Arc<Core<S>>, disk: &DiskQueue, seq: u64) {
    let data = match disk.read(seq).await {
        Ok(data) => data,
        Err(err @ ReadError::Corrupt { .. }) => {
            tracing::warn!(exporter = %core.exporter, error = %err, "skipping a damaged request in the persistent queue");
            disk.remove(seq).await;
            return;
        }
        Err(err @ ReadError::Io { .. }) => {
            // Left in place: it may be readable after a restart.
            tracing::error!(exporter = %core.exporter, error = %err, "cannot read a request from the persistent queue");
            return;
        }
    };
    let spans = data.span_count() as u64;
    let payload = match core.prepare(data).await {
        Ok(payload) => payload,
        Err(message) => {
            core.record_dropped(spans, &message, DROPPING);
            disk.remove(seq).await;
            return;
        }
    };
    match core.send_with_retry(&payload).await {
        Ok(delivered) => {
            core.record_delivered(spans, delivered);
            disk.remove(seq).await;
        }
        Err(Failure::Interrupted(_)) => {
            tracing::info!(exporter = %core.exporter, spans, "shutdown: the request stays in the persistent queue for the next start");
        }
        Err(failure) => {
            core.record_dropped(spans, failure.reason(), DROPPING);
            disk.remove(seq).await;
        }
    }
}

#[async_trait]
impl<S: Sender> TracesConsumer for QueuedRetrySender<S> {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(shutting_down());
        }
        match &self.queue {
            None => self.send_now(data).await,
            Some(queue) => self.enqueue(queue, data).await,
        }
    }
}

#[async_trait]
impl<S: Sender> Component for QueuedRetrySender<S> {
    async fn shutdown(&self, deadline: Instant) {
        self.shut_down.store(true, Ordering::SeqCst);
        let deadline_reached = self.core.deadline_reached.clone();
        let deadline = tokio::time::Instant::from_std(deadline);
        // Ends retries and sends in flight at the deadline, including those of `consume` calls.
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            deadline_reached.cancel();
        });
        let Some(queue) = &self.queue else { return };

        // Closing the intake lets the workers drain the queue and stop when it is empty.
        if let Ok(mut intake) = queue.intake.lock() {
            intake.take();
        }
        if queue.disk.is_some() {
            // Everything not yet sent is safe on disk: stop taking requests and stop waiting.
            queue.stop_taking.cancel();
            self.core.stop_waiting.cancel();
        }
        let workers = std::mem::take(&mut *queue.workers.lock().await);
        let all_stopped = futures::future::join_all(workers);
        tokio::pin!(all_stopped);
        if tokio::time::timeout_at(deadline, &mut all_stopped)
            .await
            .is_err()
        {
            self.core.deadline_reached.cancel();
            all_stopped.await;
        }
        // Requests still being prepared land in the queue (and are counted below) once done.
        let _ = queue.preparers.acquire_many(queue.preparer_count).await;

        // What is still queued now was not sent in time. On disk it waits for the next start.
        let mut outlet = queue.outlet.lock().await;
        let mut lost_spans = 0u64;
        while let Ok(entry) = outlet.try_recv() {
            self.core.metrics.queue_size.sub(i64::from(entry.units));
            if let Queued::InMemory { spans, .. } = entry.queued {
                lost_spans += spans;
            }
        }
        if lost_spans > 0 {
            self.core.record_dropped(
                lost_spans,
                "the shutdown deadline passed before the sending queue was drained",
                DROPPING,
            );
        }
    }
}

impl<S: Sender> Exporter for QueuedRetrySender<S> {}

impl<S: Sender> Drop for QueuedRetrySender<S> {
    /// Dropped without `shutdown` (the service failed to start, or a test simulating a crash): the
    /// workers stop where they are. A persistent queue's requests stay on disk.
    fn drop(&mut self) {
        if let Some(queue) = &mut self.queue {
            for worker in queue.workers.get_mut().drain(..) {
                worker.abort();
            }
        }
    }
}
