//! One tenant's series: counters and classic histograms with fixed label names, bounded as
//! Tempo's registry bounds them (`modules/generator/registry`, grafana/tempo@ad33aa8f):
//! `max_cardinality_per_label` replaces a label's new values past the limit with
//! `__cardinality_overflow__`, `max_active_series` sends samples of new series past the limit to
//! one overflow series per metric (`metric_overflow="true"`), and both are counted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const OVERFLOW_VALUE: &str = "__cardinality_overflow__";
const KEY_SEPARATOR: char = '\u{1f}';

/// Every span looks its series up (three for span metrics, four per edge): with SipHash, the
/// hashing was half of the generator's CPU (perf, bench/generator.py). foldhash is seeded per
/// process; the number of series is bounded by `max_active_series`.
pub(crate) type FastHash = foldhash::fast::RandomState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricId(usize);

#[derive(Debug, Clone)]
pub enum MetricKind {
    Counter,
    /// Upper bounds in seconds (the `+Inf` bucket is implicit).
    Histogram(Arc<[f64]>),
}

#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    /// A counter's value.
    pub value: f64,
    /// A histogram's per-bucket (not cumulative) counts, the last one `+Inf`.
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
    pub updated: Instant,
    /// Whether remote write already sent it (a new counter is first sent as 0, so that
    /// `increase()` sees its first increment, as Tempo does).
    pub sent: bool,
}

#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub label_names: Vec<String>,
    /// Series in a Vec and their keys in a map to indexes: a hit costs one hash (a map of
    /// series needed two, `contains_key` then `get_mut`, to satisfy the borrow checker).
    series: Vec<Series>,
    index: HashMap<Box<str>, usize, FastHash>,
    overflow: Option<Series>,
}

impl Metric {
    pub fn series(&self) -> impl Iterator<Item = &Series> {
        self.series.iter().chain(self.overflow.iter())
    }
}

/// One sample of [`Registry::record`].
#[derive(Debug, Clone, Copy)]
pub enum Sample {
    /// Add to a counter.
    Inc(MetricId, f64),
    /// Observe a value (seconds) in a histogram.
    Observe(MetricId, f64),
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_active_series: u64,
    pub max_cardinality_per_label: u64,
    pub max_label_value_length: usize,
    pub stale_duration: Duration,
}

#[derive(Debug)]
pub struct Registry {
    metrics: Vec<Metric>,
    limits: Limits,
    active: u64,
    /// Distinct values per label name, for `max_cardinality_per_label`.
    label_values: HashMap<String, HashSet<String>>,
    /// Samples that went to an overflow series because of `max_active_series`.
    pub series_limited: u64,
    /// Values replaced by `__cardinality_overflow__`, per label name.
    pub label_values_limited: HashMap<String, u64>,
    key: String,
}

