//! Prost structs → OTLP/JSON, shaped as the spec's examples: hex ids, 64-bit integers as decimal
//! strings, enums as integers, fields at their default value omitted.

use std::fmt;

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use crate::proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use crate::proto::tonic::resource::v1::Resource;
use crate::proto::tonic::trace::v1::span::{Event, Link};
use crate::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// Encodes a request as OTLP/JSON.
pub fn request_to_json(request: &ExportTraceServiceRequest) -> Vec<u8> {
    to_vec(&Json(request))
}

/// Encodes an export response: `{}` on full success, else
/// `{"partialSuccess":{"rejectedSpans":"N","errorMessage":"..."}}`.
pub fn response_to_json(response: &ExportTraceServiceResponse) -> Vec<u8> {
    to_vec(&Json(response))
}

fn to_vec(value: &impl Serialize) -> Vec<u8> {
    // Serializing these types cannot fail: every map key is a string and no Serialize impl here
    // returns an error of its own. Fall back to an empty object rather than panic.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// Serializes a prost message as OTLP/JSON.
struct Json<'a, T>(&'a T);

/// Serializes a list of prost messages as a JSON array.
struct JsonList<'a, T>(&'a [T]);

impl<T> Serialize for JsonList<'_, T>
where
    for<'b> Json<'b, T>: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            seq.serialize_element(&Json(item))?;
        }
        seq.end()
    }
}

/// A 64-bit integer as a decimal string.
struct Decimal<T>(T);

impl<T: fmt::Display> Serialize for Decimal<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// A trace or span id as lowercase hex.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base64Display::new(self.0, &STANDARD))
    }
}

/// A double; JSON has no NaN or infinities, so the proto3 mapping writes them as strings.
struct Double(f64);

impl Serialize for Double {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = self.0;
        if value.is_nan() {
            serializer.serialize_str("NaN")
        } else if value.is_infinite() {
            serializer.serialize_str(if value > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            serializer.serialize_f64(value)
        }
    }
}

/// Writes map entries, skipping values at their proto3 default.
struct Fields<M>(M);

impl<M: SerializeMap> Fields<M> {
    fn string(&mut self, key: &str, value: &str) -> Result<(), M::Error> {
        if value.is_empty() {
            return Ok(());
        }
        self.0.serialize_entry(key, value)
    }

    fn id(&mut self, key: &str, value: &[u8]) -> Result<(), M::Error> {
        if value.is_empty() {
            return Ok(());
        }
        self.0.serialize_entry(key, &Hex(value))
    }

    fn number<N: Serialize + Default + PartialEq>(
        &mut self,
        key: &str,
        value: N,
    ) -> Result<(), M::Error> {
        if value == N::default() {
            return Ok(());
        }
        self.0.serialize_entry(key, &value)
    }

    fn decimal<N: fmt::Display + Default + PartialEq>(
        &mut self,
        key: &str,
        value: N,
    ) -> Result<(), M::Error> {
        if value == N::default() {
            return Ok(());
        }
        self.0.serialize_entry(key, &Decimal(value))
    }

    fn list<T>(&mut self, key: &str, items: &[T]) -> Result<(), M::Error>
    where
        for<'b> Json<'b, T>: Serialize,
    {
        if items.is_empty() {
            return Ok(());
        }
        self.0.serialize_entry(key, &JsonList(items))
    }

    fn message<T>(&mut self, key: &str, message: &Option<T>) -> Result<(), M::Error>
    where
        for<'b> Json<'b, T>: Serialize,
    {
        match message {
            Some(message) => self.0.serialize_entry(key, &Json(message)),
            None => Ok(()),
        }
    }

    fn always<V: Serialize + ?Sized>(&mut self, key: &str, value: &V) -> Result<(), M::Error> {
        self.0.serialize_entry(key, value)
    }

    fn end(self) -> Result<M::Ok, M::Error> {
        self.0.end()
    }
}

fn fields<S: Serializer>(serializer: S) -> Result<Fields<S::SerializeMap>, S::Error> {
    Ok(Fields(serializer.serialize_map(None)?))
}

macro_rules! json_message {
    ($type:ty, |$message:ident, $fields:ident| $body:block) => {
        impl Serialize for Json<'_, $type> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let $message = self.0;
                let mut $fields = fields(serializer)?;
                $body
                $fields.end()
            }
        }
    };
}

json_message!(ExportTraceServiceRequest, |request, f| {
    f.list("resourceSpans", &request.resource_spans)?;
});

json_message!(ExportTraceServiceResponse, |response, f| {
    let rejected_anything = response
        .partial_success
        .as_ref()
        .is_some_and(|p| p.rejected_spans != 0 || !p.error_message.is_empty());
    if rejected_anything {
        f.message("partialSuccess", &response.partial_success)?;
    }
});

