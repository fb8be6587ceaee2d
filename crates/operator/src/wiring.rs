//! Config defaults the upstream operator applies, and Threadline's one addition: whole traces
//! through a scaled tail-sampling gateway.
//!
//! A gateway with `tail_sampling` and more than one replica behind a plain Service splits traces:
//! each replica sees some spans of a trace and decides alone. When an agent's `otlp` exporter
//! points at such a gateway's Service, the operator swaps that exporter for a `loadbalancing`
//! exporter (routing by trace id, same OTLP settings) on the gateway's headless Service, so every
//! span of a trace reaches the same replica. Each rewrite — or the reason none was possible — is
//! reported as a condition on the resources.

use serde_yaml_ng::{Mapping, Value};

use crate::collector::collector_name;
use crate::crd::{CollectorMode, OpenTelemetryCollector};

/// Opting an agent out of the rewrite: this annotation set to `"false"`.
pub const ROUTE_ANNOTATION: &str = "threadline.dev/route-by-trace-id";

/// Applies upstream's config defaults: receivers without an endpoint listen on all interfaces
/// (the collector's own default is localhost, unreachable from a Service), and the collector's
/// metrics are served on `0.0.0.0:8888` for the monitoring Service. Returns whether it changed.
pub fn apply_defaults(tree: &mut Value) -> bool {
    let mut changed = false;
    if let Some(Value::Mapping(receivers)) = tree.get_mut("receivers") {
        for (id, receiver) in receivers.iter_mut() {
            let is_otlp = id
                .as_str()
                .is_some_and(|id| id == "otlp" || id.starts_with("otlp/"));
            if !is_otlp {
                continue;
            }
            let Some(Value::Mapping(protocols)) = receiver.get_mut("protocols") else {
                continue;
            };
            for (protocol, port) in [("grpc", 4317), ("http", 4318)] {
                let Some(settings) = protocols.get_mut(protocol) else {
                    continue;
                };
                if settings.is_null() {
                    *settings = Value::Mapping(Mapping::new());
                }
                if let Value::Mapping(settings) = settings {
                    if !settings.contains_key("endpoint") {
                        settings.insert("endpoint".into(), format!("0.0.0.0:{port}").into());
                        changed = true;
                    }
                }
            }
        }
    }
    let service = ensure_mapping(tree, "service");
    let telemetry = ensure_mapping(service, "telemetry");
    let metrics = ensure_mapping(telemetry, "metrics");
    if let Value::Mapping(metrics) = metrics {
        if !metrics.contains_key("address") && !metrics.contains_key("readers") {
            metrics.insert("address".into(), "0.0.0.0:8888".into());
            changed = true;
        }
    }
    changed
}

fn ensure_mapping<'a>(value: &'a mut Value, key: &str) -> &'a mut Value {
    if !value.is_mapping() {
        *value = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(map) = value else {
        unreachable!("made a mapping above")
    };
    let entry = map
        .entry(key.into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if !entry.is_mapping() {
        *entry = Value::Mapping(Mapping::new());
    }
    entry
}

/// A condition the wiring reports on a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WiringNote {
    /// Index of the resource in the slice given to [`wire`].
    pub resource: usize,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The condition type of wiring notes.
pub const CONDITION_TYPE: &str = "TraceRouting";

/// A collector with its config tree, as the wiring sees it.
pub struct Planned<'a> {
    pub resource: &'a OpenTelemetryCollector,
    pub tree: Value,
    pub rewritten: bool,
}

/// A tail-sampling gateway that splits traces unless fed by trace id.
struct Gateway {
    index: usize,
    name: String,
    namespace: String,
    replicas: i32,
}

fn is_tail_sampling_gateway(collector: &OpenTelemetryCollector, tree: &Value) -> Option<i32> {
    let replicas = match collector.spec.mode {
        CollectorMode::Deployment | CollectorMode::Statefulset => {
            collector.spec.replicas.unwrap_or(1)
        }
        _ => return None,
    };
    let pipelines = tree.get("service")?.get("pipelines")?.as_mapping()?;
    let samples = pipelines.iter().any(|(id, pipeline)| {
        id.as_str()
            .is_some_and(|id| id == "traces" || id.starts_with("traces/"))
            && pipeline
                .get("processors")
                .and_then(|p| p.as_sequence())
                .is_some_and(|p| {
                    p.iter()
                        .filter_map(|id| id.as_str())
                        .any(|id| id == "tail_sampling" || id.starts_with("tail_sampling/"))
                })
    });
    (samples && replicas > 1).then_some(replicas)
}

/// The host part of an exporter endpoint (`host:port`, `http://host:port`, `dns:///host:port`).
fn endpoint_host_port(endpoint: &str) -> (String, Option<u16>) {
    let rest = endpoint
        .split_once("://")
        .map(|(_, rest)| rest.trim_start_matches('/'))
        .unwrap_or(endpoint);
    let rest = rest.split('/').next().unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().ok()),
        None => (rest.to_string(), None),
    }
}

fn points_at(host: &str, gateway: &Gateway, exporter_namespace: &str) -> bool {
    let service = collector_name(&gateway.name);
    let qualified = [
        format!("{service}.{}", gateway.namespace),
        format!("{service}.{}.svc", gateway.namespace),
        format!("{service}.{}.svc.cluster.local", gateway.namespace),
    ];
    (host == service && exporter_namespace == gateway.namespace)
        || qualified.iter().any(|q| q == host)
}

