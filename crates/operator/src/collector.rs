//! Rendering an `OpenTelemetryCollector` into the objects that run it, named and labelled as the
//! upstream operator names and labels them, so that selectors, dashboards and `kubectl` habits
//! carry over:
//!
//! | object | name |
//! |---|---|
//! | ConfigMap | `<name>-collector-<first 8 hex of sha256(config)>` (a config change rolls the pods) |
//! | ServiceAccount | `<name>-collector` (unless `spec.serviceAccount` names one) |
//! | Service | `<name>-collector`, `<name>-collector-headless`, `<name>-collector-monitoring` |
//! | Deployment / DaemonSet / StatefulSet | `<name>-collector` |
//!
//! The embedded config is checked with the collector's own validator first: an invalid config
//! renders nothing (the controller reports it in the resource's status and events).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use threadline_collector::registry::Registry;
use threadline_config::ConfigErrors;

use crate::crd::{CollectorMode, OpenTelemetryCollector};

/// The image used when `spec.image` is empty.
pub const DEFAULT_IMAGE: &str =
    concat!("ghcr.io/threadline/threadline:", env!("CARGO_PKG_VERSION"));
/// Where the config is mounted in the collector container, as upstream.
const CONFIG_MOUNT_DIR: &str = "/conf";
const CONFIG_FILE: &str = "collector.yaml";
const CONTAINER_NAME: &str = "otc-container";
const CONFIG_VOLUME: &str = "otc-internal";
const DEFAULT_METRICS_PORT: i32 = 8888;
const HEALTH_CHECK_PORT: i32 = 13133;

/// Why a collector resource cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("spec.config: {0}")]
    ConfigSyntax(String),
    #[error("spec.config is not a valid collector configuration:\n{0}")]
    ConfigInvalid(ConfigErrors),
    #[error(
        "spec.mode: sidecar is not supported yet (supported: deployment, daemonset, statefulset)"
    )]
    SidecarMode,
    #[error("metadata.{0} is required")]
    MissingMetadata(&'static str),
}

/// The objects for one collector resource, each a complete Kubernetes object
/// (`apiVersion`, `kind`, `metadata`, ...), in apply order.
#[derive(Clone, Debug)]
pub struct CollectorObjects {
    pub config_map: Value,
    pub service_account: Option<Value>,
    pub services: Vec<Value>,
    pub workload: Value,
    /// Warnings from the config validator (rendered anyway).
    pub warnings: Vec<String>,
}

impl CollectorObjects {
    pub fn all(&self) -> Vec<&Value> {
        let mut objects = vec![&self.config_map];
        objects.extend(self.service_account.as_ref());
        objects.extend(self.services.iter());
        objects.push(&self.workload);
        objects
    }

    pub fn workload_kind(&self) -> &str {
        self.workload["kind"].as_str().unwrap_or("Deployment")
    }
}

/// The collector config as a YAML tree, from the string or object form.
pub fn config_tree(
    collector: &OpenTelemetryCollector,
) -> Result<serde_yaml_ng::Value, RenderError> {
    match &collector.spec.config {
        Value::String(text) => serde_yaml_ng::from_str(text)
            .map_err(|e| RenderError::ConfigSyntax(format!("not valid YAML: {e}"))),
        Value::Null => Err(RenderError::ConfigSyntax("is required".into())),
        other => {
            serde_yaml_ng::to_value(other).map_err(|e| RenderError::ConfigSyntax(e.to_string()))
        }
    }
}

/// The config text written to the ConfigMap: the user's own text when given as a string (comments
/// kept), serialized YAML otherwise.
fn config_text(collector: &OpenTelemetryCollector, tree: &serde_yaml_ng::Value) -> String {
    match &collector.spec.config {
        Value::String(text) => text.clone(),
        _ => serde_yaml_ng::to_string(tree).unwrap_or_default(),
    }
}

