//! `StreamingQuerier.Search`: the HTTP search's parsing, matching and answer, streamed.
//!
//! What each message holds follows Tempo's search combiner (grafana/tempo ad33aa8
//! `modules/frontend/combiner/search.go` and `pipeline/collector_grpc.go`): a partial message
//! carries the traces found since the previous one and the cumulative `metrics` (jobs done out
//! of jobs, blocks, bytes); the last message is the whole answer, every trace again, with
//! `completedJobs == totalJobs`. Grafana keeps the first copy of each trace id and the latest
//! metrics (grafana/grafana 05bee9a `pkg/tsdb/tempo/search_stream.go`). Our jobs are the heads
//! and each block; a partial message follows each job that found traces (Tempo sends at most
//! one every 500 ms, which is also how often we send progress without new traces).

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value as Json;

use super::{headers, search_metrics, spawn_stream, status, Answer, Context};
use crate::api::{self, SearchParams};
use crate::engine::{Found, Progress};
use crate::tempopb as pb;
use threadline_otlp::proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};

/// Tempo's pace of partial messages without new traces.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

pub(super) async fn search(
    context: Context,
    request: tonic::Request<pb::SearchRequest>,
) -> Answer<pb::SearchResponse> {
    let store = context.store;
    let tenant = api::tenant(&store, &headers(&request)).map_err(status)?;
    let params = http_params(request.get_ref());
    let (request, matcher, spss) = api::parse_search(&params).map_err(status)?;
    let stream = spawn_stream(move |tx| async move {
        let sent = Mutex::new(Sent {
            traces: 0,
            at: Instant::now(),
            metrics: pb::SearchMetrics::default(),
        });
        let progress = |p: Progress<'_>| {
            let mut sent = sent.lock();
            sent.metrics = search_metrics(&p);
            let new = p.found.get(sent.traces..).unwrap_or_default();
            if new.is_empty() && sent.at.elapsed() < PROGRESS_EVERY {
                return;
            }
            let traces = new
                .iter()
                .map(|f| metadata(&api::trace_json(f, &matcher, spss)))
                .collect();
            sent.traces = p.found.len();
            sent.at = Instant::now();
            let _ = tx.send(Ok(pb::SearchResponse {
                traces,
                metrics: Some(sent.metrics.clone()),
            }));
        };
        let result = api::run_search(&store, &tenant, &request, &matcher, &progress).await;
        let message = match result {
            Ok((found, _)) => Ok(final_message(
                &found,
                |f| metadata(&api::trace_json(f, &matcher, spss)),
                sent.into_inner().metrics,
            )),
            Err(err) => Err(status(api::engine_error(err))),
        };
        let _ = tx.send(message);
    });
    Ok(tonic::Response::new(stream))
}

/// What the stream has sent so far.
struct Sent {
    traces: usize,
    at: Instant,
    metrics: pb::SearchMetrics,
}

fn final_message(
    found: &[Found],
    metadata: impl Fn(&Found) -> pb::TraceSearchMetadata,
    mut metrics: pb::SearchMetrics,
) -> pb::SearchResponse {
    metrics.completed_jobs = metrics.total_jobs;
    pb::SearchResponse {
        traces: found.iter().map(metadata).collect(),
        metrics: Some(metrics),
    }
}

/// The request as the HTTP search's parameters, as Tempo's `api.BuildSearchRequest` writes
/// them (ad33aa8 `pkg/api/http.go`): zero means not given, durations are milliseconds, `tags`
/// is logfmt. `SpansPerSpanSet` 0 means no limit there.
pub(super) fn http_params(request: &pb::SearchRequest) -> SearchParams {
    let given = |n: u32| (n != 0).then(|| n.to_string());
    let mut tags: Vec<(&String, &String)> = request.tags.iter().collect();
    tags.sort();
    let tags: Vec<String> = tags
        .into_iter()
        .map(|(k, v)| format!("{k}={}", logfmt_value(v)))
        .collect();
    SearchParams {
        q: Some(request.query.clone()).filter(|q| !q.trim().is_empty()),
        tags: (!tags.is_empty()).then(|| tags.join(" ")),
        min_duration: given(request.min_duration_ms).map(|ms| format!("{ms}ms")),
        max_duration: given(request.max_duration_ms).map(|ms| format!("{ms}ms")),
        limit: given(request.limit),
        start: given(request.start),
        end: given(request.end),
        spss: Some(match request.spans_per_span_set {
            0 => u32::MAX.to_string(),
            n => n.to_string(),
        }),
    }
}

fn logfmt_value(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '"', '=', '\\']) {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

// The HTTP answer's JSON (protobuf's JSON mapping of tempopb) read back into the messages.

fn text(json: &Json, key: &str) -> String {
    json.get(key)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A uint64 field: a string in protobuf's JSON, or a number.
fn unsigned(json: &Json, key: &str) -> u64 {
    match json.get(key) {
        Some(Json::String(s)) => s.parse().unwrap_or(0),
        Some(n) => n.as_u64().unwrap_or(0),
        None => 0,
    }
}

fn small(json: &Json, key: &str) -> u32 {
    u32::try_from(unsigned(json, key)).unwrap_or(u32::MAX)
}

fn list<'a>(json: &'a Json, key: &str) -> impl Iterator<Item = &'a Json> {
    json.get(key)
        .and_then(Json::as_array)
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
}

