//! Listening sockets shared by every server in the process (OTLP receivers, health check, metrics):
//! binding with errors that name the address and the component, optional TLS, graceful shutdown,
//! and limits on connections that go quiet or send their headers too slowly.

mod idle;

pub use idle::IdleLimited;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Resolves a collector-style endpoint (`localhost:4317`, `0.0.0.0:4317`, `:4317`, `[::1]:4317`) to a
/// socket address to bind.
pub fn resolve_endpoint(endpoint: &str) -> anyhow::Result<SocketAddr> {
    let endpoint = endpoint.trim();
    let with_host = if endpoint.starts_with(':') {
        format!("0.0.0.0{endpoint}")
    } else {
        endpoint.to_string()
    };
    with_host
        .to_socket_addrs()
        .with_context(|| format!("invalid endpoint {endpoint:?}: expected host:port"))?
        // `localhost` resolves to both families; prefer IPv4 as the Go collector's listeners do.
        .min_by_key(|addr| addr.is_ipv6())
        .with_context(|| format!("endpoint {endpoint:?} resolves to no address"))
}

/// Binds `endpoint` for `owner` (e.g. "receivers::otlp grpc"), failing with a message naming both.
pub fn bind(endpoint: &str, owner: &str) -> anyhow::Result<TcpListener> {
    let addr = resolve_endpoint(endpoint).with_context(|| format!("{owner}: cannot listen"))?;
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("{owner}: cannot listen on {addr}"))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("{owner}: cannot configure the socket on {addr}"))?;
    TcpListener::from_std(listener).with_context(|| format!("{owner}: cannot listen on {addr}"))
}

/// How long a connection may take, as upstream's `confighttp` server settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionLimits {
    /// HTTP/1 request headers must arrive within this (`read_header_timeout`; slow-loris clients).
    /// None: no limit.
    pub read_header_timeout: Option<Duration>,
    /// A connection without a byte read or written for this long is closed (`idle_timeout`).
    /// None: no limit.
    pub idle_timeout: Option<Duration>,
    /// Keep HTTP/1 connections open between requests (`keep_alives_enabled`).
    pub keep_alive: bool,
}

impl Default for ConnectionLimits {
    /// Upstream's `confighttp` defaults.
    fn default() -> Self {
        ConnectionLimits {
            read_header_timeout: Some(Duration::from_secs(60)),
            idle_timeout: Some(Duration::from_secs(60)),
            keep_alive: true,
        }
    }
}

/// Serves `app` over HTTP/1.1 and HTTP/2 (and TLS when `tls` is given) until `shutdown` fires, then
/// lets in-flight requests finish for up to `drain` before returning.
pub async fn serve_http(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    shutdown: CancellationToken,
    drain: Duration,
    limits: ConnectionLimits,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_header_timeout)
        .keep_alive(limits.keep_alive);
    builder.http2().timer(TokioTimer::new());
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let stream = IdleLimited::new(stream, limits.idle_timeout);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        match &acceptor {
            None => {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
}

/// A TLS server config that also offers HTTP/2 and HTTP/1.1 through ALPN.
pub fn with_alpn(
    mut config: rustls::ServerConfig,
    protocols: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}
