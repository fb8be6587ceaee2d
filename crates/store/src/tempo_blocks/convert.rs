//! Tempo's rows to OTLP, as Tempo's own `ParquetTraceToTempopbTrace` does (schema.go at the
//! pinned commit): generic attributes first, then the dedicated spare columns by the names
//! `meta.json` gives them, then the well-known columns (`service.name`, `cluster`, ...,
//! `http.method`, `http.url`, `http.status_code`). Event times are stored relative to the span
//! start, and end times as durations.

use threadline_otlp::proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use threadline_otlp::proto::tonic::resource::v1::Resource;
use threadline_otlp::proto::tonic::trace::v1 as otlp;

use super::meta::DedicatedNames;
use super::model;

/// The attribute names of a block's spare columns, per scope.
#[derive(Debug, Clone, Default)]
pub struct Dedicated {
    pub resource: DedicatedNames,
    pub span: DedicatedNames,
}

/// One Tempo trace row as OTLP resource spans.
pub fn trace_to_otlp(trace: &model::Trace, dedicated: &Dedicated) -> Vec<otlp::ResourceSpans> {
    trace
        .resource_spans
        .iter()
        .map(|rs| otlp::ResourceSpans {
            resource: Some(resource(&rs.resource, &dedicated.resource)),
            scope_spans: rs
                .scope_spans
                .iter()
                .map(|ss| otlp::ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: ss.scope.name.clone(),
                        version: ss.scope.version.clone(),
                        attributes: attributes(&ss.scope.attrs),
                        dropped_attributes_count: ss.scope.dropped_attributes_count as u32,
                    }),
                    spans: ss
                        .spans
                        .iter()
                        .map(|s| span(&trace.trace_id, s, &dedicated.span))
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: String::new(),
        })
        .collect()
}

fn resource(r: &model::Resource, dedicated: &DedicatedNames) -> Resource {
    let mut attrs = attributes(&r.attrs);
    push_dedicated(&mut attrs, dedicated, &r.dedicated);
    if !r.service_name.is_empty() {
        attrs.push(string_kv("service.name", &r.service_name));
    }
    let well_known = [
        ("cluster", &r.cluster),
        ("namespace", &r.namespace),
        ("pod", &r.pod),
        ("container", &r.container),
        ("k8s.cluster.name", &r.k8s_cluster_name),
        ("k8s.namespace.name", &r.k8s_namespace_name),
        ("k8s.pod.name", &r.k8s_pod_name),
        ("k8s.container.name", &r.k8s_container_name),
    ];
    for (key, value) in well_known {
        if let Some(value) = value {
            attrs.push(string_kv(key, value));
        }
    }
    Resource {
        attributes: attrs,
        dropped_attributes_count: r.dropped_attributes_count as u32,
        entity_refs: Vec::new(),
    }
}

fn span(trace_id: &[u8], s: &model::Span, dedicated: &DedicatedNames) -> otlp::Span {
    let mut attrs = attributes(&s.attrs);
    push_dedicated(&mut attrs, dedicated, &s.dedicated);
    if let Some(method) = &s.http_method {
        attrs.push(string_kv("http.method", method));
    }
    if let Some(url) = &s.http_url {
        attrs.push(string_kv("http.url", url));
    }
    if let Some(code) = s.http_status_code {
        attrs.push(KeyValue {
            key: "http.status_code".to_string(),
            value: Some(value(any_value::Value::IntValue(code))),
            ..Default::default()
        });
    }
    otlp::Span {
        trace_id: trace_id.to_vec(),
        span_id: s.span_id.clone(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent_span_id.clone(),
        flags: 0,
        name: s.name.clone(),
        kind: s.kind as i32,
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.start_time_unix_nano.saturating_add(s.duration_nano),
        attributes: attrs,
        dropped_attributes_count: s.dropped_attributes_count as u32,
        events: s
            .events
            .iter()
            .map(|e| otlp::span::Event {
                time_unix_nano: s
                    .start_time_unix_nano
                    .saturating_add(e.time_since_start_nano),
                name: e.name.clone(),
                attributes: attributes(&e.attrs),
                dropped_attributes_count: e.dropped_attributes_count as u32,
            })
            .collect(),
        dropped_events_count: s.dropped_events_count as u32,
        links: s
            .links
            .iter()
            .map(|l| otlp::span::Link {
                trace_id: l.trace_id.clone(),
                span_id: l.span_id.clone(),
                trace_state: l.trace_state.clone(),
                attributes: attributes(&l.attrs),
                dropped_attributes_count: l.dropped_attributes_count as u32,
                flags: 0,
            })
            .collect(),
        dropped_links_count: s.dropped_links_count as u32,
        status: Some(otlp::Status {
            message: s.status_message.clone(),
            code: s.status_code as i32,
        }),
    }
}

fn push_dedicated(
    attrs: &mut Vec<KeyValue>,
    names: &DedicatedNames,
    values: &model::DedicatedAttributes,
) {
    for (name, value) in names.iter().zip(values) {
        if let (Some(name), Some(value)) = (name, value) {
            attrs.push(string_kv(name, value));
        }
    }
}

fn value(v: any_value::Value) -> AnyValue {
    AnyValue { value: Some(v) }
}

fn string_kv(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value(any_value::Value::StringValue(v.to_string()))),
        ..Default::default()
    }
}

/// Tempo's `parquetToProtoAttrs`.
pub fn attributes(attrs: &[model::Attribute]) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|a| KeyValue {
            key: a.key.clone(),
            value: Some(attribute_value(a)),
            ..Default::default()
        })
        .collect()
}

fn attribute_value(a: &model::Attribute) -> AnyValue {
    use any_value::Value;
    if !a.is_array {
        let v = if let Some(s) = a.value.first() {
            Some(Value::StringValue(s.clone()))
        } else if let Some(i) = a.value_int.first() {
            Some(Value::IntValue(*i))
        } else if let Some(d) = a.value_double.first() {
            Some(Value::DoubleValue(*d))
        } else if let Some(b) = a.value_bool.first() {
            Some(Value::BoolValue(*b))
        } else {
            a.value_unsupported.as_deref().and_then(unsupported_value)
        };
        return AnyValue { value: v };
    }
    let values: Vec<AnyValue> = if !a.value.is_empty() {
        a.value
            .iter()
            .map(|s| value(Value::StringValue(s.clone())))
            .collect()
    } else if !a.value_int.is_empty() {
        a.value_int
            .iter()
            .map(|i| value(Value::IntValue(*i)))
            .collect()
    } else if !a.value_double.is_empty() {
        a.value_double
            .iter()
            .map(|d| value(Value::DoubleValue(*d)))
            .collect()
    } else {
        a.value_bool
            .iter()
            .map(|b| value(Value::BoolValue(*b)))
            .collect()
    };
    value(Value::ArrayValue(ArrayValue { values }))
}

/// A value Tempo kept as protobuf JSON of an `AnyValue` (kvlists, bytes, mixed arrays): decoded
/// with the OTLP/JSON decoder by wrapping it in a request. None (an empty value, as Tempo's
/// own failed unmarshal leaves it) if it does not decode.
fn unsupported_value(json: &str) -> Option<any_value::Value> {
    let wrapped = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"v","value":{json}}}]}}}}]}}"#
    );
    let request = threadline_otlp::json::request_from_json(wrapped.as_bytes()).ok()?;
    request
        .resource_spans
        .into_iter()
        .next()?
        .resource?
        .attributes
        .into_iter()
        .next()?
        .value?
        .value
}
