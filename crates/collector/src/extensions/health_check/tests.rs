//! The health check over a real socket: 503 until the service says ready, 200 after.

use std::time::{Duration, Instant};

use threadline_config::ComponentId;

use super::HealthCheckFactory;
use crate::component::{CreateContext, ExtensionFactory, Host};
use crate::telemetry::Telemetry;
use crate::test_support::free_port;

#[tokio::test]
async fn reports_readiness_on_the_configured_path() {
    let port = free_port();
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&format!(
        "endpoint: 127.0.0.1:{port}\npath: /health/status\n"
    ))
    .unwrap();
    let host = Host::default();
    let telemetry = Telemetry::new("test");
    let id: ComponentId = "health_check".parse().unwrap();
    let ctx = CreateContext {
        id: &id,
        telemetry: &telemetry,
        host: &host,
    };
    let extension = HealthCheckFactory.create(&ctx, &config).unwrap();
    let url = format!("http://127.0.0.1:{port}/health/status");

    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 503);
    host.health.set_ready(true);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["status"], "Server available");
    assert!(body["upSince"].as_str().unwrap().ends_with('Z'));

    let missing = reqwest::get(format!("http://127.0.0.1:{port}/other"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    extension
        .shutdown(Instant::now() + Duration::from_secs(2))
        .await;
    assert!(
        reqwest::get(&url).await.is_err(),
        "still serving after shutdown"
    );
}

#[test]
fn rejects_a_path_without_leading_slash() {
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str("path: health").unwrap();
    let err = HealthCheckFactory
        .validate(&config, "extensions::health_check")
        .unwrap_err();
    assert_eq!(err.0[0].path, "extensions::health_check::path");
}
