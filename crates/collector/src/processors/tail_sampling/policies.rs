//! Policy evaluation over a per-trace summary built as spans arrive, and the combining of the
//! policies' decisions into one, with upstream's rules.

use std::sync::Mutex;
use std::time::Instant;

use regex::Regex;
use threadline_otlp::traces::{AnyValueView, ResourceView, SpanView};
use threadline_otlp::TraceSlice;

use super::config::PolicyConfig;

/// What one policy says about one trace (upstream's `sampling.Decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    NotSampled,
    Sampled,
    /// From an `invert_match` policy whose values did not match: samples unless another policy
    /// says NotSampled.
    InvertSampled,
    /// From an `invert_match` policy whose values matched: the trace is not sampled, whatever
    /// other policies say (except `drop`, which wins anyway).
    InvertNotSampled,
    /// From a `drop` policy: the trace is dropped, whatever other policies say.
    Dropped,
}

impl Decision {
    pub const ALL: [Decision; 5] = [
        Decision::NotSampled,
        Decision::Sampled,
        Decision::InvertSampled,
        Decision::InvertNotSampled,
        Decision::Dropped,
    ];

    /// Position in [`Decision::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label upstream's metrics use.
    pub fn label(self) -> &'static str {
        match self {
            Decision::NotSampled => "not_sampled",
            Decision::Sampled => "sampled",
            Decision::InvertSampled => "inverted_sampled",
            Decision::InvertNotSampled => "inverted_not_sampled",
            Decision::Dropped => "dropped",
        }
    }

    pub fn samples(self) -> bool {
        matches!(self, Decision::Sampled | Decision::InvertSampled)
    }
}

/// Upstream's rules: a drop wins; then an inverted not-sampled; then any sampled; an inverted
/// sampled counts only when no policy said not sampled.
pub fn combine(decisions: &[Decision]) -> bool {
    let any = |d: Decision| decisions.contains(&d);
    if any(Decision::Dropped) || any(Decision::InvertNotSampled) {
        return false;
    }
    any(Decision::Sampled) || (any(Decision::InvertSampled) && !any(Decision::NotSampled))
}

/// What the policies need to know of a trace, updated span by span.
pub struct TraceSummary {
    pub spans: usize,
    pub bytes: u64,
    pub min_start: u64,
    pub max_end: u64,
    pub status_codes_seen: [bool; 3],
    pub root_seen: bool,
    pub sampled_flag_seen: bool,
    /// Per matcher slot: whether some span (or its resource) matched.
    pub matched: Vec<bool>,
}

impl TraceSummary {
    pub fn new(policies: &Policies) -> Self {
        TraceSummary {
            spans: 0,
            bytes: 0,
            min_start: u64::MAX,
            max_end: 0,
            status_codes_seen: [false; 3],
            root_seen: false,
            sampled_flag_seen: false,
            matched: vec![false; policies.matchers.len()],
        }
    }

    pub fn add(&mut self, part: &TraceSlice, policies: &Policies) {
        self.bytes += part.spans_len() as u64;
        part.for_each_span(|resource, span| {
            self.spans += 1;
            let e = span.essentials();
            self.min_start = self.min_start.min(e.start_time_unix_nano);
            self.max_end = self.max_end.max(e.end_time_unix_nano);
            if let Some(seen) = self.status_codes_seen.get_mut(e.status_code as usize) {
                *seen = true;
            }
            if !e.has_parent {
                self.root_seen = true;
            }
            // W3C trace-flags bit 0: sampled (OTLP keeps the flags in the low byte).
            if e.flags & 0x1 != 0 {
                self.sampled_flag_seen = true;
            }
            for (slot, matcher) in policies.matchers.iter().enumerate() {
                if !self.matched[slot] && matcher.matches(resource, span) {
                    self.matched[slot] = true;
                }
            }
        });
    }

    fn duration_ms(&self) -> u64 {
        self.max_end.saturating_sub(self.min_start) / 1_000_000
    }
}

/// A per-span test whose result is folded into [`TraceSummary::matched`].
enum Matcher {
    String {
        key: String,
        values: Vec<String>,
        regexes: Vec<Regex>,
    },
    Numeric {
        key: String,
        min: i64,
        max: i64,
    },
    Boolean {
        key: String,
        value: bool,
    },
    TraceState {
        key: String,
        values: Vec<String>,
    },
}

