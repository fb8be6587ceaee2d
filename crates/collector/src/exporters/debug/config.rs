//! Configuration of the `debug` exporter, as upstream's `debugexporter`.

use serde::{Deserialize, Deserializer};

use crate::component::ComponentConfig;

/// How much of the data is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// One line per batch with its resource-span and span counts.
    #[default]
    Basic,
    /// One line per span: name, trace id, span id and attributes.
    Normal,
    /// Every field of every resource, scope, span, event and link.
    Detailed,
}

impl<'de> Deserialize<'de> for Verbosity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // Upstream reads telemetry levels case-insensitively.
        match text.to_ascii_lowercase().as_str() {
            "basic" => Ok(Verbosity::Basic),
            "normal" => Ok(Verbosity::Normal),
            "detailed" => Ok(Verbosity::Detailed),
            _ => Err(serde::de::Error::custom(format!(
                "verbosity level {text:?} is not supported (valid values: basic, normal, detailed)"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DebugExporterConfig {
    /// `basic` (default), `normal` or `detailed`.
    #[serde(default)]
    pub verbosity: Verbosity,
    /// Batches written in full each second before sampling starts. Default 2.
    #[serde(default = "default_sampling_initial")]
    pub sampling_initial: u32,
    /// After `sampling_initial` batches in a second, write every Nth. Default 1 (no sampling);
    /// 0 writes nothing more that second.
    #[serde(default = "default_sampling_thereafter")]
    pub sampling_thereafter: u32,
    /// Write through the collector's own log (with its format and level). `false` writes plain text
    /// to standard output. Default `true`.
    #[serde(default = "default_true")]
    pub use_internal_logger: bool,
}

fn default_sampling_initial() -> u32 {
    2
}

fn default_sampling_thereafter() -> u32 {
    1
}

fn default_true() -> bool {
    true
}

impl Default for DebugExporterConfig {
    fn default() -> Self {
        DebugExporterConfig {
            verbosity: Verbosity::Basic,
            sampling_initial: default_sampling_initial(),
            sampling_thereafter: default_sampling_thereafter(),
            use_internal_logger: true,
        }
    }
}

impl ComponentConfig for DebugExporterConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }
}
