//! The `google.rpc` messages OTLP servers answer errors with: `Status` (gRPC status details, the
//! body of OTLP/HTTP error responses) and `RetryInfo` (the server's throttle hint).

use std::time::Duration;

use prost::Message;

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAny {
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

impl RpcStatus {
    /// The `RetryInfo` detail, if the status carries one. `Some(None)` is a RetryInfo without a
    /// delay: it still makes `RESOURCE_EXHAUSTED` retryable.
    pub fn retry_info(&self) -> Option<Option<Duration>> {
        self.details
            .iter()
            .find(|detail| detail.type_url == RETRY_INFO_TYPE_URL)
            .and_then(|detail| RetryInfo::decode(detail.value.as_slice()).ok())
            .map(|info| info.retry_delay.and_then(to_duration))
    }

    /// The type names of the details, for error messages (`[google.rpc.RetryInfo]`).
    pub fn detail_types(&self) -> Vec<&str> {
        self.details
            .iter()
            .map(|d| d.type_url.rsplit('/').next().unwrap_or(&d.type_url))
            .collect()
    }
}

fn to_duration(delay: ProtoDuration) -> Option<Duration> {
    let seconds = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos).ok()?;
    Some(Duration::new(seconds, 0) + Duration::from_nanos(u64::from(nanos)))
}

/// An UNAVAILABLE status carrying RetryInfo, so OTLP clients wait `delay` before retrying.
pub fn retryable_status(message: String, delay: Duration) -> tonic::Status {
    let retry_info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let details = RpcStatus {
        code: tonic::Code::Unavailable as i32,
        message: message.clone(),
        details: vec![ProtoAny {
            type_url: RETRY_INFO_TYPE_URL.to_string(),
            value: retry_info.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(
        tonic::Code::Unavailable,
        message,
        bytes::Bytes::from(details.encode_to_vec()),
    )
}

/// The protobuf-encoded `Status` body that OTLP/HTTP prescribes for 4xx and 5xx responses.
pub fn status_body(code: tonic::Code, message: &str) -> Vec<u8> {
    RpcStatus {
        code: code as i32,
        message: message.to_string(),
        details: Vec::new(),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_retry_delay_among_other_details() {
        let status = RpcStatus {
            code: 8,
            message: "slow down".into(),
            details: vec![
                ProtoAny {
                    type_url: "type.googleapis.com/google.rpc.DebugInfo".into(),
                    value: vec![],
                },
                ProtoAny {
                    type_url: RETRY_INFO_TYPE_URL.into(),
                    value: RetryInfo {
                        retry_delay: Some(ProtoDuration {
                            seconds: 2,
                            nanos: 500_000_000,
                        }),
                    }
                    .encode_to_vec(),
                },
            ],
        };
        let decoded = RpcStatus::decode(status.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            decoded.retry_info(),
            Some(Some(Duration::from_millis(2500)))
        );
        assert_eq!(
            decoded.detail_types(),
            vec!["google.rpc.DebugInfo", "google.rpc.RetryInfo"]
        );
    }

    #[test]
    fn negative_delays_are_ignored() {
        let status = RpcStatus {
            code: 8,
            message: String::new(),
            details: vec![ProtoAny {
                type_url: RETRY_INFO_TYPE_URL.into(),
                value: RetryInfo {
                    retry_delay: Some(ProtoDuration {
                        seconds: -1,
                        nanos: 0,
                    }),
                }
                .encode_to_vec(),
            }],
        };
        assert_eq!(status.retry_info(), Some(None));
    }
}
