//! Upstream's `tests/e2e-instrumentation` cases through the pod webhook.
//!
//! `testdata/upstream-e2e/<case>.yaml` states, for one upstream case (commit in each file's
//! header), the Instrumentation and the app as applied, and what upstream's assert file expects
//! of the pod. Each app becomes the pod the API server would send the webhook (simulated here:
//! no cluster can run): a Deployment's pod belongs to a ReplicaSet `<deployment>-<hash>` that
//! belongs to the Deployment, and the ServiceAccount admission plugin, which runs before
//! mutating webhooks, has mounted the API token in every container (unless the pod opts out).
//! The AdmissionReview goes through the webhook's router as the API server sends it; the
//! webhook looks the ReplicaSet up in a simulated API server behind a real `kube::Client`, and
//! the JSON patch it answers is applied to the pod. The patched pod's env (names, values,
//! order), init containers, volume mounts and volumes must be the assert file's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine;
use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde::Deserialize;
use serde_json::{json, Value};
use threadline_operator::crd::Instrumentation;
use threadline_operator::inject::Catalog;
use threadline_operator::webhook::{self, ClusterAccess, WebhookState, MUTATE_PATH};

/// The ReplicaSet hash the simulated API server gives every Deployment's pods.
const POD_TEMPLATE_HASH: &str = "5c9d7b8f4d";
const TOKEN_VOLUME: &str = "kube-api-access-x7k2p";
const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Deserialize)]
struct Case {
    case: String,
    namespace: String,
    #[serde(default)]
    other_namespaces: Vec<String>,
    instrumentations: Vec<Value>,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    step: String,
    app: Value,
    expected_pod: ExpectedPod,
}

#[derive(Deserialize)]
struct ExpectedPod {
    containers: Option<Vec<ExpectedContainer>>,
    #[serde(default)]
    containers_exactly: bool,
    init_containers: Option<Vec<ExpectedContainer>>,
    #[serde(default)]
    init_containers_exactly: bool,
    /// The pod's volumes, as the assert file states them (each a subset of the actual one).
    volumes: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct ExpectedContainer {
    name: String,
    env: Option<Vec<ExpectedEnv>>,
    volume_mounts: Option<Vec<ExpectedMount>>,
    command: Option<Vec<String>>,
    /// A subset of the container's securityContext, as chainsaw compares maps.
    security_context: Option<Value>,
}

#[derive(Deserialize)]
struct ExpectedEnv {
    name: String,
    value: Option<String>,
    field_path: Option<String>,
    #[serde(default)]
    value_contains: Vec<Contains>,
}

/// A substring the value must contain, or several of which one must be there.
#[derive(Deserialize)]
#[serde(untagged)]
enum Contains {
    One(String),
    AnyOf(Vec<String>),
}

#[derive(Deserialize)]
struct ExpectedMount {
    mount_path: String,
    name: Option<String>,
    read_only: Option<bool>,
}

fn cases() -> Vec<(PathBuf, Case)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/upstream-e2e");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("test data readable");
            let case: Case = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, case)
        })
        .collect()
}

