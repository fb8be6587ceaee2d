//! The `memory_limiter` processor: refuses data while the process uses more memory than the soft
//! limit, so that clients back off (and retry) instead of the process being OOM-killed.
//!
//! Upstream measures the Go heap; Threadline measures resident memory (RSS), which is what the
//! kernel and Kubernetes limit. Memory is measured every `check_interval` by a background task.
//! Between measurements, the bytes of data accepted since the last one are added to it: a burst of
//! large requests between two ticks would otherwise sail past the limit (at loopback speed, half a
//! second is hundreds of MiB). When that estimate crosses the soft limit, or enough data arrived
//! since the last measurement, memory is measured again on the spot.
//! The refusal is also published to receivers ([`crate::component::MemoryPressure`]), which then
//! refuse requests before reading their bodies.

mod config;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use threadline_config::ComponentId;
use threadline_otlp::TraceData;
use tokio_util::sync::CancellationToken;

pub use config::{Limits, MemoryLimiterConfig};

use crate::component::{
    About, Component, CreateContext, Kind, MemoryPressure, Processor, TypedProcessorFactory,
};
use crate::consumer::{ConsumeError, NextConsumer, TracesConsumer};
use crate::metrics;
use crate::process;
use crate::telemetry::ProcessorMetrics;

/// Asks the allocator to return freed memory to the OS; set by the binary, which knows its
/// allocator. Called when usage is above the hard limit, where upstream forces a garbage collection.
static RELEASE_FREED_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Installs the allocator hook called above the hard limit (once per process).
pub fn set_memory_release_hook(release: fn()) {
    let _ = RELEASE_FREED_MEMORY.set(release);
}

pub struct MemoryLimiterFactory;

impl TypedProcessorFactory for MemoryLimiterFactory {
    type Config = MemoryLimiterConfig;

    fn kind(&self) -> &'static str {
        "memory_limiter"
    }

    fn about(&self) -> About {
        About {
            upstream: "memorylimiterprocessor",
            metrics: &[metrics::PROCESSOR],
        }
    }

    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: MemoryLimiterConfig,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<dyn Processor>> {
        let path = ctx.path(Kind::Processor);
        let limits = config
            .limits(process::memory_limit_bytes())
            .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        Ok(MemoryLimiter::start(
            ctx.id.clone(),
            limits,
            config.check_interval.0,
            next,
            ctx.telemetry.processor(ctx.id),
            ctx.host.memory_pressure.clone(),
            Arc::new(|| process::resident_memory_bytes().unwrap_or(0)),
        ))
    }
}

/// Reads the current memory use in bytes; RSS in production, controllable in tests.
pub type MemoryProbe = Arc<dyn Fn() -> u64 + Send + Sync>;

pub struct MemoryLimiter {
    state: Arc<State>,
    next: NextConsumer,
    metrics: ProcessorMetrics,
    stop: CancellationToken,
}

struct State {
    id: ComponentId,
    limits: Limits,
    check_interval: Duration,
    probe: MemoryProbe,
    pressure: Arc<MemoryPressure>,
    refusing: AtomicBool,
    /// Milliseconds since `epoch` of the last measurement.
    last_check_ms: AtomicU64,
    /// Memory in use at the last measurement.
    last_used: AtomicU64,
    /// Bytes of data accepted since the last measurement.
    admitted_since_check: AtomicU64,
    /// Accepting this many bytes triggers a new measurement.
    recheck_bytes: u64,
    epoch: Instant,
}

impl State {
    /// Measures memory and updates the refusing state, logging transitions as upstream does.
    fn check(&self) -> bool {
        let used = (self.probe)();
        self.last_used.store(used, Ordering::Relaxed);
        self.admitted_since_check.store(0, Ordering::Relaxed);
        self.last_check_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let refuse = used > self.limits.soft;
        let was = self.refusing.swap(refuse, Ordering::Relaxed);
        if refuse != was {
            if refuse {
                tracing::warn!(processor = %self.id, used_mib = used >> 20, soft_limit_mib = self.limits.soft >> 20,
                    "Memory usage is above soft limit. Refusing data.");
            } else {
                tracing::info!(processor = %self.id, used_mib = used >> 20, soft_limit_mib = self.limits.soft >> 20,
                    "Memory usage back within limits. Resuming normal operation.");
            }
        }
        if used > self.limits.hard {
            tracing::warn!(processor = %self.id, used_mib = used >> 20, hard_limit_mib = self.limits.hard >> 20,
                "Memory usage is above hard limit. Returning freed memory to the OS.");
            if let Some(release) = RELEASE_FREED_MEMORY.get() {
                release();
            }
        }
        self.pressure.set_refusing(refuse);
        refuse
    }

    /// Whether to refuse `bytes` more of data now.
    fn refusing_now(&self, bytes: u64) -> bool {
        let admitted = self
            .admitted_since_check
            .fetch_add(bytes, Ordering::Relaxed)
            + bytes;
        let estimate = self.last_used.load(Ordering::Relaxed) + admitted;
        let since_check =
            self.epoch.elapsed().as_millis() as u64 - self.last_check_ms.load(Ordering::Relaxed);
        if estimate > self.limits.soft
            || admitted >= self.recheck_bytes
            || since_check >= self.check_interval.as_millis() as u64
        {
            self.check()
        } else {
            self.refusing.load(Ordering::Relaxed)
        }
    }
}

impl MemoryLimiter {
    pub fn start(
        id: ComponentId,
        limits: Limits,
        check_interval: Duration,
        next: NextConsumer,
        metrics: ProcessorMetrics,
        pressure: Arc<MemoryPressure>,
        probe: MemoryProbe,
    ) -> Arc<Self> {
        let state = Arc::new(State {
            id,
            limits,
            check_interval,
            probe,
            pressure,
            refusing: AtomicBool::new(false),
            last_check_ms: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
            admitted_since_check: AtomicU64::new(0),
            // A sixteenth of the headroom: frequent enough to stay inside it, rare enough to cost
            // nothing (one read of /proc/self/statm).
            recheck_bytes: ((limits.hard - limits.soft) / 16).max(256 * 1024),
            epoch: Instant::now(),
        });
        state.check();
        let stop = CancellationToken::new();
        let ticker_state = state.clone();
        let ticker_stop = stop.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(check_interval);
            loop {
                tokio::select! {
                    _ = ticker.tick() => { ticker_state.check(); }
                    _ = ticker_stop.cancelled() => break,
                }
            }
        });
        Arc::new(MemoryLimiter {
            state,
            next,
            metrics,
            stop,
        })
    }
}

#[async_trait]
impl TracesConsumer for MemoryLimiter {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        let spans = data.span_count() as u64;
        self.metrics.incoming_items.inc_by(spans);
        if self.state.refusing_now(data.encoded_len() as u64) {
            self.metrics.refused_spans.inc_by(spans);
            return Err(ConsumeError::Retryable {
                message: "data refused due to high memory usage".into(),
                retry_after: Some(self.state.check_interval.max(Duration::from_secs(1))),
            });
        }
        self.metrics.outgoing_items.inc_by(spans);
        self.next.consume(data).await
    }
}

#[async_trait]
impl Component for MemoryLimiter {
    async fn shutdown(&self, _deadline: Instant) {
        self.stop.cancel();
        self.state.pressure.set_refusing(false);
    }
}
