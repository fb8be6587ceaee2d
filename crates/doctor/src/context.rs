//! Lost context: a CLIENT or PRODUCER span without a SERVER or CONSUMER child although the callee
//! is instrumented. When the callee's server span started a trace of its own inside the client
//! span's interval (a consumer's up to [`QUEUE_WAIT_NANOS`] after its producer span: messages
//! wait in queues), the hop does not propagate context and the two halves are paired; when it
//! is nowhere, the callee did not record a call its caller sampled.

use std::collections::HashMap;

use threadline_traceql::model::SpanKind;

use crate::finding::{percent, Category, Example, Finding, Hop, Severity};
use crate::spans::{callee_keys, is_incoming, is_outgoing, own_keys, TraceIndex};
use crate::Thresholds;

struct Childless {
    caller: String,
    keys: Vec<String>,
    start: u64,
    /// The latest start of the callee's span that can still answer this call: the end of a
    /// CLIENT span; for a PRODUCER, [`QUEUE_WAIT_NANOS`] later (a consumer runs after the send).
    answer_by: u64,
    trace_id: [u8; 16],
}

/// How long after a PRODUCER span ends its message may still be consumed, for pairing the
/// consumer's new trace with it. Longer waits are not paired (and count as unpaired).
pub const QUEUE_WAIT_NANOS: u64 = 10_000_000_000;

struct Root {
    start: u64,
    trace_id: [u8; 16],
}

#[derive(Default)]
struct HopStats {
    linked: u64,
    paired: Vec<([u8; 16], [u8; 16])>,
    paired_count: u64,
    unpaired: u64,
    unpaired_examples: Vec<[u8; 16]>,
}

/// Accumulates what the lost-context check needs over many traces.
#[derive(Default)]
pub struct ContextDetector {
    /// Calls that reached an instrumented callee with context: (caller, callee) → count.
    linked: HashMap<(String, String), u64>,
    /// Which service answers to a key (`addr:host:port`, `rpc:Svc`, ...).
    key_to_service: HashMap<String, String>,
    childless: Vec<Childless>,
    /// Root SERVER/CONSUMER spans by the keys they answer to.
    roots: HashMap<String, Vec<Root>>,
}

impl ContextDetector {
    pub fn observe(&mut self, index: &TraceIndex<'_>) {
        let trace = index.trace;
        for (i, span) in trace.spans.iter().enumerate() {
            let service = span.service_name();
            if is_outgoing(span.kind) {
                let child = index.children[i]
                    .iter()
                    .map(|&c| &trace.spans[c])
                    .find(|c| is_incoming(c.kind));
                match child {
                    Some(child) => {
                        let callee = child.service_name().to_string();
                        for key in callee_keys(span) {
                            self.key_to_service
                                .entry(key)
                                .or_insert_with(|| callee.clone());
                        }
                        *self
                            .linked
                            .entry((service.to_string(), callee))
                            .or_default() += 1;
                    }
                    None => {
                        let keys = callee_keys(span);
                        if !keys.is_empty() {
                            self.childless.push(Childless {
                                caller: service.to_string(),
                                keys,
                                start: span.start_unix_nano,
                                answer_by: if span.kind == SpanKind::Producer {
                                    span.end_unix_nano.saturating_add(QUEUE_WAIT_NANOS)
                                } else {
                                    span.end_unix_nano
                                },
                                trace_id: trace.trace_id,
                            });
                        }
                    }
                }
            } else if is_incoming(span.kind) {
                let keys = own_keys(span);
                let is_root = span.parent_span_id.is_none();
                for key in keys {
                    if !self.key_to_service.contains_key(&key) {
                        self.key_to_service.insert(key.clone(), service.to_string());
                    }
                    if is_root {
                        self.roots.entry(key).or_default().push(Root {
                            start: span.start_unix_nano,
                            trace_id: trace.trace_id,
                        });
                    }
                }
            }
        }
    }

    /// Whether `service` received calls with context from another service.
    pub fn is_linked_callee(&self, service: &str) -> bool {
        self.linked
            .iter()
            .any(|((caller, callee), n)| callee == service && caller != service && *n > 0)
    }

    pub fn findings(mut self, thresholds: &Thresholds) -> Vec<Finding> {
        for roots in self.roots.values_mut() {
            roots.sort_by_key(|r| r.start);
        }
        let mut used: HashMap<String, Vec<bool>> = self
            .roots
            .iter()
            .map(|(k, v)| (k.clone(), vec![false; v.len()]))
            .collect();
        self.childless.sort_by_key(|c| c.start);
        let mut hops: HashMap<(String, String), HopStats> = HashMap::new();
        for ((caller, callee), n) in &self.linked {
            hops.entry((caller.clone(), callee.clone()))
                .or_default()
                .linked = *n;
        }
        for call in &self.childless {
            let Some(callee) = call
                .keys
                .iter()
                .find_map(|k| self.key_to_service.get(k))
                .cloned()
            else {
                continue; // an uninstrumented callee (a database, an external API)
            };
            let stats = hops.entry((call.caller.clone(), callee)).or_default();
            match self.pair(call, &mut used) {
                Some(server_trace) => {
                    stats.paired_count += 1;
                    if stats.paired.len() < thresholds.examples {
                        stats.paired.push((call.trace_id, server_trace));
                    }
                }
                None => {
                    stats.unpaired += 1;
                    if stats.unpaired_examples.len() < thresholds.examples {
                        stats.unpaired_examples.push(call.trace_id);
                    }
                }
            }
        }
        let mut findings = Vec::new();
        for ((caller, callee), stats) in hops {
            let lost = stats.paired_count + stats.unpaired;
            let total = stats.linked + lost;
            if total == 0 || lost == 0 {
                continue;
            }
            let ratio = lost as f64 / total as f64;
            if stats.paired_count >= thresholds.min_count {
                findings.push(lost_context(&caller, &callee, &stats, lost, total, ratio));
            } else if stats.paired_count == 0
                && stats.linked > 0
                && stats.unpaired >= thresholds.min_count
                && ratio >= thresholds.min_ratio
            {
                findings.push(callee_drops(&caller, &callee, &stats, total));
            }
        }
        findings
    }

