//! The `loadbalancing` exporter against real gRPC backends on 127.0.0.1.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::*;
use crate::component::{decode_config, ExporterFactory};
use crate::exporters::testkit::{traces, wait_until, yaml, GrpcBackend, TestContext};
use crate::rpc_status::retryable_status;
use serde_yaml_ng::Value;

const WAIT: Duration = Duration::from_secs(10);

fn sample(name: &str) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/exporters/loadbalancing/testdata/config.yaml"
    ))
    .unwrap();
    let all: Value = serde_yaml_ng::from_str(&text).unwrap();
    all[name].clone()
}

fn error_text(text: &str) -> String {
    decode_config::<LoadBalancingConfig>(&yaml(text), "exporters::loadbalancing")
        .unwrap_err()
        .to_string()
}

#[test]
fn decodes_the_upstream_style_samples() {
    let config: LoadBalancingConfig =
        decode_config(&sample("loadbalancing"), "exporters::loadbalancing").unwrap();
    assert_eq!(config.routing_key, RoutingKey::TraceId);
    let hostnames = &config.resolver.static_list.as_ref().unwrap().hostnames;
    assert_eq!(hostnames.len(), 3);
    assert_eq!(
        config.backend_config("10.0.0.1:4317").timeout.as_duration(),
        Duration::from_secs(1)
    );

    let config: LoadBalancingConfig =
        decode_config(&sample("loadbalancing/dns"), "exporters::loadbalancing/dns").unwrap();
    assert_eq!(config.routing_key, RoutingKey::Service);
    let dns = config.resolver.dns.as_ref().unwrap();
    assert_eq!(dns.interval.as_duration(), Duration::from_secs(10));
    assert_eq!(config.queue().queue_size, 5000);
    assert_eq!(
        config.retry().max_elapsed_time.as_duration(),
        Duration::from_secs(120)
    );
}

#[test]
fn invalid_configs_name_the_key_and_what_is_allowed() {
    let none = error_text("protocol: {otlp: {}}\nresolver: {}");
    assert!(
        none.contains("exporters::loadbalancing::resolver"),
        "{none}"
    );
    assert!(none.contains("static, dns"), "{none}");

    let two = error_text(
        "protocol: {otlp: {}}\nresolver: {static: {hostnames: [a]}, dns: {hostname: b}}",
    );
    assert!(two.contains("exactly one resolver"), "{two}");

    let key = error_text(
        "routing_key: metric\nprotocol: {otlp: {}}\nresolver: {static: {hostnames: [a]}}",
    );
    assert!(
        key.contains("routing_key") && key.contains("traceID"),
        "{key}"
    );

    let port = error_text("protocol: {otlp: {}}\nresolver: {dns: {hostname: gw, port: http}}");
    assert!(port.contains("resolver::dns::port"), "{port}");

    let empty = error_text("protocol: {otlp: {}}\nresolver: {static: {hostnames: []}}");
    assert!(empty.contains("resolver::static::hostnames"), "{empty}");

    let otlp =
        error_text("protocol: {otlp: {compression: lz4}}\nresolver: {static: {hostnames: [a]}}");
    assert!(otlp.contains("protocol::otlp"), "{otlp}");
}

#[test]
fn the_ring_spreads_keys_evenly_and_moves_about_one_nth_when_a_backend_joins() {
    let three = Ring::new(vec!["a:1".into(), "b:1".into(), "c:1".into()]);
    let four = Ring::new(vec!["c:1".into(), "a:1".into(), "d:1".into(), "b:1".into()]);
    let keys: Vec<[u8; 16]> = (0..30_000u64)
        .map(|i| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&ring::stable_hash(&i.to_le_bytes()).to_le_bytes());
            key
        })
        .collect();
    let mut counts = HashMap::new();
    let mut moved = 0;
    for key in &keys {
        let before = &three.endpoints()[three.owner(key).unwrap()];
        let after = &four.endpoints()[four.owner(key).unwrap()];
        *counts.entry(before.clone()).or_insert(0usize) += 1;
        if before != after {
            // A key only ever moves to the new backend.
            assert_eq!(after, "d:1");
            moved += 1;
        }
    }
    for (endpoint, count) in &counts {
        let share = *count as f64 / keys.len() as f64;
        assert!((0.28..0.39).contains(&share), "{endpoint}: {share}");
    }
    let moved_share = moved as f64 / keys.len() as f64;
    assert!((0.18..0.32).contains(&moved_share), "moved {moved_share}");
}

