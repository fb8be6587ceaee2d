//! From stored OTLP bytes to what search needs: a per-trace summary (kept in block indexes) and
//! the TraceQL span model (built only for traces a search may match).

use std::collections::BTreeSet;
use std::sync::Arc;

use threadline_otlp::wire::{FieldIter, WireValue};
use threadline_otlp::{AnyValueView, TraceData};
use threadline_traceql::model::{
    Event, InstrumentationScope, Link, Span, SpanKind, StatusCode, Trace, Value,
};

/// What a block index keeps per trace, so that most searches never open its spans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceSummary {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub root_service: String,
    pub root_name: String,
    pub has_error: bool,
    pub spans: u32,
    pub services: BTreeSet<String>,
}

impl TraceSummary {
    /// Folds `data` (spans of one trace) into the summary.
    pub fn add(&mut self, data: &TraceData) {
        data.for_each_span(|resource, _scope, span| {
            let e = span.essentials();
            if self.spans == 0 || e.start_time_unix_nano < self.start_unix_nano {
                self.start_unix_nano = e.start_time_unix_nano;
            }
            self.end_unix_nano = self.end_unix_nano.max(e.end_time_unix_nano);
            self.spans += 1;
            self.has_error |= e.status_code == 2;
            let service = resource
                .attribute("service.name")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            if !self.services.contains(service) {
                self.services.insert(service.to_string());
            }
            if !e.has_parent {
                self.root_service = service.to_string();
                self.root_name = span.name().to_string();
            }
        });
    }

    pub fn of(data: &TraceData) -> TraceSummary {
        let mut summary = TraceSummary::default();
        summary.add(data);
        summary
    }

    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }
}

pub(crate) fn value(view: AnyValueView<'_>) -> Option<Value> {
    Some(match view {
        AnyValueView::String(s) => Value::Str(s.to_string()),
        AnyValueView::Bool(b) => Value::Bool(b),
        AnyValueView::Int(i) => Value::Int(i),
        AnyValueView::Double(d) => Value::Float(d),
        AnyValueView::Bytes(b) => Value::Str(hex::encode(b)),
        AnyValueView::Raw(raw) => return array(raw),
        AnyValueView::Empty => return None,
    })
}

/// An `AnyValue` holding an `ArrayValue` (field 5) as a model array; None for key-value lists.
fn array(any_value: &[u8]) -> Option<Value> {
    let mut items = None;
    for (number, field) in FieldIter::new(any_value).map_while(Result::ok) {
        match (number, field) {
            (5, WireValue::Bytes(array)) => {
                items = Some(
                    FieldIter::new(array)
                        .map_while(Result::ok)
                        .filter_map(|(n, f)| match (n, f) {
                            (1, WireValue::Bytes(item)) => value(AnyValueView::from_encoded(item)),
                            _ => None,
                        })
                        .collect(),
                )
            }
            (1..=4 | 6..=8, _) => items = None,
            _ => {}
        }
    }
    items.map(Value::Array)
}

pub(crate) fn kind(number: i32) -> SpanKind {
    match number {
        1 => SpanKind::Internal,
        2 => SpanKind::Server,
        3 => SpanKind::Client,
        4 => SpanKind::Producer,
        5 => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }
}

pub(crate) fn status_code(code: i32) -> StatusCode {
    match code {
        1 => StatusCode::Ok,
        2 => StatusCode::Error,
        _ => StatusCode::Unset,
    }
}

/// Attributes in the model's shape.
type Attributes = Vec<(String, Value)>;

/// The spans of `data` in TraceQL's model.
///
/// Searches call this for every candidate trace, so each span's fields are read in one pass and
/// each resource's attributes are decoded once (the views' accessors would walk a span's fields
/// once per field).
pub fn to_model(trace_id: [u8; 16], data: &TraceData) -> Trace {
    let mut spans = Vec::with_capacity(data.span_count());
    // A trace has a few distinct resources and scopes, repeated in many `ResourceSpans` (one per
    // part the trace arrived in): each is decoded once, found again by its encoded bytes.
    let mut resources: Vec<(&[u8], Attributes)> = Vec::new();
    let mut scopes: Vec<(&[u8], Arc<InstrumentationScope>)> = Vec::new();
    data.for_each_span(|resource, scope, span| {
        let encoded = resource.raw();
        let known = resources.iter().position(|(raw, _)| *raw == encoded);
        let index = known.unwrap_or_else(|| {
            let attributes = resource
                .attributes()
                .filter_map(|(k, v)| Some((k.to_string(), value(v)?)))
                .collect();
            resources.push((encoded, attributes));
            resources.len() - 1
        });
        let encoded_scope = scope.raw();
        let known_scope = scopes.iter().position(|(raw, _)| *raw == encoded_scope);
        let scope_index = known_scope.unwrap_or_else(|| {
            let model = InstrumentationScope {
                name: scope.name().to_string(),
                version: scope.version().to_string(),
                attributes: scope
                    .attributes()
                    .filter_map(|(k, v)| Some((k.to_string(), value(v)?)))
                    .collect(),
            };
            scopes.push((encoded_scope, Arc::new(model)));
            scopes.len() - 1
        });
        let mut model = span_model(trace_id, span.raw(), &resources[index].1);
        model.scope = scopes[scope_index].1.clone();
        spans.push(model);
    });
    Trace { trace_id, spans }
}

