//! OTLP/JSON → prost structs.

use std::fmt::Write as _;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Value};

use super::JsonError;
use crate::proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use crate::proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use crate::proto::tonic::resource::v1::Resource;
use crate::proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use crate::proto::tonic::trace::v1::status::StatusCode;
use crate::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

type Object = Map<String, Value>;
type Result<T> = std::result::Result<T, Failure>;

/// Parses an OTLP/JSON `ExportTraceServiceRequest`.
pub fn request_from_json(body: &[u8]) -> std::result::Result<ExportTraceServiceRequest, JsonError> {
    let value: Value = serde_json::from_slice(body)?;
    request(&value).map_err(Failure::into_error)
}

/// Parses an OTLP/JSON `ExportTraceServiceResponse` (what an OTLP/HTTP server answers).
pub fn response_from_json(
    body: &[u8],
) -> std::result::Result<ExportTraceServiceResponse, JsonError> {
    let value: Value = serde_json::from_slice(body)?;
    response(&value).map_err(Failure::into_error)
}

/// A decoding failure on its way up; each level adds where it happened.
struct Failure {
    problem: String,
    /// Innermost first.
    segments: Vec<Segment>,
}

enum Segment {
    Key(&'static str),
    Index(usize),
}

impl Failure {
    #[cold]
    fn new(problem: impl Into<String>) -> Failure {
        Failure {
            problem: problem.into(),
            segments: Vec::new(),
        }
    }

    fn at_key(mut self, key: &'static str) -> Failure {
        self.segments.push(Segment::Key(key));
        self
    }

    fn at_index(mut self, index: usize) -> Failure {
        self.segments.push(Segment::Index(index));
        self
    }

    fn into_error(self) -> JsonError {
        let mut path = String::new();
        for segment in self.segments.iter().rev() {
            match segment {
                Segment::Key(key) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                Segment::Index(index) => {
                    let _ = write!(path, "[{index}]");
                }
            }
        }
        if path.is_empty() {
            path.push_str("request");
        }
        JsonError::Invalid {
            path,
            problem: self.problem,
        }
    }
}

/// A field name: lowerCamelCase as the spec requires, snake_case as the Collector also accepts.
#[derive(Clone, Copy)]
struct Key {
    camel: &'static str,
    snake: &'static str,
}

const fn key(camel: &'static str, snake: &'static str) -> Key {
    Key { camel, snake }
}

/// The value of a field; absent and `null` both mean "default".
fn get(object: &Object, key: Key) -> Option<&Value> {
    object
        .get(key.camel)
        .or_else(|| object.get(key.snake))
        .filter(|value| !value.is_null())
}

fn field<T: Default>(object: &Object, key: Key, decode: fn(&Value) -> Result<T>) -> Result<T> {
    match get(object, key) {
        None => Ok(T::default()),
        Some(value) => decode(value).map_err(|f| f.at_key(key.camel)),
    }
}

fn optional<T>(object: &Object, key: Key, decode: fn(&Value) -> Result<T>) -> Result<Option<T>> {
    get(object, key)
        .map(|value| decode(value).map_err(|f| f.at_key(key.camel)))
        .transpose()
}

fn repeated<T>(object: &Object, key: Key, decode: fn(&Value) -> Result<T>) -> Result<Vec<T>> {
    match get(object, key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| decode(item).map_err(|f| f.at_index(index)))
            .collect::<Result<Vec<T>>>()
            .map_err(|f| f.at_key(key.camel)),
        Some(other) => Err(expected("an array", other).at_key(key.camel)),
    }
}

#[cold]
fn expected(what: &str, found: &Value) -> Failure {
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Failure::new(format!("expected {what}, got {found}"))
}

fn object(value: &Value) -> Result<&Object> {
    value
        .as_object()
        .ok_or_else(|| expected("an object", value))
}

// ---- scalars ----

