//! The `metrics_generator` section of the store config, with Grafana Tempo's keys
//! (`modules/generator/{config.go,processor/*/config.go,registry/config.go,storage/config.go}`,
//! grafana/tempo@ad33aa8f) and Tempo's defaults, so a Tempo config's section carries over.

use std::collections::BTreeMap;

use serde::Deserialize;
use threadline_config::settings::GoDuration;
use threadline_config::ConfigError;

pub const SERVICE_GRAPHS: &str = "service-graphs";
pub const SPAN_METRICS: &str = "span-metrics";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsGeneratorConfig {
    /// Which processors run: `service-graphs`, `span-metrics` (Tempo enables them per tenant in
    /// `overrides.metrics_generator.processors`). Empty (the default): the generator is off and
    /// costs nothing.
    #[serde(default)]
    pub processors: Vec<String>,
    #[serde(default)]
    pub processor: ProcessorConfig,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub storage: GeneratorStorageConfig,
    /// Most series one tenant may have (Tempo's `max_active_series`); 0 = no limit. Samples of
    /// new series past it go to one series per metric labelled `metric_overflow="true"`, and
    /// `traces_generator_series_dropped_total` counts them.
    #[serde(default)]
    pub max_active_series: u64,
    /// Most distinct values one label may have per metric (Tempo's
    /// `max_cardinality_per_label`); 0 = no limit. Values past it read `__cardinality_overflow__`
    /// and `traces_generator_label_values_limited_total{label_name}` counts them.
    #[serde(default)]
    pub max_cardinality_per_label: u64,
    /// The spans this store receives were sampled upstream (it sits behind a gateway's
    /// `tail_sampling`): every series gets `sampled="true"`, so nobody reads its rates as exact.
    #[serde(default)]
    pub input_sampled: bool,
}

impl MetricsGeneratorConfig {
    pub fn enabled(&self) -> bool {
        !self.processors.is_empty()
    }

    pub fn runs(&self, processor: &str) -> bool {
        self.processors.iter().any(|p| p == processor)
    }

