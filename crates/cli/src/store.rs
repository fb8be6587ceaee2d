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
        require_store_auth(&mut receivers, "distributor::receivers")?;
        let id = threadline_store::auth::EXTENSION_ID;
        (format!("extensions: {{{id}: {{}}}}\n"), format!("[{id}]"))
    } else {
        (String::new(), "[]".to_string())
    };
    raise_grpc_message_limit(&mut receivers);
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
/// that names an authenticator of its own is refused (the store's `auth` decides). `section` is
/// where `receivers` is in the config, for the error.
pub(crate) fn require_store_auth(receivers: &mut Value, section: &str) -> anyhow::Result<()> {
    let Value::Mapping(receivers) = receivers else {
        return Ok(());
    };
    for (name, receiver) in receivers.iter_mut() {
        let Some(Value::Mapping(protocols)) = receiver.get_mut("protocols") else {
            continue;
        };
        for (protocol, settings) in protocols.iter_mut() {
            // `grpc:` with no settings is a protocol on its defaults: guarded too.
            if settings.is_null() {
                *settings = Value::Mapping(Default::default());
            }
            if let Value::Mapping(settings) = settings {
                if settings.contains_key("auth") {
                    anyhow::bail!(
                        "invalid configuration: {section}::{}::protocols::{}::auth: \
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

/// The store's gRPC message limit when its config sets none: 64 MiB rather than the collector's
/// 4 MiB. The seed gateway batches 8192 spans with no `send_batch_max_size`, so a batch can hold
/// 8192 spans plus one incoming request; after an outage its batches are full, 5-8 MB of the load
/// generator's spans, and a 4 MiB limit refuses them for good (`bench/soak.py` lost 20,260 spans
/// that way, dropped by the gateways as RESOURCE_EXHAUSTED). Tempo needs the same limit raised by
/// hand; the store raises it by default. A value in the config wins.
const GRPC_MAX_RECV_MSG_SIZE_MIB: u64 = 64;

/// Sets `max_recv_msg_size_mib` on the `grpc` protocol of every receiver that has none.
fn raise_grpc_message_limit(receivers: &mut Value) {
    let Value::Mapping(receivers) = receivers else {
        return;
    };
    for (_, receiver) in receivers.iter_mut() {
        let Some(Value::Mapping(protocols)) = receiver.get_mut("protocols") else {
            continue;
        };
        let Some(grpc) = protocols.get_mut("grpc") else {
            continue;
        };
        if grpc.is_null() {
            *grpc = Value::Mapping(Default::default());
        }
        if let Value::Mapping(settings) = grpc {
            let key = Value::from("max_recv_msg_size_mib");
            if !settings.contains_key(&key) {
                settings.insert(key, Value::from(GRPC_MAX_RECV_MSG_SIZE_MIB));
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `max_recv_msg_size_mib` of the store's OTLP gRPC receiver for a config built from `sets`.
    fn grpc_limit(sets: &[&str]) -> Option<u64> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let config = load(&[], &sets).expect("valid config");
        let pipeline = ingest_pipeline(&config, "{level: none}").expect("valid pipeline");
        let receiver = pipeline.receivers.values().next()?;
        receiver
            .get("protocols")?
            .get("grpc")?
            .get("max_recv_msg_size_mib")?
            .as_u64()
    }

    #[test]
    fn the_store_takes_gateway_batches_past_4_mib_unless_its_config_sets_a_limit() {
        assert_eq!(grpc_limit(&[]), Some(GRPC_MAX_RECV_MSG_SIZE_MIB));
        assert_eq!(
            grpc_limit(&["distributor::receivers::otlp::protocols::grpc::max_recv_msg_size_mib=4"]),
            Some(4)
        );
    }

    #[test]
    fn every_protocol_goes_behind_the_store_auth_and_one_with_its_own_is_refused() {
        let mut receivers: Value = serde_yaml_ng::from_str(
            "otlp: {protocols: {grpc: , http: {endpoint: 127.0.0.1:4318}}}",
        )
        .unwrap();
        require_store_auth(&mut receivers, "receivers").unwrap();
        for protocol in ["grpc", "http"] {
            let authenticator = &receivers["otlp"]["protocols"][protocol]["auth"]["authenticator"];
            assert_eq!(
                authenticator.as_str(),
                Some(threadline_store::auth::EXTENSION_ID),
                "{protocol}"
            );
        }
        let mut own: Value = serde_yaml_ng::from_str(
            "otlp: {protocols: {grpc: {auth: {authenticator: bearertokenauth}}}}",
        )
        .unwrap();
        let err = require_store_auth(&mut own, "receivers")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("receivers::otlp::protocols::grpc::auth"),
            "{err}"
        );
    }
}
