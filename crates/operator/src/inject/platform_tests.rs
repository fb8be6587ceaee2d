//! The per-language defaults that depend on the pod: the Python agent's C library
//! (`otel-python-platform`) and the Node.js metrics exporter a user may set or leave unset.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::*;

fn catalog(spec: Value) -> Catalog {
    let instrumentation = serde_json::from_value(json!({
        "apiVersion": "opentelemetry.io/v1alpha1",
        "kind": "Instrumentation",
        "metadata": {"name": "inst", "namespace": "apps"},
        "spec": spec,
    }))
    .expect("instrumentation deserializes");
    Catalog {
        instrumentations: vec![instrumentation],
        namespace_annotations: BTreeMap::new(),
    }
}

fn pod(annotations: Value, env: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "shop/app:1.0", "env": env}]},
    }))
    .expect("pod deserializes")
}

fn init_command(mutation: &Mutation) -> Vec<String> {
    mutation
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|inits| inits.first())
        .and_then(|c| c.command.clone())
        .unwrap_or_default()
}

fn env_value(mutation: &Mutation, name: &str) -> Option<String> {
    mutation.pod.spec.as_ref()?.containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn python_platform_musl_copies_the_musl_build_and_glibc_is_the_default() {
    let catalog = catalog(json!({}));
    let musl = mutate(
        &catalog,
        "apps",
        &pod(
            json!({
                "instrumentation.opentelemetry.io/inject-python": "true",
                "instrumentation.opentelemetry.io/otel-python-platform": "musl",
            }),
            json!([]),
        ),
        &Owners::new(),
    );
    assert!(musl.warnings.is_empty(), "{:?}", musl.warnings);
    assert_eq!(
        init_command(&musl),
        [
            "cp",
            "-r",
            "/autoinstrumentation-musl/.",
            "/otel-auto-instrumentation-python"
        ]
    );
    for platform in [None, Some("glibc")] {
        let mut annotations = json!({"instrumentation.opentelemetry.io/inject-python": "true"});
        if let Some(platform) = platform {
            annotations["instrumentation.opentelemetry.io/otel-python-platform"] = json!(platform);
        }
        let glibc = mutate(
            &catalog,
            "apps",
            &pod(annotations, json!([])),
            &Owners::new(),
        );
        assert_eq!(
            init_command(&glibc),
            [
                "cp",
                "-r",
                "/autoinstrumentation/.",
                "/otel-auto-instrumentation-python"
            ],
            "{platform:?}"
        );
    }
}

#[test]
fn python_platform_from_the_namespace_when_the_pod_has_none() {
    let mut catalog = catalog(json!({}));
    catalog.namespace_annotations.insert(
        "apps".into(),
        BTreeMap::from([(PYTHON_PLATFORM_ANNOTATION.to_string(), "musl".to_string())]),
    );
    let mutation = mutate(
        &catalog,
        "apps",
        &pod(
            json!({"instrumentation.opentelemetry.io/inject-python": "true"}),
            json!([]),
        ),
        &Owners::new(),
    );
    assert_eq!(init_command(&mutation)[2], "/autoinstrumentation-musl/.");
}

#[test]
fn unknown_python_platform_is_not_injected_and_says_why() {
    let original = pod(
        json!({
            "instrumentation.opentelemetry.io/inject-python": "true",
            "instrumentation.opentelemetry.io/otel-python-platform": "windows",
        }),
        json!([]),
    );
    let mutation = mutate(&catalog(json!({})), "apps", &original, &Owners::new());
    assert!(mutation.injected.is_empty());
    assert_eq!(mutation.pod, original);
    assert_eq!(mutation.warnings.len(), 1, "{:?}", mutation.warnings);
    assert!(
        mutation.warnings[0].contains("'windows' is not supported (supported: glibc, musl)"),
        "{}",
        mutation.warnings[0]
    );
}

#[test]
fn nodejs_metrics_exporter_defaults_to_otlp_unless_the_user_or_spec_sets_it() {
    let inject = json!({"instrumentation.opentelemetry.io/inject-nodejs": "true"});
    let unset = mutate(
        &catalog(json!({})),
        "apps",
        &pod(inject.clone(), json!([])),
        &Owners::new(),
    );
    assert_eq!(
        env_value(&unset, "OTEL_METRICS_EXPORTER").as_deref(),
        Some("otlp")
    );

    let by_container = mutate(
        &catalog(json!({})),
        "apps",
        &pod(
            inject.clone(),
            json!([{"name": "OTEL_METRICS_EXPORTER", "value": "none"}]),
        ),
        &Owners::new(),
    );
    assert_eq!(
        env_value(&by_container, "OTEL_METRICS_EXPORTER").as_deref(),
        Some("none")
    );

    let by_spec = mutate(
        &catalog(json!({"env": [{"name": "OTEL_METRICS_EXPORTER", "value": "prometheus"}]})),
        "apps",
        &pod(inject, json!([])),
        &Owners::new(),
    );
    assert_eq!(
        env_value(&by_spec, "OTEL_METRICS_EXPORTER").as_deref(),
        Some("prometheus")
    );
}
