//! The counting sink: an OTLP receiver that only counts spans, so a benchmark can check what a
//! collector delivered. It can also pretend to be down, to test retries.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use clap::Args;
use http::{header, HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::codegen::BoxFuture;
use tonic::server::{NamedService, UnaryService};
use tonic::Status;

use crate::codec::{RawRequestCodec, TRACE_EXPORT_PATH};

const TRACE_SERVICE_NAME: &str = "opentelemetry.proto.collector.trace.v1.TraceService";

/// Options of `threadline sink`.
#[derive(Args, Clone, Debug)]
pub struct SinkArgs {
    /// Address for the OTLP/gRPC receiver.
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub grpc_endpoint: String,

    /// Address for an OTLP/HTTP receiver (POST /v1/traces, application/x-protobuf); none by default.
    #[arg(long)]
    pub http_endpoint: Option<String>,

    /// Address serving `GET /stats` with the counts as JSON; none by default.
    #[arg(long)]
    pub stats_endpoint: Option<String>,

    /// Seconds between the JSON count lines printed to stdout.
    #[arg(long, default_value_t = 1.0)]
    pub report_interval: f64,

    /// Do not print the periodic JSON lines (the final one is still printed).
    #[arg(long)]
    pub quiet: bool,

    /// Answer the first N export requests with UNAVAILABLE (HTTP 503), simulating an outage.
    #[arg(long, default_value_t = 0)]
    pub fail_first: u64,

    /// Answer UNAVAILABLE (HTTP 503) for this many seconds after start, simulating an outage.
    #[arg(long, default_value_t = 0.0)]
    pub unavailable_for: f64,

    /// Largest accepted request, in MiB after decompression.
    #[arg(long, default_value_t = 64)]
    pub max_request_mib: usize,
}

impl Default for SinkArgs {
    fn default() -> Self {
        Self {
            grpc_endpoint: "127.0.0.1:4317".to_owned(),
            http_endpoint: None,
            stats_endpoint: None,
            report_interval: 1.0,
            quiet: false,
            fail_first: 0,
            unavailable_for: 0.0,
            max_request_mib: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid --{flag}: {message}")]
    InvalidArgument { flag: &'static str, message: String },
    #[error("cannot listen on {endpoint} (--{flag}): {source}")]
    Bind {
        flag: &'static str,
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{server} server failed: {message}")]
    Server {
        server: &'static str,
        message: String,
    },
}

/// Counts so far. Also the JSON printed every report interval and served on `/stats`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SinkStats {
    /// Spans in accepted requests.
    pub spans: u64,
    /// Accepted export requests.
    pub requests: u64,
    /// Spans per second over the last report interval.
    pub spans_per_sec: f64,
    /// Requests answered UNAVAILABLE because of `--fail-first` / `--unavailable-for`.
    pub rejected_requests: u64,
    /// Requests that could not be decoded or decompressed.
    pub invalid_requests: u64,
    /// Bytes of accepted requests after decompression.
    pub bytes: u64,
    /// Seconds since the sink started.
    pub seconds: f64,
}

impl SinkStats {
    /// The counts as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    }
}

/// Runs the sink until Ctrl-C or SIGTERM, printing a JSON line with the counts every report interval.
pub async fn run_sink(args: SinkArgs) -> anyhow::Result<()> {
    let sink = Sink::start(&args).await?;
    eprintln!(
        "sink: OTLP/gRPC on {}{}{}",
        sink.grpc_addr(),
        sink.http_addr()
            .map(|addr| format!(", OTLP/HTTP on {addr}"))
            .unwrap_or_default(),
        sink.stats_addr()
            .map(|addr| format!(", stats on http://{addr}/stats"))
            .unwrap_or_default(),
    );
    wait_for_stop_signal().await?;
    println!("{}", sink.stats().to_json_line());
    sink.shutdown().await?;
    Ok(())
}

/// Ctrl-C, or SIGTERM (how scripts and supervisors stop processes).
async fn wait_for_stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// A running sink. Dropping it without [`Sink::shutdown`] leaves its servers running until the
/// runtime stops.
pub struct Sink {
    counters: Arc<Counters>,
    grpc_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    stats_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    servers: Vec<(&'static str, JoinHandle<Result<(), String>>)>,
}

impl Sink {
    /// Binds every configured endpoint and starts serving. Port 0 picks a free port; the
    /// `*_addr` methods tell which.
    pub async fn start(args: &SinkArgs) -> Result<Self, SinkError> {
        if !(args.report_interval.is_finite() && args.report_interval > 0.0) {
            return Err(SinkError::InvalidArgument {
                flag: "report-interval",
                message: "must be a positive number of seconds".to_owned(),
            });
        }
        if !(args.unavailable_for.is_finite() && args.unavailable_for >= 0.0) {
            return Err(SinkError::InvalidArgument {
                flag: "unavailable-for",
                message: "must be a number of seconds, 0 or more".to_owned(),
            });
        }
        let counters = Arc::new(Counters::new(args));
        let shutdown = CancellationToken::new();
        let max_request_bytes = args.max_request_mib.saturating_mul(1024 * 1024);
        let mut servers = Vec::new();

        let grpc_listener = bind("grpc-endpoint", &args.grpc_endpoint).await?;
        let grpc_addr = local_addr("grpc-endpoint", &args.grpc_endpoint, &grpc_listener)?;
        let service = GrpcTraceService {
            counters: Arc::clone(&counters),
            max_request_bytes,
        };
        let mut grpc_builder = tonic::transport::Server::builder()
            .initial_stream_window_size(4 * 1024 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024);
        let grpc_server = grpc_builder
            .add_service(service)
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(grpc_listener),
                shutdown.clone().cancelled_owned(),
            );
        servers.push((
            "gRPC",
            tokio::spawn(async move { grpc_server.await.map_err(|error| error.to_string()) }),
        ));

        let http_addr = match &args.http_endpoint {
            Some(endpoint) => {
                let listener = bind("http-endpoint", endpoint).await?;
                let addr = local_addr("http-endpoint", endpoint, &listener)?;
                let router = axum::Router::new()
                    .route("/v1/traces", post(http_export))
                    .layer(DefaultBodyLimit::max(max_request_bytes))
                    .with_state(HttpState {
                        counters: Arc::clone(&counters),
                        max_request_bytes,
                    });
                servers.push(("HTTP", serve_axum(listener, router, &shutdown)));
                Some(addr)
            }
            None => None,
        };

        let stats_addr = match &args.stats_endpoint {
            Some(endpoint) => {
                let listener = bind("stats-endpoint", endpoint).await?;
                let addr = local_addr("stats-endpoint", endpoint, &listener)?;
                let router = axum::Router::new()
                    .route("/stats", get(stats_handler))
                    .with_state(Arc::clone(&counters));
                servers.push(("stats", serve_axum(listener, router, &shutdown)));
                Some(addr)
            }
            None => None,
        };

        servers.push((
            "reporter",
            tokio::spawn(report_periodically(
                Arc::clone(&counters),
                Duration::from_secs_f64(args.report_interval),
                !args.quiet,
                shutdown.clone(),
            )),
        ));

        Ok(Self {
            counters,
            grpc_addr,
            http_addr,
            stats_addr,
            shutdown,
            servers,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn stats_addr(&self) -> Option<SocketAddr> {
        self.stats_addr
    }

    pub fn stats(&self) -> SinkStats {
        self.counters.snapshot()
    }

    /// Stops every server and waits for them.
    pub async fn shutdown(self) -> Result<(), SinkError> {
        self.shutdown.cancel();
        for (server, handle) in self.servers {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(message)) => return Err(SinkError::Server { server, message }),
                Err(error) => {
                    return Err(SinkError::Server {
                        server,
                        message: error.to_string(),
                    })
                }
            }
        }
        Ok(())
    }
}

async fn bind(flag: &'static str, endpoint: &str) -> Result<TcpListener, SinkError> {
    TcpListener::bind(endpoint)
        .await
        .map_err(|source| SinkError::Bind {
            flag,
            endpoint: endpoint.to_owned(),
            source,
        })
}

fn local_addr(
    flag: &'static str,
    endpoint: &str,
    listener: &TcpListener,
) -> Result<SocketAddr, SinkError> {
    listener.local_addr().map_err(|source| SinkError::Bind {
        flag,
        endpoint: endpoint.to_owned(),
        source,
    })
}

fn serve_axum(
    listener: TcpListener,
    router: axum::Router,
    shutdown: &CancellationToken,
) -> JoinHandle<Result<(), String>> {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|error| error.to_string())
    })
}

/// Samples the span rate every interval (for `spans_per_sec`) and optionally prints the counts.
async fn report_periodically(
    counters: Arc<Counters>,
    interval: Duration,
    print: bool,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let spans = counters.spans.load(Ordering::Relaxed);
        let elapsed = now.duration_since(last.0).as_secs_f64();
        if elapsed > 0.0 {
            let rate = spans.saturating_sub(last.1) as f64 / elapsed;
            counters
                .recent_rate_bits
                .store(rate.to_bits(), Ordering::Relaxed);
        }
        last = (now, spans);
        if print {
            println!("{}", counters.snapshot().to_json_line());
        }
    }
}

/// Shared counters plus the outage simulation settings.
struct Counters {
    started: Instant,
    spans: AtomicU64,
    requests: AtomicU64,
    rejected_requests: AtomicU64,
    invalid_requests: AtomicU64,
    bytes: AtomicU64,
    /// Every export request that arrived, accepted or not: drives `--fail-first`.
    arrivals: AtomicU64,
    /// Last sampled rate, as `f64` bits.
    recent_rate_bits: AtomicU64,
    fail_first: u64,
    unavailable_for: Duration,
}

/// Why a request is not counted.
enum Refusal {
    /// Simulated outage.
    Unavailable,
    /// Not a valid OTLP trace request.
    Invalid(String),
}

impl Counters {
    fn new(args: &SinkArgs) -> Self {
        Self {
            started: Instant::now(),
            spans: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            rejected_requests: AtomicU64::new(0),
            invalid_requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            arrivals: AtomicU64::new(0),
            recent_rate_bits: AtomicU64::new(0f64.to_bits()),
            fail_first: args.fail_first,
            unavailable_for: Duration::from_secs_f64(args.unavailable_for),
        }
    }

    /// Simulated outage: refuse the first `fail_first` requests and everything during the
    /// first `unavailable_for`.
    fn in_outage(&self) -> bool {
        let arrival = self.arrivals.fetch_add(1, Ordering::Relaxed);
        arrival < self.fail_first || self.started.elapsed() < self.unavailable_for
    }

    /// Counts one decoded (uncompressed) export request.
    fn record(&self, request: &[u8]) -> Result<usize, Refusal> {
        if self.in_outage() {
            self.rejected_requests.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Unavailable);
        }
        match threadline_otlp::count_spans(request) {
            Ok(spans) => {
                self.spans.fetch_add(spans as u64, Ordering::Relaxed);
                self.requests.fetch_add(1, Ordering::Relaxed);
                self.bytes
                    .fetch_add(request.len() as u64, Ordering::Relaxed);
                Ok(spans)
            }
            Err(error) => {
                self.count_invalid();
                Err(Refusal::Invalid(format!(
                    "invalid ExportTraceServiceRequest: {error}"
                )))
            }
        }
    }

    fn count_invalid(&self) {
        self.invalid_requests.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> SinkStats {
        SinkStats {
            spans: self.spans.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            spans_per_sec: f64::from_bits(self.recent_rate_bits.load(Ordering::Relaxed)),
            rejected_requests: self.rejected_requests.load(Ordering::Relaxed),
            invalid_requests: self.invalid_requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// OTLP/gRPC trace service handing raw request bytes to [`Counters::record`].
#[derive(Clone)]
struct GrpcTraceService {
    counters: Arc<Counters>,
    max_request_bytes: usize,
}

impl NamedService for GrpcTraceService {
    const NAME: &'static str = TRACE_SERVICE_NAME;
}

impl tonic::codegen::Service<http::Request<Body>> for GrpcTraceService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != TRACE_EXPORT_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("only trace export is served").into_http())
            });
        }
        let handler = GrpcExportHandler(Arc::clone(&self.counters));
        let max_request_bytes = self.max_request_bytes;
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(RawRequestCodec::<ExportTraceServiceResponse>::default())
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .max_decoding_message_size(max_request_bytes);
            Ok(grpc.unary(handler, request).await)
        })
    }
}

