//! Component ids (`type[/name]`) and pipeline ids (`signal[/name]`), validated as upstream does.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SEPARATOR: char = '/';
/// Upstream limits a component type to 63 characters and a name to 1024 bytes.
const MAX_TYPE_LEN: usize = 63;
const MAX_NAME_LEN: usize = 1024;

/// Why an id string was rejected. The messages follow upstream's wording.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id must not be empty")]
    Empty,
    #[error("in {id:?} id: the part before / should not be empty")]
    EmptyType { id: String },
    #[error("in {id:?} id: the part after / should not be empty")]
    EmptyName { id: String },
    #[error(
        "in {id:?} id: invalid character(s) in type {kind:?}: a type starts with a letter and has \
         up to 63 letters, digits and underscores"
    )]
    InvalidType { id: String, kind: String },
    #[error(
        "in {id:?} id: invalid character(s) in name {name:?}: a name must not contain whitespace, \
         control characters or symbols"
    )]
    InvalidName { id: String, name: String },
    #[error("in {id:?} id: name is longer than 1024 characters")]
    NameTooLong { id: String },
    #[error("in {id:?} id: unknown signal {signal:?}; expected traces, metrics or logs")]
    UnknownSignal { id: String, signal: String },
}

/// Identifies a configured component: its type (`kind`, e.g. `otlp`) and an optional name that
/// tells several instances of one type apart (`otlp/tempo`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    pub kind: String,
    pub name: Option<String>,
}

impl ComponentId {
    /// An id without a name, e.g. `batch`. The type is not validated; use `parse` for user input.
    pub fn new(kind: impl Into<String>) -> Self {
        ComponentId {
            kind: kind.into(),
            name: None,
        }
    }

    /// An id with a name, e.g. `otlp/tempo`. Not validated; use `parse` for user input.
    pub fn with_name(kind: impl Into<String>, name: impl Into<String>) -> Self {
        ComponentId {
            kind: kind.into(),
            name: Some(name.into()),
        }
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}{SEPARATOR}{name}", self.kind),
            None => f.write_str(&self.kind),
        }
    }
}

/// Splits `type[/name]`, trimming spaces around both parts as upstream does.
fn split_id(id: &str) -> Result<(&str, Option<&str>), IdError> {
    let (kind, name) = match id.split_once(SEPARATOR) {
        Some((kind, name)) => (kind.trim(), Some(name.trim())),
        None => (id.trim(), None),
    };
    if kind.is_empty() {
        return Err(match name {
            None => IdError::Empty,
            Some(_) => IdError::EmptyType { id: id.to_string() },
        });
    }
    if name == Some("") {
        return Err(IdError::EmptyName { id: id.to_string() });
    }
    if let Some(name) = name {
        validate_name(id, name)?;
    }
    Ok((kind, name))
}

/// Upstream: `^[^\pZ\pC\pS]+$`, at most 1024 bytes. Whitespace, control characters and the ASCII
/// symbols are checked here; `/`, `-`, `.`, `_`, `:` and `@` are punctuation and allowed.
fn validate_name(id: &str, name: &str) -> Result<(), IdError> {
    if name.len() > MAX_NAME_LEN {
        return Err(IdError::NameTooLong { id: id.to_string() });
    }
    let is_symbol = |c: char| matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '`' | '|' | '~');
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || is_symbol(c))
    {
        return Err(IdError::InvalidName {
            id: id.to_string(),
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Upstream: `^[a-zA-Z][0-9a-zA-Z_]{0,62}$`.
fn is_valid_type(kind: &str) -> bool {
    let mut chars = kind.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && kind.len() <= MAX_TYPE_LEN
}

impl FromStr for ComponentId {
    type Err = IdError;

    fn from_str(id: &str) -> Result<Self, IdError> {
        let (kind, name) = split_id(id)?;
        if !is_valid_type(kind) {
            return Err(IdError::InvalidType {
                id: id.to_string(),
                kind: kind.to_string(),
            });
        }
        Ok(ComponentId {
            kind: kind.to_string(),
            name: name.map(str::to_string),
        })
    }
}

impl Serialize for ComponentId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ComponentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The kind of telemetry a pipeline carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies a pipeline under `service::pipelines`: its signal and an optional name
/// (`traces`, `traces/sampled`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineId {
    pub signal: Signal,
    pub name: Option<String>,
}

impl PipelineId {
    pub fn new(signal: Signal) -> Self {
        PipelineId { signal, name: None }
    }

    pub fn with_name(signal: Signal, name: impl Into<String>) -> Self {
        PipelineId {
            signal,
            name: Some(name.into()),
        }
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}{SEPARATOR}{name}", self.signal),
            None => write!(f, "{}", self.signal),
        }
    }
}

