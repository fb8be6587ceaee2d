//! The `otlphttp` exporter: OTLP over HTTP (`POST <endpoint>/v1/traces`), as upstream's
//! `otlphttpexporter`. Protobuf requests are the pipeline's bytes as they are; JSON is rendered
//! from them with the OTLP/JSON encoder.

mod config;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use prost::Message;
use threadline_config::settings::Compression;
use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use threadline_otlp::TraceData;

pub use config::{Encoding, OtlpHttpExporterConfig};

use crate::auth::ClientAuthenticator;
use crate::client::ClientInfo;
use crate::component::{About, CreateContext, Exporter, Kind, TypedExporterFactory};
use crate::exporters::compress;
use crate::exporters::helper::{
    queue_policy, retry_policy, Delivered, HelperSettings, QueuedRetrySender, SendError, Sender,
};
use crate::metrics;
use crate::rpc_status::RpcStatus;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";
/// Upstream reads at most this much of a response body.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

pub struct OtlpHttpExporterFactory;

impl TypedExporterFactory for OtlpHttpExporterFactory {
    type Config = OtlpHttpExporterConfig;

    fn kind(&self) -> &'static str {
        "otlphttp"
    }

    fn about(&self) -> About {
        About {
            upstream: "otlphttpexporter",
            metrics: &[metrics::EXPORTER],
        }
    }

    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: OtlpHttpExporterConfig,
    ) -> anyhow::Result<Arc<dyn Exporter>> {
        let path = ctx.path(Kind::Exporter);
        let auth = crate::auth::client_authenticator(ctx.host, config.client.auth.as_ref(), &path)?;
        let sender =
            http_sender(&ctx.id.to_string(), &config, auth).with_context(|| path.clone())?;
        // As upstream, the HTTP client's `timeout` bounds each attempt; the helper adds none.
        let settings = HelperSettings {
            exporter: ctx.id.to_string(),
            metrics: ctx.telemetry.exporter(ctx.id),
            retry: retry_policy(&config.retry_on_failure),
            queue: queue_policy(&config.sending_queue, ctx).with_context(|| path.clone())?,
            attempt_timeout: None,
        };
        let exporter = QueuedRetrySender::start(sender, settings).with_context(|| path.clone())?;
        Ok(Arc::new(exporter))
    }
}

/// Posts requests to the traces URL.
pub struct HttpSender {
    exporter: String,
    client: reqwest::Client,
    url: reqwest::Url,
    encoding: Encoding,
    compression: Compression,
    compression_level: i32,
    /// `headers`, sent with every request (before `auth` applies its own).
    headers: HeaderMap,
    auth: Option<Arc<dyn ClientAuthenticator>>,
}

