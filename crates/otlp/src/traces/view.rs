//! Zero-copy read access to encoded resources, scopes and spans.
//!
//! Views read fields straight from the encoded bytes on every call. They assume bytes that passed
//! validation (or were encoded by prost) and never panic on anything else: a missing or malformed
//! field reads as its protobuf default.

use crate::wire::{FieldIter, WireValue};

/// The fields numbered `number` of a message, in order. Stops at the first malformed field.
fn fields_numbered(buf: &[u8], number: u32) -> impl Iterator<Item = WireValue<'_>> {
    FieldIter::new(buf)
        .map_while(Result::ok)
        .filter_map(move |(n, value)| (n == number).then_some(value))
}

/// Payloads of the length-delimited fields numbered `number`.
fn messages_numbered(buf: &[u8], number: u32) -> impl Iterator<Item = &[u8]> {
    fields_numbered(buf, number).filter_map(|value| match value {
        WireValue::Bytes(bytes) => Some(bytes),
        _ => None,
    })
}

/// The last occurrence of a singular field (protobuf's "last one wins").
fn last_field(buf: &[u8], number: u32) -> Option<WireValue<'_>> {
    fields_numbered(buf, number).last()
}

fn last_bytes(buf: &[u8], number: u32) -> &[u8] {
    match last_field(buf, number) {
        Some(WireValue::Bytes(bytes)) => bytes,
        _ => &[],
    }
}

fn last_str(buf: &[u8], number: u32) -> &str {
    std::str::from_utf8(last_bytes(buf, number)).unwrap_or_default()
}

fn last_varint(buf: &[u8], number: u32) -> u64 {
    match last_field(buf, number) {
        Some(WireValue::Varint(value)) => value,
        _ => 0,
    }
}

fn last_fixed64(buf: &[u8], number: u32) -> u64 {
    match last_field(buf, number) {
        Some(WireValue::Fixed64(value)) => value,
        _ => 0,
    }
}

/// Copies an id of exactly `N` bytes; anything else (absent, wrong length) reads as all zeros.
fn id_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    <[u8; N]>::try_from(bytes).unwrap_or([0; N])
}

/// Looks `key` up in the `KeyValue` fields numbered `number` of each message in `containers`.
fn find_attribute<'a>(
    containers: impl Iterator<Item = &'a [u8]>,
    number: u32,
    key: &str,
) -> Option<AnyValueView<'a>> {
    // Keys are compared as bytes: values are decoded only for the match.
    containers
        .flat_map(|container| RawAttributes::new(container, number))
        .find_map(|(k, value)| (k == key.as_bytes()).then(|| value.decode()))
}

/// An attribute value (`AnyValue`), borrowed from the encoded bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AnyValueView<'a> {
    String(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    /// Array, key-value list and other values: the encoded `AnyValue` message.
    Raw(&'a [u8]),
    /// The `AnyValue` holds no value.
    Empty,
}

impl<'a> AnyValueView<'a> {
    /// Reads an encoded `AnyValue` message (the oneof's last field wins, as in protobuf).
    pub fn from_encoded(any_value: &'a [u8]) -> AnyValueView<'a> {
        let mut view = AnyValueView::Empty;
        for (number, value) in FieldIter::new(any_value).map_while(Result::ok) {
            view = match (number, value) {
                (1, WireValue::Bytes(s)) => match std::str::from_utf8(s) {
                    Ok(s) => AnyValueView::String(s),
                    Err(_) => AnyValueView::Raw(any_value),
                },
                (2, WireValue::Varint(v)) => AnyValueView::Bool(v != 0),
                (3, WireValue::Varint(v)) => AnyValueView::Int(v as i64),
                (4, WireValue::Fixed64(v)) => AnyValueView::Double(f64::from_bits(v)),
                (7, WireValue::Bytes(b)) => AnyValueView::Bytes(b),
                (5 | 6 | 8, _) => AnyValueView::Raw(any_value),
                _ => continue,
            };
        }
        view
    }

    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            AnyValueView::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            AnyValueView::Int(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            AnyValueView::Double(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            AnyValueView::Bool(v) => Some(*v),
            _ => None,
        }
    }
}

/// An attribute's encoded `AnyValue`, decoded on request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncodedValue<'a>(Option<&'a [u8]>);

impl<'a> EncodedValue<'a> {
    pub fn decode(self) -> AnyValueView<'a> {
        self.0
            .map_or(AnyValueView::Empty, AnyValueView::from_encoded)
    }
}

/// Iterator over `(key bytes, encoded value)` of the `KeyValue` fields of a message: each
/// `KeyValue` read in one pass, nothing decoded (for callers that look for a few keys).
#[derive(Clone, Debug)]
pub struct RawAttributes<'a> {
    fields: FieldIter<'a>,
    number: u32,
}