fn exporter_config(endpoints: &[String], extra: &str) -> Value {
    yaml(&format!(
        "protocol: {{otlp: {{tls: {{insecure: true}}, compression: none, timeout: 2s}}}}\n\
         resolver: {{static: {{hostnames: [{}]}}}}\n\
         retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 20s}}\n{extra}",
        endpoints.join(", ")
    ))
}

/// Trace id (hex) → how often each backend received a span of it, per backend index.
fn received_spans(backends: &[&GrpcBackend]) -> Vec<Vec<(String, String)>> {
    backends
        .iter()
        .map(|b| {
            b.state
                .accepted()
                .iter()
                .flat_map(|r| r.request.resource_spans.clone())
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans)
                .map(|s| (hex::encode(&s.trace_id), hex::encode(&s.span_id)))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn every_trace_goes_whole_to_its_owner() {
    let backends = [
        GrpcBackend::start().await,
        GrpcBackend::start().await,
        GrpcBackend::start().await,
    ];
    let endpoints: Vec<String> = backends.iter().map(|b| b.endpoint()).collect();
    let tc = TestContext::new("loadbalancing");
    let exporter = LoadBalancingFactory::default()
        .create_traces(&tc.ctx(), &exporter_config(&endpoints, ""))
        .unwrap();

    // 200 traces of 5 spans, each trace spread over several requests.
    let mut sent = 0;
    for round in 0..5 {
        let mut data = traces("svc", 200);
        // Give the spans of every round the trace ids of round 0, so traces span requests.
        data = with_trace_ids(&data, round);
        sent += data.span_count();
        exporter.consume(data).await.unwrap();
    }
    let all: Vec<&GrpcBackend> = backends.iter().collect();
    assert!(
        wait_until(WAIT, || received_spans(&all)
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            == sent)
        .await
    );
    let ring = Ring::new(endpoints.clone());
    let mut owner_of: HashMap<String, usize> = HashMap::new();
    for (index, spans) in received_spans(&all).iter().enumerate() {
        assert!(!spans.is_empty(), "backend {index} got nothing");
        for (trace, _) in spans {
            let previous = owner_of.insert(trace.clone(), index);
            assert!(previous.is_none_or(|p| p == index), "trace {trace} split");
            let id: [u8; 16] = hex::decode(trace).unwrap().try_into().unwrap();
            assert_eq!(ring.endpoints()[ring.owner(&id).unwrap()], endpoints[index]);
        }
    }
    assert_eq!(owner_of.len(), 200);
    exporter.shutdown(std::time::Instant::now() + WAIT).await;
}

/// The same data with trace ids replaced by `tests-<n>` patterns: span i gets trace id i, so
/// several requests carry spans of the same traces.
fn with_trace_ids(data: &TraceData, round: u8) -> TraceData {
    let mut request = data.to_request().unwrap();
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            for (i, span) in ss.spans.iter_mut().enumerate() {
                let mut id = [7u8; 16];
                id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                span.trace_id = id.to_vec();
                span.span_id[0] = round;
            }
        }
    }
    TraceData::from_request(&request)
}

#[tokio::test]
async fn routes_by_service_name() {
    let backends = [GrpcBackend::start().await, GrpcBackend::start().await];
    let endpoints: Vec<String> = backends.iter().map(|b| b.endpoint()).collect();
    let tc = TestContext::new("loadbalancing");
    let exporter = LoadBalancingFactory::default()
        .create_traces(
            &tc.ctx(),
            &exporter_config(&endpoints, "routing_key: service"),
        )
        .unwrap();
    let services: Vec<String> = (0..20).map(|i| format!("service-{i}")).collect();
    for service in &services {
        exporter.consume(traces(service, 10)).await.unwrap();
    }
    assert!(
        wait_until(WAIT, || backends
            .iter()
            .map(|b| b.state.accepted().len())
            .sum::<usize>()
            >= 1
            && received_spans(&backends.iter().collect::<Vec<_>>())
                .iter()
                .map(Vec::len)
                .sum::<usize>()
                == 200)
        .await
    );
    let ring = Ring::new(endpoints.clone());
    for (index, backend) in backends.iter().enumerate() {
        for received in backend.state.accepted() {
            for service in crate::exporters::testkit::tags(&received.request) {
                let owner = ring.owner(service.as_bytes()).unwrap();
                assert_eq!(ring.endpoints()[owner], endpoints[index], "{service}");
            }
        }
    }
    exporter.shutdown(std::time::Instant::now() + WAIT).await;
}

