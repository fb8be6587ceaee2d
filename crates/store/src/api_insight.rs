//! "What is different?": for a selection of traces (those a TraceQL query matches, and/or those
//! at least `minDuration` long) against the rest of the window, which attribute values are
//! over-represented — Honeycomb's BubbleUp, over the store's own traces.
//!
//! `GET /api/threadline/what-is-different?start=<unix s>&end=<unix s>&q=<TraceQL>&minDuration=<d>`
//! (`base=<TraceQL>` narrows the population first; `limit` caps the answer, default 20). A trace
//! counts once per value it holds anywhere (span attributes, resource attributes, span name).
//! Values are ranked by `score` = share of selected traces holding it − share of the other
//! traces holding it; ties go to the value found deepest in the call tree, since failures and
//! latency propagate up from the span that caused them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use threadline_traceql::model::{StatusCode as SpanStatus, Trace, Value};

use crate::engine::{SearchRequest, Store};

/// The endpoint's route; the API's router gives it the store.
pub fn router() -> Router<Arc<Store>> {
    Router::new().route("/api/threadline/what-is-different", get(what_is_different))
}

/// Per-service span and error counts of a trace, as Tempo's `serviceStats` in search results.
pub fn service_stats(trace: &Trace) -> Json {
    let mut stats: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for span in &trace.spans {
        let entry = stats.entry(span.service_name()).or_default();
        entry.0 += 1;
        if span.status == SpanStatus::Error {
            entry.1 += 1;
        }
    }
    let map: serde_json::Map<String, Json> = stats
        .into_iter()
        .map(|(service, (spans, errors))| {
            (
                service.to_string(),
                json!({ "spanCount": spans, "errorCount": errors }),
            )
        })
        .collect();
    Json::Object(map)
}

#[derive(Debug, Default, Deserialize)]
struct Params {
    q: Option<String>,
    base: Option<String>,
    #[serde(rename = "minDuration")]
    min_duration: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
}

fn bad(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, message.into()).into_response()
}

/// A unix-seconds parameter; the error is the 400's message.
fn seconds(name: &str, value: &Option<String>) -> Result<Option<u64>, String> {
    match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("invalid {name} {v:?}: expected unix seconds")),
    }
}

/// One attribute value: where it lives and the key it is found under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Dimension {
    scope: &'static str,
    key: String,
    value: String,
    /// Whether the value is a string (quoted in TraceQL).
    quoted: bool,
}

#[derive(Default)]
struct Counts {
    selection_traces: u64,
    other_traces: u64,
    /// Dimension -> (selected traces holding it, other traces holding it, deepest depth seen).
    values: HashMap<Dimension, (u64, u64, usize)>,
}

/// A value as a TraceQL literal, or None for arrays: TraceQL has no array literal to filter on,
/// so an array value could not be added to the query with one click.
fn literal(value: &Value) -> Option<(String, bool)> {
    match value {
        Value::Str(s) => Some((s.clone(), true)),
        Value::Int(i) => Some((i.to_string(), false)),
        Value::Float(f) => Some((f.to_string(), false)),
        Value::Bool(b) => Some((b.to_string(), false)),
        Value::Array(_) => None,
    }
}

/// Depth of every span in its trace's tree (roots and orphans at 0).
fn depths(trace: &Trace) -> Vec<usize> {
    let index: HashMap<[u8; 8], usize> = trace
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    let mut depth = vec![usize::MAX; trace.spans.len()];
    for start in 0..trace.spans.len() {
        // Walk up to a span of known depth (or the root), then fill the path in.
        let mut path = vec![start];
        let mut known = 0;
        while let Some(&i) = path.last() {
            if depth[i] != usize::MAX {
                known = depth[i];
                path.pop();
                break;
            }
            match trace.spans[i]
                .parent_span_id
                .and_then(|p| index.get(&p).copied())
            {
                Some(parent) if !path.contains(&parent) => path.push(parent),
                _ => {
                    depth[i] = 0;
                    known = 0;
                    path.pop();
                    break;
                }
            }
        }
        for (n, &i) in path.iter().rev().enumerate() {
            depth[i] = known + n + 1;
        }
    }
    depth
}

