//! The service: validates a whole config, builds the pipelines as a graph of consumers, starts the
//! components in dependency order and stops them in reverse.
//!
//! Build order (as upstream): extensions, exporters, then each pipeline's processors from last to
//! first (each wraps the next consumer), then receivers, which fan out to every pipeline that lists
//! them. Shutdown runs the other way so that nothing is sent to a stage that has already stopped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_yaml_ng::Value;
use threadline_config::{CollectorConfig, ComponentId, ConfigError, ConfigErrors, Signal};
use tokio_util::sync::CancellationToken;

use crate::component::{Component, CreateContext, Exporter, Host, Kind, Processor};
use crate::consumer::{Fanout, NextConsumer};
use crate::registry::Registry;
use crate::telemetry::Telemetry;

/// Something the config does that works but probably is not what the user meant.
#[derive(Debug, Clone)]
pub struct ConfigWarning {
    pub path: String,
    pub message: String,
}

/// Parses and validates a resolved config tree (the `validate` command, the operator's check of
/// an `OpenTelemetryCollector`'s embedded config): every error, each with its YAML path, or the
/// config and its warnings.
pub fn load(
    registry: &Registry,
    root: &Value,
) -> Result<(CollectorConfig, Vec<ConfigWarning>), ConfigErrors> {
    let config = match threadline_config::parse_collector_config(root) {
        Ok(config) => config,
        Err(ConfigErrors(mut errors)) => {
            // Report the components' own errors too, not only what broke the whole.
            errors.extend(validate_components_in_tree(registry, root));
            return Err(ConfigErrors(errors));
        }
    };
    let warnings = validate(registry, &config)?;
    Ok((config, warnings))
}

/// Checks everything that can be checked without binding ports or opening files: every component's
/// type is known and its section decodes, every pipeline is of a supported signal.
/// Returns every error found, each with its YAML path.
pub fn validate(
    registry: &Registry,
    config: &CollectorConfig,
) -> Result<Vec<ConfigWarning>, ConfigErrors> {
    let mut errors = Vec::new();
    for kind in Kind::ALL {
        errors.extend(validate_section(registry, kind, section(config, kind)));
    }
    for id in config.connectors.keys() {
        errors.push(ConfigError {
            path: format!("connectors::{id}"),
            message: "connectors are not supported yet".into(),
        });
    }
    for pipeline_id in config.service.pipelines.keys() {
        if pipeline_id.signal != Signal::Traces {
            errors.push(ConfigError {
                path: format!("service::pipelines::{pipeline_id}"),
                message: format!(
                    "{} pipelines are not supported yet: Threadline runs traces pipelines",
                    signal_name(pipeline_id.signal)
                ),
            });
        }
    }

    let mut warnings = Vec::new();
    for (pipeline_id, pipeline) in &config.service.pipelines {
        let kinds: Vec<&str> = pipeline
            .processors
            .iter()
            .map(|p| p.kind.as_str())
            .collect();
        if let Some(position) = kinds.iter().position(|k| *k == "memory_limiter") {
            if position != 0 {
                warnings.push(ConfigWarning {
                    path: format!("service::pipelines::{pipeline_id}::processors"),
                    message: "memory_limiter should be the first processor, so it refuses data before other processors hold it".into(),
                });
            }
        }
        // The seed's layout: agents export with plain `otlp` to the gateway Service, which spreads
        // one trace's spans over the replicas, and each replica then decides on a fragment.
        if kinds.contains(&"tail_sampling") {
            warnings.push(ConfigWarning {
                path: format!("service::pipelines::{pipeline_id}::processors"),
                message:
                    "tail_sampling decides on the spans this process receives: with more than one \
                     replica, the agents feeding it must route by trace id (the `loadbalancing` \
                     exporter over the gateway's headless Service, as in examples/agent-config.yaml), \
                     or traces are split and decided in fragments"
                        .into(),
            });
        }
    }

    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Validates the component sections of a config tree that did not parse as a whole (a broken
/// pipeline, say), so that `validate` still reports every component's own errors too.
pub fn validate_components_in_tree(registry: &Registry, root: &Value) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for kind in Kind::ALL {
        let Some(Value::Mapping(components)) = root.get(kind.section()) else {
            continue;
        };
        // Ids that do not parse are reported by the config parser already.
        let parsed: Vec<(ComponentId, &Value)> = components
            .iter()
            .filter_map(|(key, value)| Some((key.as_str()?.parse().ok()?, value)))
            .collect();
        errors.extend(validate_section(
            registry,
            kind,
            parsed.iter().map(|(id, v)| (id, *v)),
        ));
    }
    errors
}

/// Validates every component of one section: its type is known and its config decodes.
fn validate_section<'a>(
    registry: &Registry,
    kind: Kind,
    components: impl Iterator<Item = (&'a ComponentId, &'a Value)>,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (id, value) in components {
        let path = format!("{}::{id}", kind.section());
        match registry.validate(kind, &id.kind, value, &path) {
            None => errors.push(ConfigError {
                message: format!(
                    "unknown type \"{}\" (valid values: {})",
                    id.kind,
                    registry.types(kind).join(", ")
                ),
                path,
            }),
            Some(Err(ConfigErrors(mut found))) => errors.append(&mut found),
            Some(Ok(())) => {}
        }
    }
    errors
}

