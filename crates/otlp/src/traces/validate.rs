//! Validation of encoded `ExportTraceServiceRequest`s without decoding them.
//!
//! The rules are prost's (wire types of known fields, UTF-8 of `string` fields, prost's recursion
//! limit) plus OTLP's id lengths, so a request accepted here always decodes with prost.

use super::error::{DecodeError, Failure, Problem};
use super::schema::{FieldType, Message, SPAN_ID_LEN, TRACE_ID_LEN};
use crate::wire::{read_field, WireType, WireValue};

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
        match read_field(buf, &mut pos)? {
            (1, WireValue::Bytes(resource_spans)) => {
                validate_resource_spans(resource_spans, resource_index, &mut summary)
                    .map_err(|f| f.within(Message::ExportRequest, 1, buf, start))?;
                resource_index += 1;
            }
            (1, value) => {
                return Err(wrong_wire_type(WireType::LengthDelimited, value).within(
                    Message::ExportRequest,
                    1,
                    buf,
                    start,
                ))
            }
            // Not part of the trace data: dropped when the request is stored.
            _ => summary.has_foreign_fields = true,
        }
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
        let (number, value) = read_field(buf, &mut pos)?;
        let result = match (number, value) {
            (2, WireValue::Bytes(scope_spans)) => {
                let position = (resource_index, scope_index);
                scope_index += 1;
                validate_scope_spans(scope_spans, position, summary)
            }
            _ => check_field(Message::ResourceSpans, number, value, RESOURCE_SPANS_DEPTH),
        };
        result.map_err(|f| f.within(Message::ResourceSpans, number, buf, start))?;
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
        let (number, value) = read_field(buf, &mut pos)?;
        let result = match (number, value) {
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
            _ => check_field(Message::ScopeSpans, number, value, SCOPE_SPANS_DEPTH),
        };
        result.map_err(|f| f.within(Message::ScopeSpans, number, buf, start))?;
    }
    Ok(())
}

/// Validates one span; returns whether its trace_id and span_id are both valid (non-zero).
fn validate_span(buf: &[u8]) -> Result<bool, Failure> {
    let mut pos = 0;
    // A missing id reads as empty, which the OTLP spec treats like all zeros.
    let mut trace_id: &[u8] = &[];
    let mut span_id: &[u8] = &[];
    while pos < buf.len() {
        let start = pos;
        let (number, value) = read_field(buf, &mut pos)?;
        // The span's own fields are checked inline (this is the hot loop); the rest, and any
        // field with an unexpected wire type, go through the schema in `check_field`.
        let result = match (number, value) {
            // Last occurrence wins, as in protobuf.
            (1, WireValue::Bytes(id)) => {
                trace_id = id;
                check_id(id, TRACE_ID_LEN)
            }
            (2, WireValue::Bytes(id)) => {
                span_id = id;
                check_id(id, SPAN_ID_LEN)
            }
            (4, WireValue::Bytes(id)) => check_id(id, SPAN_ID_LEN),
            (3 | 5, WireValue::Bytes(string)) => check_utf8(string),
            (6 | 10 | 12 | 14, WireValue::Varint(_))
            | (7 | 8, WireValue::Fixed64(_))
            | (16, WireValue::Fixed32(_)) => Ok(()),
            (9, WireValue::Bytes(attribute)) => check_key_value(attribute, SPAN_DEPTH + 1),
            _ => check_field(Message::Span, number, value, SPAN_DEPTH),
        };
        result.map_err(|f| f.within(Message::Span, number, buf, start))?;
    }
    Ok(is_valid_id(trace_id) && is_valid_id(span_id))
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

/// Validates any message below the span envelope (and the non-envelope fields of the envelope).
fn check_message(buf: &[u8], message: Message, depth: u32) -> Result<(), Failure> {
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let (number, value) = read_field(buf, &mut pos)?;
        check_field(message, number, value, depth)
            .map_err(|f| f.within(message, number, buf, start))?;
    }
    Ok(())
}

/// Checks one field of `message` (which sits at nesting `depth`) the way prost would decode it.
#[inline]
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
            // Attributes are most of a span's fields: they get loops of their own.
            match child {
                Message::KeyValue => check_key_value(bytes, depth + 1),
                Message::AnyValue => check_any_value(bytes, depth + 1),
                _ => check_message(bytes, child, depth + 1),
            }
        }
        (ty, value) => Err(wrong_wire_type(ty.wire_type(), value)),
    }
}

/// [`check_message`] for `KeyValue`, with the common fields handled inline.
fn check_key_value(buf: &[u8], depth: u32) -> Result<(), Failure> {
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let (number, value) = read_field(buf, &mut pos)?;
        let result = match (number, value) {
            (1, WireValue::Bytes(key)) => check_utf8(key),
            (2, WireValue::Bytes(any_value)) if depth < RECURSION_LIMIT => {
                check_any_value(any_value, depth + 1)
            }
            _ => check_field(Message::KeyValue, number, value, depth),
        };
        result.map_err(|f| f.within(Message::KeyValue, number, buf, start))?;
    }
    Ok(())
}

/// [`check_message`] for `AnyValue`, with the scalar values handled inline.
#[inline]
fn check_any_value(buf: &[u8], depth: u32) -> Result<(), Failure> {
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let (number, value) = read_field(buf, &mut pos)?;
        let result = match (number, value) {
            (1, WireValue::Bytes(string)) => check_utf8(string),
            (2 | 3 | 8, WireValue::Varint(_))
            | (4, WireValue::Fixed64(_))
            | (7, WireValue::Bytes(_)) => Ok(()),
            _ => check_field(Message::AnyValue, number, value, depth),
        };
        result.map_err(|f| f.within(Message::AnyValue, number, buf, start))?;
    }
    Ok(())
}

/// UTF-8 check with a fast path for ASCII, which nearly all telemetry strings are.
#[inline]
fn check_utf8(bytes: &[u8]) -> Result<(), Failure> {
    if bytes.iter().fold(0u8, |acc, &byte| acc | byte) < 0x80 || std::str::from_utf8(bytes).is_ok()
    {
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
        result.map_err(|f| f.within(message, child_number, buf, start))?;
    }
    Ok(())
}
