//! TraceQL metrics: spans in, time series out, as Tempo's metrics engine
//! (`pkg/traceql/engine_metrics.go`, grafana/tempo ad33aa8f) defines them, but exact:
//! quantiles are the nearest-rank value of the spans themselves (Tempo interpolates between
//! power-of-two buckets) and every span is counted (`with(sample=...)` is accepted and ignored).
//!
//! Intervals are Tempo's: the range is aligned to the step, interval `i` covers span start times
//! in `(T_i - step, T_i]` with `T_i = aligned_start + (i + 1) * step`, and the sample of interval
//! `i` is stamped `T_i`. An instant query has one interval, `[start, end]`, stamped `end`.

use std::collections::HashMap;

use crate::ast::{BinaryOp, FieldExpr, Intrinsic, MetricsExpr, MetricsFunction, Pipeline, Root};
use crate::eval::{self, TraceContext, Val};
use crate::model::{Trace, Value};
use crate::Query;

/// The time range of a metrics request, in unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RangeRequest {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// Ignored for instant queries.
    pub step_nanos: u64,
    /// The most exemplars to return (0: none).
    pub exemplars: u32,
    /// One value over the whole range (`/api/metrics/query`).
    pub instant: bool,
}

/// Label values as Tempo's: typed, or nil.
pub type Labels = Vec<(String, Option<Value>)>;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub timestamp_ms: i64,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// `trace:id` and `span:id` (hex).
    pub labels: Vec<(String, Value)>,
    /// NaN for counting functions, the observed value otherwise (durations in seconds).
    pub value: f64,
    pub timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimeSeries {
    pub labels: Labels,
    /// Oldest first; intervals without a value are absent.
    pub samples: Vec<Sample>,
    pub exemplars: Vec<Exemplar>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("not a metrics query: add a metrics function such as `| rate()` (spanset queries go to /api/search)")]
    NotMetrics,
    #[error("invalid range: {0}")]
    Range(String),
    #[error("too many intervals ({0}): use a larger step (at most 11000 intervals)")]
    TooManyIntervals(u64),
}

/// Tempo's default step for a range: about 240 points, rounded down to 1h, 5m, 1m, 15s, 5s or
/// 1s (50 ms multiples under a minute).
pub fn default_step(start_unix_nano: u64, end_unix_nano: u64) -> u64 {
    const SECOND: u64 = 1_000_000_000;
    let delta = end_unix_nano.saturating_sub(start_unix_nano);
    let baseline = delta / 240;
    if delta < 60 * SECOND {
        let g = 50_000_000;
        return if baseline > g { baseline / g * g } else { g };
    }
    for g in [
        3600 * SECOND,
        300 * SECOND,
        60 * SECOND,
        15 * SECOND,
        5 * SECOND,
        SECOND,
    ] {
        if baseline > g {
            return baseline / g * g;
        }
    }
    SECOND
}

/// Maps span start times to intervals.
#[derive(Debug, Clone, Copy)]
struct Intervals {
    start: u64,
    end: u64,
    step: u64,
    count: usize,
    instant: bool,
    requested_start: u64,
    requested_end: u64,
}

impl Intervals {
    fn new(range: &RangeRequest) -> Result<Intervals, MetricsError> {
        let (start, end) = (range.start_unix_nano, range.end_unix_nano);
        if end <= start {
            return Err(MetricsError::Range(format!(
                "end ({end}) must be after start ({start})"
            )));
        }
        if range.instant {
            return Ok(Intervals {
                start,
                end,
                step: end - start,
                count: 1,
                instant: true,
                requested_start: start,
                requested_end: end,
            });
        }
        let step = range.step_nanos;
        if step == 0 {
            return Err(MetricsError::Range("step must be positive".into()));
        }
        let aligned_start = start - start % step;
        let aligned_end = match end % step {
            0 => end,
            m => end.saturating_add(step - m),
        };
        let count = (aligned_end - aligned_start) / step;
        if count > 11_000 {
            return Err(MetricsError::TooManyIntervals(count));
        }
        Ok(Intervals {
            start: aligned_start,
            end: aligned_end,
            step,
            count: count as usize,
            instant: false,
            requested_start: start,
            requested_end: end,
        })
    }

