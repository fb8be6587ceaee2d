//! `StreamingQuerier.MetricsQueryRange` and `MetricsQueryInstant`: the HTTP metrics query's
//! evaluation, streamed.
//!
//! As Tempo's query-range combiner (grafana/tempo 06683da `modules/frontend/combiner/
//! metrics_query_range.go`): a partial message carries the series of the traces counted so far
//! as a diff against the previous partial message (series that are new, and of the others only
//! the samples and exemplars that are new or changed: Grafana appends them to what it has and
//! keeps one value per timestamp) with the cumulative `metrics`; the last message is the whole
//! answer. Partial messages go at most every 500 ms, Tempo's pace; the series in them cost
//! about as much as the final answer's (quantiles sort their values), so they are taken only
//! when that cost stays under a tenth of the time since the last ones, and a message in between
//! carries progress alone. The instant query is the range query with one step
//! (`metrics_query_handler.go`), each message translated to `QueryInstantResponse`; its partial
//! messages carry every series, since Grafana keeps only the latest answer of an instant query
//! (grafana/grafana `public/app/plugins/datasource/tempo/streaming.ts`).
//! Start and end are unix nanoseconds and the step nanoseconds, as Grafana sends them
//! (grafana/grafana 0809124 `pkg/tsdb/tempo/metrics_stream.go`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use threadline_traceql::metrics::TimeSeries;

