//! The reconcile loop against a SIMULATED Kubernetes API server: a tower service standing in for
//! it behind a real `kube::Client` (no cluster can run here). It answers as the real one does
//! (server-side apply echoes the object, a missing object is a 404 Status) and records every
//! request, so the test checks what the controller asked for, in order, and what it wrote into
//! the status.

use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};
use threadline_operator::controller::{reconcile, Context, FIELD_MANAGER};
use threadline_operator::crd::{collector_api_resource, OpenTelemetryCollector};
use threadline_operator::render::parse_documents;

const AGENT: &str = include_str!("../testdata/agent-collector.yaml");
const GATEWAY: &str = include_str!("../testdata/gateway-collector.yaml");

/// One request the simulated API server received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
}

impl Seen {
    fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// What the simulated server holds beyond what is applied: existing objects by path.
struct World {
    /// `GET` answers: path → object (absent paths are 404).
    objects: Vec<(String, Value)>,
    /// The ConfigMap list answer.
    config_maps: Vec<Value>,
}

fn status_404(path: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("{path} not found"), "metadata": {}})
}

/// Starts the simulated API server; returns a client talking to it and the request log.
fn simulated_api_server(world: World) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let world = Arc::new(world);
    let service = tower::service_fn(move |request: Request<Body>| {
        let seen = seen.clone();
        let world = world.clone();
        async move {
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or_default().to_string();
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            seen.lock().expect("log").push(Seen {
                method: method.clone(),
                path: path.clone(),
                query,
                body: body.clone(),
            });
            let (code, answer) = answer(&world, &method, &path, body);
            Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
        }
    });
    (Client::new(service, "default"), log)
}

/// What the API server answers to one request.
fn answer(world: &World, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    match method {
        // A status merge patch answers with the whole resource, its status merged.
        "PATCH" if path.ends_with("/status") => {
            let resource = path.trim_end_matches("/status");
            match world.objects.iter().find(|(p, _)| p == resource) {
                Some((_, object)) => {
                    let mut object = object.clone();
                    object["status"] = body["status"].clone();
                    (StatusCode::OK, object)
                }
                None => (StatusCode::NOT_FOUND, status_404(path)),
            }
        }
        // Server-side apply and event creation answer with the object.
        "PATCH" | "POST" => (StatusCode::OK, with_metadata(body)),
        "DELETE" => (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}}),
        ),
        "GET" if path.ends_with("/configmaps") => (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"resourceVersion": "1"}, "items": world.config_maps}),
        ),
        "GET" => match world.objects.iter().find(|(p, _)| p == path) {
            Some((_, object)) => (StatusCode::OK, object.clone()),
            None => (StatusCode::NOT_FOUND, status_404(path)),
        },
        _ => (StatusCode::METHOD_NOT_ALLOWED, status_404(path)),
    }
}

fn with_metadata(mut object: Value) -> Value {
    if object.get("metadata").is_none() {
        object["metadata"] = json!({});
    }
    object["metadata"]["resourceVersion"] = json!("2");
    object
}

/// The resource's path and JSON, as the simulated server holds it.
fn stored(collector: &OpenTelemetryCollector) -> (String, Value) {
    let name = collector.metadata.name.clone().unwrap_or_default();
    (
        format!("/apis/opentelemetry.io/v1beta1{NS}/opentelemetrycollectors/{name}"),
        serde_json::to_value(collector).expect("collector JSON"),
    )
}

fn collector(text: &str, uid: &str) -> OpenTelemetryCollector {
    let mut c: OpenTelemetryCollector =
        serde_json::from_value(parse_documents(text).expect("parses").remove(0))
            .expect("collector");
    c.metadata.uid = Some(uid.into());
    c.metadata.generation = Some(4);
    c
}

fn context(client: Client, others: Vec<OpenTelemetryCollector>) -> Arc<Context> {
    let mut writer = Writer::new(collector_api_resource());
    let store = writer.as_reader();
    writer.apply_watcher_event(&watcher::Event::Init);
    for other in others {
        writer.apply_watcher_event(&watcher::Event::InitApply(other));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: None,
        },
    );
    Arc::new(Context {
        client,
        collectors: store,
        recorder,
    })
}

