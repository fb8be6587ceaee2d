//! The SDK configuration every injected container gets, in upstream's order: OTEL_NODE_IP and
//! OTEL_POD_IP first, `spec.env`, then (after the language's own variables) OTEL_SERVICE_NAME,
//! OTEL_EXPORTER_OTLP_ENDPOINT, the downward-API variables, OTEL_PROPAGATORS, the sampler and,
//! last, OTEL_RESOURCE_ATTRIBUTES (it refers to the variables before it).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod,
    SecretVolumeSource, Volume, VolumeMount,
};

use super::Owners;
use crate::crd::Instrumentation;

pub const ENV_POD_IP: &str = "OTEL_POD_IP";
pub const ENV_NODE_IP: &str = "OTEL_NODE_IP";
pub const ENV_POD_NAME: &str = "OTEL_RESOURCE_ATTRIBUTES_POD_NAME";
pub const ENV_POD_UID: &str = "OTEL_RESOURCE_ATTRIBUTES_POD_UID";
pub const ENV_NODE_NAME: &str = "OTEL_RESOURCE_ATTRIBUTES_NODE_NAME";
const ENV_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const ENV_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
const ENV_PROPAGATORS: &str = "OTEL_PROPAGATORS";
const ENV_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
const ENV_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const RESOURCE_ANNOTATION_PREFIX: &str = "resource.opentelemetry.io/";
const LABELS_APP_NAME: [&str; 2] = ["app.kubernetes.io/instance", "app.kubernetes.io/name"];
const LABELS_APP_VERSION: [&str; 1] = ["app.kubernetes.io/version"];

pub fn env_index(env: &[EnvVar], name: &str) -> Option<usize> {
    env.iter().position(|e| e.name == name)
}

pub fn literal(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field_ref(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Upstream's `appendIfNotSet`.
pub fn append_if_not_set(env: &mut Vec<EnvVar>, new: &[EnvVar]) {
    for var in new {
        if env_index(env, &var.name).is_none() {
            env.push(var.clone());
        }
    }
}

/// Upstream's `appendOrReplace`.
pub fn append_or_replace(env: &mut Vec<EnvVar>, new: Vec<EnvVar>) {
    for var in new {
        match env_index(env, &var.name) {
            Some(i) => env[i] = var,
            None => env.push(var),
        }
    }
}

/// Upstream's `injectCommonEnvVar`.
pub fn inject_common_env(instrumentation: &Instrumentation, container: &mut Container) {
    let env = container.env.get_or_insert_with(Vec::new);
    if env_index(env, ENV_POD_IP).is_none() {
        env.insert(0, field_ref(ENV_POD_IP, "status.podIP"));
    }
    if env_index(env, ENV_NODE_IP).is_none() {
        env.insert(0, field_ref(ENV_NODE_IP, "status.hostIP"));
    }
    append_if_not_set(env, &instrumentation.spec.env);
}

fn annotation_or_label(
    pod: &Pod,
    use_labels: bool,
    attribute: &str,
    labels: &[&str],
) -> Option<String> {
    let annotations = pod.metadata.annotations.as_ref();
    if let Some(v) = annotations
        .and_then(|a| a.get(&format!("{RESOURCE_ANNOTATION_PREFIX}{attribute}")))
        .filter(|v| !v.is_empty())
    {
        return Some(v.clone());
    }
    if use_labels {
        for label in labels {
            if let Some(v) = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(*label))
                .filter(|v| !v.is_empty())
            {
                return Some(v.clone());
            }
        }
    }
    None
}

/// `service.version` from an image reference: `tag`, `digest` or `tag@digest`, as upstream.
pub fn version_from_image(image: &str) -> Option<String> {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last
        .split_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.is_empty());
    match (tag, digest) {
        (Some(tag), Some(digest)) => Some(format!("{tag}@{digest}")),
        (None, Some(digest)) => Some(digest.to_string()),
        (Some(tag), None) => Some(tag.to_string()),
        (None, None) => None,
    }
}