pub(super) fn any_value_of(json: &Json) -> Option<AnyValue> {
    let value = if let Some(s) = json.get("stringValue").and_then(Json::as_str) {
        any_value::Value::StringValue(s.to_string())
    } else if json.get("intValue").is_some() {
        let i = match json.get("intValue") {
            Some(Json::String(s)) => s.parse().unwrap_or(0),
            Some(n) => n.as_i64().unwrap_or(0),
            None => 0,
        };
        any_value::Value::IntValue(i)
    } else if let Some(f) = json.get("doubleValue").and_then(Json::as_f64) {
        any_value::Value::DoubleValue(f)
    } else if let Some(b) = json.get("boolValue").and_then(Json::as_bool) {
        any_value::Value::BoolValue(b)
    } else if let Some(array) = json.get("arrayValue") {
        any_value::Value::ArrayValue(ArrayValue {
            values: list(array, "values").filter_map(any_value_of).collect(),
        })
    } else {
        return None;
    };
    Some(AnyValue { value: Some(value) })
}

fn attributes(json: &Json) -> Vec<KeyValue> {
    list(json, "attributes")
        .map(|kv| KeyValue {
            key: text(kv, "key"),
            value: kv.get("value").and_then(any_value_of),
            ..Default::default()
        })
        .collect()
}

fn span_set(json: &Json) -> pb::SpanSet {
    pb::SpanSet {
        spans: list(json, "spans")
            .map(|s| pb::Span {
                span_id: text(s, "spanID"),
                name: text(s, "name"),
                start_time_unix_nano: unsigned(s, "startTimeUnixNano"),
                duration_nanos: unsigned(s, "durationNanos"),
                attributes: attributes(s),
            })
            .collect(),
        matched: small(json, "matched"),
        attributes: attributes(json),
    }
}

/// One trace of the HTTP answer as `TraceSearchMetadata`.
pub(super) fn metadata(json: &Json) -> pb::TraceSearchMetadata {
    let service_stats = json
        .get("serviceStats")
        .and_then(Json::as_object)
        .map(|stats| {
            stats
                .iter()
                .map(|(service, s)| {
                    let stats = pb::ServiceStats {
                        span_count: small(s, "spanCount"),
                        error_count: small(s, "errorCount"),
                    };
                    (service.clone(), stats)
                })
                .collect()
        })
        .unwrap_or_default();
    pb::TraceSearchMetadata {
        trace_id: text(json, "traceID"),
        root_service_name: text(json, "rootServiceName"),
        root_trace_name: text(json, "rootTraceName"),
        start_time_unix_nano: unsigned(json, "startTimeUnixNano"),
        duration_ms: small(json, "durationMs"),
        span_set: json.get("spanSet").map(span_set),
        span_sets: list(json, "spanSets").map(span_set).collect(),
        service_stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_become_the_http_parameters_tempo_builds() {
        let request = pb::SearchRequest {
            query: "{ status = error }".into(),
            tags: [("service.name".to_string(), "my api".to_string())].into(),
            min_duration_ms: 5,
            limit: 7,
            start: 1_700_000_000,
            spans_per_span_set: 0,
            ..Default::default()
        };
        let p = http_params(&request);
        assert_eq!(p.q.as_deref(), Some("{ status = error }"));
        assert_eq!(p.tags.as_deref(), Some("service.name=\"my api\""));
        assert_eq!(p.min_duration.as_deref(), Some("5ms"));
        assert_eq!(p.max_duration, None);
        assert_eq!((p.limit.as_deref(), p.end.as_deref()), (Some("7"), None));
        assert_eq!(p.start.as_deref(), Some("1700000000"));
        assert_eq!(p.spss, Some(u32::MAX.to_string()));
    }

    #[test]
    fn the_http_json_reads_back_into_trace_search_metadata() {
        let json = json!({
            "traceID": "00ff", "rootServiceName": "api", "rootTraceName": "GET /",
            "startTimeUnixNano": "1700000000000000001", "durationMs": 12,
            "spanSet": { "matched": 2, "spans": [{
                "spanID": "0a", "name": "db", "startTimeUnixNano": "5", "durationNanos": "6",
                "attributes": [
                    { "key": "n", "value": { "intValue": "-3" } },
                    { "key": "a", "value": { "arrayValue": { "values": [{ "boolValue": true }] } } },
                ],
            }]},
            "spanSets": [{ "matched": 2, "spans": [] }],
            "serviceStats": { "api": { "spanCount": 3, "errorCount": 1 } },
        });
        let m = metadata(&json);
        assert_eq!(m.trace_id, "00ff");
        assert_eq!(m.start_time_unix_nano, 1_700_000_000_000_000_001);
        assert_eq!(m.duration_ms, 12);
        let set = m.span_set.unwrap();
        assert_eq!((set.matched, set.spans[0].duration_nanos), (2, 6));
        assert_eq!(
            set.spans[0].attributes[0].value,
            Some(AnyValue {
                value: Some(any_value::Value::IntValue(-3))
            })
        );
        assert_eq!(m.span_sets.len(), 1);
        assert_eq!(m.service_stats["api"].error_count, 1);
    }
}
