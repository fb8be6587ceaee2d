//! The `metrics_generator` processor: counts spans before `tail_sampling` drops most of them
//! (upstream needs the `spanmetrics`/`servicegraph` connectors for this). Placed before
//! `tail_sampling`.
//!
//! - In a process with a store (`all-in-one`, `store`) it feeds the store's generator, configured
//!   by the store's `metrics_generator` section; the store exporter then leaves the generator
//!   alone, so no span is counted twice.
//! - In a gateway (`threadline collector`, no store) it runs a generator of its own, configured
//!   by the processor's keys (the same as the store's `metrics_generator` section), and offers
//!   its series on `endpoint` (`GET /metrics`) and by `storage.remote_write` (see `gateway.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde::Deserialize;
use serde_yaml_ng::Value;
use threadline_collector::component::{
    decode_config, Component, ComponentConfig, CreateContext, Processor, ProcessorFactory,
};
use threadline_collector::consumer::{ConsumeError, NextConsumer, TracesConsumer};
use threadline_config::{ConfigError, ConfigErrors};
use threadline_otlp::TraceData;

use super::config::{
    GeneratorStorageConfig, MetricsGeneratorConfig, ProcessorConfig, RegistryConfig,
    SERVICE_GRAPHS, SPAN_METRICS,
};
use super::gateway::ScrapeServer;
use super::Generator;
use crate::engine::{Store, SINGLE_TENANT};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorProcessorConfig {
    /// Tenant of the series: in a store process when its multitenancy is off; in a gateway
    /// for requests without an `X-Scope-OrgID` (a receiver with `include_metadata: true`
    /// passes the request's on, and its series then go to that tenant). Default
    /// `single-tenant`.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Gateway only: `host:port` serving the series at `GET /metrics` for Prometheus to scrape.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Gateway only, as the store's `metrics_generator.processors`; default both.
    #[serde(default)]
    pub processors: Option<Vec<String>>,
    /// Gateway only, as the store's `metrics_generator.processor`.
    #[serde(default)]
    pub processor: Option<ProcessorConfig>,
    /// Gateway only, as the store's `metrics_generator.registry`.
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
    /// Gateway only, as the store's `metrics_generator.storage` (`remote_write`).
    #[serde(default)]
    pub storage: Option<GeneratorStorageConfig>,
    /// Gateway only, as the store's `metrics_generator.max_active_series`.
    #[serde(default)]
    pub max_active_series: Option<u64>,
    /// Gateway only, as the store's `metrics_generator.max_cardinality_per_label`.
    #[serde(default)]
    pub max_cardinality_per_label: Option<u64>,
}

fn default_tenant() -> String {
    SINGLE_TENANT.into()
}

impl GeneratorProcessorConfig {
    /// The keys that configure a gateway's own generator, which are set.
    fn gateway_keys(&self) -> Vec<&'static str> {
        [
            ("endpoint", self.endpoint.is_some()),
            ("processors", self.processors.is_some()),
            ("processor", self.processor.is_some()),
            ("registry", self.registry.is_some()),
            ("storage", self.storage.is_some()),
            ("max_active_series", self.max_active_series.is_some()),
            (
                "max_cardinality_per_label",
                self.max_cardinality_per_label.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }

    /// The generator a gateway runs: both processors unless `processors` names some.
    pub fn generator_config(&self) -> MetricsGeneratorConfig {
        MetricsGeneratorConfig {
            processors: self
                .processors
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| vec![SERVICE_GRAPHS.into(), SPAN_METRICS.into()]),
            processor: self.processor.clone().unwrap_or_default(),
            registry: self.registry.clone().unwrap_or_default(),
            storage: self.storage.clone().unwrap_or_default(),
            max_active_series: self.max_active_series.unwrap_or(0),
            max_cardinality_per_label: self.max_cardinality_per_label.unwrap_or(0),
            // Counted before sampling: exact.
            input_sampled: false,
        }
    }

    fn endpoint(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(text) = &self.endpoint else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|_| {
            ConfigError::new(
                "endpoint",
                format!("{text:?} is not a host:port address (e.g. 127.0.0.1:9465)"),
            )
        })
    }
}

