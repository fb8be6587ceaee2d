//! `service::telemetry`: the collector's own logs and metrics, as upstream's `otelcol` reads them.

use std::fmt;

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer};
use serde_yaml_ng::Value;

use crate::settings::duration::GoDuration;

/// Where self-metrics are served when nothing else is configured.
pub const DEFAULT_PROMETHEUS_ENDPOINT: &str = "localhost:8888";
const DEFAULT_PROMETHEUS_HOST: &str = "localhost";
const DEFAULT_PROMETHEUS_PORT: u16 = 8888;

/// `service::telemetry`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's own logs.
    pub logs: LogsTelemetryConfig,
    /// The collector's own metrics.
    pub metrics: MetricsTelemetryConfig,
    /// The collector's own traces. Accepted for compatibility; not exported yet.
    pub traces: TracesTelemetryConfig,
    /// Resource attributes attached to the collector's own telemetry. A null value removes an
    /// attribute the collector would set by default.
    pub resource: IndexMap<String, Option<String>>,
}

/// `service::telemetry::logs`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsTelemetryConfig {
    /// Minimum level logged: `debug`, `info`, `warn` or `error`. Default `info`.
    pub level: LogLevel,
    /// Development mode (more verbose stack traces). Default false.
    pub development: bool,
    /// `console` (human-readable) or `json`. Default `console`.
    pub encoding: LogEncoding,
    /// Do not annotate logs with the calling source location. Default false.
    pub disable_caller: bool,
    /// Do not attach stack traces to error logs. Default false.
    pub disable_stacktrace: bool,
    /// Log sampling, to bound the cost of repeated messages. Default: enabled, 10 then every
    /// 100th per 10s.
    pub sampling: Option<LogsSamplingConfig>,
    /// Where logs are written: `stderr`, `stdout` or file paths. Default `[stderr]`.
    pub output_paths: Vec<String>,
    /// Where internal logging errors are written. Default `[stderr]`.
    pub error_output_paths: Vec<String>,
    /// Fields added to every log entry.
    pub initial_fields: IndexMap<String, Value>,
    /// OpenTelemetry SDK log processors (exporting logs over OTLP). Accepted; not used yet.
    pub processors: Vec<Value>,
}

impl Default for LogsTelemetryConfig {
    fn default() -> Self {
        LogsTelemetryConfig {
            level: LogLevel::Info,
            development: false,
            encoding: LogEncoding::Console,
            disable_caller: false,
            disable_stacktrace: false,
            sampling: Some(LogsSamplingConfig::default()),
            output_paths: vec!["stderr".to_string()],
            error_output_paths: vec!["stderr".to_string()],
            initial_fields: IndexMap::new(),
            processors: Vec::new(),
        }
    }
}

/// `service::telemetry::logs::sampling`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsSamplingConfig {
    /// Whether sampling is on. Default true.
    pub enabled: bool,
    /// Sampling window. Default `10s`.
    pub tick: GoDuration,
    /// Entries with the same message logged per window before sampling starts. Default 10.
    pub initial: u64,
    /// After `initial`, one entry in this many is logged per window. Default 100.
    pub thereafter: u64,
}

impl Default for LogsSamplingConfig {
    fn default() -> Self {
        LogsSamplingConfig {
            enabled: true,
            tick: GoDuration::from_secs(10),
            initial: 10,
            thereafter: 100,
        }
    }
}

/// Parses a case-insensitive keyword into one of an enum's values, naming the allowed values
/// on error.
macro_rules! keyword_enum {
    ($name:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALLOWED: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                match text.trim().to_ascii_lowercase().as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        concat!("unknown ", $what, " {:?}; expected one of: {}"),
                        text,
                        $name::ALLOWED.join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Minimum level of the collector's own logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

keyword_enum!(LogLevel, "log level", {
    Debug => "debug",
    Info => "info",
    Warn => "warn",
    Error => "error",
});

/// How the collector's own logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogEncoding {
    #[default]
    Console,
    Json,
}

keyword_enum!(LogEncoding, "log encoding", {
    Console => "console",
    Json => "json",
});

impl LogEncoding {
    pub fn is_json(self) -> bool {
        self == LogEncoding::Json
    }
}

/// How much the collector reports about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetricsLevel {
    /// No self-metrics at all; the metrics endpoint is not served.
    None,
    /// Essential metrics only.
    Basic,
    /// The standard set.
    #[default]
    Normal,
    /// Everything, including high-cardinality metrics.
    Detailed,
}

