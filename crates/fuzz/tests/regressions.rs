//! Every input kept under `regressions/<target>/` (crashes once found by `bench/fuzz.sh`, and
//! hand-made hostile cases) and every seed under `seeds/<target>/` runs through its target's
//! checks on each CI run.

use std::path::Path;

use threadline_fuzz::TARGETS;

#[test]
fn every_kept_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    for (name, check) in TARGETS {
        for folder in ["regressions", "seeds"] {
            let dir = root.join(folder).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            files.sort();
            for file in files {
                let input = std::fs::read(&file).expect("readable");
                // A panic names the file: the input to look at.
                eprintln!("{name}: {}", file.display());
                check(&input);
                ran += 1;
            }
        }
    }
    assert!(
        ran >= TARGETS.len(),
        "only {ran} inputs found: every target keeps seeds"
    );
}
