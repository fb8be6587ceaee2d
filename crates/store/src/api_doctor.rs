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

use crate::engine::{SearchRequest, Store, SINGLE_TENANT};

/// The doctor's route, to merge into the API router (any state: it carries its own).
pub fn router<S: Clone + Send + Sync + 'static>(store: Arc<Store>) -> Router<S> {
    Router::new()
        .route("/api/threadline/doctor", get(doctor))
        .with_state(store)
}

fn reject(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// The tenant as the Tempo API reads it (`X-Scope-OrgID` when multitenancy is on).
fn tenant(store: &Store, headers: &HeaderMap) -> Result<String, (StatusCode, String)> {
    if !store.config().multitenancy_enabled {
        return Ok(SINGLE_TENANT.to_string());
    }
    match headers
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        Some(id) if crate::api::valid_tenant(id) => Ok(id.to_string()),
        Some(id) => Err((
            StatusCode::BAD_REQUEST,
            format!("invalid X-Scope-OrgID {id:?}: use letters, digits, '-', '_' and '.'"),
        )),
        None => Err((
            StatusCode::UNAUTHORIZED,
            "no org id: set the X-Scope-OrgID header".into(),
        )),
    }
}

async fn doctor(
    State(store): State<Arc<Store>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let tenant = match tenant(&store, &headers) {
        Ok(t) => t,
        Err((status, message)) => return reject(status, message),
    };
    let since = params.get("since").map_or("1h", String::as_str);
    let since_seconds = match parse_since(since) {
        Ok(s) => s,
        Err(err) => return reject(StatusCode::BAD_REQUEST, format!("since: {err}")),
    };
    match run(&store, &tenant, since_seconds).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(err) => reject(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")),
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
