//! Policy evaluation over a per-trace summary built as spans arrive.

use regex::Regex;
use threadline_otlp::traces::AnyValueView;
use threadline_otlp::TraceData;

use super::config::PolicyConfig;

/// What the policies need to know of a trace, updated span by span.
pub struct TraceSummary {
    pub spans: usize,
    pub bytes: u64,
    pub min_start: u64,
    pub max_end: u64,
    pub status_codes_seen: [bool; 3],
    pub root_seen: bool,
    /// Per policy: whether an attribute policy matched some span or resource.
    pub matched: Vec<bool>,
}

impl TraceSummary {
    pub fn new(policies: usize) -> Self {
        TraceSummary {
            spans: 0,
            bytes: 0,
            min_start: u64::MAX,
            max_end: 0,
            status_codes_seen: [false; 3],
            root_seen: false,
            matched: vec![false; policies],
        }
    }

    pub fn add(&mut self, part: &TraceData, policies: &[Policy]) {
        self.bytes += part.encoded_len() as u64;
        part.for_each_span(|resource, _scope, span| {
            self.spans += 1;
            self.min_start = self.min_start.min(span.start_time_unix_nano());
            self.max_end = self.max_end.max(span.end_time_unix_nano());
            if let Some(seen) = self.status_codes_seen.get_mut(span.status_code() as usize) {
                *seen = true;
            }
            if span.parent_span_id().is_none() {
                self.root_seen = true;
            }
            for (i, policy) in policies.iter().enumerate() {
                if self.matched[i] {
                    continue;
                }
                if let Some(key) = policy.attribute_key() {
                    let value = resource.attribute(key).or_else(|| span.attribute(key));
                    if let Some(value) = value {
                        self.matched[i] = policy.matches_value(&value);
                    }
                }
            }
        });
    }

    fn duration_ms(&self) -> u64 {
        self.max_end.saturating_sub(self.min_start) / 1_000_000
    }
}

pub enum Policy {
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
    StringAttribute {
        key: String,
        values: Vec<String>,
        regexes: Vec<Regex>,
    },
    NumericAttribute {
        key: String,
        min: i64,
        max: i64,
    },
    BooleanAttribute {
        key: String,
        value: bool,
    },
    SpanCount {
        min: usize,
        max: usize,
    },
}

impl Policy {
    pub fn compile(config: &PolicyConfig) -> anyhow::Result<Policy> {
        let missing = || {
            anyhow::anyhow!(
                "policy {:?}: missing `{}` settings",
                config.name,
                config.policy_type
            )
        };
        Ok(match config.policy_type.as_str() {
            "always_sample" => Policy::AlwaysSample,
            "latency" => {
                let c = config.latency.as_ref().ok_or_else(missing)?;
                Policy::Latency {
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
                        _ => 2,
                    };
                    codes[index] = true;
                }
                Policy::StatusCode { codes }
            }
            "probabilistic" => {
                let c = config.probabilistic.as_ref().ok_or_else(missing)?;
                let threshold = (c.sampling_percentage / 100.0 * u64::MAX as f64) as u64;
                let salt = if c.hash_salt.is_empty() {
                    "default-hash-seed".as_bytes().to_vec()
                } else {
                    c.hash_salt.as_bytes().to_vec()
                };
                Policy::Probabilistic { threshold, salt }
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
                Policy::StringAttribute {
                    key: c.key.clone(),
                    values: c.values.clone(),
                    regexes,
                }
            }
            "numeric_attribute" => {
                let c = config.numeric_attribute.as_ref().ok_or_else(missing)?;
                Policy::NumericAttribute {
                    key: c.key.clone(),
                    min: c.min_value.unwrap_or(i64::MIN),
                    max: c.max_value.unwrap_or(i64::MAX),
                }
            }
            "boolean_attribute" => {
                let c = config.boolean_attribute.as_ref().ok_or_else(missing)?;
                Policy::BooleanAttribute {
                    key: c.key.clone(),
                    value: c.value,
                }
            }
            "span_count" => {
                let c = config.span_count.as_ref().ok_or_else(missing)?;
                Policy::SpanCount {
                    min: c.min_spans,
                    max: if c.max_spans == 0 {
                        usize::MAX
                    } else {
                        c.max_spans
                    },
                }
            }
            other => anyhow::bail!("policy {:?}: type {other:?} is not supported", config.name),
        })
    }

    fn attribute_key(&self) -> Option<&str> {
        match self {
            Policy::StringAttribute { key, .. }
            | Policy::NumericAttribute { key, .. }
            | Policy::BooleanAttribute { key, .. } => Some(key),
            _ => None,
        }
    }

    fn matches_value(&self, value: &AnyValueView<'_>) -> bool {
        match self {
            Policy::StringAttribute {
                values, regexes, ..
            } => value.as_str().is_some_and(|text| {
                if regexes.is_empty() {
                    values.iter().any(|v| v == text)
                } else {
                    regexes.iter().any(|r| r.is_match(text))
                }
            }),
            Policy::NumericAttribute { min, max, .. } => {
                value.as_i64().is_some_and(|n| n >= *min && n <= *max)
            }
            Policy::BooleanAttribute { value: wanted, .. } => value.as_bool() == Some(*wanted),
            _ => false,
        }
    }

    fn samples(&self, index: usize, trace_id: &[u8; 16], summary: &TraceSummary) -> bool {
        match self {
            Policy::AlwaysSample => true,
            Policy::Latency {
                threshold_ms,
                upper_ms,
            } => {
                let duration = summary.duration_ms();
                duration >= *threshold_ms && (*upper_ms == 0 || duration <= *upper_ms)
            }
            Policy::StatusCode { codes } => codes
                .iter()
                .zip(summary.status_codes_seen)
                .any(|(want, seen)| *want && seen),
            Policy::Probabilistic { threshold, salt } => {
                trace_id_hash(salt, trace_id) <= *threshold
            }
            Policy::SpanCount { min, max } => summary.spans >= *min && summary.spans <= *max,
            Policy::StringAttribute { .. }
            | Policy::NumericAttribute { .. }
            | Policy::BooleanAttribute { .. } => summary.matched[index],
        }
    }
}

/// Whether any policy samples the trace (upstream: any "Sampled" decision wins).
pub fn evaluate(
    policies: &[Policy],
    trace_id: &[u8; 16],
    summary: &TraceSummary,
    first_match: bool,
) -> bool {
    let mut sampled = false;
    for (i, policy) in policies.iter().enumerate() {
        if policy.samples(i, trace_id, summary) {
            sampled = true;
            if first_match {
                break;
            }
        }
    }
    sampled
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
