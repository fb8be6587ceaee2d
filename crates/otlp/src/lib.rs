//! OTLP trace data model.
//!
//! Trace data travels through the pipeline as the encoded `ExportTraceServiceRequest` it arrived
//! as ([`TraceData`]): validated once by the receiver, then batched by concatenating bytes, split
//! and filtered by copying byte ranges, and read through zero-copy views ([`SpanView`] and
//! friends). [`json`] converts OTLP/JSON to and from the prost types re-exported as [`proto`].

pub use opentelemetry_proto as proto;

pub mod json;
pub mod traces;
pub mod wire;

pub use traces::{
    count_spans, AnyValueView, Attributes, DecodeError, EncodedValue, RawAttributes, Rejected,
    ResourceView, ScopeView, SliceWriter, SpanView, TraceData, TraceDataBuilder, TraceSlice,
};
