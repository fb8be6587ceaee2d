//! The `store` exporter: the end of a collector pipeline that writes into this process's store.
//! `threadline store` (and `all-in-one`) build their pipelines with it, so ingest uses the
//! collector's receivers unchanged. An append returns once the WAL has the data, so the
//! receiver's acknowledgement means durable.

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

/// Registered by the processes that own a [`Store`].
pub struct StoreExporterFactory {
    pub store: Arc<Store>,
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
        let config: StoreExporterConfig = decode_config(config, &format!("exporters::{}", ctx.id))?;
        Ok(Arc::new(StoreExporter {
            store: self.store.clone(),
            tenant: config.tenant,
            metrics: ctx.telemetry.exporter(ctx.id),
        }))
    }
}

struct StoreExporter {
    store: Arc<Store>,
    tenant: String,
    metrics: threadline_collector::telemetry::ExporterMetrics,
}

#[async_trait]
impl TracesConsumer for StoreExporter {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        let spans = data.span_count() as u64;
        let tenant = if self.store.config().multitenancy_enabled {
            // As Tempo: with multitenancy on, every request names its tenant.
            match threadline_collector::client::metadata_value("x-scope-orgid") {
                Some(id) if crate::api::valid_tenant(&id) => id,
                Some(id) => {
                    return Err(ConsumeError::Permanent(format!(
                        "invalid X-Scope-OrgID {id:?}: use letters, digits, '-', '_' and '.'"
                    )))
                }
                None => {
                    return Err(ConsumeError::Permanent(
                        "no org id: multitenancy is enabled, set the X-Scope-OrgID header".into(),
                    ))
                }
            }
        } else {
            self.tenant.clone()
        };
        match self.store.append(&tenant, &data).await {
            Ok(()) => {
                self.metrics.sent_spans.inc_by(spans);
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