/// Builds the HTTP client from the config; `auth` (the extension named by
/// `auth::authenticator`) adds its headers to every request.
pub fn http_sender(
    exporter: &str,
    config: &OtlpHttpExporterConfig,
    auth: Option<Arc<dyn ClientAuthenticator>>,
) -> anyhow::Result<HttpSender> {
    let url = config
        .traces_url()
        .map_err(|e| anyhow::anyhow!("endpoint: {e}"))?;
    let settings = &config.client;

    let mut headers = HeaderMap::new();
    for (name, value) in &settings.headers {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("headers: {name:?}"))?,
            HeaderValue::from_str(value).with_context(|| format!("headers: {name:?}"))?,
        );
    }
    let mut builder = reqwest::Client::builder()
        // TLS comes from our own rustls config (below); reqwest's root store would go unused.
        .tls_built_in_root_certs(false)
        .user_agent(crate::exporters::user_agent())
        .pool_idle_timeout(settings.idle_conn_timeout.non_zero());
    if let Some(timeout) = settings.timeout.non_zero() {
        builder = builder.timeout(timeout);
    }
    let idle_per_host = if settings.disable_keep_alives {
        Some(0)
    } else {
        settings.max_idle_conns_per_host.or(settings.max_idle_conns)
    };
    if let Some(idle) = idle_per_host {
        builder = builder.pool_max_idle_per_host(idle);
    }
    if let Some(interval) = settings.http2_read_idle_timeout.non_zero() {
        builder = builder
            .http2_keep_alive_interval(interval)
            .http2_keep_alive_timeout(settings.http2_ping_timeout.as_duration());
    }
    if let Some(proxy) = settings.proxy_url.as_deref().filter(|p| !p.is_empty()) {
        builder = builder.proxy(reqwest::Proxy::all(proxy).context("proxy_url")?);
    }
    if url.scheme() == "https" {
        // For HTTP, `tls::insecure` does not apply: an https URL always uses TLS (as upstream).
        let mut tls = settings.tls.clone();
        tls.insecure = false;
        let mut rustls = tls
            .build_rustls()
            .context("tls")?
            .context("tls: no TLS configuration")?;
        rustls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        builder = builder.use_preconfigured_tls(rustls);
        if let Some(name) = tls
            .server_name_override
            .as_deref()
            .filter(|n| !n.is_empty())
        {
            // reqwest verifies the URL's host; pointing the override's name at the URL's address
            // makes it verify (and send SNI for) the override instead.
            let port = url.port_or_known_default().unwrap_or(443);
            let addresses = resolve(&url, port)?;
            builder = builder.resolve_to_addrs(name, &addresses);
        }
    }
    let client = builder.build().context("cannot build the HTTP client")?;
    let url = match settings
        .tls
        .server_name_override
        .as_deref()
        .filter(|n| !n.is_empty() && url.scheme() == "https")
    {
        Some(name) => {
            let mut url = url;
            url.set_host(Some(name))
                .context("tls::server_name_override")?;
            url
        }
        None => url,
    };
    Ok(HttpSender {
        exporter: exporter.to_string(),
        client,
        url,
        encoding: config.encoding,
        compression: settings.compression,
        compression_level: settings
            .compression_params
            .as_ref()
            .map_or(0, |params| params.level),
        headers,
        auth,
    })
}

fn resolve(url: &reqwest::Url, port: u16) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    use std::net::ToSocketAddrs;
    let host = url.host_str().context("endpoint has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .collect())
}

impl HttpSender {
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    fn body(&self, data: &TraceData) -> Result<(Bytes, &'static str), SendError> {
        match self.encoding {
            Encoding::Proto => Ok((data.as_bytes().clone(), PROTOBUF)),
            Encoding::Json => {
                let request = data.to_request().map_err(|e| {
                    SendError::Permanent(format!("cannot decode the trace data: {e}"))
                })?;
                let json = threadline_otlp::json::request_to_json(&request);
                Ok((Bytes::from(json), JSON))
            }
        }
    }

    fn compress(&self, body: Bytes) -> Result<Bytes, SendError> {
        match compress::compress_with_prefix(self.compression, self.compression_level, &body, 0) {
            Ok(Some(compressed)) => Ok(Bytes::from(compressed)),
            Ok(None) => Ok(body),
            Err(e) => Err(SendError::Permanent(format!("cannot compress: {e}"))),
        }
    }
}

/// An encoded and compressed OTLP/HTTP request body, and the data's client metadata.
pub struct HttpBody {
    body: Bytes,
    content_type: &'static str,
    client: ClientInfo,
}

impl Sender for HttpSender {
    type Payload = HttpBody;

    fn prepare(&self, data: TraceData) -> Result<HttpBody, SendError> {
        let (body, content_type) = self.body(&data)?;
        Ok(HttpBody {
            body: self.compress(body)?,
            content_type,
            client: crate::client::current(),
        })
    }

