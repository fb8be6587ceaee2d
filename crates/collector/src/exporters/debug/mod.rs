//! The `debug` exporter: writes the data it receives to the log (or standard output), for
//! troubleshooting pipelines, as upstream's `debugexporter`.

mod config;
mod format;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::wire::FieldIter;
use threadline_otlp::TraceData;

pub use config::{DebugExporterConfig, Verbosity};
pub use format::timestamp;

use crate::component::{About, CreateContext, Exporter, TypedExporterFactory};
use crate::exporters::helper::{
    Delivered, HelperSettings, QueuePolicy, QueuedRetrySender, RetryPolicy, SendError, Sender,
};
use crate::metrics;

pub struct DebugExporterFactory;

impl TypedExporterFactory for DebugExporterFactory {
    type Config = DebugExporterConfig;

    fn kind(&self) -> &'static str {
        "debug"
    }

    fn about(&self) -> About {
        About {
            upstream: "debugexporter",
            metrics: &[metrics::EXPORTER],
        }
    }

    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: DebugExporterConfig,
    ) -> anyhow::Result<Arc<dyn Exporter>> {
        let writer = DebugWriter::new(ctx.id.to_string(), config);
        // As upstream: no queue, no retries, no timeout; writing happens inside `consume`.
        let settings = HelperSettings {
            exporter: ctx.id.to_string(),
            metrics: ctx.telemetry.exporter(ctx.id),
            retry: RetryPolicy {
                enabled: false,
                ..RetryPolicy::default()
            },
            queue: QueuePolicy {
                enabled: false,
                ..QueuePolicy::default()
            },
            attempt_timeout: None,
        };
        Ok(Arc::new(QueuedRetrySender::start(writer, settings)?))
    }
}

/// What one batch turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub resource_spans: usize,
    pub spans: usize,
    /// The per-span text (`normal` and `detailed`).
    pub body: Option<String>,
}

/// Formats batches and writes them out.
pub struct DebugWriter {
    exporter: String,
    config: DebugExporterConfig,
    sampler: Mutex<Sampler>,
}

impl DebugWriter {
    pub fn new(exporter: String, config: DebugExporterConfig) -> Self {
        let sampler = Sampler::new(config.sampling_initial, config.sampling_thereafter);
        DebugWriter {
            exporter,
            config,
            sampler: Mutex::new(sampler),
        }
    }

    /// The text for `data`, or `None` when sampling skips this batch.
    pub fn render(&self, data: &TraceData) -> Result<Option<Rendered>, SendError> {
        let keep = self
            .sampler
            .lock()
            .map(|mut sampler| sampler.keep(Instant::now()))
            .unwrap_or(true);
        if !keep {
            return Ok(None);
        }
        let body = match self.config.verbosity {
            Verbosity::Basic => None,
            Verbosity::Normal => Some(format::normal(&decode(data)?)),
            Verbosity::Detailed => Some(format::detailed(&decode(data)?)),
        };
        Ok(Some(Rendered {
            resource_spans: count_resource_spans(data),
            spans: data.span_count(),
            body,
        }))
    }

    fn write(&self, rendered: &Rendered) {
        if self.config.use_internal_logger {
            tracing::info!(
                exporter = %self.exporter,
                data_type = "traces",
                resource_spans = rendered.resource_spans,
                spans = rendered.spans,
                "TracesExporter"
            );
            if let Some(body) = &rendered.body {
                tracing::info!(exporter = %self.exporter, data_type = "traces", "{}", body.trim_end());
            }
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "TracesExporter resource spans: {}, spans: {}",
                rendered.resource_spans, rendered.spans
            );
            if let Some(body) = &rendered.body {
                let _ = out.write_all(body.as_bytes());
            }
            let _ = out.flush();
        }
    }
}

impl Sender for DebugWriter {
    type Payload = TraceData;

    fn prepare(&self, data: TraceData) -> Result<TraceData, SendError> {
        Ok(data)
    }

    async fn send(&self, data: &TraceData) -> Result<Delivered, SendError> {
        if let Some(rendered) = self.render(data)? {
            self.write(&rendered);
        }
        Ok(Delivered::default())
    }
}

fn decode(data: &TraceData) -> Result<ExportTraceServiceRequest, SendError> {
    ExportTraceServiceRequest::decode(data.as_bytes().as_ref())
        .map_err(|e| SendError::Permanent(format!("cannot decode the trace data: {e}")))
}

/// Top-level `resource_spans` entries (field 1), counted without decoding them.
fn count_resource_spans(data: &TraceData) -> usize {
    FieldIter::new(data.as_bytes())
        .filter(|field| matches!(field, Ok((1, _))))
        .count()
}

/// Upstream's log sampling (zap's sampler with a one-second tick): in each second, the first
/// `initial` batches are written, then every `thereafter`-th.
#[derive(Debug)]
pub struct Sampler {
    initial: u64,
    thereafter: u64,
    window_start: Option<Instant>,
    seen_in_window: u64,
}

impl Sampler {
    pub fn new(initial: u32, thereafter: u32) -> Self {
        Sampler {
            initial: u64::from(initial),
            thereafter: u64::from(thereafter),
            window_start: None,
            seen_in_window: 0,
        }
    }

    pub fn keep(&mut self, now: Instant) -> bool {
        let window_over = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1));
        if window_over {
            self.window_start = Some(now);
            self.seen_in_window = 0;
        }
        self.seen_in_window += 1;
        let n = self.seen_in_window;
        // `checked_rem` is `None` for `thereafter: 0`: nothing more this second.
        n <= self.initial || (n - self.initial).checked_rem(self.thereafter) == Some(0)
    }
}
