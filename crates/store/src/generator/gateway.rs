//! The scrape endpoint of a gateway's generator (`threadline collector` has no store API to
//! serve it from): `GET /metrics` on the processor's `endpoint`, in Prometheus' text format.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::header;
use tokio_util::sync::CancellationToken;

use super::Generator;

pub struct ScrapeServer {
    shutdown: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The page: every tenant's series (labelled with their tenant, as the store's scrape page
/// without a chosen tenant), with the labels the registry config adds on the way out.
pub fn page(generator: &Generator) -> String {
    super::exposition::render(generator, &generator.labelled_tenants())
}

impl ScrapeServer {
    /// Binds at once, so that a taken port fails the start of the pipeline, not a later scrape.
    pub fn start(addr: SocketAddr, generator: Arc<Generator>) -> anyhow::Result<ScrapeServer> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let generator = generator.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        page(&generator),
                    )
                }
            }),
        );
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "metrics_generator scrape endpoint stopped");
            }
        });
        tracing::info!(%addr, "metrics_generator: series served at /metrics");
        Ok(ScrapeServer {
            shutdown,
            task: Mutex::new(Some(task)),
        })
    }

    pub async fn stop(&self) {
        self.shutdown.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
