//! Configuration of the `otlp` receiver, as upstream's `otlpreceiver`.

use serde::{Deserialize, Deserializer};
use threadline_config::settings::{GrpcServerSettings, HttpServerSettings};
use threadline_config::ConfigError;

use crate::component::ComponentConfig;

/// Upstream's default endpoints: loopback only, so that nothing is exposed unless asked for.
pub const DEFAULT_GRPC_ENDPOINT: &str = "localhost:4317";
pub const DEFAULT_HTTP_ENDPOINT: &str = "localhost:4318";

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// The protocols to serve. At least one of `grpc` and `http`; an empty entry (`grpc:`) serves the
    /// protocol with its defaults.
    #[serde(default)]
    pub protocols: Protocols,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// OTLP/gRPC (`TraceService/Export`). Default endpoint `localhost:4317`.
    #[serde(default, deserialize_with = "present_or_default")]
    pub grpc: Option<GrpcServerSettings>,
    /// OTLP/HTTP (`POST /v1/traces`, protobuf or JSON). Default endpoint `localhost:4318`.
    #[serde(default, deserialize_with = "present_or_default")]
    pub http: Option<HttpServerSettings>,
}

/// A key that is present but empty (`grpc:`) enables the protocol with defaults, as in upstream YAML.
fn present_or_default<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(
        Option::<T>::deserialize(deserializer)?.unwrap_or_default(),
    ))
}

impl OtlpReceiverConfig {
    pub fn grpc_endpoint(&self) -> Option<String> {
        self.protocols.grpc.as_ref().map(|g| {
            if g.endpoint.is_empty() {
                DEFAULT_GRPC_ENDPOINT.to_string()
            } else {
                g.endpoint.clone()
            }
        })
    }

    pub fn http_endpoint(&self) -> Option<String> {
        self.protocols.http.as_ref().map(|h| {
            if h.endpoint.is_empty() {
                DEFAULT_HTTP_ENDPOINT.to_string()
            } else {
                h.endpoint.clone()
            }
        })
    }
}

impl ComponentConfig for OtlpReceiverConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }

    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        if self.protocols.grpc.is_none() && self.protocols.http.is_none() {
            return Err(vec![ConfigError {
                path: "protocols".into(),
                message:
                    "must specify at least one protocol when using the OTLP receiver: grpc or http"
                        .into(),
            }]);
        }
        let mut errors = Vec::new();
        for (endpoint, protocol) in [
            (self.grpc_endpoint(), "grpc"),
            (self.http_endpoint(), "http"),
        ] {
            if let Some(endpoint) = endpoint {
                if let Err(err) = crate::server::resolve_endpoint(&endpoint) {
                    errors.push(ConfigError {
                        path: format!("protocols::{protocol}::endpoint"),
                        message: format!("{err:#}"),
                    });
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
