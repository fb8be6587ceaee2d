//! Grafana Tempo's HTTP API over the store, with Tempo's paths, parameters and bodies, so that
//! Grafana's Tempo data source works against Threadline.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use threadline_traceql::model::{Span, Trace, Value};

use crate::engine::{Found, Progress, SearchRequest, SearchStats, Store, SINGLE_TENANT};
use crate::error::StoreError;
use crate::search::{Matcher, SearchError};

/// Tempo's HTTP API, with its gRPC streaming API on the same port (see [`crate::api_grpc`]).
pub fn router(store: Arc<Store>) -> Router {
    let http = Router::new()
        .route("/ready", get(|| async { "ready" }))
        .route("/api/echo", get(|| async { "echo" }))
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/api/traces/{id}", get(trace_v1))
        .route("/api/v2/traces/{id}", get(trace_v2))
        .route("/api/search", get(search))
        .route(
            "/api/threadline/search/stream",
            get(crate::api_search_stream::search_stream),
        )
        .route("/api/search/tags", get(crate::api_tags::tags_v1))
        .route("/api/v2/search/tags", get(crate::api_tags::tags_v2))
        .route(
            "/api/search/tag/{name}/values",
            get(crate::api_tags::tag_values_v1),
        )
        .route(
            "/api/v2/search/tag/{name}/values",
            get(crate::api_tags::tag_values_v2),
        )
        .route(
            "/api/metrics/query_range",
            get(crate::api_metrics::query_range),
        )
        .route("/api/metrics/query", get(crate::api_metrics::query_instant))
        .merge(crate::ui::router())
        .merge(crate::api_doctor::router(store.clone()))
        .merge(crate::api_service_graph::router())
        .with_state(store.clone())
        .layer(axum::middleware::from_fn_with_state(
            crate::api_admission::Outstanding::new(
                store.config().query_frontend.max_outstanding_per_tenant,
            ),
            crate::api_admission::limit_outstanding,
        ));
    let auth = store.auth().cloned();
    let router = crate::api_grpc::beside(http, store);
    match auth {
        // Outermost, so that the gRPC streaming API beside the HTTP one is covered too.
        Some(auth) => router.layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::require,
        )),
        None => router,
    }
}

/// An error answer: Tempo answers errors in plain text.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, self.message).into_response()
    }
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

/// An engine error as the status its kind means (Tempo's): 400 the request, 404 no such tenant,
/// 503 try again later, 500 a real fault.
pub(crate) fn engine_error(err: anyhow::Error) -> ApiError {
    let status = match StoreError::of(&err) {
        Some(StoreError::InvalidRequest(_)) => StatusCode::BAD_REQUEST,
        Some(StoreError::UnknownTenant(_)) => StatusCode::NOT_FOUND,
        Some(StoreError::Unavailable(_) | StoreError::BlockGone { .. }) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Some(StoreError::Fault(_)) | None => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, format!("{err:#}"))
}

/// The tenant of a request: `X-Scope-OrgID` when multitenancy is on (required, and 404 when
/// the store holds nothing for it), else Tempo's `single-tenant`.
pub(crate) fn tenant(store: &Store, headers: &HeaderMap) -> Result<String, ApiError> {
    if !store.config().multitenancy_enabled {
        return Ok(SINGLE_TENANT.to_string());
    }
    let id = headers
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match id {
        Some(id) if valid_tenant(id) => {
            if store.tenants().iter().any(|t| t == id) {
                Ok(id.to_string())
            } else {
                Err(engine_error(
                    StoreError::UnknownTenant(id.to_string()).into(),
                ))
            }
        }
        Some(id) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("invalid X-Scope-OrgID {id:?}: use letters, digits, '-', '_' and '.'"),
        )),
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "no org id: set the X-Scope-OrgID header",
        )),
    }
}