fn string(value: &Value) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(expected("a string", other)),
    }
}

fn boolean(value: &Value) -> Result<bool> {
    value.as_bool().ok_or_else(|| expected("a boolean", value))
}

/// Integers may be JSON numbers or decimal strings (proto3 JSON mapping).
fn integer<T>(value: &Value) -> Result<T>
where
    T: TryFrom<i128> + std::str::FromStr,
{
    let out_of_range = || Failure::new(format!("integer {value} is out of range"));
    match value {
        Value::Number(number) => {
            let wide = number
                .as_i64()
                .map(i128::from)
                .or_else(|| number.as_u64().map(i128::from))
                .ok_or_else(|| Failure::new(format!("expected an integer, got {number}")))?;
            T::try_from(wide).map_err(|_| out_of_range())
        }
        Value::String(s) => s
            .parse::<T>()
            .map_err(|_| Failure::new(format!("expected an integer, got {s:?}"))),
        other => Err(expected("an integer", other)),
    }
}

fn uint32(value: &Value) -> Result<u32> {
    integer(value)
}

fn int32(value: &Value) -> Result<i32> {
    integer(value)
}

fn uint64(value: &Value) -> Result<u64> {
    integer(value)
}

fn int64(value: &Value) -> Result<i64> {
    integer(value)
}

fn double(value: &Value) -> Result<f64> {
    match value {
        Value::Number(number) => number
            .as_f64()
            .ok_or_else(|| Failure::new(format!("expected a number, got {number}"))),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .parse()
                .map_err(|_| Failure::new(format!("expected a number, got {s:?}"))),
        },
        other => Err(expected("a number", other)),
    }
}

/// Enums: integers per OTLP; names (and numeric strings) accepted as the proto3 mapping allows.
fn enumeration(value: &Value, from_name: fn(&str) -> Option<i32>) -> Result<i32> {
    match value {
        Value::String(name) => from_name(name)
            .or_else(|| name.parse().ok())
            .ok_or_else(|| Failure::new(format!("unknown enum value {name:?}"))),
        other => int32(other),
    }
}

fn span_kind(value: &Value) -> Result<i32> {
    enumeration(value, |name| {
        SpanKind::from_str_name(name).map(|kind| kind as i32)
    })
}

fn status_code(value: &Value) -> Result<i32> {
    enumeration(value, |name| {
        StatusCode::from_str_name(name).map(|code| code as i32)
    })
}

/// Trace and span ids: hex strings of the exact length, or empty.
fn hex_id(value: &Value, len: usize) -> Result<Vec<u8>> {
    let Value::String(text) = value else {
        return Err(expected("a hex string", value));
    };
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = hex::decode(text).map_err(|e| Failure::new(format!("invalid hex id: {e}")))?;
    if bytes.len() != len {
        return Err(Failure::new(format!(
            "expected {len} bytes ({} hex digits), got {} hex digits",
            len * 2,
            text.len()
        )));
    }
    Ok(bytes)
}

fn trace_id(value: &Value) -> Result<Vec<u8>> {
    hex_id(value, 16)
}

fn span_id(value: &Value) -> Result<Vec<u8>> {
    hex_id(value, 8)
}

/// `bytes` fields are base64; the proto3 mapping accepts the standard and URL-safe alphabets,
/// with or without padding.
fn base64_bytes(value: &Value) -> Result<Vec<u8>> {
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let Value::String(text) = value else {
        return Err(expected("a base64 string", value));
    };
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .map_err(|e| Failure::new(format!("invalid base64: {e}")))
}

// ---- messages ----

const ATTRIBUTES: Key = key("attributes", "attributes");
const DROPPED_ATTRIBUTES_COUNT: Key = key("droppedAttributesCount", "dropped_attributes_count");
const SCHEMA_URL: Key = key("schemaUrl", "schema_url");
const TRACE_ID: Key = key("traceId", "trace_id");
const SPAN_ID: Key = key("spanId", "span_id");
const TRACE_STATE: Key = key("traceState", "trace_state");
const NAME: Key = key("name", "name");
const FLAGS: Key = key("flags", "flags");
const VALUES: Key = key("values", "values");