keyword_enum!(MetricsLevel, "telemetry level", {
    None => "none",
    Basic => "basic",
    Normal => "normal",
    Detailed => "detailed",
});

/// `service::telemetry::metrics`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsTelemetryConfig {
    /// `none`, `basic`, `normal` or `detailed`. Default `normal`; `none` turns self-metrics off.
    pub level: MetricsLevel,
    /// Deprecated upstream form: `host:port` to serve Prometheus metrics on. Prefer `readers`.
    pub address: Option<String>,
    /// Metric readers, as the OpenTelemetry configuration schema writes them, e.g.
    /// `[{pull: {exporter: {prometheus: {host: localhost, port: 8888}}}}]`. Default: one
    /// Prometheus reader on `localhost:8888`.
    pub readers: Option<Vec<MetricReader>>,
    /// Metric views. Accepted; not applied yet.
    pub views: Option<Value>,
}

impl MetricsTelemetryConfig {
    /// The `host:port` to serve Prometheus self-metrics on: from `address`, else the first pull
    /// reader with a Prometheus exporter, else `localhost:8888` when no readers are configured.
    /// `None` when `level` is `none` or the configured readers have no Prometheus exporter.
    pub fn prometheus_endpoint(&self) -> Option<String> {
        if self.level == MetricsLevel::None {
            return None;
        }
        if let Some(address) = self.address.as_deref().filter(|a| !a.trim().is_empty()) {
            return Some(address.trim().to_string());
        }
        let Some(readers) = &self.readers else {
            return Some(DEFAULT_PROMETHEUS_ENDPOINT.to_string());
        };
        let prometheus = readers
            .iter()
            .find_map(|reader| reader.pull.as_ref()?.exporter.prometheus.as_ref())?;
        let host = prometheus
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or(DEFAULT_PROMETHEUS_HOST);
        let port = prometheus.port.unwrap_or(DEFAULT_PROMETHEUS_PORT);
        // An IPv6 address needs brackets in `host:port`.
        if host.contains(':') && !host.starts_with('[') {
            Some(format!("[{host}]:{port}"))
        } else {
            Some(format!("{host}:{port}"))
        }
    }
}

/// One entry of `service::telemetry::metrics::readers`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricReader {
    /// A reader that is scraped, e.g. by Prometheus.
    pub pull: Option<PullMetricReader>,
    /// A reader that pushes periodically (e.g. over OTLP). Accepted; not used yet.
    pub periodic: Option<Value>,
}

/// `readers[i]::pull`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullMetricReader {
    /// What serves the metrics, e.g. `prometheus`.
    pub exporter: PullMetricExporter,
    /// Accepted for compatibility.
    pub producers: Option<Value>,
    /// Accepted for compatibility.
    pub cardinality_limits: Option<Value>,
}

/// `readers[i]::pull::exporter`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullMetricExporter {
    /// Serve metrics in the Prometheus text format.
    pub prometheus: Option<PrometheusExporterConfig>,
    /// Newer upstream name of the same exporter. Accepted; use `prometheus`.
    #[serde(rename = "prometheus/development")]
    pub prometheus_development: Option<Value>,
}

/// `readers[i]::pull::exporter::prometheus`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusExporterConfig {
    /// Host to listen on. Default `localhost`.
    pub host: Option<String>,
    /// Port to listen on. Default 8888.
    pub port: Option<u16>,
    /// Do not add unit suffixes to metric names.
    pub without_units: Option<bool>,
    /// Do not add type suffixes (`_total`) to metric names.
    pub without_type_suffix: Option<bool>,
    /// Do not add `otel_scope_*` labels.
    pub without_scope_info: Option<bool>,
    /// Resource attributes to add as constant labels. Accepted; not used yet.
    pub with_resource_constant_labels: Option<Value>,
    /// Metric name translation strategy. Accepted; not used yet.
    pub translation_strategy: Option<String>,
}

