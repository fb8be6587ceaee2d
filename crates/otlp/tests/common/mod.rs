//! Test data shared by the integration tests and the benchmark: proptest strategies for random
//! requests, a deterministic "realistic" request, and helpers to compare span lists.
#![allow(dead_code)]

use proptest::collection::vec;
use proptest::prelude::*;

use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use threadline_otlp::proto::tonic::resource::v1::Resource;
use threadline_otlp::proto::tonic::trace::v1::span::{Event, Link};
use threadline_otlp::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// A span together with the resource and scope it belongs to: what survives any regrouping.
pub type FlatSpan = (
    Option<Resource>,
    String,
    Option<InstrumentationScope>,
    String,
    Span,
);

/// Every span of a request with its context, in order.
pub fn flatten(request: &ExportTraceServiceRequest) -> Vec<FlatSpan> {
    let mut spans = Vec::new();
    for resource in &request.resource_spans {
        for scope in &resource.scope_spans {
            for span in &scope.spans {
                spans.push((
                    resource.resource.clone(),
                    resource.schema_url.clone(),
                    scope.scope.clone(),
                    scope.schema_url.clone(),
                    span.clone(),
                ));
            }
        }
    }
    spans
}

pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    flatten(request).len()
}

/// OTLP: an id is valid when it is present and not all zeros.
pub fn has_valid_ids(span: &Span) -> bool {
    span.trace_id.iter().any(|&b| b != 0) && span.span_id.iter().any(|&b| b != 0)
}

// ---- proptest strategies ----

fn arb_id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(any::<u8>(), len),
        1 => Just(vec![0; len]),
        1 => Just(Vec::new()),
    ]
}

/// Ids that are always valid (non-zero, right length).
fn arb_valid_id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), len).prop_map(|mut id| {
        id[0] |= 1;
        id
    })
}

pub fn arb_any_value() -> impl Strategy<Value = AnyValue> {
    use any_value::Value as V;
    let leaf = prop_oneof![
        ".{0,12}".prop_map(V::StringValue),
        any::<bool>().prop_map(V::BoolValue),
        any::<i64>().prop_map(V::IntValue),
        any::<f64>()
            .prop_filter("NaN never compares equal", |d| !d.is_nan())
            .prop_map(V::DoubleValue),
        vec(any::<u8>(), 0..8).prop_map(V::BytesValue),
    ]
    .prop_map(|value| AnyValue { value: Some(value) });
    let leaf = prop_oneof![9 => leaf, 1 => Just(AnyValue { value: None })];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(V::ArrayValue(ArrayValue { values }))
            }),
            vec(("[a-z.]{1,8}", inner), 0..4).prop_map(|pairs| AnyValue {
                value: Some(V::KvlistValue(KeyValueList {
                    values: pairs
                        .into_iter()
                        .map(|(key, value)| KeyValue {
                            key,
                            value: Some(value),
                            key_strindex: 0,
                        })
                        .collect(),
                }))
            }),
        ]
    })
}

pub fn arb_attributes(max: usize) -> impl Strategy<Value = Vec<KeyValue>> {
    vec(
        (
            "[a-z.]{1,10}",
            proptest::option::weighted(0.9, arb_any_value()),
        ),
        0..max,
    )
    .prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(key, value)| KeyValue {
                key,
                value,
                key_strindex: 0,
            })
            .collect()
    })
}

