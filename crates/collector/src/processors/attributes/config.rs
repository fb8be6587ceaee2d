//! Configuration of the `attributes` processor, as upstream's `attributesprocessor`.

use serde::Deserialize;
use threadline_config::ConfigError;

use crate::component::ComponentConfig;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    /// The actions to apply to each span's attributes, in order.
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
    /// Only spans matching these properties are modified.
    #[serde(default)]
    pub include: Option<MatchProperties>,
    /// Spans matching these properties are left alone (checked after `include`).
    #[serde(default)]
    pub exclude: Option<MatchProperties>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Add the attribute when it is absent.
    Insert,
    /// Change the attribute when it is present.
    Update,
    /// Insert or update.
    Upsert,
    /// Remove the attribute (`key`) or every attribute whose key matches `pattern`.
    Delete,
    /// Replace the value by its SHA-256 hex digest (`key`, or keys matching `pattern`).
    Hash,
    /// Extract the named groups of `pattern` from the string value of `key` into new attributes.
    Extract,
    /// Convert the value of `key` to `converted_type`.
    Convert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConvertedType {
    Int,
    Double,
    String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The attribute acted on.
    #[serde(default)]
    pub key: String,
    /// What to do: insert, update, upsert, delete, hash, extract or convert.
    pub action: Action,
    /// The value to set (string, int, double or bool), for insert/update/upsert.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub value: Option<serde_yaml_ng::Value>,
    /// Take the value from this attribute of the same span instead of `value`.
    #[serde(default)]
    pub from_attribute: Option<String>,
    /// Take the value from the request context (client metadata). Not supported yet.
    #[serde(default)]
    pub from_context: Option<String>,
    /// Regular expression: keys to delete/hash, or named groups to extract.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Target type of `convert`: int, double or string.
    #[serde(default)]
    pub converted_type: Option<ConvertedType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    Strict,
    Regexp,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchProperties {
    /// How names and values are compared: strict (equality) or regexp.
    pub match_type: MatchType,
    /// Matches when the resource's service.name is one of these.
    #[serde(default)]
    pub services: Vec<String>,
    /// Matches when the span name is one of these.
    #[serde(default)]
    pub span_names: Vec<String>,
    /// Matches when the span kind is one of these (SPAN_KIND_SERVER, ...).
    #[serde(default)]
    pub span_kinds: Vec<String>,
    /// Matches when the span has every one of these attributes (with the value, when given).
    #[serde(default)]
    pub attributes: Vec<AttributeMatch>,
    /// Matches when the resource has every one of these attributes.
    #[serde(default)]
    pub resources: Vec<AttributeMatch>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    /// The attribute that must be present.
    pub key: String,
    /// The value it must have (compared as `match_type` says); any value when absent.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub value: Option<serde_yaml_ng::Value>,
}

impl ComponentConfig for AttributesConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }

    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.actions.is_empty() {
            errors.push(ConfigError {
                path: "actions".into(),
                message: "at least one action must be configured".into(),
            });
        }
        for (i, action) in self.actions.iter().enumerate() {
            let mut error = |field: &str, message: String| {
                errors.push(ConfigError {
                    path: format!("actions[{i}]::{field}"),
                    message,
                })
            };
            let sources = [
                action.value.is_some(),
                action.from_attribute.is_some(),
                action.from_context.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            match action.action {
                Action::Insert | Action::Update | Action::Upsert => {
                    if action.key.is_empty() {
                        error("key", "missing: the attribute to set".into());
                    }
                    if sources != 1 {
                        error(
                            "value",
                            "exactly one of value, from_attribute or from_context is required"
                                .into(),
                        );
                    }
                    if action.from_context.is_some() {
                        error(
                            "from_context",
                            "taking values from the request context is not supported yet".into(),
                        );
                    }
                    if let Some(value) = &action.value {
                        if !matches!(
                            value,
                            serde_yaml_ng::Value::String(_)
                                | serde_yaml_ng::Value::Number(_)
                                | serde_yaml_ng::Value::Bool(_)
                        ) {
                            error("value", "must be a string, int, double or bool".into());
                        }
                    }
                }
                Action::Delete | Action::Hash => {
                    if action.key.is_empty() && action.pattern.is_none() {
                        error("key", "one of key or pattern is required".into());
                    }
                }
                Action::Extract => {
                    if action.key.is_empty() {
                        error("key", "missing: the attribute to extract from".into());
                    }
                    if action.pattern.is_none() {
                        error(
                            "pattern",
                            "missing: a regular expression with named groups".into(),
                        );
                    }
                }
                Action::Convert => {
                    if action.key.is_empty() {
                        error("key", "missing: the attribute to convert".into());
                    }
                    if action.converted_type.is_none() {
                        error(
                            "converted_type",
                            "missing: one of int, double, string".into(),
                        );
                    }
                }
            }
            if let Some(pattern) = &action.pattern {
                match regex::Regex::new(pattern) {
                    Err(err) => error("pattern", format!("invalid regular expression: {err}")),
                    Ok(regex)
                        if action.action == Action::Extract
                            && regex.capture_names().flatten().next().is_none() =>
                    {
                        error(
                            "pattern",
                            "must contain at least one named group, e.g. (?P<name>...)".into(),
                        )
                    }
                    Ok(_) => {}
                }
            }
        }
        for (name, properties) in [("include", &self.include), ("exclude", &self.exclude)] {
            let Some(properties) = properties else {
                continue;
            };
            if properties.match_type == MatchType::Regexp {
                for (field, patterns) in [
                    ("services", &properties.services),
                    ("span_names", &properties.span_names),
                ] {
                    for pattern in patterns {
                        if let Err(err) = regex::Regex::new(pattern) {
                            errors.push(ConfigError {
                                path: format!("{name}::{field}"),
                                message: format!("invalid regular expression {pattern:?}: {err}"),
                            });
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
