//! The demo estate: `frontend` → `orders` (HTTP) → `payments` (gRPC) and → `inventory` (through a
//! message queue whose messages carry the trace context in their headers). Each service has its
//! own tracer provider and resource (service.*, k8s.*), exports OTLP/gRPC, and logs JSON lines
//! with trace_id and span_id. Span names are route templates, never raw ids. A traffic loop
//! calls the frontend: steady requests, some failing, some slow.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::BaggagePropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::payments_grpc::{
    charge, context_metadata, ChargeFn, ChargeReply, ChargeRequest, PaymentsServer,
};
use crate::propagation::{Headers, HeadersRef, W3cPropagator};

/// What to run.
#[derive(Debug, Clone)]
pub struct EstateOptions {
    /// OTLP/gRPC endpoint of a collector or all-in-one, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: String,
    /// Address of the frontend (also the W3C test endpoint, `POST /test`).
    pub frontend: SocketAddr,
    /// Requests per second of the traffic loop (0: no traffic, serve only).
    pub rate: f64,
    pub error_ratio: f64,
    pub slow_ratio: f64,
}

fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(W3cPropagator),
        Box::new(BaggagePropagator::new()),
    ])
}

/// One service: its tracer and its provider (kept to flush at shutdown).
struct Service {
    name: &'static str,
    tracer: opentelemetry::global::BoxedTracer,
}

fn provider(name: &str, endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .context("building the OTLP exporter")?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let resource = Resource::builder()
        .with_service_name(name.to_string())
        .with_attributes([
            KeyValue::new("service.namespace", "shop"),
            KeyValue::new("service.version", "1.4.2"),
            KeyValue::new("service.instance.id", format!("{name}-7d9f8-0")),
            KeyValue::new("deployment.environment.name", "demo"),
            KeyValue::new("k8s.namespace.name", "shop"),
            KeyValue::new("k8s.deployment.name", name.to_string()),
            KeyValue::new("k8s.pod.name", format!("{name}-7d9f8-0")),
            KeyValue::new("k8s.node.name", "node-1"),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// A JSON log line with the current trace and span ids.
fn log(service: &str, cx: &Context, level: &str, message: &str) {
    let span = cx.span();
    let context = span.span_context();
    let line = serde_json::json!({
        "ts": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        "level": level,
        "service": service,
        "message": message,
        "trace_id": format!("{:032x}", context.trace_id()),
        "span_id": format!("{:016x}", context.span_id()),
    });
    eprintln!("{line}");
}

fn server_span(service: &Service, name: &str, headers: &HeaderMap) -> Context {
    let parent = propagator().extract(&HeadersRef(headers));
    let span = service
        .tracer
        .span_builder(name.to_string())
        .with_kind(SpanKind::Server)
        .start_with_context(&service.tracer, &parent);
    parent.with_span(span)
}

fn client_span(service: &Service, name: &str, kind: SpanKind, parent: &Context) -> Context {
    let span = service
        .tracer
        .span_builder(name.to_string())
        .with_kind(kind)
        .start_with_context(&service.tracer, parent);
    parent.with_span(span)
}

fn inject(cx: &Context) -> HeaderMap {
    let mut headers = HeaderMap::new();
    propagator().inject_context(cx, &mut Headers(&mut headers));
    headers
}

fn end(cx: &Context, error: Option<&str>) {
    let span = cx.span();
    if let Some(message) = error {
        span.set_status(Status::error(message.to_string()));
    }
    span.end();
}

#[derive(Debug, Default, Deserialize)]
struct Behaviour {
    #[serde(default)]
    fail: u8,
    #[serde(default)]
    slow: u8,
}

/// A message on the inventory queue: a body and headers carrying the trace context.
struct Message {
    order_id: String,
    headers: HeaderMap,
}

struct Estate {
    frontend: Service,
    orders: Service,
    payments_service: Service,
    inventory: Service,
    http: reqwest::Client,
    orders_url: String,
    /// gRPC channel to payments (connects lazily, reconnects by itself).
    payments: tonic::transport::Channel,
    queue: mpsc::Sender<Message>,
}

async fn frontend_order(
    State(estate): State<Arc<Estate>>,
    Path(order_id): Path<String>,
    Query(behaviour): Query<Behaviour>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let cx = server_span(&estate.frontend, "GET /api/v2/orders/{orderId}", &headers);
    let cx = cx.with_baggage(vec![KeyValue::new("shop.customer_tier", "gold")]);
    cx.span()
        .set_attribute(KeyValue::new("http.request.method", "GET"));
    cx.span()
        .set_attribute(KeyValue::new("http.route", "/api/v2/orders/{orderId}"));
    log(estate.frontend.name, &cx, "info", "order requested");
    let call = client_span(
        &estate.frontend,
        "GET /orders/{orderId}",
        SpanKind::Client,
        &cx,
    );
    let url = format!(
        "{}/orders/{order_id}?fail={}&slow={}",
        estate.orders_url, behaviour.fail, behaviour.slow
    );
    let result = estate.http.get(url).headers(inject(&call)).send().await;
    let status = match result {
        Ok(response) => response.status().as_u16(),
        Err(_) => 502,
    };
    call.span().set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    end(&call, (status >= 500).then_some("orders failed"));
    cx.span().set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        log(estate.frontend.name, &cx, "error", "order failed");
    }
    end(&cx, (status >= 500).then_some("upstream error"));
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        String::new(),
    )
}

async fn orders_get(
    State(estate): State<Arc<Estate>>,
    Path(order_id): Path<String>,
    Query(behaviour): Query<Behaviour>,
    headers: HeaderMap,
) -> StatusCode {
    let cx = server_span(&estate.orders, "GET /orders/{orderId}", &headers);
    let tier = cx
        .baggage()
        .get("shop.customer_tier")
        .map(|v| v.to_string())
        .unwrap_or_default();
    cx.span()
        .set_attribute(KeyValue::new("shop.customer_tier", tier));
    log(estate.orders.name, &cx, "info", "loading order");
    let db = client_span(&estate.orders, "SELECT orders", SpanKind::Client, &cx);
    db.span()
        .set_attribute(KeyValue::new("db.system.name", "postgresql"));
    tokio::time::sleep(Duration::from_millis(3)).await;
    end(&db, None);

    // Inventory hears about the order through the queue.
    let publish = client_span(&estate.orders, "orders publish", SpanKind::Producer, &cx);
    publish
        .span()
        .set_attribute(KeyValue::new("messaging.destination.name", "orders"));
    let _ = estate
        .queue
        .send(Message {
            order_id: order_id.clone(),
            headers: inject(&publish),
        })
        .await;
    end(&publish, None);

    let call = client_span(
        &estate.orders,
        "shop.payments.v1.Payments/Charge",
        SpanKind::Client,
        &cx,
    );
    call.span()
        .set_attribute(KeyValue::new("rpc.system", "grpc"));
    call.span()
        .set_attribute(KeyValue::new("rpc.service", "shop.payments.v1.Payments"));
    call.span()
        .set_attribute(KeyValue::new("rpc.method", "Charge"));
    let request = ChargeRequest {
        order_id: order_id.clone(),
        fail: behaviour.fail == 1,
        slow: behaviour.slow == 1,
    };
    let metadata = context_metadata(&call, &propagator());
    let status = match charge(estate.payments.clone(), metadata, request).await {
        Ok(reply) if reply.approved => 200,
        Ok(_) => 402,
        Err(status) => {
            call.span()
                .set_attribute(KeyValue::new("rpc.grpc.status_code", status.code() as i64));
            500
        }
    };
    end(&call, (status >= 500).then_some("payment failed"));
    end(&cx, (status >= 500).then_some("payment failed"));
    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY)
}

