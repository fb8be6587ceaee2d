//! What the processors read of a span, from either source: OTLP bytes on the ingest path (read
//! once per span, attributes looked up only when a processor asks) or the TraceQL model of a
//! stored trace (the service-graph API).

use std::borrow::Cow;

use threadline_otlp::wire::{FieldIter, WireValue};
use threadline_otlp::{AnyValueView, EncodedValue, SpanView};
use threadline_traceql::model::{self, Value};

pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;
pub const KIND_PRODUCER: i32 = 4;
pub const KIND_CONSUMER: i32 = 5;
pub const STATUS_ERROR: i32 = 2;

/// The fields every processor reads, decoded in one pass.
#[derive(Debug, Clone, Default)]
pub struct Essentials<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: &'a str,
    pub kind: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub status_code: i32,
    pub status_message: &'a str,
    pub service: &'a str,
    /// Encoded size of the span (Tempo's `traces_spanmetrics_size_total`).
    pub size: usize,
}

impl Essentials<'_> {
    pub fn duration_seconds(&self) -> f64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano) as f64 / 1e9
    }

    pub fn failed(&self) -> bool {
        self.status_code == STATUS_ERROR
    }
}

/// A span the processors can ask for attributes.
pub trait SpanSource<'a> {
    fn essentials(&self) -> &Essentials<'a>;
    fn span_attribute(&self, key: &str) -> Option<Cow<'a, str>>;
    fn resource_attribute(&self, key: &str) -> Option<Cow<'a, str>>;

    /// Span attributes first, then the resource's (Tempo's `FindAttributeValue(key, res, span)`
    /// looks in the resource first; a span attribute is the more specific, so it wins here).
    fn attribute(&self, key: &str) -> Option<Cow<'a, str>> {
        self.span_attribute(key)
            .or_else(|| self.resource_attribute(key))
    }
}

fn view_text(value: AnyValueView<'_>) -> Option<Cow<'_, str>> {
    Some(match value {
        AnyValueView::String(s) => Cow::Borrowed(s),
        AnyValueView::Bool(b) => Cow::Owned(b.to_string()),
        AnyValueView::Int(i) => Cow::Owned(i.to_string()),
        AnyValueView::Double(d) => Cow::Owned(d.to_string()),
        AnyValueView::Bytes(b) => Cow::Owned(hex::encode(b)),
        AnyValueView::Raw(_) | AnyValueView::Empty => return None,
    })
}

/// Attributes decoded from OTLP bytes once, looked up many times: the processors ask up to a
/// dozen keys per span (peer and database attributes, dimensions, filters), and scanning the
/// encoded attributes for each made the generator cost as much CPU as the rest of ingest
/// (bench/generator.py: +90-150% CPU per span before, see BENCHMARKS.md).
/// Keys are kept as bytes and values encoded: only a match is decoded.
pub type DecodedAttributes<'a> = Vec<(&'a [u8], EncodedValue<'a>)>;

fn lookup<'a>(attributes: &[(&'a [u8], EncodedValue<'a>)], key: &str) -> Option<Cow<'a, str>> {
    attributes
        .iter()
        .find(|(k, _)| *k == key.as_bytes())
        .and_then(|(_, v)| view_text(v.decode()))
}

/// A span of OTLP bytes, with its resource's attributes decoded by the caller (once per
/// resource) and its own decoded on the first lookup.
pub struct WireSpan<'a, 'r> {
    pub essentials: Essentials<'a>,
    span: SpanView<'a>,
    span_attributes: std::cell::OnceCell<DecodedAttributes<'a>>,
    resource_attributes: &'r [(&'a [u8], EncodedValue<'a>)],
}

impl<'a, 'r> WireSpan<'a, 'r> {
    pub fn new(
        resource_attributes: &'r [(&'a [u8], EncodedValue<'a>)],
        span: SpanView<'a>,
        service: &'a str,
    ) -> Self {
        let raw = span.raw();
        let mut e = Essentials {
            service,
            size: raw.len(),
            ..Default::default()
        };
        for (number, field) in FieldIter::new(raw).map_while(Result::ok) {
            match (number, field) {
                (1, WireValue::Bytes(id)) => e.trace_id = id.try_into().unwrap_or([0; 16]),
                (2, WireValue::Bytes(id)) => e.span_id = id.try_into().unwrap_or([0; 8]),
                (4, WireValue::Bytes(id)) => {
                    e.parent_span_id = <[u8; 8]>::try_from(id).ok().filter(|id| *id != [0; 8])
                }
                (5, WireValue::Bytes(name)) => e.name = std::str::from_utf8(name).unwrap_or(""),
                (6, WireValue::Varint(kind)) => e.kind = kind as i32,
                (7, WireValue::Fixed64(start)) => e.start_unix_nano = start,
                (8, WireValue::Fixed64(end)) => e.end_unix_nano = end,
                (15, WireValue::Bytes(status)) => {
                    for (number, field) in FieldIter::new(status).map_while(Result::ok) {
                        match (number, field) {
                            (2, WireValue::Bytes(m)) => {
                                e.status_message = std::str::from_utf8(m).unwrap_or("")
                            }
                            (3, WireValue::Varint(code)) => e.status_code = code as i32,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        WireSpan {
            essentials: e,
            span,
            span_attributes: std::cell::OnceCell::new(),
            resource_attributes,
        }
    }
}

impl<'a> SpanSource<'a> for WireSpan<'a, '_> {
    fn essentials(&self) -> &Essentials<'a> {
        &self.essentials
    }

    fn span_attribute(&self, key: &str) -> Option<Cow<'a, str>> {
        let decoded = self
            .span_attributes
            .get_or_init(|| self.span.raw_attributes().collect());
        lookup(decoded, key)
    }

    fn resource_attribute(&self, key: &str) -> Option<Cow<'a, str>> {
        lookup(self.resource_attributes, key)
    }
}

/// A span of a stored trace in TraceQL's model.
pub struct ModelSpan<'a> {
    pub essentials: Essentials<'a>,
    pub span: &'a model::Span,
}

fn model_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::Str(s) => Cow::Borrowed(s.as_str()),
        Value::Int(i) => Cow::Owned(i.to_string()),
        Value::Float(f) => Cow::Owned(f.to_string()),
        Value::Bool(b) => Cow::Owned(b.to_string()),
        array @ Value::Array(_) => Cow::Owned(array.text()),
    }
}