#[tokio::test]
async fn a_dead_backends_spans_go_to_the_next_owner_without_loss_or_duplicates() {
    let alive = [GrpcBackend::start().await, GrpcBackend::start().await];
    let dead = GrpcBackend::start().await;
    let dead_endpoint = dead.endpoint();
    dead.stop().await;
    let mut endpoints: Vec<String> = alive.iter().map(|b| b.endpoint()).collect();
    endpoints.push(dead_endpoint);
    let tc = TestContext::new("loadbalancing");
    let exporter = LoadBalancingFactory::default()
        .create_traces(&tc.ctx(), &exporter_config(&endpoints, ""))
        .unwrap();

    let mut sent = HashSet::new();
    for _ in 0..10 {
        let data = traces("svc", 100);
        data.for_each_span(|_, _, span| {
            sent.insert(hex::encode(span.span_id()));
        });
        exporter.consume(data).await.unwrap();
    }
    let all: Vec<&GrpcBackend> = alive.iter().collect();
    assert!(
        wait_until(WAIT, || received_spans(&all)
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            >= sent.len())
        .await,
        "not everything arrived"
    );
    let received: Vec<String> = received_spans(&all)
        .into_iter()
        .flatten()
        .map(|(_, span)| span)
        .collect();
    let unique: HashSet<String> = received.iter().cloned().collect();
    assert_eq!(unique, sent);
    assert_eq!(received.len(), sent.len(), "some span arrived twice");
    exporter.shutdown(std::time::Instant::now() + WAIT).await;
    assert_eq!(tc.metrics().send_failed_spans.get(), 0);
    assert_eq!(tc.metrics().sent_spans.get(), sent.len() as u64);
}

