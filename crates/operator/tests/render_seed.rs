//! The seed's `OpenTelemetryCollector` resources rendered into Kubernetes objects, checked field
//! by field against what the upstream operator creates (names, labels, ports, selectors), plus
//! the trace-id wiring and the refusal of an invalid config.

use serde_json::{json, Value};
use threadline_operator::collector::DEFAULT_IMAGE;
use threadline_operator::render::{parse_documents, render_documents, Rendered};

const AGENT: &str = include_str!("../testdata/agent-collector.yaml");
const GATEWAY: &str = include_str!("../testdata/gateway-collector.yaml");
const INSTRUMENTATION: &str = include_str!("../testdata/instrumentation.yaml");

fn render(texts: &[&str]) -> Rendered {
    let mut docs = Vec::new();
    for text in texts {
        docs.extend(parse_documents(text).expect("manifest parses"));
    }
    render_documents(&docs)
}

fn find<'a>(rendered: &'a Rendered, kind: &str, name: &str) -> &'a Value {
    rendered
        .objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", names(rendered)))
}

fn find_prefix<'a>(rendered: &'a Rendered, kind: &str, prefix: &str) -> &'a Value {
    rendered
        .objects
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no {kind} {prefix}* among {:?}", names(rendered)))
}

fn names(rendered: &Rendered) -> Vec<String> {
    rendered
        .objects
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn config_of(config_map: &Value) -> Value {
    serde_yaml_ng::from_str(
        config_map["data"]["collector.yaml"]
            .as_str()
            .expect("config text"),
    )
    .expect("config YAML")
}

fn seed_config_with_defaults(manifest: &str) -> Value {
    let doc = &parse_documents(manifest).expect("parses")[0];
    let mut config: Value =
        serde_yaml_ng::from_str(doc["spec"]["config"].as_str().expect("config")).expect("YAML");
    config["service"]["telemetry"] = json!({"metrics": {"address": "0.0.0.0:8888"}});
    config
}

fn upstream_labels(name: &str, object_name: &str) -> Value {
    json!({
        "app.kubernetes.io/managed-by": "opentelemetry-operator",
        "app.kubernetes.io/instance": format!("observability.{name}"),
        "app.kubernetes.io/part-of": "opentelemetry",
        "app.kubernetes.io/component": "opentelemetry-collector",
        "app.kubernetes.io/name": object_name,
        "app.kubernetes.io/version": env!("CARGO_PKG_VERSION"),
    })
}

fn selector(name: &str) -> Value {
    json!({
        "app.kubernetes.io/managed-by": "opentelemetry-operator",
        "app.kubernetes.io/instance": format!("observability.{name}"),
        "app.kubernetes.io/part-of": "opentelemetry",
        "app.kubernetes.io/component": "opentelemetry-collector",
    })
}

fn otlp_ports() -> Value {
    json!([
        {"name": "otlp-grpc", "port": 4317, "targetPort": 4317, "protocol": "TCP", "appProtocol": "grpc"},
        {"name": "otlp-http", "port": 4318, "targetPort": 4318, "protocol": "TCP", "appProtocol": "http"},
    ])
}

#[test]
fn seed_gateway_renders_upstream_named_objects() {
    let rendered = render(&[GATEWAY]);
    assert!(!rendered.failed, "{:?}", rendered.messages);
    assert_eq!(
        names(&rendered),
        [
            format!(
                "ConfigMap {}",
                find_prefix(&rendered, "ConfigMap", "otel-gateway-collector-")["metadata"]["name"]
                    .as_str()
                    .unwrap_or("?")
            ),
            "ServiceAccount otel-gateway-collector".into(),
            "Service otel-gateway-collector".into(),
            "Service otel-gateway-collector-headless".into(),
            "Service otel-gateway-collector-monitoring".into(),
            "Deployment otel-gateway-collector".into(),
        ]
    );

    let config_map = find_prefix(&rendered, "ConfigMap", "otel-gateway-collector-");
    let config_map_name = config_map["metadata"]["name"].as_str().expect("name");
    let hash = config_map_name.trim_start_matches("otel-gateway-collector-");
    assert_eq!(hash.len(), 8);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    // The gateway is not rewired: its config is the seed's plus upstream's default of serving
    // the collector's own metrics on all interfaces (so the monitoring Service reaches them).
    assert_eq!(config_of(config_map), seed_config_with_defaults(GATEWAY));
    assert_eq!(config_map["metadata"]["namespace"], "observability");
    assert_eq!(
        config_map["metadata"]["labels"],
        upstream_labels("otel-gateway", config_map_name)
    );
    // Offline there is no uid to own by; the controller test checks the owner references.
    assert!(config_map["metadata"].get("ownerReferences").is_none());

    let service = find(&rendered, "Service", "otel-gateway-collector");
    let mut labels = upstream_labels("otel-gateway", "otel-gateway-collector");
    labels["operator.opentelemetry.io/collector-service-type"] = json!("base");
    assert_eq!(service["metadata"]["labels"], labels);
    assert_eq!(service["spec"]["ports"], otlp_ports());
    assert_eq!(service["spec"]["selector"], selector("otel-gateway"));
    assert!(service["spec"].get("internalTrafficPolicy").is_none());

    let headless = find(&rendered, "Service", "otel-gateway-collector-headless");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["ports"], otlp_ports());
    assert_eq!(
        headless["metadata"]["labels"]["operator.opentelemetry.io/collector-headless-service"],
        "Exists"
    );

    let monitoring = find(&rendered, "Service", "otel-gateway-collector-monitoring");
    assert_eq!(
        monitoring["spec"]["ports"],
        json!([{"name": "monitoring", "port": 8888, "targetPort": 8888, "protocol": "TCP"}])
    );

    let deployment = find(&rendered, "Deployment", "otel-gateway-collector");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        selector("otel-gateway")
    );
    let template = &deployment["spec"]["template"];
    assert_eq!(
        template["metadata"]["labels"],
        upstream_labels("otel-gateway", "otel-gateway-collector")
    );
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(
        annotations["opentelemetry-operator-config/sha256"]
            .as_str()
            .map(|h| &h[..8]),
        Some(hash)
    );
    let pod = &template["spec"];
    assert_eq!(pod["serviceAccountName"], "otel-gateway-collector");
    assert_eq!(
        pod["volumes"],
        json!([{"name": "otc-internal", "configMap": {"name": config_map_name, "items": [{"key": "collector.yaml", "path": "collector.yaml"}]}}])
    );
    let container = &pod["containers"][0];
    assert_eq!(container["name"], "otc-container");
    assert_eq!(container["image"], DEFAULT_IMAGE);
    assert_eq!(
        container["args"],
        json!(["collector", "--config=/conf/collector.yaml"])
    );
    assert_eq!(
        container["volumeMounts"],
        json!([{"name": "otc-internal", "mountPath": "/conf"}])
    );
    assert_eq!(
        container["ports"],
        json!([
            {"name": "otlp-grpc", "containerPort": 4317, "protocol": "TCP"},
            {"name": "otlp-http", "containerPort": 4318, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 8888, "protocol": "TCP"},
        ])
    );
    assert_eq!(
        container["resources"],
        json!({"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}})
    );
    assert_eq!(container["env"][0]["name"], "POD_NAME");
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );

    // Alone, the three-replica tail-sampling gateway is reported as splitting traces.
    assert!(
        rendered
            .messages
            .iter()
            .any(|m| m.contains("observability/otel-gateway: TraceRouting=False TracesMaySplit")),
        "{:?}",
        rendered.messages
    );
}

