//! One OTLP/gRPC `Export` call, and how its outcome maps to retry decisions (OTLP spec, "Failures"
//! and "Throttling"; upstream `otlpexporter`).

use std::time::Duration;

use http::uri::PathAndQuery;
use prost::Message;
use threadline_otlp::TraceData;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::transport::{RawRequestCodec, EXPORT_PATH};
use crate::exporters::helper::{Delivered, SendError, Sender};
use crate::rpc_status::RpcStatus;

/// Sends requests over one gRPC channel (it reconnects by itself).
pub struct GrpcSender {
    pub exporter: String,
    pub channel: Channel,
    pub compression: Option<CompressionEncoding>,
    pub headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    /// Sent as `grpc-timeout`, so the server can give up when we do.
    pub timeout: Option<Duration>,
}

impl Sender for GrpcSender {
    async fn send(&self, data: &TraceData) -> Result<Delivered, SendError> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        if let Some(encoding) = self.compression {
            grpc = grpc.send_compressed(encoding);
        }
        let mut request = tonic::Request::new(data.clone());
        if let Some(timeout) = self.timeout {
            request.set_timeout(timeout);
        }
        for (key, value) in &self.headers {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        grpc.ready()
            .await
            .map_err(|e| SendError::retryable(format!("the gRPC channel is not ready: {e}")))?;
        let response = grpc
            .unary(
                request,
                PathAndQuery::from_static(EXPORT_PATH),
                RawRequestCodec,
            )
            .await
            .map_err(|status| status_to_error(&status))?
            .into_inner();

        let Some(partial) = response.partial_success else {
            return Ok(Delivered::default());
        };
        if partial.rejected_spans > 0 || !partial.error_message.is_empty() {
            tracing::warn!(
                exporter = %self.exporter,
                message = %partial.error_message,
                dropped_spans = partial.rejected_spans,
                "Partial success response"
            );
        }
        Ok(Delivered {
            rejected_spans: u64::try_from(partial.rejected_spans).unwrap_or(0),
        })
    }
}

/// The OTLP spec's verdict on a gRPC status: retryable codes are retried (honouring `RetryInfo`),
/// `RESOURCE_EXHAUSTED` only when the server sent `RetryInfo`, everything else is permanent.
pub fn status_to_error(status: &Status) -> SendError {
    let details = RpcStatus::decode(status.details()).ok();
    let retry_info = details.as_ref().and_then(RpcStatus::retry_info);
    let message = describe(status, details.as_ref());
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => retry_info.is_some(),
        _ => false,
    };
    if retryable {
        SendError::Retryable {
            message,
            throttle: retry_info.flatten(),
        }
    } else {
        SendError::Permanent(message)
    }
}

/// `rpc error: code = Unavailable desc = ...`, as Go's gRPC prints errors (so log searches written
/// for the upstream collector match).
fn describe(status: &Status, details: Option<&RpcStatus>) -> String {
    let mut message = format!(
        "rpc error: code = {:?} desc = {}",
        status.code(),
        status.message()
    );
    if let Some(details) = details.filter(|d| !d.details.is_empty()) {
        message.push_str(&format!(", details = {:?}", details.detail_types()));
    }
    message
}