json_message!(ExportTracePartialSuccess, |partial, f| {
    f.decimal("rejectedSpans", partial.rejected_spans)?;
    f.string("errorMessage", &partial.error_message)?;
});

json_message!(ResourceSpans, |resource_spans, f| {
    f.message("resource", &resource_spans.resource)?;
    f.list("scopeSpans", &resource_spans.scope_spans)?;
    f.string("schemaUrl", &resource_spans.schema_url)?;
});

json_message!(Resource, |resource, f| {
    f.list("attributes", &resource.attributes)?;
    f.number("droppedAttributesCount", resource.dropped_attributes_count)?;
    f.list("entityRefs", &resource.entity_refs)?;
});

json_message!(EntityRef, |entity, f| {
    f.string("schemaUrl", &entity.schema_url)?;
    f.string("type", &entity.r#type)?;
    if !entity.id_keys.is_empty() {
        f.always("idKeys", &entity.id_keys)?;
    }
    if !entity.description_keys.is_empty() {
        f.always("descriptionKeys", &entity.description_keys)?;
    }
});

json_message!(ScopeSpans, |scope_spans, f| {
    f.message("scope", &scope_spans.scope)?;
    f.list("spans", &scope_spans.spans)?;
    f.string("schemaUrl", &scope_spans.schema_url)?;
});

json_message!(InstrumentationScope, |scope, f| {
    f.string("name", &scope.name)?;
    f.string("version", &scope.version)?;
    f.list("attributes", &scope.attributes)?;
    f.number("droppedAttributesCount", scope.dropped_attributes_count)?;
});

json_message!(Span, |span, f| {
    f.id("traceId", &span.trace_id)?;
    f.id("spanId", &span.span_id)?;
    f.string("traceState", &span.trace_state)?;
    f.id("parentSpanId", &span.parent_span_id)?;
    f.number("flags", span.flags)?;
    f.string("name", &span.name)?;
    f.number("kind", span.kind)?;
    f.decimal("startTimeUnixNano", span.start_time_unix_nano)?;
    f.decimal("endTimeUnixNano", span.end_time_unix_nano)?;
    f.list("attributes", &span.attributes)?;
    f.number("droppedAttributesCount", span.dropped_attributes_count)?;
    f.list("events", &span.events)?;
    f.number("droppedEventsCount", span.dropped_events_count)?;
    f.list("links", &span.links)?;
    f.number("droppedLinksCount", span.dropped_links_count)?;
    f.message("status", &span.status)?;
});

json_message!(Event, |event, f| {
    f.decimal("timeUnixNano", event.time_unix_nano)?;
    f.string("name", &event.name)?;
    f.list("attributes", &event.attributes)?;
    f.number("droppedAttributesCount", event.dropped_attributes_count)?;
});

json_message!(Link, |link, f| {
    f.id("traceId", &link.trace_id)?;
    f.id("spanId", &link.span_id)?;
    f.string("traceState", &link.trace_state)?;
    f.list("attributes", &link.attributes)?;
    f.number("droppedAttributesCount", link.dropped_attributes_count)?;
    f.number("flags", link.flags)?;
});

json_message!(Status, |status, f| {
    f.string("message", &status.message)?;
    f.number("code", status.code)?;
});

json_message!(KeyValue, |key_value, f| {
    // The key is written even when empty: an attribute without "key" reads oddly.
    f.always("key", &key_value.key)?;
    f.message("value", &key_value.value)?;
    f.number("keyStrindex", key_value.key_strindex)?;
});

json_message!(AnyValue, |any, f| {
    use any_value::Value as V;
    // A oneof member is written even at its default value: its presence is the information.
    match &any.value {
        Some(V::StringValue(s)) => f.always("stringValue", s)?,
        Some(V::BoolValue(b)) => f.always("boolValue", b)?,
        Some(V::IntValue(i)) => f.always("intValue", &Decimal(i))?,
        Some(V::DoubleValue(d)) => f.always("doubleValue", &Double(*d))?,
        Some(V::ArrayValue(array)) => f.always("arrayValue", &Json(array))?,
        Some(V::KvlistValue(kvlist)) => f.always("kvlistValue", &Json(kvlist))?,
        Some(V::BytesValue(bytes)) => f.always("bytesValue", &Base64(bytes))?,
        Some(V::StringValueStrindex(index)) => f.always("stringValueStrindex", index)?,
        None => {}
    }
});

json_message!(ArrayValue, |array, f| {
    // Always written so that an empty array stays an (empty) array value.
    f.always("values", &JsonList(&array.values))?;
});

json_message!(KeyValueList, |kvlist, f| {
    f.always("values", &JsonList(&kvlist.values))?;
});