fn request(value: &Value) -> Result<ExportTraceServiceRequest> {
    let object = object(value)?;
    Ok(ExportTraceServiceRequest {
        resource_spans: repeated(
            object,
            key("resourceSpans", "resource_spans"),
            resource_spans,
        )?,
    })
}

fn response(value: &Value) -> Result<ExportTraceServiceResponse> {
    let object = object(value)?;
    Ok(ExportTraceServiceResponse {
        partial_success: optional(
            object,
            key("partialSuccess", "partial_success"),
            partial_success,
        )?,
    })
}

fn partial_success(value: &Value) -> Result<ExportTracePartialSuccess> {
    let object = object(value)?;
    Ok(ExportTracePartialSuccess {
        rejected_spans: field(object, key("rejectedSpans", "rejected_spans"), int64)?,
        error_message: field(object, key("errorMessage", "error_message"), string)?,
    })
}

fn resource_spans(value: &Value) -> Result<ResourceSpans> {
    let object = object(value)?;
    Ok(ResourceSpans {
        resource: optional(object, key("resource", "resource"), resource)?,
        scope_spans: repeated(object, key("scopeSpans", "scope_spans"), scope_spans)?,
        schema_url: field(object, SCHEMA_URL, string)?,
    })
}

fn resource(value: &Value) -> Result<Resource> {
    let object = object(value)?;
    Ok(Resource {
        attributes: repeated(object, ATTRIBUTES, key_value)?,
        dropped_attributes_count: field(object, DROPPED_ATTRIBUTES_COUNT, uint32)?,
        entity_refs: repeated(object, key("entityRefs", "entity_refs"), entity_ref)?,
    })
}

fn entity_ref(value: &Value) -> Result<EntityRef> {
    let object = object(value)?;
    Ok(EntityRef {
        schema_url: field(object, SCHEMA_URL, string)?,
        r#type: field(object, key("type", "type"), string)?,
        id_keys: repeated(object, key("idKeys", "id_keys"), string)?,
        description_keys: repeated(object, key("descriptionKeys", "description_keys"), string)?,
    })
}

fn scope_spans(value: &Value) -> Result<ScopeSpans> {
    let object = object(value)?;
    Ok(ScopeSpans {
        scope: optional(object, key("scope", "scope"), scope)?,
        spans: repeated(object, key("spans", "spans"), span)?,
        schema_url: field(object, SCHEMA_URL, string)?,
    })
}

fn scope(value: &Value) -> Result<InstrumentationScope> {
    let object = object(value)?;
    Ok(InstrumentationScope {
        name: field(object, NAME, string)?,
        version: field(object, key("version", "version"), string)?,
        attributes: repeated(object, ATTRIBUTES, key_value)?,
        dropped_attributes_count: field(object, DROPPED_ATTRIBUTES_COUNT, uint32)?,
    })
}

fn span(value: &Value) -> Result<Span> {
    let object = object(value)?;
    Ok(Span {
        trace_id: field(object, TRACE_ID, trace_id)?,
        span_id: field(object, SPAN_ID, span_id)?,
        trace_state: field(object, TRACE_STATE, string)?,
        parent_span_id: field(object, key("parentSpanId", "parent_span_id"), span_id)?,
        flags: field(object, FLAGS, uint32)?,
        name: field(object, NAME, string)?,
        kind: field(object, key("kind", "kind"), span_kind)?,
        start_time_unix_nano: field(
            object,
            key("startTimeUnixNano", "start_time_unix_nano"),
            uint64,
        )?,
        end_time_unix_nano: field(object, key("endTimeUnixNano", "end_time_unix_nano"), uint64)?,
        attributes: repeated(object, ATTRIBUTES, key_value)?,
        dropped_attributes_count: field(object, DROPPED_ATTRIBUTES_COUNT, uint32)?,
        events: repeated(object, key("events", "events"), event)?,
        dropped_events_count: field(
            object,
            key("droppedEventsCount", "dropped_events_count"),
            uint32,
        )?,
        links: repeated(object, key("links", "links"), link)?,
        dropped_links_count: field(
            object,
            key("droppedLinksCount", "dropped_links_count"),
            uint32,
        )?,
        status: optional(object, key("status", "status"), status)?,
    })
}