#[tokio::test]
async fn a_throttled_backend_keeps_its_traces_and_retries_resend_only_what_failed() {
    let backends = [GrpcBackend::start().await, GrpcBackend::start().await];
    // The first backend refuses its first two requests with a throttle hint (memory_limiter).
    backends[0].state.respond_with(|n| {
        if n < 2 {
            Err(retryable_status(
                "data refused due to high memory usage".into(),
                Duration::from_millis(100),
            ))
        } else {
            Ok(Default::default())
        }
    });
    let endpoints: Vec<String> = backends.iter().map(|b| b.endpoint()).collect();
    let tc = TestContext::new("loadbalancing");
    let exporter = LoadBalancingFactory::default()
        .create_traces(&tc.ctx(), &exporter_config(&endpoints, ""))
        .unwrap();
    let data = traces("svc", 300);
    let sent = data.span_count();
    exporter.consume(data).await.unwrap();
    let all: Vec<&GrpcBackend> = backends.iter().collect();
    assert!(
        wait_until(WAIT, || received_spans(&all)
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            >= sent)
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = received_spans(&all);
    assert_eq!(
        spans.iter().map(Vec::len).sum::<usize>(),
        sent,
        "duplicates"
    );
    // The throttled backend was retried, not replaced: the other one got only its own share.
    let ring = Ring::new(endpoints.clone());
    for (trace, _) in &spans[1] {
        let id: [u8; 16] = hex::decode(trace).unwrap().try_into().unwrap();
        assert_eq!(ring.endpoints()[ring.owner(&id).unwrap()], endpoints[1]);
    }
    assert_eq!(backends[0].state.attempts(), 3);
    assert_eq!(backends[1].state.attempts(), 1);
    exporter.shutdown(std::time::Instant::now() + WAIT).await;
}

#[tokio::test]
async fn the_dns_resolver_finds_backends_by_name() {
    let backend = GrpcBackend::start().await;
    let tc = TestContext::new("loadbalancing");
    let config = yaml(&format!(
        "protocol: {{otlp: {{tls: {{insecure: true}}, timeout: 2s}}}}\n\
         resolver: {{dns: {{hostname: localhost, port: \"{}\", interval: 100ms}}}}\n\
         retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms}}",
        backend.addr.port()
    ));
    let exporter = LoadBalancingFactory::default()
        .create_traces(&tc.ctx(), &config)
        .unwrap();
    // `localhost` may also resolve to ::1, where nothing listens: that backend leaves the ring.
    exporter.consume(traces("svc", 50)).await.unwrap();
    assert!(
        wait_until(WAIT, || received_spans(&[&backend])[0].len() == 50).await,
        "spans did not arrive through the DNS-resolved backend"
    );
    exporter.shutdown(std::time::Instant::now() + WAIT).await;
}

/// A simulated Kubernetes API server (no cluster runs here): it serves one namespace's
/// EndpointSlices, a list and then a watch stream fed by the test.
#[cfg(feature = "k8s")]
mod simulated_api_server {
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::response::IntoResponse;
    use futures::StreamExt;
    use serde_json::{json, Value};
    use tokio::sync::broadcast;

    pub struct ApiServer {
        pub url: String,
        shared: Shared,
        _task: tokio::task::JoinHandle<()>,
    }

    /// Events carry their resourceVersion, so a watch replays what it missed, as the real one.
    #[derive(Clone)]
    struct Shared {
        slices: Arc<Mutex<Vec<Value>>>,
        log: Arc<Mutex<Vec<(u64, String)>>>,
        events: broadcast::Sender<(u64, String)>,
    }

    pub fn slice(name: &str, addresses: &[(&str, bool)], version: u32) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name, "namespace": "observability", "resourceVersion": version.to_string(),
                "labels": {"kubernetes.io/service-name": "otel-gateway-collector"}
            },
            "addressType": "IPv4",
            "endpoints": addresses.iter().map(|(ip, ready)| json!({
                "addresses": [ip], "conditions": {"ready": ready}
            })).collect::<Vec<_>>(),
            "ports": [{"name": "otlp-grpc", "port": 4317, "protocol": "TCP"}]
        })
    }

    async fn endpoint_slices(
        State(shared): State<Shared>,
        uri: http::Uri,
    ) -> axum::response::Response {
        let query: std::collections::HashMap<String, String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("%3D", "=").replace("%2F", "/")))
            .collect();
        assert_eq!(
            query.get("labelSelector").map(String::as_str),
            Some("kubernetes.io/service-name=otel-gateway-collector")
        );
        if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
            let since: u64 = query
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let live = shared.events.subscribe();
            let backlog: Vec<(u64, String)> = shared
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|(version, _)| *version > since)
                .cloned()
                .collect();
            let replayed = backlog.last().map_or(since, |(version, _)| *version);
            let live = futures::stream::unfold(live, |mut live| async move {
                let event = live.recv().await.ok()?;
                Some((event, live))
            });
            let events = futures::stream::iter(backlog)
                .chain(futures::StreamExt::filter(live, move |(version, _)| {
                    std::future::ready(*version > replayed)
                }))
                .map(|(_, line)| Ok::<_, std::convert::Infallible>(line + "\n"));
            return axum::body::Body::from_stream(events).into_response();
        }
        let items = shared.slices.lock().unwrap().clone();
        let list = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
            "metadata": {"resourceVersion": "1"}, "items": items
        });
        (
            [(http::header::CONTENT_TYPE, "application/json")],
            list.to_string(),
        )
            .into_response()
    }

    impl ApiServer {
        pub async fn start(initial: Vec<Value>) -> ApiServer {
            let (events, _) = broadcast::channel(16);
            let shared = Shared {
                slices: Arc::new(Mutex::new(initial)),
                log: Arc::default(),
                events,
            };
            let app = axum::Router::new()
                .route(
                    "/apis/discovery.k8s.io/v1/namespaces/observability/endpointslices",
                    axum::routing::get(endpoint_slices),
                )
                .with_state(shared.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            ApiServer {
                url,
                shared,
                _task: task,
            }
        }

        /// Sends a watch event (ADDED, MODIFIED, DELETED) and keeps the list in step.
        pub fn event(&self, kind: &str, object: Value) {
            let name = object["metadata"]["name"].clone();
            let version: u64 = object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let mut slices = self.shared.slices.lock().unwrap();
            slices.retain(|s| s["metadata"]["name"] != name);
            if kind != "DELETED" {
                slices.push(object.clone());
            }
            let line = json!({"type": kind, "object": object}).to_string();
            self.shared
                .log
                .lock()
                .unwrap()
                .push((version, line.clone()));
            let _ = self.shared.events.send((version, line));
        }
    }
}

