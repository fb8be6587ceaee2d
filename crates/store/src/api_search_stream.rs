//! `GET /api/threadline/search/stream`: `/api/search` answered block by block, for browsers
//! (which cannot call the gRPC `StreamingQuerier.Search` that Grafana uses).
//!
//! Same parameters as `/api/search`; the answer is NDJSON (`application/x-ndjson`), one JSON
//! object per line, each with one key:
//! - `{"partial": {traces, metrics, progress}}` after the head and after each block that found
//!   traces (and at most every [`PROGRESS_EVERY`] without new ones): `traces` are those new since
//!   the previous line, `metrics` the cumulative figures of `/api/search` with `completedJobs` of
//!   `totalJobs` (a job is the head or a block), and `progress` `{searchedBlocks, totalBlocks}`;
//! - `{"final": answer}` last, `answer` being exactly what `/api/search` answers for the request
//!   (every trace again), so a client may simply keep the last line;
//! - `{"error": {status, message}}` instead of `final` when the search fails once lines were sent
//!   (before that, errors are answered as `/api/search` answers them: a status and plain text).
//!
//! This follows the gRPC stream's pacing (see [`crate::api_grpc`]'s search) and reuses the HTTP
//! search's parsing and JSON, so the two never drift apart.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;

use crate::api::{self, ApiError, SearchParams};
use crate::engine::{Progress, Store};

/// The longest a client waits for a line while blocks without new traces are read: often
/// enough for a progress bar to move, rarely enough to cost nothing on stores of many blocks.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Aborts the search when the answer is dropped (the client went away).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the stream has sent so far.
struct Sent {
    traces: usize,
    at: Option<Instant>,
}

pub(crate) async fn search_stream(
    State(store): State<Arc<Store>>,
    Query(params): Query<SearchParams>,
    headers: HeaderMap,
) -> Response {
    let tenant = match api::tenant(&store, &headers) {
        Ok(t) => t,
        Err(response) => return response.into_response(),
    };
    let (request, matcher, spss) = match api::parse_search(&params) {
        Ok(parsed) => parsed,
        Err(response) => return response.into_response(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<Json, ApiError>>();
    let task = AbortOnDrop(tokio::spawn(async move {
        let sent = Mutex::new(Sent {
            traces: 0,
            at: None,
        });
        let progress = |p: Progress<'_>| {
            let mut sent = sent.lock();
            let new = p.found.get(sent.traces..).unwrap_or_default();
            // The first report (the head searched) always goes: it tells the block count.
            if new.is_empty() && sent.at.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
                return;
            }
            let traces: Vec<Json> = new
                .iter()
                .map(|f| api::trace_json(f, &matcher, spss))
                .collect();
            sent.traces = p.found.len();
            sent.at = Some(Instant::now());
            let _ = tx.send(Ok(partial_json(traces, &p)));
        };
        let result = api::run_search(&store, &tenant, &request, &matcher, &progress).await;
        let line = match result {
            Ok((found, stats)) => {
                let traces: Vec<Json> = found
                    .iter()
                    .map(|f| api::trace_json(f, &matcher, spss))
                    .collect();
                Ok(json!({ "final": {
                    "traces": traces,
                    "metrics": crate::api_search_metrics::metrics_json(&stats),
                }}))
            }
            Err(err) => Err(api::engine_error(err)),
        };
        let _ = tx.send(line);
    }));

    // The status waits for the first line, so a search that fails at once (a closed store, a
    // bad range) answers its status as `/api/search` does rather than 200 and an error line.
    let first = match rx.recv().await {
        Some(Ok(line)) => line,
        Some(Err(err)) => return err.into_response(),
        None => {
            return api::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the search stopped before answering (see the store's log)",
            )
            .into_response()
        }
    };
    let rest = futures::stream::unfold((rx, task), |(mut rx, task)| async move {
        let line = rx.recv().await?;
        Some((line, (rx, task)))
    });
    let lines = futures::stream::once(async move { Ok(first) })
        .chain(rest)
        .map(|line| {
            let value = line.unwrap_or_else(|err| {
                json!({ "error": { "status": err.status().as_u16(), "message": err.message() } })
            });
            let mut bytes = value.to_string().into_bytes();
            bytes.push(b'\n');
            Ok::<_, Infallible>(Bytes::from(bytes))
        });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}

