//! Collectors' own metrics (`otelcol_*`, Prometheus text): refused spans, failed sends and
//! enqueues, sending queues near capacity, tail sampling's late spans and early decisions.

use std::collections::BTreeMap;

use crate::finding::{percent, Category, Finding, Severity};
use crate::DoctorError;

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Parses the Prometheus text exposition format (comments and blank lines skipped).
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, DoctorError> {
    let mut samples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad =
            |what: &str| DoctorError::Metrics(format!("line {}: {what}: {line:?}", number + 1));
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let close = line[open..]
                    .rfind('}')
                    .ok_or_else(|| bad("unclosed labels"))?
                    + open;
                (
                    &line[..open],
                    parse_labels(&line[open + 1..close]).ok_or_else(|| bad("bad labels"))?,
                    &line[close + 1..],
                )
            }
            None => {
                let (name, rest) = line
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| bad("no value"))?;
                (name, Vec::new(), rest)
            }
        };
        let value_text = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| bad("no value"))?;
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| bad("bad value"))?,
        };
        samples.push(Sample {
            name: name.trim().to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        labels.push((key.trim().to_string(), value));
    }
}

/// Sums of a counter per value of `label` (the `_total` suffix is optional).
fn sum_by(samples: &[Sample], name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for s in samples {
        let base = s.name.strip_suffix("_total").unwrap_or(&s.name);
        if base == name && s.value.is_finite() {
            *sums.entry(s.label(label).to_string()).or_insert(0.0) += s.value;
        }
    }
    sums
}

// Every finding of this module is one call: the arguments are its fields.
#[allow(clippy::too_many_arguments)]
fn metric_finding(
    kind: &str,
    severity: Severity,
    source: &str,
    component: String,
    count: u64,
    total: u64,
    title: String,
    detail: String,
    fix: String,
    fix_config: Option<String>,
) -> Finding {
    Finding {
        kind: kind.into(),
        category: Category::Pipeline,
        severity,
        title,
        services: vec![source.to_string()],
        hop: None,
        attribute: Some(component),
        count,
        total,
        examples: Vec::new(),
        detail,
        fix,
        fix_config,
    }
}