async fn payments_charge(
    estate: Arc<Estate>,
    headers: HeaderMap,
    request: ChargeRequest,
) -> Result<ChargeReply, tonic::Status> {
    let cx = server_span(
        &estate.payments_service,
        "shop.payments.v1.Payments/Charge",
        &headers,
    );
    cx.span().set_attribute(KeyValue::new("rpc.system", "grpc"));
    if request.slow {
        // A slow card network: the trace crosses the 2 s latency policy.
        log(
            estate.payments_service.name,
            &cx,
            "warn",
            "slow card network",
        );
        tokio::time::sleep(Duration::from_millis(2200)).await;
    }
    let charge = client_span(
        &estate.payments_service,
        "charge card",
        SpanKind::Client,
        &cx,
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    if request.fail {
        charge
            .span()
            .set_attribute(KeyValue::new("error.type", "card_declined"));
        end(&charge, Some("card declined"));
        log(estate.payments_service.name, &cx, "error", "card declined");
        end(&cx, Some("card declined"));
        return Err(tonic::Status::failed_precondition("card declined"));
    }
    end(&charge, None);
    end(&cx, None);
    Ok(ChargeReply { approved: true })
}

async fn run_inventory(estate: Arc<Estate>, mut queue: mpsc::Receiver<Message>) {
    while let Some(message) = queue.recv().await {
        let parent = propagator().extract(&HeadersRef(&message.headers));
        let span = estate
            .inventory
            .tracer
            .span_builder("orders process")
            .with_kind(SpanKind::Consumer)
            .start_with_context(&estate.inventory.tracer, &parent);
        let cx = parent.with_span(span);
        cx.span()
            .set_attribute(KeyValue::new("messaging.destination.name", "orders"));
        log(
            estate.inventory.name,
            &cx,
            "info",
            &format!(
                "reserving stock for an order ({} chars id)",
                message.order_id.len()
            ),
        );
        let db = client_span(&estate.inventory, "UPDATE stock", SpanKind::Client, &cx);
        tokio::time::sleep(Duration::from_millis(2)).await;
        end(&db, None);
        end(&cx, None);
    }
}

/// The W3C trace-context test harness's endpoint: a JSON list of `{url, arguments}`; each url is
/// POSTed `arguments`, with the trace context of this request propagated.
async fn w3c_test(
    State(estate): State<Arc<Estate>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    #[derive(Deserialize)]
    struct Case {
        url: String,
        #[serde(default)]
        arguments: serde_json::Value,
    }
    let Ok(cases) = serde_json::from_str::<Vec<Case>>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let incoming = crate::w3c::from_headers(&headers);
    for case in cases {
        let span_id: [u8; 8] = loop {
            let id: [u8; 8] = rand::random();
            if id != [0; 8] {
                break id;
            }
        };
        let (parent, state) =
            crate::w3c::forward(incoming.as_ref(), span_id, rand::random(), "threadline");
        let mut request = estate
            .http
            .post(&case.url)
            .json(&case.arguments)
            .header("traceparent", parent.to_string());
        request = request.header("tracestate", state.header());
        let _ = request.send().await;
    }
    StatusCode::OK
}

async fn serve(
    router: Router,
    address: SocketAddr,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((bound, task))
}

/// A running estate; `shutdown` lets requests in flight finish and flushes every service's spans.
pub struct RunningEstate {
    pub frontend: SocketAddr,
    providers: Vec<SdkTracerProvider>,
    traffic: Option<tokio::task::JoinHandle<()>>,
    in_flight: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningEstate {
    pub async fn shutdown(self) {
        // No new requests; those in flight (a slow one takes 2.2 s) end their spans first, so
        // no trace is left without its root.
        if let Some(traffic) = &self.traffic {
            traffic.abort();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for task in &self.tasks {
            task.abort();
        }
        for provider in self.providers {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

pub async fn start(options: EstateOptions) -> anyhow::Result<RunningEstate> {
    let names = ["frontend", "orders", "payments", "inventory"];
    let providers: Vec<SdkTracerProvider> = names
        .iter()
        .map(|n| provider(n, &options.otlp_endpoint))
        .collect::<anyhow::Result<_>>()?;
    let service = |i: usize| Service {
        name: names[i],
        tracer: opentelemetry::global::BoxedTracer::new(Box::new(providers[i].tracer(names[i]))),
    };
    let (queue, inbox) = mpsc::channel(1024);
    let localhost: SocketAddr = ([127, 0, 0, 1], 0).into();

    // Bind the back ends first: their addresses go into the estate.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let orders_listener = tokio::net::TcpListener::bind(localhost).await?;
    let payments_listener = tokio::net::TcpListener::bind(localhost).await?;
    let estate = Arc::new(Estate {
        frontend: service(0),
        orders: service(1),
        payments_service: service(2),
        inventory: service(3),
        http,
        orders_url: format!("http://{}", orders_listener.local_addr()?),
        payments: tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            payments_listener.local_addr()?
        ))?
        .connect_lazy(),
        queue,
    });
    let mut tasks = Vec::new();
    let orders_app = Router::new()
        .route("/orders/{order_id}", get(orders_get))
        .with_state(estate.clone());
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(orders_listener, orders_app).await;
    }));
    let for_payments = estate.clone();
    let charge_fn: ChargeFn = Arc::new(move |headers, request| {
        Box::pin(payments_charge(for_payments.clone(), headers, request))
    });
    tasks.push(tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(payments_listener);
        let _ = tonic::transport::Server::builder()
            .serve_with_incoming(PaymentsServer(charge_fn), incoming)
            .await;
    }));
    tasks.push(tokio::spawn(run_inventory(estate.clone(), inbox)));
    let frontend_app = Router::new()
        .route("/api/v2/orders/{order_id}", get(frontend_order))
        .route("/test", post(w3c_test))
        .with_state(estate.clone());
    let (frontend, task) = serve(frontend_app, options.frontend).await?;
    tasks.push(task);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let traffic = (options.rate > 0.0)
        .then(|| tokio::spawn(traffic(frontend, options.clone(), in_flight.clone())));
    Ok(RunningEstate {
        frontend,
        providers,
        traffic,
        in_flight,
        tasks,
    })
}

/// Steady requests to the frontend; some fail, some are slow.
async fn traffic(frontend: SocketAddr, options: EstateOptions, in_flight: Arc<AtomicUsize>) {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate));
    let mut order: u64 = 10_000;
    loop {
        tick.tick().await;
        order += 1;
        let fail = u8::from(rand::random::<f64>() < options.error_ratio);
        let slow = u8::from(rand::random::<f64>() < options.slow_ratio);
        let url = format!("http://{frontend}/api/v2/orders/{order}?fail={fail}&slow={slow}");
        let client = client.clone();
        let in_flight = in_flight.clone();
        in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let _ = client.get(url).send().await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
}
