//! Realistic synthetic traces: a small shop (frontend → orders → inventory / payments, each with
//! its own database) instrumented by the usual OpenTelemetry libraries.
//!
//! Every trace has exactly [`SPANS_PER_TRACE`] spans. This module builds them as prost structs;
//! [`crate::pool`] encodes them once and later only patches ids and timestamps.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use rand::rngs::SmallRng;
use rand::Rng;

/// Spans in every generated trace.
pub const SPANS_PER_TRACE: usize = 10;

/// Roots of slow traces last at least this long (nanoseconds).
pub const SLOW_ROOT_MIN_NANOS: u64 = 2_200_000_000;
/// Roots of ordinary traces last at most this long (nanoseconds).
pub const NORMAL_ROOT_MAX_NANOS: u64 = 450_000_000;

/// Replicas (pods) per service: each one is a distinct resource.
pub(crate) const PODS_PER_SERVICE: usize = 3;

/// The services of the shop, in the order of [`Service::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    Frontend,
    Orders,
    Inventory,
    Payments,
}

impl Service {
    pub(crate) const ALL: [Service; 4] = [
        Service::Frontend,
        Service::Orders,
        Service::Inventory,
        Service::Payments,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Service::Frontend => "frontend",
            Service::Orders => "orders",
            Service::Inventory => "inventory",
            Service::Payments => "payments",
        }
    }

    fn version(self) -> &'static str {
        match self {
            Service::Frontend => "2.14.1",
            Service::Orders => "1.9.3",
            Service::Inventory => "0.22.7",
            Service::Payments => "3.2.0",
        }
    }

    /// (sdk language, sdk version) as reported by `telemetry.sdk.*`.
    fn sdk(self) -> (&'static str, &'static str) {
        match self {
            Service::Frontend => ("nodejs", "1.30.1"),
            Service::Orders => ("java", "1.48.0"),
            Service::Inventory => ("python", "1.31.1"),
            Service::Payments => ("go", "1.35.0"),
        }
    }

    fn http_scope(self) -> (&'static str, &'static str) {
        match self {
            Service::Frontend => ("@opentelemetry/instrumentation-http", "0.57.2"),
            Service::Orders => ("io.opentelemetry.spring-webmvc-6.0", "2.12.0-alpha"),
            Service::Inventory => ("opentelemetry.instrumentation.flask", "0.52b0"),
            Service::Payments => (
                "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
                "0.60.0",
            ),
        }
    }

    fn db_scope(self) -> (&'static str, &'static str) {
        match self {
            Service::Frontend => ("@opentelemetry/instrumentation-pg", "0.51.0"),
            Service::Orders => ("io.opentelemetry.jdbc", "2.12.0-alpha"),
            Service::Inventory => ("opentelemetry.instrumentation.redis", "0.52b0"),
            Service::Payments => ("github.com/XSAM/otelsql", "0.38.0"),
        }
    }

    fn port(self) -> i64 {
        match self {
            Service::Frontend => 8080,
            Service::Orders => 8081,
            Service::Inventory => 5000,
            Service::Payments => 9090,
        }
    }
}

/// Which instrumentation library produced a span: resources hold one scope per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScopeKind {
    Http,
    Database,
}

