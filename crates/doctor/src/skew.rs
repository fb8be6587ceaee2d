//! Clock skew: server spans that lie outside the client span that caused them. Per caller and
//! callee, the skew is estimated as the median distance between the two spans' midpoints (with
//! symmetric network delays, a callee on the same clock is centred in its caller's span); a
//! service skewed against several peers is named as the one whose clock is off.

use std::collections::HashMap;

use threadline_traceql::model::SpanKind;

use crate::finding::{percent, Category, Example, Finding, Hop, Severity};
use crate::spans::TraceIndex;
use crate::Thresholds;

const MAX_SAMPLES: usize = 4096;

#[derive(Default)]
struct PairStats {
    calls: u64,
    outside: u64,
    /// Midpoint offsets callee − caller, nanoseconds.
    offsets: Vec<i64>,
    examples: Vec<[u8; 16]>,
}

#[derive(Default)]
pub struct SkewDetector {
    pairs: HashMap<(String, String), PairStats>,
}

fn mid(start: u64, end: u64) -> i128 {
    (start as i128 + end.max(start) as i128) / 2
}

impl SkewDetector {
    pub fn observe(&mut self, index: &TraceIndex<'_>, thresholds: &Thresholds) {
        let tolerance = thresholds.skew_tolerance_nanos as i128;
        for child in &index.trace.spans {
            let Some(parent) = index.parent(child) else {
                continue;
            };
            let rpc = parent.kind == SpanKind::Client && child.kind == SpanKind::Server;
            let messaging = parent.kind == SpanKind::Producer && child.kind == SpanKind::Consumer;
            if !rpc && !messaging {
                continue;
            }
            let (caller, callee) = (parent.service_name(), child.service_name());
            if caller == callee {
                continue;
            }
            let (ps, pe) = (parent.start_unix_nano as i128, parent.end_unix_nano as i128);
            let (cs, ce) = (child.start_unix_nano as i128, child.end_unix_nano as i128);
            // A consumer may run long after its producer ended; only starting before it is wrong.
            let outside = cs + tolerance < ps || (rpc && ce > pe + tolerance);
            let stats = self
                .pairs
                .entry((caller.to_string(), callee.to_string()))
                .or_default();
            stats.calls += 1;
            if rpc && stats.offsets.len() < MAX_SAMPLES {
                let offset = mid(child.start_unix_nano, child.end_unix_nano)
                    - mid(parent.start_unix_nano, parent.end_unix_nano);
                stats
                    .offsets
                    .push(offset.clamp(i64::MIN as i128, i64::MAX as i128) as i64);
            }
            if outside {
                stats.outside += 1;
                if stats.examples.len() < thresholds.examples
                    && !stats.examples.contains(&index.trace.trace_id)
                {
                    stats.examples.push(index.trace.trace_id);
                }
            }
        }
    }

    pub fn findings(self, thresholds: &Thresholds) -> Vec<Finding> {
        // Skewed pairs: (caller, callee, estimated offset of the callee's clock, stats).
        let mut skewed: Vec<(String, String, i64, PairStats)> = Vec::new();
        for ((caller, callee), mut stats) in self.pairs {
            if stats.outside < thresholds.min_count
                || (stats.outside as f64) < thresholds.min_ratio * stats.calls as f64
            {
                continue;
            }
            let offset = median(&mut stats.offsets);
            skewed.push((caller, callee, offset, stats));
        }
        skewed.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        // A service in two or more skewed pairs is the one off; the others are its peers.
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for (caller, callee, _, _) in &skewed {
            *votes.entry(caller).or_default() += 1;
            *votes.entry(callee).or_default() += 1;
        }
        let mut culprits: Vec<&str> = votes
            .iter()
            .filter(|(_, n)| **n >= 2)
            .map(|(s, _)| *s)
            .collect();
        culprits.sort();
        let mut findings = Vec::new();
        let mut explained = vec![false; skewed.len()];
        for culprit in culprits {
            let mut offsets = Vec::new();
            let mut peers = Vec::new();
            let (mut count, mut total) = (0, 0);
            let mut examples = Vec::new();
            for (i, (caller, callee, offset, stats)) in skewed.iter().enumerate() {
                let own = if callee == culprit {
                    *offset
                } else if caller == culprit {
                    -*offset
                } else {
                    continue;
                };
                explained[i] = true;
                offsets.push(own);
                peers.push(format!("{caller} → {callee}: {}", millis(*offset)));
                count += stats.outside;
                total += stats.calls;
                for t in &stats.examples {
                    if examples.len() < thresholds.examples {
                        examples.push(Example::trace(t).with_note(format!("{caller} → {callee}")));
                    }
                }
            }
            let estimate = median(&mut offsets);
            // The culprit first, then its skewed peers.
            let mut services = vec![culprit.to_string()];
            for (caller, callee, _, _) in &skewed {
                let peer = match (caller == culprit, callee == culprit) {
                    (true, _) => callee,
                    (_, true) => caller,
                    _ => continue,
                };
                if !services.contains(peer) {
                    services.push(peer.clone());
                }
            }
            findings.push(Finding {
                kind: "clock_skew".into(),
                category: Category::BrokenTraces,
                severity: Severity::Warning,
                title: format!(
                    "{culprit}'s clock is {} off its peers ({} of its calls lie outside their parent)",
                    millis(estimate),
                    percent(count, total)
                ),
                services,
                hop: None,
                attribute: None,
                count,
                total,
                examples,
                detail: format!(
                    "Spans across {culprit}'s hops lie outside the span that caused them; the skew \
                     per pair (callee against caller, median of midpoints): {}.",
                    peers.join(", ")
                ),
                fix: format!(
                    "Synchronise {culprit}'s clock (NTP/chrony on its node; in a VM or container \
                     check the host's time sync)."
                ),
                fix_config: None,
            });
        }
        for (i, (caller, callee, offset, stats)) in skewed.into_iter().enumerate() {
            if explained[i] {
                continue;
            }
            findings.push(Finding {
                kind: "clock_skew".into(),
                category: Category::BrokenTraces,
                severity: Severity::Warning,
                title: format!(
                    "{caller} → {callee}: {callee}'s spans are {} off {caller}'s ({} of calls outside their parent)",
                    millis(offset),
                    percent(stats.outside, stats.calls)
                ),
                services: vec![callee.clone(), caller.clone()],
                hop: Some(Hop {
                    from: caller.clone(),
                    to: callee.clone(),
                }),
                attribute: None,
                count: stats.outside,
                total: stats.calls,
                examples: stats.examples.iter().map(Example::trace).collect(),
                detail: format!(
                    "{} of {} {callee} spans lie outside the {caller} span that caused them; \
                     estimated skew of {callee} against {caller}: {}.",
                    stats.outside,
                    stats.calls,
                    millis(offset)
                ),
                fix: format!("Synchronise the clocks of {caller}'s and {callee}'s nodes (NTP/chrony)."),
                fix_config: None,
            });
        }
        findings
    }
}

fn median(values: &mut [i64]) -> i64 {
    if values.is_empty() {
        return 0;
    }
    let middle = values.len() / 2;
    *values.select_nth_unstable(middle).1
}

/// `+300 ms`, `-1.2 s`.
pub fn millis(nanos: i64) -> String {
    let ms = nanos as f64 / 1e6;
    if ms.abs() >= 1000.0 {
        format!("{:+.1} s", ms / 1000.0)
    } else {
        format!("{ms:+.0} ms")
    }
}
