//! Settings shared by components, with upstream's names and defaults: durations, TLS, gRPC and
//! HTTP clients and servers, retries, sending queues, timeouts and endpoints.
//!
//! Every struct denies unknown keys and defaults each missing key to upstream's value.
//!
//! A component whose section puts shared settings at its top level, as upstream's exporters do
//! (`endpoint`, `tls`, `timeout`, `sending_queue` side by side), can `#[serde(flatten)]` these
//! structs into its own `#[serde(deny_unknown_fields)]` struct: unknown keys are still rejected.

pub mod compression;
pub mod duration;
pub mod endpoint;
pub mod exporter;
pub mod grpc;
pub mod http;
pub mod tls;
pub mod tls_reload;

use serde::Deserialize;

pub use compression::{Compression, CompressionParams};
pub use duration::GoDuration;
pub use endpoint::{resolve_bind_address, split_host_port, EndpointError};
pub use exporter::{BatchSettings, QueueSettings, QueueSizer, RetrySettings, TimeoutSettings};
pub use grpc::{
    GrpcClientKeepalive, GrpcClientSettings, GrpcServerKeepalive, GrpcServerSettings,
    KeepaliveEnforcementPolicy, KeepaliveServerParameters, Transport,
};
pub use http::{CookiesSettings, CorsSettings, HttpClientSettings, HttpServerSettings};
pub use tls::{TlsClientSettings, TlsError, TlsServerSettings, TlsVersion};

use crate::ComponentId;

/// `auth:` on a client or server: which authenticator extension to use.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Id of the authenticator extension, e.g. `bearertokenauth/backend`.
    pub authenticator: ComponentId,
}
