//! The `all-in-one` command: collector (gateway pipeline) and store in one process, on
//! embedded defaults — the first thing a new user runs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use threadline_collector::registry::Registry;
use threadline_collector::service::Service;
use threadline_config::ConfigSources;
use threadline_store::exporter::StoreExporterFactory;
use threadline_store::Store;

const DEFAULT_PIPELINE: &str = include_str!("defaults/all-in-one.yaml");

#[derive(Args)]
pub struct AllInOneArgs {
    /// Directory of the store's WAL and blocks.
    #[arg(long, default_value = "threadline-data")]
    data: PathBuf,
    /// Collector config replacing the built-in pipeline (its exporter must be `store`).
    #[arg(long = "config", value_name = "URI")]
    configs: Vec<String>,
    /// Override a key of the collector config, e.g. `processors::tail_sampling::decision_wait=2s`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Override a key of the store config, e.g. `server::http_listen_port=3201`.
    #[arg(long = "store-set", value_name = "KEY=VALUE")]
    store_sets: Vec<String>,
    /// How long a SIGTERM/SIGINT may take to decide pending traces and write them.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    threadline_config::settings::duration::parse(text).map_err(|e| e.to_string())
}

pub async fn run(args: AllInOneArgs) -> anyhow::Result<()> {
    let mut store_sets = vec![
        format!(
            "storage::trace::wal::path={}",
            args.data.join("wal").display()
        ),
        format!(
            "storage::trace::local::path={}",
            args.data.join("blocks").display()
        ),
    ];
    store_sets.extend(args.store_sets.iter().cloned());
    let store_config = crate::store::load(&[], &store_sets)?;

    let configs = if args.configs.is_empty() {
        vec![format!("yaml:{DEFAULT_PIPELINE}")]
    } else {
        args.configs.clone()
    };
    let root = threadline_config::resolve(&ConfigSources {
        configs,
        sets: args.sets.clone(),
    })
    .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    let pipeline = threadline_config::parse_collector_config(&root)
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;

    crate::collector::init_default_logging();
    let store = Store::open(store_config.clone())
        .await
        .context("cannot open the store")?;
    let mut registry = Registry::builtin();
    registry.add_exporter(Box::new(StoreExporterFactory {
        store: store.clone(),
    }));
    threadline_collector::service::validate(&registry, &pipeline)
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    let service = Service::start(&registry, &pipeline)
        .await
        .context("cannot start the collector pipeline")?;
    let api_address = format!(
        "{}:{}",
        store_config.server.http_listen_address, store_config.server.http_listen_port
    );
    let api = crate::store::serve_api(store.clone(), &api_address).await?;

    let otlp = |protocol: &str| {
        root.get("receivers")
            .and_then(|r| r.get("otlp"))
            .and_then(|o| o.get("protocols"))
            .and_then(|p| p.get(protocol))
            .and_then(|p| p.get("endpoint"))
            .and_then(|e| e.as_str())
            .unwrap_or("-")
            .to_string()
    };
    println!("Threadline all-in-one is running.");
    println!("  UI:          http://{api_address}/");
    println!(
        "  send OTLP:   grpc {}   http http://{}/v1/traces",
        otlp("grpc"),
        otlp("http")
    );
    println!(
        "  query:       http://{api_address} (Grafana: add a Tempo data source with this URL)"
    );
    println!("  in terminal: threadline search '{{ status = error }}' --api http://{api_address}");
    println!("  data:        {}", args.data.display());
    tracing::info!("Everything is ready. Begin running and processing data.");

    crate::collector::wait_for_signal().await;
    tracing::info!("shutting down: deciding pending traces and writing them");
    service.shutdown(args.shutdown_timeout).await;
    api.abort();
    store.flush_and_close().await.context("writing the head")?;
    tracing::info!("shutdown complete");
    Ok(())
}