#[test]
fn seed_agent_is_a_node_local_daemonset_wired_by_trace_id_to_the_gateway() {
    let rendered = render(&[AGENT, GATEWAY]);
    assert!(!rendered.failed, "{:?}", rendered.messages);

    let daemonset = find(&rendered, "DaemonSet", "otel-agent-collector");
    assert!(daemonset["spec"].get("replicas").is_none());
    assert_eq!(
        daemonset["spec"]["selector"]["matchLabels"],
        selector("otel-agent")
    );
    let service = find(&rendered, "Service", "otel-agent-collector");
    assert_eq!(service["spec"]["internalTrafficPolicy"], "Local");
    assert_eq!(service["spec"]["ports"], otlp_ports());

    let config_map = find_prefix(&rendered, "ConfigMap", "otel-agent-collector-");
    let text = config_map["data"]["collector.yaml"]
        .as_str()
        .expect("config text");
    let config: Value = serde_yaml_ng::from_str(text).expect("config is YAML");
    assert!(config["exporters"].get("otlp").is_none(), "{text}");
    let lb = &config["exporters"]["loadbalancing/otel-gateway"];
    assert_eq!(lb["routing_key"], "traceID");
    assert_eq!(lb["protocol"]["otlp"]["tls"]["insecure"], true);
    assert_eq!(
        lb["resolver"]["dns"]["hostname"],
        "otel-gateway-collector-headless.observability.svc"
    );
    assert_eq!(lb["resolver"]["dns"]["port"], "4317");
    assert_eq!(
        config["service"]["pipelines"]["traces"]["exporters"],
        json!(["loadbalancing/otel-gateway"])
    );
    assert_eq!(
        config["service"]["pipelines"]["traces"]["processors"],
        json!(["memory_limiter", "batch"])
    );
    // The ConfigMap name follows the rewired text, so rewiring rolls the agents.
    let hash = config_map["metadata"]["name"]
        .as_str()
        .expect("name")
        .trim_start_matches("otel-agent-collector-");
    let pod_hash = daemonset["spec"]["template"]["metadata"]["annotations"]
        ["opentelemetry-operator-config/sha256"]
        .as_str()
        .expect("hash annotation");
    assert!(pod_hash.starts_with(hash));

    for resource in ["otel-agent", "otel-gateway"] {
        assert!(
            rendered.messages.iter().any(|m| m.starts_with(&format!(
                "observability/{resource}: TraceRouting=True RoutedByTraceID"
            ))),
            "{resource}: {:?}",
            rendered.messages
        );
    }
}

