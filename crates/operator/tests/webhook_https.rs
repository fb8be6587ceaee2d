//! The pod webhook as a real HTTPS server on 127.0.0.1 with a generated certificate, fed
//! AdmissionReview v1 JSON as the API server sends it; the returned JSON patch is applied to the
//! pod and the result checked field by field.

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};
use threadline_operator::certs::{self, ReloadableCert};
use threadline_operator::crd::Instrumentation;
use threadline_operator::inject::Catalog;
use threadline_operator::render::parse_documents;
use threadline_operator::webhook::{self, WebhookState, MUTATE_PATH};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SEED: &str = include_str!("../testdata/instrumentation.yaml");

struct Server {
    url: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(catalog: Catalog) -> Server {
        let certificate = certs::generate(&certs::service_dns_names(
            "threadline-operator-webhook",
            "threadline-system",
        ))
        .expect("certificate");
        let key = certs::certified_key(&certificate.cert_pem, &certificate.key_pem).expect("key");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shutdown = CancellationToken::new();
        let state = WebhookState {
            catalog: Arc::new(move || catalog.clone()),
            cluster: None,
        };
        let task = tokio::spawn(webhook::serve(
            listener,
            ReloadableCert::new(key),
            state,
            shutdown.clone(),
        ));
        // The API server calls the Service's DNS name; resolve it to our listener, and trust
        // only the generated CA (as the caBundle in the webhook configuration does).
        let host = "threadline-operator-webhook.threadline-system.svc";
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(certificate.ca_pem.as_bytes()).expect("ca"),
            )
            .tls_built_in_root_certs(false)
            .resolve(host, ([127, 0, 0, 1], port).into())
            .build()
            .expect("client");
        Server {
            url: format!("https://{host}:{port}{MUTATE_PATH}"),
            client,
            shutdown,
            task,
        }
    }

    async fn post(&self, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).expect("JSON response"),
        )
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("serve");
    }
}

fn seed_catalog() -> Catalog {
    let docs = parse_documents(SEED).expect("seed");
    let instrumentation: Instrumentation = serde_json::from_value(
        docs.into_iter()
            .find(|d| d["kind"] == "Instrumentation")
            .expect("instrumentation"),
    )
    .expect("deserializes");
    Catalog {
        instrumentations: vec![instrumentation],
        ..Catalog::default()
    }
}

fn review(uid: &str, pod: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    }))
    .expect("review JSON")
}

fn pod(annotations: Value, containers: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "app-5f7c9-",
            "namespace": "default",
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-5f7c9", "uid": "u1", "controller": true}],
        },
        "spec": {"containers": containers},
    })
}

/// Applies the response's base64 JSON patch to `pod`.
fn patched(response: &Value, pod: &Value) -> Value {
    let r = &response["response"];
    assert_eq!(r["patchType"], "JSONPatch");
    // Go's API server decodes a `[]byte` from a base64 string or from an array of numbers
    // (kube-rs writes the latter); accept both as it does.
    let patch: Vec<u8> = match &r["patch"] {
        Value::String(text) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("base64 patch"),
        Value::Array(bytes) => bytes
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()).expect("byte"))
            .collect(),
        other => panic!("no patch in the response: {other}"),
    };
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("JSON patch");
    let mut pod = pod.clone();
    json_patch::patch(&mut pod, &patch).expect("patch applies");
    pod
}

fn env_pairs(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let value = e["value"].as_str().map(str::to_string).unwrap_or_else(|| {
                format!(
                    "fieldRef:{}",
                    e["valueFrom"]["fieldRef"]["fieldPath"]
                        .as_str()
                        .unwrap_or("?")
                )
            });
            (e["name"].as_str().unwrap_or_default().to_string(), value)
        })
        .collect()
}

#[tokio::test]
async fn java_pod_from_the_seed_is_patched_over_https() {
    let server = Server::start(seed_catalog()).await;
    let original = pod(
        json!({"instrumentation.opentelemetry.io/inject-java": "order-service-instrumentation"}),
        json!([{"name": "order-service", "image": "registry.example.com/order-service:v1.2.3"}]),
    );
    let (status, response) = server.post(review("7f0b2a", original.clone())).await;
    assert_eq!(status, 200);
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(response["response"]["uid"], "7f0b2a");
    assert_eq!(response["response"]["allowed"], true);
    let pod = patched(&response, &original);
    let spec = &pod["spec"];
    assert_eq!(
        spec["initContainers"][0]["name"],
        "opentelemetry-auto-instrumentation-java"
    );
    assert_eq!(
        spec["initContainers"][0]["command"],
        json!([
            "cp",
            "/javaagent.jar",
            "/otel-auto-instrumentation-java/javaagent.jar"
        ])
    );
    assert_eq!(
        spec["volumes"],
        json!([{"name": "opentelemetry-auto-instrumentation-java", "emptyDir": {"sizeLimit": "200Mi"}}])
    );
    let app = &spec["containers"][0];
    assert_eq!(
        app["volumeMounts"],
        json!([{"name": "opentelemetry-auto-instrumentation-java", "mountPath": "/otel-auto-instrumentation-java-order-service"}])
    );
    let env = env_pairs(app);
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "OTEL_NODE_IP",
            "OTEL_POD_IP",
            "JAVA_TOOL_OPTIONS",
            "OTEL_SERVICE_NAME",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_RESOURCE_ATTRIBUTES_POD_NAME",
            "OTEL_RESOURCE_ATTRIBUTES_NODE_NAME",
            "OTEL_PROPAGATORS",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
            "OTEL_RESOURCE_ATTRIBUTES",
        ]
    );
    // Offline the ReplicaSet cannot be looked up: its name is the service name, as upstream.
    assert_eq!(env[3].1, "app-5f7c9");
    assert_eq!(
        env[4].1,
        "http://otel-agent-collector.observability.svc:4318"
    );
    assert_eq!(env[8].1, "parentbased_traceidratio");
    assert_eq!(env[9].1, "0.1");
    assert!(
        env[10].1.contains("k8s.replicaset.name=app-5f7c9"),
        "{}",
        env[10].1
    );
    assert!(
        env[10].1.contains("service.version=v1.2.3"),
        "{}",
        env[10].1
    );

    // The mutated pod comes back (a reinvocation): nothing more is injected.
    let (status, again) = server.post(review("7f0b2b", pod.clone())).await;
    assert_eq!(status, 200);
    assert_eq!(again["response"]["allowed"], true);
    assert!(again["response"].get("patch").is_none(), "{again}");
    server.stop().await;
}