#[cfg(feature = "k8s")]
#[tokio::test]
async fn k8s_resolver_follows_endpointslices_of_a_simulated_api_server() {
    use simulated_api_server::{slice, ApiServer};
    let server = ApiServer::start(vec![slice(
        "gw-a",
        &[("10.0.0.1", true), ("10.0.0.2", false)],
        1,
    )])
    .await;
    let client = kube::Client::try_from(kube::Config::new(server.url.parse().unwrap())).unwrap();
    let config: config::K8sResolverConfig = serde_yaml_ng::from_str(
        "service: otel-gateway-collector.observability\nports: [4317, 4318]",
    )
    .unwrap();
    let (sender, mut receiver) = watch::channel(Vec::new());
    let stop = CancellationToken::new();
    tokio::spawn(k8s::run("lb".into(), config, client, sender, stop.clone()));

    async fn next(receiver: &mut watch::Receiver<Vec<String>>) -> Vec<String> {
        tokio::time::timeout(WAIT, receiver.changed())
            .await
            .unwrap()
            .unwrap();
        receiver.borrow_and_update().clone()
    }
    // Only ready endpoints, once per port.
    assert_eq!(
        next(&mut receiver).await,
        ["10.0.0.1:4317", "10.0.0.1:4318"]
    );
    // A rollout: the second pod becomes ready, a new slice appears, the first pod goes away.
    server.event("MODIFIED", slice("gw-a", &[("10.0.0.2", true)], 2));
    assert_eq!(
        next(&mut receiver).await,
        ["10.0.0.2:4317", "10.0.0.2:4318"]
    );
    server.event("ADDED", slice("gw-b", &[("10.0.0.3", true)], 3));
    assert_eq!(
        next(&mut receiver).await,
        [
            "10.0.0.2:4317",
            "10.0.0.2:4318",
            "10.0.0.3:4317",
            "10.0.0.3:4318"
        ]
    );
    server.event("DELETED", slice("gw-a", &[("10.0.0.2", true)], 4));
    assert_eq!(
        next(&mut receiver).await,
        ["10.0.0.3:4317", "10.0.0.3:4318"]
    );
    stop.cancel();
}

#[cfg(feature = "k8s")]
#[test]
fn k8s_config_is_validated() {
    let text = error_text("protocol: {otlp: {}}\nresolver: {k8s: {service: a.b.c, ports: []}}");
    assert!(text.contains("resolver::k8s::service"), "{text}");
    assert!(text.contains("resolver::k8s::ports"), "{text}");
    let ok: LoadBalancingConfig = decode_config(
        &yaml("protocol: {otlp: {}}\nresolver: {k8s: {service: lb-svc.kube-public}}"),
        "exporters::loadbalancing",
    )
    .unwrap();
    assert_eq!(ok.resolver.k8s.unwrap().ports, [4317]);
}

#[cfg(not(feature = "k8s"))]
#[test]
fn a_k8s_resolver_names_the_missing_feature() {
    let text = error_text("protocol: {otlp: {}}\nresolver: {k8s: {service: lb-svc}}");
    assert!(text.contains("resolver::k8s"), "{text}");
    assert!(text.contains("without the `k8s` feature"), "{text}");
}

#[tokio::test]
async fn after_a_backend_is_removed_its_traces_go_to_the_remaining_owner() {
    let backends = [GrpcBackend::start().await, GrpcBackend::start().await];
    let endpoints: Vec<String> = backends.iter().map(|b| b.endpoint()).collect();
    let config: LoadBalancingConfig =
        decode_config(&exporter_config(&endpoints, ""), "exporters::loadbalancing").unwrap();
    let sender = Balancer::start("loadbalancing", config, None).unwrap();
    // The resolver drops the second backend (a scale-down): everything goes to the first.
    sender.0.set_endpoints(&endpoints[..1]).unwrap();
    let data = traces("svc", 200);
    let delivered = sender.send(&data).await.unwrap();
    assert_eq!(delivered.rejected_spans, 0);
    let all: Vec<&GrpcBackend> = backends.iter().collect();
    let spans = received_spans(&all);
    assert_eq!(spans[0].len(), 200);
    assert!(spans[1].is_empty());
}
