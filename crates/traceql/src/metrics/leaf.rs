//! What one leaf of a metrics query (`{ filter } | fn(...) by (...)`) does with each matching
//! span: its value, its bucket, its interval, and the exemplars it keeps.

use super::*;

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
    pub(super) fn observe(
        &mut self,
        trace: &Trace,
        intervals: &Intervals,
        exemplar_limit: u32,
    ) -> u64 {
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
                        labels: exemplar_labels(span),
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

    /// The series of what was observed so far; observing more afterwards is fine.
    pub(super) fn finish(&self, intervals: &Intervals) -> Vec<Series> {
        if let MetricsFunction::Compare { top, .. } = self.function {
            return finish_compare(&self.compare, top as usize);
        }
        let name = self.function.name();
        let mut out = Vec::new();
        for (key, acc) in &self.series {
            let mut labels: Labels = Vec::new();
            let by_len = self.by_labels.len();
            for (label, value) in self.by_labels.iter().zip(key) {
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

/// `trace:id` and `span:id` of an exemplar; a span whose id is unknown (zero: spans counted
/// from a store's columns, which keep no span ids) has `trace:id` alone.
fn exemplar_labels(span: &crate::model::Span) -> Vec<(String, Value)> {
    let mut labels = vec![("trace:id".into(), Value::Str(hex(&span.trace_id)))];
    if span.span_id != [0; 8] {
        labels.push(("span:id".into(), Value::Str(hex(&span.span_id))));
    }
    labels
}
