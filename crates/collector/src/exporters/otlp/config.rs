//! Configuration of the `otlp` exporter (OTLP over gRPC), as upstream's `otlpexporter`.
//!
//! The connection settings (`endpoint`, `tls`, `headers`, `compression`, `keepalive`,
//! `balancer_name`, `wait_for_ready`, ...) sit at the top level of the section, as upstream; they
//! are documented on [`GrpcClientSettings`].

use serde::Deserialize;
use threadline_config::settings::{
    split_host_port, GoDuration, GrpcClientSettings, QueueSettings, RetrySettings,
};
use threadline_config::ConfigError;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};

use crate::component::ComponentConfig;
use crate::exporters::{compress, helper};

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// Where and how to connect: `endpoint` (`host:port`; `https://` forces TLS, `http://`
    /// plaintext), `tls`, `headers`, `compression` (`gzip` by default, `zstd`, `none`) and
    /// `compression_params.level` (gzip 1–9, default 6; zstd 1–22, default 3), `keepalive`,
    /// `balancer_name`, `wait_for_ready`, `authority`, and `auth: {authenticator: <extension id>}`
    /// (`bearertokenauth`, `basicauth` with `client_auth`, `headers_setter`), which adds the
    /// extension's headers to every request.
    #[serde(flatten)]
    pub client: GrpcClientSettings,
    /// Time allowed for one export attempt, also sent to the server as the gRPC deadline;
    /// `0` means no limit. Default `5s`.
    #[serde(default = "default_timeout")]
    pub timeout: GoDuration,
    /// Queue in front of the exporter (in memory, or on disk with `storage: file_storage`).
    #[serde(default)]
    pub sending_queue: QueueSettings,
    /// Retries of failed exports with exponential back-off.
    #[serde(default)]
    pub retry_on_failure: RetrySettings,
}

fn default_timeout() -> GoDuration {
    GoDuration::from_secs(5)
}

/// How to reach the server, from `endpoint` and `tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Use TLS (from `https://`, or `tls::insecure` not set).
    pub tls: bool,
}

impl OtlpExporterConfig {
    /// Reads `endpoint` as upstream does: `https://` always uses TLS, `http://` never does, and a
    /// bare `host:port` (or `dns:///host:port`) follows `tls::insecure`.
    pub fn target(&self) -> Result<Target, String> {
        let endpoint = self.client.endpoint.trim();
        let (rest, scheme_tls) = if let Some(rest) = endpoint.strip_prefix("https://") {
            (rest, Some(true))
        } else if let Some(rest) = endpoint.strip_prefix("http://") {
            (rest, Some(false))
        } else if let Some(rest) = endpoint.strip_prefix("dns://") {
            (rest.trim_start_matches('/'), None)
        } else {
            (endpoint, None)
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err("requires a non-empty \"endpoint\" (host:port)".into());
        }
        let (host, port) = split_host_port(rest).map_err(|e| e.to_string())?;
        if host.is_empty() {
            return Err(format!(
                "missing host in endpoint {endpoint:?}; expected host:port"
            ));
        }
        Ok(Target {
            host: host.to_string(),
            port,
            tls: scheme_tls.unwrap_or(!self.client.tls.insecure),
        })
    }

    /// The level to compress requests with (`compression_params.level`, 0 for the default).
    pub fn compression_level(&self) -> Result<i32, String> {
        let level = self
            .client
            .compression_params
            .as_ref()
            .map_or(0, |params| params.level);
        compress::effective_level(self.client.compression, level)
    }

    /// `headers` as gRPC metadata.
    pub fn metadata(&self) -> Result<Vec<(AsciiMetadataKey, AsciiMetadataValue)>, String> {
        self.client
            .headers
            .iter()
            .map(|(key, value)| {
                let name = key.to_ascii_lowercase();
                let parsed_key = AsciiMetadataKey::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{key:?} is not a valid gRPC metadata name"))?;
                let parsed_value = AsciiMetadataValue::try_from(value.as_str()).map_err(|_| {
                    format!(
                        "the value of {key:?} is not valid in a gRPC header (visible ASCII only)"
                    )
                })?;
                Ok((parsed_key, parsed_value))
            })
            .collect()
    }
}

impl ComponentConfig for OtlpExporterConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }

    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = self.client.validate();
        if errors.iter().all(|e| e.path != "endpoint") {
            if let Err(message) = self.target() {
                errors.push(ConfigError::new("endpoint", message));
            }
        }
        if let Err(message) = self.metadata() {
            errors.push(ConfigError::new("headers", message));
        }
        if let Err(message) = self.compression_level() {
            errors.push(ConfigError::new("compression_params::level", message));
        }
        errors.extend(helper::validate_settings(
            &self.sending_queue,
            &self.retry_on_failure,
        ));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
