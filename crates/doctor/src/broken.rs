//! Broken traces: orphan spans (their parent never arrived), traces with several roots, spans
//! of one trace that disagree on the sampled flag, and services that record traces their
//! callers did not sample (a sampler that is not parent-based).

use std::collections::{HashMap, HashSet};

use crate::context::sampler_snippet;
use crate::finding::{percent, Category, Example, Finding, Severity};
use crate::spans::{is_incoming, TraceIndex};
use crate::Thresholds;

/// OTLP `SpanFlags`: the W3C trace flags in the low byte, bit 0 = sampled.
const SAMPLED: u32 = 0x1;
const TRACE_FLAGS: u32 = 0xff;

/// `(service, sampled)` of each span of a trace.
type SampledBits = Vec<(String, bool)>;

#[derive(Default)]
struct Occurrences {
    count: u64,
    examples: Vec<[u8; 16]>,
}

impl Occurrences {
    fn add(&mut self, trace_id: [u8; 16], max_examples: usize) {
        self.count += 1;
        if self.examples.len() < max_examples && !self.examples.contains(&trace_id) {
            self.examples.push(trace_id);
        }
    }
}

/// Counts one more for `service`, allocating its name only the first time.
fn count(counts: &mut HashMap<String, u64>, service: &str) {
    match counts.get_mut(service) {
        Some(n) => *n += 1,
        None => {
            counts.insert(service.to_string(), 1);
        }
    }
}

#[derive(Default)]
pub struct BrokenDetector {
    max_examples: usize,
    /// Incoming (server/consumer) spans per service: the denominator of orphan ratios.
    incoming: HashMap<String, u64>,
    spans: HashMap<String, u64>,
    /// Orphans in traces that have a root: the parent was lost.
    orphans: HashMap<String, Occurrences>,
    /// Incoming orphans in traces without any root: the caller recorded nothing.
    without_caller: HashMap<String, Occurrences>,
    multi_root: Occurrences,
    multi_root_services: HashMap<String, u64>,
    traces: u64,
    /// Services whose spans carry the W3C trace flags in OTLP `flags` (some SDKs leave them 0).
    encodes_flags: HashSet<String>,
    /// Traces whose spans' sampled bits differ: (trace, [(service, sampled)]).
    mixed_flags: Vec<([u8; 16], SampledBits)>,
}

impl BrokenDetector {
    pub fn new(max_examples: usize) -> BrokenDetector {
        BrokenDetector {
            max_examples,
            ..Default::default()
        }
    }

    pub fn observe(&mut self, index: &TraceIndex<'_>) {
        let trace = index.trace;
        self.traces += 1;
        let roots: Vec<&_> = trace
            .spans
            .iter()
            .filter(|s| s.parent_span_id.is_none())
            .collect();
        for span in &trace.spans {
            let service = span.service_name();
            count(&mut self.spans, service);
            if is_incoming(span.kind) {
                count(&mut self.incoming, service);
            }
            if !index.is_orphan(span) {
                continue;
            }
            let target = if roots.is_empty() && is_incoming(span.kind) {
                &mut self.without_caller
            } else {
                &mut self.orphans
            };
            target
                .entry(service.to_string())
                .or_default()
                .add(trace.trace_id, self.max_examples);
        }
        if roots.len() > 1 {
            self.multi_root.add(trace.trace_id, self.max_examples);
            let services: HashSet<&str> = roots.iter().map(|s| s.service_name()).collect();
            for service in services {
                *self
                    .multi_root_services
                    .entry(service.to_string())
                    .or_default() += 1;
            }
        }
    }