    async fn send(&self, payload: &HttpBody) -> Result<Delivered, SendError> {
        let mut headers = self.headers.clone();
        if let Some(auth) = &self.auth {
            // Retryable: a token file being rewritten may have no token for a moment.
            auth.apply(&mut headers, &payload.client)
                .map_err(|e| SendError::retryable(format!("auth: {e}")))?;
        }
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .header(CONTENT_TYPE, payload.content_type)
            .body(payload.body.clone());
        if self.compression.is_compressed() {
            request = request.header(CONTENT_ENCODING, self.compression.as_str());
        }
        let response = request.send().await.map_err(|e| {
            SendError::retryable(format!(
                "failed to make an HTTP request: {}",
                error_chain(&e)
            ))
        })?;

        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let response_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let body = read_limited(response).await;

        if status.is_success() {
            return Ok(self.partial_success(&body, &response_type));
        }
        let message = match decode_status(&body, &response_type) {
            Some(rpc) => format!(
                "error exporting items, request to {} responded with HTTP Status Code {}, \
                 Message={}, Details={:?}",
                self.url,
                status.as_u16(),
                rpc.message,
                rpc.detail_types()
            ),
            None => format!(
                "error exporting items, request to {} responded with HTTP Status Code {}",
                self.url,
                status.as_u16()
            ),
        };
        Err(classify(status, retry_after.as_deref(), message))
    }
}

impl HttpSender {
    /// Reads an OTLP partial success from a 2xx body; an unreadable body is logged, not retried
    /// (the server did accept the data).
    fn partial_success(&self, body: &[u8], content_type: &str) -> Delivered {
        if body.is_empty() {
            return Delivered::default();
        }
        let response = match content_type {
            PROTOBUF => ExportTraceServiceResponse::decode(body).map_err(|e| e.to_string()),
            JSON => threadline_otlp::json::response_from_json(body).map_err(|e| e.to_string()),
            _ => return Delivered::default(),
        };
        let partial = match response {
            Ok(response) => response.partial_success,
            Err(error) => {
                tracing::warn!(exporter = %self.exporter, %error, "cannot parse the export response");
                return Delivered::default();
            }
        };
        let Some(partial) = partial else {
            return Delivered::default();
        };
        if partial.rejected_spans > 0 || !partial.error_message.is_empty() {
            tracing::warn!(
                exporter = %self.exporter,
                message = %partial.error_message,
                dropped_spans = partial.rejected_spans,
                "Partial success response"
            );
        }
        Delivered {
            rejected_spans: u64::try_from(partial.rejected_spans).unwrap_or(0),
        }
    }
}

/// The OTLP/HTTP spec's verdict: 429, 502, 503 and 504 are retryable (429 and 503 honouring
/// `Retry-After`), every other failure is permanent.
pub fn classify(status: StatusCode, retry_after: Option<&str>, message: String) -> SendError {
    match status.as_u16() {
        429 | 503 => SendError::Retryable {
            message,
            throttle: retry_after.and_then(parse_retry_after),
        },
        502 | 504 => SendError::Retryable {
            message,
            throttle: None,
        },
        _ => SendError::Permanent(message),
    }
}

/// `Retry-After`: a number of seconds, or an HTTP-date (a date in the past means now).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(
        date.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The `google.rpc.Status` an OTLP server puts in error bodies (protobuf, or JSON for JSON clients).
fn decode_status(body: &[u8], content_type: &str) -> Option<RpcStatus> {
    if body.is_empty() {
        return None;
    }
    if content_type == JSON {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        return Some(RpcStatus {
            code: value.get("code").and_then(|c| c.as_i64()).unwrap_or(0) as i32,
            message: value.get("message")?.as_str()?.to_string(),
            details: Vec::new(),
        });
    }
    RpcStatus::decode(body).ok()
}

/// Up to [`MAX_RESPONSE_BODY`] bytes of the body; the rest is dropped with the connection.
async fn read_limited(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_RESPONSE_BODY);
    body
}

/// reqwest's error with its causes ("error sending request: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