fn owned_config_map(name: &str, uid: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": "observability",
            "ownerReferences": [{"apiVersion": "opentelemetry.io/v1beta1", "kind": "OpenTelemetryCollector", "name": "otel-gateway", "uid": uid, "controller": true}],
        },
    })
}

const NS: &str = "/namespaces/observability";

#[tokio::test]
async fn reconcile_with_simulated_api_server_applies_the_seed_gateway_and_reports_status() {
    let gateway = collector(GATEWAY, "uid-gw");
    let deployment_path = format!("/apis/apps/v1{NS}/deployments/otel-gateway-collector");
    let world = World {
        objects: vec![
            stored(&gateway),
            (
                deployment_path.clone(),
                json!({
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "otel-gateway-collector", "namespace": "observability"},
                    "status": {"replicas": 3, "readyReplicas": 2},
                }),
            ),
        ],
        config_maps: vec![
            owned_config_map("otel-gateway-collector-0ld0ld00", "uid-gw"),
            // Same labels but owned by someone else: left alone.
            owned_config_map("otel-gateway-collector-f0re1gn0", "uid-other"),
        ],
    };
    let (client, log) = simulated_api_server(world);
    let action = reconcile(Arc::new(gateway), context(client, Vec::new()))
        .await
        .expect("reconciles");
    assert_eq!(
        format!("{action:?}"),
        format!(
            "{:?}",
            kube::runtime::controller::Action::requeue(threadline_operator::controller::RESYNC)
        )
    );

    let seen = log.lock().expect("log").clone();
    let lines: Vec<String> = seen.iter().map(Seen::line).collect();
    let config_map_name = seen[0].body["metadata"]["name"]
        .as_str()
        .expect("config map name")
        .to_string();
    assert!(
        config_map_name.starts_with("otel-gateway-collector-"),
        "{config_map_name}"
    );
    assert_eq!(
        lines,
        [
            format!("PATCH /api/v1{NS}/configmaps/{config_map_name}"),
            format!("PATCH /api/v1{NS}/serviceaccounts/otel-gateway-collector"),
            format!("PATCH /api/v1{NS}/services/otel-gateway-collector"),
            format!("PATCH /api/v1{NS}/services/otel-gateway-collector-headless"),
            format!("PATCH /api/v1{NS}/services/otel-gateway-collector-monitoring"),
            format!("PATCH {deployment_path}"),
            format!("GET /api/v1{NS}/configmaps"),
            format!("DELETE /api/v1{NS}/configmaps/otel-gateway-collector-0ld0ld00"),
            format!("GET /apis/apps/v1{NS}/daemonsets/otel-gateway-collector"),
            format!("GET /apis/apps/v1{NS}/statefulsets/otel-gateway-collector"),
            format!("GET {deployment_path}"),
            format!("PATCH /apis/opentelemetry.io/v1beta1{NS}/opentelemetrycollectors/otel-gateway/status"),
        ]
    );
    // Server-side apply, forced, as the operator's field manager; owned for garbage collection.
    for applied in &seen[..6] {
        assert!(
            applied
                .query
                .contains(&format!("fieldManager={FIELD_MANAGER}")),
            "{}",
            applied.query
        );
        assert!(applied.query.contains("force=true"), "{}", applied.query);
        let owner = &applied.body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "OpenTelemetryCollector");
        assert_eq!(owner["uid"], "uid-gw");
        assert_eq!(owner["controller"], true);
    }
    assert!(
        seen[6].query.contains("labelSelector="),
        "{}",
        seen[6].query
    );
    assert_eq!(seen[5].body["spec"]["replicas"], 3);

    let status = &seen[11].body["status"];
    assert_eq!(
        status["image"],
        threadline_operator::collector::DEFAULT_IMAGE
    );
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["scale"]["replicas"], 2);
    assert_eq!(status["scale"]["statusReplicas"], "2/3");
    assert_eq!(
        status["scale"]["selector"],
        "app.kubernetes.io/component=opentelemetry-collector,app.kubernetes.io/instance=observability.otel-gateway,\
         app.kubernetes.io/managed-by=opentelemetry-operator,app.kubernetes.io/part-of=opentelemetry"
    );
    assert_eq!(status["observedGeneration"], 4);
    let condition = |type_: &str| {
        status["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == type_)
            .cloned()
            .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
    };
    assert_eq!(condition("ConfigValid")["status"], "True");
    assert_eq!(condition("Ready")["status"], "False");
    assert_eq!(
        condition("Ready")["message"],
        "2/3 replicas of Deployment otel-gateway-collector ready"
    );
    // No agent feeds this gateway by trace id: the status says so.
    assert_eq!(condition("TraceRouting")["status"], "False");
    assert_eq!(condition("TraceRouting")["reason"], "TracesMaySplit");
}

