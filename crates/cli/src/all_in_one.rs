//! The `all-in-one` command: collector (gateway pipeline) and store in one process, on
//! embedded defaults — the first thing a new user runs.
//!
//! Its config is checked as `threadline validate` checks it, before anything is opened or bound.
//! With the store's `multitenancy_enabled`, the tenant must survive the pipeline as client
//! metadata (see [`crate::tenancy`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use threadline_collector::component::decode_config;
use threadline_collector::processors::tail_sampling::TailSamplingConfig;
use threadline_collector::service::Service;
use threadline_config::{CollectorConfig, ConfigSources};
use threadline_store::Store;

use crate::tenancy;

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

/// Response header of all-in-one's HTTP API: seconds a trace is held by the pipeline's
/// `tail_sampling` (its `decision_wait`) before it reaches the store, so that `threadline search`
/// can say why a fresh trace is not found yet.
pub const DECISION_WAIT_HEADER: &str = "threadline-decision-wait-seconds";

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

    let built_in = args.configs.is_empty();
    let configs = if built_in {
        vec![format!("yaml:{DEFAULT_PIPELINE}")]
    } else {
        args.configs.clone()
    };
    let mut root = threadline_config::resolve(&ConfigSources {
        configs,
        sets: args.sets.clone(),
    })
    .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    // The store's `auth` guards ingest too: the collector's receivers check credentials with
    // it, and it sets X-Scope-OrgID to the credential's tenant (kept to the store as below).
    let mut registry = crate::collector::registry(None);
    if let Some(auth) = &store_config.auth {
        let auth =
            threadline_store::auth::TenantAuth::new(auth).context("invalid configuration: auth")?;
        registry.add_extension(Box::new(threadline_store::auth::StoreAuthFactory(
            Arc::new(auth),
        )));
        guard_receivers_with_store_auth(&mut root)?;
    }
    // The same checks as `threadline validate`, before anything is opened or bound.
    // Its warnings are for collectors deployed in tiers (replicas, agents), not for one process.
    let (mut pipeline, _) = threadline_collector::service::load(&registry, &root)
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    if crate::collector::store_exporters(&pipeline).is_empty() {
        anyhow::bail!(
            "invalid configuration:\nservice::pipelines: no pipeline exports to the store: \
             add `exporters: {{store: {{}}}}` and list `store` in a traces pipeline's exporters"
        );
    }
    if store_config.multitenancy_enabled {
        if built_in {
            tenancy::keep_tenant(&mut pipeline);
        } else {
            tenancy::check_tenant_kept(&pipeline).map_err(|e| {
                anyhow::anyhow!(
                    "invalid configuration for multitenancy_enabled (the store exporter reads \
                     the tenant from each request's X-Scope-OrgID):\n{e}"
                )
            })?;
        }
    }
    let decision_wait = decision_wait_secs(&pipeline);

    crate::collector::init_default_logging();
    let api_address = format!(
        "{}:{}",
        store_config.server.http_listen_address, store_config.server.http_listen_port
    );
    // Bound first: 503 "starting" until the store has replayed its WAL.
    let (starting, opener) = threadline_store::api_admission::until_open();
    let api = crate::store::serve_router(starting, &api_address).await?;
    let store = Store::open(store_config.clone())
        .await
        .context("cannot open the store")?;
    let mut registry = crate::collector::registry(Some(store.clone()));
    if let Some(auth) = store.auth() {
        registry.add_extension(Box::new(threadline_store::auth::StoreAuthFactory(
            auth.clone(),
        )));
    }
    let service = Service::start(&registry, &pipeline)
        .await
        .context("cannot start the collector pipeline")?;
    opener.open(api_router(store.clone(), decision_wait));

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
    if let Some(wait) = decision_wait {
        println!(
            "  note:        a trace is stored about {wait}s after its first span (tail_sampling decision_wait)"
        );
    }
    println!("  data:        {}", args.data.display());
    tracing::info!("Everything is ready. Begin running and processing data.");

    crate::collector::wait_for_signal().await;
    tracing::info!("shutting down: deciding pending traces and writing them");
    service.shutdown(args.shutdown_timeout).await;
    api.abort();
    store.flush_and_close().await.context("writing the head")?;
    if let Some(generator) = store.generator() {
        let deadline = std::time::Instant::now() + args.shutdown_timeout;
        generator.flush_remote_write(deadline).await;
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// Puts every protocol of the collector config's receivers behind the store's authenticator
/// and runs it as an extension (a receiver naming an authenticator of its own is refused: the
/// store's `auth` decides who writes which tenant).
fn guard_receivers_with_store_auth(root: &mut serde_yaml_ng::Value) -> anyhow::Result<()> {
    use serde_yaml_ng::Value;
    let id = threadline_store::auth::EXTENSION_ID;
    let Value::Mapping(root) = root else {
        return Ok(());
    };
    if let Some(receivers) = root.get_mut("receivers") {
        crate::store::require_store_auth(receivers, "receivers")?;
    }
    let extensions = root
        .entry(Value::from("extensions"))
        .or_insert_with(|| Value::Mapping(Default::default()));
    if let Value::Mapping(extensions) = extensions {
        extensions.insert(Value::from(id), Value::Mapping(Default::default()));
    }
    let service = root
        .entry(Value::from("service"))
        .or_insert_with(|| Value::Mapping(Default::default()));
    if let Value::Mapping(service) = service {
        let listed = service
            .entry(Value::from("extensions"))
            .or_insert_with(|| Value::Sequence(Vec::new()));
        if let Value::Sequence(listed) = listed {
            listed.push(Value::from(id));
        }
    }
    Ok(())
}

/// Tempo's HTTP API of the embedded store, each response telling how long the pipeline holds
/// traces before storing them (see [`DECISION_WAIT_HEADER`]).
fn api_router(store: Arc<Store>, decision_wait: Option<u64>) -> axum::Router {
    let mut router = threadline_store::api::router(store);
    if let Some(seconds) = decision_wait {
        let value = axum::http::HeaderValue::from(seconds);
        router = router.layer(axum::middleware::map_response(
            move |mut response: axum::response::Response| {
                let value = value.clone();
                async move {
                    response.headers_mut().insert(DECISION_WAIT_HEADER, value);
                    response
                }
            },
        ));
    }
    router
}

/// The longest `decision_wait` of the `tail_sampling` processors on the way to the store, in
/// whole seconds (rounded up).
fn decision_wait_secs(config: &CollectorConfig) -> Option<u64> {
    tenancy::store_path(config)
        .into_iter()
        .filter(|(section, id)| *section == "processors" && id.kind == "tail_sampling")
        .filter_map(|(_, id)| {
            let value = config.processors.get(&id)?;
            // Validated already; a config that does not decode has no wait to tell.
            let decoded: TailSamplingConfig =
                decode_config(value, &format!("processors::{id}")).ok()?;
            Some(decoded.decision_wait.0.as_secs_f64().ceil() as u64)
        })
        .max()
}
