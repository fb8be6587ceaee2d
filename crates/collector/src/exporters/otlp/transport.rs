//! The gRPC plumbing of the `otlp` exporter: the Export method's path, and a connector that dials
//! TCP and, when configured, TLS with our rustls settings (custom CA, client certificate,
//! `insecure_skip_verify`, `server_name_override`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// TLS for the connection: our rustls config and the name to verify the server certificate against.
#[derive(Clone)]
pub struct TlsSetup {
    pub connector: TlsConnector,
    /// `server_name_override`, or the endpoint's host.
    pub server_name: ServerName<'static>,
}

impl TlsSetup {
    /// Wraps `config` (advertising HTTP/2 via ALPN, which gRPC requires).
    pub fn new(mut config: rustls::ClientConfig, server_name: ServerName<'static>) -> Self {
        config.alpn_protocols = vec![b"h2".to_vec()];
        TlsSetup {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        }
    }
}

pub type Connection = TokioIo<Either<TcpStream, TlsStream<TcpStream>>>;

/// Dials the address in the URI tonic hands over, with TLS when configured.
#[derive(Clone)]
pub struct Connector {
    pub tls: Option<TlsSetup>,
}

impl tower::Service<http::Uri> for Connector {
    type Response = Connection;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Connection>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "endpoint has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(4317);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            // Requests are small and latency matters more than packet count.
            tcp.set_nodelay(true)?;
            match tls {
                None => Ok(TokioIo::new(Either::Left(tcp))),
                Some(tls) => {
                    let stream = tls.connector.connect(tls.server_name, tcp).await?;
                    Ok(TokioIo::new(Either::Right(stream)))
                }
            }
        })
    }
}
