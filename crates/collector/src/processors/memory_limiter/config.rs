//! Configuration of the `memory_limiter` processor, as upstream's `memorylimiterprocessor`.

use serde::Deserialize;
use threadline_config::settings::GoDuration;
use threadline_config::ConfigError;

use crate::component::ComponentConfig;

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryLimiterConfig {
    /// How often memory is measured. Required, greater than zero (upstream recommends 1s).
    #[serde(default)]
    pub check_interval: GoDuration,
    /// Hard limit on the process's resident memory, in MiB. Data is refused from
    /// `limit_mib - spike_limit_mib` (the soft limit) on.
    #[serde(default)]
    pub limit_mib: u64,
    /// Headroom between the soft and the hard limit, in MiB. Default 20% of `limit_mib`.
    #[serde(default)]
    pub spike_limit_mib: u64,
    /// Hard limit as a percentage of the memory available to the process (the cgroup limit when
    /// set, else the machine's). Used when `limit_mib` is 0.
    #[serde(default)]
    pub limit_percentage: u64,
    /// Headroom as a percentage of available memory, used with `limit_percentage`.
    #[serde(default)]
    pub spike_limit_percentage: u64,
}

/// The limits in bytes, resolved against the memory available to this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub hard: u64,
    pub soft: u64,
}

impl MemoryLimiterConfig {
    /// Resolves the configured limits; `available` is the memory the process may use in total.
    pub fn limits(&self, available: Option<u64>) -> Result<Limits, String> {
        if self.limit_mib > 0 {
            let hard = self.limit_mib * MIB;
            let spike = if self.spike_limit_mib > 0 {
                self.spike_limit_mib * MIB
            } else {
                hard / 5
            };
            return Ok(Limits {
                hard,
                soft: hard - spike.min(hard),
            });
        }
        let available =
            available.ok_or("limit_percentage needs the total memory, which could not be read")?;
        let hard = available / 100 * self.limit_percentage;
        let spike = available / 100 * self.spike_limit_percentage;
        Ok(Limits {
            hard,
            soft: hard.saturating_sub(spike),
        })
    }
}

impl ComponentConfig for MemoryLimiterConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }

    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut error = |path: &str, message: String| {
            errors.push(ConfigError {
                path: path.into(),
                message,
            })
        };
        if self.check_interval.0.is_zero() {
            error(
                "check_interval",
                "must be greater than zero (for example 1s)".into(),
            );
        }
        if self.limit_mib == 0 && self.limit_percentage == 0 {
            error(
                "limit_mib",
                "one of limit_mib or limit_percentage must be greater than zero".into(),
            );
        }
        if self.limit_mib > 0 && self.spike_limit_mib >= self.limit_mib {
            error(
                "spike_limit_mib",
                format!(
                    "must be smaller than limit_mib ({}), got {}",
                    self.limit_mib, self.spike_limit_mib
                ),
            );
        }
        if self.limit_mib == 0 {
            if self.limit_percentage > 100 {
                error(
                    "limit_percentage",
                    format!("must be between 1 and 100, got {}", self.limit_percentage),
                );
            }
            if self.limit_percentage > 0 && self.spike_limit_percentage >= self.limit_percentage {
                error(
                    "spike_limit_percentage",
                    format!(
                        "must be smaller than limit_percentage ({}), got {}",
                        self.limit_percentage, self.spike_limit_percentage
                    ),
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
