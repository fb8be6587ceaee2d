//! The `store` exporter: the end of a collector pipeline that writes into this process's store.
//! `threadline store` (and `all-in-one`) build their pipelines with it, so ingest uses the
//! collector's receivers unchanged. An append returns once the WAL has the data, so the
//! receiver's acknowledgement means durable.
//!
//! Every command registers the factory (so `validate` and `components` know it); only the
//! processes that own a store can create the exporter. With multitenancy on, the tenant is the
//! `X-Scope-OrgID` of the client metadata (`threadline_collector::client`): the receivers need
//! `include_metadata: true`, and `batch`/`tail_sampling` must keep that key (`metadata_keys`).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde::Deserialize;
use serde_yaml_ng::Value;
use threadline_collector::component::{
    decode_config, Component, ComponentConfig, CreateContext, Exporter, ExporterFactory,
};
use threadline_collector::consumer::{ConsumeError, TracesConsumer};
use threadline_config::ConfigErrors;
use threadline_otlp::TraceData;

use crate::engine::{Store, SINGLE_TENANT};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreExporterConfig {
    /// Tenant the spans are stored under when multitenancy is off. Default `single-tenant`.
    #[serde(default = "default_tenant")]
    pub tenant: String,
}

fn default_tenant() -> String {
    SINGLE_TENANT.into()
}

impl ComponentConfig for StoreExporterConfig {}

/// The metadata key the tenant is read from, lower-case.
pub const TENANT_METADATA_KEY: &str = "x-scope-orgid";

/// The `store` exporter's factory: with a [`Store`] in processes that own one, without one where
/// configs are only checked (`validate`, `components`, `collector`, which refuses to create it).
pub struct StoreExporterFactory {
    store: Option<Arc<Store>>,
}

impl StoreExporterFactory {
    pub fn new(store: Arc<Store>) -> Self {
        StoreExporterFactory { store: Some(store) }
    }

    /// Validates configs; creating an exporter fails with an explanation.
    pub fn without_store() -> Self {
        StoreExporterFactory { store: None }
    }
}

impl ExporterFactory for StoreExporterFactory {
    fn kind(&self) -> &'static str {
        "store"
    }

    fn validate(&self, config: &Value, path: &str) -> Result<(), ConfigErrors> {
        decode_config::<StoreExporterConfig>(config, path).map(|_| ())
    }

    fn create_traces(
        &self,
        ctx: &CreateContext<'_>,
        config: &Value,
    ) -> anyhow::Result<Arc<dyn Exporter>> {
        let path = format!("exporters::{}", ctx.id);
        let config: StoreExporterConfig = decode_config(config, &path)?;
        let Some(store) = &self.store else {
            anyhow::bail!(
                "{path}: the store exporter writes into a store embedded in this process, which \
                 `threadline all-in-one` runs and `threadline collector` does not: run the config \
                 with `threadline all-in-one --config ...`, or send to a store with the otlp exporter"
            );
        };
        Ok(Arc::new(StoreExporter {
            store: store.clone(),
            tenant: config.tenant,
            metrics: ctx.telemetry.exporter(ctx.id),
            generator: store.generator(),
        }))
    }
}

struct StoreExporter {
    store: Arc<Store>,
    tenant: String,
    metrics: threadline_collector::telemetry::ExporterMetrics,
    generator: Option<Arc<crate::generator::Generator>>,
}

#[async_trait]
impl TracesConsumer for StoreExporter {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        let spans = data.span_count() as u64;
        let tenant =
            if self.store.config().multitenancy_enabled {
                // As Tempo: with multitenancy on, every request names its tenant.
                match threadline_collector::client::metadata_value(TENANT_METADATA_KEY) {
                    Some(id) if crate::api::valid_tenant(&id) => id,
                    Some(id) => {
                        return Err(ConsumeError::Permanent(format!(
                            "invalid X-Scope-OrgID {id:?}: use letters, digits, '-', '_' and '.'"
                        )))
                    }
                    None => return Err(ConsumeError::Permanent(
                        "no org id: multitenancy is enabled, set the X-Scope-OrgID header (and, \
                         in a collector pipeline, the receivers' include_metadata: true and \
                         metadata_keys: [X-Scope-OrgID] on batch and tail_sampling)"
                            .into(),
                    )),
                }
            } else {
                self.tenant.clone()
            };
        match self.store.append(&tenant, &data).await {
            Ok(()) => {
                self.metrics.sent_spans.inc_by(spans);
                if let Some(generator) = &self.generator {
                    generator.observe_stored(&tenant, &data);
                }
                Ok(())
            }
            Err(err) => {
                self.metrics.send_failed_spans.inc_by(spans);
                // Not acknowledged: the client keeps the data and retries.
                Err(ConsumeError::retryable(format!(
                    "the store cannot write: {err:#}"
                )))
            }
        }
    }
}

#[async_trait]
impl Component for StoreExporter {
    async fn shutdown(&self, _deadline: Instant) {}
}

impl Exporter for StoreExporter {}
