//! Resolvers: where the backends are. Each publishes the current sorted endpoint list
//! (`host:port`) on a watch channel.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::config::{with_default_port, DnsResolverConfig, ResolverConfig};

/// Starts the configured resolver; the list it publishes is never empty once resolved, except
/// when a DNS name has no records.
pub fn start(
    exporter: &str,
    config: &ResolverConfig,
    stop: CancellationToken,
) -> anyhow::Result<watch::Receiver<Vec<String>>> {
    if let Some(list) = &config.static_list {
        let mut endpoints = list
            .hostnames
            .iter()
            .map(|h| with_default_port(h).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        endpoints.sort();
        endpoints.dedup();
        let (_, receiver) = watch::channel(endpoints);
        return Ok(receiver);
    }
    if let Some(dns) = &config.dns {
        let port: u16 = dns
            .port
            .parse()
            .map_err(|_| anyhow::anyhow!("resolver::dns::port: {:?} is not a port", dns.port))?;
        let (sender, receiver) = watch::channel(Vec::new());
        tokio::spawn(run_dns(
            exporter.to_string(),
            dns.clone(),
            port,
            sender,
            stop,
        ));
        return Ok(receiver);
    }
    #[cfg(not(feature = "k8s"))]
    if config.k8s.is_some() {
        anyhow::bail!("resolver::k8s: {}", threadline_config::built_without("k8s"));
    }
    #[cfg(feature = "k8s")]
    if let Some(k8s) = &config.k8s {
        let (sender, receiver) = watch::channel(Vec::new());
        let exporter = exporter.to_string();
        let k8s = k8s.clone();
        tokio::spawn(async move {
            // In-cluster service account, or KUBECONFIG / ~/.kube/config outside a cluster.
            match kube::Client::try_default().await {
                Ok(client) => super::k8s::run(exporter, k8s, client, sender, stop).await,
                Err(err) => {
                    tracing::error!(exporter = %exporter, error = %err, "cannot reach the Kubernetes API: no backends")
                }
            }
        });
        return Ok(receiver);
    }
    anyhow::bail!("no supported resolver configured")
}

async fn run_dns(
    exporter: String,
    config: DnsResolverConfig,
    port: u16,
    sender: watch::Sender<Vec<String>>,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(config.interval.as_duration());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.cancelled() => return,
        }
        match resolve(&config.hostname, port, config.timeout.as_duration()).await {
            Ok(endpoints) => {
                sender.send_if_modified(|current| {
                    if *current == endpoints {
                        return false;
                    }
                    tracing::info!(exporter = %exporter, hostname = %config.hostname, ?endpoints, "backends changed");
                    *current = endpoints;
                    true
                });
            }
            // Keep the last known backends: a DNS hiccup must not empty the ring.
            Err(err) => {
                tracing::warn!(exporter = %exporter, hostname = %config.hostname, error = %err, "DNS resolution failed")
            }
        }
    }
}

/// The sorted `ip:port` endpoints of every A/AAAA record of `hostname`.
pub async fn resolve(hostname: &str, port: u16, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let lookup = tokio::net::lookup_host((hostname, port));
    let addresses = if timeout.is_zero() {
        lookup.await?
    } else {
        tokio::time::timeout(timeout, lookup)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))??
    };
    let mut endpoints: Vec<String> = addresses.map(|a: SocketAddr| a.to_string()).collect();
    endpoints.sort();
    endpoints.dedup();
    Ok(endpoints)
}
