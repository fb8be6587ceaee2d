//! The `otlp` receiver: OTLP over gRPC and HTTP into the pipelines, answering as the OTLP spec prescribes.

mod config;
mod grpc;
mod http;
/// The OTLP/HTTP body decoder (`Content-Encoding` gzip, zstd, deflate), public for the fuzz targets.
pub use http::decompress as decompress_http_body;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use threadline_config::settings::AuthSettings;
use threadline_otlp::TraceData;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::OtlpReceiverConfig;

use crate::auth::ServerAuthenticator;
use crate::client::ClientInfo;
use crate::component::{
    About, Component, CreateContext, Kind, MemoryPressure, TypedReceiverFactory,
};
use crate::consumer::{ConsumeError, NextConsumer};
use crate::metrics;
use crate::server;
use crate::telemetry::ReceiverMetrics;

const MIB: usize = 1024 * 1024;

/// Upstream's default `max_recv_msg_size_mib` for gRPC and `max_request_body_size` for HTTP.
const DEFAULT_GRPC_MAX_RECV_MIB: usize = 4;
const DEFAULT_HTTP_MAX_BODY: usize = 20 * MIB;

/// What both transports share: the next consumer, the memory-pressure gate, and each
/// transport's metrics and settings.
pub struct Ingest {
    next: NextConsumer,
    memory_pressure: Arc<MemoryPressure>,
    /// Back-off suggested to clients that are refused.
    retry_after: Duration,
    grpc: Transport,
    http: Transport,
}

/// One protocol's metrics and request settings.
struct Transport {
    metrics: ReceiverMetrics,
    /// `include_metadata`: pass request headers on as client info.
    include_metadata: bool,
    /// `auth`: checks each request before its body is read.
    auth: Option<Arc<dyn ServerAuthenticator>>,
}

impl Ingest {
    fn transport(&self, transport: &str) -> &Transport {
        if transport == "grpc" {
            &self.grpc
        } else {
            &self.http
        }
    }

    fn metrics(&self, transport: &str) -> &ReceiverMetrics {
        &self.transport(transport).metrics
    }

    async fn consume(
        &self,
        data: TraceData,
        transport: &str,
        headers: &::http::HeaderMap,
    ) -> Result<(), ConsumeError> {
        let spans = data.span_count() as u64;
        // As upstream: without include_metadata the pipeline sees no client metadata.
        let info = if self.transport(transport).include_metadata {
            ClientInfo::from_headers(headers)
        } else {
            ClientInfo::default()
        };
        let result = crate::client::scope(info, self.next.consume(data)).await;
        let metrics = self.metrics(transport);
        match &result {
            Ok(()) => metrics.accepted_spans.inc_by(spans),
            Err(_) => metrics.refused_spans.inc_by(spans),
        }
        result
    }

    /// Authenticates a request of `transport` (no authenticator: every request passes). The
    /// authenticator may add headers, which `include_metadata` then passes on.
    fn authenticate(
        &self,
        transport: &str,
        headers: &mut ::http::HeaderMap,
    ) -> Result<(), crate::auth::AuthError> {
        match &self.transport(transport).auth {
            None => Ok(()),
            Some(auth) => auth.authenticate(headers).inspect_err(|_| {
                self.refuse_unread(transport);
            }),
        }
    }

    /// Counts a request refused before its body was read (its span count is unknown, so it counts once).
    fn refuse_unread(&self, transport: &str) {
        self.metrics(transport).refused_spans.inc();
    }
}

pub struct OtlpReceiverFactory;

impl TypedReceiverFactory for OtlpReceiverFactory {
    type Config = OtlpReceiverConfig;