/// Every metrics check over one collector's samples; `source` names it (its URL).
pub fn check_metrics(source: &str, samples: &[Sample]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let accepted = sum_by(samples, "otelcol_receiver_accepted_spans", "receiver");
    for (receiver, refused) in sum_by(samples, "otelcol_receiver_refused_spans", "receiver") {
        if refused <= 0.0 {
            continue;
        }
        let total = refused + accepted.get(&receiver).copied().unwrap_or(0.0);
        let severity = if refused / total > 0.01 {
            Severity::Critical
        } else {
            Severity::Warning
        };
        findings.push(metric_finding(
            "receiver_refused_spans",
            severity,
            source,
            format!("receivers::{receiver}"),
            refused as u64,
            total as u64,
            format!("{source}: receiver {receiver} refused {} of spans ({refused:.0})", percent(refused as u64, total as u64)),
            "Senders were told to back off (memory_limiter above its limit, or the pipeline \
             behind is full); SDKs and agents that do not retry drop these spans."
                .into(),
            "Give the collector more memory or replicas, or lower what reaches it; check the \
             exporters below for the bottleneck."
                .into(),
            Some("processors:\n  memory_limiter:\n    check_interval: 1s\n    limit_percentage: 80\n    spike_limit_percentage: 20\n".into()),
        ));
    }
    for (processor, refused) in sum_by(samples, "otelcol_processor_refused_spans", "processor") {
        if refused > 0.0 {
            findings.push(metric_finding(
                "processor_refused_spans",
                Severity::Warning,
                source,
                format!("processors::{processor}"),
                refused as u64,
                0,
                format!("{source}: {processor} refused {refused:.0} spans"),
                "The memory limiter refused data: the collector ran above its memory limit.".into(),
                "Raise the memory limit (and the container's), or scale out.".into(),
                None,
            ));
        }
    }
    let sent = sum_by(samples, "otelcol_exporter_sent_spans", "exporter");
    for (exporter, failed) in sum_by(samples, "otelcol_exporter_send_failed_spans", "exporter") {
        if failed <= 0.0 {
            continue;
        }
        let total = failed + sent.get(&exporter).copied().unwrap_or(0.0);
        findings.push(metric_finding(
            "exporter_send_failed_spans",
            Severity::Critical,
            source,
            format!("exporters::{exporter}"),
            failed as u64,
            total as u64,
            format!("{source}: exporter {exporter} failed to send {} of spans ({failed:.0})", percent(failed as u64, total as u64)),
            "Spans were dropped after retries ran out (backend down, unreachable, or rejecting).".into(),
            "Check the backend and the endpoint; keep retry_on_failure and sending_queue enabled \
             (a persistent queue survives restarts)."
                .into(),
            Some(format!("exporters:\n  {exporter}:\n    retry_on_failure:\n      enabled: true\n      max_elapsed_time: 300s\n    sending_queue:\n      enabled: true\n      queue_size: 5000\n")),
        ));
    }
    for (exporter, failed) in sum_by(samples, "otelcol_exporter_enqueue_failed_spans", "exporter") {
        if failed > 0.0 {
            findings.push(metric_finding(
                "exporter_enqueue_failed_spans",
                Severity::Critical,
                source,
                format!("exporters::{exporter}"),
                failed as u64,
                0,
                format!("{source}: exporter {exporter}'s queue was full for {failed:.0} spans"),
                "The sending queue was full and these spans were dropped: the backend is slower \
                 than the traffic."
                    .into(),
                "Raise queue_size or num_consumers, or speed up the backend.".into(),
                Some(format!("exporters:\n  {exporter}:\n    sending_queue:\n      queue_size: 10000\n      num_consumers: 20\n")),
            ));
        }
    }
    let capacity = sum_by(samples, "otelcol_exporter_queue_capacity", "exporter");
    for (exporter, size) in sum_by(samples, "otelcol_exporter_queue_size", "exporter") {
        let Some(cap) = capacity.get(&exporter).copied().filter(|c| *c > 0.0) else {
            continue;
        };
        let fill = size / cap;
        if fill >= 0.8 {
            findings.push(metric_finding(
                "exporter_queue_near_capacity",
                if fill >= 0.95 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                source,
                format!("exporters::{exporter}"),
                size as u64,
                cap as u64,
                format!(
                    "{source}: exporter {exporter}'s queue is {:.0}% full ({size:.0} of {cap:.0})",
                    fill * 100.0
                ),
                "Close to full: the next spike will be refused or dropped.".into(),
                "Raise queue_size or num_consumers, or speed up the backend.".into(),
                Some(format!(
                    "exporters:\n  {exporter}:\n    sending_queue:\n      queue_size: {}\n",
                    (cap * 2.0) as u64
                )),
            ));
        }
    }
    for (processor, late) in sum_by(
        samples,
        "otelcol_processor_tail_sampling_sampling_late_span_age_count",
        "processor",
    ) {
        if late > 0.0 {
            findings.push(metric_finding(
                "tail_sampling_late_spans",
                Severity::Warning,
                source,
                format!(
                    "processors::{}",
                    if processor.is_empty() {
                        "tail_sampling"
                    } else {
                        &processor
                    }
                ),
                late as u64,
                0,
                format!("{source}: {late:.0} spans arrived after their trace's sampling decision"),
                "These spans were not seen by the policies: decision_wait is shorter than the \
                 traces (or the agents' batching delays spans)."
                    .into(),
                "Raise decision_wait.".into(),
                Some("processors:\n  tail_sampling:\n    decision_wait: 30s\n".into()),
            ));
        }
    }
    for (processor, early) in sum_by(
        samples,
        "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early",
        "processor",
    ) {
        if early > 0.0 {
            findings.push(metric_finding(
                "tail_sampling_decided_too_early",
                Severity::Warning,
                source,
                format!("processors::{}", if processor.is_empty() { "tail_sampling" } else { &processor }),
                early as u64,
                0,
                format!("{source}: {early:.0} traces were decided before decision_wait (num_traces or memory ran out)"),
                "Traces were evicted before their wait was over and judged on partial data.".into(),
                "Raise num_traces (and the memory that goes with it), or shorten decision_wait.".into(),
                Some("processors:\n  tail_sampling:\n    num_traces: 200000\n".into()),
            ));
        }
    }
    findings
}
