//! Injection checked field by field against what upstream's operator produces for the same
//! Instrumentation and pod (the expectations follow upstream's `sdk_test.go`/`podmutator_test.go`
//! conventions: variable order, mount paths, init containers).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{json, Value};

use super::*;
use crate::render::parse_documents;

const SEED: &str = include_str!("../../testdata/instrumentation.yaml");

/// The seed's Instrumentation (namespace `default`).
fn seed_instrumentation() -> Instrumentation {
    let docs = parse_documents(SEED).expect("seed parses");
    let doc = docs
        .into_iter()
        .find(|d| d["kind"] == "Instrumentation")
        .expect("seed has an Instrumentation");
    serde_json::from_value(doc).expect("seed Instrumentation deserializes")
}

fn catalog(instrumentations: Vec<Instrumentation>) -> Catalog {
    Catalog {
        instrumentations,
        namespace_annotations: BTreeMap::new(),
    }
}

fn instrumentation(namespace: &str, name: &str, spec: Value) -> Instrumentation {
    serde_json::from_value(json!({
        "apiVersion": "opentelemetry.io/v1alpha1",
        "kind": "Instrumentation",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("instrumentation deserializes")
}

fn pod(annotations: Value, containers: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "order-service-7d9f8-", "annotations": annotations},
        "spec": {"containers": containers},
    }))
    .expect("pod deserializes")
}

/// The seed Deployment's pod as the ReplicaSet creates it.
fn seed_pod() -> Pod {
    pod(
        json!({"instrumentation.opentelemetry.io/inject-java": "order-service-instrumentation"}),
        json!([{"name": "order-service", "image": "registry.example.com/order-service:v1.2.3"}]),
    )
}

fn deployment_owners() -> Owners {
    let rs = OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "order-service-7d9f8".into(),
        uid: "1".into(),
        ..Default::default()
    };
    resolve_owners(&[rs], &|kind, name| {
        assert_eq!((kind, name), ("ReplicaSet", "order-service-7d9f8"));
        vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "order-service".into(),
            uid: "2".into(),
            ..Default::default()
        }]
    })
}

fn value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// `(name, value or fieldRef path)` of each variable, in order.
fn env_of(container: &Container) -> Vec<(String, String)> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| {
            let v = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => format!(
                    "fieldRef:{}",
                    from.field_ref
                        .as_ref()
                        .map(|f| f.field_path.as_str())
                        .unwrap_or("?")
                ),
                (None, None) => String::new(),
            };
            (e.name.clone(), v)
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod_spec(pod: &Pod) -> &k8s_openapi::api::core::v1::PodSpec {
    pod.spec.as_ref().expect("pod has a spec")
}

#[test]
fn seed_java_pod_is_injected_as_upstream_does() {
    let mutation = mutate(
        &catalog(vec![seed_instrumentation()]),
        "default",
        &seed_pod(),
        &deployment_owners(),
    );
    assert!(mutation.warnings.is_empty(), "{:?}", mutation.warnings);
    assert_eq!(mutation.injected, vec![Language::Java]);
    let spec = pod_spec(&mutation.pod);

    // The init container copies the agent into the shared emptyDir.
    let inits = spec.init_containers.as_ref().expect("init containers");
    assert_eq!(inits.len(), 1);
    let init = &inits[0];
    assert_eq!(init.name, "opentelemetry-auto-instrumentation-java");
    assert_eq!(
        init.image.as_deref(),
        Some("ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-java:2.6.0")
    );
    assert_eq!(
        init.command.as_deref(),
        Some(
            &[
                "cp".to_string(),
                "/javaagent.jar".into(),
                "/otel-auto-instrumentation-java/javaagent.jar".into()
            ][..]
        )
    );
    let init_mounts = init.volume_mounts.as_ref().expect("init mounts");
    assert_eq!(init_mounts.len(), 1);
    assert_eq!(
        init_mounts[0].name,
        "opentelemetry-auto-instrumentation-java"
    );
    assert_eq!(init_mounts[0].mount_path, "/otel-auto-instrumentation-java");
    let resources = init.resources.as_ref().expect("default init resources");
    let limits = resources.limits.as_ref().expect("limits");
    assert_eq!(limits["cpu"].0, "500m");
    assert_eq!(limits["memory"].0, "64Mi");
    let requests = resources.requests.as_ref().expect("requests");
    assert_eq!(requests["cpu"].0, "50m");
    assert_eq!(requests["memory"].0, "64Mi");

    let volumes = spec.volumes.as_ref().expect("volumes");
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].name, "opentelemetry-auto-instrumentation-java");
    let empty_dir = volumes[0].empty_dir.as_ref().expect("emptyDir");
    assert_eq!(
        empty_dir.size_limit.as_ref().map(|q| q.0.as_str()),
        Some("200Mi")
    );

    let app = &spec.containers[0];
    assert_eq!(app.name, "order-service");
    let mounts = app.volume_mounts.as_ref().expect("app mounts");
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].name, "opentelemetry-auto-instrumentation-java");
    assert_eq!(
        mounts[0].mount_path,
        "/otel-auto-instrumentation-java-order-service"
    );
    assert_eq!(
        env_of(app),
        pairs(&[
            ("OTEL_NODE_IP", "fieldRef:status.hostIP"),
            ("OTEL_POD_IP", "fieldRef:status.podIP"),
            ("JAVA_TOOL_OPTIONS", " -javaagent:/otel-auto-instrumentation-java-order-service/javaagent.jar"),
            ("OTEL_SERVICE_NAME", "order-service"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-agent-collector.observability.svc:4318"),
            ("OTEL_RESOURCE_ATTRIBUTES_POD_NAME", "fieldRef:metadata.name"),
            ("OTEL_RESOURCE_ATTRIBUTES_NODE_NAME", "fieldRef:spec.nodeName"),
            ("OTEL_PROPAGATORS", "tracecontext,baggage"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.container.name=order-service,k8s.deployment.name=order-service,\
                 k8s.namespace.name=default,k8s.node.name=$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME),\
                 k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME),k8s.replicaset.name=order-service-7d9f8,\
                 service.instance.id=default.$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME).order-service,\
                 service.namespace=default,service.version=v1.2.3"
            ),
        ])
    );
}

