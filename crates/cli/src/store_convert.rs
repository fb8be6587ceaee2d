//! `threadline store convert`: rewrites the Tempo blocks of a store's bucket into Threadline
//! blocks once, now, and says what it converted. A store that compacts does the same by itself
//! in the background; both record each block's import in the bucket, so neither converts a
//! block twice.

use std::collections::HashSet;

use anyhow::Context;
use clap::Args;
use threadline_store::tempo_blocks::import_tempo_blocks;
use threadline_store::Store;

#[derive(Args)]
pub struct ConvertArgs {
    /// Store config (the one the store runs with): a file path, `file:PATH`, `env:VAR` or
    /// `yaml:INLINE`. Repeat to merge several.
    #[arg(long = "config", value_name = "URI")]
    configs: Vec<String>,
    /// Override one key, e.g. `--set storage::trace::local::path=/var/tempo/blocks`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Convert only this tenant's blocks.
    #[arg(long)]
    tenant: Option<String>,
}

pub async fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let mut config = crate::store::load(&args.configs, &args.sets)?;
    crate::collector::init_default_logging();
    // A WAL of its own (a running store's is never shared), and no cut, compaction or import
    // loops: this process only appends, cuts and leaves.
    let wal = std::env::temp_dir().join(format!("threadline-store-convert-{}", std::process::id()));
    config.storage.trace.wal.path = wal.clone();
    config.target = "querier".to_string();
    let store = Store::open(config).await.context("cannot open the store")?;
    let objects = store.objects();
    let owner = format!(
        "threadline store convert@{}",
        std::env::var("HOSTNAME").unwrap_or_default()
    );
    let pass = import_tempo_blocks(
        &store,
        &objects,
        args.tenant.as_deref(),
        &owner,
        &mut HashSet::new(),
    )
    .await;
    store
        .flush_and_close()
        .await
        .context("writing the last block")?;
    let pass = pass.context("converting Tempo blocks")?;
    for block in &pass.imported {
        let resumed = if block.resumed {
            format!(
                " (resumed: {} spans were already converted)",
                block.spans_already_present
            )
        } else {
            String::new()
        };
        let rejected = if block.traces_rejected + block.spans_rejected > 0 {
            format!(
                "; left out as invalid OTLP: {} traces, {} spans",
                block.traces_rejected, block.spans_rejected
            )
        } else {
            String::new()
        };
        println!(
            "converted {}/{}: {} traces, {} spans{resumed}{rejected}",
            block.tenant, block.block_id, block.traces, block.spans
        );
    }
    for block in &pass.busy {
        println!("skipped {block}: another process is converting it");
    }
    for block in &pass.failed {
        println!(
            "failed {}/{}: {}",
            block.tenant, block.block_id, block.error
        );
    }
    println!(
        "{} Tempo blocks converted, {} converted before, {} failed",
        pass.imported.len(),
        pass.already_done,
        pass.failed.len()
    );
    if let Err(err) = std::fs::remove_dir_all(&wal) {
        tracing::warn!(path = %wal.display(), error = %err, "cannot remove the convert's WAL");
    }
    if !pass.failed.is_empty() {
        anyhow::bail!("{} Tempo blocks could not be converted", pass.failed.len());
    }
    Ok(())
}