fn arb_span_with_ids(
    trace_id: BoxedStrategy<Vec<u8>>,
    span_id: BoxedStrategy<Vec<u8>>,
) -> impl Strategy<Value = Span> {
    let ids = (trace_id, span_id, arb_id(8), ".{0,10}", ".{0,16}", 0..6i32);
    let times = (any::<u64>(), any::<u64>(), any::<u32>(), 0..3u32);
    let events = vec(
        (any::<u64>(), ".{0,8}", arb_attributes(2)).prop_map(
            |(time_unix_nano, name, attributes)| Event {
                time_unix_nano,
                name,
                attributes,
                dropped_attributes_count: 0,
            },
        ),
        0..2,
    );
    let links = vec(
        (arb_id(16), arb_id(8), any::<u32>()).prop_map(|(trace_id, span_id, flags)| Link {
            trace_id,
            span_id,
            trace_state: String::new(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            flags,
        }),
        0..2,
    );
    let status = proptest::option::of(
        (".{0,8}", 0..3i32).prop_map(|(message, code)| Status { message, code }),
    );
    (ids, times, arb_attributes(5), events, links, status).prop_map(
        |(
            (trace_id, span_id, parent_span_id, trace_state, name, kind),
            (start, end, flags, dropped),
            attributes,
            events,
            links,
            status,
        )| Span {
            trace_id,
            span_id,
            trace_state,
            parent_span_id,
            flags,
            name,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            dropped_attributes_count: dropped,
            events,
            dropped_events_count: dropped,
            links,
            dropped_links_count: 0,
            status,
        },
    )
}

/// Spans whose ids are sometimes all zeros or empty (to be rejected).
pub fn arb_span() -> BoxedStrategy<Span> {
    arb_span_with_ids(arb_id(16).boxed(), arb_id(8).boxed()).boxed()
}

/// Spans with valid ids, drawn from a small set of trace ids so traces have several spans.
pub fn arb_valid_span() -> BoxedStrategy<Span> {
    let trace_id = prop_oneof![Just(vec![1u8; 16]), Just(vec![2u8; 16]), arb_valid_id(16)];
    arb_span_with_ids(trace_id.boxed(), arb_valid_id(8).boxed()).boxed()
}

fn arb_request_with(span: BoxedStrategy<Span>) -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope = (
        proptest::option::of(("[a-z./]{0,10}", "[0-9.]{0,5}", arb_attributes(2))),
        vec(span, 0..5),
        "[a-z:/.]{0,12}",
    )
        .prop_map(|(scope, spans, schema_url)| ScopeSpans {
            scope: scope.map(|(name, version, attributes)| InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count: 0,
            }),
            spans,
            schema_url,
        });
    let resource = (
        proptest::option::of(arb_attributes(4)),
        vec(scope, 0..4),
        "[a-z:/.]{0,12}",
    )
        .prop_map(|(attributes, scope_spans, schema_url)| ResourceSpans {
            resource: attributes.map(|attributes| Resource {
                attributes,
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }),
            scope_spans,
            schema_url,
        });
    vec(resource, 0..4).prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

/// Random requests; some spans have invalid (zero or empty) ids.
pub fn arb_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    arb_request_with(arb_span())
}

/// Random requests whose spans all have valid ids.
pub fn arb_valid_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    arb_request_with(arb_valid_span())
}

// ---- a realistic request ----

fn string_attribute(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        key_strindex: 0,
    }
}

/// A request shaped like real instrumentation output: `resources` services, each with
/// `traces_per_resource` traces of 10 spans carrying 8 attributes (HTTP/DB semantic conventions).
pub fn realistic_request(
    resources: usize,
    traces_per_resource: usize,
) -> ExportTraceServiceRequest {
    // Deterministic pseudo-random ids (splitmix64), so runs are comparable.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let start = 1_700_000_000_000_000_000u64;
    let resource_spans = (0..resources)
        .map(|r| {
            let spans = (0..traces_per_resource)
                .flat_map(|_| {
                    let trace_id: Vec<u8> = [next().to_le_bytes(), next().to_le_bytes()].concat();
                    let root_id = next().to_le_bytes().to_vec();
                    (0..10)
                        .map(|s| Span {
                            trace_id: trace_id.clone(),
                            span_id: if s == 0 {
                                root_id.clone()
                            } else {
                                next().to_le_bytes().to_vec()
                            },
                            parent_span_id: if s == 0 { Vec::new() } else { root_id.clone() },
                            name: format!("GET /api/v1/orders/{{id}}/items/{s}"),
                            kind: if s == 0 { 2 } else { 3 },
                            start_time_unix_nano: start + s * 1_000,
                            end_time_unix_nano: start + s * 1_000 + 25_000_000,
                            attributes: vec![
                                string_attribute("http.request.method", "GET"),
                                string_attribute("url.path", format!("/api/v1/orders/{s}")),
                                int_attribute("http.response.status_code", 200),
                                string_attribute("server.address", "orders.internal.example"),
                                int_attribute("server.port", 8080),
                                string_attribute("network.protocol.version", "1.1"),
                                string_attribute("user_agent.original", "okhttp/4.12.0"),
                                string_attribute("db.system", "postgresql"),
                            ],
                            status: Some(Status {
                                message: String::new(),
                                code: 0,
                            }),
                            ..Span::default()
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        string_attribute("service.name", format!("service-{r}")),
                        string_attribute("service.version", "1.4.2"),
                        string_attribute("deployment.environment.name", "production"),
                        string_attribute("host.name", format!("ip-10-0-0-{r}.ec2.internal")),
                        string_attribute("telemetry.sdk.language", "java"),
                    ],
                    dropped_attributes_count: 0,
                    entity_refs: Vec::new(),
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.okhttp-3.0".to_owned(),
                        version: "2.10.0-alpha".to_owned(),
                        attributes: Vec::new(),
                        dropped_attributes_count: 0,
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.24.0".to_owned(),
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}