    /// The OTLP `flags` of one trace's spans, read from the stored bytes: `(service, flags)`.
    pub fn observe_flags(&mut self, trace_id: [u8; 16], spans: &[(String, u32)]) {
        let mut sampled = false;
        let mut unsampled = false;
        for (service, flags) in spans {
            if flags & TRACE_FLAGS != 0 && !self.encodes_flags.contains(service) {
                self.encodes_flags.insert(service.clone());
            }
            if flags & SAMPLED != 0 {
                sampled = true;
            } else {
                unsampled = true;
            }
        }
        if sampled && unsampled {
            let spans = spans
                .iter()
                .map(|(s, f)| (s.clone(), f & SAMPLED != 0))
                .collect();
            self.mixed_flags.push((trace_id, spans));
        }
    }

    pub fn findings(
        self,
        thresholds: &Thresholds,
        is_linked_callee: &dyn Fn(&str) -> bool,
    ) -> Vec<Finding> {
        let mut findings = Vec::new();
        let examples =
            |o: &Occurrences| -> Vec<Example> { o.examples.iter().map(Example::trace).collect() };
        // Services recording traces their callers did not record: parent-based sampling is
        // missing there, unless many services do it (then the pipeline samples traces apart).
        let not_parent_based: Vec<(&String, &Occurrences)> = self
            .without_caller
            .iter()
            .filter(|(service, o)| o.count >= thresholds.min_count && is_linked_callee(service))
            .collect();
        if not_parent_based.len() >= 3 {
            let count: u64 = not_parent_based.iter().map(|(_, o)| o.count).sum();
            let mut services: Vec<String> = not_parent_based
                .iter()
                .map(|(s, _)| s.to_string())
                .collect();
            services.sort();
            findings.push(Finding {
                kind: "traces_sampled_apart".into(),
                category: Category::BrokenTraces,
                severity: Severity::Critical,
                title: format!(
                    "{} services hold trace fragments without their callers: traces are sampled apart",
                    services.len()
                ),
                services,
                hop: None,
                attribute: None,
                count,
                total: self.traces,
                examples: not_parent_based
                    .iter()
                    .flat_map(|(_, o)| examples(o))
                    .take(thresholds.examples)
                    .collect(),
                detail: format!(
                    "{count} server spans arrived in traces that hold none of their callers' spans, \
                     in several services at once: spans of one trace are kept or dropped \
                     separately, typically by tail sampling on gateway replicas that each see \
                     only part of a trace."
                ),
                fix: "Route spans to the tail-sampling tier by trace id (the `loadbalancing` \
                      exporter on the agents)."
                    .into(),
                fix_config: Some(crate::config_checks::loadbalancing_snippet("otel-gateway-collector-headless")),
            });
        } else {
            for (service, o) in not_parent_based {
                let total = self.incoming.get(service).copied().unwrap_or(o.count);
                findings.push(Finding {
                    kind: "sampling_not_parent_based".into(),
                    category: Category::BrokenTraces,
                    severity: Severity::Warning,
                    title: format!(
                        "{service} records {} of its calls without its caller's spans: its sampler is not parent-based",
                        percent(o.count, total)
                    ),
                    services: vec![service.clone()],
                    hop: None,
                    attribute: None,
                    count: o.count,
                    total,
                    examples: examples(o),
                    detail: format!(
                        "{} of {service}'s {total} server spans have a parent span that never \
                         arrived and their traces hold no root: the callers did not sample these \
                         requests, and {service} sampled them anyway. Its spans are orphans and its \
                         share of sampled traces differs from the rest of the estate.",
                        o.count
                    ),
                    fix: format!("Give {service} a parent-based sampler."),
                    fix_config: Some(sampler_snippet()),
                });
            }
        }
        let mut orphan_services: Vec<(&String, &Occurrences)> = self
            .orphans
            .iter()
            .chain(
                self.without_caller
                    .iter()
                    .filter(|(s, o)| !(o.count >= thresholds.min_count && is_linked_callee(s))),
            )
            .filter(|(_, o)| o.count >= thresholds.min_count)
            .collect();
        orphan_services.sort_by_key(|o| std::cmp::Reverse(o.1.count));
        for (service, o) in orphan_services {
            let total = self.spans.get(service).copied().unwrap_or(o.count);
            findings.push(Finding {
                kind: "orphan_spans".into(),
                category: Category::BrokenTraces,
                severity: Severity::Warning,
                title: format!(
                    "{service}: {} orphan spans (their parent never arrived)",
                    o.count
                ),
                services: vec![service.clone()],
                hop: None,
                attribute: None,
                count: o.count,
                total,
                examples: examples(o),
                detail: format!(
                    "{} spans of {service} name a parent span that is not in their trace: the \
                     parent was dropped (sampling, a failing exporter, a crashed process) or never \
                     ended.",
                    o.count
                ),
                fix:
                    "Check that the parent's service exports all its spans (collector refusals and \
                      send failures below), ends its spans, and samples parent-based."
                        .into(),
                fix_config: None,
            });
        }
        if self.multi_root.count >= thresholds.min_count {
            let mut services: Vec<(String, u64)> = self.multi_root_services.into_iter().collect();
            services.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            findings.push(Finding {
                kind: "several_roots".into(),
                category: Category::BrokenTraces,
                severity: Severity::Warning,
                title: format!("{} traces have several root spans", self.multi_root.count),
                services: services.into_iter().map(|(s, _)| s).collect(),
                hop: None,
                attribute: None,
                count: self.multi_root.count,
                total: self.traces,
                examples: examples(&self.multi_root),
                detail: "More than one span without a parent in one trace: a service starts new \
                         root spans with a trace id it took from elsewhere, or reuses a context \
                         without its parent span id."
                    .into(),
                fix: "Start child spans from the extracted context (not a new root with the same \
                      trace id)."
                    .into(),
                fix_config: None,
            });
        }
        findings.extend(sampled_disagreement(
            &self.mixed_flags,
            &self.encodes_flags,
            thresholds,
        ));
        findings
    }
}

