//! The `file_storage` extension: a directory on local disk where components keep data that must
//! survive a restart, each in a subdirectory of its own. Exporters use it for a persistent sending
//! queue (`sending_queue::storage: file_storage`).

mod config;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use threadline_config::ComponentId;

pub use config::{check_writable_directory, Compaction, FileStorageConfig, DEFAULT_DIRECTORY};

use crate::component::{About, Component, CreateContext, Extension, Kind, TypedExtensionFactory};

pub struct FileStorageFactory;

impl TypedExtensionFactory for FileStorageFactory {
    type Config = FileStorageConfig;

    fn kind(&self) -> &'static str {
        "file_storage"
    }

    fn about(&self) -> About {
        About {
            upstream: "contrib filestorage",
            metrics: &[],
        }
    }

    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: FileStorageConfig,
    ) -> anyhow::Result<Arc<dyn Extension>> {
        Ok(Arc::new(
            FileStorage::open(&config).with_context(|| ctx.path(Kind::Extension))?,
        ))
    }
}

/// A running `file_storage` extension.
pub struct FileStorage {
    directory: PathBuf,
    timeout: Duration,
}

impl FileStorage {
    /// Checks (or, with `create_directory`, creates) the directory.
    pub fn open(config: &FileStorageConfig) -> anyhow::Result<FileStorage> {
        if config.create_directory {
            create_directory(&config.directory, config.permissions().unwrap_or(0o750))
                .with_context(|| {
                    format!("directory: cannot create {}", config.directory.display())
                })?;
        }
        check_writable_directory(&config.directory)
            .map_err(|message| anyhow::anyhow!("directory: {message}"))?;
        Ok(FileStorage {
            directory: config.directory.clone(),
            timeout: config.timeout.0,
        })
    }

    /// The extension's directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The `timeout` setting.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The private subdirectory of one use of the storage by one component, created if missing:
    /// `<directory>/<kind>_<type>[_<name>]_<purpose>`, e.g. `exporter_otlp_traces` for the traces
    /// queue of exporter `otlp`, `exporter_otlp_backup_traces` for `otlp/backup`. Named after the
    /// owner's id, so two components never share one.
    pub fn component_directory(
        &self,
        kind: &str,
        owner: &ComponentId,
        purpose: &str,
    ) -> std::io::Result<PathBuf> {
        let mut name = format!("{}_{}", sanitize(kind), sanitize(&owner.kind));
        if let Some(owner_name) = &owner.name {
            name = format!("{name}_{}", sanitize(owner_name));
        }
        name = format!("{name}_{}", sanitize(purpose));
        let dir = self.directory.join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

/// Keeps a file name portable: anything but ASCII letters, digits, `.`, `-` and `_` becomes
/// `~XX` (its bytes in hex), as upstream does for ids with unusual characters.
fn sanitize(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for ch in part.chars() {
        if ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_') {
            out.push(ch);
        } else {
            let mut buf = [0u8; 4];
            for byte in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("~{byte:02X}"));
            }
        }
    }
    out
}

fn create_directory(dir: &Path, mode: u32) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    builder.create(dir)
}

#[async_trait]
impl Component for FileStorage {
    async fn shutdown(&self, _deadline: Instant) {
        // Files are written and synced by their owners; nothing is buffered here.
    }
}

impl Extension for FileStorage {
    fn as_any(&self) -> &dyn Any {
        self
    }
}
