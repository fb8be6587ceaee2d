//! OTLP/JSON: the proto3 JSON mapping with OTLP's deviations
//! (<https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>).
//!
//! - trace/span ids are hex strings (case-insensitive on input), not base64;
//! - enums are written as integers; on input enum names are accepted too;
//! - 64-bit integers are written as decimal strings; on input numbers or strings are accepted;
//! - keys are lowerCamelCase; on input the original snake_case names are accepted too, like the
//!   OpenTelemetry Collector does;
//! - unknown fields are ignored, `null` means "default".
//!
//! `opentelemetry-proto`'s `with-serde` derives are not used: they reject enum names and `null`,
//! silently ignore snake_case keys, accept ids of any length, write every default field
//! (`"resource":null`, `"partialSuccess":null`), write `rejectedSpans` as a number and report
//! errors without a field path. The tests check that each side reads what the other writes.

mod decode;
mod encode;

#[cfg(test)]
mod tests;

pub use decode::{request_from_json, response_from_json};
pub use encode::{request_to_json, response_to_json};

/// Why an OTLP/JSON body was refused (HTTP 400).
#[derive(thiserror::Error, Debug)]
pub enum JsonError {
    #[error("invalid JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    /// Well-formed JSON that is not a valid OTLP message; `path` names the field, e.g.
    /// `resourceSpans[0].scopeSpans[0].spans[2].traceId`.
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: String },
}