    fn interval(&self, ts: u64) -> Option<usize> {
        if ts < self.requested_start || ts > self.requested_end {
            return None;
        }
        if self.instant {
            return Some(0);
        }
        if ts <= self.start || ts > self.end {
            return None;
        }
        let offset = ts - self.start;
        let mut i = offset / self.step;
        if i * self.step == offset {
            i -= 1;
        }
        Some(i as usize)
    }

    fn timestamp_ms(&self, interval: usize) -> i64 {
        let ts = if self.instant {
            self.end
        } else {
            self.start + (interval as u64 + 1) * self.step
        };
        (ts / 1_000_000) as i64
    }

    fn step_seconds(&self) -> f64 {
        self.step as f64 / 1e9
    }
}

/// A series being built: one value per interval (NaN: none).
#[derive(Debug, Clone)]
struct Series {
    labels: Labels,
    values: Vec<f64>,
    exemplars: Vec<Exemplar>,
}

/// Per-series accumulators of a metrics function.
#[derive(Debug, Default)]
struct Accumulator {
    count: Vec<f64>,
    sum: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
    values: Vec<Vec<f64>>,
    exemplars: Vec<(usize, Exemplar)>,
}

impl Accumulator {
    fn new(n: usize) -> Self {
        Accumulator {
            count: vec![0.0; n],
            sum: vec![0.0; n],
            min: vec![f64::NAN; n],
            max: vec![f64::NAN; n],
            values: Vec::new(),
            exemplars: Vec::new(),
        }
    }
}

/// The first stage of one metrics pipeline.
struct Leaf {
    pipeline: Pipeline,
    function: MetricsFunction,
    by: Vec<FieldExpr>,
    by_labels: Vec<String>,
    series: HashMap<Vec<Option<KeyValue>>, Accumulator>,
    compare: Compare,
    exemplars_taken: u32,
}

/// A label value usable as a map key (floats by their bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyValue {
    Str(String),
    Int(i64),
    Float(u64),
    Bool(bool),
    Array(Vec<KeyValue>),
}

fn key_of(value: &Value) -> KeyValue {
    match value {
        Value::Str(s) => KeyValue::Str(s.clone()),
        Value::Int(i) => KeyValue::Int(*i),
        Value::Float(f) => KeyValue::Float(f.to_bits()),
        Value::Bool(b) => KeyValue::Bool(*b),
        Value::Array(items) => KeyValue::Array(items.iter().map(key_of).collect()),
    }
}

fn value_of(key: &KeyValue) -> Value {
    match key {
        KeyValue::Str(s) => Value::Str(s.clone()),
        KeyValue::Int(i) => Value::Int(*i),
        KeyValue::Float(bits) => Value::Float(f64::from_bits(*bits)),
        KeyValue::Bool(b) => Value::Bool(*b),
        KeyValue::Array(items) => Value::Array(items.iter().map(value_of).collect()),
    }
}

/// `compare()`'s counts: per (selection?, attribute) the count per value and the total.
#[derive(Default)]
struct Compare {
    values: HashMap<(bool, String), HashMap<KeyValue, Vec<f64>>>,
    totals: HashMap<(bool, String), Vec<f64>>,
}

