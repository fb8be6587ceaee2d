//! Configuration of the `health_check` extension, as upstream's `healthcheckextension`.

use serde::Deserialize;
use threadline_config::settings::TlsServerSettings;

use crate::component::ComponentConfig;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Address to serve the health check on. Default `localhost:13133`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// URL path of the check. Default `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Serve over TLS with these certificates.
    #[serde(default)]
    pub tls: Option<TlsServerSettings>,
    /// Custom bodies for the healthy and unhealthy answers (default: a JSON status document).
    #[serde(default)]
    pub response_body: Option<ResponseBody>,
    /// Accepted for compatibility with upstream configs; pipeline health is not checked yet.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub check_collector_pipeline: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseBody {
    /// Body returned with 200 when the collector is ready.
    #[serde(default)]
    pub healthy: String,
    /// Body returned with 503 while it is not.
    #[serde(default)]
    pub unhealthy: String,
}

fn default_endpoint() -> String {
    "localhost:13133".into()
}

fn default_path() -> String {
    "/".into()
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: default_endpoint(),
            path: default_path(),
            tls: None,
            response_body: None,
            check_collector_pipeline: None,
        }
    }
}

impl ComponentConfig for HealthCheckConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }

    fn validate(&self) -> Result<(), Vec<threadline_config::ConfigError>> {
        if !self.path.starts_with('/') {
            return Err(vec![threadline_config::ConfigError {
                path: "path".into(),
                message: format!("must start with '/', got {:?}", self.path),
            }]);
        }
        Ok(())
    }
}