/// Upstream's `createResourceMap`: attributes for OTEL_RESOURCE_ATTRIBUTES, except those the
/// container already sets itself.
fn resource_map(
    instrumentation: &Instrumentation,
    namespace: &str,
    pod: &Pod,
    container: &Container,
    owners: &Owners,
) -> BTreeMap<String, String> {
    let existing: Vec<String> = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == ENV_RESOURCE_ATTRIBUTES)
        .and_then(|e| e.value.clone())
        .map(|v| {
            v.split(',')
                .filter_map(|kv| {
                    let parts: Vec<&str> = kv.trim().split('=').collect();
                    (parts.len() == 2).then(|| parts[0].to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let is_existing = |key: &str| existing.iter().any(|k| k == key);
    let spec = &instrumentation.spec;
    let mut map = BTreeMap::new();
    for (k, v) in &spec.resource.resource_attributes {
        if !is_existing(k) {
            map.insert(k.clone(), v.clone());
        }
    }
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let instance_id = annotation_or_label(pod, false, "service.instance.id", &[])
        .unwrap_or_else(|| format!("{namespace}.$({ENV_POD_NAME}).{}", container.name));
    let mut k8s: Vec<(String, String)> = vec![
        ("k8s.namespace.name".into(), namespace.to_string()),
        ("k8s.container.name".into(), container.name.clone()),
        ("k8s.pod.name".into(), pod_name),
        (
            "k8s.pod.uid".into(),
            pod.metadata.uid.clone().unwrap_or_default(),
        ),
        (
            "k8s.node.name".into(),
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
        ),
        ("service.instance.id".into(), instance_id),
    ];
    k8s.extend(owners.iter().map(|(k, v)| (k.to_string(), v.clone())));
    for (k, v) in k8s {
        if !is_existing(&k) && !v.is_empty() {
            map.insert(k, v);
        }
    }
    for (k, v) in pod.metadata.annotations.iter().flatten() {
        if let Some(key) = k.strip_prefix(RESOURCE_ANNOTATION_PREFIX) {
            if !is_existing(key) && key != "service.name" {
                map.insert(key.to_string(), v.clone());
            }
        }
    }
    let use_labels = spec.defaults.use_labels_for_resource_attributes;
    let service_namespace = annotation_or_label(pod, use_labels, "service.namespace", &[])
        .unwrap_or_else(|| namespace.to_string());
    if !service_namespace.is_empty() && !is_existing("service.namespace") {
        map.insert("service.namespace".into(), service_namespace);
    }
    map
}

/// Upstream's `chooseServiceName`.
fn service_name(
    pod: &Pod,
    use_labels: bool,
    resources: &BTreeMap<String, String>,
    container: &Container,
) -> String {
    if let Some(name) = annotation_or_label(pod, use_labels, "service.name", &LABELS_APP_NAME) {
        return name;
    }
    for key in [
        "k8s.deployment.name",
        "k8s.replicaset.name",
        "k8s.statefulset.name",
        "k8s.daemonset.name",
        "k8s.cronjob.name",
        "k8s.job.name",
        "k8s.pod.name",
    ] {
        if let Some(name) = resources.get(key).filter(|n| !n.is_empty()) {
            return name.clone();
        }
    }
    container.name.clone()
}

/// Upstream's `configureExporter`: the endpoint, and TLS files from a Secret or ConfigMap.
fn configure_exporter(instrumentation: &Instrumentation, pod: &mut Pod, container: &mut Container) {
    let exporter = &instrumentation.spec.exporter;
    let env = container.env.get_or_insert_with(Vec::new);
    if let Some(endpoint) = exporter.endpoint.as_deref().filter(|e| !e.is_empty()) {
        append_if_not_set(env, &[literal(ENV_ENDPOINT, endpoint)]);
    }
    let Some(tls) = &exporter.tls else { return };
    let secret = tls.secret_name.clone().unwrap_or_default();
    let config_map = tls.config_map_name.clone().unwrap_or_default();
    let secret_volume = truncate(&format!("otel-auto-secret-{secret}"), 63);
    let secret_path = format!("/otel-auto-instrumentation-secret-{secret}");
    let config_map_volume = truncate(&format!("otel-auto-configmap-{config_map}"), 63);
    let config_map_path = format!("/otel-auto-instrumentation-configmap-{config_map}");
    let file_env = |file: &str, dir: &str| {
        if file.starts_with('/') {
            file.to_string()
        } else {
            format!("{dir}/{file}")
        }
    };
    if let Some(ca) = tls.ca_file.as_deref().filter(|f| !f.is_empty()) {
        let dir = if config_map.is_empty() {
            &secret_path
        } else {
            &config_map_path
        };
        append_if_not_set(
            env,
            &[literal("OTEL_EXPORTER_OTLP_CERTIFICATE", file_env(ca, dir))],
        );
    }
    if let Some(cert) = tls.cert_file.as_deref().filter(|f| !f.is_empty()) {
        append_if_not_set(
            env,
            &[literal(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                file_env(cert, &secret_path),
            )],
        );
    }
    if let Some(key) = tls.key_file.as_deref().filter(|f| !f.is_empty()) {
        append_if_not_set(
            env,
            &[literal(
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                file_env(key, &secret_path),
            )],
        );
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    if !secret.is_empty() {
        let source = Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        mount_once(volumes, mounts, secret_volume, source, secret_path);
    }
    if !config_map.is_empty() {
        let source = Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        mount_once(volumes, mounts, config_map_volume, source, config_map_path);
    }
}

/// Adds the volume `name` (from `source`) to the pod and mounts it read-only at `path` in the
/// container, each unless already there.
fn mount_once(
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
    name: String,
    source: Volume,
    path: String,
) {
    if !volumes.iter().any(|v| v.name == name) {
        volumes.push(Volume {
            name: name.clone(),
            ..source
        });
    }
    if !mounts.iter().any(|m| m.name == name) {
        mounts.push(VolumeMount {
            name,
            mount_path: path,
            read_only: Some(true),
            ..Default::default()
        });
    }
}

/// Upstream's `naming.Truncate`: at most `max` characters, without a trailing `-` or `.`.
fn truncate(name: &str, max: usize) -> String {
    let cut: String = name.chars().take(max).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

/// Upstream's `injectCommonSDKConfig`, for a container that is both agent and application.
pub fn inject_common_sdk_config(
    instrumentation: &Instrumentation,
    namespace: &str,
    pod: &mut Pod,
    container: &mut Container,
    owners: &Owners,
) {
    let spec = &instrumentation.spec;
    let use_labels = spec.defaults.use_labels_for_resource_attributes;
    let mut resources = resource_map(instrumentation, namespace, pod, container, owners);
    {
        let env = container.env.get_or_insert_with(Vec::new);
        if env_index(env, ENV_SERVICE_NAME).is_none() {
            let name = service_name(pod, use_labels, &resources, container);
            container
                .env
                .get_or_insert_with(Vec::new)
                .push(literal(ENV_SERVICE_NAME, name));
        }
    }
    configure_exporter(instrumentation, pod, container);

    let env = container.env.get_or_insert_with(Vec::new);
    env.push(field_ref(ENV_POD_NAME, "metadata.name"));
    resources.insert("k8s.pod.name".into(), format!("$({ENV_POD_NAME})"));

    if spec.resource.add_k8s_uid_attributes
        && resources.get("k8s.pod.uid").is_none_or(|v| v.is_empty())
    {
        env.push(field_ref(ENV_POD_UID, "metadata.uid"));
        resources.insert("k8s.pod.uid".into(), format!("$({ENV_POD_UID})"));
    }

    let existing_attributes = env_index(env, ENV_RESOURCE_ATTRIBUTES);
    if existing_attributes.is_none_or(|i| {
        !env[i]
            .value
            .as_deref()
            .unwrap_or_default()
            .contains("service.version")
    }) {
        let version = annotation_or_label(pod, use_labels, "service.version", &LABELS_APP_VERSION)
            .or_else(|| container.image.as_deref().and_then(version_from_image));
        if let Some(version) = version.filter(|v| !v.is_empty()) {
            resources.insert("service.version".into(), version);
        }
    }

    if resources.get("k8s.node.name").is_none_or(|v| v.is_empty()) {
        env.push(field_ref(ENV_NODE_NAME, "spec.nodeName"));
        resources.insert("k8s.node.name".into(), format!("$({ENV_NODE_NAME})"));
    }

    let attributes = resources
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    match env_index(env, ENV_RESOURCE_ATTRIBUTES) {
        None => env.push(literal(ENV_RESOURCE_ATTRIBUTES, attributes)),
        Some(i) => {
            let value = env[i].value.get_or_insert_with(String::new);
            if !value.ends_with(',') {
                value.push(',');
            }
            value.push_str(&attributes);
        }
    }

    if env_index(env, ENV_PROPAGATORS).is_none() && !spec.propagators.is_empty() {
        env.push(literal(ENV_PROPAGATORS, spec.propagators.join(",")));
    }

    if let Some(sampler) = spec.sampler.type_.as_deref().filter(|s| !s.is_empty()) {
        if env_index(env, ENV_SAMPLER).is_none() && env_index(env, ENV_SAMPLER_ARG).is_none() {
            env.push(literal(ENV_SAMPLER, sampler));
            if let Some(argument) = spec.sampler.argument.as_deref().filter(|a| !a.is_empty()) {
                env.push(literal(ENV_SAMPLER_ARG, argument));
            }
        }
    }

    // OTEL_RESOURCE_ATTRIBUTES refers to the variables above: it must come after them.
    if let Some(i) = env_index(env, ENV_RESOURCE_ATTRIBUTES) {
        let var = env.remove(i);
        env.push(var);
    }
}
