//! Configuration of the `file_storage` extension, as upstream's (contrib) `filestorage` extension.

use std::path::PathBuf;

use serde::Deserialize;
use threadline_config::settings::GoDuration;
use threadline_config::ConfigError;

use crate::component::ComponentConfig;

/// Upstream's default directory on Linux.
pub const DEFAULT_DIRECTORY: &str = "/var/lib/otelcol/file_storage";

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileStorageConfig {
    /// Where components keep their data, each in its own subdirectory (e.g. the persistent sending
    /// queue of exporter `otlp` in `exporter_otlp_traces`). Must exist and be writable, unless
    /// `create_directory` is set. Default `/var/lib/otelcol/file_storage`.
    #[serde(default = "default_directory")]
    pub directory: PathBuf,
    /// How long to wait for the storage to become available. Default `1s`.
    #[serde(default = "default_timeout")]
    pub timeout: GoDuration,
    /// Create `directory` (and its parents) at start if it does not exist. Default `false`.
    #[serde(default)]
    pub create_directory: bool,
    /// Permissions of a directory created by `create_directory`, as an octal string. Default `0750`.
    #[serde(default = "default_directory_permissions")]
    pub directory_permissions: String,
    /// Accepted for compatibility. Threadline's persistent queue always `fsync`s a request before
    /// accepting it, whatever this says.
    #[serde(default)]
    pub fsync: bool,
    /// Accepted for compatibility; Threadline's storage deletes each request's file once it is sent,
    /// so it never needs compacting.
    #[serde(default)]
    pub compaction: Compaction,
    /// Accepted for compatibility (upstream recreates a corrupted database); damaged queue files are
    /// skipped and deleted individually.
    #[serde(default)]
    pub recreate: bool,
}

/// Upstream's compaction settings: accepted, not needed (see `compaction` above).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Compaction {
    /// Compact at start.
    #[serde(default)]
    pub on_start: bool,
    /// Compact while running when the database shrinks.
    #[serde(default)]
    pub on_rebound: bool,
    /// Where temporary files of a compaction go.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Items moved per transaction during a compaction.
    #[serde(default)]
    pub max_transaction_size: Option<u64>,
    /// Size (MiB) the database must exceed before an online compaction.
    #[serde(default)]
    pub rebound_needed_threshold_mib: Option<u64>,
    /// Size (MiB) the data must shrink below to trigger an online compaction.
    #[serde(default)]
    pub rebound_trigger_threshold_mib: Option<u64>,
    /// How often the online compaction conditions are checked.
    #[serde(default)]
    pub check_interval: Option<GoDuration>,
    /// Remove temporary compaction files left by a crash, at start.
    #[serde(default)]
    pub cleanup_on_start: bool,
}

fn default_directory() -> PathBuf {
    PathBuf::from(DEFAULT_DIRECTORY)
}

fn default_timeout() -> GoDuration {
    GoDuration(std::time::Duration::from_secs(1))
}

fn default_directory_permissions() -> String {
    "0750".into()
}

impl Default for FileStorageConfig {
    fn default() -> Self {
        FileStorageConfig {
            directory: default_directory(),
            timeout: default_timeout(),
            create_directory: false,
            directory_permissions: default_directory_permissions(),
            fsync: false,
            compaction: Compaction::default(),
            recreate: false,
        }
    }
}

impl FileStorageConfig {
    /// `directory_permissions` as a mode.
    pub fn permissions(&self) -> Option<u32> {
        u32::from_str_radix(self.directory_permissions.trim_start_matches("0o"), 8)
            .ok()
            .filter(|mode| *mode <= 0o7777)
    }
}

impl ComponentConfig for FileStorageConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }

    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.directory.as_os_str().is_empty() {
            errors.push(ConfigError {
                path: "directory".into(),
                message: "must not be empty".into(),
            });
        } else if !self.create_directory {
            if let Err(message) = check_writable_directory(&self.directory) {
                errors.push(ConfigError {
                    path: "directory".into(),
                    message,
                });
            }
        }
        if self.permissions().is_none() {
            errors.push(ConfigError {
                path: "directory_permissions".into(),
                message: format!(
                    "{:?} is not an octal file mode such as \"0750\"",
                    self.directory_permissions
                ),
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// `Ok` if `dir` is an existing directory this process can create files in.
pub fn check_writable_directory(dir: &std::path::Path) -> Result<(), String> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "directory {shown} does not exist (create it, or set create_directory: true)"
            ))
        }
        Err(err) => return Err(format!("cannot access directory {shown}: {err}")),
        Ok(meta) if !meta.is_dir() => return Err(format!("{shown} is not a directory")),
        Ok(_) => {}
    }
    // Permission bits do not tell the whole story (read-only mounts, ACLs, root): try it.
    let probe = dir.join(format!(".threadline-write-test-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(err) => Err(format!("directory {shown} is not writable: {err}")),
    }
}
