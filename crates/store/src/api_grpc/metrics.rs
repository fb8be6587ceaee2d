//! `StreamingQuerier.MetricsQueryRange` and `MetricsQueryInstant`: the HTTP metrics query's
//! evaluation, streamed.
//!
//! As Tempo's query-range combiner (grafana/tempo ad33aa8 `modules/frontend/combiner/
//! metrics_query_range.go`): while no part of the range is complete a partial message has no
//! series and the cumulative `metrics`; the last message is the whole answer. Our evaluation
//! completes the whole range at once at the end, so every partial message is of the first kind
//! (sent at most every 500 ms, Tempo's pace). The instant query is the range query with one step
//! (`metrics_query_handler.go`), each message translated to `QueryInstantResponse`.
//! Start and end are unix nanoseconds and the step nanoseconds, as Grafana sends them
//! (grafana/grafana 0809124 `pkg/tsdb/tempo/metrics_stream.go`).

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{headers, spawn_stream, status, Answer, Context, Sender};
use crate::api_metrics::{self, MetricsParams};
use crate::engine::Progress;
use crate::tempopb as pb;

const PROGRESS_EVERY: Duration = Duration::from_millis(500);

pub(super) async fn query_range(
    context: Context,
    request: tonic::Request<pb::QueryRangeRequest>,
) -> Answer<pb::QueryRangeResponse> {
    let headers = headers(&request);
    let r = request.into_inner();
    let params = http_params(&r.query, r.start, r.end, r.step, r.exemplars);
    let stream = spawn_stream(move |tx: Sender<pb::QueryRangeResponse>| async move {
        let progress = Paced::new(|metrics| {
            let _ = tx.send(Ok(pb::QueryRangeResponse {
                series: Vec::new(),
                metrics: Some(metrics),
            }));
        });
        let result = api_metrics::run(&context.store, &params, &headers, false, &|p| {
            progress.tell(&p)
        })
        .await;
        let message = result.map_err(status).map(|(series, figures)| {
            let mut message = api_metrics::range_response_message(&series, &figures);
            message.metrics = Some(progress.finish(message.metrics));
            message
        });
        let _ = tx.send(message);
    });
    Ok(tonic::Response::new(stream))
}

pub(super) async fn query_instant(
    context: Context,
    request: tonic::Request<pb::QueryInstantRequest>,
) -> Answer<pb::QueryInstantResponse> {
    let headers = headers(&request);
    let r = request.into_inner();
    let params = http_params(&r.query, r.start, r.end, 0, 0);
    let stream = spawn_stream(move |tx: Sender<pb::QueryInstantResponse>| async move {
        let progress = Paced::new(|metrics| {
            let _ = tx.send(Ok(pb::QueryInstantResponse {
                series: Vec::new(),
                metrics: Some(metrics),
            }));
        });
        let result = api_metrics::run(&context.store, &params, &headers, true, &|p| {
            progress.tell(&p)
        })
        .await;
        let message = result.map_err(status).map(|(series, figures)| {
            let mut message = api_metrics::instant_response_message(&series, &figures);
            message.metrics = Some(progress.finish(message.metrics));
            message
        });
        let _ = tx.send(message);
    });
    Ok(tonic::Response::new(stream))
}

/// The request as the HTTP query's parameters (Tempo's `api.BuildQueryRangeRequest`: zero
/// means not given). Nanosecond timestamps have more than 10 digits, which the HTTP parser
/// reads as nanoseconds.
fn http_params(query: &str, start: u64, end: u64, step: u64, exemplars: u32) -> MetricsParams {
    let given = |n: u64| (n != 0).then(|| n.to_string());
    MetricsParams {
        q: Some(query.to_string()),
        start: given(start),
        end: given(end),
        step: (step != 0).then(|| format!("{step}ns")),
        exemplars: given(u64::from(exemplars)),
        ..Default::default()
    }
}

/// Job progress sent on at Tempo's pace, and remembered for the last message.
struct Paced<F> {
    send: F,
    state: Mutex<(Instant, pb::SearchMetrics)>,
}

impl<F: Fn(pb::SearchMetrics) + Sync> Paced<F> {
    fn new(send: F) -> Self {
        Paced {
            send,
            state: Mutex::new((Instant::now(), pb::SearchMetrics::default())),
        }
    }

    fn tell(&self, p: &Progress<'_>) {
        let mut state = self.state.lock();
        state.1 = pb::SearchMetrics {
            inspected_traces: u32::try_from(p.stats.inspected_traces).unwrap_or(u32::MAX),
            inspected_bytes: p.stats.inspected_bytes,
            total_blocks: p.total_blocks,
            completed_jobs: p.completed_jobs,
            total_jobs: p.total_jobs,
            total_block_bytes: p.total_block_bytes,
            inspected_spans: 0,
        };
        if state.0.elapsed() >= PROGRESS_EVERY {
            state.0 = Instant::now();
            (self.send)(state.1.clone());
        }
    }

    /// The last message's metrics: the evaluation's figures, with every job done.
    fn finish(&self, figures: Option<pb::SearchMetrics>) -> pb::SearchMetrics {
        let jobs = self.state.lock().1.clone();
        let figures = figures.unwrap_or_default();
        pb::SearchMetrics {
            completed_jobs: jobs.total_jobs,
            total_jobs: jobs.total_jobs,
            total_blocks: jobs.total_blocks,
            total_block_bytes: jobs.total_block_bytes,
            ..figures
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_the_http_parameters() {
        let p = http_params(
            "{ } | rate()",
            1_700_000_000_000_000_000,
            0,
            30_000_000_000,
            0,
        );
        assert_eq!(p.q.as_deref(), Some("{ } | rate()"));
        assert_eq!(p.start.as_deref(), Some("1700000000000000000"));
        assert_eq!((p.end, p.exemplars), (None, None));
        assert_eq!(p.step.as_deref(), Some("30000000000ns"));
    }
}
