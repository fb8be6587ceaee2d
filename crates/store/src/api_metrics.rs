//! TraceQL metrics over HTTP: `GET /api/metrics/query_range` and `GET /api/metrics/query`, with
//! Tempo's parameters and answers (grafana/tempo ad33aa8, `pkg/api/http.go`,
//! `pkg/tempopb/tempo.proto`), so Grafana's Explore metrics queries and Traces Drilldown work.
//!
//! Parameters: `q` (or `query`, Prometheus' name, which Grafana also sends), `start`, `end`
//! (unix seconds, unix nanoseconds, fractional seconds or RFC 3339), `since` (default `1h`,
//! counted back from `end` or now), `step` (seconds or a duration; default Tempo's ~240 points)
//! and `exemplars` (the most to return). The answer is the JSON of `tempopb.QueryRangeResponse`
//! (`QueryInstantResponse` for `/api/metrics/query`), or its protobuf for
//! `Accept: application/protobuf`.
//!
//! The values are exact: every span of the range is counted and quantiles are taken from the
//! spans themselves (Tempo samples and interpolates between histogram buckets).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use prost::Message;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use threadline_otlp::proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use threadline_traceql::metrics::{self, Evaluator, Labels, RangeRequest, TimeSeries};
use threadline_traceql::model::{Trace, Value};

use crate::api::{engine_error, error, tenant, value_json, wants_protobuf, ApiError};
use crate::engine::{Progress, SearchRequest, Store};
use crate::tempopb as pb;

/// Exemplars returned when the request names none (Tempo's `max_exemplars` default).
const DEFAULT_EXEMPLARS: u32 = 100;
/// Tempo's default look-back when `start` is not given.
const DEFAULT_SINCE_NANOS: u64 = 3600 * 1_000_000_000;

#[derive(Debug, Default, Deserialize)]
pub struct MetricsParams {
    pub(crate) q: Option<String>,
    pub(crate) query: Option<String>,
    pub(crate) start: Option<String>,
    pub(crate) end: Option<String>,
    pub(crate) since: Option<String>,
    pub(crate) step: Option<String>,
    pub(crate) exemplars: Option<String>,
}

pub async fn query_range(
    State(store): State<Arc<Store>>,
    Query(params): Query<MetricsParams>,
    headers: HeaderMap,
) -> Response {
    match run(&store, &params, &headers, false, &|_, _| {}).await {
        Ok((series, figures)) if wants_protobuf(&headers) => {
            protobuf(range_response_message(&series, &figures).encode_to_vec())
        }
        Ok((series, figures)) => axum::Json(range_response_json(&series, &figures)).into_response(),
        Err(err) => err.into_response(),
    }
}

pub async fn query_instant(
    State(store): State<Arc<Store>>,
    Query(params): Query<MetricsParams>,
    headers: HeaderMap,
) -> Response {
    match run(&store, &params, &headers, true, &|_, _| {}).await {
        Ok((series, figures)) if wants_protobuf(&headers) => {
            protobuf(instant_response_message(&series, &figures).encode_to_vec())
        }
        Ok((series, figures)) => {
            axum::Json(instant_response_json(&series, &figures)).into_response()
        }
        Err(err) => err.into_response(),
    }
}

/// What the scan looked at (Tempo's `SearchMetrics`).
#[derive(Debug, Default)]
pub(crate) struct Figures {
    pub(crate) inspected_traces: u64,
    pub(crate) inspected_bytes: u64,
    pub(crate) inspected_spans: u64,
}

/// The series of the traces counted so far, computed when called (as costly as the final
/// answer's, so the gRPC stream paces its calls).
pub(crate) type Partial<'a> = &'a dyn Fn() -> Vec<TimeSeries>;