impl Matcher {
    fn matches(&self, resource: &ResourceView<'_>, span: &SpanView<'_>) -> bool {
        let attribute = |key: &str| resource.attribute(key).or_else(|| span.attribute(key));
        match self {
            Matcher::String {
                key,
                values,
                regexes,
            } => attribute(key)
                .as_ref()
                .and_then(AnyValueView::as_str)
                .is_some_and(|text| {
                    if regexes.is_empty() {
                        values.iter().any(|v| v == text)
                    } else {
                        regexes.iter().any(|r| r.is_match(text))
                    }
                }),
            Matcher::Numeric { key, min, max } => attribute(key)
                .and_then(|v| v.as_i64())
                .is_some_and(|n| n >= *min && n <= *max),
            Matcher::Boolean { key, value } => {
                attribute(key).and_then(|v| v.as_bool()) == Some(*value)
            }
            Matcher::TraceState { key, values } => span
                .trace_state()
                .split(',')
                .filter_map(|member| member.trim().split_once('='))
                .any(|(k, v)| k == key && values.iter().any(|wanted| wanted == v)),
        }
    }
}

/// Spans allowed per second, counted in whole seconds as upstream.
struct RateWindow {
    per_second: u64,
    second: u64,
    spent: u64,
}

impl RateWindow {
    fn new(per_second: u64) -> Mutex<Self> {
        Mutex::new(RateWindow {
            per_second,
            second: 0,
            spent: 0,
        })
    }

    fn try_take(window: &Mutex<Self>, spans: u64, now_second: u64) -> bool {
        let Ok(mut w) = window.lock() else {
            return false;
        };
        if w.second != now_second {
            w.second = now_second;
            w.spent = 0;
        }
        if w.spent + spans <= w.per_second {
            w.spent += spans;
            true
        } else {
            false
        }
    }
}

struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn try_take(bucket: &Mutex<Self>, bytes: u64) -> bool {
        let Ok(mut b) = bucket.lock() else {
            return false;
        };
        let now = Instant::now();
        let elapsed = now.duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * b.rate).min(b.capacity);
        b.refilled = now;
        if b.tokens >= bytes as f64 {
            b.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

enum Rule {
    AlwaysSample,
    Latency {
        threshold_ms: u64,
        upper_ms: u64,
    },
    StatusCode {
        codes: [bool; 3],
    },
    Probabilistic {
        threshold: u64,
        salt: Vec<u8>,
    },
    SpanCount {
        min: usize,
        max: usize,
    },
    TraceFlags,
    /// Attribute or tracestate match, in [`TraceSummary::matched`] at `slot`.
    Matched {
        slot: usize,
        invert: bool,
    },
    RateLimiting(Mutex<RateWindow>),
    BytesLimiting(Mutex<TokenBucket>),
    And(Vec<Policy>),
    Drop(Vec<Policy>),
    Composite(Composite),
}

struct Composite {
    total: Mutex<RateWindow>,
    /// In `policy_order`, each with its share of the spans per second.
    subs: Vec<(Policy, Mutex<RateWindow>)>,
}

pub struct Policy {
    pub name: String,
    rule: Rule,
}

/// The configured policies, compiled.
pub struct Policies {
    pub top: Vec<Policy>,
    matchers: Vec<Matcher>,
}

impl Policies {
    pub fn compile(configs: &[PolicyConfig]) -> anyhow::Result<Policies> {
        let mut matchers = Vec::new();
        let top = configs
            .iter()
            .map(|c| Policy::compile(c, &mut matchers))
            .collect::<anyhow::Result<_>>()?;
        Ok(Policies { top, matchers })
    }

    pub fn len(&self) -> usize {
        self.top.len()
    }

    /// Every top-level policy's decision (all of them, or up to the first sampling one with
    /// `first_match`), and whether the trace is kept.
    pub fn evaluate(
        &self,
        trace_id: &[u8; 16],
        summary: &TraceSummary,
        first_match: bool,
        decisions: &mut Vec<Decision>,
    ) -> bool {
        decisions.clear();
        let now_second = unix_second();
        for policy in &self.top {
            let decision = policy.decide(trace_id, summary, now_second);
            decisions.push(decision);
            if first_match && decision == Decision::Sampled {
                break;
            }
        }
        combine(decisions)
    }
}

fn unix_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Policy {
    fn compile(config: &PolicyConfig, matchers: &mut Vec<Matcher>) -> anyhow::Result<Policy> {
        let missing = || {
            anyhow::anyhow!(
                "policy {:?}: missing `{}` settings",
                config.name,
                config.policy_type
            )
        };
        let mut matched = |matcher: Matcher, invert: bool| {
            matchers.push(matcher);
            Rule::Matched {
                slot: matchers.len() - 1,
                invert,
            }
        };
        let rule = match config.policy_type.as_str() {
            "always_sample" => Rule::AlwaysSample,
            "trace_flags" => Rule::TraceFlags,
            "latency" => {
                let c = config.latency.as_ref().ok_or_else(missing)?;
                Rule::Latency {
                    threshold_ms: c.threshold_ms,
                    upper_ms: c.upper_threshold_ms,
                }
            }
            "status_code" => {
                let c = config.status_code.as_ref().ok_or_else(missing)?;
                let mut codes = [false; 3];
                for code in &c.status_codes {
                    // Protobuf values: UNSET 0, OK 1, ERROR 2.
                    let index = match code.as_str() {
                        "UNSET" => 0,
                        "OK" => 1,
                        "ERROR" => 2,
                        other => {
                            anyhow::bail!("policy {:?}: unknown status code {other:?}", config.name)
                        }
                    };
                    codes[index] = true;
                }
                Rule::StatusCode { codes }
            }
            "probabilistic" => {
                let c = config.probabilistic.as_ref().ok_or_else(missing)?;
                let threshold = (c.sampling_percentage / 100.0 * u64::MAX as f64) as u64;
                let salt = if c.hash_salt.is_empty() {
                    "default-hash-seed".as_bytes().to_vec()
                } else {
                    c.hash_salt.as_bytes().to_vec()
                };
                Rule::Probabilistic { threshold, salt }
            }
            "span_count" => {
                let c = config.span_count.as_ref().ok_or_else(missing)?;
                Rule::SpanCount {
                    min: c.min_spans,
                    max: if c.max_spans == 0 {
                        usize::MAX
                    } else {
                        c.max_spans
                    },
                }
            }
            "string_attribute" => {
                let c = config.string_attribute.as_ref().ok_or_else(missing)?;
                let regexes = if c.enabled_regex_matching {
                    c.values
                        .iter()
                        .map(|v| Regex::new(v))
                        .collect::<Result<_, _>>()?
                } else {
                    Vec::new()
                };
                let matcher = Matcher::String {
                    key: c.key.clone(),
                    values: c.values.clone(),
                    regexes,
                };
                matched(matcher, c.invert_match)
            }
            "numeric_attribute" => {
                let c = config.numeric_attribute.as_ref().ok_or_else(missing)?;
                let matcher = Matcher::Numeric {
                    key: c.key.clone(),
                    min: c.min_value.unwrap_or(i64::MIN),
                    max: c.max_value.unwrap_or(i64::MAX),
                };
                matched(matcher, c.invert_match)
            }
            "boolean_attribute" => {
                let c = config.boolean_attribute.as_ref().ok_or_else(missing)?;
                let matcher = Matcher::Boolean {
                    key: c.key.clone(),
                    value: c.value,
                };
                matched(matcher, c.invert_match)
            }
            "trace_state" => {
                let c = config.trace_state.as_ref().ok_or_else(missing)?;
                let matcher = Matcher::TraceState {
                    key: c.key.clone(),
                    values: c.values.clone(),
                };
                matched(matcher, false)
            }
            "rate_limiting" => {
                let c = config.rate_limiting.as_ref().ok_or_else(missing)?;
                Rule::RateLimiting(RateWindow::new(c.spans_per_second))
            }
            "bytes_limiting" => {
                let c = config.bytes_limiting.as_ref().ok_or_else(missing)?;
                let capacity = if c.burst_capacity == 0 {
                    c.bytes_per_second.saturating_mul(2)
                } else {
                    c.burst_capacity
                } as f64;
                Rule::BytesLimiting(Mutex::new(TokenBucket {
                    rate: c.bytes_per_second as f64,
                    capacity,
                    tokens: capacity,
                    refilled: Instant::now(),
                }))
            }
            "and" => {
                let c = config.and.as_ref().ok_or_else(missing)?;
                Rule::And(compile_all(&c.and_sub_policy, matchers)?)
            }
            "drop" => {
                let c = config.drop.as_ref().ok_or_else(missing)?;
                Rule::Drop(compile_all(&c.drop_sub_policy, matchers)?)
            }
            "composite" => {
                let c = config.composite.as_ref().ok_or_else(missing)?;
                let mut subs: Vec<Policy> = compile_all(&c.composite_sub_policy, matchers)?;
                // policy_order first, then any sub-policy it does not name.
                subs.sort_by_key(|p| {
                    c.policy_order
                        .iter()
                        .position(|name| *name == p.name)
                        .unwrap_or(usize::MAX)
                });
                let allocated: u64 = c.rate_allocation.iter().map(|a| a.percent).sum();
                let unallocated = subs
                    .iter()
                    .filter(|p| !c.rate_allocation.iter().any(|a| a.policy == p.name))
                    .count() as u64;
                let subs = subs
                    .into_iter()
                    .map(|p| {
                        // Sub-policies without an allocation share what is left.
                        let percent = c
                            .rate_allocation
                            .iter()
                            .find(|a| a.policy == p.name)
                            .map(|a| a.percent)
                            .unwrap_or_else(|| {
                                100u64.saturating_sub(allocated) / unallocated.max(1)
                            });
                        let share = c.max_total_spans_per_second * percent / 100;
                        (p, RateWindow::new(share))
                    })
                    .collect();
                Rule::Composite(Composite {
                    total: RateWindow::new(c.max_total_spans_per_second),
                    subs,
                })
            }
            other => anyhow::bail!("policy {:?}: type {other:?} is not supported", config.name),
        };
        Ok(Policy {
            name: config.name.clone(),
            rule,
        })
    }

    fn decide(&self, trace_id: &[u8; 16], summary: &TraceSummary, now_second: u64) -> Decision {
        let sampled = |yes: bool| {
            if yes {
                Decision::Sampled
            } else {
                Decision::NotSampled
            }
        };
        match &self.rule {
            Rule::AlwaysSample => Decision::Sampled,
            Rule::Latency {
                threshold_ms,
                upper_ms,
            } => {
                let duration = summary.duration_ms();
                sampled(duration >= *threshold_ms && (*upper_ms == 0 || duration <= *upper_ms))
            }
            Rule::StatusCode { codes } => sampled(
                codes
                    .iter()
                    .zip(summary.status_codes_seen)
                    .any(|(want, seen)| *want && seen),
            ),
            Rule::Probabilistic { threshold, salt } => {
                sampled(trace_id_hash(salt, trace_id) <= *threshold)
            }
            Rule::SpanCount { min, max } => sampled(summary.spans >= *min && summary.spans <= *max),
            Rule::TraceFlags => sampled(summary.sampled_flag_seen),
            Rule::Matched { slot, invert } => {
                let hit = summary.matched.get(*slot).copied().unwrap_or(false);
                match (invert, hit) {
                    (false, hit) => sampled(hit),
                    (true, true) => Decision::InvertNotSampled,
                    (true, false) => Decision::InvertSampled,
                }
            }
            Rule::RateLimiting(window) => sampled(RateWindow::try_take(
                window,
                summary.spans as u64,
                now_second,
            )),
            Rule::BytesLimiting(bucket) => sampled(TokenBucket::try_take(bucket, summary.bytes)),
            Rule::And(subs) => {
                for sub in subs {
                    let d = sub.decide(trace_id, summary, now_second);
                    if matches!(d, Decision::NotSampled | Decision::InvertNotSampled) {
                        return Decision::NotSampled;
                    }
                }
                Decision::Sampled
            }
            Rule::Drop(subs) => {
                for sub in subs {
                    let d = sub.decide(trace_id, summary, now_second);
                    if matches!(d, Decision::NotSampled | Decision::InvertNotSampled) {
                        return Decision::NotSampled;
                    }
                }
                Decision::Dropped
            }
            Rule::Composite(composite) => {
                let spans = summary.spans as u64;
                for (sub, window) in &composite.subs {
                    if !sub.decide(trace_id, summary, now_second).samples() {
                        continue;
                    }
                    if RateWindow::try_take(window, spans, now_second)
                        && RateWindow::try_take(&composite.total, spans, now_second)
                    {
                        return Decision::Sampled;
                    }
                }
                Decision::NotSampled
            }
        }
    }
}

fn compile_all(
    configs: &[PolicyConfig],
    matchers: &mut Vec<Matcher>,
) -> anyhow::Result<Vec<Policy>> {
    configs
        .iter()
        .map(|c| Policy::compile(c, matchers))
        .collect()
}

/// A 64-bit FNV-1a hash of salt and trace id, finalized with fmix64: the same on every replica, so replicas holding
/// parts of one trace decide alike. (Upstream uses murmur3; mixing Go and Threadline replicas in
/// one gateway would split the probabilistic share differently.)
pub fn trace_id_hash(salt: &[u8], trace_id: &[u8; 16]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in salt.iter().chain(trace_id.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // murmur3's fmix64, so that the high bits compared with the threshold are well mixed.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}
