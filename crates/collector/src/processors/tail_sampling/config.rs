//! Configuration of the `tail_sampling` processor, as contrib's `tailsamplingprocessor`.

use serde::Deserialize;
use threadline_config::settings::GoDuration;
use threadline_config::ConfigError;

use crate::component::ComponentConfig;

/// Policy types this build evaluates.
pub const SUPPORTED_POLICIES: &str = "always_sample, latency, status_code, probabilistic, \
     string_attribute, numeric_attribute, boolean_attribute, span_count, trace_state, trace_flags, \
     rate_limiting, bytes_limiting, and, drop, composite";

/// Types allowed as sub-policies of `and`, `drop` and `composite` (no nesting, except `and`
/// inside `composite`).
const LEAF_POLICIES: &str = "always_sample, latency, status_code, probabilistic, \
     string_attribute, numeric_attribute, boolean_attribute, span_count, trace_state, trace_flags, \
     rate_limiting, bytes_limiting";

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TailSamplingConfig {
    /// How long to wait after a trace's first span before deciding it. Default 30s.
    #[serde(default = "default_decision_wait")]
    pub decision_wait: GoDuration,
    /// Traces held in memory at most; when full, the oldest is decided early. Default 50000.
    #[serde(default = "default_num_traces")]
    pub num_traces: usize,
    /// Sizing hint for the trace table, as upstream.
    #[serde(default)]
    pub expected_new_traces_per_sec: u64,
    /// How many decided trace ids are remembered so that late spans follow the decision.
    #[serde(default)]
    pub decision_cache: DecisionCacheConfig,
    /// Stop evaluating policies at the first one that samples.
    #[serde(default)]
    pub sample_on_first_match: bool,
    /// On shutdown, drop undecided traces instead of deciding them at once.
    #[serde(default)]
    pub drop_pending_traces_on_shutdown: bool,
    /// Once the root span has arrived, decide after this much instead of `decision_wait` (0 = off).
    #[serde(default)]
    pub decision_wait_after_root_received: GoDuration,
    /// A trace larger than this (encoded bytes) is decided at once (0 = no cap).
    #[serde(default)]
    pub maximum_trace_size_bytes: u64,
    /// The policies; a trace is sampled when any of them samples it.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// Threadline (not in contrib; the `batch` processor's setting, as upstream proposes for
    /// every holding component): client metadata keys (case-insensitive) that partition the trace
    /// table. Spans of one trace id with different values of these keys (two tenants) are two
    /// traces, decided apart, and kept spans go downstream carrying those values as their client
    /// metadata. Needs the receivers' `include_metadata: true`. Default: none (no metadata
    /// downstream, as contrib).
    #[serde(default)]
    pub metadata_keys: Vec<String>,
    /// Distinct `metadata_keys` value combinations over the process's life at most; data of
    /// further combinations is refused. 0 = no limit. Default 1000, as `batch`.
    #[serde(default = "default_metadata_cardinality_limit")]
    pub metadata_cardinality_limit: u32,
}

