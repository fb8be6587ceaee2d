//! Walking the span envelope of stored trace data and rebuilding it from byte ranges.
//!
//! Stored data is a sequence of `resource_spans` fields (field 1 of `ExportTraceServiceRequest`),
//! each holding `scope_spans` (field 2), each holding `spans` (field 2). Rebuilding copies the
//! encoded fields verbatim and only writes new tags and length prefixes for the containers.

use bytes::Bytes;

use super::TraceData;
use crate::wire::{FieldIter, OpenField, WireValue};

pub(crate) const RESOURCE_SPANS_FIELD: u32 = 1;
pub(crate) const SCOPE_SPANS_FIELD: u32 = 2;
pub(crate) const SPANS_FIELD: u32 = 2;

/// A length-delimited field of a message: its payload, and the whole field (tag, length, payload).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Child<'a> {
    pub payload: &'a [u8],
    pub field: &'a [u8],
    /// Offset just past the field in the parent message.
    pub end: usize,
}

/// The length-delimited fields numbered `number` of a message, with their byte ranges.
///
/// Stops at the first malformed field; callers walk data that was validated before.
pub(crate) fn children(buf: &[u8], number: u32) -> impl Iterator<Item = Child<'_>> {
    let mut fields = FieldIter::new(buf);
    std::iter::from_fn(move || loop {
        let start = fields.position();
        match fields.next()? {
            Ok((n, WireValue::Bytes(payload))) if n == number => {
                let end = fields.position();
                return Some(Child {
                    payload,
                    field: &buf[start..end],
                    end,
                });
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    })
}

/// Number of spans in one encoded `ResourceSpans`.
pub(crate) fn spans_in_resource(resource_spans: &[u8]) -> usize {
    children(resource_spans, SCOPE_SPANS_FIELD)
        .map(|scope| children(scope.payload, SPANS_FIELD).count())
        .sum()
}

/// One span with the containers around it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpanEntry<'a> {
    pub resource_spans: &'a [u8],
    pub scope_spans: &'a [u8],
    pub span: Child<'a>,
}

/// Calls `visit` for every span of the data, in order.
pub(crate) fn for_each_entry<'a>(buf: &'a [u8], mut visit: impl FnMut(&SpanEntry<'a>)) {
    for resource in children(buf, RESOURCE_SPANS_FIELD) {
        for scope in children(resource.payload, SCOPE_SPANS_FIELD) {
            for span in children(scope.payload, SPANS_FIELD) {
                visit(&SpanEntry {
                    resource_spans: resource.payload,
                    scope_spans: scope.payload,
                    span,
                });
            }
        }
    }
}

/// Copies every field of `message` except those numbered `skip`, as raw byte ranges.
fn copy_fields_except(message: &[u8], skip: u32, out: &mut Vec<u8>) {
    let mut fields = FieldIter::new(message);
    loop {
        let start = fields.position();
        match fields.next() {
            Some(Ok((number, _))) if number != skip => {
                out.extend_from_slice(&message[start..fields.position()]);
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return,
        }
    }
}

/// Builds trace data from selected spans, re-creating their `ResourceSpans`/`ScopeSpans`.
///
/// Consecutive spans from the same container share one rebuilt container; each rebuilt
/// container carries the original's other fields (resource, scope, schema_url, unknown fields),
/// written before its children.
#[derive(Debug)]
pub(crate) struct SpanWriter {
    out: Vec<u8>,
    spans: usize,
    /// The container being written, identified by the address of the original's bytes (distinct
    /// containers never share one), and its still-open field.
    resource: Option<(usize, OpenField)>,
    scope: Option<(usize, OpenField)>,
    /// Containers' own fields (all but their children) by the address of the original's bytes:
    /// finding them walks every child's header, which for a scope of hundreds of spans costs
    /// more than the span copy when spans of one request are written in many groups.
    headers: std::collections::HashMap<usize, Vec<u8>>,
}

impl SpanWriter {
    /// Starts writing after `prefix`, which must hold complete `resource_spans` fields.
    pub(crate) fn new(prefix: Vec<u8>, prefix_spans: usize) -> Self {
        SpanWriter {
            out: prefix,
            spans: prefix_spans,
            resource: None,
            scope: None,
            headers: std::collections::HashMap::new(),
        }
    }

    /// Writes the fields of `container` except its children numbered `children`.
    fn write_header(&mut self, container: &[u8], children: u32) {
        let header = self
            .headers
            .entry(container.as_ptr() as usize)
            .or_insert_with(|| {
                let mut header = Vec::new();
                copy_fields_except(container, children, &mut header);
                header
            });
        self.out.extend_from_slice(header);
    }

    pub(crate) fn push(&mut self, entry: &SpanEntry<'_>) {
        self.push_parts(entry.resource_spans, entry.scope_spans, entry.span.field);
    }

    /// Appends one span (`span_field`: the whole `spans` field) found inside the `ResourceSpans`
    /// and `ScopeSpans` payloads given.
    pub(crate) fn push_parts(
        &mut self,
        resource_spans: &[u8],
        scope_spans: &[u8],
        span_field: &[u8],
    ) {
        let resource_id = resource_spans.as_ptr() as usize;
        let scope_id = scope_spans.as_ptr() as usize;
        if self.resource.as_ref().map(|(id, _)| *id) != Some(resource_id) {
            self.close_resource();
            let open = OpenField::begin(RESOURCE_SPANS_FIELD, &mut self.out);
            self.write_header(resource_spans, SCOPE_SPANS_FIELD);
            self.resource = Some((resource_id, open));
        }
        if self.scope.as_ref().map(|(id, _)| *id) != Some(scope_id) {
            self.close_scope();
            let open = OpenField::begin(SCOPE_SPANS_FIELD, &mut self.out);
            self.write_header(scope_spans, SPANS_FIELD);
            self.scope = Some((scope_id, open));
        }
        self.out.extend_from_slice(span_field);
        self.spans += 1;
    }

    /// Spans written so far.
    pub(crate) fn span_count(&self) -> usize {
        self.spans
    }

    /// Appends complete `resource_spans` fields holding `spans` spans.
    pub(crate) fn extend_raw(&mut self, resource_spans_fields: &[u8], spans: usize) {
        self.close_resource();
        self.out.extend_from_slice(resource_spans_fields);
        self.spans += spans;
    }

    fn close_scope(&mut self) {
        if let Some((_, open)) = self.scope.take() {
            open.end(&mut self.out);
        }
    }

    fn close_resource(&mut self) {
        self.close_scope();
        if let Some((_, open)) = self.resource.take() {
            open.end(&mut self.out);
        }
    }

    pub(crate) fn finish(mut self) -> TraceData {
        self.close_resource();
        TraceData {
            bytes: Bytes::from(self.out),
            span_count: self.spans,
        }
    }
}
