//! Configuration of the `headers_setter` extension, as upstream's `headerssetterextension`.

use serde::Deserialize;
use threadline_config::ConfigError;

use crate::component::ComponentConfig;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadersSetterConfig {
    /// The headers to set on every request of the exporters that use this extension as their
    /// `auth: {authenticator: headers_setter}`. At least one.
    #[serde(default)]
    pub headers: Vec<HeaderConfig>,
}

/// One header: its name, where its value comes from, and what to do with it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderConfig {
    /// The header name. Required.
    #[serde(default)]
    pub key: String,
    /// A fixed value.
    #[serde(default)]
    pub value: Option<String>,
    /// The metadata key whose (first) value to send: request metadata the receiver passed on
    /// (`include_metadata: true`) and the pipeline carried to the exporter (`metadata_keys` of
    /// `batch` and `tail_sampling` list it). Not kept by a persistent sending queue, nor by
    /// the `loadbalancing` exporter.
    #[serde(default)]
    pub from_context: Option<String>,
    /// Upstream reads authentication data here; refused: authentication data is not carried
    /// through the pipeline (use `from_context`).
    #[serde(default)]
    pub from_attribute: Option<String>,
    /// The value when `from_context` finds nothing. Without it, the header is then not set.
    #[serde(default)]
    pub default_value: Option<String>,
    /// `insert` (only if absent), `update` (only if present), `upsert` (default: always) or
    /// `delete` (remove the header; needs no value).
    #[serde(default)]
    pub action: Action,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Insert,
    Update,
    #[default]
    Upsert,
    Delete,
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.to_ascii_lowercase().as_str() {
            "insert" => Ok(Action::Insert),
            "update" => Ok(Action::Update),
            "upsert" => Ok(Action::Upsert),
            "delete" => Ok(Action::Delete),
            _ => Err(serde::de::Error::custom(format!(
                "unknown action {text:?}; expected one of: insert, update, upsert, delete"
            ))),
        }
    }
}

impl ComponentConfig for HeadersSetterConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }

    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        if self.headers.is_empty() {
            return Err(vec![ConfigError::new(
                "headers",
                "missing headers configuration: list at least one header",
            )]);
        }
        let mut errors = Vec::new();
        for (i, header) in self.headers.iter().enumerate() {
            let at = |key: &str| format!("headers::{i}::{key}");
            if header.key.is_empty() {
                errors.push(ConfigError::new(at("key"), "missing header name"));
            } else if http::HeaderName::from_bytes(header.key.as_bytes()).is_err() {
                errors.push(ConfigError::new(
                    at("key"),
                    format!("{:?} is not a valid header name", header.key),
                ));
            }
            if header.from_attribute.is_some() {
                errors.push(ConfigError::new(
                    at("from_attribute"),
                    "from_attribute is not supported: authentication data is not carried \
                     through the pipeline; use from_context (with include_metadata on the \
                     receiver)",
                ));
                continue;
            }
            if header.action == Action::Delete {
                continue;
            }
            match (&header.value, &header.from_context) {
                (None, None) => errors.push(ConfigError::new(
                    at("value"),
                    "missing header source, must be 'from_context' or 'value'",
                )),
                (Some(_), Some(_)) => errors.push(ConfigError::new(
                    at("value"),
                    "invalid header source, must either 'from_context' or 'value'",
                )),
                _ => {}
            }
            for (key, value) in [
                ("value", &header.value),
                ("default_value", &header.default_value),
            ] {
                if let Some(value) = value {
                    if http::HeaderValue::from_str(value).is_err() {
                        errors.push(ConfigError::new(
                            at(key),
                            "not a valid header value (visible ASCII only)",
                        ));
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
