//! Sends pre-encoded export requests over OTLP/gRPC or OTLP/HTTP and classifies the answer.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use flate2::write::GzEncoder;
use http::uri::PathAndQuery;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::client::Grpc;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::codec::{PreEncodedRequestCodec, TRACE_EXPORT_PATH};
use crate::loadgen::{Compression, LoadgenError};

/// HTTP/2 flow-control windows: the defaults (64 KiB) would stall 200 KB requests on every
/// round trip.
const STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// What became of one export attempt.
#[derive(Debug)]
pub(crate) enum ExportOutcome {
    /// The receiver took the request; `rejected_spans` from a partial-success answer.
    Accepted { rejected_spans: u64 },
    /// Worth retrying (receiver unavailable, overloaded, or unreachable).
    Retryable(String),
    /// Permanently refused.
    Failed(String),
}

/// Sends export requests; every attempt is bounded by the request timeout.
pub(crate) struct Exporter {
    transport: Transport,
    timeout: Duration,
}

enum Transport {
    Grpc {
        /// One client per connection; requests are spread round-robin.
        clients: Vec<Grpc<Channel>>,
        next: AtomicUsize,
    },
    Http {
        /// Boxed: the pooled client is much larger than the gRPC variant.
        client: Box<Client<HttpConnector, Full<Bytes>>>,
        uri: Uri,
        gzip: bool,
    },
}

impl Exporter {
    /// Prepares connections to `endpoint` (`host:port`, optionally with an `http://` scheme).
    /// Connections are opened lazily, so a receiver that starts late is retried like an outage.
    pub(crate) fn grpc(
        endpoint: &str,
        connections: usize,
        compression: Compression,
        timeout: Duration,
    ) -> Result<Self, LoadgenError> {
        let uri = with_scheme(endpoint);
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|error| LoadgenError::InvalidEndpoint {
                endpoint: uri.clone(),
                message: error.to_string(),
            })?
            .tcp_nodelay(true)
            .timeout(timeout)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
        let clients = (0..connections.max(1))
            .map(|_| {
                let grpc = Grpc::new(endpoint.connect_lazy());
                match compression {
                    Compression::None => grpc,
                    Compression::Gzip => grpc.send_compressed(CompressionEncoding::Gzip),
                }
            })
            .collect();
        Ok(Exporter {
            transport: Transport::Grpc {
                clients,
                next: AtomicUsize::new(0),
            },
            timeout,
        })
    }

    /// Posts to `http://host:port/v1/traces` unless `endpoint` already names a path.
    pub(crate) fn http(
        endpoint: &str,
        compression: Compression,
        timeout: Duration,
    ) -> Result<Self, LoadgenError> {
        let mut uri = with_scheme(endpoint);
        if uri.matches('/').count() <= 2 {
            uri.push_str("/v1/traces");
        }
        let uri: Uri =
            uri.parse().map_err(
                |error: http::uri::InvalidUri| LoadgenError::InvalidEndpoint {
                    endpoint: uri.clone(),
                    message: error.to_string(),
                },
            )?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Exporter {
            transport: Transport::Http {
                client: Box::new(client),
                uri,
                gzip: compression == Compression::Gzip,
            },
            timeout,
        })
    }

    pub(crate) async fn export(&self, body: Bytes) -> ExportOutcome {
        let attempt = async {
            match &self.transport {
                Transport::Grpc { clients, next } => {
                    let index = next.fetch_add(1, Ordering::Relaxed) % clients.len();
                    export_grpc(clients[index].clone(), body).await
                }
                Transport::Http { client, uri, gzip } => {
                    export_http(client, uri, *gzip, body).await
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(outcome) => outcome,
            // Like gRPC DEADLINE_EXCEEDED: retryable.
            Err(_) => ExportOutcome::Retryable(format!("no answer within {:?}", self.timeout)),
        }
    }
}

fn with_scheme(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", endpoint.trim_end_matches('/'))
    }
}

async fn export_grpc(mut grpc: Grpc<Channel>, body: Bytes) -> ExportOutcome {
    if let Err(error) = grpc.ready().await {
        return ExportOutcome::Retryable(format!("connection not ready: {error}"));
    }
    let path = PathAndQuery::from_static(TRACE_EXPORT_PATH);
    let codec = PreEncodedRequestCodec::<ExportTraceServiceResponse>::default();
    match grpc.unary(tonic::Request::new(body), path, codec).await {
        Ok(response) => ExportOutcome::Accepted {
            rejected_spans: rejected_spans(response.get_ref()),
        },
        Err(status) => {
            let message = format!("gRPC {:?}: {}", status.code(), status.message());
            if is_retryable_grpc(status.code()) {
                ExportOutcome::Retryable(message)
            } else {
                ExportOutcome::Failed(message)
            }
        }
    }
}

/// The OTLP specification's retryable codes, plus RESOURCE_EXHAUSTED which receivers use for
/// back-pressure (memory limiter).
fn is_retryable_grpc(code: Code) -> bool {
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
            | Code::ResourceExhausted
    )
}

async fn export_http(
    client: &Client<HttpConnector, Full<Bytes>>,
    uri: &Uri,
    gzip: bool,
    body: Bytes,
) -> ExportOutcome {
    let mut request =
        Request::post(uri.clone()).header(header::CONTENT_TYPE, "application/x-protobuf");
    let body = if gzip {
        request = request.header(header::CONTENT_ENCODING, "gzip");
        match gzip_compress(&body) {
            Ok(compressed) => Bytes::from(compressed),
            Err(error) => return ExportOutcome::Failed(format!("gzip failed: {error}")),
        }
    } else {
        body
    };
    let request = match request.body(Full::new(body)) {
        Ok(request) => request,
        Err(error) => return ExportOutcome::Failed(format!("invalid request: {error}")),
    };
    let response = match client.request(request).await {
        Ok(response) => response,
        Err(error) => return ExportOutcome::Retryable(format!("HTTP request failed: {error}")),
    };
    let status = response.status();
    let body = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return ExportOutcome::Retryable(format!("reading HTTP response failed: {error}"))
        }
    };
    if status.is_success() {
        // An empty body is a valid, empty ExportTraceServiceResponse.
        return match ExportTraceServiceResponse::decode(body) {
            Ok(response) => ExportOutcome::Accepted {
                rejected_spans: rejected_spans(&response),
            },
            Err(error) => ExportOutcome::Failed(format!("undecodable HTTP response: {error}")),
        };
    }
    let message = format!("HTTP {status}");
    // The OTLP/HTTP specification's retryable statuses.
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    ) {
        ExportOutcome::Retryable(message)
    } else {
        ExportOutcome::Failed(message)
    }
}

fn gzip_compress(body: &[u8]) -> std::io::Result<Vec<u8>> {
    // Level 6, like the collector's and tonic's gzip.
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::new(6),
    );
    encoder.write_all(body)?;
    encoder.finish()
}

fn rejected_spans(response: &ExportTraceServiceResponse) -> u64 {
    response.partial_success.as_ref().map_or(0, |partial| {
        u64::try_from(partial.rejected_spans).unwrap_or(0)
    })
}
