//! The `loadbalancing` exporter: sends each span to the backend that owns its trace id (or
//! service), as contrib's `loadbalancingexporter`, so that a tail-sampling gateway tier sees
//! whole traces.
//!
//! Unlike upstream, the queue sits in front of the routing, not behind it per backend:
//!
//! ```text
//! consume ─▶ sending_queue ─▶ route by key on the ring of healthy backends ─▶ one OTLP call per backend
//!                 ▲                                                             │
//!                 └──────── only the parts that failed, routed again ◀─────────┘
//! ```
//!
//! * A backend that fails at the transport level (refused, reset, timed out, UNAVAILABLE without
//!   a throttle hint) leaves the ring at once and is probed with TCP connects until it answers;
//!   its parts go to their key's next owner in the same attempt. Queued data of a dead or removed
//!   backend is therefore delivered, not lost (contrib #31209, #35378, #36717).
//! * A retry resends only the parts that failed, never those already delivered to other
//!   backends (contrib #44191).
//! * A throttled backend (RetryInfo / memory_limiter) stays in the ring: its parts wait and retry,
//!   so a busy gateway does not split traces.

mod config;
#[cfg(feature = "k8s")]
mod k8s;
mod resolver;
mod ring;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use threadline_config::settings::GoDuration;
use threadline_otlp::{TraceData, TraceDataBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use config::{LoadBalancingConfig, RoutingKey};
pub use ring::Ring;

use crate::auth::ClientAuthenticator;
use crate::component::{About, CreateContext, Exporter, Kind, TypedExporterFactory};
use crate::exporters::helper::{
    queue_policy, retry_policy, Backoff, Delivered, HelperSettings, QueuedRetrySender, RetryPolicy,
    SendError, Sender,
};
use crate::exporters::otlp::{grpc_sender, GrpcSender};
use crate::metrics;

/// How often a backend that left the ring is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Registered as `loadbalancing` and as `load_balancing`, upstream's newer spelling.
pub struct LoadBalancingFactory {
    kind: &'static str,
}

impl Default for LoadBalancingFactory {
    fn default() -> Self {
        LoadBalancingFactory {
            kind: "loadbalancing",
        }
    }
}

impl LoadBalancingFactory {
    /// The factory under upstream's newer name, `load_balancing`.
    pub fn newer_name() -> Self {
        LoadBalancingFactory {
            kind: "load_balancing",
        }
    }
}

impl TypedExporterFactory for LoadBalancingFactory {
    type Config = LoadBalancingConfig;

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn about(&self) -> About {
        About {
            upstream: "contrib loadbalancingexporter",
            metrics: &[metrics::EXPORTER],
        }
    }

    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: LoadBalancingConfig,
    ) -> anyhow::Result<Arc<dyn Exporter>> {
        let path = ctx.path(Kind::Exporter);
        let auth = crate::auth::client_authenticator(
            ctx.host,
            config.protocol.otlp.client.auth.as_ref(),
            &format!("{path}::protocol::otlp"),
        )?;
        let balancer =
            Balancer::start(&ctx.id.to_string(), config.clone(), auth).context(path.clone())?;
        let settings = HelperSettings {
            exporter: ctx.id.to_string(),
            metrics: ctx.telemetry.exporter(ctx.id),
            // The balancer retries itself, part by part; the helper only queues.
            retry: RetryPolicy {
                enabled: false,
                ..RetryPolicy::default()
            },
            queue: queue_policy(config.queue(), ctx).with_context(|| path.clone())?,
            attempt_timeout: None,
        };
        let exporter =
            QueuedRetrySender::start(balancer, settings).with_context(|| path.clone())?;
        Ok(Arc::new(exporter))
    }
}

/// One backend: a gRPC channel and whether it is in the ring.
struct Backend {
    endpoint: String,
    sender: GrpcSender,
    healthy: std::sync::atomic::AtomicBool,
    /// Cancelled when the resolver drops the backend (ends its probe).
    removed: CancellationToken,
}

#[derive(Default)]
struct Membership {
    backends: HashMap<String, Arc<Backend>>,
    /// Over the healthy backends only.
    ring: Arc<Ring>,
}

/// Routes and sends; shared by the queue workers, the resolver watch and the probes.
pub struct Balancer {
    exporter: String,
    config: LoadBalancingConfig,
    routing_key: RoutingKey,
    retry: RetryPolicy,
    attempt_timeout: Option<Duration>,
    /// `protocol::otlp::auth`, shared by every backend's sender.
    auth: Option<Arc<dyn ClientAuthenticator>>,
    membership: RwLock<Membership>,
    stop: CancellationToken,
    /// Serialises membership rebuilds.
    rebuild: Mutex<()>,
}

