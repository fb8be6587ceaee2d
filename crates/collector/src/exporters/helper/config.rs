//! From the shared `retry_on_failure` / `sending_queue` settings to what the helper runs with.

use std::path::PathBuf;

use threadline_config::settings::{QueueSettings, RetrySettings};
use threadline_config::{ComponentId, ConfigError};

use super::{QueuePolicy, RetryPolicy};
use crate::component::CreateContext;
use crate::extensions::file_storage::FileStorage;

/// Why the sending queue could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "sending_queue::storage: {id} is not a running file_storage extension (configure it under \
         extensions and list it in service::extensions)"
    )]
    NoStorage { id: ComponentId },
    #[error("sending_queue::storage: cannot create the queue directory under {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sending_queue::storage: cannot open the persistent queue in {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `retry_on_failure` as the retry loop uses it.
pub fn retry_policy(settings: &RetrySettings) -> RetryPolicy {
    RetryPolicy {
        enabled: settings.enabled,
        initial_interval: settings.initial_interval.as_duration(),
        max_interval: settings.max_interval.as_duration(),
        max_elapsed_time: settings.max_elapsed_time.non_zero(),
        multiplier: settings.multiplier,
        randomization_factor: settings.randomization_factor,
    }
}

/// `sending_queue` as the helper uses it, with the directory of a persistent queue resolved through
/// the `file_storage` extension named by `storage` (a subdirectory of its own for this exporter).
pub fn queue_policy(
    settings: &QueueSettings,
    ctx: &CreateContext<'_>,
) -> Result<QueuePolicy, QueueError> {
    let directory = match (&settings.storage, settings.enabled) {
        (Some(id), true) => {
            let storage = ctx
                .host
                .extension::<FileStorage>(id)
                .ok_or_else(|| QueueError::NoStorage { id: id.clone() })?;
            let dir = storage
                .component_directory("exporter", ctx.id, "traces")
                .map_err(|source| QueueError::Directory {
                    path: storage.directory().to_path_buf(),
                    source,
                })?;
            Some(dir)
        }
        _ => None,
    };
    Ok(QueuePolicy {
        enabled: settings.enabled,
        num_consumers: settings.num_consumers,
        queue_size: usize::try_from(settings.queue_size).unwrap_or(usize::MAX),
        sizer: settings.sizer,
        block_on_overflow: settings.blocks_when_full(),
        directory,
    })
}

/// Checks of `sending_queue` and `retry_on_failure` for an exporter's `validate`: upstream's rules,
/// plus the options Threadline does not implement. Paths are relative to the exporter.
pub fn validate(queue: &QueueSettings, retry: &RetrySettings) -> Vec<ConfigError> {
    let mut errors: Vec<ConfigError> = queue
        .validate()
        .into_iter()
        .map(|e| within("sending_queue", e))
        .collect();
    errors.extend(
        retry
            .validate()
            .into_iter()
            .map(|e| within("retry_on_failure", e)),
    );
    if queue.enabled {
        if queue.batch.is_some() {
            errors.push(ConfigError::new(
                "sending_queue::batch",
                "batching in the sending queue is not supported: use the batch processor",
            ));
        }
        if queue.wait_for_result {
            errors.push(ConfigError::new(
                "sending_queue::wait_for_result",
                "is not supported: to make the pipeline wait for the backend, disable the queue \
                 (sending_queue::enabled: false)",
            ));
        }
    }
    errors
}

fn within(section: &str, error: ConfigError) -> ConfigError {
    ConfigError::new(
        threadline_config::join_path(section, &error.path),
        error.message,
    )
}