/// `service::telemetry::traces`. Accepted for compatibility; the collector does not export its
/// own traces yet.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesTelemetryConfig {
    /// `none`, `basic`, `normal` or `detailed`.
    pub level: Option<MetricsLevel>,
    /// Context propagators, e.g. `[tracecontext, b3]`.
    pub propagators: Vec<String>,
    /// OpenTelemetry SDK span processors.
    pub processors: Vec<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode_component;

    fn telemetry(yaml: &str) -> TelemetryConfig {
        let value: Value = serde_yaml_ng::from_str(yaml).unwrap();
        decode_component(&value, "service::telemetry").unwrap()
    }

    #[test]
    fn defaults_match_upstream() {
        let t = telemetry("");
        assert_eq!(t.logs.level, LogLevel::Info);
        assert_eq!(t.logs.encoding, LogEncoding::Console);
        assert_eq!(t.logs.output_paths, ["stderr"]);
        assert_eq!(t.metrics.level, MetricsLevel::Normal);
        assert_eq!(
            t.metrics.prometheus_endpoint().as_deref(),
            Some("localhost:8888")
        );
        let sampling = t.logs.sampling.unwrap();
        assert_eq!((sampling.initial, sampling.thereafter), (10, 100));
        assert_eq!(
            sampling.tick.as_duration(),
            std::time::Duration::from_secs(10)
        );
    }

    #[test]
    fn metrics_endpoint_forms() {
        let endpoint = |yaml: &str| telemetry(yaml).metrics.prometheus_endpoint();
        assert_eq!(endpoint("metrics: {level: none}"), None);
        assert_eq!(endpoint("metrics: {level: NONE}"), None);
        assert_eq!(
            endpoint("metrics: {address: '0.0.0.0:9999'}").as_deref(),
            Some("0.0.0.0:9999")
        );
        let readers =
            "metrics: {readers: [{pull: {exporter: {prometheus: {host: 0.0.0.0, port: 9090}}}}]}";
        assert_eq!(endpoint(readers).as_deref(), Some("0.0.0.0:9090"));
        let v6 =
            "metrics: {readers: [{pull: {exporter: {prometheus: {host: '::1', port: 9090}}}}]}";
        assert_eq!(endpoint(v6).as_deref(), Some("[::1]:9090"));
        let push_only = "metrics: {readers: [{periodic: {exporter: {otlp: {endpoint: x}}}}]}";
        assert_eq!(endpoint(push_only), None);
    }

    #[test]
    fn bad_values_name_the_field_and_the_choices() {
        let value: Value = serde_yaml_ng::from_str("logs: {level: loud}").unwrap();
        let err = decode_component::<TelemetryConfig>(&value, "service::telemetry").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("service::telemetry::logs::level: unknown log level \"loud\""),
            "{text}"
        );
        assert!(text.contains("debug, info, warn, error"), "{text}");

        let value: Value = serde_yaml_ng::from_str("metrics: {lvl: none}").unwrap();
        let text = decode_component::<TelemetryConfig>(&value, "service::telemetry")
            .unwrap_err()
            .to_string();
        assert!(text.contains("service::telemetry::metrics"), "{text}");
        assert!(text.contains("unknown field `lvl`"), "{text}");
    }

    #[test]
    fn log_settings_parse() {
        let t = telemetry("logs: {level: DEBUG, encoding: json, output_paths: [stdout, /tmp/x.log]}\nresource: {service.name: gw, host.name: null}");
        assert_eq!(t.logs.level.as_str(), "debug");
        assert!(t.logs.encoding.is_json());
        assert_eq!(t.logs.output_paths, ["stdout", "/tmp/x.log"]);
        assert_eq!(
            t.resource.get("service.name"),
            Some(&Some("gw".to_string()))
        );
        assert_eq!(t.resource.get("host.name"), Some(&None));
    }
}