#[test]
fn admitting_twice_injects_once() {
    let catalog = catalog(vec![seed_instrumentation()]);
    let once = mutate(&catalog, "default", &seed_pod(), &deployment_owners());
    let twice = mutate(&catalog, "default", &once.pod, &deployment_owners());
    assert!(twice.injected.is_empty());
    assert_eq!(twice.pod, once.pod);
    assert!(is_already_instrumented(&once.pod));
    assert!(!is_already_instrumented(&seed_pod()));
}

#[test]
fn existing_env_and_volumes_are_kept_and_java_tool_options_extended() {
    let mut pod = seed_pod();
    let spec = pod.spec.as_mut().expect("spec");
    spec.containers[0].env = Some(vec![
        value("JAVA_TOOL_OPTIONS", "-Xmx512m"),
        value("OTEL_SERVICE_NAME", "orders"),
        value("OTEL_RESOURCE_ATTRIBUTES", "team=payments"),
    ]);
    spec.volumes = Some(vec![serde_json::from_value(
        json!({"name": "data", "emptyDir": {}}),
    )
    .expect("volume")]);
    spec.containers[0].volume_mounts = Some(vec![serde_json::from_value(
        json!({"name": "data", "mountPath": "/data"}),
    )
    .expect("mount")]);

    let mutation = mutate(
        &catalog(vec![seed_instrumentation()]),
        "default",
        &pod,
        &Owners::new(),
    );
    let spec = pod_spec(&mutation.pod);
    let names: Vec<_> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(names, ["data", "opentelemetry-auto-instrumentation-java"]);
    let app = &spec.containers[0];
    let mounts: Vec<_> = app
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(
        mounts,
        ["/data", "/otel-auto-instrumentation-java-order-service"]
    );
    let env = env_of(app);
    let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(
        get("JAVA_TOOL_OPTIONS"),
        Some("-Xmx512m -javaagent:/otel-auto-instrumentation-java-order-service/javaagent.jar")
    );
    // The user's service name wins; their resource attributes are kept and ours appended.
    assert_eq!(get("OTEL_SERVICE_NAME"), Some("orders"));
    let attributes = get("OTEL_RESOURCE_ATTRIBUTES").expect("attributes");
    assert!(
        attributes.starts_with("team=payments,k8s.container.name=order-service,"),
        "{attributes}"
    );
    // Without owners the pod name (from the downward API) is the fallback after labels.
    assert_eq!(
        env.last().map(|(k, _)| k.as_str()),
        Some("OTEL_RESOURCE_ATTRIBUTES")
    );
}