fn dimensions_of(trace: &Trace) -> HashMap<Dimension, usize> {
    let depth = depths(trace);
    let mut found: HashMap<Dimension, usize> = HashMap::new();
    let mut note = |dimension: Dimension, d: usize| {
        let entry = found.entry(dimension).or_insert(d);
        *entry = (*entry).max(d);
    };
    for (i, span) in trace.spans.iter().enumerate() {
        for (scope, list) in [
            ("span", &span.attributes),
            ("resource", &span.resource_attributes),
        ] {
            for (key, value) in list {
                let Some((value, quoted)) = literal(value) else {
                    continue;
                };
                note(
                    Dimension {
                        scope,
                        key: key.clone(),
                        value,
                        quoted,
                    },
                    depth[i],
                );
            }
        }
        note(
            Dimension {
                scope: "intrinsic",
                key: "name".into(),
                value: span.name.clone(),
                quoted: true,
            },
            depth[i],
        );
    }
    found
}

fn traceql_filter(d: &Dimension) -> String {
    let field = match d.scope {
        "intrinsic" => d.key.clone(),
        scope => format!("{scope}.{}", d.key),
    };
    if d.quoted {
        format!("{{ {field} = {} }}", Json::String(d.value.clone()))
    } else {
        format!("{{ {field} = {} }}", d.value)
    }
}