fn sampled_disagreement(
    mixed: &[([u8; 16], SampledBits)],
    encodes: &HashSet<String>,
    thresholds: &Thresholds,
) -> Vec<Finding> {
    let mut by_service: HashMap<String, Occurrences> = HashMap::new();
    let mut traces = 0u64;
    for (trace_id, spans) in mixed {
        let known: Vec<&(String, bool)> =
            spans.iter().filter(|(s, _)| encodes.contains(s)).collect();
        if !(known.iter().any(|(_, s)| *s) && known.iter().any(|(_, s)| !*s)) {
            continue;
        }
        traces += 1;
        let unsampled: HashSet<&String> =
            known.iter().filter(|(_, s)| !*s).map(|(s, _)| s).collect();
        for service in unsampled {
            by_service
                .entry(service.clone())
                .or_default()
                .add(*trace_id, thresholds.examples);
        }
    }
    if traces < thresholds.min_count {
        return Vec::new();
    }
    let mut services: Vec<(String, Occurrences)> = by_service.into_iter().collect();
    services.sort_by_key(|o| std::cmp::Reverse(o.1.count));
    services
        .into_iter()
        .map(|(service, o)| Finding {
            kind: "sampled_flag_disagrees".into(),
            category: Category::BrokenTraces,
            severity: Severity::Warning,
            title: format!(
                "{service}'s spans disagree with the rest of their trace on the sampled flag ({} traces)",
                o.count
            ),
            services: vec![service.clone()],
            hop: None,
            attribute: Some("flags".into()),
            count: o.count,
            total: 0,
            examples: o.examples.iter().map(Example::trace).collect(),
            detail: format!(
                "In {} traces, {service} exported spans whose W3C sampled flag is 0 while other \
                 spans of the trace are sampled: {service} decides sampling itself instead of \
                 following its parent.",
                o.count
            ),
            fix: format!("Give {service} a parent-based sampler."),
            fix_config: Some(sampler_snippet()),
        })
        .collect()
}
