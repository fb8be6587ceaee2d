//! What the doctor reports: findings with a severity, where they happen, how often, example
//! traces and the fix, and the report that orders them by impact.

use serde::{Deserialize, Serialize};

/// How bad a finding is. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "info" => Ok(Severity::Info),
            "warning" | "warn" => Ok(Severity::Warning),
            "critical" | "error" => Ok(Severity::Critical),
            other => Err(format!(
                "unknown severity {other:?}: use info, warning or critical"
            )),
        }
    }
}

/// The group a finding belongs to in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Context lost between services: traces split in two.
    Context,
    /// Orphans, several roots, sampling disagreement, clock skew.
    BrokenTraces,
    /// Span names with ids or too many distinct values.
    SpanNames,
    /// Personal data and secrets in attributes.
    Pii,
    /// Collector pipelines: their metrics and configs.
    Pipeline,
}

impl Category {
    pub fn title(self) -> &'static str {
        match self {
            Category::Context => "Lost context (split traces)",
            Category::BrokenTraces => "Broken traces",
            Category::SpanNames => "Span-name cardinality",
            Category::Pii => "PII and secrets in attributes",
            Category::Pipeline => "Pipeline health",
        }
    }
}

/// A call from one service to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    pub from: String,
    pub to: String,
}

/// An example of a finding: a trace, and for split traces the trace its other half landed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_trace_id: Option<String>,
    /// What this example shows (a span name, a masked value), when it adds something.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Example {
    pub fn trace(trace_id: &[u8; 16]) -> Example {
        Example {
            trace_id: hex::encode(trace_id),
            linked_trace_id: None,
            note: String::new(),
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Example {
        self.note = note.into();
        self
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// A stable identifier of the check, e.g. `lost_context`, `pii_email`.
    pub kind: String,
    pub category: Category,
    pub severity: Severity,
    /// One line: what and where ("orders → payments loses context on 96% of calls").
    pub title: String,
    /// The services involved; the first one is where the fix goes.
    pub services: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<Hop>,
    /// The attribute key, span name template or component the finding is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// How often: occurrences, out of `total` (0 when there is no meaningful total).
    pub count: u64,
    pub total: u64,
    pub examples: Vec<Example>,
    /// What was seen, in a sentence or two.
    pub detail: String,
    /// What to change.
    pub fix: String,
    /// The change as a config snippet (collector YAML, SDK environment), when one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_config: Option<String>,
}

impl Finding {
    /// Share of `total` affected (1.0 when there is no total).
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.count as f64 / self.total as f64
        }
    }
}

/// Figures about what the trace checks looked at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scanned {
    pub traces: u64,
    pub spans: u64,
    pub services: u64,
    /// Trace durations seen (first span start to last span end), in milliseconds.
    pub trace_duration_p50_ms: f64,
    pub trace_duration_p99_ms: f64,
    pub trace_duration_max_ms: f64,
}

/// The whole report: what was scanned and the findings, most important first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The window the trace checks covered, in seconds back from now (0: not run).
    pub since_seconds: u64,
    pub scanned: Scanned,
    pub findings: Vec<Finding>,
}

impl Report {
    /// Orders findings by impact: severity, then the share affected, then how often.
    pub fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.ratio().total_cmp(&a.ratio()))
                .then(b.count.cmp(&a.count))
                .then(a.title.cmp(&b.title))
        });
    }

    /// Number of findings at `severity` or above.
    pub fn at_least(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity >= severity)
            .count()
    }
}

/// A percentage for titles: "96%", or "<1%" / ">99%" rather than a misleading 0% / 100%.
pub fn percent(count: u64, total: u64) -> String {
    if total == 0 {
        return "?%".to_string();
    }
    let p = count as f64 * 100.0 / total as f64;
    if count > 0 && p < 1.0 {
        "<1%".to_string()
    } else if count < total && p > 99.0 {
        ">99%".to_string()
    } else {
        format!("{p:.0}%")
    }
}
