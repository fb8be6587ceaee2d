//! OTLP/HTTP `POST /v1/traces`: binary protobuf or JSON bodies, gzip/zstd/deflate encodings, and the
//! status codes and bodies the OTLP spec prescribes.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use prost::Message;
use threadline_otlp::{json, TraceData};
use tonic::Code;

use super::Ingest;
use crate::consumer::ConsumeError;
use crate::rpc_status::status_body;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }
}

pub struct HttpState {
    pub ingest: Arc<Ingest>,
    /// Largest accepted body, before and after decompression.
    pub max_body_size: usize,
    /// The whole body must arrive within this after the headers (`read_timeout`).
    pub body_timeout: std::time::Duration,
}

/// The body limit when `read_timeout` is 0. Upstream's 0 means no limit, which lets a client
/// that sends a byte a second hold a connection and a task forever; a minute is far more than an
/// SDK's 20 MiB takes on any working network.
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Builds the router serving `traces_path`.
pub fn router(state: Arc<HttpState>, traces_path: &str) -> axum::Router {
    axum::Router::new()
        .route(traces_path, axum::routing::post(export_traces))
        .with_state(state)
}

async fn export_traces(
    State(state): State<Arc<HttpState>>,
    mut headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(err) = state.ingest.authenticate("http", &mut headers) {
        let encoding = request_encoding(&headers).unwrap_or(Encoding::Protobuf);
        // Read and drop the body (bounded, not buffered), so that HTTP/1.1 clients read the
        // answer rather than a reset connection.
        discard_body(body, state.max_body_size).await;
        let code = match err {
            crate::auth::AuthError::Unauthenticated(_) => Code::Unauthenticated,
            crate::auth::AuthError::PermissionDenied(_) => Code::PermissionDenied,
        };
        return error_response(err.http_status(), encoding, code, &err.to_string());
    }
    let encoding = match request_encoding(&headers) {
        Some(encoding) => encoding,
        None => {
            let got = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none");
            return error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Encoding::Protobuf,
                Code::InvalidArgument,
                &format!("unsupported content type {got:?}: use {PROTOBUF} or {JSON}"),
            );
        }
    };
    let ingest = &state.ingest;
    if ingest.memory_pressure.is_refusing() {
        ingest.refuse_unread("http");
        // Read and drop the body frame by frame (no buffering): answering before the client has
        // sent it would make HTTP/1.1 clients see a reset connection instead of the 503.
        discard_body(body, state.max_body_size).await;
        return retry_later(
            encoding,
            "data refused due to high memory usage",
            ingest.retry_after,
        );
    }

    let collect = http_body_util::Limited::new(body, state.max_body_size).collect();
    let Ok(collected) = tokio::time::timeout(state.body_timeout, collect).await else {
        return error_response(
            StatusCode::REQUEST_TIMEOUT,
            encoding,
            Code::DeadlineExceeded,
            &format!(
                "the request body did not arrive within {:?} (read_timeout)",
                state.body_timeout
            ),
        );
    };
    let raw = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                encoding,
                Code::ResourceExhausted,
                &format!(
                    "request body exceeds the limit of {} bytes",
                    state.max_body_size
                ),
            )
        }
        Err(err) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                encoding,
                Code::InvalidArgument,
                &format!("reading the request body failed: {err}"),
            )
        }
    };
    // Decompressing and parsing JSON take milliseconds of CPU per request: on the blocking pool,
    // so that the async workers keep serving other clients. An uncompressed protobuf body is only
    // walked (about 0.1 ms per 512 spans), which costs less than the hand-over.
    let content_encoding = match ContentEncoding::of(&headers) {
        Ok(content_encoding) => content_encoding,
        Err((status, message)) => {
            return error_response(status, encoding, Code::InvalidArgument, &message)
        }
    };
    let max_body_size = state.max_body_size;
    let decode = move || decode_body(content_encoding, raw, max_body_size, encoding);
    let decoded = if content_encoding != ContentEncoding::Identity || encoding == Encoding::Json {
        match tokio::task::spawn_blocking(decode).await {
            Ok(decoded) => decoded,
            Err(err) => Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("decoding the request failed: {err}"),
            )),
        }
    } else {
        decode()
    };
    let (data, rejected) = match decoded {
        Ok(decoded) => decoded,
        Err((status, message)) => {
            return error_response(status, encoding, Code::InvalidArgument, &message)
        }
    };

    match ingest.consume(data, "http", &headers).await {
        Ok(()) => {
            let response = rejected.to_response();
            let body = match encoding {
                Encoding::Protobuf => response.encode_to_vec(),
                Encoding::Json => json::response_to_json(&response),
            };
            ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
        }
        Err(ConsumeError::Permanent(message)) => error_response(
            StatusCode::BAD_REQUEST,
            encoding,
            Code::InvalidArgument,
            &message,
        ),
        Err(ConsumeError::Retryable {
            message,
            retry_after,
        }) => retry_later(
            encoding,
            &message,
            retry_after.unwrap_or(ingest.retry_after),
        ),
    }
}

