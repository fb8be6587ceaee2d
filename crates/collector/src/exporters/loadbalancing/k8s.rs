//! The `k8s` resolver: the ready addresses of a Service's EndpointSlices, watched through the
//! Kubernetes API (list, then watch; kube's watcher re-lists after a broken watch).

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::config::K8sResolverConfig;

/// Watches the Service's EndpointSlices with `client` and publishes its endpoints until `stop`.
pub async fn run(
    exporter: String,
    config: K8sResolverConfig,
    client: Client,
    sender: watch::Sender<Vec<String>>,
    stop: CancellationToken,
) {
    let (name, namespace) = match config.service.split_once('.') {
        Some((name, namespace)) => (name.to_string(), namespace.to_string()),
        None => (
            config.service.clone(),
            client.default_namespace().to_string(),
        ),
    };
    let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    let selector = format!("kubernetes.io/service-name={name}");
    let stream = watcher::watcher(api, watcher::Config::default().labels(&selector));
    futures::pin_mut!(stream);
    // Slices by name; during a re-list, the new set is built aside and swapped in at the end.
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut relisting: Option<BTreeMap<String, EndpointSlice>> = None;
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = stop.cancelled() => return,
        };
        let Some(event) = event else { return };
        match event {
            Ok(Event::Apply(slice)) => {
                slices.insert(slice_name(&slice), slice);
            }
            Ok(Event::Delete(slice)) => {
                slices.remove(&slice_name(&slice));
            }
            Ok(Event::Init) => relisting = Some(BTreeMap::new()),
            Ok(Event::InitApply(slice)) => {
                relisting
                    .get_or_insert_with(BTreeMap::new)
                    .insert(slice_name(&slice), slice);
                continue;
            }
            Ok(Event::InitDone) => slices = relisting.take().unwrap_or_default(),
            Err(err) => {
                // The watcher retries by itself; the last known backends stay in use.
                tracing::warn!(exporter = %exporter, service = %config.service, error = %err, "watching EndpointSlices failed");
                tokio::time::sleep(
                    config
                        .timeout
                        .as_duration()
                        .max(std::time::Duration::from_millis(100)),
                )
                .await;
                continue;
            }
        }
        let endpoints = endpoints_of(&slices, &config, &name, &namespace);
        sender.send_if_modified(|current| {
            if *current == endpoints {
                return false;
            }
            tracing::info!(exporter = %exporter, service = %config.service, ?endpoints, "backends changed");
            *current = endpoints;
            true
        });
    }
}

fn slice_name(slice: &EndpointSlice) -> String {
    slice.metadata.name.clone().unwrap_or_default()
}

/// Every ready address (or hostname) of the slices, once per configured port, sorted.
pub fn endpoints_of(
    slices: &BTreeMap<String, EndpointSlice>,
    config: &K8sResolverConfig,
    service: &str,
    namespace: &str,
) -> Vec<String> {
    let mut endpoints = Vec::new();
    for slice in slices.values() {
        for endpoint in &slice.endpoints {
            // As kube-proxy: an endpoint is ready unless it says it is not.
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            let hosts: Vec<String> = match (&endpoint.hostname, config.return_hostnames) {
                (Some(hostname), true) => vec![format!("{hostname}.{service}.{namespace}")],
                _ => endpoint.addresses.clone(),
            };
            for host in hosts {
                for port in &config.ports {
                    endpoints.push(if host.contains(':') {
                        format!("[{host}]:{port}")
                    } else {
                        format!("{host}:{port}")
                    });
                }
            }
        }
    }
    endpoints.sort();
    endpoints.dedup();
    endpoints
}
