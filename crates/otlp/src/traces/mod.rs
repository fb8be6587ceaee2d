//! Trace data as it flows through the pipeline: the encoded request plus its span count.
//!
//! Receivers validate incoming protobuf once ([`TraceData::from_request_bytes`]); after that,
//! batching concatenates bytes, splitting and filtering copy byte ranges, and reading goes through
//! zero-copy views. Only components that modify spans decode to prost structs
//! ([`TraceData::to_request`]).

mod error;
mod rebuild;
mod schema;
mod slice;
mod validate;
mod view;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message as _;

use crate::proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use rebuild::{children, for_each_entry, spans_in_resource, SpanWriter, RESOURCE_SPANS_FIELD};
use rebuild::{SCOPE_SPANS_FIELD, SPANS_FIELD};

pub use error::DecodeError;
pub use slice::{SliceWriter, TraceSlice};
pub use validate::count_spans;
pub use view::{
    AnyValueView, Attributes, EncodedValue, RawAttributes, ResourceView, ScopeView, SpanEssentials,
    SpanView,
};

/// Encoded trace data: a valid `ExportTraceServiceRequest` encoding holding only `resource_spans`
/// fields, plus the number of spans in it. Cloning shares the bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceData {
    bytes: Bytes,
    span_count: usize,
}

