//! Validation of encoded `ExportTraceServiceRequest`s without decoding them.
//!
//! The rules are prost's (wire types of known fields, UTF-8 of `string` fields, prost's recursion
//! limit) plus OTLP's id lengths, so a request accepted here always decodes with prost.
//!
//! [`check_message`] validates any message against the schema. Spans, attributes and attribute
//! values, which are nearly all of a request, have loops of their own that dispatch on the
//! one-byte tag encoders write for their fields, and fall back to the schema for anything else.

use super::error::{DecodeError, Failure, Problem};
use super::schema::{FieldType, Message, SPAN_ID_LEN, TRACE_ID_LEN};
use crate::wire::{
    read_field, read_length_delimited, short_tag, skip_fixed, skip_varint, WireType, WireValue,
};

/// prost refuses messages nested deeper than this (its `RECURSION_LIMIT`); so do we, so that
/// everything we accept can be decoded later.
pub(crate) const RECURSION_LIMIT: u32 = 100;

// Nesting depth of each envelope message below the request.
const RESOURCE_SPANS_DEPTH: u32 = 1;
const SCOPE_SPANS_DEPTH: u32 = 2;
const SPAN_DEPTH: u32 = 3;

/// What validation learned about a request.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// All spans, including those with invalid ids.
    pub spans: usize,
    /// Spans whose trace_id or span_id is empty or all zeros.
    pub invalid_id_spans: usize,
    /// `(resource_spans, scope_spans, spans)` indices of the first such span.
    pub first_invalid: Option<(usize, usize, usize)>,
    /// The request has top-level fields other than `resource_spans`.
    pub has_foreign_fields: bool,
}

/// Validates a whole request. See [`super::TraceData::from_request_bytes`] for the rules.
pub(crate) fn validate_request(buf: &[u8]) -> Result<Summary, Failure> {
    let mut summary = Summary::default();
    let mut pos = 0;
    let mut resource_index = 0;
    while pos < buf.len() {
        let start = pos;
        let result = match read_field(buf, &mut pos)? {
            (1, WireValue::Bytes(resource_spans)) => {
                resource_index += 1;
                validate_resource_spans(resource_spans, resource_index - 1, &mut summary)
            }
            (1, value) => Err(wrong_wire_type(WireType::LengthDelimited, value)),
            // Not part of the trace data: dropped when the request is stored.
            _ => {
                summary.has_foreign_fields = true;
                Ok(())
            }
        };
        result.map_err(|f| f.within(Message::ExportRequest, buf, start))?;
    }
    Ok(summary)
}

fn validate_resource_spans(
    buf: &[u8],
    resource_index: usize,
    summary: &mut Summary,
) -> Result<(), Failure> {
    let mut pos = 0;
    let mut scope_index = 0;
    while pos < buf.len() {
        let start = pos;
        let result = match read_field(buf, &mut pos)? {
            (2, WireValue::Bytes(scope_spans)) => {
                scope_index += 1;
                validate_scope_spans(scope_spans, (resource_index, scope_index - 1), summary)
            }
            (number, value) => {
                check_field(Message::ResourceSpans, number, value, RESOURCE_SPANS_DEPTH)
            }
        };
        result.map_err(|f| f.within(Message::ResourceSpans, buf, start))?;
    }
    Ok(())
}

fn validate_scope_spans(
    buf: &[u8],
    (resource_index, scope_index): (usize, usize),
    summary: &mut Summary,
) -> Result<(), Failure> {
    let mut pos = 0;
    let mut span_index = 0;
    while pos < buf.len() {
        let start = pos;
        let result = match read_field(buf, &mut pos)? {
            (2, WireValue::Bytes(span)) => validate_span(span).map(|ids_valid| {
                summary.spans += 1;
                if !ids_valid {
                    summary.invalid_id_spans += 1;
                    summary
                        .first_invalid
                        .get_or_insert((resource_index, scope_index, span_index));
                }
                span_index += 1;
            }),
            (number, value) => check_field(Message::ScopeSpans, number, value, SCOPE_SPANS_DEPTH),
        };
        result.map_err(|f| f.within(Message::ScopeSpans, buf, start))?;
    }
    Ok(())
}

