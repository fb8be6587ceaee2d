//! TraceQL metrics against traces whose answers are worked out by hand: every function, `by()`,
//! second stages, arithmetic, instant queries and exemplars.

use crate::metrics::{Evaluator, MetricsError, RangeRequest, TimeSeries};
use crate::model::{Span, SpanKind, StatusCode, Trace, Value};
use crate::parse;

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn span(
    trace: u8,
    id: u8,
    parent: Option<u8>,
    name: &str,
    service: &str,
    start: u64,
    dur: u64,
) -> Span {
    Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_span_id: parent.map(|p| [p; 8]),
        name: name.into(),
        kind: if parent.is_none() {
            SpanKind::Server
        } else {
            SpanKind::Client
        },
        start_unix_nano: start,
        end_unix_nano: start + dur,
        resource_attributes: vec![("service.name".into(), Value::Str(service.into()))],
        ..Default::default()
    }
}

/// Four traces over 1000 s .. 1060 s:
/// - A at 1005 s: GET (api, 100 ms) -> db (db, 50 ms, error)
/// - B at 1015 s: GET (api, 300 ms) -> db (db, 200 ms)
/// - C at exactly 1030 s: POST (api, 1 s, error)
/// - D at 1059 s: GET (web, 2 s)
fn traces() -> Vec<Trace> {
    let mut a_db = span(1, 2, Some(1), "db", "db", 1005 * S + 10 * MS, 50 * MS);
    a_db.status = StatusCode::Error;
    let mut c = span(3, 1, None, "POST", "api", 1030 * S, S);
    c.status = StatusCode::Error;
    vec![
        Trace {
            trace_id: [1; 16],
            spans: vec![span(1, 1, None, "GET", "api", 1005 * S, 100 * MS), a_db],
        },
        Trace {
            trace_id: [2; 16],
            spans: vec![
                span(2, 1, None, "GET", "api", 1015 * S, 300 * MS),
                span(2, 2, Some(1), "db", "db", 1015 * S + 100 * MS, 200 * MS),
            ],
        },
        Trace {
            trace_id: [3; 16],
            spans: vec![c],
        },
        Trace {
            trace_id: [4; 16],
            spans: vec![span(4, 1, None, "GET", "web", 1059 * S, 2 * S)],
        },
    ]
}

fn range() -> RangeRequest {
    RangeRequest {
        start_unix_nano: 1000 * S,
        end_unix_nano: 1060 * S,
        step_nanos: 10 * S,
        exemplars: 0,
        instant: false,
    }
}

fn run_with(query: &str, range: RangeRequest) -> Vec<TimeSeries> {
    let q = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    let mut evaluator = Evaluator::new(&q, &range).unwrap();
    for trace in traces() {
        evaluator.observe(&trace);
    }
    evaluator.finish()
}

fn run(query: &str) -> Vec<TimeSeries> {
    run_with(query, range())
}

/// One value per interval of `range()` (NaN where the series has no sample).
fn values(series: &TimeSeries) -> Vec<f64> {
    (1..=6)
        .map(|i| {
            let ts = (1000 + 10 * i) * 1000;
            series
                .samples
                .iter()
                .find(|s| s.timestamp_ms == ts as i64)
                .map_or(f64::NAN, |s| s.value)
        })
        .collect()
}

fn label(series: &TimeSeries, name: &str) -> Option<Value> {
    series
        .labels
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.clone())
}

fn by_label<'a>(series: &'a [TimeSeries], name: &str, value: &str) -> &'a TimeSeries {
    series
        .iter()
        .find(|s| label(s, name) == Some(Value::Str(value.into())))
        .unwrap_or_else(|| panic!("no series {name}={value} in {series:?}"))
}

fn same(actual: Vec<f64>, expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (a.is_nan() && e.is_nan()) || (a - e).abs() < 1e-9,
            "{actual:?} vs {expected:?}"
        );
    }
}

const NAN: f64 = f64::NAN;

