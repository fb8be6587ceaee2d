//! Configuration of the `batch` processor, as upstream's `batchprocessor`.

use serde::Deserialize;
use threadline_config::settings::GoDuration;
use threadline_config::ConfigError;

use crate::component::ComponentConfig;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// How long a batch may wait for more spans before it is sent regardless of size. Default 200ms;
    /// 0 sends every batch as soon as it reaches `send_batch_size` only when it does, otherwise at once.
    #[serde(default = "default_timeout")]
    pub timeout: GoDuration,
    /// Number of spans after which a batch is sent regardless of the timeout. Default 8192.
    /// It is a trigger, not a cap: a batch may hold more (see `send_batch_max_size`).
    #[serde(default = "default_send_batch_size")]
    pub send_batch_size: u32,
    /// Upper bound on spans per sent batch; larger batches are split. 0 (default) means no bound.
    /// Must be 0 or at least `send_batch_size`.
    #[serde(default)]
    pub send_batch_max_size: u32,
    /// Client metadata keys (case-insensitive) to batch by: one batch per distinct combination of
    /// their values, sent on with those values as its client metadata. Needs the receivers'
    /// `include_metadata: true`. Default: none (one batch, no metadata downstream).
    #[serde(default)]
    pub metadata_keys: Vec<String>,
    /// Distinct metadata value combinations batched over the process's life at most (only with
    /// `metadata_keys`); data of further combinations is refused. 0 = no limit. Default 1000.
    #[serde(default = "default_metadata_cardinality_limit")]
    pub metadata_cardinality_limit: u32,
}

fn default_timeout() -> GoDuration {
    GoDuration(std::time::Duration::from_millis(200))
}

fn default_send_batch_size() -> u32 {
    8192
}

fn default_metadata_cardinality_limit() -> u32 {
    1000
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            timeout: default_timeout(),
            send_batch_size: default_send_batch_size(),
            send_batch_max_size: 0,
            metadata_keys: Vec::new(),
            metadata_cardinality_limit: default_metadata_cardinality_limit(),
        }
    }
}

impl ComponentConfig for BatchConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }

    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.send_batch_max_size > 0 && self.send_batch_max_size < self.send_batch_size {
            errors.push(ConfigError {
                path: "send_batch_max_size".into(),
                message: format!(
                    "must be 0 or greater than or equal to send_batch_size ({}), got {}",
                    self.send_batch_size, self.send_batch_max_size
                ),
            });
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