impl TraceData {
    /// Validates an encoded `ExportTraceServiceRequest` received from the network, without
    /// decoding it or allocating per span.
    ///
    /// Checks what prost checks when decoding (wire types of known fields at every level, UTF-8
    /// of string fields, nesting depth), and that trace ids are 16 bytes and span ids 8 bytes
    /// (or empty); anything wrong is a [`DecodeError`] naming the field. Spans whose trace_id or
    /// span_id is missing or all zeros are invalid per the OTLP spec: they are removed and counted
    /// in the returned [`Rejected`]. Unknown fields are kept; top-level fields other than
    /// `resource_spans` are dropped.
    ///
    /// When nothing is removed, the stored bytes are `buf` itself (no copy).
    pub fn from_request_bytes(buf: Bytes) -> Result<(TraceData, Rejected), DecodeError> {
        let summary = validate::validate_request(&buf)?;
        let rejected = Rejected::invalid_ids(&summary);
        let data = if summary.invalid_id_spans > 0 {
            let keep_valid = |entry: &rebuild::SpanEntry<'_>| {
                let span = SpanView::new(entry.span.payload);
                validate::is_valid_id(&span.trace_id()) && validate::is_valid_id(&span.span_id())
            };
            let mut writer = SpanWriter::new(Vec::with_capacity(buf.len()), 0);
            for_each_entry(&buf, |entry| {
                if keep_valid(entry) {
                    writer.push(entry);
                }
            });
            writer.finish()
        } else if summary.has_foreign_fields {
            let mut out = Vec::with_capacity(buf.len());
            for resource in children(&buf, RESOURCE_SPANS_FIELD) {
                out.extend_from_slice(resource.field);
            }
            TraceData {
                bytes: Bytes::from(out),
                span_count: summary.spans,
            }
        } else {
            TraceData {
                bytes: buf,
                span_count: summary.spans,
            }
        };
        Ok((data, rejected))
    }

    /// Encodes a request with prost. No validation: ids are stored as given.
    pub fn from_request(request: &ExportTraceServiceRequest) -> TraceData {
        let span_count = request
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        TraceData {
            bytes: Bytes::from(request.encode_to_vec()),
            span_count,
        }
    }

    /// Decodes the data with prost, for components that modify spans.
    pub fn to_request(&self) -> Result<ExportTraceServiceRequest, DecodeError> {
        Ok(ExportTraceServiceRequest::decode(self.bytes.clone())?)
    }

    pub fn span_count(&self) -> usize {
        self.span_count
    }

    /// Size of the encoded request in bytes.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// True when the data holds no spans (it may still hold empty resource/scope containers).
    pub fn is_empty(&self) -> bool {
        self.span_count == 0
    }

    /// The encoded `ExportTraceServiceRequest`.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Splits off the first `max_spans` spans and returns them; `self` keeps the rest.
    ///
    /// A `ResourceSpans`/`ScopeSpans` straddling the cut is rebuilt into two, each carrying the
    /// same resource, scope and schema_url. A cut between resources copies nothing; a cut inside
    /// one copies both halves, so to cut data into many pieces use [`TraceData::into_batches`].
    pub fn split_off_front(&mut self, max_spans: usize) -> TraceData {
        if max_spans >= self.span_count {
            return std::mem::take(self);
        }
        if max_spans == 0 {
            return TraceData::default();
        }
        let bytes = self.bytes.clone();
        let mut taken = 0;
        for resource in children(&bytes, RESOURCE_SPANS_FIELD) {
            let spans = spans_in_resource(resource.payload);
            if taken + spans < max_spans {
                taken += spans;
                continue;
            }
            if taken + spans == max_spans {
                self.bytes = bytes.slice(resource.end..);
                self.span_count -= max_spans;
                return TraceData {
                    bytes: bytes.slice(..resource.end),
                    span_count: max_spans,
                };
            }
            // This resource straddles the cut.
            let start = resource.end - resource.field.len();
            let front_spans = max_spans - taken;
            let mut front = SpanWriter::new(bytes[..start].to_vec(), taken);
            let mut back = SpanWriter::new(Vec::with_capacity(bytes.len() - start), 0);
            let mut index = 0;
            for_each_entry(resource.field, |entry| {
                if index < front_spans {
                    front.push(entry);
                } else {
                    back.push(entry);
                }
                index += 1;
            });
            back.extend_raw(&bytes[resource.end..], self.span_count - taken - spans);
            *self = back.finish();
            return front.finish();
        }
        // Unreachable for consistent data (span_count matches the bytes); keep everything in
        // front rather than lose spans.
        std::mem::take(self)
    }

    /// Cuts the data into batches of at most `max_spans` spans (all full but the last), in one
    /// pass. `max_spans == 0` means no limit.
    pub fn into_batches(self, max_spans: usize) -> Vec<TraceData> {
        if max_spans == 0 || self.span_count <= max_spans {
            return vec![self];
        }
        let batch_bytes = self.bytes.len() / (self.span_count / max_spans) + 64;
        let new_writer = || SpanWriter::new(Vec::with_capacity(batch_bytes), 0);
        let mut batches = Vec::with_capacity(self.span_count.div_ceil(max_spans));
        let mut writer = new_writer();
        for resource in children(&self.bytes, RESOURCE_SPANS_FIELD) {
            let spans = spans_in_resource(resource.payload);
            if writer.span_count() + spans <= max_spans {
                writer.extend_raw(resource.field, spans);
            } else {
                for_each_entry(resource.field, |entry| {
                    if writer.span_count() == max_spans {
                        batches.push(std::mem::replace(&mut writer, new_writer()).finish());
                    }
                    writer.push(entry);
                });
            }
            if writer.span_count() == max_spans {
                batches.push(std::mem::replace(&mut writer, new_writer()).finish());
            }
        }
        if writer.span_count() > 0 {
            batches.push(writer.finish());
        }
        batches
    }

    /// Returns the spans for which `keep` returns true, rebuilding resource/scope containers
    /// around them; containers without kept spans are dropped. When every span is kept, returns
    /// a clone (no copy).
    pub fn retain_spans(&self, mut keep: impl FnMut(&SpanView<'_>) -> bool) -> TraceData {
        let mut decisions = Vec::with_capacity(self.span_count);
        for_each_entry(&self.bytes, |entry| {
            decisions.push(keep(&SpanView::new(entry.span.payload)));
        });
        let kept = decisions.iter().filter(|&&keep| keep).count();
        if kept == decisions.len() {
            return self.clone();
        }
        if kept == 0 {
            return TraceData::default();
        }
        let mut writer = SpanWriter::new(Vec::with_capacity(self.bytes.len()), 0);
        let mut decisions = decisions.into_iter();
        for_each_entry(&self.bytes, |entry| {
            if decisions.next() == Some(true) {
                writer.push(entry);
            }
        });
        writer.finish()
    }

    /// Visits every span with its resource and scope, in order, without copying.
    pub fn for_each_span<'a>(
        &'a self,
        mut visit: impl FnMut(&ResourceView<'a>, &ScopeView<'a>, &SpanView<'a>),
    ) {
        for resource in children(&self.bytes, RESOURCE_SPANS_FIELD) {
            let resource_view = ResourceView::new(resource.payload);
            for scope in children(resource.payload, SCOPE_SPANS_FIELD) {
                let scope_view = ScopeView::new(scope.payload);
                for span in children(scope.payload, SPANS_FIELD) {
                    visit(&resource_view, &scope_view, &SpanView::new(span.payload));
                }
            }
        }
    }

    /// A copy in an allocation of exactly its size: for data that is held for a while, so that
    /// it does not keep a larger receive buffer it was cut from alive.
    pub fn compacted(&self) -> TraceData {
        TraceData {
            bytes: Bytes::copy_from_slice(&self.bytes),
            span_count: self.span_count,
        }
    }

    /// Splits the spans into `parts` groups, `part_of` choosing each span's group (values at or
    /// above `parts` go to the last). Each group keeps its spans' resources and scopes; groups
    /// without spans are empty. When all spans fall in one group, that group is a clone (no copy).
    pub fn partition(
        &self,
        parts: usize,
        mut part_of: impl FnMut(&ResourceView<'_>, &SpanView<'_>) -> usize,
    ) -> Vec<TraceData> {
        let parts = parts.max(1);
        let mut counts = vec![0usize; parts];
        let mut assignment = Vec::with_capacity(self.span_count);
        for_each_entry(&self.bytes, |entry| {
            let part = part_of(
                &ResourceView::new(entry.resource_spans),
                &SpanView::new(entry.span.payload),
            )
            .min(parts - 1);
            counts[part] += 1;
            assignment.push(part);
        });
        let mut result = vec![TraceData::default(); parts];
        let total: usize = counts.iter().sum();
        if let Some(only) = counts.iter().position(|&c| c == total && c > 0) {
            result[only] = self.clone();
            return result;
        }
        let bytes_per_span = self.bytes.len() / self.span_count.max(1);
        let mut writers: Vec<SpanWriter> = counts
            .iter()
            .map(|&spans| SpanWriter::new(Vec::with_capacity(spans * bytes_per_span), 0))
            .collect();
        let mut assignment = assignment.into_iter();
        for_each_entry(&self.bytes, |entry| {
            if let Some(writer) = assignment.next().and_then(|part| writers.get_mut(part)) {
                writer.push(entry);
            }
        });
        for (slot, writer) in result.iter_mut().zip(writers) {
            *slot = writer.finish();
        }
        result
    }

    /// Groups the spans by trace id, in order of first appearance. Each group keeps its spans'
    /// resources and scopes.
    pub fn split_by_trace(&self) -> Vec<([u8; 16], TraceData)> {
        // First pass: which group each span goes to.
        let mut group_of_trace: HashMap<[u8; 16], usize> = HashMap::new();
        let mut groups: Vec<([u8; 16], usize)> = Vec::new();
        let mut assignment = Vec::with_capacity(self.span_count);
        for_each_entry(&self.bytes, |entry| {
            let trace_id = SpanView::new(entry.span.payload).trace_id();
            let group = *group_of_trace.entry(trace_id).or_insert_with(|| {
                groups.push((trace_id, 0));
                groups.len() - 1
            });
            groups[group].1 += 1;
            assignment.push(group);
        });
        if let [(trace_id, _)] = groups[..] {
            return vec![(trace_id, self.clone())];
        }
        // Second pass: copy each span into its group.
        let bytes_per_span = self.bytes.len() / self.span_count.max(1);
        let mut writers: Vec<SpanWriter> = groups
            .iter()
            .map(|&(_, spans)| SpanWriter::new(Vec::with_capacity(spans * bytes_per_span), 0))
            .collect();
        let mut assignment = assignment.into_iter();
        for_each_entry(&self.bytes, |entry| {
            if let Some(writer) = assignment.next().and_then(|group| writers.get_mut(group)) {
                writer.push(entry);
            }
        });
        groups
            .into_iter()
            .zip(writers)
            .map(|((trace_id, _), writer)| (trace_id, writer.finish()))
            .collect()
    }
}

