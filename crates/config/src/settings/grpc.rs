//! gRPC server and client settings (upstream `configgrpc`).

use indexmap::IndexMap;
use serde::Deserialize;

use super::compression::{Compression, CompressionParams};
use super::duration::GoDuration;
use super::tls::{TlsClientSettings, TlsServerSettings};
use super::AuthSettings;

/// Network a server listens on (upstream `confignet` transport).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Tcp4,
    Tcp6,
    Unix,
}

/// A gRPC server, e.g. `receivers::otlp::protocols::grpc`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcServerSettings {
    /// `host:port` to listen on. Empty means the component's default (the OTLP receiver uses
    /// `localhost:4317`); `0.0.0.0:4317` listens on every interface.
    pub endpoint: String,
    /// Network to listen on: `tcp` (default), `tcp4`, `tcp6` or `unix`.
    pub transport: Transport,
    /// Serve over TLS with these certificates. Default: plaintext.
    pub tls: Option<TlsServerSettings>,
    /// Largest request message accepted, in MiB. Default 4.
    pub max_recv_msg_size_mib: u64,
    /// Concurrent streams allowed per connection; 0 means no limit. Default 0.
    pub max_concurrent_streams: u32,
    /// Size of the per-connection read buffer in bytes. Default 512 KiB.
    pub read_buffer_size: usize,
    /// Size of the per-connection write buffer in bytes; 0 uses the transport default.
    pub write_buffer_size: usize,
    /// Keepalive settings; see upstream `configgrpc`.
    pub keepalive: Option<GrpcServerKeepalive>,
    /// Refuse requests this authenticator extension does not accept (`bearertokenauth`,
    /// `basicauth` with `htpasswd`), before their body is read: HTTP 401, gRPC UNAUTHENTICATED.
    pub auth: Option<AuthSettings>,
    /// Pass request headers on to the pipeline as client metadata. Default false.
    pub include_metadata: bool,
}

impl Default for GrpcServerSettings {
    fn default() -> Self {
        GrpcServerSettings {
            endpoint: String::new(),
            transport: Transport::Tcp,
            tls: None,
            max_recv_msg_size_mib: 4,
            max_concurrent_streams: 0,
            read_buffer_size: 512 * 1024,
            write_buffer_size: 0,
            keepalive: None,
            auth: None,
            include_metadata: false,
        }
    }
}

/// `keepalive` of a gRPC server.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcServerKeepalive {
    /// When the server pings clients and closes old or idle connections.
    pub server_parameters: Option<KeepaliveServerParameters>,
    /// What the server tolerates from clients' pings.
    pub enforcement_policy: Option<KeepaliveEnforcementPolicy>,
}

/// `keepalive::server_parameters`: when the server pings or closes connections. Zero values
/// leave the gRPC defaults.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveServerParameters {
    /// Close a connection with no byte read or written for this long. Default (0) 5m in
    /// Threadline, where upstream never closes one: idle connections cost a task and buffers each.
    pub max_connection_idle: GoDuration,
    /// Close a connection this old (spreads load after scale-out).
    pub max_connection_age: GoDuration,
    /// Grace period for in-flight requests after `max_connection_age`.
    pub max_connection_age_grace: GoDuration,
    /// Ping the client after this long without activity.
    pub time: GoDuration,
    /// Close the connection if a ping is not answered within this.
    pub timeout: GoDuration,
}

/// `keepalive::enforcement_policy`: what clients may do.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveEnforcementPolicy {
    /// Minimum time between client pings.
    pub min_time: GoDuration,
    /// Allow pings when there are no active streams.
    pub permit_without_stream: bool,
}

/// A gRPC client, e.g. the `otlp` exporter's connection settings.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcClientSettings {
    /// Server to send to: `host:port`, optionally prefixed by `http://` or `https://`.
    pub endpoint: String,
    /// `gzip` (default), `zstd` or `none`.
    pub compression: Compression,
    /// Tuning for `compression`.
    pub compression_params: Option<CompressionParams>,
    /// TLS towards the server. Default: TLS verified against the system's CAs.
    pub tls: TlsClientSettings,
    /// Headers added to every request, e.g. an API key.
    pub headers: IndexMap<String, String>,
    /// Client keepalive pings.
    pub keepalive: Option<GrpcClientKeepalive>,
    /// Size of the read buffer in bytes; 0 uses the transport default.
    pub read_buffer_size: usize,
    /// Size of the write buffer in bytes. Default 512 KiB.
    pub write_buffer_size: usize,
    /// Wait for the connection to be ready instead of failing fast. Default false.
    pub wait_for_ready: bool,
    /// Load balancing across the addresses the endpoint resolves to: `round_robin` (default)
    /// or `pick_first`.
    pub balancer_name: String,
    /// Overrides the `:authority` header.
    pub authority: String,
    /// Add this authenticator extension's headers to every request (`bearertokenauth`,
    /// `basicauth` with `client_auth`, `headers_setter`).
    pub auth: Option<AuthSettings>,
}

impl Default for GrpcClientSettings {
    fn default() -> Self {
        GrpcClientSettings {
            endpoint: String::new(),
            compression: Compression::Gzip,
            compression_params: None,
            tls: TlsClientSettings::default(),
            headers: IndexMap::new(),
            keepalive: None,
            read_buffer_size: 0,
            write_buffer_size: 512 * 1024,
            wait_for_ready: false,
            balancer_name: "round_robin".to_string(),
            authority: String::new(),
            auth: None,
        }
    }
}

impl GrpcClientSettings {
    pub const BALANCERS: &'static [&'static str] = &["round_robin", "pick_first"];

    /// Checks what serde cannot; errors are relative to this struct (e.g. `balancer_name`).
    pub fn validate(&self) -> Vec<crate::ConfigError> {
        let mut errors = Vec::new();
        if self.endpoint.trim().is_empty() {
            errors.push(crate::ConfigError::new(
                "endpoint",
                "must be set to the server's host:port",
            ));
        }
        if !self.balancer_name.is_empty() && !Self::BALANCERS.contains(&self.balancer_name.as_str())
        {
            errors.push(crate::ConfigError::new(
                "balancer_name",
                format!(
                    "invalid balancer_name {:?}; expected one of: {}",
                    self.balancer_name,
                    Self::BALANCERS.join(", ")
                ),
            ));
        }
        errors
    }

    /// The endpoint without an `http://`/`https://` prefix, as upstream dials it.
    pub fn host_port(&self) -> &str {
        let endpoint = self.endpoint.trim();
        endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .unwrap_or(endpoint)
    }
}

/// `keepalive` of a gRPC client.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcClientKeepalive {
    /// Ping the server after this long without activity.
    pub time: GoDuration,
    /// Close the connection if a ping is not answered within this.
    pub timeout: GoDuration,
    /// Ping even without active requests.
    pub permit_without_stream: bool,
}