#[test]
fn java_tool_options_from_value_from_is_skipped_with_a_warning() {
    let mut pod = seed_pod();
    pod.spec.as_mut().expect("spec").containers[0].env =
        Some(vec![serde_json::from_value(json!({
            "name": "JAVA_TOOL_OPTIONS",
            "valueFrom": {"configMapKeyRef": {"name": "jvm", "key": "opts"}}
        }))
        .expect("env")]);
    let mutation = mutate(
        &catalog(vec![seed_instrumentation()]),
        "default",
        &pod,
        &Owners::new(),
    );
    assert!(mutation.injected.is_empty());
    assert!(
        mutation
            .warnings
            .iter()
            .any(|w| w.contains("JAVA_TOOL_OPTIONS") && w.contains("ValueFrom")),
        "{:?}",
        mutation.warnings
    );
    assert_eq!(
        pod_spec(&mutation.pod).containers[0],
        pod_spec(&pod).containers[0]
    );
}

#[test]
fn nodejs_pod_gets_node_options_and_the_nodejs_agent() {
    let inst = instrumentation(
        "shop",
        "node",
        json!({
            "exporter": {"endpoint": "http://otel-agent-collector.observability.svc:4317"},
            "propagators": ["tracecontext", "baggage", "b3"],
            "env": [{"name": "OTEL_LOG_LEVEL", "value": "debug"}],
            "nodejs": {"env": [{"name": "OTEL_NODE_RESOURCE_DETECTORS", "value": "env,host"}]},
        }),
    );
    let mut pod = pod(
        json!({"instrumentation.opentelemetry.io/inject-nodejs": "true"}),
        json!([{"name": "web", "image": "shop/web@sha256:abc", "env": [{"name": "NODE_OPTIONS", "value": "--max-old-space-size=256"}]}]),
    );
    pod.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/name".to_string(),
        "storefront".to_string(),
    )]));
    let mutation = mutate(&catalog(vec![inst]), "shop", &pod, &Owners::new());
    assert!(mutation.warnings.is_empty(), "{:?}", mutation.warnings);
    let spec = pod_spec(&mutation.pod);
    let init = &spec.init_containers.as_ref().expect("inits")[0];
    assert_eq!(init.name, "opentelemetry-auto-instrumentation-nodejs");
    assert_eq!(
        init.image.as_deref(),
        Some("ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-nodejs:0.52.1")
    );
    assert_eq!(
        init.command.as_deref(),
        Some(
            &[
                "cp".to_string(),
                "-r".into(),
                "/autoinstrumentation/.".into(),
                "/otel-auto-instrumentation-nodejs".into()
            ][..]
        )
    );
    let memory = &init
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .expect("limits")["memory"];
    assert_eq!(memory.0, "128Mi");
    let app = &spec.containers[0];
    assert_eq!(
        app.volume_mounts.as_ref().expect("mounts")[0].mount_path,
        "/otel-auto-instrumentation-nodejs"
    );
    // Labels are used for the service name only when `defaults.useLabelsForResourceAttributes`.
    assert_eq!(
        env_of(app),
        pairs(&[
            ("OTEL_NODE_IP", "fieldRef:status.hostIP"),
            ("OTEL_POD_IP", "fieldRef:status.podIP"),
            ("NODE_OPTIONS", "--max-old-space-size=256 --require /otel-auto-instrumentation-nodejs/autoinstrumentation.js"),
            // The language's env first (injectNodeJSSDK), then spec.env (injectCommonEnvVar).
            ("OTEL_NODE_RESOURCE_DETECTORS", "env,host"),
            ("OTEL_LOG_LEVEL", "debug"),
            // getDefaultNodeJSEnvVars: NODE_OPTIONS extended in place, the metrics exporter added.
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_SERVICE_NAME", "web"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-agent-collector.observability.svc:4317"),
            ("OTEL_RESOURCE_ATTRIBUTES_POD_NAME", "fieldRef:metadata.name"),
            ("OTEL_RESOURCE_ATTRIBUTES_NODE_NAME", "fieldRef:spec.nodeName"),
            ("OTEL_PROPAGATORS", "tracecontext,baggage,b3"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.container.name=web,k8s.namespace.name=shop,k8s.node.name=$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME),\
                 k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME),\
                 service.instance.id=shop.$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME).web,service.namespace=shop,\
                 service.version=sha256:abc"
            ),
        ])
    );
}