/// Accumulates trace data by concatenating the encoded requests (repeated fields concatenate).
#[derive(Debug, Default)]
pub struct TraceDataBuilder {
    /// The only data pushed so far, kept uncopied until a second one arrives.
    single: Option<Bytes>,
    buf: Vec<u8>,
    encoded_len: usize,
    span_count: usize,
}

impl TraceDataBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pre-allocates room for `bytes` bytes of encoded data.
    pub fn with_capacity(bytes: usize) -> Self {
        TraceDataBuilder {
            buf: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    pub fn push(&mut self, data: &TraceData) {
        if data.bytes.is_empty() {
            return;
        }
        if self.encoded_len == 0 {
            self.single = Some(data.bytes.clone());
        } else {
            if let Some(single) = self.single.take() {
                self.buf.extend_from_slice(&single);
            }
            self.buf.extend_from_slice(&data.bytes);
        }
        self.encoded_len += data.bytes.len();
        self.span_count += data.span_count;
    }

    pub fn span_count(&self) -> usize {
        self.span_count
    }

    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    /// True when no spans were pushed.
    pub fn is_empty(&self) -> bool {
        self.span_count == 0
    }

    pub fn finish(self) -> TraceData {
        let bytes = match self.single {
            Some(single) => single,
            None => Bytes::from(self.buf),
        };
        TraceData {
            bytes,
            span_count: self.span_count,
        }
    }
}

/// Spans dropped by the receiver, reported to the client as a partial success.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Number of spans dropped; 0 means nothing was rejected.
    pub spans: u64,
    /// Why, for `partial_success.error_message`.
    pub message: String,
}

impl Rejected {
    fn invalid_ids(summary: &validate::Summary) -> Rejected {
        let Some((resource, scope, span)) = summary.first_invalid else {
            return Rejected::default();
        };
        let count = summary.invalid_id_spans;
        let noun = if count == 1 { "span" } else { "spans" };
        Rejected {
            spans: count as u64,
            message: format!(
                "{count} {noun} rejected: trace_id and span_id must be present and not all zeros \
                 (first at resource_spans[{resource}].scope_spans[{scope}].spans[{span}])"
            ),
        }
    }

    /// True when nothing was rejected.
    pub fn is_empty(&self) -> bool {
        self.spans == 0
    }

    /// The export response to send: a partial success when spans were rejected, else empty.
    pub fn to_response(&self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (!self.is_empty()).then(|| ExportTracePartialSuccess {
                rejected_spans: i64::try_from(self.spans).unwrap_or(i64::MAX),
                error_message: self.message.clone(),
            }),
        }
    }
}
