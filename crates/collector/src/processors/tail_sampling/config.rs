//! Configuration of the `tail_sampling` processor, as contrib's `tailsamplingprocessor`.

use serde::Deserialize;
use threadline_config::settings::GoDuration;
use threadline_config::ConfigError;

use crate::component::ComponentConfig;

/// Policy types this build evaluates.
pub const SUPPORTED_POLICIES: &str = "always_sample, latency, status_code, probabilistic, \
     string_attribute, numeric_attribute, boolean_attribute, span_count";

#[derive(Debug, Deserialize)]
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionCacheConfig {
    /// Sampled trace ids remembered (0 uses 100000 so that late spans never change sides).
    #[serde(default)]
    pub sampled_cache_size: usize,
    /// Not-sampled trace ids remembered (0 uses 100000).
    #[serde(default)]
    pub non_sampled_cache_size: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name of the policy, used in metrics and logs.
    pub name: String,
    /// The policy type; its settings go under the key of the same name.
    #[serde(rename = "type")]
    pub policy_type: String,
    #[serde(default)]
    pub latency: Option<LatencyConfig>,
    #[serde(default)]
    pub status_code: Option<StatusCodeConfig>,
    #[serde(default)]
    pub probabilistic: Option<ProbabilisticConfig>,
    #[serde(default)]
    pub string_attribute: Option<StringAttributeConfig>,
    #[serde(default)]
    pub numeric_attribute: Option<NumericAttributeConfig>,
    #[serde(default)]
    pub boolean_attribute: Option<BooleanAttributeConfig>,
    #[serde(default)]
    pub span_count: Option<SpanCountConfig>,
    // Upstream policy types Threadline does not evaluate yet: accepted by the parser so that
    // validation can name them, rejected in `validate`.
    #[serde(default)]
    pub trace_state: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub trace_flags: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub rate_limiting: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub bytes_limiting: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub and: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub composite: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub drop: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub ottl_condition: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Sample traces lasting at least this long (first span start to last span end).
    pub threshold_ms: u64,
    /// And at most this long (0 = no upper bound).
    #[serde(default)]
    pub upper_threshold_ms: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// Sample traces with a span whose status is one of these: OK, ERROR, UNSET.
    pub status_codes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Share of traces to sample, 0 to 100, decided from the trace id alone.
    pub sampling_percentage: f64,
    /// Salt mixed into the trace id hash; replicas that must agree use the same salt.
    #[serde(default)]
    pub hash_salt: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeConfig {
    pub key: String,
    pub values: Vec<String>,
    /// Treat `values` as regular expressions.
    #[serde(default)]
    pub enabled_regex_matching: bool,
    /// Accepted for compatibility; regexes are compiled once.
    #[serde(default)]
    pub cache_max_size: usize,
    /// Not supported yet: must be false.
    #[serde(default)]
    pub invert_match: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeConfig {
    pub key: String,
    #[serde(default)]
    pub min_value: Option<i64>,
    #[serde(default)]
    pub max_value: Option<i64>,
    /// Not supported yet: must be false.
    #[serde(default)]
    pub invert_match: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    pub key: String,
    pub value: bool,
    /// Not supported yet: must be false.
    #[serde(default)]
    pub invert_match: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
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
            let path = |field: &str| format!("policies[{i}]::{field}");
            let missing = |errors: &mut Vec<ConfigError>| {
                errors.push(ConfigError {
                    path: path(&policy.policy_type),
                    message: format!(
                        "policy {:?} of type {} needs its `{}` settings",
                        policy.name, policy.policy_type, policy.policy_type
                    ),
                })
            };
            let invert = |errors: &mut Vec<ConfigError>, on: bool| {
                if on {
                    errors.push(ConfigError {
                        path: path(&format!("{}::invert_match", policy.policy_type)),
                        message: "invert_match is not supported yet".into(),
                    });
                }
            };
            match policy.policy_type.as_str() {
                "always_sample" => {}
                "latency" => {
                    if policy.latency.is_none() { missing(&mut errors) }
                }
                "status_code" => match &policy.status_code {
                    None => missing(&mut errors),
                    Some(c) => {
                        for code in &c.status_codes {
                            if !matches!(code.as_str(), "OK" | "ERROR" | "UNSET") {
                                errors.push(ConfigError { path: path("status_code::status_codes"), message: format!("unknown status code {code:?} (valid values: OK, ERROR, UNSET)") });
                            }
                        }
                    }
                },
                "probabilistic" => match &policy.probabilistic {
                    None => missing(&mut errors),
                    Some(p) if !(0.0..=100.0).contains(&p.sampling_percentage) => errors.push(ConfigError {
                        path: path("probabilistic::sampling_percentage"),
                        message: format!("must be between 0 and 100, got {}", p.sampling_percentage),
                    }),
                    Some(_) => {}
                },
                "string_attribute" => match &policy.string_attribute {
                    None => missing(&mut errors),
                    Some(s) => {
                        invert(&mut errors, s.invert_match);
                        if s.enabled_regex_matching {
                            for value in &s.values {
                                if let Err(err) = regex::Regex::new(value) {
                                    errors.push(ConfigError { path: path("string_attribute::values"), message: format!("invalid regular expression {value:?}: {err}") });
                                }
                            }
                        }
                    }
                },
                "numeric_attribute" => match &policy.numeric_attribute {
                    None => missing(&mut errors),
                    Some(n) => invert(&mut errors, n.invert_match),
                },
                "boolean_attribute" => match &policy.boolean_attribute {
                    None => missing(&mut errors),
                    Some(b) => invert(&mut errors, b.invert_match),
                },
                "span_count" => {
                    if policy.span_count.is_none() { missing(&mut errors) }
                }
                other => errors.push(ConfigError {
                    path: path("type"),
                    message: format!("policy type {other:?} is not supported (valid values: {SUPPORTED_POLICIES})"),
                }),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