enum Node {
    Leaf(Box<Leaf>),
    Scalar(f64),
    Binary {
        op: BinaryOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
    Staged {
        inner: Box<Node>,
        stages: Vec<crate::ast::SecondStage>,
    },
}

/// Evaluates one metrics query over traces: `observe` each trace of the range, then `finish`.
pub struct Evaluator {
    root: Node,
    intervals: Intervals,
    exemplar_limit: u32,
    /// Spans that matched a pipeline and fell in the range.
    pub spans_observed: u64,
    pub traces_observed: u64,
}

impl Evaluator {
    pub fn new(query: &Query, range: &RangeRequest) -> Result<Evaluator, MetricsError> {
        let Root::Metrics(expr) = &query.ast().root else {
            return Err(MetricsError::NotMetrics);
        };
        let intervals = Intervals::new(range)?;
        Ok(Evaluator {
            root: build(expr),
            intervals,
            exemplar_limit: range.exemplars,
            spans_observed: 0,
            traces_observed: 0,
        })
    }

    /// Adds the matching spans of one trace.
    pub fn observe(&mut self, trace: &Trace) {
        self.traces_observed += 1;
        let intervals = self.intervals;
        let limit = self.exemplar_limit;
        let mut observed = 0;
        for_each_leaf(&mut self.root, &mut |leaf| {
            observed += leaf.observe(trace, &intervals, limit);
        });
        self.spans_observed += observed;
    }

    /// The series, as Tempo returns them (series without any sample left out).
    pub fn finish(self) -> Vec<TimeSeries> {
        let intervals = self.intervals;
        let series = finish_node(self.root, &intervals);
        let mut out: Vec<TimeSeries> = series
            .into_iter()
            .filter_map(|s| {
                let samples: Vec<Sample> = s
                    .values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| !v.is_nan())
                    .map(|(i, v)| Sample {
                        timestamp_ms: intervals.timestamp_ms(i),
                        value: *v,
                    })
                    .collect();
                (!samples.is_empty()).then_some(TimeSeries {
                    labels: s.labels,
                    samples,
                    exemplars: s.exemplars,
                })
            })
            .collect();
        out.sort_by(|a, b| format!("{:?}", a.labels).cmp(&format!("{:?}", b.labels)));
        out
    }
}

fn build(expr: &MetricsExpr) -> Node {
    match expr {
        MetricsExpr::Pipeline {
            pipeline,
            aggregation,
        } => Node::Leaf(Box::new(Leaf {
            pipeline: pipeline.clone(),
            function: aggregation.function.clone(),
            by_labels: aggregation.by.iter().map(|f| f.to_string()).collect(),
            by: aggregation.by.clone(),
            series: HashMap::new(),
            compare: Compare::default(),
            exemplars_taken: 0,
        })),
        MetricsExpr::Scalar(v) => Node::Scalar(*v),
        MetricsExpr::Binary { op, lhs, rhs } => Node::Binary {
            op: *op,
            lhs: Box::new(build(lhs)),
            rhs: Box::new(build(rhs)),
        },
        MetricsExpr::Staged { inner, stages } => Node::Staged {
            inner: Box::new(build(inner)),
            stages: stages.clone(),
        },
    }
}

fn for_each_leaf(node: &mut Node, visit: &mut dyn FnMut(&mut Leaf)) {
    match node {
        Node::Leaf(leaf) => visit(leaf),
        Node::Scalar(_) => {}
        Node::Binary { lhs, rhs, .. } => {
            for_each_leaf(lhs, visit);
            for_each_leaf(rhs, visit);
        }
        Node::Staged { inner, .. } => for_each_leaf(inner, visit),
    }
}

/// A span's value for `*_over_time(field)`: numbers as they are, durations in seconds.
fn numeric(value: &Val<'_>) -> Option<f64> {
    match value {
        Val::Duration(d) => Some(*d as f64 / 1e9),
        Val::Int(i) => Some(*i as f64),
        Val::Float(f) => Some(*f),
        Val::Multi(items) | Val::Each(items) => items.iter().find_map(numeric),
        _ => None,
    }
}

/// Tempo's `Log2Bucketize`: the next power of two (None under 2).
fn log2_bucket(v: u64) -> Option<f64> {
    if v < 2 {
        return None;
    }
    Some((1u128 << (64 - (v - 1).leading_zeros())) as f64)
}