#[test]
fn python_pod_gets_pythonpath_and_otlp_http_defaults() {
    let inst = instrumentation(
        "ml",
        "py",
        json!({
            "exporter": {"endpoint": "http://otel-agent-collector.observability.svc:4318"},
            "defaults": {"useLabelsForResourceAttributes": true},
            "sampler": {"type": "always_on"},
            "python": {"image": "example.com/python-agent:1", "volumeLimitSize": "300Mi"},
        }),
    );
    let mut pod = pod(
        json!({"instrumentation.opentelemetry.io/inject-python": "ml/py"}),
        json!([{"name": "sidecar", "image": "envoy:1"}, {"name": "model", "image": "ml/model:2.0"}]),
    );
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            "instrumentation.opentelemetry.io/python-container-names".into(),
            "model".into(),
        );
    pod.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/name".to_string(),
        "scorer".to_string(),
    )]));
    let owners = resolve_owners(
        &[OwnerReference {
            kind: "StatefulSet".into(),
            name: "model-store".into(),
            ..Default::default()
        }],
        &|_, _| Vec::new(),
    );
    let mutation = mutate(&catalog(vec![inst]), "ml", &pod, &owners);
    assert!(mutation.warnings.is_empty(), "{:?}", mutation.warnings);
    let spec = pod_spec(&mutation.pod);
    // Only the named container is touched.
    assert_eq!(spec.containers[0], pod_spec(&pod).containers[0]);
    let init = &spec.init_containers.as_ref().expect("inits")[0];
    assert_eq!(init.name, "opentelemetry-auto-instrumentation-python");
    assert_eq!(init.image.as_deref(), Some("example.com/python-agent:1"));
    assert_eq!(
        init.command.as_deref(),
        Some(
            &[
                "cp".to_string(),
                "-r".into(),
                "/autoinstrumentation/.".into(),
                "/otel-auto-instrumentation-python".into()
            ][..]
        )
    );
    let volume = &spec.volumes.as_ref().expect("volumes")[0];
    assert_eq!(
        volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
            .map(|q| q.0.as_str()),
        Some("300Mi")
    );
    let model = &spec.containers[1];
    assert_eq!(
        env_of(model),
        pairs(&[
            ("OTEL_NODE_IP", "fieldRef:status.hostIP"),
            ("OTEL_POD_IP", "fieldRef:status.podIP"),
            (
                "PYTHONPATH",
                "/otel-auto-instrumentation-python/opentelemetry/instrumentation/auto_instrumentation:/otel-auto-instrumentation-python"
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_LOGS_EXPORTER", "otlp"),
            ("OTEL_SERVICE_NAME", "scorer"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-agent-collector.observability.svc:4318"),
            ("OTEL_RESOURCE_ATTRIBUTES_POD_NAME", "fieldRef:metadata.name"),
            ("OTEL_RESOURCE_ATTRIBUTES_NODE_NAME", "fieldRef:spec.nodeName"),
            ("OTEL_TRACES_SAMPLER", "always_on"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.container.name=model,k8s.namespace.name=ml,k8s.node.name=$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME),\
                 k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME),k8s.statefulset.name=model-store,\
                 service.instance.id=ml.$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME).model,service.namespace=ml,\
                 service.version=2.0"
            ),
        ])
    );
}

#[test]
fn service_name_follows_upstream_precedence() {
    let inst = seed_instrumentation();
    let name_with = |annotations: Value, owners: &Owners| {
        let mut pod = seed_pod();
        for (k, v) in annotations.as_object().expect("object") {
            pod.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(k.clone(), v.as_str().expect("string").to_string());
        }
        let mutation = mutate(&catalog(vec![inst.clone()]), "default", &pod, owners);
        env_of(&pod_spec(&mutation.pod).containers[0])
            .into_iter()
            .find(|(k, _)| k == "OTEL_SERVICE_NAME")
            .map(|(_, v)| v)
    };
    assert_eq!(
        name_with(
            json!({"resource.opentelemetry.io/service.name": "checkout"}),
            &deployment_owners()
        )
        .as_deref(),
        Some("checkout")
    );
    assert_eq!(
        name_with(json!({}), &deployment_owners()).as_deref(),
        Some("order-service")
    );
    let job = resolve_owners(
        &[OwnerReference {
            kind: "Job".into(),
            name: "nightly-28700".into(),
            ..Default::default()
        }],
        &|_, _| {
            vec![OwnerReference {
                kind: "CronJob".into(),
                name: "nightly".into(),
                ..Default::default()
            }]
        },
    );
    assert_eq!(name_with(json!({}), &job).as_deref(), Some("nightly"));
    // No owner: the container's name (the pod is unnamed at admission, as with generateName).
    assert_eq!(
        name_with(json!({}), &Owners::new()).as_deref(),
        Some("order-service")
    );
}

