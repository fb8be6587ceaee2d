//! One OTLP/gRPC `Export` call, and how its outcome maps to retry decisions (OTLP spec, "Failures"
//! and "Throttling"; upstream `otlpexporter`).
//!
//! The call is made on the tonic channel directly rather than through tonic's codec: the request
//! bytes (already an encoded `ExportTraceServiceRequest`) are compressed in one shot into the
//! gRPC frame ([`crate::exporters::compress`]), with no copy of the uncompressed batch, and the
//! response's status is read with tonic's own `Status::from_header_map`.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderName, HeaderValue};
use http_body_util::BodyExt;
use prost::Message;
use threadline_config::settings::Compression;
use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use threadline_otlp::TraceData;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use super::transport::EXPORT_PATH;
use crate::auth::ClientAuthenticator;
use crate::client::ClientInfo;
use crate::exporters::compress;
use crate::exporters::helper::{Delivered, SendError, Sender};
use crate::rpc_status::RpcStatus;

/// Size of a gRPC message frame header: compressed flag and big-endian length.
const FRAME_HEADER: usize = 5;

/// Sends requests over one gRPC channel (it reconnects by itself).
pub struct GrpcSender {
    pub exporter: String,
    pub channel: Channel,
    pub compression: Compression,
    /// The checked `compression_params.level` (see [`compress::effective_level`]).
    pub compression_level: i32,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Sent as `grpc-timeout`, so the server can give up when we do.
    pub timeout: Option<Duration>,
    /// `auth`: adds its headers to every request.
    pub auth: Option<Arc<dyn ClientAuthenticator>>,
}

/// A prepared request: the gRPC frame, and the metadata of the data in it (for `auth`).
pub struct GrpcPayload {
    pub frame: Bytes,
    pub client: ClientInfo,
}

impl GrpcSender {
    /// The request as one gRPC frame: compressed when configured, the header in front.
    fn frame(&self, data: &TraceData) -> Result<Bytes, SendError> {
        let message = data.as_bytes();
        let compressed = compress::compress_with_prefix(
            self.compression,
            self.compression_level,
            message,
            FRAME_HEADER,
        )
        .map_err(|e| SendError::Permanent(format!("cannot compress the request: {e}")))?;
        let (flag, mut frame) = match compressed {
            Some(frame) => (1u8, frame),
            None => {
                let mut frame = Vec::with_capacity(FRAME_HEADER + message.len());
                frame.extend_from_slice(&[0; FRAME_HEADER]);
                frame.extend_from_slice(message);
                (0u8, frame)
            }
        };
        let length = u32::try_from(frame.len() - FRAME_HEADER).map_err(|_| {
            SendError::Permanent("the request is larger than a gRPC message can be (4 GiB)".into())
        })?;
        frame[0] = flag;
        frame[1..FRAME_HEADER].copy_from_slice(&length.to_be_bytes());
        Ok(Bytes::from(frame))
    }

    fn request(
        &self,
        frame: Bytes,
        client: &ClientInfo,
    ) -> Result<http::Request<tonic::body::Body>, SendError> {
        let mut builder = http::Request::builder()
            .method(http::Method::POST)
            // The channel adds scheme and authority from the endpoint.
            .uri(EXPORT_PATH)
            .header(TE, "trailers")
            .header(CONTENT_TYPE, "application/grpc")
            .header("grpc-accept-encoding", "gzip,zstd");
        if self.compression != Compression::None {
            builder = builder.header("grpc-encoding", self.compression.as_str());
        }
        if let Some(timeout) = self.timeout {
            builder = builder.header("grpc-timeout", grpc_timeout(timeout));
        }
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        let mut request = builder
            .body(tonic::body::Body::new(http_body_util::Full::new(frame)))
            .map_err(|e| SendError::Permanent(format!("cannot build the request: {e}")))?;
        if let Some(auth) = &self.auth {
            // Retryable: a token file being rewritten may have no token for a moment.
            auth.apply(request.headers_mut(), client)
                .map_err(|e| SendError::retryable(format!("auth: {e}")))?;
        }
        Ok(request)
    }
}