fn histogram_bucket(value: &Val<'_>) -> Option<f64> {
    match value {
        Val::Duration(d) => log2_bucket(*d).map(|b| b / 1e9),
        Val::Int(i) if *i >= 0 => log2_bucket(*i as u64),
        Val::Multi(items) | Val::Each(items) => items.iter().find_map(histogram_bucket),
        _ => None,
    }
}

impl Leaf {
    /// Observes the matching spans of `trace`; returns how many fell in the range.
    fn observe(&mut self, trace: &Trace, intervals: &Intervals, exemplar_limit: u32) -> u64 {
        let ctx = TraceContext::new(trace);
        let (groups, _) = eval::pipeline(&ctx, &self.pipeline);
        if groups.is_empty() {
            return 0;
        }
        let mut spans: Vec<usize> = groups.into_iter().flat_map(|g| g.spans).collect();
        spans.sort_unstable();
        spans.dedup();
        let mut observed = 0;
        for index in spans {
            let span = &trace.spans[index];
            let Some(interval) = intervals.interval(span.start_unix_nano) else {
                continue;
            };
            observed += 1;
            if let MetricsFunction::Compare { .. } = self.function {
                self.observe_compare(&ctx, index, interval, intervals);
                continue;
            }
            let mut key: Vec<Option<KeyValue>> = self
                .by
                .iter()
                .map(|f| eval::field(&ctx, index, f).to_value().map(|v| key_of(&v)))
                .collect();
            let (value, exemplar_value) = match &self.function {
                MetricsFunction::Rate | MetricsFunction::CountOverTime => (None, f64::NAN),
                MetricsFunction::HistogramOverTime(f) => {
                    let v = eval::field(&ctx, index, f);
                    let Some(bucket) = histogram_bucket(&v) else {
                        continue;
                    };
                    key.push(Some(KeyValue::Float(bucket.to_bits())));
                    (None, f64::NAN)
                }
                MetricsFunction::MinOverTime(f)
                | MetricsFunction::MaxOverTime(f)
                | MetricsFunction::SumOverTime(f)
                | MetricsFunction::AvgOverTime(f)
                | MetricsFunction::QuantileOverTime(f, _) => {
                    let Some(v) = numeric(&eval::field(&ctx, index, f)) else {
                        continue;
                    };
                    (Some(v), v)
                }
                MetricsFunction::Compare { .. } => continue,
            };
            let n = intervals.count;
            let acc = self
                .series
                .entry(key)
                .or_insert_with(|| Accumulator::new(n));
            acc.count[interval] += 1.0;
            if let Some(v) = value {
                acc.sum[interval] += v;
                if acc.min[interval].is_nan() || v < acc.min[interval] {
                    acc.min[interval] = v;
                }
                if acc.max[interval].is_nan() || v > acc.max[interval] {
                    acc.max[interval] = v;
                }
                if let MetricsFunction::QuantileOverTime(..) = self.function {
                    if acc.values.is_empty() {
                        acc.values = vec![Vec::new(); n];
                    }
                    acc.values[interval].push(v);
                }
            }
            // At most two exemplars per series and interval, as Tempo.
            if self.exemplars_taken < exemplar_limit
                && acc.exemplars.iter().filter(|(i, _)| *i == interval).count() < 2
            {
                self.exemplars_taken += 1;
                acc.exemplars.push((
                    interval,
                    Exemplar {
                        labels: vec![
                            ("trace:id".into(), Value::Str(hex(&span.trace_id))),
                            ("span:id".into(), Value::Str(hex(&span.span_id))),
                        ],
                        value: exemplar_value,
                        timestamp_ms: (span.start_unix_nano / 1_000_000) as i64,
                    },
                ));
            }
        }
        observed
    }