/// Checks a config tree with the collector's validator. `${env:VAR}` references are expanded
/// from the collector's `spec.env` literal values (others become empty, as upstream expands an
/// unset variable), so a config that only works with its pod's environment still validates.
pub fn validate_config(
    tree: &serde_yaml_ng::Value,
    env: &BTreeMap<String, String>,
) -> Result<Vec<String>, RenderError> {
    let text =
        serde_yaml_ng::to_string(tree).map_err(|e| RenderError::ConfigSyntax(e.to_string()))?;
    let sources = threadline_config::ConfigSources {
        configs: vec![format!("yaml:{text}")],
        sets: Vec::new(),
    };
    let lookup = |name: &str| Some(env.get(name).cloned().unwrap_or_default());
    let root = threadline_config::resolve_with_env(&sources, &lookup)
        .map_err(RenderError::ConfigInvalid)?;
    let (_, warnings) = threadline_collector::service::load(&Registry::builtin(), &root)
        .map_err(RenderError::ConfigInvalid)?;
    Ok(warnings
        .into_iter()
        .map(|w| format!("{}: {}", w.path, w.message))
        .collect())
}

/// `<name>-collector`.
pub fn collector_name(name: &str) -> String {
    format!("{name}-collector")
}

/// Labels every object of the collector carries; `name` is the object's own name.
pub fn labels(collector: &OpenTelemetryCollector, name: &str, image: &str) -> Map<String, Value> {
    let mut labels = Map::new();
    for (key, value) in collector.metadata.labels.iter().flatten() {
        labels.insert(key.clone(), json!(value));
    }
    for (key, value) in selector_labels(collector) {
        labels.insert(key, value);
    }
    labels.insert("app.kubernetes.io/name".into(), json!(name));
    labels.insert(
        "app.kubernetes.io/version".into(),
        json!(image_version(image)),
    );
    labels
}

/// The labels the workload selects its pods by (upstream's selector labels).
pub fn selector_labels(collector: &OpenTelemetryCollector) -> Map<String, Value> {
    let namespace = collector.metadata.namespace.as_deref().unwrap_or("default");
    let name = collector.metadata.name.as_deref().unwrap_or_default();
    let mut labels = Map::new();
    labels.insert(
        "app.kubernetes.io/component".into(),
        json!("opentelemetry-collector"),
    );
    labels.insert(
        "app.kubernetes.io/instance".into(),
        json!(format!("{namespace}.{name}")),
    );
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        json!("opentelemetry-operator"),
    );
    labels.insert("app.kubernetes.io/part-of".into(), json!("opentelemetry"));
    labels
}

/// The selector as a label-selector string (status `scale.selector`).
pub fn selector_string(collector: &OpenTelemetryCollector) -> String {
    selector_labels(collector)
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The tag of an image reference, or `latest`, as upstream's version label.
fn image_version(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag.to_string(),
        _ => "latest".to_string(),
    }
}

/// The owner reference that lets Kubernetes garbage-collect the objects with their resource.
/// Only a resource read from the cluster has a `uid`; offline renders (`operator render`) carry
/// none, since the API server would refuse an empty one.
fn owner_reference(collector: &OpenTelemetryCollector) -> Option<Value> {
    let uid = collector.metadata.uid.clone().filter(|u| !u.is_empty())?;
    Some(json!({
        "apiVersion": "opentelemetry.io/v1beta1",
        "kind": "OpenTelemetryCollector",
        "name": collector.metadata.name,
        "uid": uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }))
}

fn metadata(collector: &OpenTelemetryCollector, name: &str, image: &str) -> Value {
    let mut metadata = json!({
        "name": name,
        "namespace": collector.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        "labels": labels(collector, name, image),
    });
    if let Some(owner) = owner_reference(collector) {
        metadata["ownerReferences"] = json!([owner]);
    }
    metadata
}

/// One port the collector listens on, from its receivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverPort {
    pub name: String,
    pub port: i32,
    pub app_protocol: &'static str,
}