/// The [`Sender`] the queue workers call.
pub struct BalancerSender(Arc<Balancer>);

impl Drop for BalancerSender {
    fn drop(&mut self) {
        self.0.stop.cancel();
    }
}

impl Balancer {
    pub fn start(
        exporter: &str,
        config: LoadBalancingConfig,
        auth: Option<Arc<dyn ClientAuthenticator>>,
    ) -> anyhow::Result<BalancerSender> {
        let stop = CancellationToken::new();
        let endpoints = resolver::start(exporter, &config.resolver, stop.clone())?;
        let timeout: GoDuration = config.timeout.unwrap_or(config.protocol.otlp.timeout);
        let balancer = Arc::new(Balancer {
            exporter: exporter.to_string(),
            routing_key: config.routing_key,
            retry: retry_policy(config.retry()),
            attempt_timeout: timeout.non_zero(),
            config,
            auth,
            membership: RwLock::new(Membership::default()),
            stop,
            rebuild: Mutex::new(()),
        });
        balancer.set_endpoints(&endpoints.borrow().clone())?;
        tokio::spawn(watch_endpoints(balancer.clone(), endpoints));
        Ok(BalancerSender(balancer))
    }

    fn ring(&self) -> Arc<Ring> {
        self.membership
            .read()
            .map(|m| m.ring.clone())
            .unwrap_or_default()
    }

    fn backend(&self, endpoint: &str) -> Option<Arc<Backend>> {
        self.membership
            .read()
            .ok()
            .and_then(|m| m.backends.get(endpoint).cloned())
    }

    /// Applies a new endpoint list from the resolver: new backends join, missing ones leave.
    fn set_endpoints(&self, endpoints: &[String]) -> anyhow::Result<()> {
        let _guard = self.rebuild.lock();
        let mut membership = self
            .membership
            .write()
            .map_err(|_| anyhow::anyhow!("membership lock poisoned"))?;
        let mut backends = HashMap::new();
        for endpoint in endpoints {
            let backend = match membership.backends.remove(endpoint) {
                Some(existing) => existing,
                None => {
                    let config = self.config.backend_config(endpoint);
                    let sender = grpc_sender(&self.exporter, &config, self.auth.clone())
                        .with_context(|| format!("backend {endpoint}"))?;
                    Arc::new(Backend {
                        endpoint: endpoint.clone(),
                        sender,
                        healthy: true.into(),
                        removed: self.stop.child_token(),
                    })
                }
            };
            backends.insert(endpoint.clone(), backend);
        }
        for (_, gone) in membership.backends.drain() {
            gone.removed.cancel();
        }
        membership.backends = backends;
        membership.ring = Arc::new(healthy_ring(&membership.backends));
        Ok(())
    }

