//! The field layout of the OTLP trace messages, as far as validation needs it.
//!
//! Mirrors `opentelemetry/proto/{collector/trace,trace,resource,common}/v1/*.proto`. Fields not
//! listed here are unknown fields: protobuf keeps them and so do we.

use crate::wire::WireType;

/// An OTLP message type that can occur in an `ExportTraceServiceRequest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    ExportRequest,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

/// How a known field is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldType {
    /// Any varint-encoded scalar (integers, bools, enums).
    Varint,
    Fixed64,
    Fixed32,
    /// A `string`: length-delimited and valid UTF-8.
    String,
    /// Opaque `bytes`.
    Bytes,
    /// A trace or span id: `bytes` that are either empty or exactly `len` long.
    Id {
        len: usize,
    },
    Message(Message),
}

impl FieldType {
    pub(crate) fn wire_type(self) -> WireType {
        match self {
            FieldType::Varint => WireType::Varint,
            FieldType::Fixed64 => WireType::Fixed64,
            FieldType::Fixed32 => WireType::Fixed32,
            FieldType::String | FieldType::Bytes | FieldType::Id { .. } | FieldType::Message(_) => {
                WireType::LengthDelimited
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Field {
    pub name: &'static str,
    pub repeated: bool,
    pub ty: FieldType,
}

pub(crate) const TRACE_ID_LEN: usize = 16;
pub(crate) const SPAN_ID_LEN: usize = 8;

impl Message {
    /// The known field `number` of this message, or `None` for an unknown field.
    #[inline]
    pub(crate) fn field(self, number: u32) -> Option<Field> {
        use FieldType::{Bytes, Fixed32, Fixed64, Id, String, Varint};
        use Message as M;
        const ONE: bool = false;
        const MANY: bool = true;
        let trace_id = Id { len: TRACE_ID_LEN };
        let span_id = Id { len: SPAN_ID_LEN };
        let attributes = ("attributes", MANY, FieldType::Message(M::KeyValue));
        let (name, repeated, ty) = match (self, number) {
            (M::ExportRequest, 1) => ("resource_spans", MANY, FieldType::Message(M::ResourceSpans)),

            (M::ResourceSpans, 1) => ("resource", ONE, FieldType::Message(M::Resource)),
            (M::ResourceSpans, 2) => ("scope_spans", MANY, FieldType::Message(M::ScopeSpans)),
            (M::ResourceSpans, 3) => ("schema_url", ONE, String),

            (M::Resource, 1) => attributes,
            (M::Resource, 2) => ("dropped_attributes_count", ONE, Varint),
            (M::Resource, 3) => ("entity_refs", MANY, FieldType::Message(M::EntityRef)),

            (M::EntityRef, 1) => ("schema_url", ONE, String),
            (M::EntityRef, 2) => ("type", ONE, String),
            (M::EntityRef, 3) => ("id_keys", MANY, String),
            (M::EntityRef, 4) => ("description_keys", MANY, String),

            (M::ScopeSpans, 1) => ("scope", ONE, FieldType::Message(M::Scope)),
            (M::ScopeSpans, 2) => ("spans", MANY, FieldType::Message(M::Span)),
            (M::ScopeSpans, 3) => ("schema_url", ONE, String),

            (M::Scope, 1) => ("name", ONE, String),
            (M::Scope, 2) => ("version", ONE, String),
            (M::Scope, 3) => attributes,
            (M::Scope, 4) => ("dropped_attributes_count", ONE, Varint),

            (M::Span, 1) => ("trace_id", ONE, trace_id),
            (M::Span, 2) => ("span_id", ONE, span_id),
            (M::Span, 3) => ("trace_state", ONE, String),
            (M::Span, 4) => ("parent_span_id", ONE, span_id),
            (M::Span, 5) => ("name", ONE, String),
            (M::Span, 6) => ("kind", ONE, Varint),
            (M::Span, 7) => ("start_time_unix_nano", ONE, Fixed64),
            (M::Span, 8) => ("end_time_unix_nano", ONE, Fixed64),
            (M::Span, 9) => attributes,
            (M::Span, 10) => ("dropped_attributes_count", ONE, Varint),
            (M::Span, 11) => ("events", MANY, FieldType::Message(M::Event)),
            (M::Span, 12) => ("dropped_events_count", ONE, Varint),
            (M::Span, 13) => ("links", MANY, FieldType::Message(M::Link)),
            (M::Span, 14) => ("dropped_links_count", ONE, Varint),
            (M::Span, 15) => ("status", ONE, FieldType::Message(M::Status)),
            (M::Span, 16) => ("flags", ONE, Fixed32),

            (M::Event, 1) => ("time_unix_nano", ONE, Fixed64),
            (M::Event, 2) => ("name", ONE, String),
            (M::Event, 3) => attributes,
            (M::Event, 4) => ("dropped_attributes_count", ONE, Varint),

            (M::Link, 1) => ("trace_id", ONE, trace_id),
            (M::Link, 2) => ("span_id", ONE, span_id),
            (M::Link, 3) => ("trace_state", ONE, String),
            (M::Link, 4) => attributes,
            (M::Link, 5) => ("dropped_attributes_count", ONE, Varint),
            (M::Link, 6) => ("flags", ONE, Fixed32),

            (M::Status, 2) => ("message", ONE, String),
            (M::Status, 3) => ("code", ONE, Varint),

            (M::KeyValue, 1) => ("key", ONE, String),
            (M::KeyValue, 2) => ("value", ONE, FieldType::Message(M::AnyValue)),
            (M::KeyValue, 3) => ("key_strindex", ONE, Varint),

            (M::AnyValue, 1) => ("string_value", ONE, String),
            (M::AnyValue, 2) => ("bool_value", ONE, Varint),
            (M::AnyValue, 3) => ("int_value", ONE, Varint),
            (M::AnyValue, 4) => ("double_value", ONE, Fixed64),
            (M::AnyValue, 5) => ("array_value", ONE, FieldType::Message(M::ArrayValue)),
            (M::AnyValue, 6) => ("kvlist_value", ONE, FieldType::Message(M::KeyValueList)),
            (M::AnyValue, 7) => ("bytes_value", ONE, Bytes),
            (M::AnyValue, 8) => ("string_value_strindex", ONE, Varint),

            (M::ArrayValue, 1) => ("values", MANY, FieldType::Message(M::AnyValue)),
            (M::KeyValueList, 1) => ("values", MANY, FieldType::Message(M::KeyValue)),

            _ => return None,
        };
        Some(Field { name, repeated, ty })
    }
}
