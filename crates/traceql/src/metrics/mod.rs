//! TraceQL metrics: spans in, time series out, as Tempo's metrics engine
//! (`pkg/traceql/engine_metrics.go`, grafana/tempo ad33aa8f) defines them, but exact:
//! quantiles are the nearest-rank value of the spans themselves (Tempo interpolates between
//! power-of-two buckets) and every span is counted (`with(sample=...)` is accepted and ignored).
//!
//! Intervals are Tempo's: the range is aligned to the step, interval `i` covers span start times
//! in `(T_i - step, T_i]` with `T_i = aligned_start + (i + 1) * step`, and the sample of interval
//! `i` is stamped `T_i`. An instant query has one interval, `[start, end]`, stamped `end`.

/// Series are looked up once per counted span: with std's SipHash the lookups took 4.3% of a
/// store's columns scan (perf, BENCHMARKS.md 2026-12-04); foldhash is several times faster.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use crate::ast::{BinaryOp, FieldExpr, Intrinsic, MetricsExpr, MetricsFunction, Pipeline, Root};
use crate::eval::{self, TraceContext, Val};
use crate::model::{Trace, Value};
use crate::Query;

mod combine;
mod leaf;
mod merge;

use combine::{combine, second_stage};

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
        self.snapshot()
    }

    /// The series of the traces observed so far, as `finish` would give them now: what a
    /// streamed partial answer carries (Tempo's combiner sends the series of the jobs done so
    /// far). Costs about as much as `finish` (quantiles sort their values each time), so callers
    /// pace it.
    pub fn snapshot(&self) -> Vec<TimeSeries> {
        let intervals = self.intervals;
        let series = finish_node(&self.root, &intervals);
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
            series: HashMap::default(),
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

fn finish_compare(compare: &Compare, top: usize) -> Vec<Series> {
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
    for ((selected, name), values) in &compare.values {
        let selected = *selected;
        let mut ranked: Vec<(KeyValue, Vec<f64>)> =
            values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
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
    for ((selected, name), counts) in &compare.totals {
        out.push(Series {
            labels: vec![meta(*selected, true), (name.clone(), None)],
            values: counts.clone(),
            exemplars: Vec::new(),
        });
    }
    out
}

fn finish_node(node: &Node, intervals: &Intervals) -> Vec<Series> {
    match node {
        Node::Leaf(leaf) => leaf.finish(intervals),
        Node::Scalar(v) => vec![Series {
            labels: Vec::new(),
            values: vec![*v; intervals.count],
            exemplars: Vec::new(),
        }],
        Node::Binary { op, lhs, rhs } => {
            let scalar = |n: &Node| match n {
                Node::Scalar(v) => Some(*v),
                _ => None,
            };
            let (ls, rs) = (scalar(lhs), scalar(rhs));
            let left = finish_node(lhs, intervals);
            let right = finish_node(rhs, intervals);
            combine(*op, left, right, ls.is_some(), rs.is_some())
        }
        Node::Staged { inner, stages } => {
            let mut series = finish_node(inner, intervals);
            for stage in stages {
                series = second_stage(stage, series, intervals.count);
            }
            series
        }
    }
}