fn partial_json(traces: Vec<Json>, p: &Progress<'_>) -> Json {
    let mut metrics = crate::api_search_metrics::metrics_json(&p.stats);
    if let Some(m) = metrics.as_object_mut() {
        m.insert("completedJobs".into(), p.completed_jobs.into());
        m.insert("totalJobs".into(), p.total_jobs.into());
        m.insert("totalBlocks".into(), p.total_blocks.into());
        m.insert(
            "totalBlockBytes".into(),
            p.total_block_bytes.to_string().into(),
        );
    }
    json!({ "partial": {
        "traces": traces,
        "metrics": metrics,
        "progress": {
            // Jobs are the head, then each block.
            "searchedBlocks": p.completed_jobs.saturating_sub(1),
            "totalBlocks": p.total_blocks,
        },
    }})
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use serde_json::Value as Json;

    use crate::{Store, SINGLE_TENANT};

    /// One trace of one span of `service`, `id` ms long, ending now.
    fn trace(id: u8, service: &str) -> threadline_otlp::TraceData {
        let end = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(service.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![id; 16],
                        span_id: vec![id; 8],
                        name: format!("op-{id}"),
                        start_time_unix_nano: end - u64::from(id) * 1_000_000,
                        end_time_unix_nano: end,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        threadline_otlp::TraceData::from_request(&request)
    }

    /// A store of four blocks (traces 1-2, 3-4, 5, 6 of `api`; 7 of `db`) and trace 8 in the
    /// head, served on a free port.
    async fn serve() -> (tempfile::TempDir, std::net::SocketAddr) {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::tests::config(dir.path(), "");
        let store = Store::open(config).await.unwrap();
        for batch in [&[1u8, 2][..], &[3, 4], &[5], &[6, 7]] {
            for id in batch {
                let service = if *id == 7 { "db" } else { "api" };
                store
                    .append(SINGLE_TENANT, &trace(*id, service))
                    .await
                    .unwrap();
            }
            assert_eq!(store.cut().await.unwrap().len(), 1);
        }
        store.append(SINGLE_TENANT, &trace(8, "api")).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = crate::api::router(store);
        tokio::spawn(async move { axum::serve(listener, router).await });
        (dir, address)
    }

    async fn get(url: &str) -> (u16, String, String) {
        let response = reqwest::get(url).await.unwrap();
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, kind, response.text().await.unwrap())
    }

    fn ids(traces: &Json) -> Vec<String> {
        traces
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["traceID"].as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn the_stream_sends_partials_in_order_then_what_api_search_answers() {
        let (_dir, address) = serve().await;
        for query in [
            "q=%7B%20%7D&limit=100",
            "q=%7B%20resource.service.name%20%3D%20%22api%22%20%7D&limit=100&spss=1",
        ] {
            let (status, kind, body) = get(&format!(
                "http://{address}/api/threadline/search/stream?{query}"
            ))
            .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(kind, "application/x-ndjson");
            let lines: Vec<Json> = body
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert!(lines.len() > 2, "head, blocks and final: {body}");
            let (last, partials) = lines.split_last().unwrap();
            let mut streamed = Vec::new();
            let mut searched = 0;
            for line in partials {
                let partial = &line["partial"];
                assert!(partial.is_object(), "only partials before the end: {line}");
                let progress = &partial["progress"];
                assert_eq!(progress["totalBlocks"], 4, "{line}");
                let now = progress["searchedBlocks"].as_u64().unwrap();
                assert!(now >= searched && now <= 4, "progress goes forward: {line}");
                searched = now;
                assert_eq!(partial["metrics"]["totalJobs"], 5, "the head and 4 blocks");
                assert_eq!(partial["metrics"]["completedJobs"], now + 1);
                streamed.extend(ids(&partial["traces"]));
            }
            assert_eq!(searched, 4, "the last partial follows the last block");
            // The head's trace comes first, each block's after it, newest block first.
            assert_eq!(streamed[0], hex::encode([8u8; 16]));
            let (_, _, search) = get(&format!("http://{address}/api/search?{query}")).await;
            let search: Json = serde_json::from_str(&search).unwrap();
            assert_eq!(
                last["final"], search,
                "the last line is /api/search's answer"
            );
            assert_eq!(
                streamed,
                ids(&search["traces"]),
                "the partials held every trace once, in the order found"
            );
            assert!(
                partials
                    .iter()
                    .filter(|l| l["partial"]["traces"]
                        .as_array()
                        .is_some_and(|t| !t.is_empty()))
                    .count()
                    > 1,
                "traces came in more than one message: {body}"
            );
        }
    }

    #[tokio::test]
    async fn a_bad_request_is_answered_as_api_search_answers_it() {
        let (_dir, address) = serve().await;
        for query in ["q=%7B%20status%20%3D%20%7D", "limit=many", "start=9&end=1"] {
            let stream = get(&format!(
                "http://{address}/api/threadline/search/stream?{query}"
            ))
            .await;
            let search = get(&format!("http://{address}/api/search?{query}")).await;
            assert_eq!(stream.0, 400, "{query}: {}", stream.2);
            assert_eq!((stream.0, &stream.2), (search.0, &search.2), "{query}");
        }
    }
}
