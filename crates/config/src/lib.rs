//! OpenTelemetry Collector compatible configuration.
//!
//! Loading follows upstream `confmap`:
//! 1. [`resolve`] reads every `--config` source (`file:PATH`, a plain path, `env:VAR`, `yaml:INLINE`),
//!    merges them in order (maps merged deeply, later sources win, lists replaced), applies each
//!    `--set key1::key2=value`, then expands `${env:VAR}`, `${env:VAR:-default}`, `${VAR}`,
//!    `${file:PATH}` and `${yaml:...}` references and turns `$$` into a literal `$`.
//! 2. [`parse_collector_config`] turns the merged tree into a [`CollectorConfig`], checking ids and
//!    cross references and reporting every problem at once.
//! 3. Each component decodes its own section with [`decode_component`] into a typed struct built
//!    from the shared types in [`settings`].

mod collector;
mod decode;
mod error;
mod expand;
mod ids;
mod resolve;
mod schema;
pub mod settings;
mod telemetry;

pub use collector::{parse_collector_config, CollectorConfig, PipelineConfig, ServiceConfig};
pub use decode::{decode_component, DecodeError, ValueDeserializer};
pub use error::{ConfigError, ConfigErrors};
pub use expand::EnvLookup;
pub use ids::{ComponentId, IdError, PipelineId, Signal};
pub use resolve::{resolve, resolve_with_env, ConfigSources};
#[doc(hidden)]
pub use schemars as __schemars;
pub use telemetry::{
    LogEncoding, LogLevel, LogsSamplingConfig, LogsTelemetryConfig, MetricReader, MetricsLevel,
    MetricsTelemetryConfig, PrometheusExporterConfig, PullMetricExporter, PullMetricReader,
    TelemetryConfig, TracesTelemetryConfig, DEFAULT_PROMETHEUS_ENDPOINT,
};

/// Joins a parent path and a key the way errors show them: `receivers::otlp`, and list
/// indexes directly: `policies[0]`.
pub fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else if key.is_empty() {
        parent.to_string()
    } else if key.starts_with('[') {
        format!("{parent}{key}")
    } else {
        format!("{parent}::{key}")
    }
}

/// Why a configured part is refused by a binary built without the cargo feature that holds it
/// (`k8s`, `cloud-storage`): the binary's features are on by default, and a slim build
/// (`--no-default-features`) leaves them out.
pub fn built_without(feature: &str) -> String {
    format!(
        "this binary was built without the `{feature}` feature; rebuild with default features \
         or `--features {feature}`"
    )
}