impl FromStr for PipelineId {
    type Err = IdError;

    fn from_str(id: &str) -> Result<Self, IdError> {
        let (signal, name) = split_id(id)?;
        let signal = match signal {
            "traces" => Signal::Traces,
            "metrics" => Signal::Metrics,
            "logs" => Signal::Logs,
            other => {
                return Err(IdError::UnknownSignal {
                    id: id.to_string(),
                    signal: other.to_string(),
                })
            }
        };
        Ok(PipelineId {
            signal,
            name: name.map(str::to_string),
        })
    }
}

impl Serialize for PipelineId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PipelineId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_ids_parse_and_display() {
        let id: ComponentId = "otlp".parse().unwrap();
        assert_eq!(id, ComponentId::new("otlp"));
        assert_eq!(id.to_string(), "otlp");

        let id: ComponentId = " otlp / tempo ".parse().unwrap();
        assert_eq!(id, ComponentId::with_name("otlp", "tempo"));
        assert_eq!(id.to_string(), "otlp/tempo");

        // Everything after the first `/` is the name, slashes included.
        let id: ComponentId = "filelog/a/b".parse().unwrap();
        assert_eq!(id.name.as_deref(), Some("a/b"));

        let id: ComponentId = "memory_limiter/gw-1.eu:x@y".parse().unwrap();
        assert_eq!(id.kind, "memory_limiter");
    }

    #[test]
    fn component_id_errors_match_upstream() {
        let err = |s: &str| s.parse::<ComponentId>().unwrap_err().to_string();
        assert_eq!(err(""), "id must not be empty");
        assert_eq!(err("   "), "id must not be empty");
        assert_eq!(
            err("/x"),
            "in \"/x\" id: the part before / should not be empty"
        );
        assert_eq!(
            err("otlp/"),
            "in \"otlp/\" id: the part after / should not be empty"
        );
        assert!(err("1otlp").contains("invalid character(s) in type \"1otlp\""));
        assert!(err("ot-lp").contains("invalid character(s) in type \"ot-lp\""));
        assert!(err(&"a".repeat(64)).contains("invalid character(s) in type"));
        assert!(err("otlp/a b").contains("invalid character(s) in name \"a b\""));
        assert!(err("otlp/a$b").contains("invalid character(s) in name"));
        assert!(err(&format!("otlp/{}", "n".repeat(1025))).contains("longer than 1024"));
    }

    #[test]
    fn pipeline_ids() {
        let id: PipelineId = "traces/sampled".parse().unwrap();
        assert_eq!(id, PipelineId::with_name(Signal::Traces, "sampled"));
        assert_eq!(id.to_string(), "traces/sampled");
        assert_eq!("logs".parse::<PipelineId>().unwrap().signal, Signal::Logs);
        let err = "spans".parse::<PipelineId>().unwrap_err().to_string();
        assert!(err.contains("unknown signal \"spans\""), "{err}");
        assert!(err.contains("traces, metrics or logs"), "{err}");
    }

    #[test]
    fn ids_order_by_kind_then_name() {
        let mut ids: Vec<ComponentId> = ["otlp/b", "batch", "otlp", "otlp/a"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        ids.sort();
        let shown: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["batch", "otlp", "otlp/a", "otlp/b"]);
    }
}