impl ScopeKind {
    pub(crate) const ALL: [ScopeKind; 2] = [ScopeKind::Http, ScopeKind::Database];

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The resource describing one pod of `service`.
pub(crate) fn resource(service: Service, pod: usize) -> Resource {
    let name = service.name();
    let (language, sdk_version) = service.sdk();
    let pod_name = format!(
        "{name}-7d9f8c6b5-{}",
        POD_SUFFIXES[pod % POD_SUFFIXES.len()]
    );
    Resource {
        attributes: vec![
            string("service.name", name),
            string("service.version", service.version()),
            string("service.namespace", "shop"),
            string(
                "service.instance.id",
                format!("6f1c2a9e-{:04x}-4b7e-9c1d-{:012x}", service.index(), pod),
            ),
            string("deployment.environment.name", "production"),
            string("k8s.cluster.name", "prod-eu-west-1"),
            string("k8s.namespace.name", "shop"),
            string("k8s.deployment.name", name),
            string("k8s.pod.name", pod_name),
            string(
                "k8s.pod.uid",
                format!(
                    "3b1f0d2c-{:04x}-4e6a-8f5b-{:012x}",
                    service.index(),
                    pod + 1
                ),
            ),
            string(
                "k8s.node.name",
                format!(
                    "ip-10-0-{}-{}.eu-west-1.compute.internal",
                    pod + 1,
                    17 + service.index()
                ),
            ),
            string("container.name", name),
            string("telemetry.sdk.name", "opentelemetry"),
            string("telemetry.sdk.language", language),
            string("telemetry.sdk.version", sdk_version),
        ],
        ..Default::default()
    }
}

pub(crate) fn scope(service: Service, kind: ScopeKind) -> InstrumentationScope {
    let (name, version) = match kind {
        ScopeKind::Http => service.http_scope(),
        ScopeKind::Database => service.db_scope(),
    };
    InstrumentationScope {
        name: name.to_owned(),
        version: version.to_owned(),
        ..Default::default()
    }
}

const POD_SUFFIXES: [&str; 3] = ["x2k9p", "m4q7z", "b8w3n"];

/// What a request to the frontend does; decides routes and database statements.
#[derive(Clone, Copy)]
struct Scenario {
    method: &'static str,
    frontend_route: &'static str,
    orders_method: &'static str,
    orders_route: &'static str,
    orders_operation: &'static str,
    orders_statement: &'static str,
    status_code: i64,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        method: "POST",
        frontend_route: "/api/checkout",
        orders_method: "POST",
        orders_route: "/orders",
        orders_operation: "INSERT",
        orders_statement:
            "INSERT INTO orders (id, customer_id, total_cents, created_at) VALUES (?, ?, ?, ?)",
        status_code: 201,
    },
    Scenario {
        method: "GET",
        frontend_route: "/api/orders/{order_id}",
        orders_method: "GET",
        orders_route: "/orders/{order_id}",
        orders_operation: "SELECT",
        orders_statement: "SELECT id, customer_id, total_cents, status FROM orders WHERE id = ?",
        status_code: 200,
    },
    Scenario {
        method: "PUT",
        frontend_route: "/api/cart/{cart_id}/items",
        orders_method: "PUT",
        orders_route: "/carts/{cart_id}",
        orders_operation: "UPDATE",
        orders_statement: "UPDATE carts SET items = ?, updated_at = ? WHERE id = ?",
        status_code: 200,
    },
];

/// One generated span plus where it belongs.
pub(crate) struct GeneratedSpan {
    pub service: Service,
    pub pod: usize,
    pub scope: ScopeKind,
    pub span: Span,
}

/// How one trace should look.
pub(crate) struct TraceShape {
    /// One span gets status ERROR.
    pub error: bool,
    /// The root lasts longer than 2 s.
    pub slow: bool,
    /// When the root span ends (unix nanoseconds).
    pub end_time: u64,
}

/// Static layout of the 10 spans: (service, scope, kind, parent index, start and end as fractions
/// of the root duration). Children always lie inside their parent.
const LAYOUT: [(Service, ScopeKind, SpanKind, Option<usize>, f64, f64); SPANS_PER_TRACE] = [
    (
        Service::Frontend,
        ScopeKind::Http,
        SpanKind::Server,
        None,
        0.0,
        1.0,
    ),
    (
        Service::Frontend,
        ScopeKind::Http,
        SpanKind::Client,
        Some(0),
        0.02,
        0.97,
    ),
    (
        Service::Orders,
        ScopeKind::Http,
        SpanKind::Server,
        Some(1),
        0.03,
        0.96,
    ),
    (
        Service::Orders,
        ScopeKind::Database,
        SpanKind::Client,
        Some(2),
        0.05,
        0.15,
    ),
    (
        Service::Orders,
        ScopeKind::Http,
        SpanKind::Client,
        Some(2),
        0.17,
        0.45,
    ),
    (
        Service::Inventory,
        ScopeKind::Http,
        SpanKind::Server,
        Some(4),
        0.18,
        0.44,
    ),
    (
        Service::Inventory,
        ScopeKind::Database,
        SpanKind::Client,
        Some(5),
        0.20,
        0.40,
    ),
    (
        Service::Orders,
        ScopeKind::Http,
        SpanKind::Client,
        Some(2),
        0.47,
        0.94,
    ),
    (
        Service::Payments,
        ScopeKind::Http,
        SpanKind::Server,
        Some(7),
        0.48,
        0.93,
    ),
    (
        Service::Payments,
        ScopeKind::Database,
        SpanKind::Client,
        Some(8),
        0.55,
        0.90,
    ),
];

/// Index (within the trace) of the span that carries the error in error traces: the payments
/// database insert, which fails with a deadlock.
pub(crate) const ERROR_SPAN_INDEX: usize = 9;

