//! `GET /api/threadline/doctor?since=1h`: the doctor's trace checks (`threadline-doctor`) over
//! every trace the store holds in the window, as the report JSON the CLI and the UI read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use threadline_doctor::{parse_since, Report, Thresholds, TraceAnalyzer};

use crate::engine::{SearchRequest, Store};

/// The doctor's route, to merge into the API router (any state: it carries its own).
pub fn router<S: Clone + Send + Sync + 'static>(store: Arc<Store>) -> Router<S> {
    Router::new()
        .route("/api/threadline/doctor", get(doctor))
        .with_state(store)
}

fn reject(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

async fn doctor(
    State(store): State<Arc<Store>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    // The API's tenant rules: 401 without X-Scope-OrgID when multitenancy is on, 404 for a
    // tenant the store holds nothing for.
    let tenant = match crate::api::tenant(&store, &headers) {
        Ok(t) => t,
        Err(response) => return response.into_response(),
    };
    let since = params.get("since").map_or("1h", String::as_str);
    let since_seconds = match parse_since(since) {
        Ok(s) => s,
        Err(err) => return reject(StatusCode::BAD_REQUEST, format!("since: {err}")),
    };
    match run(&store, &tenant, since_seconds).await {
        Ok(report) => axum::Json(report).into_response(),
        // 503 while the store closes or replaces blocks faster than the read follows, 500 a fault.
        Err(err) => crate::api::engine_error(err).into_response(),
    }
}

/// Runs the trace checks over the tenant's traces of the last `since_seconds`.
pub async fn run(store: &Store, tenant: &str, since_seconds: u64) -> anyhow::Result<Report> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let request = SearchRequest {
        start_unix_nano: Some(now.saturating_sub(since_seconds.saturating_mul(1_000_000_000))),
        end_unix_nano: None,
        limit: usize::MAX,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let state = Mutex::new((TraceAnalyzer::new(Thresholds::default()), Vec::new()));
    // Every trace of the window is folded as it is decoded; none is kept.
    store
        .search(tenant, &request, &|trace| {
            if let Ok(mut state) = state.lock() {
                state.0.add_trace(trace);
                state.1.push(trace.trace_id);
            }
            false
        })
        .await?;
    let (mut analyzer, ids) = state
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a doctor check panicked"))?;
    let searched = started.elapsed();
    // The sampled flag is not in the TraceQL model: read it from the stored bytes.
    for id in ids {
        if let Some(data) = store.trace_by_id(tenant, &id).await? {
            analyzer.add_flags(id, &data);
        }
    }
    let flagged = started.elapsed();
    let (findings, scanned) = analyzer.finish();
    tracing::info!(
        traces = scanned.traces,
        search_ms = searched.as_millis() as u64,
        flags_ms = (flagged - searched).as_millis() as u64,
        finish_ms = (started.elapsed() - flagged).as_millis() as u64,
        "doctor report"
    );
    let mut report = Report {
        since_seconds,
        scanned,
        findings,
    };
    report.sort();
    Ok(report)
}