/// Rewires agents feeding scaled tail-sampling gateways (see the module doc) and returns the
/// conditions to report.
pub fn wire(planned: &mut [Planned<'_>]) -> Vec<WiringNote> {
    let gateways: Vec<Gateway> = planned
        .iter()
        .enumerate()
        .filter_map(|(index, p)| {
            let replicas = is_tail_sampling_gateway(p.resource, &p.tree)?;
            Some(Gateway {
                index,
                name: p.resource.metadata.name.clone()?,
                namespace: p
                    .resource
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                replicas,
            })
        })
        .collect();
    let mut notes = Vec::new();
    let mut fed: Vec<bool> = vec![false; gateways.len()];
    for (index, agent) in planned.iter_mut().enumerate() {
        let namespace = agent
            .resource
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let opted_out = agent
            .resource
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ROUTE_ANNOTATION))
            .is_some_and(|v| v.eq_ignore_ascii_case("false"));
        let Some(Value::Mapping(exporters)) = agent.tree.get("exporters").cloned() else {
            continue;
        };
        for (id, settings) in &exporters {
            let Some(id) = id.as_str() else { continue };
            if !(id == "otlp" || id.starts_with("otlp/")) {
                continue;
            }
            let Some(endpoint) = settings.get("endpoint").and_then(|e| e.as_str()) else {
                continue;
            };
            let (host, port) = endpoint_host_port(endpoint);
            let Some((g, gateway)) = gateways
                .iter()
                .enumerate()
                .find(|(_, g)| g.index != index && points_at(&host, g, &namespace))
            else {
                continue;
            };
            fed[g] = true;
            let agent_name = agent.resource.metadata.name.clone().unwrap_or_default();
            if opted_out {
                let message = format!(
                    "exporter {id} sends to {} ({} replicas with tail_sampling) through its Service, \
                     which splits traces across replicas; rewiring is disabled by {ROUTE_ANNOTATION}=false",
                    collector_name(&gateway.name),
                    gateway.replicas
                );
                notes.push(WiringNote {
                    resource: index,
                    status: false,
                    reason: "TracesMaySplit",
                    message,
                });
                continue;
            }
            let new_id = format!("loadbalancing/{}", gateway.name);
            let headless = format!(
                "{}-headless.{}.svc",
                collector_name(&gateway.name),
                gateway.namespace
            );
            let mut otlp = settings.as_mapping().cloned().unwrap_or_default();
            otlp.remove("endpoint");
            // Queue and retries belong to the loadbalancing exporter as a whole (it re-routes a
            // failed part to the trace's new owner).
            let mut lb = Mapping::new();
            for key in ["sending_queue", "retry_on_failure", "timeout"] {
                if let Some(value) = otlp.remove(key) {
                    lb.insert(key.into(), value);
                }
            }
            lb.insert("routing_key".into(), "traceID".into());
            let mut protocol = Mapping::new();
            protocol.insert("otlp".into(), Value::Mapping(otlp));
            lb.insert("protocol".into(), Value::Mapping(protocol));
            let mut dns = Mapping::new();
            dns.insert("hostname".into(), headless.clone().into());
            dns.insert("port".into(), port.unwrap_or(4317).to_string().into());
            let mut resolver = Mapping::new();
            resolver.insert("dns".into(), Value::Mapping(dns));
            lb.insert("resolver".into(), Value::Mapping(resolver));

            if let Some(Value::Mapping(exporters)) = agent.tree.get_mut("exporters") {
                exporters.remove(id);
                exporters.insert(new_id.clone().into(), Value::Mapping(lb));
            }
            rename_in_pipelines(&mut agent.tree, id, &new_id);
            agent.rewritten = true;
            notes.push(WiringNote {
                resource: index,
                status: true,
                reason: "RoutedByTraceID",
                message: format!(
                    "exporter {id} to {} ({} replicas with tail_sampling) replaced by {new_id}: \
                     routing_key traceID over {headless}, so each trace reaches one replica whole",
                    collector_name(&gateway.name),
                    gateway.replicas
                ),
            });
            notes.push(WiringNote {
                resource: gateway.index,
                status: true,
                reason: "RoutedByTraceID",
                message: format!(
                    "agent {namespace}/{agent_name} routes spans by trace id to the replicas"
                ),
            });
        }
    }
    for (g, gateway) in gateways.iter().enumerate() {
        if !fed[g] {
            notes.push(WiringNote {
                resource: gateway.index,
                status: false,
                reason: "TracesMaySplit",
                message: format!(
                    "{} replicas run tail_sampling but no agent managed here routes to them by trace \
                     id: clients sending to {} directly split traces across replicas; send through an \
                     agent whose otlp exporter points at this Service",
                    gateway.replicas,
                    collector_name(&gateway.name)
                ),
            });
        }
    }
    notes
}

fn rename_in_pipelines(tree: &mut Value, from: &str, to: &str) {
    let Some(Value::Mapping(pipelines)) =
        tree.get_mut("service").and_then(|s| s.get_mut("pipelines"))
    else {
        return;
    };
    for (_, pipeline) in pipelines.iter_mut() {
        if let Some(Value::Sequence(exporters)) = pipeline.get_mut("exporters") {
            for exporter in exporters.iter_mut() {
                if exporter.as_str() == Some(from) {
                    *exporter = to.into();
                }
            }
        }
    }
}