    fn observe_compare(
        &mut self,
        ctx: &TraceContext<'_>,
        index: usize,
        interval: usize,
        intervals: &Intervals,
    ) {
        let MetricsFunction::Compare {
            selection,
            start,
            end,
            ..
        } = &self.function
        else {
            return;
        };
        let span = &ctx.trace.spans[index];
        let ts = span.start_unix_nano;
        let in_window = *start == 0 || *end == 0 || (ts > *start && ts <= *end);
        let selected = in_window
            && match selection {
                None => true,
                Some(e) => eval::field(ctx, index, e) == Val::Bool(true),
            };
        let n = intervals.count;
        let mut add = |name: String, value: Value| {
            let values = self
                .compare
                .values
                .entry((selected, name.clone()))
                .or_default();
            values.entry(key_of(&value)).or_insert_with(|| vec![0.0; n])[interval] += 1.0;
            self.compare
                .totals
                .entry((selected, name))
                .or_insert_with(|| vec![0.0; n])[interval] += 1.0;
        };
        // Every attribute and the intrinsics whose values are worth comparing (Tempo leaves
        // out durations, ids and the nested set numbers).
        for (scope, list) in [
            (crate::ast::Scope::Span, &span.attributes),
            (crate::ast::Scope::Resource, &span.resource_attributes),
        ] {
            for (k, v) in list {
                add(format!("{}{k}", scope.prefix()), v.clone());
            }
        }
        for which in [
            Intrinsic::Name,
            Intrinsic::Status,
            Intrinsic::StatusMessage,
            Intrinsic::Kind,
            Intrinsic::RootName,
            Intrinsic::RootServiceName,
        ] {
            if let Some(v) = eval::intrinsic(ctx, index, span, which).to_value() {
                add(which.name().to_string(), v);
            }
        }
    }

    fn finish(self, intervals: &Intervals) -> Vec<Series> {
        if let MetricsFunction::Compare { top, .. } = self.function {
            return finish_compare(self.compare, top as usize);
        }
        let name = self.function.name();
        let mut out = Vec::new();
        for (key, acc) in self.series {
            let mut labels: Labels = Vec::new();
            let by_len = self.by_labels.len();
            for (label, value) in self.by_labels.iter().zip(&key) {
                if let Some(v) = value {
                    labels.push((label.clone(), Some(value_of(v))));
                }
            }
            if by_len > 0 && labels.is_empty() {
                // All nil: Tempo keeps the first label, as nil.
                labels.push((self.by_labels[0].clone(), None));
            }
            if by_len == 0 && !matches!(self.function, MetricsFunction::HistogramOverTime(_)) {
                labels.push(("__name__".into(), Some(Value::Str(name.into()))));
            }
            let exemplars = |values: &[f64]| -> Vec<Exemplar> {
                acc.exemplars
                    .iter()
                    .filter(|(i, _)| !values[*i].is_nan())
                    .map(|(_, e)| e.clone())
                    .collect()
            };
            let n = intervals.count;
            let values: Vec<f64> = match &self.function {
                MetricsFunction::Rate => {
                    let seconds = intervals.step_seconds();
                    acc.count.iter().map(|c| c / seconds).collect()
                }
                MetricsFunction::CountOverTime => acc.count.clone(),
                MetricsFunction::HistogramOverTime(_) => {
                    if let Some(Some(bucket)) = key.get(by_len) {
                        labels.push(("__bucket".into(), Some(value_of(bucket))));
                    }
                    acc.count.clone()
                }
                MetricsFunction::SumOverTime(_) => (0..n)
                    .map(|i| {
                        if acc.count[i] > 0.0 {
                            acc.sum[i]
                        } else {
                            f64::NAN
                        }
                    })
                    .collect(),
                MetricsFunction::MinOverTime(_) => acc.min.clone(),
                MetricsFunction::MaxOverTime(_) => acc.max.clone(),
                MetricsFunction::AvgOverTime(_) => (0..n)
                    .map(|i| {
                        if acc.count[i] > 0.0 {
                            acc.sum[i] / acc.count[i]
                        } else {
                            f64::NAN
                        }
                    })
                    .collect(),
                MetricsFunction::QuantileOverTime(_, qs) => {
                    let mut sorted = acc.values.clone();
                    for v in &mut sorted {
                        v.sort_by(f64::total_cmp);
                    }
                    let per_q: Vec<Vec<f64>> = qs
                        .iter()
                        .map(|q| sorted.iter().map(|v| nearest_rank(v, *q)).collect())
                        .collect();
                    for (qi, q) in qs.iter().enumerate() {
                        let mut l = labels.clone();
                        l.retain(|(k, _)| k != "__name__");
                        l.push(("p".into(), Some(Value::Float(*q))));
                        // Each exemplar goes to the quantile closest to its value.
                        let ex = acc
                            .exemplars
                            .iter()
                            .filter(|(i, e)| {
                                let closest = per_q
                                    .iter()
                                    .enumerate()
                                    .min_by(|a, b| {
                                        (a.1[*i] - e.value)
                                            .abs()
                                            .total_cmp(&(b.1[*i] - e.value).abs())
                                    })
                                    .map(|(j, _)| j);
                                closest == Some(qi)
                            })
                            .map(|(_, e)| e.clone())
                            .collect();
                        out.push(Series {
                            labels: l,
                            values: per_q[qi].clone(),
                            exemplars: ex,
                        });
                    }
                    continue;
                }
                MetricsFunction::Compare { .. } => continue,
            };
            let ex = exemplars(&values);
            out.push(Series {
                labels,
                values,
                exemplars: ex,
            });
        }
        out
    }
}