fn owner(api_version: &str, kind: &str, name: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: format!("uid-of-{name}"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pod the API server sends the webhook for `app`, and the ReplicaSets it created on the
/// way (by name, as the API server would return them).
fn admitted_pod(app: &Value, namespace: &str) -> (Value, BTreeMap<String, Value>) {
    let kind = app["kind"].as_str().expect("app kind");
    let name = app["metadata"]["name"].as_str().expect("app name");
    let mut replica_sets = BTreeMap::new();
    let mut pod = match kind {
        "Pod" => app.clone(),
        "Deployment" => {
            let replica_set = format!("{name}-{POD_TEMPLATE_HASH}");
            let mut pod = app["spec"]["template"].clone();
            pod["metadata"]["generateName"] = json!(format!("{replica_set}-"));
            pod["metadata"]["labels"]["pod-template-hash"] = json!(POD_TEMPLATE_HASH);
            pod["metadata"]["ownerReferences"] =
                json!([owner("apps/v1", "ReplicaSet", &replica_set)]);
            replica_sets.insert(
                replica_set.clone(),
                json!({
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": replica_set,
                        "namespace": namespace,
                        "uid": format!("uid-of-{replica_set}"),
                        "ownerReferences": [owner("apps/v1", "Deployment", name)],
                    },
                    "spec": {"selector": app["spec"]["selector"], "template": app["spec"]["template"]},
                }),
            );
            pod
        }
        "StatefulSet" => {
            let mut pod = app["spec"]["template"].clone();
            pod["metadata"]["name"] = json!(format!("{name}-0"));
            pod["metadata"]["ownerReferences"] = json!([owner("apps/v1", "StatefulSet", name)]);
            pod
        }
        "DaemonSet" => {
            let mut pod = app["spec"]["template"].clone();
            pod["metadata"]["generateName"] = json!(format!("{name}-"));
            pod["metadata"]["ownerReferences"] = json!([owner("apps/v1", "DaemonSet", name)]);
            pod
        }
        other => panic!("no simulated controller for {other}"),
    };
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["metadata"]["namespace"] = json!(namespace);
    // The ServiceAccount admission plugin, before any mutating webhook: the API token volume,
    // mounted read-only in every container and init container, unless the pod opts out.
    if pod["spec"]["automountServiceAccountToken"] == json!(false) {
        return (pod, replica_sets);
    }
    let token_mount = json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_PATH, "readOnly": true});
    for field in ["initContainers", "containers"] {
        if let Some(containers) = pod["spec"][field].as_array_mut() {
            for container in containers {
                match container["volumeMounts"].as_array_mut() {
                    Some(mounts) => mounts.push(token_mount.clone()),
                    None => container["volumeMounts"] = json!([token_mount.clone()]),
                }
            }
        }
    }
    let token_volume = json!({"name": TOKEN_VOLUME, "projected": {"sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}});
    match pod["spec"]["volumes"].as_array_mut() {
        Some(volumes) => volumes.push(token_volume),
        None => pod["spec"]["volumes"] = json!([token_volume]),
    }
    (pod, replica_sets)
}

/// A simulated API server behind a real `kube::Client`: `GET` of a ReplicaSet in `namespace`
/// answers it from `replica_sets` (404 Status otherwise), events are accepted. Returns the
/// client and the log of `METHOD path` lines it received.
fn simulated_api_server(
    namespace: &str,
    replica_sets: BTreeMap<String, Value>,
) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let prefix = format!("/apis/apps/v1/namespaces/{namespace}/replicasets/");
    let service = tower::service_fn(move |request: Request<Body>| {
        let line = format!("{} {}", request.method(), request.uri().path());
        seen.lock().expect("log").push(line);
        let (code, answer) = match (request.method().as_str(), request.uri().path()) {
            ("GET", path) => match path
                .strip_prefix(&prefix)
                .and_then(|name| replica_sets.get(name))
            {
                Some(object) => (StatusCode::OK, object.clone()),
                None => (
                    StatusCode::NOT_FOUND,
                    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                           "reason": "NotFound", "code": 404, "message": format!("{path} not found"),
                           "metadata": {}}),
                ),
            },
            // Event creation answers with the event.
            _ => (StatusCode::CREATED, json!({"metadata": {}})),
        };
        async move {
            Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
        }
    });
    (kube::Client::new(service, "default"), log)
}

fn review(namespace: &str, pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "e2e-review",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
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

/// The webhook's answer for `pod`: the pod with its JSON patch applied, and its warnings.
async fn through_the_webhook(
    catalog: Catalog,
    namespace: &str,
    pod: &Value,
    client: kube::Client,
) -> Result<(Pod, Vec<String>), String> {
    let reporter = Reporter {
        controller: "threadline-operator".into(),
        instance: None,
    };
    let state = WebhookState {
        catalog: Arc::new(move || catalog.clone()),
        cluster: Some(ClusterAccess {
            recorder: Arc::new(Recorder::new(client.clone(), reporter)),
            client,
        }),
    };
    let request = Request::post(MUTATE_PATH)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(review(namespace, pod)))
        .map_err(|e| e.to_string())?;
    let response = tower::ServiceExt::oneshot(webhook::router(state), request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("webhook answered {}", response.status()));
    }
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    let answer: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let answer = &answer["response"];
    let warnings: Vec<String> = answer["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|w| w.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    // Go's API server decodes a `[]byte` from a base64 string or an array of numbers.
    let patch: Vec<u8> = match &answer["patch"] {
        Value::String(text) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| e.to_string())?,
        Value::Array(bytes) => bytes
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect(),
        _ => return Err(format!("no patch in the answer: {answer}")),
    };
    let patch: json_patch::Patch = serde_json::from_slice(&patch).map_err(|e| e.to_string())?;
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).map_err(|e| e.to_string())?;
    let patched: Pod = serde_json::from_value(patched).map_err(|e| e.to_string())?;
    Ok((patched, warnings))
}