/// The ports of the config's receivers: `otlp` gRPC (`otlp-grpc`, 4317) and HTTP (`otlp-http`,
/// 4318), with the port of the configured endpoint. Named receivers (`otlp/x`) get `otlp-x-grpc`;
/// a name longer than a port name may be (15) becomes `port-<number>`, as upstream does.
pub fn receiver_ports(tree: &serde_yaml_ng::Value) -> Vec<ReceiverPort> {
    let mut ports = Vec::new();
    let Some(serde_yaml_ng::Value::Mapping(receivers)) = tree.get("receivers") else {
        return ports;
    };
    for (id, receiver) in receivers {
        let Some(id) = id.as_str() else { continue };
        let (kind, instance) = id.split_once('/').unwrap_or((id, ""));
        if kind != "otlp" {
            continue;
        }
        let prefix = if instance.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}-{}", instance.replace(['/', '_', '.'], "-"))
        };
        for (protocol, default_port, app_protocol) in
            [("grpc", 4317, "grpc"), ("http", 4318, "http")]
        {
            let Some(settings) = receiver.get("protocols").and_then(|p| p.get(protocol)) else {
                continue;
            };
            let port = settings
                .get("endpoint")
                .and_then(|e| e.as_str())
                .and_then(|e| e.rsplit(':').next())
                .and_then(|p| p.parse::<i32>().ok())
                .unwrap_or(default_port);
            let mut name = format!("{prefix}-{protocol}").to_lowercase();
            if name.len() > 15 {
                name = format!("port-{port}");
            }
            ports.push(ReceiverPort {
                name,
                port,
                app_protocol,
            });
        }
    }
    ports
}

/// The port of the collector's own metrics (`service.telemetry.metrics`), 8888 by default.
fn metrics_port(tree: &serde_yaml_ng::Value) -> i32 {
    let metrics = tree
        .get("service")
        .and_then(|s| s.get("telemetry"))
        .and_then(|t| t.get("metrics"));
    let from_address = metrics
        .and_then(|m| m.get("address"))
        .and_then(|a| a.as_str())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok());
    let from_reader = metrics
        .and_then(|m| m.get("readers"))
        .and_then(|r| r.as_sequence())
        .and_then(|r| r.first())
        .and_then(|r| r.get("pull"))
        .and_then(|p| p.get("exporter"))
        .and_then(|e| e.get("prometheus"))
        .and_then(|p| p.get("port"))
        .and_then(|p| p.as_i64())
        .and_then(|p| i32::try_from(p).ok());
    from_address.or(from_reader).unwrap_or(DEFAULT_METRICS_PORT)
}

fn has_health_check(tree: &serde_yaml_ng::Value) -> bool {
    tree.get("service")
        .and_then(|s| s.get("extensions"))
        .and_then(|e| e.as_sequence())
        .is_some_and(|ids| {
            ids.iter()
                .filter_map(|id| id.as_str())
                .any(|id| id == "health_check" || id.starts_with("health_check/"))
        })
}