    fn kind(&self) -> &'static str {
        "otlp"
    }

    fn about(&self) -> About {
        About {
            upstream: "otlpreceiver",
            metrics: &[metrics::RECEIVER],
        }
    }

    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: OtlpReceiverConfig,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<dyn Component>> {
        let path = ctx.path(Kind::Receiver);
        let (grpc, http) = (
            config.protocols.grpc.as_ref(),
            config.protocols.http.as_ref(),
        );
        let auth = |protocol: &str, auth: Option<&AuthSettings>| {
            let path = format!("{path}::protocols::{protocol}");
            crate::auth::server_authenticator(ctx.host, auth, &path)
        };
        let grpc_auth = auth("grpc", grpc.and_then(|g| g.auth.as_ref()))?;
        let http_auth = auth("http", http.and_then(|h| h.auth.as_ref()))?;
        let ingest = Arc::new(Ingest {
            next,
            memory_pressure: ctx.host.memory_pressure.clone(),
            retry_after: Duration::from_secs(1),
            grpc: Transport {
                metrics: ctx.telemetry.receiver(ctx.id, "grpc"),
                include_metadata: grpc.is_some_and(|g| g.include_metadata),
                auth: grpc_auth,
            },
            http: Transport {
                metrics: ctx.telemetry.receiver(ctx.id, "http"),
                include_metadata: http.is_some_and(|h| h.include_metadata),
                auth: http_auth,
            },
        });
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        if let (Some(settings), Some(endpoint)) = (&config.protocols.grpc, config.grpc_endpoint()) {
            let listener = server::bind(&endpoint, &format!("{path} (grpc)"))?;
            let tls = settings
                .tls
                .as_ref()
                .map(|tls| tls.build_rustls())
                .transpose()
                .map_err(|e| anyhow::anyhow!("{path}::protocols::grpc::tls: {e}"))?
                .map(|tls| server::with_alpn(tls, &[b"h2"]));
            let max = match settings.max_recv_msg_size_mib {
                0 => DEFAULT_GRPC_MAX_RECV_MIB * MIB,
                mib => mib as usize * MIB,
            };
            let service = grpc::TraceServiceServer::new(ingest.clone(), max);
            tracing::info!(receiver = %ctx.id, endpoint = %listener_addr(&listener), "OTLP gRPC receiver listening");
            tasks.push(tokio::spawn(grpc::serve(
                listener,
                tls,
                service,
                shutdown.clone(),
                grpc::GrpcLimits::from_settings(settings),
            )));
        }

        if let (Some(settings), Some(endpoint)) = (&config.protocols.http, config.http_endpoint()) {
            let listener = server::bind(&endpoint, &format!("{path} (http)"))?;
            let tls = settings
                .tls
                .as_ref()
                .map(|tls| tls.build_rustls())
                .transpose()
                .map_err(|e| anyhow::anyhow!("{path}::protocols::http::tls: {e}"))?
                .map(|tls| server::with_alpn(tls, &[b"h2", b"http/1.1"]));
            let max_body_size = match settings.max_request_body_size {
                0 => DEFAULT_HTTP_MAX_BODY,
                size => size as usize,
            };
            let limits = server::ConnectionLimits {
                read_header_timeout: settings.read_header_timeout.non_zero(),
                idle_timeout: settings.idle_timeout.non_zero(),
                keep_alive: settings.keep_alives_enabled,
            };
            let state = Arc::new(http::HttpState {
                ingest: ingest.clone(),
                max_body_size,
                body_timeout: settings
                    .read_timeout
                    .non_zero()
                    .unwrap_or(http::DEFAULT_BODY_TIMEOUT),
            });
            let app = http::router(state, &settings.traces_url_path);
            tracing::info!(receiver = %ctx.id, endpoint = %listener_addr(&listener), "OTLP HTTP receiver listening");
            tasks.push(tokio::spawn(server::serve_http(
                listener,
                tls,
                app,
                shutdown.clone(),
                Duration::from_secs(10),
                limits,
            )));
        }

        Ok(Arc::new(OtlpReceiver {
            shutdown,
            tasks: Mutex::new(tasks),
        }))
    }
}

fn listener_addr(listener: &tokio::net::TcpListener) -> String {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A running OTLP receiver.
pub struct OtlpReceiver {
    shutdown: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

#[async_trait]
impl Component for OtlpReceiver {
    async fn shutdown(&self, deadline: Instant) {
        // Stop accepting; requests in flight finish (their data reaches the pipeline) before we return.
        self.shutdown.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().await);
        let wait = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(wait, futures::future::join_all(tasks)).await;
    }
}
