//! The `store` command: Threadline's trace backend (OTLP in, Tempo's HTTP API out).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_yaml_ng::Value;
use threadline_collector::service::Service;
use threadline_config::{ConfigErrors, ConfigSources};
use threadline_store::{Store, StoreConfig};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct StoreArgs {
    #[command(subcommand)]
    action: Option<StoreAction>,
    /// Store config (Tempo's layout): a file path, `file:PATH`, `env:VAR` or `yaml:INLINE`.
    /// Repeat to merge several. Without any, the built-in defaults are used.
    #[arg(long = "config", value_name = "URI")]
    configs: Vec<String>,
    /// Override one key, e.g. `--set server::http_listen_port=3201`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// How long a SIGTERM/SIGINT may take to finish requests in flight and write the head.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
}

#[derive(clap::Subcommand)]
enum StoreAction {
    /// Rewrite the Tempo blocks (vParquet4) in the store's bucket into Threadline blocks now
    /// and print what was converted (a running store that compacts does it by itself).
    Convert(crate::store_convert::ConvertArgs),
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    threadline_config::settings::duration::parse(text).map_err(|e| e.to_string())
}

pub fn load(configs: &[String], sets: &[String]) -> anyhow::Result<StoreConfig> {
    let mut all = vec![format!("yaml:{}", threadline_store::config::DEFAULT_CONFIG)];
    all.extend(configs.iter().cloned());
    let root = threadline_config::resolve(&ConfigSources {
        configs: all,
        sets: sets.to_vec(),
    })
    .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    let config: StoreConfig = threadline_config::decode_component(&root, "")
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    let errors = config.validate();
    if !errors.is_empty() {
        anyhow::bail!("invalid configuration:\n{}", ConfigErrors(errors));
    }
    Ok(config)
}

/// The collector pipeline that feeds the store: the configured receivers into the `store` exporter.
pub fn ingest_pipeline(
    config: &StoreConfig,
    metrics: &str,
) -> anyhow::Result<threadline_config::CollectorConfig> {
    let mut receivers = Value::Mapping(config.distributor.receivers.clone());
    // As Tempo's distributor, which always reads the tenant of a request: the store exporter
    // finds X-Scope-OrgID in the client metadata.
    crate::tenancy::include_request_metadata(&mut receivers);
    // With `auth`, every protocol checks credentials with the store's own authenticator,
    // which also sets X-Scope-OrgID to the credential's tenant.
    let extensions = if config.auth.is_some() {
        require_store_auth(&mut receivers)?;
        let id = threadline_store::auth::EXTENSION_ID;
        (format!("extensions: {{{id}: {{}}}}\n"), format!("[{id}]"))
    } else {
        (String::new(), "[]".to_string())
    };
    let tree: Value = serde_yaml_ng::from_str(&format!(
        "{}exporters: {{store: {{}}}}\n\
         service:\n  extensions: {}\n  telemetry: {{metrics: {metrics}}}\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [store]}}\n",
        extensions.0, extensions.1
    ))?;
    let mut tree = tree;
    if let Value::Mapping(map) = &mut tree {
        map.insert(Value::from("receivers"), receivers);
    }
    threadline_config::parse_collector_config(&tree)
        .map_err(|e| anyhow::anyhow!("invalid configuration (distributor::receivers):\n{e}"))
}

/// Sets `auth: {authenticator: <the store's>}` on every protocol of every receiver; a receiver
/// that names an authenticator of its own is refused (the store's `auth` decides).
fn require_store_auth(receivers: &mut Value) -> anyhow::Result<()> {
    let Value::Mapping(receivers) = receivers else {
        return Ok(());
    };
    for (name, receiver) in receivers.iter_mut() {
        let Some(Value::Mapping(protocols)) = receiver.get_mut("protocols") else {
            continue;
        };
        for (protocol, settings) in protocols.iter_mut() {
            if let Value::Mapping(settings) = settings {
                if settings.contains_key("auth") {
                    anyhow::bail!(
                        "invalid configuration: distributor::receivers::{}::protocols::{}::auth: \
                         the store's own `auth` section checks its receivers; remove this key",
                        name.as_str().unwrap_or("?"),
                        protocol.as_str().unwrap_or("?")
                    );
                }
                let auth: Value = serde_yaml_ng::from_str(&format!(
                    "{{authenticator: {}}}",
                    threadline_store::auth::EXTENSION_ID
                ))?;
                settings.insert(Value::from("auth"), auth);
            }
        }
    }
    Ok(())
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    if let Some(StoreAction::Convert(convert)) = args.action {
        return crate::store_convert::run(convert).await;
    }
    let config = load(&args.configs, &args.sets)?;
    crate::collector::init_default_logging();
    let address = format!(
        "{}:{}",
        config.server.http_listen_address, config.server.http_listen_port
    );
    // Bound before the store opens: while it replays its WAL, requests get 503 "starting"
    // rather than a refused connection.
    let (starting, opener) = threadline_store::api_admission::until_open();
    let api = serve_router(starting, &address).await?;
    let store = Store::open(config.clone())
        .await
        .context("cannot open the store")?;
    let mut registry = crate::collector::registry(Some(store.clone()));
    if let Some(auth) = store.auth() {
        registry.add_extension(Box::new(threadline_store::auth::StoreAuthFactory(
            auth.clone(),
        )));
    }
    let service = if config.ingests() {
        let pipeline = ingest_pipeline(&config, "{level: none}")?;
        let service = Service::start(&registry, &pipeline)
            .await
            .context("cannot start the OTLP receivers")?;
        Some(service)
    } else {
        None
    };
    opener.open(threadline_store::api::router(store.clone()));
    tracing::info!(api = %address, target = %config.target, "threadline store is ready: Tempo's HTTP API and the web UI on http://{address}/");
    crate::collector::wait_for_signal().await;
    tracing::info!("shutting down: finishing requests and writing the head");
    if let Some(service) = service {
        service.shutdown(args.shutdown_timeout).await;
    }
    api.abort();
    store.flush_and_close().await.context("writing the head")?;
    if let Some(generator) = store.generator() {
        let deadline = std::time::Instant::now() + args.shutdown_timeout;
        generator.flush_remote_write(deadline).await;
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// Serves `router` (the store's API, possibly wrapped) on `address` until the task is aborted.
pub async fn serve_router(
    router: axum::Router,
    address: &str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("server::http_listen_port: cannot listen on {address}"))?;
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(error = %err, "the HTTP API stopped");
        }
    }))
}
