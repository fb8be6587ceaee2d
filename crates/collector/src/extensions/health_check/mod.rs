//! The `health_check` extension: answers 200 while every pipeline is running, 503 otherwise, so that
//! Kubernetes probes and load balancers see the collector's real state.

mod config;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub use config::HealthCheckConfig;

use crate::component::{
    About, Component, CreateContext, Extension, HealthState, Kind, TypedExtensionFactory,
};
use crate::server;

pub struct HealthCheckFactory;

impl TypedExtensionFactory for HealthCheckFactory {
    type Config = HealthCheckConfig;

    fn kind(&self) -> &'static str {
        "health_check"
    }

    fn about(&self) -> About {
        About {
            upstream: "contrib healthcheckextension",
            metrics: &[],
        }
    }

    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: HealthCheckConfig,
    ) -> anyhow::Result<Arc<dyn Extension>> {
        let path = ctx.path(Kind::Extension);
        let listener = server::bind(&config.endpoint, &path)?;
        let tls = config
            .tls
            .as_ref()
            .map(|tls| tls.build_rustls())
            .transpose()
            .map_err(|e| anyhow::anyhow!("{path}::tls: {e}"))?
            .map(|tls| server::with_alpn(tls, &[b"h2", b"http/1.1"]));
        let state = Arc::new(Answer {
            health: ctx.host.health.clone(),
            started: SystemTime::now(),
            started_instant: Instant::now(),
            bodies: config.response_body,
        });
        let app = axum::Router::new().route(
            &config.path,
            axum::routing::get(move || {
                let state = state.clone();
                async move { state.respond() }
            }),
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::serve_http(
            listener,
            tls,
            app,
            shutdown.clone(),
            Duration::from_secs(1),
            Default::default(),
        ));
        Ok(Arc::new(HealthCheck {
            shutdown,
            task: Mutex::new(Some(task)),
        }))
    }
}

struct Answer {
    health: Arc<HealthState>,
    started: SystemTime,
    started_instant: Instant,
    bodies: Option<config::ResponseBody>,
}

impl Answer {
    fn respond(&self) -> axum::response::Response {
        let ready = self.health.is_ready();
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        if let Some(bodies) = &self.bodies {
            let body = if ready {
                &bodies.healthy
            } else {
                &bodies.unhealthy
            };
            return (status, body.clone()).into_response();
        }
        let since = humantime_rfc3339(self.started);
        let body = serde_json::json!({
            "status": if ready { "Server available" } else { "Server not available" },
            "upSince": since,
            "uptime": format!("{:.3}s", self.started_instant.elapsed().as_secs_f64()),
        });
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// RFC 3339 in UTC, without pulling in a date crate for one field.
fn humantime_rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

pub struct HealthCheck {
    shutdown: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[async_trait]
impl Component for HealthCheck {
    async fn shutdown(&self, deadline: Instant) {
        self.shutdown.cancel();
        if let Some(task) = self.task.lock().await.take() {
            let _ = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), task)
                .await;
        }
    }
}

impl Extension for HealthCheck {
    fn as_any(&self) -> &dyn Any {
        self
    }
}