/// One span, its fields read in a single pass ("last one wins" for repeated singular fields, as
/// protobuf and the views).
fn span_model(trace_id: [u8; 16], raw: &[u8], resource_attributes: &[(String, Value)]) -> Span {
    let mut span = Span {
        trace_id,
        resource_attributes: resource_attributes.to_vec(),
        ..Default::default()
    };
    let text = |bytes: &[u8]| std::str::from_utf8(bytes).unwrap_or_default().to_string();
    for (number, field) in FieldIter::new(raw).map_while(Result::ok) {
        match (number, field) {
            (2, WireValue::Bytes(id)) => span.span_id = <[u8; 8]>::try_from(id).unwrap_or([0; 8]),
            (4, WireValue::Bytes(id)) => {
                span.parent_span_id = <[u8; 8]>::try_from(id).ok().filter(|id| *id != [0; 8]);
            }
            (5, WireValue::Bytes(name)) => span.name = text(name),
            (6, WireValue::Varint(number)) => span.kind = kind(number as i32),
            (7, WireValue::Fixed64(start)) => span.start_unix_nano = start,
            (8, WireValue::Fixed64(end)) => span.end_unix_nano = end,
            (9, WireValue::Bytes(key_value)) => {
                if let Some(attribute) = attribute(key_value) {
                    span.attributes.push(attribute);
                }
            }
            (11, WireValue::Bytes(event)) => span.events.push(event_model(event)),
            (13, WireValue::Bytes(link)) => span.links.push(link_model(link)),
            (15, WireValue::Bytes(status)) => {
                for (number, field) in FieldIter::new(status).map_while(Result::ok) {
                    match (number, field) {
                        (2, WireValue::Bytes(message)) => span.status_message = text(message),
                        (3, WireValue::Varint(code)) => span.status = status_code(code as i32),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    span
}

/// A `KeyValue` message as a model attribute (None for values the model has no kind for).
fn attribute(key_value: &[u8]) -> Option<(String, Value)> {
    let mut key: &[u8] = &[];
    let mut any_value = AnyValueView::Empty;
    for (number, field) in FieldIter::new(key_value).map_while(Result::ok) {
        match (number, field) {
            (1, WireValue::Bytes(k)) => key = k,
            (2, WireValue::Bytes(v)) => any_value = AnyValueView::from_encoded(v),
            _ => {}
        }
    }
    let key = std::str::from_utf8(key).unwrap_or_default();
    Some((key.to_string(), value(any_value)?))
}

/// A `Span.Event` message.
fn event_model(raw: &[u8]) -> Event {
    let mut event = Event::default();
    for (number, field) in FieldIter::new(raw).map_while(Result::ok) {
        match (number, field) {
            (1, WireValue::Fixed64(time)) => event.time_unix_nano = time,
            (2, WireValue::Bytes(name)) => {
                event.name = std::str::from_utf8(name).unwrap_or_default().to_string()
            }
            (3, WireValue::Bytes(key_value)) => event.attributes.extend(attribute(key_value)),
            _ => {}
        }
    }
    event
}

/// A `Span.Link` message.
fn link_model(raw: &[u8]) -> Link {
    let mut link = Link::default();
    for (number, field) in FieldIter::new(raw).map_while(Result::ok) {
        match (number, field) {
            (1, WireValue::Bytes(id)) => {
                link.trace_id = <[u8; 16]>::try_from(id).unwrap_or([0; 16])
            }
            (2, WireValue::Bytes(id)) => link.span_id = <[u8; 8]>::try_from(id).unwrap_or([0; 8]),
            (4, WireValue::Bytes(key_value)) => link.attributes.extend(attribute(key_value)),
            _ => {}
        }
    }
    link
}