impl Sender for GrpcSender {
    /// The gRPC frame (compressed, header in front) and the data's client metadata.
    type Payload = GrpcPayload;

    fn prepare(&self, data: TraceData) -> Result<GrpcPayload, SendError> {
        Ok(GrpcPayload {
            frame: self.frame(&data)?,
            client: crate::client::current(),
        })
    }

    async fn send(&self, payload: &GrpcPayload) -> Result<Delivered, SendError> {
        let request = self.request(payload.frame.clone(), &payload.client)?;
        let mut channel = self.channel.clone();
        channel
            .ready()
            .await
            .map_err(|e| SendError::retryable(format!("the gRPC channel is not ready: {e}")))?;
        let response = channel.call(request).await.map_err(|e| {
            SendError::retryable(format!("rpc error: code = Unavailable desc = {e}"))
        })?;
        let (parts, body) = response.into_parts();
        // A trailers-only response carries the status in its headers.
        if let Some(status) = Status::from_header_map(&parts.headers) {
            if status.code() != Code::Ok {
                return Err(status_to_error(&status));
            }
        }
        let collected = body
            .collect()
            .await
            .map_err(|status| status_to_error(&status))?;
        let status = collected
            .trailers()
            .and_then(Status::from_header_map)
            .or_else(|| Status::from_header_map(&parts.headers))
            .unwrap_or_else(|| {
                Status::new(
                    code_from_http(parts.status),
                    format!("no grpc-status in the response (HTTP {})", parts.status),
                )
            });
        if status.code() != Code::Ok {
            return Err(status_to_error(&status));
        }
        let encoding = parts
            .headers
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity")
            .to_string();
        let response = match decode_response(collected.to_bytes(), &encoding) {
            Ok(response) => response,
            Err(message) => {
                // The server said OK: the data is delivered even if its answer is unreadable.
                tracing::warn!(exporter = %self.exporter, %message, "cannot read the export response");
                return Ok(Delivered::default());
            }
        };

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

/// The response message from its gRPC frame (none at all reads as an empty response).
fn decode_response(mut body: Bytes, encoding: &str) -> Result<ExportTraceServiceResponse, String> {
    if body.is_empty() {
        return Ok(ExportTraceServiceResponse::default());
    }
    if body.len() < FRAME_HEADER {
        return Err(format!(
            "a {}-byte response is not a gRPC frame",
            body.len()
        ));
    }
    let compressed = body.get_u8() == 1;
    let length = body.get_u32() as usize;
    if body.len() < length {
        return Err(format!(
            "the response frame says {length} bytes, {} came",
            body.len()
        ));
    }
    let message = body.split_to(length);
    let message = if compressed {
        let mut decoded = Vec::new();
        match encoding {
            "gzip" => flate2::read::GzDecoder::new(&message[..])
                .read_to_end(&mut decoded)
                .map_err(|e| format!("gzip: {e}"))?,
            "zstd" => zstd::stream::read::Decoder::new(&message[..])
                .and_then(|mut d| d.read_to_end(&mut decoded))
                .map_err(|e| format!("zstd: {e}"))?,
            other => return Err(format!("compressed with unsupported {other:?}")),
        };
        Bytes::from(decoded)
    } else {
        message
    };
    ExportTraceServiceResponse::decode(message)
        .map_err(|e| format!("cannot decode the export response: {e}"))
}

/// The gRPC code for an HTTP status without `grpc-status` (gRPC's http-grpc-status-mapping).
fn code_from_http(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// `grpc-timeout`: at most 8 digits and a unit.
fn grpc_timeout(timeout: Duration) -> String {
    let millis = timeout.as_millis();
    if millis <= 99_999_999 {
        format!("{}m", millis.max(1))
    } else {
        format!("{}S", timeout.as_secs().min(99_999_999))
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