impl ComponentConfig for GeneratorProcessorConfig {
    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        self.generator_config().validate(&mut errors);
        // The store's section reports `metrics_generator::...`; here the keys are the
        // processor's own.
        for e in &mut errors {
            if let Some(rest) = e.path.strip_prefix("metrics_generator::") {
                e.path = rest.to_string();
            }
        }
        if let Err(e) = self.endpoint() {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Built with the store of this process (`all-in-one`, `store`), or without one (`collector`),
/// where the processor runs a generator of its own.
pub struct GeneratorProcessorFactory {
    store: Option<Arc<Store>>,
}

impl GeneratorProcessorFactory {
    pub fn new(store: Arc<Store>) -> Self {
        GeneratorProcessorFactory { store: Some(store) }
    }

    pub fn without_store() -> Self {
        GeneratorProcessorFactory { store: None }
    }
}

impl ProcessorFactory for GeneratorProcessorFactory {
    fn kind(&self) -> &'static str {
        "metrics_generator"
    }

    fn validate(&self, config: &Value, path: &str) -> Result<(), ConfigErrors> {
        decode_config::<GeneratorProcessorConfig>(config, path).map(|_| ())
    }

    fn create_traces(
        &self,
        ctx: &CreateContext<'_>,
        config: &Value,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<dyn Processor>> {
        let path = format!("processors::{}", ctx.id);
        let config: GeneratorProcessorConfig = decode_config(config, &path)?;
        let Some(store) = &self.store else {
            return gateway(&path, config, next);
        };
        if let Some(key) = config.gateway_keys().first() {
            anyhow::bail!(
                "{path}::{key}: configures the generator of a gateway (`threadline collector`); \
                 in a process with a store the processor feeds the store's generator, configured \
                 by the store's `metrics_generator` section"
            );
        }
        let generator = store.generator_or_default();
        generator.set_fed_before_sampling();
        Ok(Arc::new(GeneratorProcessor {
            generator,
            multitenancy: store.config().multitenancy_enabled,
            tenant: config.tenant,
            next,
            server: None,
            owns_generator: false,
        }))
    }
}

/// A gateway's processor: its own generator, offered on `endpoint` and by remote write.
fn gateway(
    path: &str,
    config: GeneratorProcessorConfig,
    next: NextConsumer,
) -> anyhow::Result<Arc<dyn Processor>> {
    let generator_config = config.generator_config();
    let endpoint = config
        .endpoint()
        .map_err(|e| anyhow::anyhow!("{path}::{}: {}", e.path, e.message))?;
    if endpoint.is_none() && generator_config.storage.remote_write.is_empty() {
        anyhow::bail!(
            "{path}: in a gateway the generator's series need a way out: set `endpoint` (a \
             scrape endpoint, e.g. 127.0.0.1:9465) or `storage::remote_write`"
        );
    }
    let generator = Generator::start(generator_config);
    let server = match endpoint {
        Some(addr) => Some(
            ScrapeServer::start(addr, generator.clone())
                .map_err(|e| anyhow::anyhow!("{path}::endpoint: {e}"))?,
        ),
        None => None,
    };
    Ok(Arc::new(GeneratorProcessor {
        generator,
        multitenancy: false,
        tenant: config.tenant,
        next,
        server,
        owns_generator: true,
    }))
}

struct GeneratorProcessor {
    generator: Arc<Generator>,
    multitenancy: bool,
    tenant: String,
    next: NextConsumer,
    server: Option<ScrapeServer>,
    /// A gateway's own generator (not a store's).
    owns_generator: bool,
}

#[async_trait]
impl TracesConsumer for GeneratorProcessor {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        let from_request = || {
            threadline_collector::client::metadata_value("x-scope-orgid")
                .filter(|id| crate::api::valid_tenant(id))
        };
        let tenant = if self.multitenancy {
            from_request()
        } else if self.owns_generator {
            Some(from_request().unwrap_or_else(|| self.tenant.clone()))
        } else {
            Some(self.tenant.clone())
        };
        // Without a valid tenant the store exporter refuses the data; nothing to count.
        if let Some(tenant) = tenant {
            self.generator.observe(&tenant, &data, Instant::now());
        }
        self.next.consume(data).await
    }
}

#[async_trait]
impl Component for GeneratorProcessor {
    async fn shutdown(&self, deadline: Instant) {
        // A store's generator is flushed by the store's own shutdown, after the pipeline has
        // drained into it; a gateway's is flushed here.
        if self.owns_generator {
            self.generator.flush_remote_write(deadline).await;
        }
        if let Some(server) = &self.server {
            server.stop().await;
        }
    }
}
