//! The `memory_limiter` processor: refuses data while the process uses more memory than the soft
//! limit, so that clients back off (and retry) instead of the process being OOM-killed.
//!
//! Upstream measures the Go heap; Threadline measures resident memory (RSS), which is what the
//! kernel and Kubernetes limit. Memory is checked every `check_interval` by a background task, and
//! again on `consume` when the last check is older than that, so a burst between ticks is caught.
//! The refusal is also published to receivers ([`crate::component::MemoryPressure`]), which then
//! refuse requests before reading their bodies.

mod config;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_yaml_ng::Value;
use threadline_config::{ComponentId, ConfigErrors};
use threadline_otlp::TraceData;
use tokio_util::sync::CancellationToken;

pub use config::{Limits, MemoryLimiterConfig};

use crate::component::{
    decode_config, Component, CreateContext, MemoryPressure, Processor, ProcessorFactory,
};
use crate::consumer::{ConsumeError, NextConsumer, TracesConsumer};
use crate::process;
use crate::telemetry::ProcessorMetrics;

pub struct MemoryLimiterFactory;

impl ProcessorFactory for MemoryLimiterFactory {
    fn kind(&self) -> &'static str {
        "memory_limiter"
    }

    fn validate(&self, config: &Value, path: &str) -> Result<(), ConfigErrors> {
        decode_config::<MemoryLimiterConfig>(config, path).map(|_| ())
    }

    fn create_traces(
        &self,
        ctx: &CreateContext<'_>,
        config: &Value,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<dyn Processor>> {
        let path = format!("processors::{}", ctx.id);
        let config: MemoryLimiterConfig = decode_config(config, &path)?;
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
    epoch: Instant,
}

impl State {
    /// Measures memory and updates the refusing state, logging transitions as upstream does.
    fn check(&self) -> bool {
        let used = (self.probe)();
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
                "Memory usage is above hard limit.");
        }
        self.pressure.set_refusing(refuse);
        refuse
    }

    fn refusing_now(&self) -> bool {
        let since_check =
            self.epoch.elapsed().as_millis() as u64 - self.last_check_ms.load(Ordering::Relaxed);
        if since_check >= self.check_interval.as_millis() as u64 {
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
        if self.state.refusing_now() {
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