async fn what_is_different(
    State(store): State<Arc<Store>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let tenant = match crate::api::tenant(&store, &headers) {
        Ok(t) => t,
        Err(response) => return response.into_response(),
    };
    let start = match seconds("start", &params.start) {
        Ok(v) => v,
        Err(message) => return bad(message),
    };
    let end = match seconds("end", &params.end) {
        Ok(v) => v,
        Err(message) => return bad(message),
    };
    if let (Some(s), Some(e)) = (start, end) {
        if s > e {
            return bad("invalid start: must be before end");
        }
    }
    let limit: usize = match params
        .limit
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        None => 20,
        Some(v) => match v.parse() {
            Ok(n) => n,
            Err(_) => return bad(format!("invalid limit {v:?}: expected a whole number")),
        },
    };
    let min_duration = match params
        .min_duration
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        None => None,
        Some(v) => match threadline_config::settings::duration::parse(v) {
            Ok(d) => Some(d.as_nanos() as u64),
            Err(e) => return bad(format!("invalid minDuration {v:?}: {e}")),
        },
    };
    let query = params.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if query.is_none() && min_duration.is_none() {
        return bad("no selection: give q (a TraceQL query) and/or minDuration");
    }
    let parse = |text: Option<&str>| match text {
        Some(q) => threadline_traceql::parse(q)
            .map(Some)
            .map_err(|e| format!("invalid TraceQL query: {e}")),
        None => Ok(None),
    };
    let selection = match parse(query) {
        Ok(q) => q,
        Err(message) => return bad(message),
    };
    let base = match parse(
        params
            .base
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty()),
    ) {
        Ok(q) => q,
        Err(message) => return bad(message),
    };
    let request = SearchRequest {
        start_unix_nano: start.map(|s| s.saturating_mul(1_000_000_000)),
        end_unix_nano: end.map(|e| e.saturating_mul(1_000_000_000).saturating_add(999_999_999)),
        limit: usize::MAX,
        ..Default::default()
    };
    let counts = Mutex::new(Counts::default());
    let visit = |trace: &Trace| {
        if base.as_ref().is_some_and(|b| b.evaluate(trace).is_none()) {
            return false;
        }
        let span_start = trace.spans.iter().map(|s| s.start_unix_nano).min();
        let span_end = trace.spans.iter().map(|s| s.end_unix_nano).max();
        let duration = match (span_start, span_end) {
            (Some(s), Some(e)) => e.saturating_sub(s),
            _ => 0,
        };
        let selected = selection
            .as_ref()
            .is_none_or(|q| q.evaluate(trace).is_some())
            && min_duration.is_none_or(|m| duration >= m);
        let dimensions = dimensions_of(trace);
        let Ok(mut counts) = counts.lock() else {
            return false;
        };
        if selected {
            counts.selection_traces += 1;
        } else {
            counts.other_traces += 1;
        }
        for (dimension, depth) in dimensions {
            let entry = counts.values.entry(dimension).or_default();
            if selected {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
            entry.2 = entry.2.max(depth);
        }
        false
    };
    if let Err(err) = store.search(&tenant, &request, &visit).await {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")).into_response();
    }
    let counts = match counts.into_inner() {
        Ok(c) => c,
        Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "a scan panicked").into_response();
        }
    };
    let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    let mut ranked: Vec<(Dimension, u64, u64, usize, f64)> = counts
        .values
        .into_iter()
        .filter(|(_, (selected, _, _))| *selected > 0)
        .map(|(d, (s, o, depth))| {
            let score = share(s, counts.selection_traces) - share(o, counts.other_traces);
            (d, s, o, depth, score)
        })
        .filter(|r| r.4 > 0.0)
        .collect();
    ranked.sort_by(|a, b| {
        b.4.total_cmp(&a.4)
            .then(b.3.cmp(&a.3))
            .then(b.1.cmp(&a.1))
            .then(a.0.cmp(&b.0))
    });
    let attributes: Vec<Json> = ranked
        .into_iter()
        .take(limit)
        .map(|(d, selected, other, depth, score)| {
            json!({
                "scope": d.scope,
                "key": d.key,
                "value": d.value,
                "traceql": traceql_filter(&d),
                "selection": selected,
                "baseline": other,
                "selectionShare": share(selected, counts.selection_traces),
                "baselineShare": share(other, counts.other_traces),
                "score": score,
                "depth": depth,
            })
        })
        .collect();
    axum::Json(json!({
        "start": start,
        "end": end,
        "selection": { "traces": counts.selection_traces },
        "baseline": { "traces": counts.other_traces },
        "attributes": attributes,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadline_traceql::model::Span;

    fn span(id: u8, parent: Option<u8>, attrs: &[(&str, &str)]) -> Span {
        Span {
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            name: format!("s{id}"),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::Str(v.to_string())))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn depths_follow_parents_and_survive_orphans_and_cycles() {
        let trace = Trace {
            spans: vec![
                span(3, Some(2), &[]),
                span(1, None, &[]),
                span(2, Some(1), &[]),
                span(9, Some(7), &[]),
                span(5, Some(6), &[]),
                span(6, Some(5), &[]),
            ],
            ..Default::default()
        };
        let d = depths(&trace);
        assert_eq!(&d[..4], &[2, 0, 1, 0]);
        assert!(d[4] <= 1 && d[5] <= 1);
    }

    #[test]
    fn dimensions_keep_the_deepest_span_and_quote_strings() {
        let trace = Trace {
            spans: vec![
                span(1, None, &[("http.status", "500")]),
                span(2, Some(1), &[("error.type", "card_declined")]),
            ],
            ..Default::default()
        };
        let dims = dimensions_of(&trace);
        let cause = dims
            .iter()
            .find(|(d, _)| d.key == "error.type")
            .map(|(d, depth)| (traceql_filter(d), *depth));
        assert_eq!(
            cause,
            Some((r#"{ span.error.type = "card_declined" }"#.into(), 1))
        );
    }

    #[test]
    fn service_stats_count_spans_and_errors_per_service() {
        let mut failing = span(2, Some(1), &[]);
        failing.status = SpanStatus::Error;
        failing.resource_attributes = vec![("service.name".into(), Value::Str("pay".into()))];
        let trace = Trace {
            spans: vec![span(1, None, &[]), failing],
            ..Default::default()
        };
        assert_eq!(
            service_stats(&trace),
            json!({"": {"spanCount": 1, "errorCount": 0}, "pay": {"spanCount": 1, "errorCount": 1}})
        );
    }
}