/// Placeholder trace id for template trace `trace`: unique within a template and recoverable
/// from the encoded bytes (see [`crate::pool`]).
pub(crate) fn template_trace_id(trace: usize) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&(trace as u64 + 1).to_be_bytes());
    id
}

/// Placeholder span id encoding (trace index, span index), so the pool can tell from the
/// encoded bytes which span of which trace it is looking at.
pub(crate) fn template_span_id(trace: usize, span: usize) -> [u8; 8] {
    (((trace as u64 + 1) << 8) | (span as u64 + 1)).to_be_bytes()
}

/// Inverse of [`template_span_id`].
pub(crate) fn decode_template_span_id(id: &[u8]) -> Option<(usize, usize)> {
    let bytes: [u8; 8] = id.try_into().ok()?;
    let value = u64::from_be_bytes(bytes);
    let trace = (value >> 8).checked_sub(1)?;
    let span = (value & 0xff).checked_sub(1)?;
    Some((usize::try_from(trace).ok()?, usize::try_from(span).ok()?))
}

/// Generates the 10 spans of trace number `trace` (its index within the request template).
pub(crate) fn generate_trace(
    rng: &mut SmallRng,
    trace: usize,
    shape: &TraceShape,
) -> Vec<GeneratedSpan> {
    let scenario = SCENARIOS[rng.random_range(0..SCENARIOS.len())];
    let root_duration = if shape.slow {
        rng.random_range(SLOW_ROOT_MIN_NANOS..6_000_000_000)
    } else {
        // Mostly fast, with a long-ish tail like real request latencies.
        let base = rng.random_range(8_000_000..60_000_000u64);
        let tail = if rng.random_bool(0.1) {
            rng.random_range(0..(NORMAL_ROOT_MAX_NANOS - 60_000_000))
        } else {
            0
        };
        base + tail
    };
    let root_start = shape.end_time - root_duration;
    let pods: [usize; 4] = std::array::from_fn(|_| rng.random_range(0..PODS_PER_SERVICE));

    let order_id = rng.random_range(100_000..999_999u32);
    let cart_id = rng.random_range(10_000..99_999u32);
    let sku = format!("SKU-{:05}", rng.random_range(0..40_000u32));
    let client_ip = format!(
        "10.42.{}.{}",
        rng.random_range(0..8u8),
        rng.random_range(2..250u8)
    );
    let frontend_path = scenario
        .frontend_route
        .replace("{order_id}", &order_id.to_string())
        .replace("{cart_id}", &cart_id.to_string());
    let orders_path = scenario
        .orders_route
        .replace("{order_id}", &order_id.to_string())
        .replace("{cart_id}", &cart_id.to_string());
    let inventory_path = format!("/inventory/{sku}");
    let user_agent = USER_AGENTS[rng.random_range(0..USER_AGENTS.len())];

    let mut spans = Vec::with_capacity(SPANS_PER_TRACE);
    for (index, &(service, scope, kind, parent, start_fraction, end_fraction)) in
        LAYOUT.iter().enumerate()
    {
        let pod = pods[service.index()];
        let peer_ip =
            |callee: Service| format!("10.42.{}.{}", 3 + callee.index(), 10 + pods[callee.index()]);
        let (name, attributes) = match index {
            0 => server_span(
                scenario.method,
                scenario.frontend_route,
                &frontend_path,
                "shop.example.com",
                443,
                scenario.status_code,
                &client_ip,
                user_agent,
            ),
            1 => client_span(
                scenario.orders_method,
                Service::Orders,
                scenario.orders_route,
                &orders_path,
                scenario.status_code,
                &peer_ip(Service::Orders),
            ),
            2 => server_span(
                scenario.orders_method,
                scenario.orders_route,
                &orders_path,
                "orders.shop.svc.cluster.local",
                Service::Orders.port(),
                scenario.status_code,
                &peer_ip(Service::Frontend),
                "node-fetch/1.0",
            ),
            3 => db_span(
                "postgresql",
                "orders",
                scenario.orders_operation,
                if scenario.orders_route.starts_with("/carts") { "carts" } else { "orders" },
                scenario.orders_statement,
                "orders-db.shop.svc.cluster.local",
                5432,
            ),
            4 => client_span(
                "GET",
                Service::Inventory,
                "/inventory/{sku}",
                &inventory_path,
                200,
                &peer_ip(Service::Inventory),
            ),
            5 => server_span(
                "GET",
                "/inventory/{sku}",
                &inventory_path,
                "inventory.shop.svc.cluster.local",
                Service::Inventory.port(),
                200,
                &peer_ip(Service::Orders),
                "Java-http-client/21.0.5",
            ),
            6 => db_span(
                "redis",
                "0",
                "HGETALL",
                "stock",
                &format!("HGETALL stock:{sku}"),
                "inventory-cache.shop.svc.cluster.local",
                6379,
            ),
            7 => client_span(
                "POST",
                Service::Payments,
                "/payments/authorize",
                "/payments/authorize",
                200,
                &peer_ip(Service::Payments),
            ),
            8 => server_span(
                "POST",
                "/payments/authorize",
                "/payments/authorize",
                "payments.shop.svc.cluster.local",
                Service::Payments.port(),
                200,
                &peer_ip(Service::Orders),
                "Java-http-client/21.0.5",
            ),
            _ => db_span(
                "postgresql",
                "payments",
                "INSERT",
                "authorizations",
                "INSERT INTO authorizations (id, order_id, amount_cents, card_token) VALUES ($1, $2, $3, $4)",
                "payments-db.shop.svc.cluster.local",
                5432,
            ),
        };

        let start = root_start + fraction_of(root_duration, start_fraction);
        let end = root_start + fraction_of(root_duration, end_fraction);
        let mut span = Span {
            trace_id: template_trace_id(trace).to_vec(),
            span_id: template_span_id(trace, index).to_vec(),
            parent_span_id: parent
                .map(|p| template_span_id(trace, p).to_vec())
                .unwrap_or_default(),
            // W3C "sampled" flag plus the "has is_remote" bit, as current SDKs send.
            flags: 0x101,
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            ..Default::default()
        };
        if shape.error && index == ERROR_SPAN_INDEX {
            mark_failed(&mut span);
        }
        spans.push(GeneratedSpan {
            service,
            pod,
            scope,
            span,
        });
    }
    spans
}

