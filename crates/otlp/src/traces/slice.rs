//! Spans of one trace located inside shared request bytes, without copying them: what a
//! component that holds spans for a while (tail sampling) keeps, so that memory is the request's
//! encoded size plus a few bytes per span, instead of a rebuilt copy per trace.

use bytes::Bytes;

use super::rebuild::{children, SpanWriter, RESOURCE_SPANS_FIELD, SCOPE_SPANS_FIELD, SPANS_FIELD};
use super::{ResourceView, SpanView, TraceData};

/// Byte offsets of one span and its containers inside the shared bytes.
#[derive(Clone, Copy, Debug)]
struct SpanLocation {
    /// Payload of the enclosing `ResourceSpans`.
    resource: (u32, u32),
    /// Payload of the enclosing `ScopeSpans`.
    scope: (u32, u32),
    /// The whole `spans` field (tag, length, payload).
    span_field: (u32, u32),
    /// Start of the span's payload within the field.
    payload_start: u32,
}

/// Some spans of one trace, pointing into shared encoded data.
#[derive(Clone, Debug)]
pub struct TraceSlice {
    bytes: Bytes,
    spans: Vec<SpanLocation>,
}

fn range(bytes: &[u8], (start, end): (u32, u32)) -> &[u8] {
    &bytes[start as usize..end as usize]
}

impl TraceSlice {
    pub fn span_count(&self) -> usize {
        self.spans.len()
    }

    /// Encoded size of the spans themselves (containers not counted).
    pub fn spans_len(&self) -> usize {
        self.spans
            .iter()
            .map(|s| (s.span_field.1 - s.span_field.0) as usize)
            .sum()
    }

    /// The size of the shared bytes this slice keeps alive.
    pub fn shared_len(&self) -> usize {
        self.bytes.len()
    }

    /// Visits every span with its resource.
    pub fn for_each_span<'a>(&'a self, mut visit: impl FnMut(&ResourceView<'a>, &SpanView<'a>)) {
        for location in &self.spans {
            let resource = ResourceView::new(range(&self.bytes, location.resource));
            let payload = (location.payload_start, location.span_field.1);
            visit(&resource, &SpanView::new(range(&self.bytes, payload)));
        }
    }
}

impl TraceData {
    /// Groups the spans by trace id, in order of first appearance, as [`TraceData::split_by_trace`],
    /// but without copying: every slice shares `self`'s bytes.
    pub fn slices_by_trace(&self) -> Vec<([u8; 16], TraceSlice)> {
        let base = self.bytes.as_ptr() as usize;
        let offsets = |part: &[u8]| {
            let start = (part.as_ptr() as usize - base) as u32;
            (start, start + part.len() as u32)
        };
        let mut groups: Vec<([u8; 16], TraceSlice)> = Vec::new();
        let mut index_of: std::collections::HashMap<[u8; 16], usize> = Default::default();
        for resource in children(&self.bytes, RESOURCE_SPANS_FIELD) {
            let resource_range = offsets(resource.payload);
            for scope in children(resource.payload, SCOPE_SPANS_FIELD) {
                let scope_range = offsets(scope.payload);
                for span in children(scope.payload, SPANS_FIELD) {
                    let trace_id = SpanView::new(span.payload).trace_id();
                    let group = *index_of.entry(trace_id).or_insert_with(|| {
                        groups.push((
                            trace_id,
                            TraceSlice {
                                bytes: self.bytes.clone(),
                                spans: Vec::new(),
                            },
                        ));
                        groups.len() - 1
                    });
                    groups[group].1.spans.push(SpanLocation {
                        resource: resource_range,
                        scope: scope_range,
                        span_field: offsets(span.field),
                        payload_start: offsets(span.payload).0,
                    });
                }
            }
        }
        groups
    }
}

/// Builds trace data from slices, re-creating their containers.
pub struct SliceWriter {
    writer: SpanWriter,
}

impl Default for SliceWriter {
    fn default() -> Self {
        SliceWriter {
            writer: SpanWriter::new(Vec::new(), 0),
        }
    }
}

impl SliceWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, slice: &TraceSlice) {
        for location in &slice.spans {
            self.writer.push_parts(
                range(&slice.bytes, location.resource),
                range(&slice.bytes, location.scope),
                range(&slice.bytes, location.span_field),
            );
        }
    }

    pub fn span_count(&self) -> usize {
        self.writer.span_count()
    }

    pub fn finish(self) -> TraceData {
        self.writer.finish()
    }
}
