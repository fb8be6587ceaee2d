//! OTLP/gRPC `TraceService/Export`, served by tonic with a codec that keeps the request as raw bytes:
//! the request is validated by walking its wire format, never decoded into owned structs.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use prost::Message;
use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use threadline_otlp::TraceData;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use super::Ingest;
use crate::consumer::ConsumeError;
use crate::rpc_status::retryable_status;
use crate::server::IdleLimited;

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

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        // As upstream's auth interceptor: before anything else, and before the body is read.
        if let Err(err) = self.ingest.authenticate("grpc", request.headers_mut()) {
            return Box::pin(async move { Ok(err.grpc_status().into_http()) });
        }
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

/// How long gRPC connections may live and stay quiet (`keepalive::server_parameters`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpcLimits {
    /// Close a connection without a byte read or written for this long (`max_connection_idle`).
    pub idle: Option<Duration>,
    /// Close a connection this old (`max_connection_age`).
    pub age: Option<Duration>,
    /// Ping the client after this long without activity (`time`), and close the connection if
    /// the ping is not answered within `ping_timeout` (`timeout`).
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Option<Duration>,
}

/// `max_connection_idle` when unset. Upstream's is infinite, which lets connections that never
/// send a request pile up; SDKs export every few seconds and reconnect transparently.
pub const DEFAULT_MAX_CONNECTION_IDLE: Duration = Duration::from_secs(300);

impl GrpcLimits {
    pub fn from_settings(settings: &threadline_config::settings::GrpcServerSettings) -> Self {
        let parameters = settings
            .keepalive
            .as_ref()
            .and_then(|k| k.server_parameters.clone())
            .unwrap_or_default();
        GrpcLimits {
            idle: Some(
                parameters
                    .max_connection_idle
                    .non_zero()
                    .unwrap_or(DEFAULT_MAX_CONNECTION_IDLE),
            ),
            age: parameters.max_connection_age.non_zero(),
            ping_interval: parameters.time.non_zero(),
            ping_timeout: parameters.timeout.non_zero(),
        }
    }
}

/// Serves OTLP/gRPC on `listener` (over TLS when `tls` is given) until `shutdown` fires; in-flight
/// requests complete before this returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: TraceServiceServer,
    shutdown: tokio_util::sync::CancellationToken,
    limits: GrpcLimits,
) {
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(limits.ping_interval)
        .http2_keepalive_timeout(limits.ping_timeout);
    if let Some(age) = limits.age {
        server = server.max_connection_age(age);
    }
    let result = match tls {
        None => {
            let incoming = idle_limited(listener, limits.idle);
            server
                .serve_with_incoming_shutdown(service, incoming, shutdown.cancelled_owned())
                .await
        }
        Some(tls) => {
            let incoming = tls_incoming(listener, tls, shutdown.clone(), limits.idle);
            server
                .serve_with_incoming_shutdown(service, incoming, shutdown.cancelled_owned())
                .await
        }
    };
    if let Err(err) = result {
        tracing::error!(error = %err, "OTLP gRPC server failed");
    }
}

/// Accepted connections, each closed once idle for `idle`.
fn idle_limited(
    listener: tokio::net::TcpListener,
    idle: Option<Duration>,
) -> impl tokio_stream::Stream<Item = std::io::Result<IdleLimited<tokio::net::TcpStream>>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener)
        .map(move |accepted| accepted.map(|stream| IdleLimited::new(stream, idle)))
}

type TlsConnection = tokio_rustls::server::TlsStream<IdleLimited<tokio::net::TcpStream>>;

/// Accepts TCP connections and completes TLS handshakes concurrently, yielding ready streams.
fn tls_incoming(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: tokio_util::sync::CancellationToken,
    idle: Option<Duration>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConnection, std::io::Error>> {
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
                    acceptor.accept(IdleLimited::new(stream, idle)),
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