fn default_metadata_cardinality_limit() -> u32 {
    1000
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionCacheConfig {
    /// Sampled trace ids remembered (0 uses 100000 so that late spans never change sides).
    #[serde(default)]
    pub sampled_cache_size: usize,
    /// Not-sampled trace ids remembered (0 uses 100000).
    #[serde(default)]
    pub non_sampled_cache_size: usize,
}

/// One policy. Its settings sit under the key named like its type. The same shape is used for
/// the sub-policies of `and`, `drop` and `composite`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name of the policy, used in metrics and logs.
    pub name: String,
    /// The policy type; its settings go under the key of the same name.
    #[serde(rename = "type")]
    pub policy_type: String,
    /// Settings of a `latency` policy: sample traces by duration.
    #[serde(default)]
    pub latency: Option<LatencyConfig>,
    /// Settings of a `status_code` policy: sample traces by span status.
    #[serde(default)]
    pub status_code: Option<StatusCodeConfig>,
    /// Settings of a `probabilistic` policy: sample a share of traces by trace id.
    #[serde(default)]
    pub probabilistic: Option<ProbabilisticConfig>,
    /// Settings of a `string_attribute` policy: sample traces by a string attribute.
    #[serde(default)]
    pub string_attribute: Option<StringAttributeConfig>,
    /// Settings of a `numeric_attribute` policy: sample traces by an integer attribute in a range.
    #[serde(default)]
    pub numeric_attribute: Option<NumericAttributeConfig>,
    /// Settings of a `boolean_attribute` policy: sample traces by a bool attribute.
    #[serde(default)]
    pub boolean_attribute: Option<BooleanAttributeConfig>,
    /// Settings of a `span_count` policy: sample traces by their number of spans.
    #[serde(default)]
    pub span_count: Option<SpanCountConfig>,
    /// Settings of a `trace_state` policy: sample traces by W3C tracestate values.
    #[serde(default)]
    pub trace_state: Option<TraceStateConfig>,
    /// `trace_flags` has no settings: a trace is sampled when a span carries the sampled flag.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub trace_flags: Option<serde_yaml_ng::Value>,
    /// Settings of a `rate_limiting` policy: sample at most so many spans per second.
    #[serde(default)]
    pub rate_limiting: Option<RateLimitingConfig>,
    /// Settings of a `bytes_limiting` policy: sample at most so many bytes per second.
    #[serde(default)]
    pub bytes_limiting: Option<BytesLimitingConfig>,
    /// Settings of an `and` policy: sample when every sub-policy samples.
    #[serde(default)]
    pub and: Option<AndConfig>,
    /// Settings of a `drop` policy: drop traces every sub-policy matches, whatever other policies decide.
    #[serde(default)]
    pub drop: Option<DropConfig>,
    /// Settings of a `composite` policy: sub-policies sharing a spans-per-second budget.
    #[serde(default)]
    pub composite: Option<CompositeConfig>,
    /// Not evaluated by Threadline; rejected by validation with the supported types.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub ottl_condition: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceStateConfig {
    /// The W3C tracestate key to look for.
    pub key: String,
    /// Sample when a span's tracestate has `key` with one of these values.
    pub values: Vec<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// Spans sampled per second at most; traces beyond that in the current second are not sampled.
    pub spans_per_second: u64,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BytesLimitingConfig {
    /// Encoded bytes sampled per second (token bucket refill rate).
    pub bytes_per_second: u64,
    /// Largest burst in bytes. Default: twice `bytes_per_second`.
    #[serde(default)]
    pub burst_capacity: u64,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AndConfig {
    /// Sample only when every one of these samples.
    pub and_sub_policy: Vec<PolicyConfig>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    /// Drop the trace, whatever other policies say, when every one of these matches.
    pub drop_sub_policy: Vec<PolicyConfig>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    /// Spans per second the composite samples at most, shared by its sub-policies.
    pub max_total_spans_per_second: u64,
    /// Sub-policy names in evaluation order; the first that samples (within its share) wins.
    pub policy_order: Vec<String>,
    /// The sub-policies.
    pub composite_sub_policy: Vec<PolicyConfig>,
    /// Share of `max_total_spans_per_second` per sub-policy, in percent.
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocationConfig>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateAllocationConfig {
    /// The sub-policy (its `name`).
    pub policy: String,
    /// Its share of `max_total_spans_per_second`, in percent.
    pub percent: u64,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Sample traces lasting at least this long (first span start to last span end).
    pub threshold_ms: u64,
    /// And at most this long (0 = no upper bound).
    #[serde(default)]
    pub upper_threshold_ms: u64,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// Sample traces with a span whose status is one of these: OK, ERROR, UNSET.
    pub status_codes: Vec<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Share of traces to sample, 0 to 100, decided from the trace id alone.
    pub sampling_percentage: f64,
    /// Salt mixed into the trace id hash; replicas that must agree use the same salt.
    #[serde(default)]
    pub hash_salt: String,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeConfig {
    /// The span or resource attribute to look at.
    pub key: String,
    /// Sample when the attribute has one of these values.
    pub values: Vec<String>,
    /// Treat `values` as regular expressions.
    #[serde(default)]
    pub enabled_regex_matching: bool,
    /// Accepted for compatibility; regexes are compiled once.
    #[serde(default)]
    pub cache_max_size: usize,
    /// Invert: a trace with a matching span is not sampled (an "inverted not sampled" decision,
    /// which overrides other policies' "sampled"), and one without is.
    #[serde(default)]
    pub invert_match: bool,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeConfig {
    /// The span or resource attribute to look at.
    pub key: String,
    /// Sample when the value is at least this (no lower bound when absent).
    #[serde(default)]
    pub min_value: Option<i64>,
    /// And at most this (no upper bound when absent).
    #[serde(default)]
    pub max_value: Option<i64>,
    /// Invert: a trace with a matching span is not sampled (an "inverted not sampled" decision,
    /// which overrides other policies' "sampled"), and one without is.
    #[serde(default)]
    pub invert_match: bool,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    /// The span or resource attribute to look at.
    pub key: String,
    /// Sample when the attribute has this value.
    pub value: bool,
    /// Invert: a trace with a matching span is not sampled (an "inverted not sampled" decision,
    /// which overrides other policies' "sampled"), and one without is.
    #[serde(default)]
    pub invert_match: bool,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
    /// Sample traces with at least this many spans.
    pub min_spans: usize,
    /// 0 = no upper bound.
    #[serde(default)]
    pub max_spans: usize,
}

fn default_decision_wait() -> GoDuration {
    GoDuration(std::time::Duration::from_secs(30))
}

fn default_num_traces() -> usize {
    50_000
}

impl ComponentConfig for TailSamplingConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }

    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.decision_wait.0.is_zero() {
            errors.push(ConfigError {
                path: "decision_wait".into(),
                message: "must be greater than zero".into(),
            });
        }
        if self.num_traces == 0 {
            errors.push(ConfigError {
                path: "num_traces".into(),
                message: "must be greater than zero".into(),
            });
        }
        if self.policies.is_empty() {
            errors.push(ConfigError {
                path: "policies".into(),
                message: "at least one policy is required".into(),
            });
        }
        for (i, policy) in self.policies.iter().enumerate() {
            validate_policy(policy, &format!("policies[{i}]"), Level::Top, &mut errors);
        }
        if let Err(message) = crate::client::normalize_keys(&self.metadata_keys) {
            errors.push(ConfigError {
                path: "metadata_keys".into(),
                message,
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Where a policy sits, which decides the types it may have.
#[derive(Clone, Copy, PartialEq)]
enum Level {
    Top,
    /// Inside `and` or `drop`.
    Sub,
    /// Inside `composite` (may be an `and`).
    CompositeSub,
}

fn validate_policy(policy: &PolicyConfig, at: &str, level: Level, errors: &mut Vec<ConfigError>) {
    let path = |field: &str| format!("{at}::{field}");
    let kind = policy.policy_type.as_str();
    let missing = |present: bool, errors: &mut Vec<ConfigError>| {
        if !present {
            errors.push(ConfigError::new(
                path(kind),
                format!(
                    "policy {:?} of type {kind} needs its `{kind}` settings",
                    policy.name
                ),
            ));
        }
    };
    let nested = match (level, kind) {
        (Level::Top, _) => false,
        (Level::CompositeSub, "and") => false,
        (_, "and" | "drop" | "composite") => true,
        _ => false,
    };
    if nested {
        errors.push(ConfigError::new(
            path("type"),
            format!("a sub-policy cannot be of type {kind} (valid values: {LEAF_POLICIES})"),
        ));
        return;
    }
    match kind {
        "always_sample" | "trace_flags" => {}
        "latency" => missing(policy.latency.is_some(), errors),
        "span_count" => missing(policy.span_count.is_some(), errors),
        "numeric_attribute" => missing(policy.numeric_attribute.is_some(), errors),
        "boolean_attribute" => missing(policy.boolean_attribute.is_some(), errors),
        "trace_state" => missing(policy.trace_state.is_some(), errors),
        "status_code" => match &policy.status_code {
            None => missing(false, errors),
            Some(c) => {
                for code in &c.status_codes {
                    if !matches!(code.as_str(), "OK" | "ERROR" | "UNSET") {
                        errors.push(ConfigError::new(
                            path("status_code::status_codes"),
                            format!(
                                "unknown status code {code:?} (valid values: OK, ERROR, UNSET)"
                            ),
                        ));
                    }
                }
            }
        },
        "probabilistic" => match &policy.probabilistic {
            None => missing(false, errors),
            Some(p) if !(0.0..=100.0).contains(&p.sampling_percentage) => {
                errors.push(ConfigError::new(
                    path("probabilistic::sampling_percentage"),
                    format!("must be between 0 and 100, got {}", p.sampling_percentage),
                ))
            }
            Some(_) => {}
        },
        "string_attribute" => match &policy.string_attribute {
            None => missing(false, errors),
            Some(s) if s.enabled_regex_matching => {
                for value in &s.values {
                    if let Err(err) = regex::Regex::new(value) {
                        errors.push(ConfigError::new(
                            path("string_attribute::values"),
                            format!("invalid regular expression {value:?}: {err}"),
                        ));
                    }
                }
            }
            Some(_) => {}
        },
        "rate_limiting" => match &policy.rate_limiting {
            None => missing(false, errors),
            Some(r) if r.spans_per_second == 0 => errors.push(ConfigError::new(
                path("rate_limiting::spans_per_second"),
                "must be greater than zero",
            )),
            Some(_) => {}
        },
        "bytes_limiting" => match &policy.bytes_limiting {
            None => missing(false, errors),
            Some(b) if b.bytes_per_second == 0 => errors.push(ConfigError::new(
                path("bytes_limiting::bytes_per_second"),
                "must be greater than zero",
            )),
            Some(_) => {}
        },
        "and" => match &policy.and {
            None => missing(false, errors),
            Some(and) => validate_subs(
                &and.and_sub_policy,
                &path("and::and_sub_policy"),
                Level::Sub,
                errors,
            ),
        },
        "drop" => match &policy.drop {
            None => missing(false, errors),
            Some(drop) => validate_subs(
                &drop.drop_sub_policy,
                &path("drop::drop_sub_policy"),
                Level::Sub,
                errors,
            ),
        },
        "composite" => match &policy.composite {
            None => missing(false, errors),
            Some(c) => {
                let at = path("composite");
                validate_subs(
                    &c.composite_sub_policy,
                    &format!("{at}::composite_sub_policy"),
                    Level::CompositeSub,
                    errors,
                );
                let names: Vec<&str> = c
                    .composite_sub_policy
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect();
                for name in &c.policy_order {
                    if !names.contains(&name.as_str()) {
                        errors.push(ConfigError::new(
                            format!("{at}::policy_order"),
                            format!(
                                "{name:?} is not a composite_sub_policy (valid values: {})",
                                names.join(", ")
                            ),
                        ));
                    }
                }
                for allocation in &c.rate_allocation {
                    if !names.contains(&allocation.policy.as_str()) {
                        errors.push(ConfigError::new(
                            format!("{at}::rate_allocation"),
                            format!(
                                "{:?} is not a composite_sub_policy (valid values: {})",
                                allocation.policy,
                                names.join(", ")
                            ),
                        ));
                    }
                }
                let total: u64 = c.rate_allocation.iter().map(|a| a.percent).sum();
                if total > 100 {
                    errors.push(ConfigError::new(
                        format!("{at}::rate_allocation"),
                        format!("percentages add up to {total}, more than 100"),
                    ));
                }
            }
        },
        other => errors.push(ConfigError::new(
            path("type"),
            format!("policy type {other:?} is not supported (valid values: {SUPPORTED_POLICIES})"),
        )),
    }
}

fn validate_subs(subs: &[PolicyConfig], at: &str, level: Level, errors: &mut Vec<ConfigError>) {
    if subs.is_empty() {
        errors.push(ConfigError::new(at, "at least one sub-policy is required"));
    }
    for (i, sub) in subs.iter().enumerate() {
        validate_policy(sub, &format!("{at}[{i}]"), level, errors);
    }
}