#[test]
fn missing_instrumentation_admits_unchanged_with_a_warning() {
    let mutation = mutate(&catalog(Vec::new()), "default", &seed_pod(), &Owners::new());
    assert!(mutation.injected.is_empty());
    assert_eq!(mutation.pod, seed_pod());
    assert_eq!(mutation.warnings.len(), 1);
    assert!(
        mutation.warnings[0]
            .contains("Instrumentation default/order-service-instrumentation not found"),
        "{:?}",
        mutation.warnings
    );
}

#[test]
fn ambiguous_true_admits_unchanged_with_a_warning() {
    let pod = pod(
        json!({"instrumentation.opentelemetry.io/inject-java": "true"}),
        json!([{"name": "app", "image": "app:1"}]),
    );
    let two = catalog(vec![
        instrumentation("default", "a", json!({})),
        instrumentation("default", "b", json!({})),
    ]);
    let mutation = mutate(&two, "default", &pod, &Owners::new());
    assert_eq!(mutation.pod, pod);
    assert!(
        mutation.warnings[0].contains("multiple OpenTelemetry Instrumentation instances"),
        "{:?}",
        mutation.warnings
    );

    let none = mutate(
        &catalog(vec![instrumentation("other", "a", json!({}))]),
        "default",
        &pod,
        &Owners::new(),
    );
    assert_eq!(none.pod, pod);
    assert!(none.warnings[0]
        .contains("no OpenTelemetry Instrumentation instances available in namespace default"));
}

#[test]
fn false_or_absent_annotation_injects_nothing_and_namespace_annotation_applies() {
    let inst = instrumentation("default", "only", json!({}));
    let plain = pod(json!({}), json!([{"name": "app", "image": "app:1"}]));
    let mutation = mutate(
        &catalog(vec![inst.clone()]),
        "default",
        &plain,
        &Owners::new(),
    );
    assert_eq!(mutation.pod, plain);
    assert!(mutation.warnings.is_empty());

    let mut with_namespace = catalog(vec![inst]);
    with_namespace.namespace_annotations.insert(
        "default".into(),
        BTreeMap::from([(
            "instrumentation.opentelemetry.io/inject-python".to_string(),
            "true".to_string(),
        )]),
    );
    let injected = mutate(&with_namespace, "default", &plain, &Owners::new());
    assert_eq!(injected.injected, vec![Language::Python]);

    let opted_out = pod(
        json!({"instrumentation.opentelemetry.io/inject-python": "false"}),
        json!([{"name": "app", "image": "app:1"}]),
    );
    let mutation = mutate(&with_namespace, "default", &opted_out, &Owners::new());
    assert!(mutation.injected.is_empty());
    assert_eq!(mutation.pod, opted_out);
}

#[test]
fn container_names_select_containers_and_duplicates_are_refused() {
    let insts = catalog(vec![instrumentation("default", "i", json!({}))]);
    let two_languages = pod(
        json!({
            "instrumentation.opentelemetry.io/inject-java": "true",
            "instrumentation.opentelemetry.io/java-container-names": "api,worker",
            "instrumentation.opentelemetry.io/inject-nodejs": "true",
            "instrumentation.opentelemetry.io/nodejs-container-names": "ui",
        }),
        json!([
            {"name": "api", "image": "api:1"},
            {"name": "worker", "image": "worker:1"},
            {"name": "ui", "image": "ui:1"},
            {"name": "proxy", "image": "envoy:1"},
        ]),
    );
    let mutation = mutate(&insts, "default", &two_languages, &Owners::new());
    assert!(mutation.warnings.is_empty(), "{:?}", mutation.warnings);
    assert_eq!(mutation.injected, vec![Language::Java, Language::NodeJs]);
    let spec = pod_spec(&mutation.pod);
    let inits: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        inits,
        [
            "opentelemetry-auto-instrumentation-java",
            "opentelemetry-auto-instrumentation-nodejs"
        ]
    );
    let has = |i: usize, name: &str| env_of(&spec.containers[i]).iter().any(|(k, _)| k == name);
    assert!(has(0, "JAVA_TOOL_OPTIONS") && has(1, "JAVA_TOOL_OPTIONS"));
    assert!(has(2, "NODE_OPTIONS") && !has(2, "JAVA_TOOL_OPTIONS"));
    assert!(
        spec.containers[3].env.is_none(),
        "the proxy is not instrumented"
    );
    let worker_mount = &spec.containers[1].volume_mounts.as_ref().expect("mounts")[0];
    assert_eq!(
        worker_mount.mount_path,
        "/otel-auto-instrumentation-java-worker"
    );

    let duplicated = pod(
        json!({
            "instrumentation.opentelemetry.io/inject-java": "true",
            "instrumentation.opentelemetry.io/java-container-names": "api",
            "instrumentation.opentelemetry.io/inject-python": "true",
            "instrumentation.opentelemetry.io/python-container-names": "api",
        }),
        json!([{"name": "api", "image": "api:1"}]),
    );
    let mutation = mutate(&insts, "default", &duplicated, &Owners::new());
    assert_eq!(mutation.pod, duplicated);
    assert!(
        mutation.warnings[0].contains("duplicated container names detected: [api]"),
        "{:?}",
        mutation.warnings
    );

    let unnamed = pod(
        json!({
            "instrumentation.opentelemetry.io/inject-java": "true",
            "instrumentation.opentelemetry.io/inject-python": "true",
        }),
        json!([{"name": "api", "image": "api:1"}]),
    );
    let mutation = mutate(&insts, "default", &unnamed, &Owners::new());
    assert_eq!(mutation.pod, unnamed);
    assert!(mutation.warnings[0].contains("provide container names for all instrumentations"));
}