/// Parses the request, scans every trace of the range once, and evaluates the query, telling
/// `progress` how far the scan is, with the partial series at hand (the gRPC streaming API
/// sends both on).
pub(crate) async fn run(
    store: &Store,
    params: &MetricsParams,
    headers: &HeaderMap,
    instant: bool,
    progress: &(dyn Fn(Progress<'_>, Partial<'_>) + Sync),
) -> Result<(Vec<TimeSeries>, Figures), ApiError> {
    let tenant = tenant(store, headers)?;
    let text = params
        .q
        .as_deref()
        .or(params.query.as_deref())
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "missing q: a TraceQL metrics query such as `{ } | rate()`",
            )
        })?;
    let query = threadline_traceql::parse(text).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid TraceQL query: {e}"),
        )
    })?;
    let range = range_request(params, instant, now_unix_nanos())?;
    let evaluator = Evaluator::new(&query, &range)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    // A span-local query is answered from the columns of the blocks that have them, on every
    // core; the head and blocks without columns are read trace by trace below.
    let from_columns = crate::columns::answers(&query);

    // One pass over the traces that overlap the range; the closure keeps none of them.
    let evaluator = Mutex::new(evaluator);
    let request = SearchRequest {
        start_unix_nano: Some(range.start_unix_nano),
        end_unix_nano: Some(range.end_unix_nano),
        limit: usize::MAX,
        ..Default::default()
    };
    let observe = |trace: &Trace| {
        evaluator.lock().observe(trace);
        false
    };
    // Blocks without an attribute the query's filter requires hold no span it counts.
    let options = crate::engine::SearchOptions {
        required_keys: crate::attr_keys::required_keys(&query),
        skip_blocks_with_columns: from_columns,
        ..Default::default()
    };
    let partial = || evaluator.lock().snapshot();
    let tell = |p: Progress<'_>| progress(p, &partial);
    let (_, stats) = store
        .search_with(&tenant, &request, &options, &observe, &tell)
        .await
        .map_err(engine_error)?;
    let mut evaluator = evaluator.into_inner();
    let mut figures = Figures {
        inspected_traces: stats.inspected_traces,
        inspected_bytes: stats.inspected_bytes,
        inspected_spans: 0,
    };
    if from_columns {
        let query = Arc::new(query);
        let new_evaluator: crate::engine::NewEvaluator = Arc::new(move || {
            // The query and range were accepted by `Evaluator::new` above.
            Evaluator::new(&query, &range).unwrap_or_else(|_| unreachable!("checked above"))
        });
        let (columns, scanned) = store
            .metrics_from_columns(
                &tenant,
                (range.start_unix_nano, range.end_unix_nano),
                new_evaluator,
            )
            .await
            .map_err(engine_error)?;
        figures.inspected_traces += scanned.traces;
        figures.inspected_bytes += scanned.bytes;
        evaluator.merge(columns);
    }
    figures.inspected_spans = evaluator.spans_observed;
    Ok((evaluator.finish(), figures))
}