/// Tenant ids become object paths: letters, digits, `-`, `_` and `.` only (not `.` or `..`).
pub fn valid_tenant(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 150
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The Tempo version reported to Grafana. Grafana's Tempo data source reads `version` from
/// here and enables a feature only when `semver.gte(version, minimum)`, with the minimums in
/// `featuresToTempoVersion` (grafana/grafana `public/app/plugins/datasource/tempo/datasource.ts`:
/// search streaming 2.2.0, metrics streaming 2.7.0); Threadline's own version (0.x) would
/// disable both. 2.7.0 is the lowest version that enables every gated feature.
pub const TEMPO_COMPATIBLE_VERSION: &str = "2.7.0";

async fn buildinfo() -> impl IntoResponse {
    axum::Json(json!({
        "version": TEMPO_COMPATIBLE_VERSION,
        "threadlineVersion": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "implementation": "threadline",
    }))
}

/// Parses a trace id as Tempo does: up to 32 hex digits, left-padded with zeros.
pub fn parse_trace_id(text: &str) -> Result<[u8; 16], String> {
    let text = text.trim();
    if text.is_empty() || text.len() > 32 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid trace id {text:?}: expected 1 to 32 hexadecimal digits"
        ));
    }
    let padded = format!("{text:0>32}");
    let mut id = [0u8; 16];
    hex::decode_to_slice(&padded, &mut id).map_err(|e| format!("invalid trace id: {e}"))?;
    Ok(id)
}

pub(crate) fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/protobuf") || v.contains("application/x-protobuf"))
}

/// `start` and `end` of a trace lookup (unix seconds, as Tempo's).
#[derive(Debug, Default, Deserialize)]
pub struct TraceParams {
    start: Option<String>,
    end: Option<String>,
}

/// The header set on a trace answer when the trace lies wholly outside the `start`/`end` asked:
/// Tempo would answer 404 (grafana/tempo #4889); Threadline finds it (every block's index is in
/// memory, so looking in all of them costs a binary search each) and says so.
pub const OUTSIDE_RANGE_HEADER: &str = "threadline-trace-outside-range";

async fn load_trace(
    store: &Store,
    headers: &HeaderMap,
    id: &str,
    params: &TraceParams,
) -> Result<(threadline_otlp::TraceData, bool), ApiError> {
    let tenant = tenant(store, headers)?;
    let trace_id = parse_trace_id(id).map_err(|m| error(StatusCode::BAD_REQUEST, m))?;
    let start: Option<u64> = parse_number("start", &params.start)?;
    let end: Option<u64> = parse_number("end", &params.end)?;
    if let (Some(start), Some(end)) = (start, end) {
        if start > end {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid start: must be before end",
            ));
        }
    }
    match store.trace_by_id(&tenant, &trace_id).await {
        Ok(Some(data)) => {
            let summary = crate::model::TraceSummary::of(&data);
            let outside = start
                .is_some_and(|s| summary.end_unix_nano < s.saturating_mul(1_000_000_000))
                || end.is_some_and(|e| {
                    summary.start_unix_nano
                        > e.saturating_mul(1_000_000_000).saturating_add(999_999_999)
                });
            Ok((data, outside))
        }
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            format!("trace {} not found", hex::encode(trace_id)),
        )),
        Err(err) => Err(engine_error(err)),
    }
}

fn resource_spans_json(data: &threadline_otlp::TraceData) -> Result<Json, ApiError> {
    let request = data.to_request().map_err(|e| engine_error(e.into()))?;
    let encoded = threadline_otlp::json::request_to_json(&request);
    let mut value: Json = serde_json::from_slice(&encoded).map_err(|e| engine_error(e.into()))?;
    Ok(value
        .get_mut("resourceSpans")
        .map(Json::take)
        .unwrap_or_else(|| json!([])))
}

async fn trace_v1(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    Query(params): Query<TraceParams>,
    headers: HeaderMap,
) -> Response {
    let (data, outside) = match load_trace(&store, &headers, &id, &params).await {
        Ok(found) => found,
        Err(response) => return response.into_response(),
    };
    let mut response = trace_v1_body(&headers, data);
    if outside {
        response.headers_mut().insert(
            OUTSIDE_RANGE_HEADER,
            header::HeaderValue::from_static("true"),
        );
    }
    response
}

fn trace_v1_body(headers: &HeaderMap, data: threadline_otlp::TraceData) -> Response {
    if wants_protobuf(headers) {
        // tempopb.Trace is `repeated ResourceSpans batches = 1`: the stored bytes as they are.
        return (
            [(header::CONTENT_TYPE, "application/protobuf")],
            data.into_bytes(),
        )
            .into_response();
    }
    match resource_spans_json(&data) {
        Ok(spans) => axum::Json(json!({ "batches": spans })).into_response(),
        Err(response) => response.into_response(),
    }
}

