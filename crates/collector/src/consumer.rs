//! The consumer contract that links pipeline stages, as in the OpenTelemetry Collector's `consumer.Traces`.
//!
//! Every stage (processor, exporter, fan-out) consumes [`TraceData`] and either takes ownership of it
//! (`Ok`) or hands back a [`ConsumeError`] that the receiver turns into the status the OTLP spec prescribes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use threadline_otlp::TraceData;

/// Why a stage did not accept data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsumeError {
    /// The data may succeed later (memory limit reached, queue full, backend unavailable).
    /// Receivers answer gRPC `UNAVAILABLE` / HTTP 503 with a retry hint.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The data can never succeed (rejected by the backend as invalid).
    /// Receivers answer gRPC `INVALID_ARGUMENT` / HTTP 400.
    #[error("{0}")]
    Permanent(String),
}

impl ConsumeError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ConsumeError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, ConsumeError::Permanent(_))
    }
}

/// A stage that accepts trace data.
#[async_trait]
pub trait TracesConsumer: Send + Sync {
    /// Takes the data. Returning `Ok` means the stage now owns it: it was delivered, or it sits in a
    /// batch or queue that this stage is responsible for.
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError>;
}

/// Shared handle to the next stage.
pub type NextConsumer = Arc<dyn TracesConsumer>;

/// Sends the same data to several consumers (a receiver feeding several pipelines, or a pipeline with
/// several exporters). `TraceData` clones share their bytes, so fanning out copies nothing.
pub struct Fanout {
    consumers: Vec<NextConsumer>,
}

impl Fanout {
    /// Returns the single consumer itself when there is only one, to keep the common path direct.
    pub fn build(mut consumers: Vec<NextConsumer>) -> NextConsumer {
        if consumers.len() == 1 {
            if let Some(only) = consumers.pop() {
                return only;
            }
        }
        Arc::new(Fanout { consumers })
    }
}

#[async_trait]
impl TracesConsumer for Fanout {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        // Upstream's fan-out calls every consumer and reports the combined error; a permanent error wins
        // over a retryable one because retrying would duplicate data at the consumers that succeeded.
        let mut first_error: Option<ConsumeError> = None;
        for consumer in &self.consumers {
            if let Err(err) = consumer.consume(data.clone()).await {
                first_error = match first_error {
                    Some(existing) if existing.is_permanent() => Some(existing),
                    _ => Some(err),
                };
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