fn find<'a>(attributes: &'a [(String, Value)], key: &str) -> Option<Cow<'a, str>> {
    attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| model_text(v))
}

impl<'a> ModelSpan<'a> {
    pub fn new(span: &'a model::Span) -> Self {
        let service = span
            .resource_attributes
            .iter()
            .find(|(k, _)| k == "service.name")
            .and_then(|(_, v)| match v {
                Value::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("");
        let essentials = Essentials {
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_span_id: span.parent_span_id,
            name: &span.name,
            kind: match span.kind {
                model::SpanKind::Internal => 1,
                model::SpanKind::Server => KIND_SERVER,
                model::SpanKind::Client => KIND_CLIENT,
                model::SpanKind::Producer => KIND_PRODUCER,
                model::SpanKind::Consumer => KIND_CONSUMER,
                _ => 0,
            },
            start_unix_nano: span.start_unix_nano,
            end_unix_nano: span.end_unix_nano,
            status_code: match span.status {
                model::StatusCode::Ok => 1,
                model::StatusCode::Error => STATUS_ERROR,
                _ => 0,
            },
            status_message: &span.status_message,
            service,
            size: 0,
        };
        ModelSpan { essentials, span }
    }
}

impl<'a> SpanSource<'a> for ModelSpan<'a> {
    fn essentials(&self) -> &Essentials<'a> {
        &self.essentials
    }

    fn span_attribute(&self, key: &str) -> Option<Cow<'a, str>> {
        find(&self.span.attributes, key)
    }

    fn resource_attribute(&self, key: &str) -> Option<Cow<'a, str>> {
        find(&self.span.resource_attributes, key)
    }
}

pub fn kind_label(kind: i32) -> &'static str {
    match kind {
        1 => "SPAN_KIND_INTERNAL",
        KIND_SERVER => "SPAN_KIND_SERVER",
        KIND_CLIENT => "SPAN_KIND_CLIENT",
        KIND_PRODUCER => "SPAN_KIND_PRODUCER",
        KIND_CONSUMER => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

pub fn status_label(code: i32) -> &'static str {
    match code {
        1 => "STATUS_CODE_OK",
        STATUS_ERROR => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}