    pub fn validate(&self, errors: &mut Vec<ConfigError>) {
        for (i, p) in self.processors.iter().enumerate() {
            if p != SERVICE_GRAPHS && p != SPAN_METRICS {
                errors.push(ConfigError::new(
                    format!("metrics_generator::processors::{i}"),
                    format!("{p:?} is not a processor (valid: {SERVICE_GRAPHS}, {SPAN_METRICS})"),
                ));
            }
        }
        let buckets = [
            (
                "service_graphs",
                &self.processor.service_graphs.histogram_buckets,
            ),
            (
                "span_metrics",
                &self.processor.span_metrics.histogram_buckets,
            ),
        ];
        for (name, buckets) in buckets {
            if buckets.is_empty() || buckets.windows(2).any(|w| w[0] >= w[1]) {
                errors.push(ConfigError::new(
                    format!("metrics_generator::processor::{name}::histogram_buckets"),
                    "must be a non-empty list of increasing numbers (seconds)",
                ));
            }
        }
        let policies = [
            (
                "service_graphs",
                &self.processor.service_graphs.filter_policies,
            ),
            ("span_metrics", &self.processor.span_metrics.filter_policies),
        ];
        for (name, policies) in policies {
            if let Err(message) = super::filter::SpanFilter::new(policies) {
                errors.push(ConfigError::new(
                    format!("metrics_generator::processor::{name}::filter_policies"),
                    message,
                ));
            }
        }
        for (i, rw) in self.storage.remote_write.iter().enumerate() {
            if !(rw.url.starts_with("http://") || rw.url.starts_with("https://")) {
                errors.push(ConfigError::new(
                    format!("metrics_generator::storage::remote_write::{i}::url"),
                    format!("{:?} is not an http(s) URL", rw.url),
                ));
            }
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    #[serde(default)]
    pub service_graphs: ServiceGraphsConfig,
    #[serde(default)]
    pub span_metrics: SpanMetricsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceGraphsConfig {
    /// How long a client (or server) span waits for its other half before it counts as unpaired
    /// (or as a call to a virtual node). Tempo: 10s; here 1m, because the store pairs by
    /// parent/child ids of whole traces and spans of one trace may arrive far apart.
    #[serde(default = "default_wait")]
    pub wait: GoDuration,
    /// Most half-edges waiting per tenant; past it, spans are dropped (and counted).
    #[serde(default = "default_max_items")]
    pub max_items: usize,
    /// Tempo: exponential from 0.1 s, factor 2, 8 buckets.
    #[serde(default = "default_graph_buckets")]
    pub histogram_buckets: Vec<f64>,
    #[serde(default)]
    pub dimensions: Vec<String>,
    #[serde(default)]
    pub enable_client_server_prefix: bool,
    /// Attributes naming the peer of an unpaired client span, in order (Tempo's defaults).
    #[serde(default = "default_peer_attributes")]
    pub peer_attributes: Vec<String>,
    /// Attributes that make a client span a database call, in order (Tempo's defaults).
    #[serde(default = "default_database_name_attributes")]
    pub database_name_attributes: Vec<String>,
    #[serde(default)]
    pub enable_virtual_node_label: bool,
    #[serde(default)]
    pub filter_policies: Vec<FilterPolicy>,
}

impl Default for ServiceGraphsConfig {
    fn default() -> Self {
        ServiceGraphsConfig {
            wait: default_wait(),
            max_items: default_max_items(),
            histogram_buckets: default_graph_buckets(),
            dimensions: Vec::new(),
            enable_client_server_prefix: false,
            peer_attributes: default_peer_attributes(),
            database_name_attributes: default_database_name_attributes(),
            enable_virtual_node_label: false,
            filter_policies: Vec::new(),
        }
    }
}

fn default_wait() -> GoDuration {
    GoDuration::from_secs(60)
}

fn default_max_items() -> usize {
    100_000
}

fn exponential(start: f64, factor: f64, count: usize) -> Vec<f64> {
    (0..count).map(|i| start * factor.powi(i as i32)).collect()
}

fn default_graph_buckets() -> Vec<f64> {
    exponential(0.1, 2.0, 8)
}

fn default_peer_attributes() -> Vec<String> {
    ["peer.service", "db.name", "db.system", "db.system.name"]
        .map(String::from)
        .to_vec()
}

fn default_database_name_attributes() -> Vec<String> {
    ["db.namespace", "db.name", "db.system", "db.system.name"]
        .map(String::from)
        .to_vec()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanMetricsConfig {
    /// Tempo: exponential from 0.002 s, factor 2, 14 buckets.
    #[serde(default = "default_span_buckets")]
    pub histogram_buckets: Vec<f64>,
    #[serde(default)]
    pub intrinsic_dimensions: IntrinsicDimensions,
    #[serde(default)]
    pub dimensions: Vec<String>,
    #[serde(default)]
    pub filter_policies: Vec<FilterPolicy>,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        SpanMetricsConfig {
            histogram_buckets: default_span_buckets(),
            intrinsic_dimensions: IntrinsicDimensions::default(),
            dimensions: Vec::new(),
            filter_policies: Vec::new(),
        }
    }
}

fn default_span_buckets() -> Vec<f64> {
    exponential(0.002, 2.0, 14)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrinsicDimensions {
    #[serde(default = "yes")]
    pub service: bool,
    #[serde(default = "yes")]
    pub span_name: bool,
    #[serde(default = "yes")]
    pub span_kind: bool,
    #[serde(default = "yes")]
    pub status_code: bool,
    #[serde(default)]
    pub status_message: bool,
}

impl Default for IntrinsicDimensions {
    fn default() -> Self {
        IntrinsicDimensions {
            service: true,
            span_name: true,
            span_kind: true,
            status_code: true,
            status_message: false,
        }
    }
}

fn yes() -> bool {
    true
}

/// Tempo's `filter_policies` entry (`pkg/spanfilter/config`): a span is kept when it matches
/// `include` (if given) and does not match `exclude` (if given).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterPolicy {
    #[serde(default)]
    pub include: Option<PolicyMatch>,
    #[serde(default)]
    pub exclude: Option<PolicyMatch>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyMatch {
    /// `strict` or `regex`.
    pub match_type: String,
    #[serde(default)]
    pub attributes: Vec<MatchAttribute>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchAttribute {
    /// `name`, `kind`, `status`, `span.<attr>` or `resource.<attr>`.
    pub key: String,
    pub value: serde_yaml_ng::Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// How often series are sent to remote write. Tempo: 15s.
    #[serde(default = "default_collection_interval")]
    pub collection_interval: GoDuration,
    /// A series not updated for this long is removed. Tempo: 15m.
    #[serde(default = "default_stale_duration")]
    pub stale_duration: GoDuration,
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Label carrying the tenant id on every series (remote write and a scrape of one tenant).
    /// A scrape of all tenants always labels them, as `tenant` unless this names another label.
    #[serde(default)]
    pub inject_tenant_id_as: String,
    #[serde(default = "default_max_label_value_length")]
    pub max_label_value_length: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            collection_interval: default_collection_interval(),
            stale_duration: default_stale_duration(),
            external_labels: BTreeMap::new(),
            inject_tenant_id_as: String::new(),
            max_label_value_length: default_max_label_value_length(),
        }
    }
}

fn default_collection_interval() -> GoDuration {
    GoDuration::from_secs(15)
}

fn default_stale_duration() -> GoDuration {
    GoDuration::from_secs(15 * 60)
}

fn default_max_label_value_length() -> usize {
    2048
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorStorageConfig {
    /// Prometheus remote-write endpoints (a subset of Prometheus' `remote_write` entry).
    #[serde(default)]
    pub remote_write: Vec<RemoteWriteConfig>,
    /// Send `X-Scope-OrgID: <tenant>` with each tenant's series. Tempo's default: true.
    #[serde(default = "yes")]
    pub remote_write_add_org_id_header: bool,
}

impl Default for GeneratorStorageConfig {
    fn default() -> Self {
        GeneratorStorageConfig {
            remote_write: Vec::new(),
            remote_write_add_org_id_header: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    pub url: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per request. Prometheus' default: 30s.
    #[serde(default = "default_remote_timeout")]
    pub remote_timeout: GoDuration,
    /// Collections waiting to be sent; past it the oldest is dropped (and counted).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Attempts per request on 5xx, 429 and connection errors, with exponential backoff.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

fn default_remote_timeout() -> GoDuration {
    GoDuration::from_secs(30)
}

fn default_queue_capacity() -> usize {
    16
}

fn default_max_retries() -> u32 {
    5
}
