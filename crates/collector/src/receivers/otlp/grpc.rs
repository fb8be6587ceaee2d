//! OTLP/gRPC `TraceService/Export`, served by tonic with a codec that keeps the request as raw bytes:
//! the request is validated by walking its wire format, never decoded into owned structs.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use prost::Message;
use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use threadline_otlp::TraceData;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use super::Ingest;
use crate::consumer::ConsumeError;
use crate::rpc_status::retryable_status;

pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Decodes a request message into its raw bytes and encodes the prost response.
#[derive(Default, Clone, Copy)]
struct RawRequestCodec;

struct RawDecoder;
struct ResponseEncoder;

impl Codec for RawRequestCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the response failed: {e}")))
    }
}

/// The unary handler: validate, hand to the pipeline, answer per the OTLP spec.
#[derive(Clone)]
struct ExportHandler(Arc<Ingest>);

impl tonic::server::UnaryService<Bytes> for ExportHandler {
    type Response = ExportTraceServiceResponse;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Self::Response>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let ingest = self.0.clone();
        Box::pin(async move {
            let metadata = request.metadata().clone().into_headers();
            let (data, rejected) = TraceData::from_request_bytes(request.into_inner())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            ingest
                .consume(data, "grpc", &metadata)
                .await
                .map_err(consume_error_status)?;
            Ok(tonic::Response::new(rejected.to_response()))
        })
    }
}

fn consume_error_status(err: ConsumeError) -> Status {
    match err {
        ConsumeError::Permanent(message) => Status::invalid_argument(message),
        ConsumeError::Retryable {
            message,
            retry_after,
        } => match retry_after {
            // RetryInfo tells OTLP clients how long to back off (the spec's throttling signal).
            Some(delay) => retryable_status(message, delay),
            None => Status::unavailable(message),
        },
    }
}

/// The tower service tonic's server drives: routes the Export method, answers UNIMPLEMENTED otherwise.
#[derive(Clone)]
pub struct TraceServiceServer {
    ingest: Arc<Ingest>,
    max_recv_msg_size: usize,
}

impl TraceServiceServer {
    pub fn new(ingest: Arc<Ingest>, max_recv_msg_size: usize) -> Self {
        TraceServiceServer {
            ingest,
            max_recv_msg_size,
        }
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for TraceServiceServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async move {
                Ok(Status::unimplemented(format!(
                    "unknown method {}: this endpoint serves {EXPORT_PATH}",
                    request.uri().path()
                ))
                .into_http())
            });
        }
        if self.ingest.memory_pressure.is_refusing() {
            // Refuse before the body is read: under memory pressure, buffering it is the problem.
            let delay = self.ingest.retry_after;
            self.ingest.refuse_unread("grpc");
            return Box::pin(async move {
                Ok(
                    retryable_status("data refused due to high memory usage".into(), delay)
                        .into_http(),
                )
            });
        }
        let handler = ExportHandler(self.ingest.clone());
        let max = self.max_recv_msg_size;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawRequestCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(max);
            let mut response = grpc.unary(handler, request).await;
            rewrite_size_limit_status(&mut response);
            Ok(response)
        })
    }
}

/// tonic reports an over-limit message as OUT_OF_RANGE; gRPC's own servers (and so the Go collector)
/// say RESOURCE_EXHAUSTED, which is what OTLP clients expect.
fn rewrite_size_limit_status(response: &mut http::Response<tonic::body::Body>) {
    let headers = response.headers_mut();
    let is_out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let is_size_limit = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if is_out_of_range && is_size_limit {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}

/// Serves OTLP/gRPC on `listener` (over TLS when `tls` is given) until `shutdown` fires; in-flight
/// requests complete before this returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: TraceServiceServer,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let server = tonic::transport::Server::builder();
    let result = match tls {
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            server
                .serve_with_incoming_shutdown(service, incoming, shutdown.cancelled_owned())
                .await
        }
        Some(tls) => {
            let incoming = tls_incoming(listener, tls, shutdown.clone());
            server
                .serve_with_incoming_shutdown(service, incoming, shutdown.cancelled_owned())
                .await
        }
    };
    if let Err(err) = result {
        tracing::error!(error = %err, "OTLP gRPC server failed");
    }
}

/// Accepts TCP connections and completes TLS handshakes concurrently, yielding ready streams.
fn tls_incoming(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<
    Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        tracing::warn!(error = %err, "accepting a connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    acceptor.accept(stream),
                );
                match handshake.await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