#[test]
fn opting_out_of_rewiring_keeps_the_config_and_says_traces_may_split() {
    let opted_out = AGENT.replacen(
        "  namespace: observability\n",
        "  namespace: observability\n  annotations:\n    threadline.dev/route-by-trace-id: \"false\"\n",
        1,
    );
    let rendered = render(&[&opted_out, GATEWAY]);
    let config_map = find_prefix(&rendered, "ConfigMap", "otel-agent-collector-");
    assert_eq!(config_of(config_map), seed_config_with_defaults(AGENT));
    assert!(
        rendered
            .messages
            .iter()
            .any(|m| m.contains("otel-agent: TraceRouting=False TracesMaySplit")),
        "{:?}",
        rendered.messages
    );
}

#[test]
fn invalid_config_is_not_rendered_and_the_error_names_the_key() {
    let broken = GATEWAY.replace("decision_wait: 10s", "decision_wait: ten seconds");
    let rendered = render(&[&broken]);
    assert!(rendered.failed);
    assert!(rendered.objects.is_empty(), "{:?}", names(&rendered));
    let message = rendered
        .messages
        .iter()
        .find(|m| m.contains("not rolled out"))
        .unwrap_or_else(|| panic!("{:?}", rendered.messages));
    assert!(
        message.starts_with("observability/otel-gateway:"),
        "{message}"
    );
    assert!(
        message.contains("processors::tail_sampling::decision_wait"),
        "{message}"
    );

    let unknown = GATEWAY.replace(
        "    exporters:\n      otlp/tempo:",
        "    exporters:\n      zipkin/tempo:",
    );
    let rendered = render(&[&unknown]);
    assert!(rendered.failed);
    let message = rendered.messages.join("\n");
    assert!(message.contains("zipkin"), "{message}");
}

