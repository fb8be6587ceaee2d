//! Configuration of the `otlphttp` exporter (OTLP over HTTP), as upstream's `otlphttpexporter`.
//!
//! The HTTP client settings (`endpoint`, `tls`, `headers`, `compression`, `timeout`,
//! `proxy_url`, connection pool settings, ...) sit at the top level of the section, as upstream;
//! they are documented on [`HttpClientSettings`].

use serde::{Deserialize, Deserializer};
use threadline_config::settings::{HttpClientSettings, QueueSettings, RetrySettings};
use threadline_config::ConfigError;

use crate::component::ComponentConfig;
use crate::exporters::helper;

/// How requests are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Binary protobuf, `Content-Type: application/x-protobuf` (the default).
    #[default]
    Proto,
    /// OTLP/JSON, `Content-Type: application/json`.
    Json,
}

impl<'de> Deserialize<'de> for Encoding {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "proto" => Ok(Encoding::Proto),
            "json" => Ok(Encoding::Json),
            other => Err(serde::de::Error::custom(format!(
                "unsupported encoding {other:?} (valid values: proto, json)"
            ))),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpHttpExporterConfig {
    /// The HTTP client: `endpoint` (base URL; traces go to `<endpoint>/v1/traces`), `tls`,
    /// `headers`, `compression` (`gzip` by default, `zstd`, `none`), `timeout` (default `30s`
    /// for a whole request), `proxy_url`, connection pool settings, and
    /// `auth: {authenticator: <extension id>}` (`bearertokenauth`, `basicauth` with
    /// `client_auth`, `headers_setter`), which adds the extension's headers to every request.
    #[serde(flatten)]
    pub client: HttpClientSettings,
    /// Full URL for traces, used as is instead of `<endpoint>/v1/traces`.
    #[serde(default)]
    pub traces_endpoint: String,
    /// Full URL for metrics. Accepted for compatibility; Threadline exports traces only.
    #[serde(default)]
    pub metrics_endpoint: String,
    /// Full URL for logs. Accepted for compatibility; Threadline exports traces only.
    #[serde(default)]
    pub logs_endpoint: String,
    /// Full URL for profiles. Accepted for compatibility; Threadline exports traces only.
    #[serde(default)]
    pub profiles_endpoint: String,
    /// `proto` (default) or `json`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Queue in front of the exporter (in memory, or on disk with `storage: file_storage`).
    #[serde(default)]
    pub sending_queue: QueueSettings,
    /// Retries of failed exports with exponential back-off.
    #[serde(default)]
    pub retry_on_failure: RetrySettings,
}

impl OtlpHttpExporterConfig {
    /// Where traces are posted: `traces_endpoint`, or `endpoint` + `/v1/traces` (as upstream,
    /// without doubling a trailing slash).
    pub fn traces_url(&self) -> Result<reqwest::Url, String> {
        let (text, key) = if !self.traces_endpoint.trim().is_empty() {
            (self.traces_endpoint.trim().to_string(), "traces_endpoint")
        } else if !self.client.endpoint.trim().is_empty() {
            let base = self.client.endpoint.trim();
            let url = if base.ends_with('/') {
                format!("{base}v1/traces")
            } else {
                format!("{base}/v1/traces")
            };
            (url, "endpoint")
        } else {
            return Err(
                "at least one endpoint must be specified: endpoint or traces_endpoint".into(),
            );
        };
        let url = reqwest::Url::parse(&text)
            .map_err(|e| format!("{key} must be a valid URL ({text:?}: {e})"))?;
        match url.scheme() {
            "http" | "https" => Ok(url),
            other => Err(format!(
                "{key} must be an http:// or https:// URL, got scheme {other:?}"
            )),
        }
    }

    fn endpoint_key(&self) -> &'static str {
        if self.traces_endpoint.trim().is_empty() {
            "endpoint"
        } else {
            "traces_endpoint"
        }
    }
}

impl ComponentConfig for OtlpHttpExporterConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }

    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let level = self
            .client
            .compression_params
            .as_ref()
            .map_or(0, |params| params.level);
        if let Err(message) =
            crate::exporters::compress::effective_level(self.client.compression, level)
        {
            errors.push(ConfigError::new("compression_params::level", message));
        }
        if let Err(message) = self.traces_url() {
            errors.push(ConfigError::new(self.endpoint_key(), message));
        }
        for (name, value) in &self.client.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(ConfigError::new(
                    "headers",
                    format!("{name:?} is not a valid HTTP header name"),
                ));
            } else if http::HeaderValue::from_str(value).is_err() {
                errors.push(ConfigError::new(
                    "headers",
                    format!("the value of {name:?} is not a valid HTTP header value"),
                ));
            }
        }
        if self.client.cookies.as_ref().is_some_and(|c| c.enabled) {
            errors.push(ConfigError::new(
                "cookies::enabled",
                "keeping cookies is not supported",
            ));
        }
        if let Some(proxy) = self.client.proxy_url.as_deref().filter(|p| !p.is_empty()) {
            if let Err(e) = reqwest::Proxy::all(proxy) {
                errors.push(ConfigError::new(
                    "proxy_url",
                    format!("invalid proxy URL {proxy:?}: {e}"),
                ));
            }
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