/// The nearest-rank quantile (the value at rank `ceil(q * n)`), 0 for no values as Tempo.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn finish_compare(compare: Compare, top: usize) -> Vec<Series> {
    let meta = |selected: bool, total: bool| {
        let kind = match (selected, total) {
            (false, false) => "baseline",
            (true, false) => "selection",
            (false, true) => "baseline_total",
            (true, true) => "selection_total",
        };
        ("__meta_type".to_string(), Some(Value::Str(kind.into())))
    };
    let mut out = Vec::new();
    let mut too_many = std::collections::BTreeSet::new();
    for ((selected, name), values) in compare.values {
        let mut ranked: Vec<(KeyValue, Vec<f64>)> = values.into_iter().collect();
        ranked.sort_by(|a, b| {
            let total = |v: &Vec<f64>| v.iter().sum::<f64>();
            total(&b.1)
                .total_cmp(&total(&a.1))
                .then_with(|| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)))
        });
        if ranked.len() > top {
            too_many.insert(name.clone());
        }
        for (value, counts) in ranked.into_iter().take(top) {
            out.push(Series {
                labels: vec![
                    meta(selected, false),
                    (name.clone(), Some(value_of(&value))),
                ],
                values: counts,
                exemplars: Vec::new(),
            });
        }
    }
    for name in too_many {
        out.push(Series {
            labels: vec![
                (
                    "__meta_error".into(),
                    Some(Value::Str("__too_many_values__".into())),
                ),
                (name, None),
            ],
            values: Vec::new(),
            exemplars: Vec::new(),
        });
    }
    for ((selected, name), counts) in compare.totals {
        out.push(Series {
            labels: vec![meta(selected, true), (name, None)],
            values: counts,
            exemplars: Vec::new(),
        });
    }
    out
}

fn finish_node(node: Node, intervals: &Intervals) -> Vec<Series> {
    match node {
        Node::Leaf(leaf) => leaf.finish(intervals),
        Node::Scalar(v) => vec![Series {
            labels: Vec::new(),
            values: vec![v; intervals.count],
            exemplars: Vec::new(),
        }],
        Node::Binary { op, lhs, rhs } => {
            let scalar = |n: &Node| match n {
                Node::Scalar(v) => Some(*v),
                _ => None,
            };
            let (ls, rs) = (scalar(&lhs), scalar(&rhs));
            let left = finish_node(*lhs, intervals);
            let right = finish_node(*rhs, intervals);
            combine(op, left, right, ls.is_some(), rs.is_some())
        }
        Node::Staged { inner, stages } => {
            let mut series = finish_node(*inner, intervals);
            for stage in stages {
                series = second_stage(&stage, series, intervals.count);
            }
            series
        }
    }
}