/// Whether `actual` has everything `expected` states, as chainsaw compares: maps by their keys,
/// arrays element by element and of the same length, scalars equal.
fn is_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => want
            .iter()
            .all(|(k, v)| got.get(k).is_some_and(|g| is_subset(v, g))),
        (Value::Array(want), Value::Array(got)) => {
            want.len() == got.len() && want.iter().zip(got).all(|(w, g)| is_subset(w, g))
        }
        _ => expected == actual,
    }
}

fn catalog(case: &Case) -> Catalog {
    let instrumentations = case
        .instrumentations
        .iter()
        .map(|doc| {
            let mut doc = doc.clone();
            if doc["metadata"]["namespace"].is_null() {
                doc["metadata"]["namespace"] = json!(case.namespace);
            }
            serde_json::from_value::<Instrumentation>(doc).expect("Instrumentation deserializes")
        })
        .collect();
    Catalog {
        instrumentations,
        namespace_annotations: BTreeMap::new(),
    }
}

fn compare_container(
    what: &str,
    expected: &ExpectedContainer,
    actual: &Container,
    problems: &mut Vec<String>,
) {
    if let Some(env) = &expected.env {
        let actual_env = actual.env.clone().unwrap_or_default();
        let want: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        let got: Vec<&str> = actual_env.iter().map(|e| e.name.as_str()).collect();
        if want != got {
            problems.push(format!(
                "{what}: env names\n    want {want:?}\n    got  {got:?}"
            ));
        }
        for fact in env {
            let Some(var) = actual_env.iter().find(|e| e.name == fact.name) else {
                continue;
            };
            if let Some(value) = &fact.value {
                if var.value.as_deref() != Some(value.as_str()) {
                    problems.push(format!(
                        "{what}: {} = {:?}, want {value:?}",
                        fact.name, var.value
                    ));
                }
            }
            if let Some(path) = &fact.field_path {
                let got = var
                    .value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .map(|f| f.field_path.as_str());
                if got != Some(path.as_str()) {
                    problems.push(format!(
                        "{what}: {} from field {got:?}, want {path:?}",
                        fact.name
                    ));
                }
            }
            let value = var.value.clone().unwrap_or_default();
            for needle in &fact.value_contains {
                let options: Vec<&str> = match needle {
                    Contains::One(one) => vec![one.as_str()],
                    Contains::AnyOf(any) => any.iter().map(String::as_str).collect(),
                };
                if !options.iter().any(|o| value.contains(o)) {
                    problems.push(format!(
                        "{what}: {} = {value:?} contains none of {options:?}",
                        fact.name
                    ));
                }
            }
        }
    }
    if let Some(command) = &expected.command {
        if actual.command.as_ref() != Some(command) {
            problems.push(format!(
                "{what}: command {:?}, want {command:?}",
                actual.command
            ));
        }
    }
    if let Some(security) = &expected.security_context {
        let got = serde_json::to_value(&actual.security_context).unwrap_or_default();
        if !is_subset(security, &got) {
            problems.push(format!(
                "{what}: securityContext {got}, want (at least) {security}"
            ));
        }
    }
    if let Some(mounts) = &expected.volume_mounts {
        let actual_mounts = actual.volume_mounts.clone().unwrap_or_default();
        let want: Vec<&str> = mounts.iter().map(|m| m.mount_path.as_str()).collect();
        let got: Vec<&str> = actual_mounts
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        if want != got {
            problems.push(format!(
                "{what}: mount paths\n    want {want:?}\n    got  {got:?}"
            ));
        }
        for (fact, mount) in mounts.iter().zip(&actual_mounts) {
            if fact.name.as_ref().is_some_and(|n| *n != mount.name) {
                problems.push(format!(
                    "{what}: mount {} is volume {}, want {:?}",
                    mount.mount_path, mount.name, fact.name
                ));
            }
            if fact
                .read_only
                .is_some_and(|r| r != mount.read_only.unwrap_or(false))
            {
                problems.push(format!(
                    "{what}: mount {} readOnly {:?}, want {:?}",
                    mount.mount_path, mount.read_only, fact.read_only
                ));
            }
        }
    }
}

