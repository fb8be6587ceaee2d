//! Threadline's own metrics-generator endpoints:
//! - `GET /api/threadline/service-graph?start=<unix s>&end=<unix s>`: the service graph of any
//!   past window, computed from the stored (whole) traces, as JSON for Threadline's UI;
//! - `GET /api/threadline/generator/metrics`: the generated series in Prometheus' text format,
//!   for Prometheus to scrape.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::api::{engine_error, error, tenant, ApiError};
use crate::engine::{SearchRequest, Store};
use crate::generator::filter::SpanFilter;
use crate::generator::pairing::{Edge, Outcome, Pairer, VirtualKind};
use crate::generator::span::ModelSpan;

/// Merged into [`crate::api::router`], which gives it the store as state.
pub fn router() -> Router<Arc<Store>> {
    Router::new()
        .route("/api/threadline/service-graph", get(service_graph))
        .route("/api/threadline/generator/metrics", get(scrape))
}

/// The scrape's tenant, when one is named: unlike queries, a scrape without `X-Scope-OrgID`
/// is valid (it lists every tenant), and a tenant with no series yet gets an empty page.
fn header_tenant(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let id = headers
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match id {
        Some(id) if crate::api::valid_tenant(id) => Ok(Some(id.to_string())),
        Some(id) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("invalid X-Scope-OrgID {id:?}: use letters, digits, '-', '_' and '.'"),
        )),
        None => Ok(None),
    }
}

#[derive(Deserialize)]
struct ScrapeParams {
    tenant: Option<String>,
}

/// One tenant (`X-Scope-OrgID` or `?tenant=`) or, without either, every tenant with its id in
/// a `tenant` label (or the label `registry.inject_tenant_id_as` names).
async fn scrape(
    State(store): State<Arc<Store>>,
    headers: HeaderMap,
    Query(params): Query<ScrapeParams>,
) -> Result<Response, ApiError> {
    let Some(generator) = store.generator() else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "the metrics generator is off: list processors in metrics_generator.processors \
             (service-graphs, span-metrics)",
        ));
    };
    let chosen = header_tenant(&headers)?.or(params.tenant);
    let tenants: Vec<(String, Vec<(String, String)>)> = match chosen {
        Some(t) => {
            let extra = generator.extra_labels(&t, None);
            vec![(t, extra)]
        }
        None => generator.labelled_tenants(),
    };
    let page = crate::generator::exposition::render(&generator, &tenants);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        page,
    )
        .into_response())
}

#[derive(Deserialize)]
struct GraphParams {
    start: Option<String>,
    end: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub rate: f64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub kind: &'static str,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GraphEdge {
    pub source: String,
    pub target: String,
    pub connection_type: &'static str,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Graph {
    pub start: u64,
    pub end: u64,
    pub nodes: Vec<Node>,
    pub edges: Vec<GraphEdge>,
}

#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    seconds: Vec<f64>,
}

impl Tally {
    fn add(&mut self, edge: &Edge) {
        self.requests += 1;
        self.errors += edge.failed as u64;
        self.seconds.push(edge.server_seconds);
    }

    fn stats(mut self, window_seconds: f64) -> Stats {
        self.seconds.sort_by(|a, b| a.total_cmp(b));
        let quantile = |q: f64| {
            if self.seconds.is_empty() {
                return 0.0;
            }
            let rank =
                ((q * self.seconds.len() as f64).ceil() as usize).clamp(1, self.seconds.len());
            self.seconds[rank - 1] * 1000.0
        };
        Stats {
            requests: self.requests,
            errors: self.errors,
            rate: self.requests as f64 / window_seconds.max(1e-9),
            error_rate: if self.requests == 0 {
                0.0
            } else {
                self.errors as f64 / self.requests as f64
            },
            p50_ms: quantile(0.50),
            p95_ms: quantile(0.95),
            p99_ms: quantile(0.99),
        }
    }
}

fn kind_name(kind: VirtualKind) -> &'static str {
    match kind {
        VirtualKind::None => "service",
        VirtualKind::Database => "database",
        VirtualKind::MessagingSystem => "messaging_system",
        VirtualKind::External => "external",
    }
}