impl Registry {
    pub fn new(limits: Limits) -> Registry {
        Registry {
            metrics: Vec::new(),
            limits,
            active: 0,
            label_values: HashMap::new(),
            series_limited: 0,
            label_values_limited: HashMap::new(),
            key: String::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricKind,
        label_names: Vec<String>,
    ) -> MetricId {
        self.metrics.push(Metric {
            name,
            help,
            kind,
            label_names,
            series: Vec::new(),
            index: HashMap::default(),
            overflow: None,
        });
        MetricId(self.metrics.len() - 1)
    }

    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    pub fn metrics_mut(&mut self) -> impl Iterator<Item = &mut Series> {
        self.metrics
            .iter_mut()
            .flat_map(|m| m.series.iter_mut().chain(m.overflow.iter_mut()))
    }

    pub fn active_series(&self) -> u64 {
        self.active
    }

    pub fn inc(&mut self, id: MetricId, values: &[&str], by: f64, now: Instant) {
        self.record(&[Sample::Inc(id, by)], values, now);
    }

    pub fn observe(&mut self, id: MetricId, values: &[&str], seconds: f64, now: Instant) {
        self.record(&[Sample::Observe(id, seconds)], values, now);
    }

    /// Several samples of metrics with the same label values (span metrics: calls, latency
    /// and size of one span; an edge: requests, failures and two histograms): the key is
    /// built once and each hit costs one hash.
    pub fn record(&mut self, samples: &[Sample], values: &[&str], now: Instant) {
        build_key(&mut self.key, values.iter().copied());
        for sample in samples {
            let (id, value) = match *sample {
                Sample::Inc(id, v) | Sample::Observe(id, v) => (id, v),
            };
            let metric = &self.metrics[id.0];
            let bucket = match &metric.kind {
                MetricKind::Histogram(bounds) => Some(
                    bounds
                        .iter()
                        .position(|le| value <= *le)
                        .unwrap_or(bounds.len()),
                ),
                MetricKind::Counter => None,
            };
            let series = match metric.index.get(self.key.as_str()) {
                Some(&i) => &mut self.metrics[id.0].series[i],
                None => self.new_series_for(id, values, now),
            };
            series.updated = now;
            match (sample, bucket) {
                (Sample::Inc(..), _) => series.value += value,
                (Sample::Observe(..), Some(bucket)) => {
                    series.buckets[bucket] += 1;
                    series.sum += value;
                    series.count += 1;
                }
                (Sample::Observe(..), None) => {}
            }
        }
    }

    fn new_series(kind: &MetricKind, labels: Vec<(String, String)>, now: Instant) -> Series {
        let buckets = match kind {
            MetricKind::Histogram(bounds) => vec![0; bounds.len() + 1],
            MetricKind::Counter => Vec::new(),
        };
        Series {
            labels,
            value: 0.0,
            buckets,
            sum: 0.0,
            count: 0,
            updated: now,
            sent: false,
        }
    }

    /// The series of `values` that `self.key` does not name yet, created within the limits
    /// (bounded values may name an existing series). Leaves `self.key` as it found it.
    fn new_series_for(&mut self, id: MetricId, values: &[&str], now: Instant) -> &mut Series {
        let limits = self.limits;
        let mut bounded: Vec<String> = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            let name = &self.metrics[id.0].label_names[i];
            let mut value = truncate(value, limits.max_label_value_length).to_string();
            if limits.max_cardinality_per_label > 0 {
                let seen = self.label_values.entry(name.clone()).or_default();
                if !seen.contains(&value) {
                    if seen.len() as u64 >= limits.max_cardinality_per_label {
                        *self.label_values_limited.entry(name.clone()).or_default() += 1;
                        value = OVERFLOW_VALUE.to_string();
                    } else {
                        seen.insert(value.clone());
                    }
                }
            }
            bounded.push(value);
        }
        let mut key = String::new();
        build_key(&mut key, bounded.iter().map(String::as_str));
        let metric = &mut self.metrics[id.0];
        let i = match metric.index.get(key.as_str()) {
            Some(&i) => i,
            None => {
                if limits.max_active_series > 0 && self.active >= limits.max_active_series {
                    self.series_limited += 1;
                    let kind = metric.kind.clone();
                    return metric.overflow.get_or_insert_with(|| {
                        Self::new_series(
                            &kind,
                            vec![("metric_overflow".to_string(), "true".to_string())],
                            now,
                        )
                    });
                }
                self.active += 1;
                let labels = metric.label_names.iter().cloned().zip(bounded).collect();
                metric
                    .series
                    .push(Self::new_series(&metric.kind, labels, now));
                metric.index.insert(key.into(), metric.series.len() - 1);
                metric.series.len() - 1
            }
        };
        &mut metric.series[i]
    }

    /// Drops series not updated within `stale_duration` (Tempo: 15m) and forgets their values.
    pub fn remove_stale(&mut self, now: Instant) {
        let stale = self.limits.stale_duration;
        let fresh = |s: &Series| now.saturating_duration_since(s.updated) < stale;
        let mut active = 0;
        for metric in &mut self.metrics {
            if metric.series.iter().any(|s| !fresh(s)) {
                metric.series.retain(|s| fresh(s));
                // Indexes moved: the keys are rebuilt from the labels, as the series were made.
                let mut key = String::new();
                metric.index.clear();
                for (i, s) in metric.series.iter().enumerate() {
                    build_key(&mut key, s.labels.iter().map(|(_, v)| v.as_str()));
                    metric.index.insert(key.as_str().into(), i);
                }
            }
            if metric.overflow.as_ref().is_some_and(|s| !fresh(s)) {
                metric.overflow = None;
            }
            active += metric.series.len() as u64;
        }
        self.active = active;
        self.label_values.clear();
        for metric in &self.metrics {
            for series in &metric.series {
                for (name, value) in &series.labels {
                    self.label_values
                        .entry(name.clone())
                        .or_default()
                        .insert(value.clone());
                }
            }
        }
    }
}

fn build_key<'k, 'v>(key: &'k mut String, values: impl Iterator<Item = &'v str>) -> &'k str {
    key.clear();
    for value in values {
        key.push_str(value);
        key.push(KEY_SEPARATOR);
    }
    key
}

