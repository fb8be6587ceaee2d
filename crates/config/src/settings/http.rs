//! HTTP server and client settings (upstream `confighttp`), including the OTLP receiver's
//! URL paths.

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer};

use super::compression::{Compression, CompressionParams};
use super::duration::GoDuration;
use super::tls::{TlsClientSettings, TlsServerSettings};
use super::AuthSettings;

/// An HTTP server, e.g. `receivers::otlp::protocols::http`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpServerSettings {
    /// `host:port` to listen on. Empty means the component's default (the OTLP receiver uses
    /// `localhost:4318`); `0.0.0.0:4318` listens on every interface.
    pub endpoint: String,
    /// Serve over TLS with these certificates. Default: plaintext.
    pub tls: Option<TlsServerSettings>,
    /// Cross-origin requests from browsers. Default: CORS off.
    pub cors: Option<CorsSettings>,
    /// Refuse requests this authenticator extension does not accept (`bearertokenauth`,
    /// `basicauth` with `htpasswd`), before their body is read: HTTP 401, gRPC UNAUTHENTICATED.
    pub auth: Option<AuthSettings>,
    /// Largest request body accepted, in bytes. Default 20 MiB.
    pub max_request_body_size: u64,
    /// Pass request headers on to the pipeline as client metadata. Default false.
    pub include_metadata: bool,
    /// Headers added to every response.
    pub response_headers: IndexMap<String, String>,
    /// Request encodings accepted. Default: every supported one.
    pub compression_algorithms: Vec<String>,
    /// Time allowed to read a request's body after its headers. Default 0, which upstream takes
    /// as no limit and Threadline as one minute: a client sending a byte a second would otherwise
    /// hold a connection forever. Past it the answer is 408.
    pub read_timeout: GoDuration,
    /// Time allowed to read request headers. Default 1m.
    pub read_header_timeout: GoDuration,
    /// Time allowed to write a response. Default 30s.
    pub write_timeout: GoDuration,
    /// A connection with no byte read or written for this long is closed. Default 1m; 0: never.
    pub idle_timeout: GoDuration,
    /// Keep connections open between requests. Default true.
    pub keep_alives_enabled: bool,
    /// OTLP receiver: path for traces. Default `/v1/traces`.
    #[serde(deserialize_with = "url_path")]
    pub traces_url_path: String,
    /// OTLP receiver: path for metrics. Default `/v1/metrics`.
    #[serde(deserialize_with = "url_path")]
    pub metrics_url_path: String,
    /// OTLP receiver: path for logs. Default `/v1/logs`.
    #[serde(deserialize_with = "url_path")]
    pub logs_url_path: String,
}

impl Default for HttpServerSettings {
    fn default() -> Self {
        HttpServerSettings {
            endpoint: String::new(),
            tls: None,
            cors: None,
            auth: None,
            max_request_body_size: 20 * 1024 * 1024,
            include_metadata: false,
            response_headers: IndexMap::new(),
            compression_algorithms: Vec::new(),
            read_timeout: GoDuration::ZERO,
            read_header_timeout: GoDuration::from_secs(60),
            write_timeout: GoDuration::from_secs(30),
            idle_timeout: GoDuration::from_secs(60),
            keep_alives_enabled: true,
            traces_url_path: "/v1/traces".to_string(),
            metrics_url_path: "/v1/metrics".to_string(),
            logs_url_path: "/v1/logs".to_string(),
        }
    }
}

/// Upstream adds the leading `/` when it is missing.
fn url_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let path = String::deserialize(deserializer)?;
    let path = path.trim();
    Ok(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    })
}

/// `cors`: which browser origins may send data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// Origins allowed, e.g. `https://*.example.com`; `*` allows any. Empty disables CORS.
    pub allowed_origins: Vec<String>,
    /// Request headers allowed besides the simple ones; `*` allows any.
    pub allowed_headers: Vec<String>,
    /// How long browsers may cache a preflight answer, in seconds; 0 leaves it unset.
    pub max_age: u64,
}

/// An HTTP client, e.g. the `otlphttp` exporter's connection settings.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpClientSettings {
    /// Base URL to send to, e.g. `https://collector:4318`.
    pub endpoint: String,
    /// Proxy to send requests through.
    pub proxy_url: Option<String>,
    /// TLS towards the server. Default: TLS verified against the system's CAs.
    pub tls: TlsClientSettings,
    /// Headers added to every request.
    pub headers: IndexMap<String, String>,
    /// `gzip` (default), `zstd` or `none`.
    pub compression: Compression,
    /// Tuning for `compression`.
    pub compression_params: Option<CompressionParams>,
    /// Time allowed for a whole request. Default 30s (the `otlphttp` exporter's default).
    pub timeout: GoDuration,
    /// Size of the read buffer in bytes; 0 uses the default.
    pub read_buffer_size: usize,
    /// Size of the write buffer in bytes; 0 uses the default.
    pub write_buffer_size: usize,
    /// Idle connections kept across all hosts. Default 100.
    pub max_idle_conns: Option<usize>,
    /// Idle connections kept per host; unset uses the default.
    pub max_idle_conns_per_host: Option<usize>,
    /// Connections per host; unset means no limit.
    pub max_conns_per_host: Option<usize>,
    /// How long an idle connection is kept. Default 90s.
    pub idle_conn_timeout: GoDuration,
    /// Open a new connection for every request. Default false.
    pub disable_keep_alives: bool,
    /// Ping an HTTP/2 connection after this long without frames; 0 disables.
    pub http2_read_idle_timeout: GoDuration,
    /// Close an HTTP/2 connection whose ping is not answered within this. Default 15s.
    pub http2_ping_timeout: GoDuration,
    /// Add this authenticator extension's headers to every request (`bearertokenauth`,
    /// `basicauth` with `client_auth`, `headers_setter`).
    pub auth: Option<AuthSettings>,
    /// Keep cookies set by the server for later requests.
    pub cookies: Option<CookiesSettings>,
}

impl Default for HttpClientSettings {
    fn default() -> Self {
        HttpClientSettings {
            endpoint: String::new(),
            proxy_url: None,
            tls: TlsClientSettings::default(),
            headers: IndexMap::new(),
            compression: Compression::Gzip,
            compression_params: None,
            timeout: GoDuration::from_secs(30),
            read_buffer_size: 0,
            write_buffer_size: 0,
            max_idle_conns: Some(100),
            max_idle_conns_per_host: None,
            max_conns_per_host: None,
            idle_conn_timeout: GoDuration::from_secs(90),
            disable_keep_alives: false,
            http2_read_idle_timeout: GoDuration::ZERO,
            http2_ping_timeout: GoDuration::from_secs(15),
            auth: None,
            cookies: None,
        }
    }
}

/// `cookies`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CookiesSettings {
    /// Store cookies from responses and send them with later requests. Default false.
    pub enabled: bool,
}