/// The config section holding components of `kind`.
fn section(config: &CollectorConfig, kind: Kind) -> impl Iterator<Item = (&ComponentId, &Value)> {
    match kind {
        Kind::Receiver => config.receivers.iter(),
        Kind::Processor => config.processors.iter(),
        Kind::Exporter => config.exporters.iter(),
        Kind::Extension => config.extensions.iter(),
    }
}

fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "traces",
        Signal::Metrics => "metrics",
        Signal::Logs => "logs",
    }
}

/// A running collector.
pub struct Service {
    telemetry: Arc<Telemetry>,
    host: Arc<Host>,
    receivers: Vec<(ComponentId, Arc<dyn Component>)>,
    /// Each pipeline's processors, first to last.
    pipelines: Vec<Vec<(ComponentId, Arc<dyn Processor>)>>,
    exporters: Vec<(ComponentId, Arc<dyn Exporter>)>,
    metrics_server: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Service {
    /// Builds and starts every component of `config` (which must have passed [`validate`]).
    pub async fn start(registry: &Registry, config: &CollectorConfig) -> anyhow::Result<Service> {
        let telemetry = Telemetry::new(&service_instance_id());
        let metrics_server = match config.service.telemetry.metrics.prometheus_endpoint() {
            Some(endpoint) => {
                let addr = crate::server::resolve_endpoint(&endpoint)
                    .context("service::telemetry::metrics")?;
                let token = CancellationToken::new();
                let handle = telemetry
                    .clone()
                    .serve(addr, token.clone())
                    .await
                    .context("service::telemetry::metrics")?;
                tracing::info!(endpoint = %addr, "serving self-telemetry at /metrics");
                Some((token, handle))
            }
            None => None,
        };

        let mut host = Host::default();
        for id in &config.service.extensions {
            let value = config.extensions.get(id).with_context(|| {
                format!("service::extensions: extension {id} is not configured")
            })?;
            let factory = registry
                .extensions
                .get(id.kind.as_str())
                .with_context(|| format!("extensions::{id}: unknown type"))?;
            let ctx = CreateContext {
                id,
                telemetry: &telemetry,
                host: &host,
            };
            let extension = factory
                .create(&ctx, value)
                .with_context(|| format!("extensions::{id}: cannot start"))?;
            host.extensions.insert(id.clone(), extension);
        }
        let host = Arc::new(host);

        let mut exporters: BTreeMap<ComponentId, Arc<dyn Exporter>> = BTreeMap::new();
        for pipeline in config.service.pipelines.values() {
            for id in &pipeline.exporters {
                if exporters.contains_key(id) {
                    continue;
                }
                let value = config
                    .exporters
                    .get(id)
                    .with_context(|| format!("exporter {id} is not configured"))?;
                let factory = registry
                    .exporters
                    .get(id.kind.as_str())
                    .with_context(|| format!("exporters::{id}: unknown type"))?;
                let ctx = CreateContext {
                    id,
                    telemetry: &telemetry,
                    host: &host,
                };
                let exporter = factory
                    .create_traces(&ctx, value)
                    .with_context(|| format!("exporters::{id}: cannot start"))?;
                exporters.insert(id.clone(), exporter);
            }
        }

        let mut pipelines = Vec::new();
        let mut receiver_targets: BTreeMap<ComponentId, Vec<NextConsumer>> = BTreeMap::new();
        for (pipeline_id, pipeline) in &config.service.pipelines {
            let outputs: Vec<NextConsumer> = pipeline
                .exporters
                .iter()
                .filter_map(|id| exporters.get(id).map(|e| e.clone() as NextConsumer))
                .collect();
            let mut next = Fanout::build(outputs);
            let mut processors = Vec::new();
            for id in pipeline.processors.iter().rev() {
                let value = config
                    .processors
                    .get(id)
                    .with_context(|| format!("processor {id} is not configured"))?;
                let factory = registry
                    .processors
                    .get(id.kind.as_str())
                    .with_context(|| format!("processors::{id}: unknown type"))?;
                let ctx = CreateContext {
                    id,
                    telemetry: &telemetry,
                    host: &host,
                };
                let processor = factory.create_traces(&ctx, value, next).with_context(|| {
                    format!("service::pipelines::{pipeline_id}: processor {id} cannot start")
                })?;
                next = processor.clone() as NextConsumer;
                processors.push((id.clone(), processor));
            }
            processors.reverse();
            pipelines.push(processors);
            for id in &pipeline.receivers {
                receiver_targets
                    .entry(id.clone())
                    .or_default()
                    .push(next.clone());
            }
        }

        let mut receivers = Vec::new();
        for (id, targets) in receiver_targets {
            let value = config
                .receivers
                .get(&id)
                .with_context(|| format!("receiver {id} is not configured"))?;
            let factory = registry
                .receivers
                .get(id.kind.as_str())
                .with_context(|| format!("receivers::{id}: unknown type"))?;
            let ctx = CreateContext {
                id: &id,
                telemetry: &telemetry,
                host: &host,
            };
            let receiver = factory
                .create_traces(&ctx, value, Fanout::build(targets))
                .with_context(|| format!("receivers::{id}: cannot start"))?;
            receivers.push((id, receiver));
        }

        host.health.set_ready(true);
        Ok(Service {
            telemetry,
            host,
            receivers,
            pipelines,
            exporters: exporters.into_iter().collect(),
            metrics_server,
        })
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Stops everything within `timeout`: receivers stop accepting, processors flush, exporters drain
    /// their queues (persistent queues keep the rest on disk), then extensions stop.
    pub async fn shutdown(self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.host.health.set_ready(false);
        for (id, receiver) in &self.receivers {
            tracing::debug!(receiver = %id, "stopping");
            receiver.shutdown(deadline).await;
        }
        for pipeline in &self.pipelines {
            for (id, processor) in pipeline {
                tracing::debug!(processor = %id, "stopping");
                processor.shutdown(deadline).await;
            }
        }
        for (id, exporter) in &self.exporters {
            tracing::debug!(exporter = %id, "stopping");
            exporter.shutdown(deadline).await;
        }
        for (id, extension) in &self.host.extensions {
            tracing::debug!(extension = %id, "stopping");
            extension.shutdown(deadline).await;
        }
        if let Some((token, handle)) = self.metrics_server {
            token.cancel();
            let _ = handle.await;
        }
    }
}

fn service_instance_id() -> String {
    let bytes: [u8; 16] = rand::random();
    // Formatted as a UUID, as upstream's service.instance.id.
    format!(
        "{}-{}-{}-{}-{}",
        hex(&bytes[0..4]),
        hex(&bytes[4..6]),
        hex(&bytes[6..8]),
        hex(&bytes[8..10]),
        hex(&bytes[10..16])
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
