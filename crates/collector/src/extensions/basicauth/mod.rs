//! The `basicauth` extension, as upstream's `basicauthextension`: HTTP Basic authentication.
//!
//! - Server side (`htpasswd`): a receiver using it refuses requests without an `Authorization:
//!   Basic ...` header of a listed user and password (HTTP 401, gRPC UNAUTHENTICATED). The
//!   htpasswd file and inline lines are read at start; see [`crate::auth::htpasswd`] for the
//!   hash schemes.
//! - Client side (`client_auth`): exporters send `Authorization: Basic base64(user:password)`.

mod config;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use async_trait::async_trait;
use http::{HeaderMap, HeaderValue};

pub use config::{BasicAuthConfig, ClientAuthSettings, HtpasswdSettings};

use crate::auth::{
    basic_header, header_value, parse_basic, AuthError, ClientAuthenticator, Htpasswd,
    ServerAuthenticator,
};
use crate::client::ClientInfo;
use crate::component::{About, Component, CreateContext, Extension, Kind, TypedExtensionFactory};

pub struct BasicAuthFactory;

impl TypedExtensionFactory for BasicAuthFactory {
    type Config = BasicAuthConfig;

    fn kind(&self) -> &'static str {
        "basicauth"
    }

    fn about(&self) -> About {
        About {
            upstream: "contrib basicauthextension",
            metrics: &[],
        }
    }

    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: BasicAuthConfig,
    ) -> anyhow::Result<Arc<dyn Extension>> {
        let path = ctx.path(Kind::Extension);
        Ok(Arc::new(BasicAuth::new(&config).with_context(|| path)?))
    }
}

/// A running `basicauth` extension: a server or a client authenticator.
pub enum BasicAuth {
    Server(Arc<HtpasswdServer>),
    Client(Arc<BasicClient>),
}

impl BasicAuth {
    pub fn new(config: &BasicAuthConfig) -> anyhow::Result<BasicAuth> {
        if let (true, Some(htpasswd)) = (config.is_server(), &config.htpasswd) {
            let mut sources = Vec::new();
            if !htpasswd.file.is_empty() {
                let text = std::fs::read_to_string(&htpasswd.file)
                    .with_context(|| format!("htpasswd::file: cannot open {:?}", htpasswd.file))?;
                sources.push(("htpasswd::file", text));
            }
            sources.push(("htpasswd::inline", htpasswd.inline.clone()));
            let users = Htpasswd::parse(&sources).map_err(|e| anyhow::anyhow!(e))?;
            return Ok(BasicAuth::Server(Arc::new(HtpasswdServer { users })));
        }
        let client = config
            .client_auth
            .as_ref()
            .context("no credential source provided")?;
        let value = HeaderValue::from_str(&basic_header(&client.username, &client.password))
            .context("client_auth: the credentials cannot be sent in a header")?;
        Ok(BasicAuth::Client(Arc::new(BasicClient { value })))
    }
}

/// Checks requests against htpasswd users.
pub struct HtpasswdServer {
    users: Htpasswd,
}

impl ServerAuthenticator for HtpasswdServer {
    fn authenticate(&self, headers: &mut HeaderMap) -> Result<(), AuthError> {
        let value = header_value(headers, "authorization")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| AuthError::Unauthenticated("no basic auth provided".into()))?;
        let (user, password) = parse_basic(value)?;
        if self.users.matches(&user, &password) {
            Ok(())
        } else {
            Err(AuthError::Unauthenticated("invalid credentials".into()))
        }
    }
}

/// Sends fixed credentials.
pub struct BasicClient {
    value: HeaderValue,
}

impl ClientAuthenticator for BasicClient {
    fn apply(&self, headers: &mut HeaderMap, _client: &ClientInfo) -> Result<(), String> {
        headers.insert(http::header::AUTHORIZATION, self.value.clone());
        Ok(())
    }
}

#[async_trait]
impl Component for BasicAuth {
    async fn shutdown(&self, _deadline: Instant) {}
}

impl Extension for BasicAuth {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn server_authenticator(&self) -> Option<Arc<dyn ServerAuthenticator>> {
        match self {
            BasicAuth::Server(server) => Some(server.clone()),
            BasicAuth::Client(_) => None,
        }
    }

    fn client_authenticator(&self) -> Option<Arc<dyn ClientAuthenticator>> {
        match self {
            BasicAuth::Client(client) => Some(client.clone()),
            BasicAuth::Server(_) => None,
        }
    }
}
