//! The `google.rpc` messages OTLP uses for errors: `Status` (HTTP error bodies, gRPC status details)
//! and `RetryInfo` (the server's back-off hint).

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tonic::{Code, Status};

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// An UNAVAILABLE status carrying RetryInfo, so OTLP clients wait `delay` before retrying.
pub fn retryable_status(message: String, delay: Duration) -> Status {
    let retry_info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let details = RpcStatus {
        code: Code::Unavailable as i32,
        message: message.clone(),
        details: vec![Any {
            type_url: RETRY_INFO_TYPE_URL.to_string(),
            value: retry_info.encode_to_vec(),
        }],
    };
    Status::with_details(
        Code::Unavailable,
        message,
        Bytes::from(details.encode_to_vec()),
    )
}

/// The protobuf-encoded `Status` body that OTLP/HTTP prescribes for 4xx and 5xx responses.
pub fn status_body(code: Code, message: &str) -> Vec<u8> {
    RpcStatus {
        code: code as i32,
        message: message.to_string(),
        details: Vec::new(),
    }
    .encode_to_vec()
}
