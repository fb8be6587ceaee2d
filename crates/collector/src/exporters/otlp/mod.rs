//! The `otlp` exporter: OTLP over gRPC, as upstream's `otlpexporter`.
//!
//! The pipeline's bytes already are an encoded `ExportTraceServiceRequest`, so they go on the wire
//! as they are, compressed in one shot into the gRPC frame (see [`sender`]); only the small
//! response is decoded.

mod config;
mod sender;
#[cfg(test)]
mod tests;
pub mod transport;

use std::sync::Arc;

use anyhow::Context;
use tonic::transport::Endpoint;

pub use config::{OtlpExporterConfig, Target};
pub use sender::{status_to_error, GrpcPayload, GrpcSender};

use crate::auth::ClientAuthenticator;
use crate::component::{About, CreateContext, Exporter, Kind, TypedExporterFactory};
use crate::exporters::helper::{queue_policy, retry_policy, HelperSettings, QueuedRetrySender};
use crate::metrics;
use transport::{Connector, TlsSetup};

pub struct OtlpExporterFactory;

impl TypedExporterFactory for OtlpExporterFactory {
    type Config = OtlpExporterConfig;

    fn kind(&self) -> &'static str {
        "otlp"
    }

    fn about(&self) -> About {
        About {
            upstream: "otlpexporter",
            metrics: &[metrics::EXPORTER],
        }
    }

    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: OtlpExporterConfig,
    ) -> anyhow::Result<Arc<dyn Exporter>> {
        let path = ctx.path(Kind::Exporter);
        let auth = crate::auth::client_authenticator(ctx.host, config.client.auth.as_ref(), &path)?;
        let sender =
            grpc_sender(&ctx.id.to_string(), &config, auth).with_context(|| path.clone())?;
        let settings = HelperSettings {
            exporter: ctx.id.to_string(),
            metrics: ctx.telemetry.exporter(ctx.id),
            retry: retry_policy(&config.retry_on_failure),
            queue: queue_policy(&config.sending_queue, ctx).with_context(|| path.clone())?,
            attempt_timeout: config.timeout.non_zero(),
        };
        let exporter = QueuedRetrySender::start(sender, settings).with_context(|| path.clone())?;
        Ok(Arc::new(exporter))
    }
}

/// Builds the gRPC channel (connecting lazily, as upstream) and the sender around it; `auth`
/// (the extension named by `auth::authenticator`) adds its headers to every request.
pub fn grpc_sender(
    exporter: &str,
    config: &OtlpExporterConfig,
    auth: Option<Arc<dyn ClientAuthenticator>>,
) -> anyhow::Result<GrpcSender> {
    let target = config
        .target()
        .map_err(|e| anyhow::anyhow!("endpoint: {e}"))?;
    let tls = if target.tls {
        let mut settings = config.client.tls.clone();
        // `https://` means TLS even when `tls::insecure` says otherwise, as upstream.
        settings.insecure = false;
        let rustls = settings
            .build_rustls()
            .context("tls")?
            .context("tls: no TLS configuration")?;
        let server_name = settings.server_name(&target.host).context("tls")?;
        Some(TlsSetup::new(rustls, server_name))
    } else {
        None
    };

    // The connector dials TLS itself, so the URI tonic sees is always plain `http`.
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let mut endpoint = Endpoint::from_shared(format!("http://{host}:{}", target.port))
        .context("endpoint")?
        .user_agent(crate::exporters::user_agent())
        .context("user agent")?
        .tcp_nodelay(true);
    if !config.client.authority.is_empty() {
        let origin = format!("http://{}", config.client.authority)
            .parse()
            .context("authority")?;
        endpoint = endpoint.origin(origin);
    }
    if let Some(timeout) = config.timeout.non_zero() {
        endpoint = endpoint.connect_timeout(timeout);
    }
    if let Some(keepalive) = &config.client.keepalive {
        if let Some(interval) = keepalive.time.non_zero() {
            endpoint = endpoint.http2_keep_alive_interval(interval);
        }
        if let Some(timeout) = keepalive.timeout.non_zero() {
            endpoint = endpoint.keep_alive_timeout(timeout);
        }
        endpoint = endpoint.keep_alive_while_idle(keepalive.permit_without_stream);
    }
    let channel = endpoint.connect_with_connector_lazy(Connector { tls });

    Ok(GrpcSender {
        exporter: exporter.to_string(),
        channel,
        compression: config.client.compression,
        compression_level: config
            .compression_level()
            .map_err(|e| anyhow::anyhow!("compression_params::level: {e}"))?,
        headers: config
            .metadata()
            .map_err(|e| anyhow::anyhow!("headers: {e}"))?
            .into_iter()
            .map(|(key, value)| {
                let name = http::HeaderName::from_bytes(key.as_str().as_bytes())?;
                let value = http::HeaderValue::from_bytes(value.as_encoded_bytes())?;
                Ok((name, value))
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .context("headers")?,
        timeout: config.timeout.non_zero(),
        auth,
    })
}