#[test]
fn seed_deployment_template_is_rendered_as_the_webhook_would_mutate_it() {
    let rendered = render(&[INSTRUMENTATION]);
    assert!(!rendered.failed, "{:?}", rendered.messages);
    // The one thing a file cannot tell is said, and nothing else.
    assert_eq!(rendered.messages.len(), 1, "{:?}", rendered.messages);
    let note = &rendered.messages[0];
    assert!(
        note.starts_with(
            "Deployment default/order-service: note: cannot know offline: k8s.replicaset.name \
             (it will be order-service-<pod-template-hash>; the Deployment controller in the \
             cluster computes the hash"
        ),
        "{note}"
    );
    let deployment = find(&rendered, "Deployment", "order-service");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["initContainers"][0]["name"],
        "opentelemetry-auto-instrumentation-java"
    );
    let env = pod["containers"][0]["env"].as_array().expect("env");
    let get = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(get("OTEL_SERVICE_NAME"), Some(json!("order-service")));
    assert_eq!(
        get("JAVA_TOOL_OPTIONS"),
        Some(json!(
            " -javaagent:/otel-auto-instrumentation-java-order-service/javaagent.jar"
        ))
    );
    assert_eq!(
        env.last().map(|e| e["name"].clone()),
        Some(json!("OTEL_RESOURCE_ATTRIBUTES"))
    );
    let attributes = get("OTEL_RESOURCE_ATTRIBUTES")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    assert!(
        attributes.contains("k8s.deployment.name=order-service,"),
        "{attributes}"
    );
    assert!(!attributes.contains("k8s.replicaset.name"), "{attributes}");
    // The annotation stays, so the webhook at admission sees an instrumented pod and leaves it.
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]
            ["instrumentation.opentelemetry.io/inject-java"],
        "order-service-instrumentation"
    );
}

#[test]
fn sidecar_mode_is_refused_with_the_supported_modes() {
    let sidecar = AGENT.replace("mode: daemonset", "mode: sidecar");
    let rendered = render(&[&sidecar]);
    assert!(rendered.failed);
    let message = rendered.messages.join("\n");
    assert!(
        message.contains(
            "sidecar is not supported yet (supported: deployment, daemonset, statefulset)"
        ),
        "{message}"
    );
}

#[test]
fn render_says_what_it_cannot_know_offline_per_workload_kind() {
    let instrumentation = INSTRUMENTATION
        .split("\n---")
        .next()
        .expect("the seed's Instrumentation");
    let workloads = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: default}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {instrumentation.opentelemetry.io/inject-java: "true"}
        spec:
          containers: [{name: job, image: shop/nightly:4.1}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: ledger, namespace: default}
spec:
  template:
    metadata:
      annotations: {instrumentation.opentelemetry.io/inject-java: "true"}
    spec:
      containers: [{name: ledger, image: shop/ledger:2.0}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: plain, namespace: default}
spec:
  template:
    spec:
      containers: [{name: plain, image: shop/plain:1.0}]
"#;
    let rendered = render(&[instrumentation, workloads]);
    assert!(!rendered.failed, "{:?}", rendered.messages);
    // The CronJob's Job is named in the cluster; a StatefulSet's pods hold nothing unknown, and a
    // workload that asks for no injection gets no note.
    assert_eq!(rendered.messages.len(), 1, "{:?}", rendered.messages);
    assert!(
        rendered.messages[0].starts_with(
            "CronJob default/nightly: note: cannot know offline: k8s.job.name (it will be \
             nightly-<scheduled-time>;"
        ),
        "{}",
        rendered.messages[0]
    );
    let attributes = |kind: &str, name: &str, pointer: &str| {
        let pod = find(&rendered, kind, name)
            .pointer(pointer)
            .cloned()
            .unwrap_or_default();
        pod["containers"][0]["env"]
            .as_array()
            .and_then(|env| env.last())
            .and_then(|e| e["value"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let cron = attributes("CronJob", "nightly", "/spec/jobTemplate/spec/template/spec");
    assert!(cron.contains("k8s.cronjob.name=nightly,"), "{cron}");
    assert!(!cron.contains("k8s.job.name"), "{cron}");
    let ledger = attributes("StatefulSet", "ledger", "/spec/template/spec");
    assert!(ledger.contains("k8s.statefulset.name=ledger,"), "{ledger}");
    assert!(
        rendered
            .objects
            .iter()
            .all(|o| o["metadata"]["name"] != "plain"),
        "a workload without injection is not rendered"
    );
}
