//! The `file_storage` extension: configuration, directory checks, per-component directories.

use std::time::Duration;

use super::*;
use threadline_config::ConfigErrors;

use crate::component::decode_config;
use crate::exporters::testkit::{yaml, TestContext};

fn decode(text: &str) -> Result<FileStorageConfig, ConfigErrors> {
    decode_config(&yaml(text), "extensions::file_storage")
}

#[test]
fn decodes_the_upstream_style_sample() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("created/by/extension");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/extensions/file_storage/testdata/config.yaml"
    ))
    .unwrap()
    .replace("DIRECTORY", &target.display().to_string());
    let config = decode(&text).unwrap();
    assert_eq!(config.directory, target);
    assert_eq!(config.timeout.as_duration(), Duration::from_secs(2));
    assert!(config.create_directory && config.fsync);
    assert_eq!(config.permissions(), Some(0o700));
    assert!(config.compaction.on_start);
    assert_eq!(config.compaction.max_transaction_size, Some(2048));

    let storage = FileStorage::open(&config).unwrap();
    assert!(target.is_dir(), "create_directory creates the directory");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    assert_eq!(storage.directory(), target);
    assert_eq!(storage.timeout(), Duration::from_secs(2));
}

#[test]
fn defaults_are_upstreams() {
    let config: FileStorageConfig =
        threadline_config::decode_component(&yaml("{}"), "extensions::file_storage").unwrap();
    assert_eq!(
        config.directory,
        std::path::Path::new("/var/lib/otelcol/file_storage")
    );
    assert_eq!(config.timeout.as_duration(), Duration::from_secs(1));
    assert!(!config.create_directory);
    assert!(!config.fsync);
}

#[test]
fn a_missing_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = decode(&format!("directory: {}", missing.display()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("extensions::file_storage::directory"), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("create_directory"), "{err}");

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = decode(&format!("directory: {}", file.display()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a directory"), "{err}");

    let err = decode(&format!(
        "directory: {}\ndirectory_permissions: rwx",
        dir.path().display()
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("directory_permissions"), "{err}");
    let err = decode(&format!(
        "directory: {}\ncompaction: {{bogus: 1}}",
        dir.path().display()
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn each_component_gets_its_own_directory() {
    let dir = tempfile::tempdir().unwrap();
    let tc = TestContext::new("file_storage");
    let extension = FileStorageFactory
        .create(
            &tc.ctx(),
            decode(&format!("directory: {}", dir.path().display())).unwrap(),
        )
        .unwrap();
    let storage = extension.as_any().downcast_ref::<FileStorage>().unwrap();

    let plain = storage
        .component_directory("exporter", &"otlp".parse().unwrap(), "traces")
        .unwrap();
    let named = storage
        .component_directory("exporter", &"otlp/backup".parse().unwrap(), "traces")
        .unwrap();
    let odd = storage
        .component_directory("exporter", &"otlphttp/a:b".parse().unwrap(), "traces")
        .unwrap();
    assert_eq!(plain, dir.path().join("exporter_otlp_traces"));
    assert_eq!(named, dir.path().join("exporter_otlp_backup_traces"));
    assert_eq!(odd, dir.path().join("exporter_otlphttp_a~3Ab_traces"));
    assert!(plain.is_dir() && named.is_dir() && odd.is_dir());
}