    /// Takes a backend out of the ring and probes it until it accepts connections again.
    fn mark_down(self: &Arc<Self>, backend: &Arc<Backend>, reason: &str) {
        use std::sync::atomic::Ordering;
        if !backend.healthy.swap(false, Ordering::SeqCst) {
            return;
        }
        tracing::warn!(exporter = %self.exporter, backend = %backend.endpoint, error = %reason, "backend left the ring; its traces go to their next owner until it answers again");
        self.refresh_ring();
        let balancer = self.clone();
        let backend = backend.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                    _ = backend.removed.cancelled() => return,
                }
                let connect = tokio::net::TcpStream::connect(backend.endpoint.as_str());
                if let Ok(Ok(_)) = tokio::time::timeout(PROBE_INTERVAL, connect).await {
                    backend.healthy.store(true, Ordering::SeqCst);
                    tracing::info!(exporter = %balancer.exporter, backend = %backend.endpoint, "backend answers again and rejoined the ring");
                    balancer.refresh_ring();
                    return;
                }
            }
        });
    }

    fn refresh_ring(&self) {
        let _guard = self.rebuild.lock();
        if let Ok(mut membership) = self.membership.write() {
            membership.ring = Arc::new(healthy_ring(&membership.backends));
        }
    }

    /// The routing key of a span.
    fn route(&self, ring: &Ring, data: &TraceData) -> Vec<TraceData> {
        let parts = ring.endpoints().len();
        match self.routing_key {
            RoutingKey::TraceId => {
                data.partition(parts, |_, span| ring.owner(&span.trace_id()).unwrap_or(0))
            }
            RoutingKey::Service => data.partition(parts, |resource, _| {
                let service = resource
                    .attribute("service.name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                ring.owner(service.as_bytes()).unwrap_or(0)
            }),
        }
    }

    async fn attempt(&self, backend: &Backend, data: &TraceData) -> Result<Delivered, SendError> {
        let frame = backend.sender.prepare(data.clone())?;
        let send = backend.sender.send(&frame);
        match self.attempt_timeout {
            None => send.await,
            Some(limit) => tokio::time::timeout(limit, send).await.unwrap_or_else(|_| {
                Err(SendError::retryable(format!(
                    "the request timed out after {limit:?}"
                )))
            }),
        }
    }

    /// Delivers `data`, routing again whatever fails, until every span is delivered, rejected
    /// for good, or retries run out (those spans are reported as rejected).
    async fn deliver(self: &Arc<Self>, data: &TraceData) -> Delivered {
        let mut pending = vec![data.clone()];
        let mut rejected = 0u64;
        let mut backoff = Backoff::start(&self.retry);
        loop {
            let ring = self.ring();
            let mut last_error = String::from("no backend is available");
            let mut throttle: Option<Duration> = None;
            let mut ring_shrank = false;
            if !ring.is_empty() {
                let mut per_backend: Vec<TraceDataBuilder> = (0..ring.endpoints().len())
                    .map(|_| TraceDataBuilder::new())
                    .collect();
                for piece in pending.drain(..) {
                    for (index, part) in self.route(&ring, &piece).into_iter().enumerate() {
                        if !part.is_empty() {
                            per_backend[index].push(&part);
                        }
                    }
                }
                let sends = per_backend
                    .into_iter()
                    .enumerate()
                    .filter(|(_, builder)| !builder.is_empty())
                    .map(|(index, builder)| {
                        let endpoint = ring.endpoints()[index].clone();
                        let part = builder.finish();
                        async move {
                            let backend = self.backend(&endpoint);
                            let result = match &backend {
                                Some(backend) => self.attempt(backend, &part).await,
                                None => Err(SendError::retryable(format!(
                                    "backend {endpoint} was removed"
                                ))),
                            };
                            (backend, part, result)
                        }
                    });
                for (backend, part, result) in futures::future::join_all(sends).await {
                    match result {
                        Ok(delivered) => rejected += delivered.rejected_spans,
                        Err(SendError::Permanent(message)) => {
                            let spans = part.span_count();
                            tracing::error!(exporter = %self.exporter, spans, error = %message, "a backend rejected spans for good; dropping them");
                            rejected += spans as u64;
                        }
                        Err(SendError::Retryable {
                            message,
                            throttle: hint,
                        }) => {
                            if hint.is_none() {
                                if let Some(backend) = &backend {
                                    self.mark_down(backend, &message);
                                    ring_shrank = true;
                                }
                            }
                            throttle = throttle.max(hint);
                            last_error = match &backend {
                                Some(b) => format!("{}: {message}", b.endpoint),
                                None => message,
                            };
                            pending.push(part);
                        }
                    }
                }
                if pending.is_empty() {
                    return Delivered {
                        rejected_spans: rejected,
                    };
                }
            }
            // Parts of a backend that just left go to their next owner at once.
            if ring_shrank && !self.ring().is_empty() {
                continue;
            }
            let Some(delay) = backoff.next_delay(throttle) else {
                let spans: usize = pending.iter().map(TraceData::span_count).sum();
                tracing::error!(exporter = %self.exporter, spans, error = %last_error, "Exporting failed. No more retries left. Dropping data.");
                return Delivered {
                    rejected_spans: rejected + spans as u64,
                };
            };
            tracing::info!(exporter = %self.exporter, error = %last_error, interval = ?delay, "Exporting failed. Will retry the undelivered spans after interval.");
            tokio::time::sleep(delay).await;
        }
    }
}

fn healthy_ring(backends: &HashMap<String, Arc<Backend>>) -> Ring {
    Ring::new(
        backends
            .values()
            .filter(|b| b.healthy.load(std::sync::atomic::Ordering::SeqCst))
            .map(|b| b.endpoint.clone())
            .collect(),
    )
}

async fn watch_endpoints(balancer: Arc<Balancer>, mut endpoints: watch::Receiver<Vec<String>>) {
    loop {
        tokio::select! {
            changed = endpoints.changed() => if changed.is_err() { return },
            _ = balancer.stop.cancelled() => return,
        }
        let list = endpoints.borrow_and_update().clone();
        if let Err(err) = balancer.set_endpoints(&list) {
            tracing::error!(exporter = %balancer.exporter, error = %err, "cannot apply the new backend list");
        }
    }
}

impl Sender for BalancerSender {
    /// Routed (and compressed per backend) at each attempt: the backends may change in between.
    type Payload = TraceData;

    fn prepare(&self, data: TraceData) -> Result<TraceData, SendError> {
        Ok(data)
    }

    async fn send(&self, data: &TraceData) -> Result<Delivered, SendError> {
        Ok(self.0.deliver(data).await)
    }
}
