//! The `bearertokenauth` extension, as upstream's `bearertokenauthextension`: a static token
//! (or tokens, or a file of them) in a header (`Authorization: Bearer <token>` by default).
//!
//! - Server side (a receiver's `auth: {authenticator: bearertokenauth/x}`): a request whose
//!   header is not exactly `<scheme> <token>` for one of the tokens is refused before its body
//!   is read: HTTP 401, gRPC UNAUTHENTICATED. Compared in constant time.
//! - Client side (an exporter's `auth`): every request carries the first token.
//! - `filename` is polled every second; a changed file replaces the tokens. A file that cannot
//!   be read keeps the previous tokens (logged). Unlike upstream, blank lines are not tokens, so
//!   a trailing newline never makes `Bearer ` (no token) valid.

mod config;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

pub use config::BearerTokenAuthConfig;

use crate::auth::{
    bearer_matches, header_value, AuthError, ClientAuthenticator, ServerAuthenticator,
};
use crate::client::ClientInfo;
use crate::component::{About, Component, CreateContext, Extension, Kind, TypedExtensionFactory};

/// How often `filename` is checked for changes.
pub const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

pub struct BearerTokenAuthFactory;

impl TypedExtensionFactory for BearerTokenAuthFactory {
    type Config = BearerTokenAuthConfig;

    fn kind(&self) -> &'static str {
        "bearertokenauth"
    }

    fn about(&self) -> About {
        About {
            upstream: "contrib bearertokenauthextension",
            metrics: &[],
        }
    }

    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: BearerTokenAuthConfig,
    ) -> anyhow::Result<Arc<dyn Extension>> {
        let path = ctx.path(Kind::Extension);
        let auth = BearerTokenAuth::start(&config).with_context(|| path.clone())?;
        Ok(Arc::new(auth))
    }
}

/// The header values the extension sends and accepts.
pub struct Tokens {
    header: HeaderName,
    scheme: String,
    /// `<scheme> <token>` for each token.
    values: RwLock<Arc<Vec<String>>>,
}

impl Tokens {
    fn new(header: HeaderName, scheme: String) -> Tokens {
        Tokens {
            header,
            scheme,
            values: RwLock::new(Arc::new(Vec::new())),
        }
    }

    fn set(&self, tokens: impl IntoIterator<Item = String>) {
        let values: Vec<String> = tokens
            .into_iter()
            .map(|token| {
                if self.scheme.is_empty() {
                    token
                } else {
                    format!("{} {token}", self.scheme)
                }
            })
            .collect();
        if let Ok(mut current) = self.values.write() {
            *current = Arc::new(values);
        }
    }

    fn values(&self) -> Arc<Vec<String>> {
        self.values.read().map(|v| v.clone()).unwrap_or_default()
    }
}

/// The tokens of a token file: one per line, trimmed, blank lines left out.
pub fn parse_token_file(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

impl ServerAuthenticator for Tokens {
    fn authenticate(&self, headers: &mut HeaderMap) -> Result<(), AuthError> {
        let presented = header_value(headers, self.header.as_str())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                AuthError::Unauthenticated(format!(
                    "missing or empty authorization header: {}",
                    self.header
                ))
            })?;
        if bearer_matches(presented, &self.values()) {
            Ok(())
        } else {
            Err(AuthError::Unauthenticated(
                "scheme or token does not match".into(),
            ))
        }
    }
}

impl ClientAuthenticator for Tokens {
    fn apply(&self, headers: &mut HeaderMap, _client: &ClientInfo) -> Result<(), String> {
        let values = self.values();
        let first = values
            .first()
            .ok_or_else(|| "bearertokenauth has no token to send".to_string())?;
        let value = HeaderValue::from_str(first)
            .map_err(|_| "the bearer token is not a valid header value".to_string())?;
        headers.insert(self.header.clone(), value);
        Ok(())
    }
}

/// A running `bearertokenauth` extension.
pub struct BearerTokenAuth {
    tokens: Arc<Tokens>,
    stop: CancellationToken,
}

impl BearerTokenAuth {
    /// Loads the tokens (reading `filename` once, failing if it cannot be read) and, with a
    /// file, starts watching it.
    pub fn start(config: &BearerTokenAuthConfig) -> anyhow::Result<BearerTokenAuth> {
        let header = HeaderName::from_bytes(config.header.as_bytes()).context("header")?;
        let tokens = Arc::new(Tokens::new(header, config.scheme.clone()));
        let stop = CancellationToken::new();
        match config.filename() {
            None => tokens.set(config.inline_tokens()),
            Some(filename) => {
                if !config.inline_tokens().is_empty() {
                    tracing::warn!("a filename is specified. Configured token(s) is ignored!");
                }
                let seen = stamp(filename);
                let text = std::fs::read_to_string(filename)
                    .with_context(|| format!("filename: cannot read {filename:?}"))?;
                tokens.set(parse_token_file(&text));
                tokio::spawn(watch_file(
                    filename.to_string(),
                    (seen, text),
                    tokens.clone(),
                    stop.clone(),
                ));
            }
        }
        Ok(BearerTokenAuth { tokens, stop })
    }
}

/// The file's identity for change detection: modification time and length.
fn stamp(path: &str) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Re-reads `path` when its modification time or length changes (a Kubernetes Secret is a
/// symlink swapped to a new file, which changes both), until `stop`.
async fn watch_file(
    path: String,
    (mut last, text): (Option<(SystemTime, u64)>, String),
    tokens: Arc<Tokens>,
    stop: CancellationToken,
) {
    let mut last_text = Some(text);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FILE_CHECK_INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
        let now = stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        match tokio::fs::read_to_string(&path).await {
            Ok(text) if Some(&text) != last_text.as_ref() => {
                tracing::info!(filename = %path, "refresh token");
                tokens.set(parse_token_file(&text));
                last_text = Some(text);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(filename = %path, %error, "cannot read the token file; keeping the previous token(s)")
            }
        }
    }
}

#[async_trait]
impl Component for BearerTokenAuth {
    async fn shutdown(&self, _deadline: Instant) {
        self.stop.cancel();
    }
}

impl Extension for BearerTokenAuth {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn server_authenticator(&self) -> Option<Arc<dyn ServerAuthenticator>> {
        Some(self.tokens.clone())
    }

    fn client_authenticator(&self) -> Option<Arc<dyn ClientAuthenticator>> {
        Some(self.tokens.clone())
    }
}

impl Drop for BearerTokenAuth {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