    /// The root server span answering `call`: the first unused one, in another trace, with one
    /// of the call's keys, starting inside the call's interval (for a producer: up to
    /// [`QUEUE_WAIT_NANOS`] after it).
    fn pair(&self, call: &Childless, used: &mut HashMap<String, Vec<bool>>) -> Option<[u8; 16]> {
        for key in &call.keys {
            let Some(roots) = self.roots.get(key) else {
                continue;
            };
            let Some(flags) = used.get_mut(key) else {
                continue;
            };
            let first = roots.partition_point(|r| r.start < call.start);
            for (j, root) in roots.iter().enumerate().skip(first) {
                if root.start > call.answer_by {
                    break;
                }
                if !flags[j] && root.trace_id != call.trace_id {
                    flags[j] = true;
                    return Some(root.trace_id);
                }
            }
        }
        None
    }
}

fn lost_context(
    caller: &str,
    callee: &str,
    stats: &HopStats,
    lost: u64,
    total: u64,
    ratio: f64,
) -> Finding {
    let examples = stats
        .paired
        .iter()
        .map(|(client, server)| Example {
            trace_id: hex::encode(client),
            linked_trace_id: Some(hex::encode(server)),
            note: format!("{caller}'s half → {callee}'s half"),
        })
        .collect();
    Finding {
        kind: "lost_context".into(),
        category: Category::Context,
        severity: if ratio >= 0.5 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        title: format!(
            "{caller} → {callee} loses context on {} of calls",
            percent(lost, total)
        ),
        services: vec![caller.to_string(), callee.to_string()],
        hop: Some(Hop {
            from: caller.into(),
            to: callee.into(),
        }),
        attribute: None,
        count: lost,
        total,
        examples,
        detail: format!(
            "{lost} of {total} calls from {caller} to {callee} have no {callee} server span in \
             their trace; for {} of them {callee}'s server span started a new trace inside the \
             call (the pairs below are the two halves of one request). The others' new traces \
             were sampled out.",
            stats.paired_count
        ),
        fix: format!(
            "Propagate W3C trace context on this hop: {caller} must inject `traceparent` into its \
             outgoing requests (use the client instrumentation, or the SDK propagator's inject), \
             and {callee} must extract it (server instrumentation). Both services need the same \
             propagators."
        ),
        fix_config: Some(
            "# SDK environment of both services\nOTEL_PROPAGATORS=tracecontext,baggage\n\
             # or, with the operator, in their Instrumentation resource:\nspec:\n  propagators: \
             [tracecontext, baggage]\n"
                .into(),
        ),
    }
}

fn callee_drops(caller: &str, callee: &str, stats: &HopStats, total: u64) -> Finding {
    Finding {
        kind: "callee_not_parent_based".into(),
        category: Category::BrokenTraces,
        severity: Severity::Warning,
        title: format!(
            "{callee} records no span for {} of the calls {caller} sampled",
            percent(stats.unpaired, total)
        ),
        services: vec![callee.to_string(), caller.to_string()],
        hop: Some(Hop {
            from: caller.into(),
            to: callee.into(),
        }),
        attribute: None,
        count: stats.unpaired,
        total,
        examples: stats
            .unpaired_examples
            .iter()
            .map(|t| Example::trace(t).with_note(format!("{caller} client span without child")))
            .collect(),
        detail: format!(
            "{} of {total} calls from {caller} to {callee} end in a client span with no {callee} \
             span below it, and {callee} started no trace of its own then, although it answers \
             other calls with context: {callee} samples on its own instead of following the \
             parent's sampled flag (or its spans are lost on the way).",
            stats.unpaired
        ),
        fix: format!("Give {callee} a parent-based sampler, as the rest of the estate."),
        fix_config: Some(sampler_snippet()),
    }
}

pub fn sampler_snippet() -> String {
    "# SDK environment\nOTEL_TRACES_SAMPLER=parentbased_traceidratio\nOTEL_TRACES_SAMPLER_ARG=0.1\n\
     # or, with the operator, in the Instrumentation resource:\nspec:\n  sampler:\n    type: \
     parentbased_traceidratio\n    argument: \"0.1\"\n"
        .into()
}
