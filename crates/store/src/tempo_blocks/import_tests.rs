//! The importer against damaged and foreign blocks: each fails alone, with a clear error, and
//! Tempo's files stay as they were.

use std::collections::HashSet;
use std::path::Path;

use super::import_tempo_blocks;
use crate::Store;

const TENANT: &str = "single-tenant";
const DAMAGED_DATA: &str = "0b6f2a4e-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
const DAMAGED_META: &str = "1b6f2a4e-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
const OLDER_FORMAT: &str = "2b6f2a4e-1c3d-4e5f-8a9b-0c1d2e3f4a5b";

fn meta(block_id: &str, format: &str) -> String {
    format!(
        r#"{{"format":"{format}","blockID":"{block_id}","tenantID":"{TENANT}","totalObjects":1}}"#
    )
}

fn write(blocks: &Path, block_id: &str, file: &str, bytes: &[u8]) {
    let dir = blocks.join(TENANT).join(block_id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), bytes).unwrap();
}

fn snapshot(blocks: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for block in [DAMAGED_DATA, DAMAGED_META, OLDER_FORMAT] {
        let dir = blocks.join(TENANT).join(block);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    files
}

#[test]
fn tempo_block_ids_are_uuids_and_threadlines_are_not() {
    assert!(super::is_tempo_block_id(
        "b27b0e53-66a0-4505-afd6-434ae3cd4a10"
    ));
    assert!(!super::is_tempo_block_id("0000018c2b3e4f5a-1a2b3c4d"));
    assert!(!super::is_tempo_block_id(
        "b27b0e53-66a0-4505-afd6-434ae3cd4a1g"
    ));
    assert!(!super::is_tempo_block_id("tempo-imports"));
}

#[tokio::test]
async fn a_damaged_tempo_block_fails_alone_and_is_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = dir.path().join("blocks");
    write(
        &blocks,
        DAMAGED_DATA,
        "meta.json",
        meta(DAMAGED_DATA, "vParquet4").as_bytes(),
    );
    write(
        &blocks,
        DAMAGED_DATA,
        "data.parquet",
        b"PAR1 not a parquet file PAR1",
    );
    write(&blocks, DAMAGED_DATA, "meta.compacted.json", b"{}");
    write(&blocks, DAMAGED_META, "meta.json", b"{\"format\": \"vParq");
    write(
        &blocks,
        OLDER_FORMAT,
        "meta.json",
        meta(OLDER_FORMAT, "vParquet2").as_bytes(),
    );
    write(&blocks, OLDER_FORMAT, "index", b"tempo's index");
    let before = snapshot(&blocks);

    let config = crate::tests::config(
        dir.path(),
        "target: querier\ncompactor: {compaction: {compacted_block_retention: 0s}}",
    );
    let store = Store::open(config).await.unwrap();
    let objects = store.objects();
    let mut skip = HashSet::new();
    let pass = import_tempo_blocks(&store, &objects, None, "test", &mut skip)
        .await
        .expect("a damaged block does not fail the pass");
    assert!(pass.imported.is_empty());
    let mut failed: Vec<_> = pass
        .failed
        .iter()
        .map(|f| (f.block_id.as_str(), f.error.as_str()))
        .collect();
    failed.sort();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0].0, DAMAGED_DATA);
    assert!(
        failed[0].1.starts_with("Tempo block data.parquet:"),
        "{}",
        failed[0].1
    );
    assert_eq!(failed[1].0, DAMAGED_META);
    assert!(
        failed[1].1.starts_with("Tempo block meta.json:"),
        "{}",
        failed[1].1
    );
    let marker = std::fs::read_to_string(
        blocks
            .join(super::IMPORTS_PREFIX)
            .join(TENANT)
            .join(format!("{DAMAGED_DATA}.json")),
    )
    .unwrap();
    assert!(marker.contains(r#""state":"failed""#), "{marker}");

    // Not tried again by this process; the store lists, compacts and serves as before, and
    // leaves Tempo's blocks (even one Tempo marked compacted) alone.
    let again = import_tempo_blocks(&store, &objects, None, "test", &mut skip)
        .await
        .unwrap();
    assert!(again.failed.is_empty() && again.imported.is_empty());
    store.compact_and_expire().await.unwrap();
    assert!(store.block_metas().is_empty());
    assert_eq!(snapshot(&blocks), before, "Tempo's files were modified");
    store.flush_and_close().await.unwrap();
}