fn event(value: &Value) -> Result<Event> {
    let object = object(value)?;
    Ok(Event {
        time_unix_nano: field(object, key("timeUnixNano", "time_unix_nano"), uint64)?,
        name: field(object, NAME, string)?,
        attributes: repeated(object, ATTRIBUTES, key_value)?,
        dropped_attributes_count: field(object, DROPPED_ATTRIBUTES_COUNT, uint32)?,
    })
}

fn link(value: &Value) -> Result<Link> {
    let object = object(value)?;
    Ok(Link {
        trace_id: field(object, TRACE_ID, trace_id)?,
        span_id: field(object, SPAN_ID, span_id)?,
        trace_state: field(object, TRACE_STATE, string)?,
        attributes: repeated(object, ATTRIBUTES, key_value)?,
        dropped_attributes_count: field(object, DROPPED_ATTRIBUTES_COUNT, uint32)?,
        flags: field(object, FLAGS, uint32)?,
    })
}

fn status(value: &Value) -> Result<Status> {
    let object = object(value)?;
    Ok(Status {
        message: field(object, key("message", "message"), string)?,
        code: field(object, key("code", "code"), status_code)?,
    })
}

fn key_value(value: &Value) -> Result<KeyValue> {
    let object = object(value)?;
    Ok(KeyValue {
        key: field(object, key("key", "key"), string)?,
        value: optional(object, key("value", "value"), any_value)?,
        key_strindex: field(object, key("keyStrindex", "key_strindex"), int32)?,
    })
}

fn any_value(value: &Value) -> Result<AnyValue> {
    use any_value::Value as V;
    let object = object(value)?;
    let mut decoded = None;
    // A oneof: at most one key is expected; unknown keys are ignored.
    for (name, item) in object {
        if item.is_null() {
            continue;
        }
        let (path, result) = match name.as_str() {
            "stringValue" | "string_value" => ("stringValue", string(item).map(V::StringValue)),
            "boolValue" | "bool_value" => ("boolValue", boolean(item).map(V::BoolValue)),
            "intValue" | "int_value" => ("intValue", int64(item).map(V::IntValue)),
            "doubleValue" | "double_value" => ("doubleValue", double(item).map(V::DoubleValue)),
            "bytesValue" | "bytes_value" => ("bytesValue", base64_bytes(item).map(V::BytesValue)),
            "arrayValue" | "array_value" => ("arrayValue", array_value(item).map(V::ArrayValue)),
            "kvlistValue" | "kvlist_value" => {
                ("kvlistValue", kvlist_value(item).map(V::KvlistValue))
            }
            "stringValueStrindex" | "string_value_strindex" => (
                "stringValueStrindex",
                int32(item).map(V::StringValueStrindex),
            ),
            _ => continue,
        };
        decoded = Some(result.map_err(|f| f.at_key(path))?);
    }
    Ok(AnyValue { value: decoded })
}

fn array_value(value: &Value) -> Result<ArrayValue> {
    let object = object(value)?;
    Ok(ArrayValue {
        values: repeated(object, VALUES, any_value)?,
    })
}

fn kvlist_value(value: &Value) -> Result<KeyValueList> {
    let object = object(value)?;
    Ok(KeyValueList {
        values: repeated(object, VALUES, key_value)?,
    })
}