/// Undoes the content encoding and decodes the request.
fn decode_body(
    content_encoding: ContentEncoding,
    raw: Bytes,
    limit: usize,
    encoding: Encoding,
) -> Result<(TraceData, threadline_otlp::Rejected), (StatusCode, String)> {
    let body = content_encoding.decode(raw, limit)?;
    let bad_request = |message: String| (StatusCode::BAD_REQUEST, message);
    match encoding {
        Encoding::Protobuf => TraceData::from_request_bytes(body)
            .map_err(|e| bad_request(format!("malformed protobuf: {e}"))),
        Encoding::Json => {
            let request = json::request_from_json(&body)
                .map_err(|e| bad_request(format!("malformed OTLP/JSON: {e}")))?;
            // JSON is re-encoded once; the validation pass then treats it like any protobuf request.
            TraceData::from_request_bytes(TraceData::from_request(&request).into_bytes())
                .map_err(|e| bad_request(format!("invalid OTLP/JSON: {e}")))
        }
    }
}

async fn discard_body(mut body: Body, limit: usize) {
    let mut read = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            read += data.len();
            if read > limit {
                break;
            }
        }
    }
}

fn request_encoding(headers: &HeaderMap) -> Option<Encoding> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media_type = content_type.split(';').next()?.trim();
    if media_type.eq_ignore_ascii_case(PROTOBUF) {
        Some(Encoding::Protobuf)
    } else if media_type.eq_ignore_ascii_case(JSON) {
        Some(Encoding::Json)
    } else {
        None
    }
}

/// A request's `Content-Encoding`, read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ContentEncoding {
    Identity,
    Gzip,
    Deflate,
    Zstd,
}

impl ContentEncoding {
    /// The encoding `headers` name (none, or not text: identity); an unknown one is refused.
    fn of(headers: &HeaderMap) -> Result<Self, (StatusCode, String)> {
        let name = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "" | "identity" => Ok(ContentEncoding::Identity),
            "gzip" | "x-gzip" => Ok(ContentEncoding::Gzip),
            "deflate" => Ok(ContentEncoding::Deflate),
            "zstd" => Ok(ContentEncoding::Zstd),
            other => Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Encoding {other:?}: use gzip, zstd, deflate or identity"
                ),
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            ContentEncoding::Identity => "identity",
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Deflate => "deflate",
            ContentEncoding::Zstd => "zstd",
        }
    }

    /// Undoes the encoding, refusing output beyond `limit` bytes (a small gzip body can expand
    /// enormously).
    fn decode(self, raw: Bytes, limit: usize) -> Result<Bytes, (StatusCode, String)> {
        let reader: Box<dyn Read> = match self {
            ContentEncoding::Identity => return Ok(raw),
            ContentEncoding::Gzip => Box::new(flate2::read::GzDecoder::new(&raw[..])),
            ContentEncoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(&raw[..])),
            ContentEncoding::Zstd => match zstd::stream::read::Decoder::new(&raw[..]) {
                Ok(decoder) => Box::new(decoder),
                Err(e) => return Err((StatusCode::BAD_REQUEST, format!("invalid zstd body: {e}"))),
            },
        };
        let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
        let read = reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("invalid {} body: {e}", self.name()),
                )
            })?;
        if read > limit {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("decompressed request body exceeds the limit of {limit} bytes"),
            ));
        }
        Ok(Bytes::from(out))
    }
}

/// Undoes `Content-Encoding`, refusing output beyond `limit` bytes (a small gzip body can expand enormously).
pub fn decompress(
    headers: &HeaderMap,
    raw: Bytes,
    limit: usize,
) -> Result<Bytes, (StatusCode, String)> {
    ContentEncoding::of(headers)?.decode(raw, limit)
}

fn retry_later(encoding: Encoding, message: &str, delay: std::time::Duration) -> Response {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        encoding,
        Code::Unavailable,
        message,
    );
    let seconds = delay.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// An error response whose body is a `google.rpc.Status` in the request's encoding, as OTLP/HTTP prescribes.
fn error_response(status: StatusCode, encoding: Encoding, code: Code, message: &str) -> Response {
    let body = match encoding {
        Encoding::Protobuf => status_body(code, message),
        Encoding::Json => serde_json::json!({ "code": code as i32, "message": message })
            .to_string()
            .into_bytes(),
    };
    (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}