#[test]
fn count_over_time_and_rate_use_tempos_right_closed_intervals() {
    let series = run("{ } | count_over_time()");
    assert_eq!(series.len(), 1);
    assert_eq!(
        series[0].labels,
        vec![(
            "__name__".into(),
            Some(Value::Str("count_over_time".into()))
        )]
    );
    // C starts exactly at 1030 s: the interval (1020, 1030].
    same(values(&series[0]), &[2.0, 2.0, 1.0, 0.0, 0.0, 1.0]);
    assert_eq!(series[0].samples[0].timestamp_ms, 1_010_000);
    let series = run("{ } | rate()");
    same(values(&series[0]), &[0.2, 0.2, 0.1, 0.0, 0.0, 0.1]);
}

#[test]
fn by_makes_one_series_per_value() {
    let series = run("{ } | rate() by (resource.service.name)");
    assert_eq!(series.len(), 3);
    same(
        values(by_label(&series, "resource.service.name", "api")),
        &[0.1, 0.1, 0.1, 0.0, 0.0, 0.0],
    );
    same(
        values(by_label(&series, "resource.service.name", "db")),
        &[0.1, 0.1, 0.0, 0.0, 0.0, 0.0],
    );
    same(
        values(by_label(&series, "resource.service.name", "web")),
        &[0.0, 0.0, 0.0, 0.0, 0.0, 0.1],
    );
    let series = run("{ status = error } | count_over_time() by (name, span.missing)");
    assert_eq!(series.len(), 2);
    // A nil label is left out.
    assert_eq!(by_label(&series, "name", "db").labels.len(), 1);
    same(
        values(by_label(&series, "name", "POST")),
        &[0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    );
    let series = run("{ } | count_over_time() by (span.missing)");
    assert_eq!(series[0].labels, vec![("span.missing".into(), None)]);
}

#[test]
fn value_functions_over_durations_in_seconds() {
    same(
        values(&run("{ } | sum_over_time(duration)")[0]),
        &[0.15, 0.5, 1.0, NAN, NAN, 2.0],
    );
    same(
        values(&run("{ } | min_over_time(duration)")[0]),
        &[0.05, 0.2, 1.0, NAN, NAN, 2.0],
    );
    same(
        values(&run("{ } | max_over_time(duration)")[0]),
        &[0.1, 0.3, 1.0, NAN, NAN, 2.0],
    );
    same(
        values(&run("{ } | avg_over_time(duration)")[0]),
        &[0.075, 0.25, 1.0, NAN, NAN, 2.0],
    );
    let series = run("{ } | avg_over_time(duration) by (resource.service.name)");
    same(
        values(by_label(&series, "resource.service.name", "db")),
        &[0.05, 0.2, NAN, NAN, NAN, NAN],
    );
}

#[test]
fn quantiles_are_exact_nearest_rank() {
    let series = run("{ } | quantile_over_time(duration, 0.5, 0.99, 1)");
    assert_eq!(series.len(), 3);
    let q = |p: f64| {
        series
            .iter()
            .find(|s| label(s, "p") == Some(Value::Float(p)))
            .unwrap()
    };
    // Interval 0 has 50 ms and 100 ms; empty intervals are 0 as Tempo.
    same(values(q(0.5)), &[0.05, 0.2, 1.0, 0.0, 0.0, 2.0]);
    same(values(q(0.99)), &[0.1, 0.3, 1.0, 0.0, 0.0, 2.0]);
    same(values(q(1.0)), &[0.1, 0.3, 1.0, 0.0, 0.0, 2.0]);
    let series = run("{ } | quantile_over_time(duration, 0.5) by (resource.service.name)");
    assert_eq!(series.len(), 3);
    let api = by_label(&series, "resource.service.name", "api");
    assert_eq!(label(api, "p"), Some(Value::Float(0.5)));
    same(values(api), &[0.1, 0.3, 1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn histogram_over_time_counts_per_power_of_two_bucket() {
    let series = run("{ resource.service.name = \"db\" } | histogram_over_time(duration)");
    assert_eq!(series.len(), 2);
    let bucket = |s: &TimeSeries| match label(s, "__bucket") {
        Some(Value::Float(f)) => f,
        other => panic!("{other:?}"),
    };
    let mut buckets: Vec<f64> = series.iter().map(bucket).collect();
    buckets.sort_by(f64::total_cmp);
    // 50 ms -> 2^26 ns, 200 ms -> 2^28 ns.
    assert_eq!(buckets, vec![67_108_864.0 / 1e9, 268_435_456.0 / 1e9]);
    let small = series.iter().find(|s| bucket(s) < 0.1).unwrap();
    same(values(small), &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn compare_counts_attribute_values_of_selection_and_baseline() {
    let series = run("{ } | compare({ status = error })");
    let find = |meta: &str, name: &str, value: Option<&str>| {
        series
            .iter()
            .find(|s| {
                label(s, "__meta_type") == Some(Value::Str(meta.into()))
                    && s.labels
                        .iter()
                        .any(|(k, v)| k == name && v.clone() == value.map(|v| Value::Str(v.into())))
            })
            .unwrap_or_else(|| panic!("no {meta} {name}={value:?}"))
    };
    same(
        values(find("selection", "name", Some("db"))),
        &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    );
    same(
        values(find("selection", "name", Some("POST"))),
        &[0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    );
    same(
        values(find("baseline", "name", Some("GET"))),
        &[1.0, 1.0, 0.0, 0.0, 0.0, 1.0],
    );
    same(
        values(find("baseline_total", "name", None)),
        &[1.0, 2.0, 0.0, 0.0, 0.0, 1.0],
    );
    same(
        values(find("selection", "resource.service.name", Some("api"))),
        &[0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    );
    // Only spans starting in (1000 s, 1020 s] can be selected.
    let series = run(&format!(
        "{{ }} | compare({{ status = error }}, 10, {}, {})",
        1000 * S,
        1020 * S
    ));
    assert!(!series
        .iter()
        .any(|s| label(s, "name") == Some(Value::Str("POST".into()))
            && label(s, "__meta_type") == Some(Value::Str("selection".into()))));
}

#[test]
fn second_stages_topk_bottomk_and_filters() {
    let series = run("{ } | count_over_time() by (resource.service.name) | topk(1)");
    for i in 0..6 {
        let present = series.iter().filter(|s| !values(s)[i].is_nan()).count();
        assert_eq!(present, 1, "interval {i}: {series:?}");
    }
    assert_eq!(
        values(by_label(&series, "resource.service.name", "web"))[5],
        1.0
    );
    let series = run("{ } | count_over_time() by (resource.service.name) | bottomk(2)");
    for i in 0..6 {
        assert_eq!(series.iter().filter(|s| !values(s)[i].is_nan()).count(), 2);
    }
    let series = run("{ } | count_over_time() > 1");
    same(values(&series[0]), &[2.0, 2.0, NAN, NAN, NAN, NAN]);
    let series = run("{ } | max_over_time(duration) >= 1s");
    same(values(&series[0]), &[NAN, NAN, 1.0, NAN, NAN, 2.0]);
    assert!(run("{ } | count_over_time() > 5").is_empty());
}

#[test]
fn arithmetic_between_metrics_queries() {
    let series = run("({ status = error } | count_over_time()) / ({ } | count_over_time())");
    assert_eq!(series.len(), 1);
    // 0 / 0 has no value.
    same(values(&series[0]), &[0.5, 0.0, 1.0, NAN, NAN, 0.0]);
    let series = run("({ } | count_over_time()) * 2 + 1");
    same(values(&series[0]), &[5.0, 5.0, 3.0, 1.0, 1.0, 3.0]);
    let series = run(
        "({ status = error } | count_over_time() by (resource.service.name)) - ({ } | count_over_time() by (resource.service.name))",
    );
    assert_eq!(series.len(), 2);
    same(
        values(by_label(&series, "resource.service.name", "db")),
        &[0.0, -1.0, 0.0, 0.0, 0.0, 0.0],
    );
}

#[test]
fn instant_queries_have_one_value_over_the_range() {
    let instant = RangeRequest {
        instant: true,
        ..range()
    };
    let series = run_with("{ } | rate()", instant);
    assert_eq!(series[0].samples.len(), 1);
    assert_eq!(series[0].samples[0].timestamp_ms, 1_060_000);
    assert!((series[0].samples[0].value - 6.0 / 60.0).abs() < 1e-12);
    let series = run_with("{ } | quantile_over_time(duration, 0.5)", instant);
    // 50 ms, 100 ms, 200 ms, 300 ms, 1 s, 2 s: rank 3.
    assert!((series[0].samples[0].value - 0.2).abs() < 1e-12);
}

#[test]
fn exemplars_name_the_trace_and_span() {
    let with_exemplars = RangeRequest {
        exemplars: 100,
        ..range()
    };
    let series = run_with("{ } | max_over_time(duration)", with_exemplars);
    let exemplars = &series[0].exemplars;
    assert_eq!(exemplars.len(), 6);
    let d = exemplars
        .iter()
        .find(|e| e.labels[0].1 == Value::Str("04040404040404040404040404040404".into()))
        .unwrap();
    assert_eq!(
        d.labels[1],
        ("span:id".into(), Value::Str("0101010101010101".into()))
    );
    assert_eq!(d.value, 2.0);
    assert_eq!(d.timestamp_ms, 1_059_000);
    let series = run_with(
        "{ } | rate()",
        RangeRequest {
            exemplars: 1,
            ..range()
        },
    );
    assert_eq!(series[0].exemplars.len(), 1);
    assert!(series[0].exemplars[0].value.is_nan());
    assert!(run("{ } | rate()")[0].exemplars.is_empty());
}

#[test]
fn spans_outside_the_range_are_not_counted() {
    let narrow = RangeRequest {
        start_unix_nano: 1010 * S,
        end_unix_nano: 1030 * S,
        step_nanos: 10 * S,
        exemplars: 0,
        instant: false,
    };
    let series = run_with("{ } | count_over_time()", narrow);
    let points: Vec<(i64, f64)> = series[0]
        .samples
        .iter()
        .map(|s| (s.timestamp_ms, s.value))
        .collect();
    assert_eq!(points, vec![(1_020_000, 2.0), (1_030_000, 1.0)]);
}

#[test]
fn bad_requests_are_errors() {
    let spans_query = parse("{ }").unwrap();
    assert!(matches!(
        Evaluator::new(&spans_query, &range()),
        Err(MetricsError::NotMetrics)
    ));
    let q = parse("{ } | rate()").unwrap();
    let backwards = RangeRequest {
        end_unix_nano: 10,
        start_unix_nano: 20,
        ..range()
    };
    assert!(matches!(
        Evaluator::new(&q, &backwards),
        Err(MetricsError::Range(_))
    ));
    let tiny_step = RangeRequest {
        step_nanos: 1,
        ..range()
    };
    assert!(matches!(
        Evaluator::new(&q, &tiny_step),
        Err(MetricsError::TooManyIntervals(_))
    ));
}

#[test]
fn default_step_is_tempos() {
    assert_eq!(crate::metrics::default_step(0, 3600 * S), 15 * S);
    assert_eq!(crate::metrics::default_step(0, 30 * S), 100 * MS);
    assert_eq!(crate::metrics::default_step(0, 24 * 3600 * S), 300 * S);
    assert_eq!(crate::metrics::default_step(0, 120 * S), S);
}

#[test]
fn snapshots_give_the_series_of_the_traces_observed_so_far() {
    // A streamed answer sends snapshots while traces are still observed: each must be what
    // `finish` would give for the traces seen so far, and taking one must not change the end.
    for q in [
        "{ } | count_over_time() by (resource.service.name)",
        "{ } | quantile_over_time(duration, .5, .99) by (resource.service.name)",
        "{ } | compare({ status = error })",
        "({ } | rate()) / ({ status = error } | rate())",
        "{ } | avg_over_time(duration) by (name) | bottomk(2)",
    ] {
        let query = parse(q).unwrap();
        let traces = traces();
        let mut streamed = Evaluator::new(&query, &range()).unwrap();
        for (seen, trace) in traces.iter().enumerate() {
            streamed.observe(trace);
            let mut alone = Evaluator::new(&query, &range()).unwrap();
            for t in &traces[..=seen] {
                alone.observe(t);
            }
            assert_eq!(
                format!("{:?}", streamed.snapshot()),
                format!("{:?}", alone.finish()),
                "{q} after {} traces",
                seen + 1
            );
        }
        assert_eq!(
            format!("{:?}", streamed.finish()),
            format!("{:?}", run(q)),
            "{q}"
        );
    }
}

/// Tied values: topk and bottomk keep the same series every time (the smaller labels), whatever
/// order the traces come in and however each evaluator's hash maps are seeded.
#[test]
fn topk_and_bottomk_break_ties_by_labels() {
    let tied = |service: &str, trace: u8| Trace {
        trace_id: [trace; 16],
        spans: vec![span(trace, 1, None, "GET", service, 1005 * S, MS)],
    };
    for query in ["topk(1)", "bottomk(1)"] {
        let q = parse(&format!(
            "{{ }} | count_over_time() by (resource.service.name) | {query}"
        ))
        .unwrap();
        for round in 0..10u8 {
            let mut evaluator = Evaluator::new(&q, &range()).unwrap();
            let mut sent = vec![tied("b", 1), tied("a", 2), tied("c", 3)];
            if round % 2 == 1 {
                sent.reverse();
            }
            for trace in &sent {
                evaluator.observe(trace);
            }
            let series = evaluator.finish();
            assert_eq!(series.len(), 1, "{query}: {series:?}");
            assert_eq!(
                label(&series[0], "resource.service.name"),
                Some(Value::Str("a".into())),
                "{query}, round {round}"
            );
        }
    }
}

#[test]
fn evaluators_merged_after_observing_parts_equal_one_that_observed_all() {
    let mut range = range();
    range.exemplars = 3;
    for query in [
        "{ } | rate() by (resource.service.name)",
        "{ } | count_over_time()",
        "{ kind = server } | quantile_over_time(duration, .5, .99) by (resource.service.name)",
        "{ } | min_over_time(duration) by (name)",
        "{ } | max_over_time(duration)",
        "{ } | avg_over_time(duration) by (resource.service.name)",
        "{ } | histogram_over_time(duration)",
        "{ } | compare({ status = error })",
        "({ } | count_over_time()) / ({ } | rate())",
        "{ } | count_over_time() by (name) | topk(2)",
    ] {
        let q = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        let mut whole = Evaluator::new(&q, &range).unwrap();
        let traces = traces();
        for trace in &traces {
            whole.observe(trace);
        }
        for split in 0..=traces.len() {
            let mut first = Evaluator::new(&q, &range).unwrap();
            let mut second = Evaluator::new(&q, &range).unwrap();
            for trace in &traces[..split] {
                first.observe(trace);
            }
            for trace in &traces[split..] {
                second.observe(trace);
            }
            first.merge(second);
            assert_eq!(first.spans_observed, whole.spans_observed, "{query}");
            let mut merged = first.finish();
            let mut expected = Evaluator::new(&q, &range).unwrap();
            for trace in &traces {
                expected.observe(trace);
            }
            let mut expected = expected.finish();
            let order = |s: &TimeSeries| format!("{:?}", s.labels);
            merged.sort_by_key(order);
            expected.sort_by_key(order);
            assert_eq!(merged.len(), expected.len(), "{query} split at {split}");
            for (m, e) in merged.iter().zip(&expected) {
                assert_eq!(m.labels, e.labels, "{query} split at {split}");
                assert_eq!(m.samples, e.samples, "{query} split at {split}");
                assert!(m.exemplars.len() <= 3, "{query}: the exemplar limit holds");
            }
        }
    }
}