#[tokio::test]
async fn nodejs_and_python_pods_are_patched_over_https() {
    let mut catalog = seed_catalog();
    catalog.instrumentations[0].spec.python.image = Some("example.com/python-agent:1".into());
    let server = Server::start(catalog).await;

    let node = pod(
        json!({"instrumentation.opentelemetry.io/inject-nodejs": "true"}),
        json!([{"name": "web", "image": "web:3", "env": [{"name": "PORT", "value": "8080"}]}]),
    );
    let (status, response) = server.post(review("n1", node.clone())).await;
    assert_eq!(status, 200);
    let node = patched(&response, &node);
    assert_eq!(
        node["spec"]["initContainers"][0]["name"],
        "opentelemetry-auto-instrumentation-nodejs"
    );
    assert_eq!(
        node["spec"]["initContainers"][0]["image"],
        "ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-nodejs:0.52.1"
    );
    let env = env_pairs(&node["spec"]["containers"][0]);
    // As upstream, OTEL_NODE_IP and OTEL_POD_IP go first (other variables may refer to them);
    // the container's own env is kept, in its order, right after.
    assert_eq!(env[0].0, "OTEL_NODE_IP");
    assert_eq!(env[1].0, "OTEL_POD_IP");
    assert_eq!(env[2], ("PORT".into(), "8080".into()));
    assert!(env.contains(&(
        "NODE_OPTIONS".into(),
        " --require /otel-auto-instrumentation-nodejs/autoinstrumentation.js".into()
    )));
    assert!(env.contains(&("OTEL_PROPAGATORS".into(), "tracecontext,baggage".into())));

    let python = pod(
        json!({"instrumentation.opentelemetry.io/inject-python": "default/order-service-instrumentation"}),
        json!([{"name": "api", "image": "api:1"}]),
    );
    let (status, response) = server.post(review("p1", python.clone())).await;
    assert_eq!(status, 200);
    let python = patched(&response, &python);
    assert_eq!(
        python["spec"]["initContainers"][0]["image"],
        "example.com/python-agent:1"
    );
    let env = env_pairs(&python["spec"]["containers"][0]);
    assert!(env.contains(&(
        "PYTHONPATH".into(),
        "/otel-auto-instrumentation-python/opentelemetry/instrumentation/auto_instrumentation:/otel-auto-instrumentation-python".into()
    )));
    assert!(env.contains(&("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into())));
    server.stop().await;
}

#[tokio::test]
async fn unknown_instrumentation_admits_unchanged_with_a_warning() {
    let server = Server::start(seed_catalog()).await;
    let original = pod(
        json!({"instrumentation.opentelemetry.io/inject-java": "no-such-instrumentation"}),
        json!([{"name": "app", "image": "app:1"}]),
    );
    let (status, response) = server.post(review("u1", original)).await;
    assert_eq!(status, 200);
    let r = &response["response"];
    assert_eq!(r["allowed"], true);
    assert!(r.get("patch").is_none());
    let warning = r["warnings"][0].as_str().expect("a warning");
    assert!(
        warning.contains("Instrumentation default/no-such-instrumentation not found"),
        "{warning}"
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_admission_review_gets_400_with_a_message() {
    let server = Server::start(seed_catalog()).await;
    let (status, body) = server
        .post(b"{\"kind\": \"AdmissionReview\", \"request\": 7".to_vec())
        .await;
    assert_eq!(status, 400);
    let message = body["error"].as_str().expect("error message");
    assert!(message.contains("not an AdmissionReview v1"), "{message}");

    let (status, body) = server
        .post(
            serde_json::to_vec(
                &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
            )
            .expect("json"),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("no request"),
        "{body}"
    );

    // A plain-HTTP client is refused at the TLS layer, not served.
    let port = server
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .expect("port")
        .to_string();
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{MUTATE_PATH}"))
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err() || !plain.expect("response").status().is_success());
    server.stop().await;
}