async fn trace_v2(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    Query(params): Query<TraceParams>,
    headers: HeaderMap,
) -> Response {
    let (data, outside) = match load_trace(&store, &headers, &id, &params).await {
        Ok(found) => found,
        Err(response) => return response.into_response(),
    };
    let mut response = trace_v2_body(&headers, data);
    if outside {
        response.headers_mut().insert(
            OUTSIDE_RANGE_HEADER,
            header::HeaderValue::from_static("true"),
        );
    }
    response
}

fn trace_v2_body(headers: &HeaderMap, data: threadline_otlp::TraceData) -> Response {
    if wants_protobuf(headers) {
        // TraceByIDResponse { Trace trace = 1; ... }: the trace as field 1.
        let trace = data.into_bytes();
        let mut body = Vec::with_capacity(trace.len() + 6);
        body.push(0x0a);
        let mut len = trace.len() as u64;
        while len >= 0x80 {
            body.push((len as u8) | 0x80);
            len >>= 7;
        }
        body.push(len as u8);
        body.extend_from_slice(&trace);
        return ([(header::CONTENT_TYPE, "application/protobuf")], body).into_response();
    }
    match resource_spans_json(&data) {
        Ok(spans) => {
            axum::Json(json!({ "trace": { "resourceSpans": spans }, "status": "COMPLETE" }))
                .into_response()
        }
        Err(response) => response.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct SearchParams {
    pub q: Option<String>,
    pub tags: Option<String>,
    #[serde(rename = "minDuration")]
    pub min_duration: Option<String>,
    #[serde(rename = "maxDuration")]
    pub max_duration: Option<String>,
    pub limit: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub spss: Option<String>,
}

fn parse_number<T: std::str::FromStr>(
    name: &str,
    value: &Option<String>,
) -> Result<Option<T>, ApiError> {
    match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("invalid {name} {v:?}: expected a whole number"),
            )
        }),
    }
}

fn parse_duration(name: &str, value: &Option<String>) -> Result<Option<u64>, ApiError> {
    match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => threadline_config::settings::duration::parse(v)
            .map(|d| Some(d.as_nanos() as u64))
            .map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid {name} {v:?}: {e}"),
                )
            }),
    }
}

/// The search a request asks: bounds for the engine, the matcher, and spans per span set.
/// The HTTP and the gRPC search share it.
pub(crate) fn parse_search(
    params: &SearchParams,
) -> Result<(SearchRequest, Matcher, usize), ApiError> {
    let limit: Option<usize> = parse_number("limit", &params.limit)?;
    let start: Option<u64> = parse_number("start", &params.start)?;
    let end: Option<u64> = parse_number("end", &params.end)?;
    let spss: Option<usize> = parse_number("spss", &params.spss)?;
    let min = parse_duration("minDuration", &params.min_duration)?;
    let max = parse_duration("maxDuration", &params.max_duration)?;
    if let (Some(min), Some(max)) = (min, max) {
        if min > max {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid maxDuration: must be greater than minDuration",
            ));
        }
    }
    if let (Some(start), Some(end)) = (start, end) {
        if start > end {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid start: must be before end",
            ));
        }
    }
    let matcher =
        Matcher::parse(params.q.as_deref(), params.tags.as_deref()).map_err(|e| match e {
            SearchError::Query(message) => error(StatusCode::BAD_REQUEST, message),
        })?;
    let request = SearchRequest {
        start_unix_nano: start.map(|s| s.saturating_mul(1_000_000_000)),
        end_unix_nano: end.map(|e| e.saturating_mul(1_000_000_000).saturating_add(999_999_999)),
        min_duration_nanos: min,
        max_duration_nanos: max,
        limit: limit.unwrap_or(20),
        service_hint: matcher.service_hint(),
        error_hint: matcher.error_hint(),
    };
    Ok((request, matcher, spss.unwrap_or(3)))
}

/// One found trace as Tempo's `TraceSearchMetadata` JSON (the gRPC search sends the same,
/// as protobuf).
pub(crate) fn trace_json(f: &crate::engine::Found, matcher: &Matcher, spss: usize) -> Json {
    let spans = matcher.matches(&f.trace).unwrap_or_default();
    let span_set = span_set_json(&f.trace, &spans, spss);
    json!({
        "traceID": hex::encode(f.trace_id),
        "rootServiceName": if f.summary.root_service.is_empty() { "<root span not yet received>" } else { &f.summary.root_service },
        "rootTraceName": f.summary.root_name,
        "startTimeUnixNano": f.summary.start_unix_nano.to_string(),
        "durationMs": f.summary.duration_nanos() / 1_000_000,
        "spanSet": span_set,
        "spanSets": [span_set],
        "serviceStats": crate::api_insight::service_stats(&f.trace),
    })
}