const USER_AGENTS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "shop-android/5.12.0 okhttp/4.12.0",
];

fn fraction_of(duration: u64, fraction: f64) -> u64 {
    (duration as f64 * fraction) as u64
}

/// A database deadlock: status ERROR, `error.type` and an `exception` event in the middle of the span.
fn mark_failed(span: &mut Span) {
    let message = "ERROR: deadlock detected (SQLSTATE 40P01)";
    span.status = Some(Status {
        code: StatusCode::Error as i32,
        message: message.to_owned(),
    });
    span.attributes.push(string("error.type", "40P01"));
    let middle =
        span.start_time_unix_nano + (span.end_time_unix_nano - span.start_time_unix_nano) / 2;
    span.events.push(Event {
        time_unix_nano: middle,
        name: "exception".to_owned(),
        attributes: vec![
            string("exception.type", "*pgconn.PgError"),
            string("exception.message", message),
        ],
        ..Default::default()
    });
}

#[allow(clippy::too_many_arguments)]
fn server_span(
    method: &str,
    route: &str,
    path: &str,
    host: &str,
    port: i64,
    status_code: i64,
    client_address: &str,
    user_agent: &str,
) -> (String, Vec<KeyValue>) {
    (
        format!("{method} {route}"),
        vec![
            string("http.request.method", method),
            string("http.route", route),
            string("url.path", path),
            string("url.scheme", if port == 443 { "https" } else { "http" }),
            int("http.response.status_code", status_code),
            string("server.address", host),
            int("server.port", port),
            string("client.address", client_address),
            string("user_agent.original", user_agent),
            string("network.protocol.version", "1.1"),
        ],
    )
}

fn client_span(
    method: &str,
    callee: Service,
    url_template: &str,
    path: &str,
    status_code: i64,
    peer_address: &str,
) -> (String, Vec<KeyValue>) {
    let host = format!("{}.shop.svc.cluster.local", callee.name());
    (
        format!("{method} {url_template}"),
        vec![
            string("http.request.method", method),
            string("url.full", format!("http://{host}:{}{path}", callee.port())),
            string("url.template", url_template),
            string("server.address", host),
            int("server.port", callee.port()),
            int("http.response.status_code", status_code),
            string("network.peer.address", peer_address),
            int("network.peer.port", callee.port()),
        ],
    )
}

fn db_span(
    system: &str,
    namespace: &str,
    operation: &str,
    collection: &str,
    statement: &str,
    host: &str,
    port: i64,
) -> (String, Vec<KeyValue>) {
    (
        format!("{operation} {collection}"),
        vec![
            string("db.system.name", system),
            string("db.namespace", namespace),
            string("db.operation.name", operation),
            string("db.collection.name", collection),
            string("db.query.text", statement),
            string("server.address", host),
            int("server.port", port),
            string("network.peer.address", "10.42.9.31"),
        ],
    )
}

fn string(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}
