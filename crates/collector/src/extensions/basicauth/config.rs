//! Configuration of the `basicauth` extension, as upstream's `basicauthextension`.

use serde::Deserialize;
use threadline_config::ConfigError;

use crate::component::ComponentConfig;

/// Either `htpasswd` (server side: receivers check requests) or `client_auth` (client side:
/// exporters send the credentials), not both.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The accepted users, htpasswd-style (`user:hash` lines; bcrypt or plain text).
    #[serde(default)]
    pub htpasswd: Option<HtpasswdSettings>,
    /// The credentials exporters send.
    #[serde(default)]
    pub client_auth: Option<ClientAuthSettings>,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HtpasswdSettings {
    /// Path of an htpasswd file, read at start.
    #[serde(default)]
    pub file: String,
    /// htpasswd lines in the config, read after `file` (an inline user overrides the file's).
    #[serde(default)]
    pub inline: String,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthSettings {
    /// The user name; must not contain `:`.
    #[serde(default)]
    pub username: String,
    /// The password.
    #[serde(default)]
    pub password: String,
}

impl BasicAuthConfig {
    pub fn is_server(&self) -> bool {
        self.htpasswd
            .as_ref()
            .is_some_and(|h| !h.file.is_empty() || !h.inline.is_empty())
    }
}

impl ComponentConfig for BasicAuthConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }

    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let server = self.is_server();
        let client = self.client_auth.is_some();
        if server && client {
            return Err(vec![ConfigError::new(
                "",
                "either server or client auth can be enabled, not both: set htpasswd or \
                 client_auth",
            )]);
        }
        if !server && !client {
            return Err(vec![ConfigError::new(
                "",
                "no credential source provided: set htpasswd (file or inline) or client_auth",
            )]);
        }
        if let Some(client) = &self.client_auth {
            if client.username.contains(':') {
                return Err(vec![ConfigError::new(
                    "client_auth::username",
                    "invalid authorization format: the user name must not contain ':'",
                )]);
            }
        }
        Ok(())
    }
}
