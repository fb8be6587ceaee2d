//! `threadline doctor`: finds where tracing breaks, from the traces a store holds, the
//! collectors' own metrics and their configs.
//!
//! Everything here is a pure function of its input, so each check is tested on hand-built data:
//! - [`TraceAnalyzer`] folds whole traces (the TraceQL model) one at a time, keeping only what
//!   the cross-trace checks need, and turns them into findings: lost context ([`context`]),
//!   broken traces and sampling ([`broken`]), clock skew ([`skew`]), span-name cardinality
//!   ([`names`]), PII and secrets ([`pii`]).
//! - [`config_checks`] reads collector configs; [`metrics_checks`] reads `otelcol_*` metrics.
//! - [`Report`] orders findings by impact; [`render`] prints it for a terminal.

pub mod broken;
pub mod config_checks;
pub mod context;
pub mod finding;
pub mod metrics_checks;
pub mod names;
pub mod pii;
pub mod render;
pub mod skew;
pub mod spans;
#[cfg(test)]
mod tests;

use threadline_otlp::TraceData;
use threadline_traceql::model::Trace;

pub use finding::{Category, Example, Finding, Hop, Report, Scanned, Severity};

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a collector config: {message}")]
    Config { path: String, message: String },
    #[error("invalid Prometheus metrics: {0}")]
    Metrics(String),
    #[error("invalid duration {0:?}: use a number and a unit, like 30m, 1h or 2d")]
    Duration(String),
}

/// When something counts as a finding.
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// Fewest occurrences for a finding (one odd span is noise).
    pub min_count: u64,
    /// Smallest share of calls for ratio-based findings.
    pub min_ratio: f64,
    /// How far a child may lie outside its parent before it counts (clock skew).
    pub skew_tolerance_nanos: u64,
    /// Distinct span names per service and kind before the names count as too many.
    pub max_span_names: usize,
    /// Example traces per finding.
    pub examples: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_count: 2,
            min_ratio: 0.05,
            skew_tolerance_nanos: 10_000_000,
            max_span_names: 200,
            examples: 5,
        }
    }
}

/// Folds traces, then reports. Traces may come in any order; each must be whole.
pub struct TraceAnalyzer {
    thresholds: Thresholds,
    context: context::ContextDetector,
    broken: broken::BrokenDetector,
    skew: skew::SkewDetector,
    names: names::NameDetector,
    pii: pii::PiiDetector,
    traces: u64,
    spans: u64,
    services: std::collections::HashSet<String>,
    durations_ms: Vec<f32>,
}

impl TraceAnalyzer {
    pub fn new(thresholds: Thresholds) -> TraceAnalyzer {
        TraceAnalyzer {
            broken: broken::BrokenDetector::new(thresholds.examples),
            thresholds,
            context: Default::default(),
            skew: Default::default(),
            names: Default::default(),
            pii: Default::default(),
            traces: 0,
            spans: 0,
            services: Default::default(),
            durations_ms: Vec::new(),
        }
    }

    pub fn add_trace(&mut self, trace: &Trace) {
        if trace.spans.is_empty() {
            return;
        }
        let index = spans::TraceIndex::new(trace);
        self.traces += 1;
        self.spans += trace.spans.len() as u64;
        for span in &trace.spans {
            let service = span.service_name();
            if !self.services.contains(service) {
                self.services.insert(service.to_string());
            }
        }
        let start = trace
            .spans
            .iter()
            .map(|s| s.start_unix_nano)
            .min()
            .unwrap_or(0);
        let end = trace
            .spans
            .iter()
            .map(|s| s.end_unix_nano)
            .max()
            .unwrap_or(0);
        self.durations_ms
            .push((end.saturating_sub(start) as f64 / 1e6) as f32);
        self.context.observe(&index);
        self.broken.observe(&index);
        self.skew.observe(&index, &self.thresholds);
        self.names.observe(&index, &self.thresholds);
        self.pii.observe(&index, &self.thresholds);
    }

    /// The OTLP span `flags` of a trace (not in the TraceQL model), read from its stored bytes.
    pub fn add_flags(&mut self, trace_id: [u8; 16], data: &TraceData) {
        let spans = span_flags(data);
        self.broken.observe_flags(trace_id, &spans);
    }

    pub fn finish(mut self) -> (Vec<Finding>, Scanned) {
        self.durations_ms.sort_by(|a, b| a.total_cmp(b));
        let quantile = |q: f64| -> f64 {
            if self.durations_ms.is_empty() {
                return 0.0;
            }
            let i = ((self.durations_ms.len() - 1) as f64 * q).round() as usize;
            self.durations_ms[i] as f64
        };
        let scanned = Scanned {
            traces: self.traces,
            spans: self.spans,
            services: self.services.len() as u64,
            trace_duration_p50_ms: quantile(0.5),
            trace_duration_p99_ms: quantile(0.99),
            trace_duration_max_ms: quantile(1.0),
        };
        let t = &self.thresholds;
        let linked: std::collections::HashSet<String> = self
            .services
            .iter()
            .filter(|s| self.context.is_linked_callee(s))
            .cloned()
            .collect();
        let mut findings = self.broken.findings(t, &|s| linked.contains(s));
        findings.extend(self.context.findings(t));
        findings.extend(self.skew.findings(t));
        findings.extend(self.names.findings(t));
        findings.extend(self.pii.findings());
        (findings, scanned)
    }
}

/// `(service.name, flags)` of every span in `data`.
pub fn span_flags(data: &TraceData) -> Vec<(String, u32)> {
    let mut out = Vec::with_capacity(data.span_count());
    data.for_each_span(|resource, _scope, span| {
        let service = resource
            .attribute("service.name")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        out.push((service.to_string(), span.flags()));
    });
    out
}

/// `30m`, `1h`, `2d`, `90s` → seconds.
pub fn parse_since(text: &str) -> Result<u64, DoctorError> {
    let text = text.trim();
    let bad = || DoctorError::Duration(text.to_string());
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    number
        .checked_mul(factor)
        .filter(|s| *s > 0)
        .ok_or_else(bad)
}