fn apply(op: BinaryOp, a: f64, b: f64) -> f64 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div if b == 0.0 => f64::NAN,
        BinaryOp::Div => a / b,
        _ => f64::NAN,
    }
}

/// Arithmetic between series: a number applies to every series; otherwise series with the same
/// labels (ignoring `__name__`) are combined, and series without a partner are dropped.
fn combine(
    op: BinaryOp,
    left: Vec<Series>,
    right: Vec<Series>,
    left_scalar: bool,
    right_scalar: bool,
) -> Vec<Series> {
    let zip = |a: &[f64], b: &[f64]| -> Vec<f64> {
        a.iter().zip(b).map(|(x, y)| apply(op, *x, *y)).collect()
    };
    if right_scalar {
        let Some(s) = right.first() else { return left };
        return left
            .into_iter()
            .map(|mut l| {
                l.values = zip(&l.values, &s.values);
                l
            })
            .collect();
    }
    if left_scalar {
        let Some(s) = left.first() else { return right };
        return right
            .into_iter()
            .map(|mut r| {
                r.values = zip(&s.values, &r.values);
                r
            })
            .collect();
    }
    let strip = |labels: &Labels| -> Labels {
        labels
            .iter()
            .filter(|(k, _)| k != "__name__")
            .cloned()
            .collect()
    };
    let mut out = Vec::new();
    for l in &left {
        let key = strip(&l.labels);
        if let Some(r) = right.iter().find(|r| strip(&r.labels) == key) {
            // Counting intervals without spans are 0 on both sides of `a / b`: no value.
            out.push(Series {
                labels: key,
                values: zip(&l.values, &r.values),
                exemplars: l.exemplars.clone(),
            });
        }
    }
    out
}

fn second_stage(stage: &crate::ast::SecondStage, mut series: Vec<Series>, n: usize) -> Vec<Series> {
    use crate::ast::SecondStage;
    match stage {
        SecondStage::Filter { op, value } => {
            for s in &mut series {
                for v in &mut s.values {
                    let keep = !v.is_nan()
                        && match op {
                            BinaryOp::Eq => *v == *value,
                            BinaryOp::NotEq => *v != *value,
                            BinaryOp::Gt => *v > *value,
                            BinaryOp::Gte => *v >= *value,
                            BinaryOp::Lt => *v < *value,
                            _ => *v <= *value,
                        };
                    if !keep {
                        *v = f64::NAN;
                    }
                }
            }
            series.retain(|s| s.values.iter().any(|v| !v.is_nan()));
            series
        }
        SecondStage::TopK(k) | SecondStage::BottomK(k) => {
            let k = *k as usize;
            if series.len() <= k {
                return series;
            }
            let top = matches!(stage, SecondStage::TopK(_));
            // At each interval, the k largest (smallest) values keep their place.
            let mut keep = vec![vec![false; n]; series.len()];
            #[allow(clippy::needless_range_loop)] // i indexes every series' values too
            for i in 0..n {
                let mut ranked: Vec<usize> = (0..series.len())
                    .filter(|&s| series[s].values.get(i).is_some_and(|v| !v.is_nan()))
                    .collect();
                ranked.sort_by(|&a, &b| {
                    let ord = series[a].values[i].total_cmp(&series[b].values[i]);
                    if top {
                        ord.reverse()
                    } else {
                        ord
                    }
                });
                for &s in ranked.iter().take(k) {
                    keep[s][i] = true;
                }
            }
            for (s, keep) in series.iter_mut().zip(keep) {
                for (v, k) in s.values.iter_mut().zip(keep) {
                    if !k {
                        *v = f64::NAN;
                    }
                }
            }
            series.retain(|s| s.values.iter().any(|v| !v.is_nan()));
            series
        }
    }
}