// One-byte tags of the fields handled by the fast paths.
const LEN: WireType = WireType::LengthDelimited;
const SPAN_TRACE_ID: u8 = short_tag(1, LEN);
const SPAN_SPAN_ID: u8 = short_tag(2, LEN);
const SPAN_TRACE_STATE: u8 = short_tag(3, LEN);
const SPAN_PARENT_SPAN_ID: u8 = short_tag(4, LEN);
const SPAN_NAME: u8 = short_tag(5, LEN);
const SPAN_KIND: u8 = short_tag(6, WireType::Varint);
const SPAN_START_TIME: u8 = short_tag(7, WireType::Fixed64);
const SPAN_END_TIME: u8 = short_tag(8, WireType::Fixed64);
const SPAN_ATTRIBUTE: u8 = short_tag(9, LEN);
const SPAN_DROPPED_ATTRIBUTES: u8 = short_tag(10, WireType::Varint);
const KEY_VALUE_KEY: u8 = short_tag(1, LEN);
const KEY_VALUE_VALUE: u8 = short_tag(2, LEN);
const ANY_STRING: u8 = short_tag(1, LEN);
const ANY_BOOL: u8 = short_tag(2, WireType::Varint);
const ANY_INT: u8 = short_tag(3, WireType::Varint);
const ANY_DOUBLE: u8 = short_tag(4, WireType::Fixed64);
const ANY_BYTES: u8 = short_tag(7, LEN);

/// Validates one span; returns whether its trace_id and span_id are both valid (non-zero).
fn validate_span(buf: &[u8]) -> Result<bool, Failure> {
    let mut pos = 0;
    // A missing id reads as empty, which the OTLP spec treats like all zeros.
    let mut trace_id: &[u8] = &[];
    let mut span_id: &[u8] = &[];
    while pos < buf.len() {
        let start = pos;
        let result = match buf[start] {
            // Last occurrence wins, as in protobuf.
            SPAN_TRACE_ID => {
                pos += 1;
                trace_id = read_length_delimited(buf, &mut pos, start)?;
                check_id(trace_id, TRACE_ID_LEN)
            }
            SPAN_SPAN_ID => {
                pos += 1;
                span_id = read_length_delimited(buf, &mut pos, start)?;
                check_id(span_id, SPAN_ID_LEN)
            }
            SPAN_PARENT_SPAN_ID => {
                pos += 1;
                check_id(read_length_delimited(buf, &mut pos, start)?, SPAN_ID_LEN)
            }
            SPAN_TRACE_STATE | SPAN_NAME => {
                pos += 1;
                check_utf8(read_length_delimited(buf, &mut pos, start)?)
            }
            SPAN_KIND | SPAN_DROPPED_ATTRIBUTES => {
                pos += 1;
                skip_varint(buf, &mut pos).map_err(Failure::from)
            }
            SPAN_START_TIME | SPAN_END_TIME => {
                pos += 1;
                skip_fixed(buf, &mut pos, 8, start).map_err(Failure::from)
            }
            SPAN_ATTRIBUTE => {
                pos += 1;
                check_key_value(read_length_delimited(buf, &mut pos, start)?, SPAN_DEPTH + 1)
            }
            _ => {
                let (number, value) = read_field(buf, &mut pos)?;
                check_field(Message::Span, number, value, SPAN_DEPTH)
            }
        };
        result.map_err(|f| f.within(Message::Span, buf, start))?;
    }
    Ok(is_valid_id(trace_id) && is_valid_id(span_id))
}

/// [`check_message`] for `KeyValue`.
fn check_key_value(buf: &[u8], depth: u32) -> Result<(), Failure> {
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let result = match buf[start] {
            KEY_VALUE_KEY => {
                pos += 1;
                check_utf8(read_length_delimited(buf, &mut pos, start)?)
            }
            KEY_VALUE_VALUE if depth < RECURSION_LIMIT => {
                pos += 1;
                check_any_value(read_length_delimited(buf, &mut pos, start)?, depth + 1)
            }
            _ => {
                let (number, value) = read_field(buf, &mut pos)?;
                check_field(Message::KeyValue, number, value, depth)
            }
        };
        result.map_err(|f| f.within(Message::KeyValue, buf, start))?;
    }
    Ok(())
}

/// [`check_message`] for `AnyValue`.
#[inline]
fn check_any_value(buf: &[u8], depth: u32) -> Result<(), Failure> {
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let result = match buf[start] {
            ANY_STRING => {
                pos += 1;
                check_utf8(read_length_delimited(buf, &mut pos, start)?)
            }
            ANY_BOOL | ANY_INT => {
                pos += 1;
                skip_varint(buf, &mut pos).map_err(Failure::from)
            }
            ANY_DOUBLE => {
                pos += 1;
                skip_fixed(buf, &mut pos, 8, start).map_err(Failure::from)
            }
            ANY_BYTES => {
                pos += 1;
                read_length_delimited(buf, &mut pos, start)
                    .map(drop)
                    .map_err(Failure::from)
            }
            _ => {
                let (number, value) = read_field(buf, &mut pos)?;
                check_field(Message::AnyValue, number, value, depth)
            }
        };
        result.map_err(|f| f.within(Message::AnyValue, buf, start))?;
    }
    Ok(())
}