fn truncate(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(series: u64, per_label: u64) -> Limits {
        Limits {
            max_active_series: series,
            max_cardinality_per_label: per_label,
            max_label_value_length: 2048,
            stale_duration: Duration::from_secs(900),
        }
    }

    #[test]
    fn max_active_series_sends_new_series_to_one_overflow_series_and_counts_them() {
        let mut r = Registry::new(limits(2, 0));
        let calls = r.add(
            "calls_total",
            "",
            MetricKind::Counter,
            vec!["span_name".into()],
        );
        let now = Instant::now();
        for name in ["a", "b", "c", "d", "a"] {
            r.inc(calls, &[name], 1.0, now);
        }
        let series: Vec<_> = r.metrics()[0].series().cloned().collect();
        assert_eq!(series.len(), 3, "{series:?}");
        let value = |label: (&str, &str)| {
            series
                .iter()
                .find(|s| {
                    s.labels
                        .iter()
                        .any(|(k, v)| (k.as_str(), v.as_str()) == label)
                })
                .map(|s| s.value)
        };
        assert_eq!(value(("span_name", "a")), Some(2.0));
        assert_eq!(value(("span_name", "b")), Some(1.0));
        assert_eq!(value(("metric_overflow", "true")), Some(2.0));
        assert_eq!(r.series_limited, 2);
        assert_eq!(r.active_series(), 2);
    }

    #[test]
    fn per_label_limit_replaces_new_values_with_the_overflow_value() {
        let mut r = Registry::new(limits(0, 2));
        let calls = r.add(
            "calls_total",
            "",
            MetricKind::Counter,
            vec!["service".into(), "span_name".into()],
        );
        let now = Instant::now();
        for name in ["GET /1", "GET /2", "GET /3", "GET /4", "GET /1"] {
            r.inc(calls, &["orders", name], 1.0, now);
        }
        let mut got: Vec<(String, f64)> = r.metrics()[0]
            .series()
            .map(|s| (s.labels[1].1.clone(), s.value))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("GET /1".to_string(), 2.0),
                ("GET /2".to_string(), 1.0),
                (OVERFLOW_VALUE.to_string(), 2.0)
            ]
        );
        assert_eq!(r.label_values_limited.get("span_name"), Some(&2));
        assert_eq!(r.label_values_limited.get("service"), None);
    }

    #[test]
    fn histogram_counts_each_observation_in_its_bucket() {
        let mut r = Registry::new(limits(0, 0));
        let h = r.add(
            "latency",
            "",
            MetricKind::Histogram(vec![0.1, 0.2, 0.4].into()),
            vec![],
        );
        let now = Instant::now();
        for s in [0.05, 0.1, 0.15, 0.3, 2.0] {
            r.observe(h, &[], s, now);
        }
        let s = r.metrics()[0].series().next().cloned().expect("a series");
        assert_eq!(s.buckets, vec![2, 1, 1, 1]);
        assert_eq!(s.count, 5);
        assert!((s.sum - 2.6).abs() < 1e-9);
    }

    #[test]
    fn stale_series_are_removed_and_free_their_place() {
        let mut r = Registry::new(Limits {
            stale_duration: Duration::from_secs(10),
            ..limits(1, 0)
        });
        let calls = r.add("calls_total", "", MetricKind::Counter, vec!["n".into()]);
        let t0 = Instant::now();
        r.inc(calls, &["old"], 1.0, t0);
        r.remove_stale(t0 + Duration::from_secs(11));
        r.inc(calls, &["new"], 1.0, t0 + Duration::from_secs(11));
        let labels: Vec<_> = r.metrics()[0].series().map(|s| s.labels.clone()).collect();
        assert_eq!(labels, vec![vec![("n".to_string(), "new".to_string())]]);
        assert_eq!(r.series_limited, 0);
    }

    #[test]
    fn series_kept_by_stale_removal_are_still_found_by_their_labels() {
        // Removal moves series within the Vec: the key index is rebuilt, so a survivor keeps
        // counting in its own series instead of getting a second one.
        let mut r = Registry::new(Limits {
            stale_duration: Duration::from_secs(10),
            ..limits(0, 0)
        });
        let calls = r.add("calls_total", "", MetricKind::Counter, vec!["n".into()]);
        let t0 = Instant::now();
        r.inc(calls, &["old"], 1.0, t0);
        r.inc(calls, &["kept"], 1.0, t0 + Duration::from_secs(5));
        r.remove_stale(t0 + Duration::from_secs(11));
        r.inc(calls, &["kept"], 1.0, t0 + Duration::from_secs(12));
        let got: Vec<_> = r.metrics()[0]
            .series()
            .map(|s| (s.labels[0].1.clone(), s.value))
            .collect();
        assert_eq!(got, vec![("kept".to_string(), 2.0)]);
        assert_eq!(r.active_series(), 1);
    }
}
