//! Prometheus remote write (1.0: `prometheus.WriteRequest`, protobuf, snappy block format) of
//! each tenant's series to every configured URL, as the metrics-generator's storage does: one
//! request per tenant per `collection_interval`, `X-Scope-OrgID` set, a bounded queue per URL
//! (the oldest collection is dropped when full), retries with backoff on 5xx, 429 and
//! connection errors. At shutdown [`RemoteWriter::drain`] sends what is queued (the last
//! collection included) before the process exits, within the shutdown deadline.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::config::{MetricsGeneratorConfig, RemoteWriteConfig};
use super::instance::Instance;
use super::registry::MetricKind;

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

fn time_series(
    name: String,
    labels: &[(String, String)],
    extra: &[(String, String)],
    le: Option<String>,
    samples: Vec<Sample>,
) -> TimeSeries {
    // Sorted by name, as the protocol requires.
    let mut all: BTreeMap<String, String> = labels
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    all.insert("__name__".into(), name);
    if let Some(le) = le {
        all.insert("le".into(), le);
    }
    TimeSeries {
        labels: all
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect(),
        samples,
    }
}

/// Every series of `instance` at `timestamp_ms`. A series sent for the first time also gets a
/// 0 sample just before, so that `rate()`/`increase()` count its first increments (Tempo does
/// the same).
pub fn write_request(
    instance: &mut Instance,
    extra: &[(String, String)],
    timestamp_ms: i64,
) -> WriteRequest {
    let samples = |first: bool, value: f64| {
        let mut s = Vec::with_capacity(2);
        if first {
            s.push(Sample {
                value: 0.0,
                timestamp: timestamp_ms - 1,
            });
        }
        s.push(Sample {
            value,
            timestamp: timestamp_ms,
        });
        s
    };
    let mut timeseries = Vec::new();
    for metric in instance.registry.metrics() {
        for s in metric.series() {
            let first = !s.sent;
            match &metric.kind {
                MetricKind::Counter => timeseries.push(time_series(
                    metric.name.to_string(),
                    &s.labels,
                    extra,
                    None,
                    samples(first, s.value),
                )),
                MetricKind::Histogram(bounds) => {
                    let mut cumulative = 0;
                    for (i, count) in s.buckets.iter().enumerate() {
                        cumulative += count;
                        let le = bounds
                            .get(i)
                            .map_or("+Inf".to_string(), |b| super::exposition::format_float(*b));
                        timeseries.push(time_series(
                            format!("{}_bucket", metric.name),
                            &s.labels,
                            extra,
                            Some(le),
                            samples(first, cumulative as f64),
                        ));
                    }
                    timeseries.push(time_series(
                        format!("{}_sum", metric.name),
                        &s.labels,
                        extra,
                        None,
                        samples(first, s.sum),
                    ));
                    timeseries.push(time_series(
                        format!("{}_count", metric.name),
                        &s.labels,
                        extra,
                        None,
                        samples(first, s.count as f64),
                    ));
                }
            }
        }
    }
    for s in instance.registry.metrics_mut() {
        s.sent = true;
    }
    WriteRequest { timeseries }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
}

struct Queue {
    config: RemoteWriteConfig,
    items: Mutex<VecDeque<(String, bytes::Bytes)>>,
    ready: Notify,
    /// A request taken from `items` is being sent (or retried).
    sending: AtomicBool,
}

pub struct RemoteWriter {
    queues: Vec<Arc<Queue>>,
    counters: Arc<Counters>,
}

impl RemoteWriter {
    pub fn start(config: &MetricsGeneratorConfig) -> RemoteWriter {
        let counters = Arc::new(Counters::default());
        let add_org_id = config.storage.remote_write_add_org_id_header;
        let queues: Vec<Arc<Queue>> = config
            .storage
            .remote_write
            .iter()
            .map(|c| {
                Arc::new(Queue {
                    config: c.clone(),
                    items: Mutex::new(VecDeque::new()),
                    ready: Notify::new(),
                    sending: AtomicBool::new(false),
                })
            })
            .collect();
        for queue in &queues {
            let queue = queue.clone();
            let counters = counters.clone();
            tokio::spawn(async move { send_loop(queue, counters, add_org_id).await });
        }
        RemoteWriter { queues, counters }
    }

    pub fn enqueue(&self, tenant: String, request: WriteRequest) {
        if request.timeseries.is_empty() {
            return;
        }
        let encoded = prost::Message::encode_to_vec(&request);
        let compressed = match snap::raw::Encoder::new().compress_vec(&encoded) {
            Ok(c) => bytes::Bytes::from(c),
            Err(err) => {
                tracing::warn!(error = %err, "remote write: cannot compress a request");
                return;
            }
        };
        for queue in &self.queues {
            let mut items = queue.items.lock().unwrap_or_else(|e| e.into_inner());
            if items.len() >= queue.config.queue_capacity.max(1) {
                items.pop_front();
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            items.push_back((tenant.clone(), compressed.clone()));
            drop(items);
            queue.ready.notify_one();
        }
    }

    /// Waits until every queue is empty and nothing is in flight, or `deadline` passes; true
    /// when everything was sent (or given up after its retries).
    pub async fn drain(&self, deadline: Instant) -> bool {
        loop {
            let idle = self.queues.iter().all(|q| {
                // `sending` is set under the items lock when a request is taken, so an empty
                // queue with `sending` clear has nothing left anywhere.
                let items = q.items.lock().unwrap_or_else(|e| e.into_inner());
                items.is_empty() && !q.sending.load(Ordering::Acquire)
            });
            if idle {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            retried: self.counters.retried.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

async fn send_loop(queue: Arc<Queue>, counters: Arc<Counters>, add_org_id: bool) {
    let client = match reqwest::Client::builder()
        .timeout(queue.config.remote_timeout.as_duration())
        .build()
    {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(url = %queue.config.url, error = %err, "remote write: no HTTP client");
            return;
        }
    };
    loop {
        let next = {
            let mut items = queue.items.lock().unwrap_or_else(|e| e.into_inner());
            let next = items.pop_front();
            queue.sending.store(next.is_some(), Ordering::Release);
            next
        };
        let Some((tenant, body)) = next else {
            queue.ready.notified().await;
            continue;
        };
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            let mut request = client
                .post(&queue.config.url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .header("User-Agent", "threadline-metrics-generator");
            if add_org_id {
                request = request.header("X-Scope-OrgID", &tenant);
            }
            for (k, v) in &queue.config.headers {
                request = request.header(k, v);
            }
            let retryable = match request.body(body.clone()).send().await {
                Ok(r) if r.status().is_success() => {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    tracing::warn!(url = %queue.config.url, %status, body = %text, "remote write refused");
                    status.is_server_error() || status.as_u16() == 429
                }
                Err(err) => {
                    tracing::warn!(url = %queue.config.url, error = %err, "remote write failed");
                    true
                }
            };
            attempt += 1;
            if !retryable || attempt > queue.config.max_retries {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            counters.retried.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}