fn config_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Renders one collector resource. `tree` is its config (possibly rewired by
/// [`crate::wiring`]); `rewritten` says whether to serialize `tree` instead of keeping the user's text.
pub fn render(
    collector: &OpenTelemetryCollector,
    tree: &serde_yaml_ng::Value,
    rewritten: bool,
) -> Result<CollectorObjects, RenderError> {
    let name = collector
        .metadata
        .name
        .clone()
        .ok_or(RenderError::MissingMetadata("name"))?;
    if collector.spec.mode == CollectorMode::Sidecar {
        return Err(RenderError::SidecarMode);
    }
    let env: BTreeMap<String, String> = collector
        .spec
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    let warnings = validate_config(tree, &env)?;

    let spec = &collector.spec;
    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| DEFAULT_IMAGE.to_string());
    let base = collector_name(&name);
    let text = if rewritten {
        serde_yaml_ng::to_string(tree).map_err(|e| RenderError::ConfigSyntax(e.to_string()))?
    } else {
        config_text(collector, tree)
    };
    let hash = config_hash(&text);
    let config_map_name = format!("{base}-{}", &hash[..8]);

    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(collector, &config_map_name, &image),
        "data": { CONFIG_FILE: text },
    });

    let service_account_name = spec.service_account.clone().unwrap_or_else(|| base.clone());
    let service_account = spec.service_account.is_none().then(|| {
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(collector, &base, &image),
        })
    });

    let ports = receiver_ports(tree);
    let metrics_port = metrics_port(tree);
    let services = render_services(collector, &base, &image, &ports, metrics_port);

    let mut container_ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"name": p.name, "containerPort": p.port, "protocol": "TCP"}))
        .collect();
    container_ports
        .push(json!({"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"}));

    let mut container_env = vec![json!({
        "name": "POD_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    })];
    container_env.extend(spec.env.iter().map(|e| json!(e)));

    let mut args = Vec::new();
    if image.contains("threadline") {
        // Threadline's image runs `threadline`; upstream's images run the collector directly.
        args.push(json!("collector"));
    }
    args.push(json!(format!("--config={CONFIG_MOUNT_DIR}/{CONFIG_FILE}")));
    args.extend(spec.args.iter().map(|(k, v)| json!(format!("--{k}={v}"))));

    let mut volume_mounts = vec![json!({"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT_DIR})];
    volume_mounts.extend(spec.volume_mounts.iter().map(|m| json!(m)));

    let mut container = json!({
        "name": CONTAINER_NAME,
        "image": image,
        "args": args,
        "ports": container_ports,
        "env": container_env,
        "volumeMounts": volume_mounts,
    });
    let c = container.as_object_mut().expect("container is an object");
    if let Some(policy) = &spec.image_pull_policy {
        c.insert("imagePullPolicy".into(), json!(policy));
    }
    if let Some(resources) = &spec.resources {
        c.insert("resources".into(), json!(resources));
    }
    if !spec.env_from.is_empty() {
        c.insert("envFrom".into(), json!(spec.env_from));
    }
    if let Some(security_context) = &spec.security_context {
        c.insert("securityContext".into(), json!(security_context));
    }
    if has_health_check(tree) {
        let probe = json!({"httpGet": {"path": "/", "port": HEALTH_CHECK_PORT}});
        c.insert("livenessProbe".into(), probe.clone());
        c.insert("readinessProbe".into(), probe);
    }

    let mut volumes = vec![json!({
        "name": CONFIG_VOLUME,
        "configMap": {
            "name": config_map_name,
            "items": [{"key": CONFIG_FILE, "path": CONFIG_FILE}],
        },
    })];
    volumes.extend(spec.volumes.iter().map(|v| json!(v)));

    let mut pod_spec = json!({
        "serviceAccountName": service_account_name,
        "containers": [container],
        "volumes": volumes,
    });
    let p = pod_spec.as_object_mut().expect("pod spec is an object");
    if !spec.node_selector.is_empty() {
        p.insert("nodeSelector".into(), json!(spec.node_selector));
    }
    if !spec.tolerations.is_empty() {
        p.insert("tolerations".into(), json!(spec.tolerations));
    }
    if let Some(affinity) = &spec.affinity {
        p.insert("affinity".into(), json!(affinity));
    }
    if let Some(class) = &spec.priority_class_name {
        p.insert("priorityClassName".into(), json!(class));
    }
    if let Some(context) = &spec.pod_security_context {
        p.insert("securityContext".into(), json!(context));
    }
    if let Some(seconds) = spec.termination_grace_period_seconds {
        p.insert("terminationGracePeriodSeconds".into(), json!(seconds));
    }
    if spec.host_network {
        p.insert("hostNetwork".into(), json!(true));
        p.insert("dnsPolicy".into(), json!("ClusterFirstWithHostNet"));
    }

    let mut pod_annotations: Map<String, Value> = spec
        .pod_annotations
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    pod_annotations.insert("opentelemetry-operator-config/sha256".into(), json!(hash));
    pod_annotations.insert("prometheus.io/scrape".into(), json!("true"));
    pod_annotations.insert("prometheus.io/port".into(), json!(metrics_port.to_string()));
    pod_annotations.insert("prometheus.io/path".into(), json!("/metrics"));

    let template = json!({
        "metadata": {
            "labels": labels(collector, &base, &image),
            "annotations": pod_annotations,
        },
        "spec": pod_spec,
    });
    let selector = json!({"matchLabels": selector_labels(collector)});
    let mut workload_meta = metadata(collector, &base, &image);
    workload_meta["annotations"] = json!({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": metrics_port.to_string(),
        "prometheus.io/path": "/metrics",
    });
    let workload = match spec.mode {
        CollectorMode::Deployment | CollectorMode::Sidecar => json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": workload_meta,
            "spec": {
                "replicas": spec.replicas.unwrap_or(1),
                "selector": selector,
                "template": template,
            },
        }),
        CollectorMode::Daemonset => json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": workload_meta,
            "spec": {"selector": selector, "template": template},
        }),
        CollectorMode::Statefulset => {
            let mut spec_json = json!({
                "serviceName": base,
                "replicas": spec.replicas.unwrap_or(1),
                "podManagementPolicy": "Parallel",
                "selector": selector,
                "template": template,
            });
            if !spec.volume_claim_templates.is_empty() {
                spec_json["volumeClaimTemplates"] = json!(spec.volume_claim_templates);
            }
            json!({
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": workload_meta,
                "spec": spec_json,
            })
        }
    };

    Ok(CollectorObjects {
        config_map,
        service_account,
        services,
        workload,
        warnings,
    })
}

fn render_services(
    collector: &OpenTelemetryCollector,
    base: &str,
    image: &str,
    ports: &[ReceiverPort],
    metrics_port: i32,
) -> Vec<Value> {
    let service_ports: Vec<Value> = ports
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "port": p.port,
                "targetPort": p.port,
                "protocol": "TCP",
                "appProtocol": p.app_protocol,
            })
        })
        .collect();
    let selector = selector_labels(collector);
    let mut services = Vec::new();
    if !service_ports.is_empty() {
        let base_meta = service_metadata(collector, base, image, "base", None);
        let mut base_spec = json!({"selector": selector, "ports": service_ports});
        if collector.spec.mode == CollectorMode::Daemonset {
            // Each node's agent serves that node's pods: no hop to another node.
            base_spec["internalTrafficPolicy"] = json!("Local");
        }
        services.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": base_meta, "spec": base_spec}));

        let headless = format!("{base}-headless");
        let headless_meta = service_metadata(
            collector,
            &headless,
            image,
            "headless",
            Some("collector-headless-service"),
        );
        services.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": headless_meta,
            "spec": {"clusterIP": "None", "selector": selector, "ports": service_ports},
        }));
    }
    let monitoring = format!("{base}-monitoring");
    let monitoring_meta = service_metadata(
        collector,
        &monitoring,
        image,
        "monitoring",
        Some("collector-monitoring-service"),
    );
    services.push(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": monitoring_meta,
        "spec": {
            "selector": selector,
            "ports": [{"name": "monitoring", "port": metrics_port, "targetPort": metrics_port, "protocol": "TCP"}],
        },
    }));
    services
}

/// A Service's metadata with upstream's `collector-service-type` label and, for headless and
/// monitoring Services, their `...-service: Exists` marker label.
fn service_metadata(
    collector: &OpenTelemetryCollector,
    name: &str,
    image: &str,
    service_type: &str,
    marker: Option<&str>,
) -> Value {
    let mut meta = metadata(collector, name, image);
    meta["labels"]["operator.opentelemetry.io/collector-service-type"] = json!(service_type);
    if let Some(marker) = marker {
        meta["labels"][format!("operator.opentelemetry.io/{marker}")] = json!("Exists");
    }
    meta
}