use super::{headers, search_metrics, spawn_stream, status, Answer, Context, Sender};
use crate::api_metrics::{self, Figures, MetricsParams, Partial};
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
        let sent = Mutex::new(Vec::new());
        let progress = Paced::new(
            PROGRESS_EVERY,
            |metrics, series: Option<Vec<TimeSeries>>| {
                let series = series.map_or_else(Vec::new, |series| {
                    let current = range_series(&series);
                    let mut sent = sent.lock();
                    let diff = diff_series(&sent, &current);
                    *sent = current;
                    diff
                });
                let _ = tx.send(Ok(pb::QueryRangeResponse {
                    series,
                    metrics: Some(metrics),
                }));
            },
        );
        let result = api_metrics::run(&context.store, &params, &headers, false, &|p, partial| {
            progress.tell(&p, partial)
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
        let progress = Paced::new(
            PROGRESS_EVERY,
            |metrics, series: Option<Vec<TimeSeries>>| {
                let series = series.map_or_else(Vec::new, |series| {
                    api_metrics::instant_response_message(&series, &Figures::default()).series
                });
                let _ = tx.send(Ok(pb::QueryInstantResponse {
                    series,
                    metrics: Some(metrics),
                }));
            },
        );
        let result = api_metrics::run(&context.store, &params, &headers, true, &|p, partial| {
            progress.tell(&p, partial)
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

fn range_series(series: &[TimeSeries]) -> Vec<pb::TimeSeries> {
    api_metrics::range_response_message(series, &Figures::default()).series
}

/// What `current` adds to or changes in `previous`, as Tempo's `diffResponse`: a series not
/// sent before whole, and of the others the samples at a new timestamp or with a new value and
/// the exemplars not sent before; series with nothing new are left out. Series are matched by
/// their Prometheus labels, which name them uniquely.
fn diff_series(previous: &[pb::TimeSeries], current: &[pb::TimeSeries]) -> Vec<pb::TimeSeries> {
    let previous: HashMap<&str, &pb::TimeSeries> = previous
        .iter()
        .map(|s| (s.prom_labels.as_str(), s))
        .collect();
    current
        .iter()
        .filter_map(|series| {
            let Some(before) = previous.get(series.prom_labels.as_str()) else {
                return Some(series.clone());
            };
            let samples: HashMap<i64, u64> = before
                .samples
                .iter()
                .map(|s| (s.timestamp_ms, s.value.to_bits()))
                .collect();
            let exemplars: HashSet<(i64, u64)> = before
                .exemplars
                .iter()
                .map(|e| (e.timestamp_ms, e.value.to_bits()))
                .collect();
            let diff = pb::TimeSeries {
                labels: series.labels.clone(),
                prom_labels: series.prom_labels.clone(),
                samples: series
                    .samples
                    .iter()
                    .filter(|s| samples.get(&s.timestamp_ms) != Some(&s.value.to_bits()))
                    .cloned()
                    .collect(),
                exemplars: series
                    .exemplars
                    .iter()
                    .filter(|e| !exemplars.contains(&(e.timestamp_ms, e.value.to_bits())))
                    .cloned()
                    .collect(),
            };
            (!diff.samples.is_empty() || !diff.exemplars.is_empty()).then_some(diff)
        })
        .collect()
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

/// Job progress sent on at Tempo's pace with, when cheap enough, the partial series, and
/// remembered for the last message.
struct Paced<F> {
    send: F,
    every: Duration,
    state: Mutex<PaceState>,
}

struct PaceState {
    sent_at: Instant,
    metrics: pb::SearchMetrics,
    /// When the partial series were last taken, and how long that took.
    series_at: Option<Instant>,
    series_cost: Duration,
}

impl<F: Fn(pb::SearchMetrics, Option<Vec<TimeSeries>>) + Sync> Paced<F> {
    fn new(every: Duration, send: F) -> Self {
        Paced {
            send,
            every,
            state: Mutex::new(PaceState {
                sent_at: Instant::now(),
                metrics: pb::SearchMetrics::default(),
                series_at: None,
                series_cost: Duration::ZERO,
            }),
        }
    }

    fn tell(&self, p: &Progress<'_>, partial: Partial<'_>) {
        let mut state = self.state.lock();
        state.metrics = search_metrics(p);
        if state.sent_at.elapsed() < self.every {
            return;
        }
        // At most a tenth of the query's time goes into partial series.
        let due = state
            .series_at
            .is_none_or(|at| at.elapsed() >= state.series_cost * 10);
        let series = due.then(|| {
            let started = Instant::now();
            let series = partial();
            state.series_cost = started.elapsed();
            state.series_at = Some(Instant::now());
            series
        });
        state.sent_at = Instant::now();
        (self.send)(state.metrics.clone(), series);
    }

    /// The last message's metrics: the evaluation's figures, with every job done.
    fn finish(&self, figures: Option<pb::SearchMetrics>) -> pb::SearchMetrics {
        let jobs = self.state.lock().metrics.clone();
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

/// Partial series: the diffs, the pace, and the diffs merged as Grafana merges them.
#[cfg(test)]
mod partial_tests {
    use super::*;
    use crate::engine::SearchStats;
    use threadline_traceql::metrics::{Evaluator, RangeRequest};
    use threadline_traceql::model::{Span, Trace, Value};

    const S: u64 = 1_000_000_000;

    fn progress(done: u32) -> Progress<'static> {
        Progress {
            found: &[],
            stats: SearchStats::default(),
            completed_jobs: done,
            total_jobs: 4,
            total_blocks: 3,
            total_block_bytes: 100,
        }
    }

    /// Trace `id`: one span of `service` starting `at` seconds, 10 ms long.
    fn trace(id: u8, service: &str, at: u64) -> Trace {
        Trace {
            trace_id: [id; 16],
            spans: vec![Span {
                trace_id: [id; 16],
                span_id: [id; 8],
                name: "op".into(),
                start_unix_nano: at * S,
                end_unix_nano: at * S + 10_000_000,
                resource_attributes: vec![("service.name".into(), Value::Str(service.into()))],
                ..Default::default()
            }],
        }
    }

    fn sample(timestamp_ms: i64, value: f64) -> pb::Sample {
        pb::Sample {
            timestamp_ms,
            value,
        }
    }

    fn series(name: &str, samples: Vec<pb::Sample>) -> pb::TimeSeries {
        pb::TimeSeries {
            prom_labels: format!("{{service=\"{name}\"}}"),
            samples,
            ..Default::default()
        }
    }

    #[test]
    fn diffs_hold_new_series_and_new_or_changed_samples_only() {
        let before = vec![series("a", vec![sample(10, 1.0), sample(20, 2.0)])];
        let now = vec![
            series("a", vec![sample(10, 1.0), sample(20, 3.0), sample(30, 1.0)]),
            series("b", vec![sample(10, 5.0)]),
            series("c", vec![]),
        ];
        let diff = diff_series(&before, &now);
        assert_eq!(
            diff,
            vec![
                series("a", vec![sample(20, 3.0), sample(30, 1.0)]),
                series("b", vec![sample(10, 5.0)]),
                series("c", vec![]),
            ]
        );
        // Nothing new: nothing sent.
        assert!(diff_series(&now, &now).is_empty());
    }

    #[test]
    fn partial_diffs_merged_as_grafana_merges_them_end_at_the_final_series() {
        let query = threadline_traceql::parse("{ } | count_over_time() by (resource.service.name)")
            .unwrap();
        let range = RangeRequest {
            start_unix_nano: 1000 * S,
            end_unix_nano: 1060 * S,
            step_nanos: 10 * S,
            exemplars: 0,
            instant: false,
        };
        let traces = [
            trace(1, "api", 1005),
            trace(2, "api", 1015),
            trace(3, "db", 1015),
            trace(4, "api", 1016),
            trace(5, "web", 1059),
        ];
        let evaluator = Mutex::new(Evaluator::new(&query, &range).unwrap());
        let messages = Mutex::new(Vec::new());
        let sent = Mutex::new(Vec::new());
        // No pace: every progress report sends a message with the diff since the last one.
        let paced = Paced::new(
            Duration::ZERO,
            |metrics, series: Option<Vec<TimeSeries>>| {
                let current = range_series(&series.expect("partial series are cheap here"));
                let mut sent = sent.lock();
                messages
                    .lock()
                    .push((metrics, diff_series(&sent, &current)));
                *sent = current;
            },
        );
        for (done, trace) in traces.iter().enumerate() {
            // Far more time than the microseconds a snapshot of five traces takes.
            std::thread::sleep(Duration::from_millis(5));
            evaluator.lock().observe(trace);
            paced.tell(&progress(done as u32 + 1), &|| evaluator.lock().snapshot());
        }
        let messages = messages.into_inner();
        assert_eq!(messages.len(), traces.len());
        assert_eq!(
            messages
                .iter()
                .map(|m| m.0.completed_jobs)
                .collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        // The fourth trace only raises api's count at 1020 s: one sample of one series.
        assert_eq!(
            messages[3].1,
            vec![{
                let mut s = range_series(&evaluator.lock().snapshot())[0].clone();
                s.samples.retain(|p| p.timestamp_ms == 1_020_000);
                s
            }]
        );
        assert_eq!(messages[3].1[0].samples[0].value, 2.0);
        // Grafana appends each message's samples and keeps one value per timestamp, the latest.
        let mut merged: HashMap<(String, i64), f64> = HashMap::new();
        for (_, diff) in &messages {
            for s in diff {
                for p in &s.samples {
                    merged.insert((s.prom_labels.clone(), p.timestamp_ms), p.value);
                }
            }
        }
        let last = range_series(&evaluator.into_inner().finish());
        let expected: HashMap<(String, i64), f64> = last
            .iter()
            .flat_map(|s| {
                s.samples
                    .iter()
                    .map(|p| ((s.prom_labels.clone(), p.timestamp_ms), p.value))
            })
            .collect();
        assert_eq!(merged, expected);
    }

    #[test]
    fn costly_partial_series_are_skipped_until_their_share_of_time_is_small() {
        let messages = Mutex::new(Vec::new());
        let paced = Paced::new(Duration::ZERO, |_, series: Option<Vec<TimeSeries>>| {
            messages.lock().push(series.is_some());
        });
        let slow = || {
            std::thread::sleep(Duration::from_millis(30));
            Vec::new()
        };
        paced.tell(&progress(1), &slow);
        // Right after a snapshot of 30 ms or more: progress only, until ten times that passed.
        paced.tell(&progress(2), &slow);
        let cost = paced.state.lock().series_cost;
        assert!(cost >= Duration::from_millis(30), "{cost:?}");
        std::thread::sleep(cost * 10 + Duration::from_millis(20));
        paced.tell(&progress(3), &slow);
        assert_eq!(messages.into_inner(), [true, false, true]);
    }
}