fn compare_list(
    what: &str,
    expected: &[ExpectedContainer],
    exactly: bool,
    actual: &[Container],
    problems: &mut Vec<String>,
) {
    if exactly {
        let want: Vec<&str> = expected.iter().map(|c| c.name.as_str()).collect();
        let got: Vec<&str> = actual.iter().map(|c| c.name.as_str()).collect();
        if want != got {
            problems.push(format!("{what}: want {want:?}, got {got:?}"));
            return;
        }
    }
    for fact in expected {
        match actual.iter().find(|c| c.name == fact.name) {
            Some(container) => {
                compare_container(&format!("{what} {}", fact.name), fact, container, problems)
            }
            None => problems.push(format!("{what}: no container {}", fact.name)),
        }
    }
}

/// Every difference between the pod the webhook returns for `step` and its assert file.
async fn run_step(case: &Case, step: &Step) -> Vec<String> {
    let (pod, replica_sets) = admitted_pod(&step.app, &case.namespace);
    let asked_for: Vec<String> = replica_sets
        .keys()
        .map(|name| {
            format!(
                "GET /apis/apps/v1/namespaces/{}/replicasets/{name}",
                case.namespace
            )
        })
        .collect();
    let (client, log) = simulated_api_server(&case.namespace, replica_sets);
    let (mutated, warnings) =
        match through_the_webhook(catalog(case), &case.namespace, &pod, client).await {
            Ok(answer) => answer,
            Err(err) => return vec![err],
        };
    let mut problems: Vec<String> = warnings.iter().map(|w| format!("warning: {w}")).collect();
    // The owner chain comes from the API server, as in a cluster: the webhook looked it up.
    let seen = log.lock().expect("log").clone();
    for line in asked_for {
        if !seen.contains(&line) {
            problems.push(format!(
                "the webhook never asked for {line}; it sent {seen:?}"
            ));
        }
    }
    let spec = mutated.spec.clone().unwrap_or_default();
    let expected = &step.expected_pod;
    if let Some(containers) = &expected.containers {
        compare_list(
            "containers",
            containers,
            expected.containers_exactly,
            &spec.containers,
            &mut problems,
        );
    }
    if let Some(inits) = &expected.init_containers {
        compare_list(
            "initContainers",
            inits,
            expected.init_containers_exactly,
            spec.init_containers.as_deref().unwrap_or(&[]),
            &mut problems,
        );
    }
    if let Some(volumes) = &expected.volumes {
        let got = serde_json::to_value(&spec.volumes).unwrap_or_default();
        if !is_subset(&json!(volumes), &got) {
            problems.push(format!("volumes {got}, want {}", json!(volumes)));
        }
    }
    problems
}

#[tokio::test]
async fn every_upstream_e2e_instrumentation_case_gives_the_asserted_pod() {
    let cases = cases();
    assert!(
        cases.len() >= 16,
        "expected the 16 upstream cases of languages Threadline injects, found {}",
        cases.len()
    );
    let mut report = Vec::new();
    let mut failed = 0;
    for (path, case) in &cases {
        assert!(
            case.other_namespaces.iter().all(|n| n != &case.namespace),
            "{}",
            path.display()
        );
        for step in &case.steps {
            let problems = run_step(case, step).await;
            let verdict = if problems.is_empty() { "pass" } else { "FAIL" };
            report.push(format!("{verdict} {} step {}", case.case, step.step));
            if !problems.is_empty() {
                failed += 1;
                report.extend(problems.iter().map(|p| format!("  {p}")));
            }
        }
    }
    println!("{}", report.join("\n"));
    assert_eq!(failed, 0, "\n{}", report.join("\n"));
}