impl<'a> RawAttributes<'a> {
    fn new(container: &'a [u8], number: u32) -> Self {
        RawAttributes {
            fields: FieldIter::new(container),
            number,
        }
    }
}

impl<'a> Iterator for RawAttributes<'a> {
    type Item = (&'a [u8], EncodedValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (number, value) = self.fields.next()?.ok()?;
            let WireValue::Bytes(key_value) = value else {
                continue;
            };
            if number != self.number {
                continue;
            }
            // The last of each field wins, whatever its wire type (as `last_field`).
            let (mut key, mut any_value): (&[u8], Option<&[u8]>) = (&[], None);
            for (field, value) in FieldIter::new(key_value).map_while(Result::ok) {
                match (field, value) {
                    (1, WireValue::Bytes(k)) => key = k,
                    (1, _) => key = &[],
                    (2, WireValue::Bytes(v)) => any_value = Some(v),
                    (2, _) => any_value = None,
                    _ => {}
                }
            }
            return Some((key, EncodedValue(any_value)));
        }
    }
}

/// Iterator over `(key, value)` of the `KeyValue` fields of a message.
#[derive(Clone, Debug)]
pub struct Attributes<'a>(RawAttributes<'a>);

impl<'a> Attributes<'a> {
    fn new(container: &'a [u8], number: u32) -> Self {
        Attributes(RawAttributes::new(container, number))
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (&'a str, AnyValueView<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let (key, value) = self.0.next()?;
        Some((std::str::from_utf8(key).unwrap_or_default(), value.decode()))
    }
}

/// A span, read from its encoded `Span` message.
#[derive(Clone, Copy, Debug)]
pub struct SpanView<'a> {
    raw: &'a [u8],
}

impl<'a> SpanView<'a> {
    /// Wraps an encoded `Span` message (without its tag and length).
    pub fn new(raw: &'a [u8]) -> Self {
        SpanView { raw }
    }

    /// The encoded `Span` message.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The trace id; all zeros when absent.
    pub fn trace_id(&self) -> [u8; 16] {
        id_array(last_bytes(self.raw, 1))
    }

    /// The span id; all zeros when absent.
    pub fn span_id(&self) -> [u8; 8] {
        id_array(last_bytes(self.raw, 2))
    }

    /// The parent span id, or `None` for a root span (empty or all-zero parent id).
    pub fn parent_span_id(&self) -> Option<[u8; 8]> {
        let parent = id_array(last_bytes(self.raw, 4));
        (parent != [0; 8]).then_some(parent)
    }

    pub fn trace_state(&self) -> &'a str {
        last_str(self.raw, 3)
    }

    pub fn name(&self) -> &'a str {
        last_str(self.raw, 5)
    }

    /// `SpanKind` as its protobuf number (0 unspecified … 5 consumer).
    pub fn kind(&self) -> i32 {
        // Truncation matches prost's decoding of enum fields.
        last_varint(self.raw, 6) as i32
    }

    pub fn start_time_unix_nano(&self) -> u64 {
        last_fixed64(self.raw, 7)
    }

    pub fn end_time_unix_nano(&self) -> u64 {
        last_fixed64(self.raw, 8)
    }

    pub fn flags(&self) -> u32 {
        match last_field(self.raw, 16) {
            Some(WireValue::Fixed32(flags)) => flags,
            _ => 0,
        }
    }

    /// `Status.code` as its protobuf number (0 unset, 1 ok, 2 error).
    pub fn status_code(&self) -> i32 {
        // Repeated occurrences of a message field merge, so the last code in any of them wins.
        messages_numbered(self.raw, 15)
            .filter_map(|status| last_field(status, 3))
            .filter_map(|code| match code {
                WireValue::Varint(code) => Some(code as i32),
                _ => None,
            })
            .last()
            .unwrap_or(0)
    }

    pub fn status_message(&self) -> &'a str {
        messages_numbered(self.raw, 15)
            .filter_map(|status| match last_field(status, 2) {
                Some(WireValue::Bytes(message)) => std::str::from_utf8(message).ok(),
                _ => None,
            })
            .last()
            .unwrap_or_default()
    }

    /// Times, parent, flags and status code read in one pass over the span's fields (the
    /// separate accessors each walk the fields again).
    pub fn essentials(&self) -> SpanEssentials {
        let mut essentials = SpanEssentials::default();
        for (number, value) in FieldIter::new(self.raw).map_while(Result::ok) {
            match (number, value) {
                (4, WireValue::Bytes(parent)) => {
                    essentials.has_parent = id_array::<8>(parent) != [0; 8];
                }
                (7, WireValue::Fixed64(start)) => essentials.start_time_unix_nano = start,
                (8, WireValue::Fixed64(end)) => essentials.end_time_unix_nano = end,
                (15, WireValue::Bytes(status)) => {
                    if let Some(WireValue::Varint(code)) = last_field(status, 3) {
                        essentials.status_code = code as i32;
                    }
                }
                (16, WireValue::Fixed32(flags)) => essentials.flags = flags,
                _ => {}
            }
        }
        essentials
    }

    /// The value of the first attribute named `key`.
    pub fn attribute(&self, key: &str) -> Option<AnyValueView<'a>> {
        find_attribute(std::iter::once(self.raw), 9, key)
    }

    /// All attributes in encoding order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::new(self.raw, 9)
    }

    /// All attributes in encoding order, undecoded.
    pub fn raw_attributes(&self) -> RawAttributes<'a> {
        RawAttributes::new(self.raw, 9)
    }
}