/// Validates any message against the schema.
fn check_message(buf: &[u8], message: Message, depth: u32) -> Result<(), Failure> {
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let (number, value) = read_field(buf, &mut pos)?;
        check_field(message, number, value, depth).map_err(|f| f.within(message, buf, start))?;
    }
    Ok(())
}

/// Checks one field of `message` (which sits at nesting `depth`) the way prost would decode it.
fn check_field(
    message: Message,
    number: u32,
    value: WireValue<'_>,
    depth: u32,
) -> Result<(), Failure> {
    let Some(field) = message.field(number) else {
        // prost skips unknown fields, except at its recursion limit.
        return if depth >= RECURSION_LIMIT {
            Err(too_deep())
        } else {
            Ok(())
        };
    };
    match (field.ty, value) {
        (FieldType::Varint, WireValue::Varint(_))
        | (FieldType::Fixed64, WireValue::Fixed64(_))
        | (FieldType::Fixed32, WireValue::Fixed32(_))
        | (FieldType::Bytes, WireValue::Bytes(_)) => Ok(()),
        (FieldType::String, WireValue::Bytes(bytes)) => check_utf8(bytes),
        (FieldType::Id { len }, WireValue::Bytes(id)) => check_id(id, len),
        (FieldType::Message(child), WireValue::Bytes(bytes)) => {
            if depth >= RECURSION_LIMIT {
                return Err(too_deep());
            }
            match child {
                Message::KeyValue => check_key_value(bytes, depth + 1),
                Message::AnyValue => check_any_value(bytes, depth + 1),
                _ => check_message(bytes, child, depth + 1),
            }
        }
        (ty, value) => Err(wrong_wire_type(ty.wire_type(), value)),
    }
}

/// Ids are either empty or exactly `len` bytes.
#[inline]
fn check_id(id: &[u8], len: usize) -> Result<(), Failure> {
    if id.is_empty() || id.len() == len {
        Ok(())
    } else {
        Err(Failure::new(Problem::IdLength {
            expected: len,
            actual: id.len(),
        }))
    }
}

/// An id is valid when present and not all zeros (OTLP spec, trace.proto).
#[inline]
pub(crate) fn is_valid_id(id: &[u8]) -> bool {
    id.iter().any(|&byte| byte != 0)
}

/// UTF-8 check with a fast path for ASCII, which nearly all telemetry strings are.
#[inline]
fn check_utf8(bytes: &[u8]) -> Result<(), Failure> {
    if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() {
        Ok(())
    } else {
        Err(Failure::new(Problem::InvalidUtf8))
    }
}

#[cold]
fn too_deep() -> Failure {
    Failure::new(Problem::TooDeep {
        limit: RECURSION_LIMIT,
    })
}

#[cold]
fn wrong_wire_type(expected: WireType, found: WireValue<'_>) -> Failure {
    Failure::new(Problem::WrongWireType {
        expected,
        found: found.wire_type(),
    })
}

/// Counts the spans of an encoded request, checking only the framing of the envelope
/// (`resource_spans` → `scope_spans` → `spans`), not the spans themselves.
pub fn count_spans(buf: &[u8]) -> Result<usize, DecodeError> {
    let mut count = 0;
    for_each_envelope_child(buf, Message::ExportRequest, |resource_spans| {
        for_each_envelope_child(resource_spans, Message::ResourceSpans, |scope_spans| {
            for_each_envelope_child(scope_spans, Message::ScopeSpans, |_span| {
                count += 1;
                Ok(())
            })
        })
    })?;
    Ok(count)
}

/// Calls `visit` with every field of `message` that holds the next envelope level (field 1 of
/// the request, field 2 of resource/scope spans), skipping other fields.
fn for_each_envelope_child(
    buf: &[u8],
    message: Message,
    mut visit: impl FnMut(&[u8]) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let child_number = if message == Message::ExportRequest {
        1
    } else {
        2
    };
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let result = match read_field(buf, &mut pos)? {
            (number, WireValue::Bytes(child)) if number == child_number => visit(child),
            (number, value) if number == child_number => {
                Err(wrong_wire_type(WireType::LengthDelimited, value))
            }
            _ => continue,
        };
        result.map_err(|f| f.within(message, buf, start))?;
    }
    Ok(())
}