/// Nodes and edges of the calls that started in `start..end` (unix seconds). A node's numbers
/// are those of the requests it served (as Grafana's service map counts them).
pub fn build_graph(edges: &[Edge], start: u64, end: u64) -> Graph {
    let window = (end - start) as f64;
    let mut by_pair: BTreeMap<(String, String), (&'static str, Tally)> = BTreeMap::new();
    let mut nodes: BTreeMap<String, (Option<VirtualKind>, Tally)> = BTreeMap::new();
    for edge in edges {
        let (connection, tally) = by_pair
            .entry((edge.client.clone(), edge.server.clone()))
            .or_insert((edge.connection_type, Tally::default()));
        if connection.is_empty() {
            *connection = edge.connection_type;
        }
        tally.add(edge);
        let (client_kind, server_kind) = match edge.virtual_end {
            Some(("client", kind)) => (kind, VirtualKind::None),
            Some((_, kind)) => (VirtualKind::None, kind),
            None => (VirtualKind::None, VirtualKind::None),
        };
        for (name, kind) in [(&edge.client, client_kind), (&edge.server, server_kind)] {
            let node = nodes.entry(name.clone()).or_default();
            // An instrumented service stays one, whatever else calls it.
            node.0 = match (node.0, kind) {
                (Some(VirtualKind::None), _) | (_, VirtualKind::None) => Some(VirtualKind::None),
                (_, k) => Some(k),
            };
        }
        nodes.entry(edge.server.clone()).or_default().1.add(edge);
    }
    Graph {
        start,
        end,
        nodes: nodes
            .into_iter()
            .map(|(id, (kind, tally))| Node {
                id,
                kind: kind_name(kind.unwrap_or(VirtualKind::None)),
                stats: tally.stats(window),
            })
            .collect(),
        edges: by_pair
            .into_iter()
            .map(|((source, target), (connection_type, tally))| GraphEdge {
                source,
                target,
                connection_type,
                stats: tally.stats(window),
            })
            .collect(),
    }
}

fn seconds(text: Option<&str>, name: &str) -> Result<Option<u64>, ApiError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => t.parse::<u64>().map(Some).map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("invalid {name} {t:?}: expected unix seconds"),
            )
        }),
    }
}

async fn service_graph(
    State(store): State<Arc<Store>>,
    headers: HeaderMap,
    Query(params): Query<GraphParams>,
) -> Result<Json<Graph>, ApiError> {
    let tenant = tenant(&store, &headers)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let end = seconds(params.end.as_deref(), "end")?.unwrap_or(now);
    let start = seconds(params.start.as_deref(), "start")?.unwrap_or(end.saturating_sub(3600));
    if end <= start {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("invalid window: end ({end}) must be after start ({start})"),
        ));
    }
    let config = &store.config().metrics_generator.processor.service_graphs;
    let filter = SpanFilter::new(&config.filter_policies).unwrap_or_default();
    let (start_ns, end_ns) = (start * 1_000_000_000, end * 1_000_000_000);
    let found: Mutex<Vec<Edge>> = Mutex::new(Vec::new());
    let request = SearchRequest {
        start_unix_nano: Some(start_ns),
        end_unix_nano: Some(end_ns),
        limit: usize::MAX,
        ..Default::default()
    };
    let visit = |trace: &threadline_traceql::model::Trace| {
        // The whole trace is here: pair it completely, then what is left is unpaired.
        let mut pairer = Pairer::new(config);
        let at = Instant::now();
        let mut edges = Vec::new();
        for span in &trace.spans {
            let span = ModelSpan::new(span);
            if span.essentials.service.is_empty() || !(filter.is_empty() || filter.keeps(&span)) {
                continue;
            }
            edges.extend(pairer.add(&span, at));
        }
        edges.extend(pairer.drain().into_iter().filter_map(|o| match o {
            Outcome::Edge(e) => Some(e),
            Outcome::Unpaired(_) => None,
        }));
        edges.retain(|e| (start_ns..end_ns).contains(&e.start_unix_nano));
        found
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(edges);
        false
    };
    store
        .search(&tenant, &request, &visit)
        .await
        .map_err(|err| engine_error(err.context("reading the stored traces")))?;
    let edges = found.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(Json(build_graph(&edges, start, end)))
}