#[tokio::test]
async fn reconcile_with_simulated_api_server_wires_the_seed_agent_to_route_by_trace_id() {
    let agent = collector(AGENT, "uid-agent");
    let gateway = collector(GATEWAY, "uid-gw");
    let (client, log) = simulated_api_server(World {
        objects: vec![stored(&agent)],
        config_maps: Vec::new(),
    });
    reconcile(Arc::new(agent), context(client, vec![gateway]))
        .await
        .expect("reconciles");
    let seen = log.lock().expect("log").clone();
    let config_map = &seen[0].body;
    let text = config_map["data"]["collector.yaml"]
        .as_str()
        .expect("config");
    let config: Value = serde_yaml_ng::from_str(text).expect("yaml");
    assert_eq!(
        config["exporters"]["loadbalancing/otel-gateway"]["routing_key"],
        "traceID"
    );
    let daemonset = seen
        .iter()
        .find(|s| s.path.ends_with("/daemonsets/otel-agent-collector") && s.method == "PATCH");
    assert!(
        daemonset.is_some(),
        "{:?}",
        seen.iter().map(Seen::line).collect::<Vec<_>>()
    );
    let status = &seen.last().expect("status patch").body["status"];
    let routing = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "TraceRouting")
        .expect("TraceRouting condition");
    assert_eq!(routing["status"], "True");
    assert_eq!(routing["reason"], "RoutedByTraceID");
    // No pods are ready in the simulated cluster: 0 of 0 scheduled is not ready.
    assert_eq!(status["scale"]["statusReplicas"], "0/0");
}

#[tokio::test]
async fn invalid_config_with_simulated_api_server_is_reported_and_nothing_rolled_out() {
    let broken = GATEWAY.replace("limit_mib: 1536", "limit_mib: lots");
    let gateway = collector(&broken, "uid-gw");
    let (client, log) = simulated_api_server(World {
        objects: vec![stored(&gateway)],
        config_maps: Vec::new(),
    });
    let action = reconcile(Arc::new(gateway), context(client, Vec::new()))
        .await
        .expect("reconciles");
    assert_eq!(
        format!("{action:?}"),
        format!("{:?}", kube::runtime::controller::Action::await_change())
    );
    let seen = log.lock().expect("log").clone();
    let lines: Vec<String> = seen.iter().map(Seen::line).collect();
    assert_eq!(
        lines,
        [
            format!("PATCH /apis/opentelemetry.io/v1beta1{NS}/opentelemetrycollectors/otel-gateway/status"),
            format!("POST /apis/events.k8s.io/v1{NS}/events"),
        ]
    );
    let condition = &seen[0].body["status"]["conditions"][0];
    assert_eq!(condition["type"], "ConfigValid");
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "InvalidConfig");
    let message = condition["message"].as_str().expect("message");
    assert!(
        message.contains("processors::memory_limiter::limit_mib"),
        "{message}"
    );
    let event = &seen[1].body;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "InvalidConfig");
    assert_eq!(event["regarding"]["name"], "otel-gateway");
    assert!(event["note"].as_str().expect("note").contains("limit_mib"));
}
