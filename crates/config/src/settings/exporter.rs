//! Exporter helper settings (upstream `exporterhelper` and `configretry`): `timeout`,
//! `retry_on_failure` and `sending_queue`.

use std::fmt;

use serde::{Deserialize, Deserializer};

use super::duration::GoDuration;
use crate::{ComponentId, ConfigError};

/// `timeout`: how long one attempt to send may take.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutSettings {
    /// Time allowed for one send attempt; 0 means no limit. Default 5s.
    pub timeout: GoDuration,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        TimeoutSettings {
            timeout: GoDuration::from_secs(5),
        }
    }
}

/// `retry_on_failure`: exponential backoff for failed sends.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Retry failed sends. Default true.
    pub enabled: bool,
    /// Wait after the first failure. Default 5s.
    pub initial_interval: GoDuration,
    /// Random jitter applied to each wait, as a fraction (0 to 1). Default 0.5.
    pub randomization_factor: f64,
    /// Factor by which the wait grows after each attempt. Default 1.5.
    pub multiplier: f64,
    /// Upper bound of a single wait. Default 30s.
    pub max_interval: GoDuration,
    /// Give up on data after this long; 0 retries forever. Default 300s.
    pub max_elapsed_time: GoDuration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            enabled: true,
            initial_interval: GoDuration::from_secs(5),
            randomization_factor: 0.5,
            multiplier: 1.5,
            max_interval: GoDuration::from_secs(30),
            max_elapsed_time: GoDuration::from_secs(300),
        }
    }
}

impl RetrySettings {
    /// Upstream's `BackOffConfig.Validate`; paths are relative to `retry_on_failure`.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if !self.enabled {
            return errors;
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            errors.push(ConfigError::new(
                "randomization_factor",
                format!("must be within [0, 1], got {}", self.randomization_factor),
            ));
        }
        if self.multiplier.is_nan() || self.multiplier < 0.0 {
            errors.push(ConfigError::new(
                "multiplier",
                format!("must be non-negative, got {}", self.multiplier),
            ));
        }
        if !self.max_elapsed_time.is_zero() {
            if self.max_elapsed_time < self.initial_interval {
                errors.push(ConfigError::new(
                    "max_elapsed_time",
                    "must not be less than initial_interval",
                ));
            }
            if self.max_elapsed_time < self.max_interval {
                errors.push(ConfigError::new(
                    "max_elapsed_time",
                    "must not be less than max_interval",
                ));
            }
        }
        errors
    }
}

/// What `queue_size` and batch sizes count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueSizer {
    /// Incoming requests (batches as received). The cheapest to measure.
    #[default]
    Requests,
    /// Spans, data points or log records.
    Items,
    /// Serialized bytes.
    Bytes,
}

impl QueueSizer {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueSizer::Requests => "requests",
            QueueSizer::Items => "items",
            QueueSizer::Bytes => "bytes",
        }
    }
}

impl fmt::Display for QueueSizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for QueueSizer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.trim() {
            "requests" => Ok(QueueSizer::Requests),
            "items" => Ok(QueueSizer::Items),
            "bytes" => Ok(QueueSizer::Bytes),
            other => Err(serde::de::Error::custom(format!(
                "unknown sizer {other:?}; expected one of: requests, items, bytes"
            ))),
        }
    }
}

/// `sending_queue`: buffers data in front of an exporter so that the pipeline is not held up
/// by a slow or unavailable backend.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Queue data before sending. Default true.
    pub enabled: bool,
    /// Workers sending from the queue concurrently. Default 10.
    pub num_consumers: usize,
    /// Capacity, counted in `sizer` units. Default 1000.
    pub queue_size: u64,
    /// What `queue_size` counts: `requests` (default), `items` or `bytes`.
    pub sizer: QueueSizer,
    /// Wait for space when the queue is full instead of refusing data. Default false.
    pub block_on_overflow: bool,
    /// Older name of `block_on_overflow`.
    pub blocking: bool,
    /// Make the sender wait until its data is exported. Default false.
    pub wait_for_result: bool,
    /// Id of a storage extension (e.g. `file_storage`) that makes the queue persistent, so that
    /// queued data survives a restart. Default: in memory.
    pub storage: Option<ComponentId>,
    /// Batch queued data before sending. Default: no batching; `batch: {}` uses the defaults.
    pub batch: Option<BatchSettings>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
            sizer: QueueSizer::Requests,
            block_on_overflow: false,
            blocking: false,
            wait_for_result: false,
            storage: None,
            batch: None,
        }
    }
}

impl QueueSettings {
    /// Whether a full queue makes senders wait (`block_on_overflow`, or the older `blocking`).
    pub fn blocks_when_full(&self) -> bool {
        self.block_on_overflow || self.blocking
    }

    /// Upstream's queue validation; paths are relative to `sending_queue`.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if !self.enabled {
            return errors;
        }
        if self.num_consumers == 0 {
            errors.push(ConfigError::new("num_consumers", "must be positive"));
        }
        if self.queue_size == 0 {
            errors.push(ConfigError::new("queue_size", "must be positive"));
        }
        if let Some(batch) = &self.batch {
            errors.extend(
                batch
                    .validate()
                    .into_iter()
                    .map(|e| ConfigError::new(crate::join_path("batch", &e.path), e.message)),
            );
        }
        errors
    }
}

/// `sending_queue::batch`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Send a batch after this long even if it is small. Default 200ms.
    pub flush_timeout: GoDuration,
    /// Send as soon as a batch reaches this size. Default 8192.
    pub min_size: u64,
    /// Split batches larger than this; 0 means no limit. Default 0.
    pub max_size: u64,
    /// What the sizes count. Default: `items`.
    pub sizer: Option<QueueSizer>,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            flush_timeout: GoDuration::from_millis(200),
            min_size: 8192,
            max_size: 0,
            sizer: None,
        }
    }
}

impl BatchSettings {
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.flush_timeout.is_zero() {
            errors.push(ConfigError::new("flush_timeout", "must be positive"));
        }
        if self.max_size > 0 && self.max_size < self.min_size {
            errors.push(ConfigError::new(
                "max_size",
                "must be greater than or equal to min_size",
            ));
        }
        errors
    }
}
