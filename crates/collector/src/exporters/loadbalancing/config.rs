//! Configuration of the `loadbalancing` exporter, as contrib's `loadbalancingexporter`.

use serde::Deserialize;
use threadline_config::settings::{split_host_port, GoDuration, QueueSettings, RetrySettings};
use threadline_config::ConfigError;

use crate::component::ComponentConfig;
use crate::exporters::helper;
use crate::exporters::otlp::OtlpExporterConfig;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancingConfig {
    /// What decides a span's backend: `traceID` (default; every span of a trace reaches the same
    /// backend, as tail sampling needs) or `service` (the resource's `service.name`).
    #[serde(default)]
    pub routing_key: RoutingKey,
    /// How to talk to each backend. Only `otlp` exists; it takes the `otlp` exporter's settings
    /// (`tls`, `compression`, `headers`, `timeout`, ...) except `endpoint`, which the resolver
    /// supplies.
    pub protocol: ProtocolConfig,
    /// Where the backends are: exactly one of `static`, `dns` or `k8s`.
    pub resolver: ResolverConfig,
    /// Time allowed for one export attempt to one backend. Default `5s` (or `protocol::otlp::timeout`).
    #[serde(default)]
    pub timeout: Option<GoDuration>,
    /// Queue in front of the routing: data waits here, not per backend, so that a backend that
    /// dies or leaves does not take queued spans with it. Defaults to `protocol::otlp::sending_queue`.
    #[serde(default)]
    pub sending_queue: Option<QueueSettings>,
    /// Retries of spans that could not be delivered; each retry routes them again, so spans of a
    /// dead backend go to their trace's new owner. Defaults to `protocol::otlp::retry_on_failure`.
    #[serde(default)]
    pub retry_on_failure: Option<RetrySettings>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub enum RoutingKey {
    #[default]
    #[serde(rename = "traceID")]
    TraceId,
    #[serde(rename = "service")]
    Service,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Settings of the OTLP/gRPC connection to each backend.
    #[serde(default)]
    pub otlp: OtlpExporterConfig,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolverConfig {
    /// A fixed list of backends.
    #[serde(default, rename = "static")]
    pub static_list: Option<StaticResolverConfig>,
    /// Backends from a DNS name's A/AAAA records (a Kubernetes headless Service), re-resolved
    /// every `interval`.
    #[serde(default)]
    pub dns: Option<DnsResolverConfig>,
    /// Backends from a Kubernetes Service's EndpointSlices, watched through the API server (the
    /// in-cluster service account, or `KUBECONFIG`); needs `get`, `list` and `watch` on
    /// `endpointslices` in the Service's namespace.
    #[serde(default)]
    pub k8s: Option<K8sResolverConfig>,
    /// Backends registered in AWS Cloud Map.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub aws_cloud_map: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticResolverConfig {
    /// Backends as `host[:port]` (port 4317 when absent).
    pub hostnames: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsResolverConfig {
    /// The name to resolve, e.g. `otel-gateway-collector-headless.observability.svc.cluster.local`.
    pub hostname: String,
    /// Port of every backend (a string upstream; a number is accepted too). Default `4317`.
    #[serde(default = "default_dns_port", deserialize_with = "string_or_number")]
    pub port: String,
    /// How often to resolve the name again. Default `5s`.
    #[serde(default = "default_dns_interval")]
    pub interval: GoDuration,
    /// Time allowed for one resolution. Default `1s`.
    #[serde(default = "default_dns_timeout")]
    pub timeout: GoDuration,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K8sResolverConfig {
    /// The Service, as `name.namespace` (or `name`, in the namespace of the current context).
    pub service: String,
    /// Ports of every backend; each ready address is used once per port. Default `[4317]`.
    #[serde(default = "default_k8s_ports")]
    pub ports: Vec<u16>,
    /// Time allowed for each call to the API server. Default `1s`.
    #[serde(default = "default_dns_timeout")]
    pub timeout: GoDuration,
    /// Use `<pod hostname>.<service>.<namespace>` instead of pod IPs (StatefulSet backends whose
    /// certificates name their hosts).
    #[serde(default)]
    pub return_hostnames: bool,
}

fn default_k8s_ports() -> Vec<u16> {
    vec![4317]
}

fn default_dns_port() -> String {
    "4317".into()
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Text(String),
        Number(u64),
    }
    Ok(match Port::deserialize(deserializer)? {
        Port::Text(text) => text,
        Port::Number(number) => number.to_string(),
    })
}

fn default_dns_interval() -> GoDuration {
    GoDuration::from_secs(5)
}

fn default_dns_timeout() -> GoDuration {
    GoDuration::from_secs(1)
}

/// Resolvers this build implements.
pub const SUPPORTED_RESOLVERS: &str = "static, dns, k8s";

/// The endpoint the otlp settings are validated with: the resolver supplies the real ones.
const PLACEHOLDER_ENDPOINT: &str = "backend.invalid:4317";

impl LoadBalancingConfig {
    /// The otlp settings used for every backend, with the resolver's endpoint filled in.
    pub fn backend_config(&self, endpoint: &str) -> OtlpExporterConfig {
        let mut config = self.protocol.otlp.clone();
        config.client.endpoint = endpoint.to_string();
        if let Some(timeout) = self.timeout {
            config.timeout = timeout;
        }
        config
    }

    pub fn queue(&self) -> &QueueSettings {
        self.sending_queue
            .as_ref()
            .unwrap_or(&self.protocol.otlp.sending_queue)
    }

    pub fn retry(&self) -> &RetrySettings {
        self.retry_on_failure
            .as_ref()
            .unwrap_or(&self.protocol.otlp.retry_on_failure)
    }
}

/// `host[:port]` with the default OTLP/gRPC port added when missing.
pub fn with_default_port(hostname: &str) -> Result<String, String> {
    let hostname = hostname.trim();
    if hostname.is_empty() {
        return Err("empty hostname".into());
    }
    if split_host_port(hostname).is_ok() {
        return Ok(hostname.to_string());
    }
    let endpoint = if hostname.contains(':') && !hostname.starts_with('[') {
        format!("[{hostname}]:4317")
    } else {
        format!("{hostname}:4317")
    };
    split_host_port(&endpoint)
        .map(|_| endpoint.clone())
        .map_err(|e| format!("{hostname:?} is not host[:port]: {e}"))
}

impl ComponentConfig for LoadBalancingConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }

    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let resolver = &self.resolver;
        let configured = [
            resolver.static_list.is_some(),
            resolver.dns.is_some(),
            resolver.k8s.is_some(),
            resolver.aws_cloud_map.is_some(),
        ]
        .iter()
        .filter(|set| **set)
        .count();
        if configured != 1 {
            errors.push(ConfigError::new(
                "resolver",
                format!(
                    "exactly one resolver must be configured (found {configured}); supported: \
                     {SUPPORTED_RESOLVERS}"
                ),
            ));
        }
        #[cfg(not(feature = "k8s"))]
        if resolver.k8s.is_some() {
            errors.push(ConfigError::new(
                "resolver::k8s",
                threadline_config::built_without("k8s"),
            ));
        }
        if let Some(k8s) = &resolver.k8s {
            if k8s.service.trim().is_empty() || k8s.service.split('.').count() > 2 {
                errors.push(ConfigError::new(
                    "resolver::k8s::service",
                    format!(
                        "{:?} is not a Service as name.namespace or name",
                        k8s.service
                    ),
                ));
            }
            if k8s.ports.is_empty() || k8s.ports.contains(&0) {
                errors.push(ConfigError::new(
                    "resolver::k8s::ports",
                    "must list the backends' ports (1-65535), e.g. [4317]",
                ));
            }
        }
        if resolver.aws_cloud_map.is_some() {
            errors.push(ConfigError::new(
                "resolver::aws_cloud_map",
                format!("not supported; supported resolvers: {SUPPORTED_RESOLVERS}"),
            ));
        }
        if let Some(list) = &resolver.static_list {
            if list.hostnames.is_empty() {
                errors.push(ConfigError::new(
                    "resolver::static::hostnames",
                    "must list at least one backend (host[:port])",
                ));
            }
            for (i, hostname) in list.hostnames.iter().enumerate() {
                if let Err(message) = with_default_port(hostname) {
                    errors.push(ConfigError::new(
                        format!("resolver::static::hostnames::{i}"),
                        message,
                    ));
                }
            }
        }
        if let Some(dns) = &resolver.dns {
            if dns.hostname.trim().is_empty() {
                errors.push(ConfigError::new(
                    "resolver::dns::hostname",
                    "must name the DNS name to resolve",
                ));
            }
            if dns.port.parse::<u16>().map_or(true, |p| p == 0) {
                errors.push(ConfigError::new(
                    "resolver::dns::port",
                    format!("{:?} is not a port number (1-65535)", dns.port),
                ));
            }
            if dns.interval.is_zero() {
                errors.push(ConfigError::new(
                    "resolver::dns::interval",
                    "must be a positive duration such as 5s",
                ));
            }
        }

        let mut otlp = self.protocol.otlp.clone();
        if otlp.client.endpoint.is_empty() {
            otlp.client.endpoint = PLACEHOLDER_ENDPOINT.into();
        }
        if let Err(otlp_errors) = otlp.validate() {
            errors.extend(otlp_errors.into_iter().map(|e| ConfigError {
                path: format!("protocol::otlp::{}", e.path),
                message: e.message,
            }));
        }
        if self.sending_queue.is_some() || self.retry_on_failure.is_some() {
            errors.extend(helper::validate_settings(self.queue(), self.retry()));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