/// The range of a request, as Tempo's `determineBounds` and `step` read it.
fn range_request(
    params: &MetricsParams,
    instant: bool,
    now: u64,
) -> Result<RangeRequest, ApiError> {
    let since = match non_empty(&params.since) {
        None => DEFAULT_SINCE_NANOS,
        Some(text) => parse_duration(text).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("invalid since {text:?}: {e}"),
            )
        })?,
    };
    let end = match non_empty(&params.end) {
        None => now,
        Some(text) => parse_timestamp(text).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("invalid end {text:?}: {e}"),
            )
        })?,
    };
    // A default start counts back from the end, or from now when the end is in the future.
    let start = match non_empty(&params.start) {
        None => end.min(now).saturating_sub(since),
        Some(text) => parse_timestamp(text).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("invalid start {text:?}: {e}"),
            )
        })?,
    };
    if end <= start {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("invalid start: start ({start} ns) must be before end ({end} ns)"),
        ));
    }
    let step = match non_empty(&params.step) {
        None => metrics::default_step(start, end),
        Some(text) => parse_step(text).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("invalid step {text:?}: {e}"),
            )
        })?,
    };
    let exemplars = match non_empty(&params.exemplars) {
        None if instant => 0,
        None => DEFAULT_EXEMPLARS,
        Some(text) => text.parse().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("invalid exemplars {text:?}: expected a whole number"),
            )
        })?,
    };
    Ok(RangeRequest {
        start_unix_nano: start,
        end_unix_nano: end,
        step_nanos: step,
        exemplars,
        instant,
    })
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Tempo's `parseTimestamp`: fractional unix seconds, up to 10 digits of unix seconds, more
/// digits of unix nanoseconds, or RFC 3339.
fn parse_timestamp(text: &str) -> Result<u64, String> {
    if text.contains('.') {
        if let Ok(seconds) = text.parse::<f64>() {
            if (0.0..1e11).contains(&seconds) {
                let whole = seconds.trunc();
                // Milliseconds, as Tempo rounds the fraction.
                let millis = ((seconds - whole) * 1000.0).round() as u64;
                return Ok(whole as u64 * 1_000_000_000 + millis * 1_000_000);
            }
            return Err("out of range".into());
        }
    }
    if let Ok(number) = text.parse::<u64>() {
        return Ok(if text.len() <= 10 {
            number.saturating_mul(1_000_000_000)
        } else {
            number
        });
    }
    parse_rfc3339(text).ok_or_else(|| {
        "expected unix seconds, unix nanoseconds or an RFC 3339 time (2024-05-01T12:00:00Z)"
            .to_string()
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to unix nanoseconds.
fn parse_rfc3339(text: &str) -> Option<u64> {
    let (date, rest) = text.split_once(['T', 't', ' '])?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let zone_at = rest.find(['Z', 'z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (parts.next()??, parts.next()??, parts.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let offset_seconds = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':')?;
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let nanos: String = fraction
        .chars()
        .chain("000000000".chars())
        .take(9)
        .collect();
    let nanos: i64 = nanos.parse().ok()?;
    u64::try_from(seconds)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos as u64)
}

/// A duration as Tempo's `since` takes it (Prometheus' units, `d`, `w` and `y` included).
fn parse_duration(text: &str) -> Result<u64, String> {
    let days = |suffix: char, per: u64| -> Option<u64> {
        let number = text.strip_suffix(suffix)?.parse::<u64>().ok()?;
        Some(number * per * 86_400 * 1_000_000_000)
    };
    if let Some(nanos) = days('d', 1)
        .or_else(|| days('w', 7))
        .or_else(|| days('y', 365))
    {
        return Ok(nanos);
    }
    threadline_config::settings::duration::parse(text)
        .map(|d| d.as_nanos() as u64)
        .map_err(|e| e.to_string())
}

/// A step as Tempo's `parseSecondsOrDuration` takes it: seconds (fractions allowed) or a
/// duration.
fn parse_step(text: &str) -> Result<u64, String> {
    let nanos = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds * 1e9 < u64::MAX as f64 => {
            (seconds * 1e9).max(0.0) as u64
        }
        Ok(_) => return Err("out of range".into()),
        Err(_) => parse_duration(text)?,
    };
    if nanos == 0 {
        return Err("zero or negative steps are not accepted".into());
    }
    Ok(nanos)
}

fn labels_json(labels: &Labels) -> Json {
    let labels: Vec<Json> = labels
        .iter()
        .map(|(key, value)| match value {
            Some(value) => json!({ "key": key, "value": value_json(value) }),
            // Tempo's nil label: a key with an empty value.
            None => json!({ "key": key, "value": {} }),
        })
        .collect();
    Json::Array(labels)
}

/// Prometheus' rendering of the labels, as Tempo's `promLabels`: `{key="value", ...}`.
fn prom_labels(labels: &Labels) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(key, value)| {
            let text = value
                .as_ref()
                .map(Value::text)
                .unwrap_or_else(|| "nil".into());
            format!("{key}={text:?}")
        })
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

fn figures_json(figures: &Figures) -> Json {
    json!({
        "inspectedTraces": figures.inspected_traces,
        "inspectedBytes": figures.inspected_bytes.to_string(),
        "inspectedSpans": figures.inspected_spans.to_string(),
        "totalJobs": 1,
        "completedJobs": 1,
    })
}

fn range_response_json(series: &[TimeSeries], figures: &Figures) -> Json {
    let series: Vec<Json> = series
        .iter()
        .map(|s| {
            let samples: Vec<Json> = s
                .samples
                .iter()
                .map(|p| json!({ "timestampMs": p.timestamp_ms.to_string(), "value": number(p.value) }))
                .collect();
            let exemplars: Vec<Json> = s
                .exemplars
                .iter()
                .map(|e| {
                    let labels: Vec<Json> = e
                        .labels
                        .iter()
                        .map(|(k, v)| json!({ "key": k, "value": value_json(v) }))
                        .collect();
                    json!({ "labels": labels, "value": number(e.value), "timestampMs": e.timestamp_ms.to_string() })
                })
                .collect();
            json!({
                "labels": labels_json(&s.labels),
                "samples": samples,
                "promLabels": prom_labels(&s.labels),
                "exemplars": exemplars,
            })
        })
        .collect();
    json!({ "series": series, "metrics": figures_json(figures) })
}

fn instant_response_json(series: &[TimeSeries], figures: &Figures) -> Json {
    let series: Vec<Json> = series
        .iter()
        .map(|s| {
            let value = s.samples.last().map_or(0.0, |p| p.value);
            json!({
                "labels": labels_json(&s.labels),
                "value": number(value),
                "promLabels": prom_labels(&s.labels),
            })
        })
        .collect();
    json!({ "series": series, "metrics": figures_json(figures) })
}

/// A float as protobuf's JSON mapping writes it: NaN and infinities as strings.
fn number(value: f64) -> Json {
    if value.is_nan() {
        json!("NaN")
    } else if value.is_infinite() {
        json!(if value > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(value)
    }
}

fn any_value(value: &Value) -> AnyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s.clone()),
        Value::Int(i) => any_value::Value::IntValue(*i),
        Value::Float(f) => any_value::Value::DoubleValue(*f),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Array(items) => any_value::Value::ArrayValue(ArrayValue {
            values: items.iter().map(any_value).collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

fn proto_labels(labels: &Labels) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(key, value)| KeyValue {
            key: key.clone(),
            value: value.as_ref().map(any_value),
            ..Default::default()
        })
        .collect()
}

fn proto_figures(figures: &Figures) -> Option<pb::SearchMetrics> {
    Some(pb::SearchMetrics {
        inspected_traces: u32::try_from(figures.inspected_traces).unwrap_or(u32::MAX),
        inspected_bytes: figures.inspected_bytes,
        total_jobs: 1,
        completed_jobs: 1,
        inspected_spans: figures.inspected_spans,
        ..Default::default()
    })
}

pub(crate) fn range_response_message(
    series: &[TimeSeries],
    figures: &Figures,
) -> pb::QueryRangeResponse {
    let series = series
        .iter()
        .map(|s| pb::TimeSeries {
            labels: proto_labels(&s.labels),
            samples: s
                .samples
                .iter()
                .map(|p| pb::Sample {
                    value: p.value,
                    timestamp_ms: p.timestamp_ms,
                })
                .collect(),
            prom_labels: prom_labels(&s.labels),
            exemplars: s
                .exemplars
                .iter()
                .map(|e| pb::Exemplar {
                    labels: e
                        .labels
                        .iter()
                        .map(|(k, v)| KeyValue {
                            key: k.clone(),
                            value: Some(any_value(v)),
                            ..Default::default()
                        })
                        .collect(),
                    value: e.value,
                    timestamp_ms: e.timestamp_ms,
                })
                .collect(),
        })
        .collect();
    pb::QueryRangeResponse {
        series,
        metrics: proto_figures(figures),
    }
}

pub(crate) fn instant_response_message(
    series: &[TimeSeries],
    figures: &Figures,
) -> pb::QueryInstantResponse {
    let series = series
        .iter()
        .map(|s| pb::InstantSeries {
            labels: proto_labels(&s.labels),
            value: s.samples.last().map_or(0.0, |p| p.value),
            prom_labels: prom_labels(&s.labels),
        })
        .collect();
    pb::QueryInstantResponse {
        series,
        metrics: proto_figures(figures),
    }
}

fn protobuf(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/protobuf")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(start: &str, end: &str, since: &str, step: &str) -> MetricsParams {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        MetricsParams {
            start: some(start),
            end: some(end),
            since: some(since),
            step: some(step),
            ..Default::default()
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn timestamps_are_read_as_tempo_reads_them() {
        assert_eq!(parse_timestamp("1700000000"), Ok(1_700_000_000 * S));
        assert_eq!(
            parse_timestamp("1700000000123456789"),
            Ok(1_700_000_000_123_456_789)
        );
        assert_eq!(
            parse_timestamp("1700000000.25"),
            Ok(1_700_000_000 * S + 250_000_000)
        );
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20Z"),
            Ok(1_700_000_000 * S)
        );
        assert_eq!(
            parse_timestamp("2023-11-15T00:13:20.5+02:00"),
            Ok(1_700_000_000 * S + 500_000_000)
        );
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn bounds_default_to_the_hour_before_end_or_now() {
        let now = 1_700_000_000 * S;
        let r = range_request(&params("", "", "", ""), false, now).unwrap();
        assert_eq!((r.start_unix_nano, r.end_unix_nano), (now - 3600 * S, now));
        // Tempo's default step for an hour: 15 s (240 points).
        assert_eq!(r.step_nanos, 15 * S);
        assert_eq!(r.exemplars, DEFAULT_EXEMPLARS);
        let r = range_request(&params("", "1699990000", "30m", "60"), true, now).unwrap();
        assert_eq!(r.start_unix_nano, 1_699_990_000 * S - 1800 * S);
        assert_eq!((r.step_nanos, r.exemplars, r.instant), (60 * S, 0, true));
        // A future end counts `since` back from now.
        let r = range_request(&params("", "1800000000", "2d", "1m"), false, now).unwrap();
        assert_eq!(r.start_unix_nano, now - 2 * 86_400 * S);
        assert_eq!(r.step_nanos, 60 * S);
    }

    #[test]
    fn bad_bounds_name_the_parameter() {
        let now = 1_700_000_000 * S;
        for (p, name) in [
            (params("1700000100", "1700000000", "", ""), "start"),
            (params("soon", "", "", ""), "start"),
            (params("", "later", "", ""), "end"),
            (params("", "", "an hour", ""), "since"),
            (params("", "", "", "0"), "step"),
            (params("", "", "", "fast"), "step"),
        ] {
            let err = range_request(&p, false, now).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert!(err.message().contains(name), "{}", err.message());
        }
    }

    #[test]
    fn series_are_encoded_as_tempo_jsonpb() {
        let series = vec![TimeSeries {
            labels: vec![
                (
                    "resource.service.name".into(),
                    Some(Value::Str("api".into())),
                ),
                ("span.http.route".into(), None),
            ],
            samples: vec![metrics::Sample {
                timestamp_ms: 1_700_000_000_000,
                value: 0.5,
            }],
            exemplars: vec![],
        }];
        let json = range_response_json(&series, &Figures::default());
        let s = &json["series"][0];
        assert_eq!(s["labels"][0]["value"]["stringValue"], "api");
        assert_eq!(s["samples"][0]["timestampMs"], "1700000000000");
        assert_eq!(s["samples"][0]["value"], 0.5);
        assert_eq!(
            s["promLabels"],
            "{resource.service.name=\"api\", span.http.route=\"nil\"}"
        );
        let encoded = range_response_message(&series, &Figures::default()).encode_to_vec();
        let decoded = pb::QueryRangeResponse::decode(encoded.as_slice()).unwrap();
        assert_eq!(decoded.series[0].samples[0].timestamp_ms, 1_700_000_000_000);
        assert_eq!(decoded.series[0].labels[0].key, "resource.service.name");
    }
}
