//! The tag RPCs: `SearchTags`, `SearchTagsV2`, `SearchTagValues`, `SearchTagValuesV2`.
//!
//! Each runs its HTTP twin through the store's own router, as Tempo's frontend builds an HTTP
//! request from each streaming request (grafana/tempo ad33aa8 `modules/frontend/tag_handlers.go`,
//! `pkg/api/search_tags.go` `BuildSearchTagsRequest` / `BuildSearchTagValuesRequest`), so the
//! gRPC answers are the HTTP answers whatever the tag endpoints learn. The HTTP answer comes
//! whole, so the stream is one message: Tempo's final message, which holds every tag (its
//! partial messages, the tags new since the previous one, come at most every 500 ms).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::Value as Json;
use tower::ServiceExt;

use super::{headers, once, status, Answer, Context};
use crate::api;
use crate::tempopb as pb;

/// The largest HTTP answer read back (tag listings are small; Tempo caps them at 5 MB).
const MAX_ANSWER_BYTES: usize = 64 << 20;

pub(super) async fn tags_v1(
    context: Context,
    request: tonic::Request<pb::SearchTagsRequest>,
) -> Answer<pb::SearchTagsResponse> {
    let json = run(
        &context,
        "/api/search/tags",
        tags_query(request.get_ref()),
        &request,
    )
    .await;
    Ok(tonic::Response::new(once(json.map(|json| {
        pb::SearchTagsResponse {
            tag_names: strings(&json, "tagNames"),
            metrics: Some(metrics(&json)),
        }
    }))))
}

pub(super) async fn tags_v2(
    context: Context,
    request: tonic::Request<pb::SearchTagsRequest>,
) -> Answer<pb::SearchTagsV2Response> {
    let path = "/api/v2/search/tags";
    let json = run(&context, path, tags_query(request.get_ref()), &request).await;
    Ok(tonic::Response::new(once(json.map(|json| {
        let scopes = list(&json, "scopes")
            .map(|scope| pb::SearchTagsV2Scope {
                name: scope
                    .get("name")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_string(),
                tags: strings(scope, "tags"),
            })
            .collect();
        pb::SearchTagsV2Response {
            scopes,
            metrics: Some(metrics(&json)),
        }
    }))))
}

pub(super) async fn tag_values_v1(
    context: Context,
    request: tonic::Request<pb::SearchTagValuesRequest>,
) -> Answer<pb::SearchTagValuesResponse> {
    let path = format!(
        "/api/search/tag/{}/values",
        encode(&request.get_ref().tag_name)
    );
    let json = run(&context, &path, values_query(request.get_ref()), &request).await;
    Ok(tonic::Response::new(once(json.map(|json| {
        pb::SearchTagValuesResponse {
            tag_values: strings(&json, "tagValues"),
            metrics: Some(metrics(&json)),
        }
    }))))
}

pub(super) async fn tag_values_v2(
    context: Context,
    request: tonic::Request<pb::SearchTagValuesRequest>,
) -> Answer<pb::SearchTagValuesV2Response> {
    let path = format!(
        "/api/v2/search/tag/{}/values",
        encode(&request.get_ref().tag_name)
    );
    let json = run(&context, &path, values_query(request.get_ref()), &request).await;
    Ok(tonic::Response::new(once(json.map(|json| {
        let tag_values = list(&json, "tagValues")
            .map(|v| pb::TagValue {
                r#type: text(v, "type"),
                value: text(v, "value"),
            })
            .collect();
        pb::SearchTagValuesV2Response {
            tag_values,
            metrics: Some(metrics(&json)),
        }
    }))))
}

/// `BuildSearchTagsRequest`'s parameters (zero means not given), and `limit` for
/// `maxTagsPerScope`.
fn tags_query(r: &pb::SearchTagsRequest) -> Vec<(&'static str, String)> {
    let mut query = bounds(r.start, r.end);
    push(&mut query, "scope", &r.scope);
    push(&mut query, "q", &r.query);
    if r.max_tags_per_scope != 0 {
        query.push(("limit", r.max_tags_per_scope.to_string()));
    }
    query
}

/// `BuildSearchTagValuesRequest`'s parameters.
fn values_query(r: &pb::SearchTagValuesRequest) -> Vec<(&'static str, String)> {
    let mut query = bounds(r.start, r.end);
    push(&mut query, "q", &r.query);
    if r.max_tag_values != 0 {
        query.push(("limit", r.max_tag_values.to_string()));
    }
    if r.stale_value_threshold != 0 {
        query.push(("maxStaleValues", r.stale_value_threshold.to_string()));
    }
    query
}

