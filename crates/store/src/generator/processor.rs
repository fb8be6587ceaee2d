//! The `metrics_generator` processor: feeds the store's generator from inside a collector
//! pipeline, so that all-in-one counts every span before `tail_sampling` drops most of them
//! (upstream needs the `spanmetrics`/`servicegraph` connectors for this). Placed before
//! `tail_sampling`; the store exporter then leaves the generator alone.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde::Deserialize;
use serde_yaml_ng::Value;
use threadline_collector::component::{
    decode_config, Component, ComponentConfig, CreateContext, Processor, ProcessorFactory,
};
use threadline_collector::consumer::{ConsumeError, NextConsumer, TracesConsumer};
use threadline_config::ConfigErrors;
use threadline_otlp::TraceData;

use super::Generator;
use crate::engine::{Store, SINGLE_TENANT};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorProcessorConfig {
    /// Tenant when the store's multitenancy is off. Default `single-tenant`.
    #[serde(default = "default_tenant")]
    pub tenant: String,
}

fn default_tenant() -> String {
    SINGLE_TENANT.into()
}

impl ComponentConfig for GeneratorProcessorConfig {}

/// Built with the store of this process (`all-in-one`, `store`), or without one (`collector`),
/// where a config naming `metrics_generator` is refused with the reason.
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
            anyhow::bail!(
                "{path}: the metrics_generator processor feeds the generator of a store embedded \
                 in this process, which `threadline all-in-one` and `threadline store` run and \
                 `threadline collector` does not"
            );
        };
        let generator = store.generator_or_default();
        generator.set_fed_before_sampling();
        Ok(Arc::new(GeneratorProcessor {
            generator,
            multitenancy: store.config().multitenancy_enabled,
            tenant: config.tenant,
            next,
        }))
    }
}

struct GeneratorProcessor {
    generator: Arc<Generator>,
    multitenancy: bool,
    tenant: String,
    next: NextConsumer,
}

#[async_trait]
impl TracesConsumer for GeneratorProcessor {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        let tenant = if self.multitenancy {
            threadline_collector::client::metadata_value("x-scope-orgid")
                .filter(|id| crate::api::valid_tenant(id))
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
    async fn shutdown(&self, _deadline: Instant) {}
}