struct GrpcExportHandler(Arc<Counters>);

impl UnaryService<Bytes> for GrpcExportHandler {
    type Response = ExportTraceServiceResponse;
    type Future = std::future::Ready<Result<tonic::Response<ExportTraceServiceResponse>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let result = match self.0.record(request.get_ref()) {
            Ok(_) => Ok(tonic::Response::new(ExportTraceServiceResponse::default())),
            Err(Refusal::Unavailable) => Err(Status::unavailable("sink is simulating an outage")),
            Err(Refusal::Invalid(message)) => Err(Status::invalid_argument(message)),
        };
        std::future::ready(result)
    }
}

#[derive(Clone)]
struct HttpState {
    counters: Arc<Counters>,
    max_request_bytes: usize,
}

/// OTLP/HTTP binary protobuf export, optionally gzip or zstd compressed.
async fn http_export(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the sink accepts application/x-protobuf only",
        )
            .into_response();
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let request = match decompress(encoding, body, state.max_request_bytes) {
        Ok(request) => request,
        Err(message) => {
            state.counters.count_invalid();
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    match state.counters.record(&request) {
        Ok(_) => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
            .into_response(),
        Err(Refusal::Unavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "sink is simulating an outage",
        )
            .into_response(),
        Err(Refusal::Invalid(message)) => (StatusCode::BAD_REQUEST, message).into_response(),
    }
}

fn decompress(encoding: &str, body: Bytes, limit: usize) -> Result<Bytes, String> {
    let read_limited = |reader: &mut dyn Read| -> Result<Bytes, String> {
        let mut decoded = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut decoded)
            .map_err(|error| format!("cannot decompress {encoding} body: {error}"))?;
        if decoded.len() > limit {
            return Err(format!(
                "request larger than {limit} bytes after decompression"
            ));
        }
        Ok(Bytes::from(decoded))
    };
    match encoding {
        "" | "identity" => Ok(body),
        "gzip" => read_limited(&mut flate2::read::MultiGzDecoder::new(body.as_ref())),
        "zstd" => {
            let mut decoder = zstd::stream::read::Decoder::new(body.as_ref())
                .map_err(|error| format!("cannot decompress zstd body: {error}"))?;
            read_limited(&mut decoder)
        }
        other => Err(format!(
            "unsupported Content-Encoding {other:?} (gzip, zstd or none)"
        )),
    }
}

async fn stats_handler(State(counters): State<Arc<Counters>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        counters.snapshot().to_json_line(),
    )
        .into_response()
}