fn bounds(start: u32, end: u32) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if start != 0 {
        query.push(("start", start.to_string()));
    }
    if end != 0 {
        query.push(("end", end.to_string()));
    }
    query
}

fn push(query: &mut Vec<(&'static str, String)>, name: &'static str, value: &str) {
    if !value.is_empty() {
        query.push((name, value.to_string()));
    }
}

/// Runs `GET path?query` through the HTTP router with the request's metadata as headers, and
/// reads the JSON answer; an error answer becomes the gRPC status of its HTTP status.
async fn run<M>(
    context: &Context,
    path: &str,
    query: Vec<(&'static str, String)>,
    request: &tonic::Request<M>,
) -> Result<Json, tonic::Status> {
    let query: Vec<String> = query
        .iter()
        .map(|(name, value)| format!("{name}={}", encode(value)))
        .collect();
    let uri = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", query.join("&"))
    };
    let mut http = axum::http::Request::new(Body::empty());
    *http.method_mut() = Method::GET;
    *http.uri_mut() = uri
        .parse()
        .map_err(|e| tonic::Status::invalid_argument(format!("invalid request: {e}")))?;
    *http.headers_mut() = forwarded(headers(request));
    let response = match context.http.clone().oneshot(http).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let code = response.status();
    let body = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|e| tonic::Status::internal(format!("reading the answer: {e}")))?;
    if code != StatusCode::OK {
        let message = String::from_utf8_lossy(&body).into_owned();
        return Err(status(api::error(code, message)));
    }
    serde_json::from_slice(&body)
        .map_err(|e| tonic::Status::internal(format!("the HTTP answer is not JSON: {e}")))
}

/// The metadata that means something to the HTTP API (tenant, authorization, ...), without
/// gRPC's own headers.
fn forwarded(mut headers: HeaderMap) -> HeaderMap {
    for name in [
        "content-type",
        "te",
        "grpc-timeout",
        "grpc-encoding",
        "grpc-accept-encoding",
    ] {
        headers.remove(name);
    }
    headers.insert("accept", HeaderValue::from_static("application/json"));
    headers
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn list<'a>(json: &'a Json, key: &str) -> impl Iterator<Item = &'a Json> {
    json.get(key)
        .and_then(Json::as_array)
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
}

fn strings(json: &Json, key: &str) -> Vec<String> {
    list(json, key)
        .filter_map(Json::as_str)
        .map(str::to_string)
        .collect()
}

fn text(json: &Json, key: &str) -> String {
    json.get(key)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The answer's `metrics` when it has them; else one job, done.
fn metrics(json: &Json) -> pb::MetadataMetrics {
    let figure = |key: &str| {
        json.get("metrics")
            .and_then(|m| m.get(key))
            .and_then(|v| match v {
                Json::String(s) => s.parse().ok(),
                v => v.as_u64(),
            })
    };
    let jobs = figure("totalJobs").unwrap_or(1);
    pb::MetadataMetrics {
        inspected_bytes: figure("inspectedBytes").unwrap_or(0),
        total_jobs: u32::try_from(jobs).unwrap_or(u32::MAX),
        completed_jobs: u32::try_from(figure("completedJobs").unwrap_or(jobs)).unwrap_or(u32::MAX),
        total_blocks: u32::try_from(figure("totalBlocks").unwrap_or(0)).unwrap_or(u32::MAX),
        total_block_bytes: figure("totalBlockBytes").unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_tempos_and_encoded() {
        let r = pb::SearchTagValuesRequest {
            tag_name: "resource.service.name".into(),
            query: "{ span.a = \"x y\" }".into(),
            start: 10,
            max_tag_values: 5,
            ..Default::default()
        };
        let q = values_query(&r);
        assert_eq!(
            q,
            vec![
                ("start", "10".to_string()),
                ("q", "{ span.a = \"x y\" }".to_string()),
                ("limit", "5".to_string())
            ]
        );
        assert_eq!(
            encode("{ a = \"é\" }"),
            "%7B%20a%20%3D%20%22%C3%A9%22%20%7D"
        );
        assert_eq!(encode("span.http.method"), "span.http.method");
    }
}