/// The resource of a `ResourceSpans`, read from the encoded message.
#[derive(Clone, Copy, Debug)]
pub struct ResourceView<'a> {
    resource_spans: &'a [u8],
}

impl<'a> ResourceView<'a> {
    /// Wraps an encoded `ResourceSpans` message.
    pub fn new(resource_spans: &'a [u8]) -> Self {
        ResourceView { resource_spans }
    }

    /// The encoded `Resource` message (empty when the resource is absent).
    pub fn raw(&self) -> &'a [u8] {
        messages_numbered(self.resource_spans, 1)
            .next()
            .unwrap_or_default()
    }

    /// The encoded `ResourceSpans` message this resource belongs to.
    pub fn resource_spans_raw(&self) -> &'a [u8] {
        self.resource_spans
    }

    /// `ResourceSpans.schema_url`.
    pub fn schema_url(&self) -> &'a str {
        last_str(self.resource_spans, 3)
    }

    /// The value of the first resource attribute named `key`.
    pub fn attribute(&self, key: &str) -> Option<AnyValueView<'a>> {
        find_attribute(messages_numbered(self.resource_spans, 1), 1, key)
    }

    /// All resource attributes in encoding order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::new(self.raw(), 1)
    }

    /// All resource attributes in encoding order, undecoded.
    pub fn raw_attributes(&self) -> RawAttributes<'a> {
        RawAttributes::new(self.raw(), 1)
    }
}

/// The instrumentation scope of a `ScopeSpans`, read from the encoded message.
#[derive(Clone, Copy, Debug)]
pub struct ScopeView<'a> {
    scope_spans: &'a [u8],
}

impl<'a> ScopeView<'a> {
    /// Wraps an encoded `ScopeSpans` message.
    pub fn new(scope_spans: &'a [u8]) -> Self {
        ScopeView { scope_spans }
    }

    /// The encoded `InstrumentationScope` message (empty when absent).
    pub fn raw(&self) -> &'a [u8] {
        messages_numbered(self.scope_spans, 1)
            .next()
            .unwrap_or_default()
    }

    /// The encoded `ScopeSpans` message this scope belongs to.
    pub fn scope_spans_raw(&self) -> &'a [u8] {
        self.scope_spans
    }

    pub fn name(&self) -> &'a str {
        self.scope_string(1)
    }

    pub fn version(&self) -> &'a str {
        self.scope_string(2)
    }

    /// `ScopeSpans.schema_url`.
    pub fn schema_url(&self) -> &'a str {
        last_str(self.scope_spans, 3)
    }

    /// The value of the first scope attribute named `key`.
    pub fn attribute(&self, key: &str) -> Option<AnyValueView<'a>> {
        find_attribute(messages_numbered(self.scope_spans, 1), 3, key)
    }

    /// All scope attributes in encoding order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::new(self.raw(), 3)
    }

    fn scope_string(&self, number: u32) -> &'a str {
        messages_numbered(self.scope_spans, 1)
            .filter_map(|scope| match last_field(scope, number) {
                Some(WireValue::Bytes(s)) => std::str::from_utf8(s).ok(),
                _ => None,
            })
            .last()
            .unwrap_or_default()
    }
}

/// What [`SpanView::essentials`] reads; each field as its own accessor would return it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanEssentials {
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    /// A non-empty, non-zero parent span id.
    pub has_parent: bool,
    pub flags: u32,
    pub status_code: i32,
}