#[test]
fn unsupported_language_is_reported_not_silently_ignored() {
    let p = pod(
        json!({"instrumentation.opentelemetry.io/inject-dotnet": "true"}),
        json!([{"name": "app", "image": "app:1"}]),
    );
    let mutation = mutate(
        &catalog(vec![instrumentation("default", "i", json!({}))]),
        "default",
        &p,
        &Owners::new(),
    );
    assert_eq!(mutation.pod, p);
    assert!(
        mutation.warnings[0].contains("dotnet auto-instrumentation is not supported"),
        "{:?}",
        mutation.warnings
    );
}

#[test]
fn annotation_value_combines_pod_and_namespace_as_upstream() {
    let pod_says = |v: &str| BTreeMap::from([("k".to_string(), v.to_string())]);
    assert_eq!(
        annotation_value(&BTreeMap::new(), "ns-inst", "k"),
        "ns-inst"
    );
    assert_eq!(annotation_value(&pod_says("mine"), "ns-inst", "k"), "mine");
    assert_eq!(
        annotation_value(&pod_says("true"), "ns-inst", "k"),
        "ns-inst"
    );
    assert_eq!(annotation_value(&pod_says("true"), "false", "k"), "true");
    assert_eq!(annotation_value(&pod_says("false"), "true", "k"), "false");
    assert_eq!(annotation_value(&pod_says("x"), "", "k"), "x");
}

#[test]
fn service_version_from_image_reference() {
    use super::sdk::version_from_image;
    assert_eq!(version_from_image("app:1.2").as_deref(), Some("1.2"));
    assert_eq!(version_from_image("registry:5000/app").as_deref(), None);
    assert_eq!(
        version_from_image("registry:5000/app:v3").as_deref(),
        Some("v3")
    );
    assert_eq!(
        version_from_image("app@sha256:ff").as_deref(),
        Some("sha256:ff")
    );
    assert_eq!(
        version_from_image("app:1@sha256:ff").as_deref(),
        Some("1@sha256:ff")
    );
}

#[test]
fn init_container_goes_before_an_instrumented_init_container() {
    let inst = catalog(vec![instrumentation("default", "i", json!({}))]);
    let mut p = pod(
        json!({
            "instrumentation.opentelemetry.io/inject-python": "true",
            "instrumentation.opentelemetry.io/container-names": "migrate",
        }),
        json!([{"name": "app", "image": "app:1"}]),
    );
    p.spec.as_mut().expect("spec").init_containers = Some(vec![serde_json::from_value(
        json!({"name": "migrate", "image": "app:1"}),
    )
    .expect("init")]);
    let mutation = mutate(&inst, "default", &p, &Owners::new());
    assert!(mutation.warnings.is_empty(), "{:?}", mutation.warnings);
    let inits: Vec<_> = pod_spec(&mutation.pod)
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        inits,
        ["opentelemetry-auto-instrumentation-python", "migrate"]
    );
    assert!(env_of(
        &pod_spec(&mutation.pod)
            .init_containers
            .as_ref()
            .expect("inits")[1]
    )
    .iter()
    .any(|(k, _)| k == "PYTHONPATH"));
}