async fn search(
    State(store): State<Arc<Store>>,
    Query(params): Query<SearchParams>,
    headers: HeaderMap,
) -> Response {
    let tenant = match tenant(&store, &headers) {
        Ok(t) => t,
        Err(response) => return response.into_response(),
    };
    let (request, matcher, spss) = match parse_search(&params) {
        Ok(parsed) => parsed,
        Err(response) => return response.into_response(),
    };
    let (found, stats) = match run_search(&store, &tenant, &request, &matcher, &|_| {}).await {
        Ok(result) => result,
        Err(err) => return engine_error(err).into_response(),
    };
    let traces: Vec<Json> = found
        .iter()
        .map(|f| trace_json(f, &matcher, spss))
        .collect();
    axum::Json(json!({
        "traces": traces,
        "metrics": crate::api_search_metrics::metrics_json(&stats),
    }))
    .into_response()
}

/// Runs a parsed search: the traces `matcher` matches, skipping blocks that lack an attribute
/// every match needs. `/api/search`, its NDJSON stream and the gRPC search share it.
pub(crate) async fn run_search(
    store: &Store,
    tenant: &str,
    request: &SearchRequest,
    matcher: &Matcher,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> anyhow::Result<(Vec<Found>, SearchStats)> {
    let matches = |trace: &Trace| matcher.matches(trace).is_some();
    let options = crate::engine::SearchOptions {
        required_keys: crate::attr_keys::matcher_required_keys(matcher),
        ..Default::default()
    };
    store
        .search_with(tenant, request, &options, &matches, progress)
        .await
}

pub(crate) fn value_json(value: &Value) -> Json {
    match value {
        Value::Str(s) => json!({ "stringValue": s }),
        Value::Int(i) => json!({ "intValue": i.to_string() }),
        Value::Float(f) => json!({ "doubleValue": f }),
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Array(items) => {
            json!({ "arrayValue": { "values": items.iter().map(value_json).collect::<Vec<_>>() } })
        }
    }
}

/// Intrinsics Tempo leaves out of a span's attributes: they are the span's own fields
/// (`name`, `durationNanos`, `spanID`) or the trace's (grafana/tempo ad33aa8
/// `pkg/traceql/engine.go` asTraceSearchMetadata).
const TEMPO_OMITTED_INTRINSICS: &[&str] = &[
    "name",
    "duration",
    "traceDuration",
    "rootServiceName",
    "rootName",
    "trace:id",
    "span:id",
];

/// Tempo keys a selected attribute by its name without the scope (`Attribute.Name`):
/// `resource.service.name` is answered as `service.name`, which is what Traces Drilldown's
/// structure tab looks up (`src/utils/trace-merge/tree-node.ts`), and `event.exception.type`
/// as `exception.type`. The TraceQL crate keys them as written, scope included.
fn tempo_attribute_key(key: &str) -> &str {
    ["span.", "resource.", "event.", "link.", "instrumentation."]
        .iter()
        .find_map(|scope| key.strip_prefix(scope))
        .unwrap_or(key)
}

fn span_set_json(trace: &Trace, matched: &[threadline_traceql::SpanMatch], spss: usize) -> Json {
    let spans: Vec<Json> = matched
        .iter()
        .take(spss)
        .filter_map(|m| {
            let span: &Span = trace.spans.get(m.span)?;
            let attributes: Vec<Json> = m
                .attributes
                .iter()
                .map(|(key, value)| (tempo_attribute_key(key), value))
                .chain(
                    m.intrinsics
                        .iter()
                        .filter(|(key, _)| !TEMPO_OMITTED_INTRINSICS.contains(&key.as_str()))
                        .map(|(key, value)| (key.as_str(), value)),
                )
                .map(|(key, value)| json!({ "key": key, "value": value_json(value) }))
                .collect();
            Some(json!({
                "spanID": hex::encode(span.span_id),
                "name": span.name,
                "startTimeUnixNano": span.start_unix_nano.to_string(),
                "durationNanos": span.duration_nanos().to_string(),
                "attributes": attributes,
            }))
        })
        .collect();
    json!({ "spans": spans, "matched": matched.len() })
}
