//! The `collector` and `validate` commands.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use threadline_collector::reference;
use threadline_collector::registry::{list, Registry};
use threadline_collector::service::{self, Service};
use threadline_config::{CollectorConfig, ConfigSources};
use threadline_store::exporter::StoreExporterFactory;
use threadline_store::generator::processor::GeneratorProcessorFactory;
use threadline_store::Store;

/// The config used when no `--config` is given.
const DEFAULT_CONFIG: &str = include_str!("defaults/collector.yaml");

#[derive(Args)]
pub struct ConfigArgs {
    /// Config to load: a file path, `file:PATH`, `env:VAR` or `yaml:INLINE`. Repeat to merge several
    /// (later ones win). Without any, the built-in default config is used.
    #[arg(long = "config", value_name = "URI")]
    configs: Vec<String>,
    /// Override one key, e.g. `--set exporters::otlp::endpoint=gateway:4317`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// How long a SIGTERM/SIGINT may take to flush batches and queues before the process exits.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    threadline_config::settings::duration::parse(text).map_err(|e| e.to_string())
}

/// Every component type the binary runs, for every command: the collector's, plus the `store`
/// exporter (bound to `store` in the processes that own one), so that `validate`, `components`,
/// `collector`, `store` and `all-in-one` accept and reject the same configs.
pub fn registry(store: Option<Arc<Store>>) -> Registry {
    let mut registry = Registry::builtin();
    registry.add_exporter(Box::new(match &store {
        Some(store) => StoreExporterFactory::new(store.clone()),
        None => StoreExporterFactory::without_store(),
    }));
    registry.add_processor(Box::new(match store {
        Some(store) => GeneratorProcessorFactory::new(store),
        None => GeneratorProcessorFactory::without_store(),
    }));
    registry
}

/// The `store` exporters a config's pipelines use: only processes with an embedded store run them.
pub fn store_exporters(config: &CollectorConfig) -> Vec<String> {
    let mut ids: Vec<String> = config
        .service
        .pipelines
        .values()
        .flat_map(|p| p.exporters.iter())
        .filter(|id| id.kind == "store")
        .map(|id| id.to_string())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn load(args: &ConfigArgs) -> anyhow::Result<(CollectorConfig, Vec<service::ConfigWarning>)> {
    let configs = if args.configs.is_empty() {
        vec![format!("yaml:{DEFAULT_CONFIG}")]
    } else {
        args.configs.clone()
    };
    let sources = ConfigSources {
        configs,
        sets: args.sets.clone(),
    };
    let root = threadline_config::resolve(&sources)
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    service::load(&registry(None), &root)
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))
}

pub fn validate(args: ConfigArgs) -> anyhow::Result<()> {
    let (config, warnings) = load(&args)?;
    for warning in warnings {
        eprintln!("warning: {}: {}", warning.path, warning.message);
    }
    for id in store_exporters(&config) {
        eprintln!(
            "note: exporters::{id}: writes into an embedded store: run this config with \
             `threadline all-in-one --config ...` (`threadline collector` has no store)"
        );
    }
    println!("configuration is valid");
    Ok(())
}

#[derive(Args)]
pub struct ComponentsArgs {
    /// Write the component reference (one markdown page per component: its fields with type,
    /// default and description, and its metrics) into DIR, default `docs/components`.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = reference::DOCS_DIR)]
    pub docs: Option<PathBuf>,
}

pub fn components(args: ComponentsArgs) -> anyhow::Result<()> {
    let registry = registry(None);
    if let Some(dir) = args.docs {
        let written = reference::write_pages(&registry, &dir).with_context(|| {
            format!(
                "cannot write the component reference into {}",
                dir.display()
            )
        })?;
        println!("wrote {} pages into {}", written.len(), dir.display());
        return Ok(());
    }
    println!("receivers:  {}", list(&registry.receivers));
    println!("processors: {}", list(&registry.processors));
    println!("exporters:  {}", list(&registry.exporters));
    println!("extensions: {}", list(&registry.extensions));
    Ok(())
}

pub async fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let (config, warnings) = load(&args)?;
    if let Some(id) = store_exporters(&config).first() {
        anyhow::bail!(
            "exporters::{id}: the store exporter writes into a store embedded in this process, \
             which `threadline collector` does not run: use `threadline all-in-one --config ...`, \
             or send to a store with the otlp exporter"
        );
    }
    init_logging(&config);
    for warning in warnings {
        tracing::warn!(path = %warning.path, "{}", warning.message);
    }
    let registry = registry(None);
    let service = Service::start(&registry, &config)
        .await
        .context("cannot start the collector")?;
    tracing::info!("Everything is ready. Begin running and processing data.");
    wait_for_signal().await;
    tracing::info!(timeout = ?args.shutdown_timeout, "shutting down: flushing batches and queues");
    service.shutdown(args.shutdown_timeout).await;
    tracing::info!("shutdown complete");
    Ok(())
}

pub(crate) async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Console logs at info level (or as `RUST_LOG` says), for commands without a collector config.
pub(crate) fn init_default_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Structured logs as `service::telemetry::logs` asks: level and console or JSON encoding, to stderr.
fn init_logging(config: &CollectorConfig) {
    let logs = &config.service.telemetry.logs;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(logs.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if logs.encoding.is_json() {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use threadline_collector::reference::{stale_pages, DOCS_DIR, REGENERATE};

    #[test]
    fn committed_component_reference_is_current() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(DOCS_DIR);
        let stale = stale_pages(&super::registry(None), &dir);
        assert!(
            stale.is_empty(),
            "the component reference is stale:\n  {}\nregenerate it with `{REGENERATE}` and \
             commit {DOCS_DIR}",
            stale.join("\n  ")
        );
    }
}
