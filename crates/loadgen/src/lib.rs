//! Load generator and counting sink for benchmarking OTLP trace collectors.
//!
//! - [`run_loadgen`] sends realistic traces (10 spans across four services, ~9 attributes per
//!   span, error and slow traces) over OTLP/gRPC or OTLP/HTTP at a fixed rate or as fast as the
//!   receiver accepts, and reports what was acknowledged. Requests are pre-encoded once and only
//!   their ids and timestamps are patched per send, so the generator stays cheap next to the
//!   collector it measures.
//! - [`run_sink`] receives OTLP and counts spans, printing and serving the counts as JSON; it
//!   can simulate an outage to exercise retries.

mod codec;
mod exporter;
mod loadgen;
mod pool;
mod sink;
mod traces;

pub use loadgen::{
    generate_load, run_loadgen, Compression, LoadgenArgs, LoadgenError, LoadgenReport, Protocol,
};
pub use pool::{MalformedRequest, PoolOptions, RenderedRequest, RequestPool};
pub use sink::{run_sink, Sink, SinkArgs, SinkError, SinkStats};
pub use traces::SPANS_PER_TRACE;
