//! The `headers_setter` extension, as upstream's `headerssetterextension`: a client
//! authenticator that sets headers on exporters' requests, from fixed values or from the
//! request metadata the data arrived with (`from_context`).
//!
//! `from_context` sees what the pipeline carried to the exporter: the receiver must pass
//! headers on (`include_metadata: true`) and a `batch` or `tail_sampling` processor must keep
//! the key (`metadata_keys`), as upstream. The exporter reads it when the request is queued,
//! so it is kept by the in-memory sending queue and retries, but not by a persistent queue
//! (data read back from disk has no metadata) nor by the `loadbalancing` exporter.

mod config;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue};

pub use config::{Action, HeaderConfig, HeadersSetterConfig};

use crate::auth::ClientAuthenticator;
use crate::client::ClientInfo;
use crate::component::{About, Component, CreateContext, Extension, TypedExtensionFactory};

pub struct HeadersSetterFactory;

impl TypedExtensionFactory for HeadersSetterFactory {
    type Config = HeadersSetterConfig;

    fn kind(&self) -> &'static str {
        "headers_setter"
    }

    fn about(&self) -> About {
        About {
            upstream: "contrib headerssetterextension",
            metrics: &[],
        }
    }

    fn create(
        &self,
        _ctx: &CreateContext<'_>,
        config: HeadersSetterConfig,
    ) -> anyhow::Result<Arc<dyn Extension>> {
        Ok(Arc::new(HeadersSetter::new(&config)?))
    }
}

enum Source {
    Value(HeaderValue),
    FromContext {
        key: String,
        default: Option<HeaderValue>,
    },
    None,
}

struct Rule {
    name: HeaderName,
    source: Source,
    action: Action,
}

/// A running `headers_setter` extension.
pub struct HeadersSetter {
    rules: Arc<Rules>,
}

/// The headers to set, in order.
pub struct Rules(Vec<Rule>);

impl HeadersSetter {
    pub fn new(config: &HeadersSetterConfig) -> anyhow::Result<HeadersSetter> {
        let mut rules = Vec::new();
        for (i, header) in config.headers.iter().enumerate() {
            let name = HeaderName::from_bytes(header.key.as_bytes())
                .map_err(|_| anyhow::anyhow!("headers::{i}::key: invalid header name"))?;
            let parse = |value: &str| {
                HeaderValue::from_str(value)
                    .map_err(|_| anyhow::anyhow!("headers::{i}: invalid header value"))
            };
            let source = match (&header.value, &header.from_context) {
                (Some(value), _) => Source::Value(parse(value)?),
                (None, Some(key)) => Source::FromContext {
                    key: key.clone(),
                    default: header.default_value.as_deref().map(parse).transpose()?,
                },
                (None, None) => Source::None,
            };
            rules.push(Rule {
                name,
                source,
                action: header.action,
            });
        }
        Ok(HeadersSetter {
            rules: Arc::new(Rules(rules)),
        })
    }
}

impl ClientAuthenticator for Rules {
    fn apply(&self, headers: &mut HeaderMap, client: &ClientInfo) -> Result<(), String> {
        for rule in &self.0 {
            if rule.action == Action::Delete {
                headers.remove(&rule.name);
                continue;
            }
            let value = match &rule.source {
                Source::Value(value) => Some(value.clone()),
                Source::FromContext { key, default } => client
                    .get(key)
                    .first()
                    .and_then(|v| HeaderValue::from_str(v).ok())
                    .or_else(|| default.clone()),
                Source::None => None,
            };
            let Some(value) = value else { continue };
            let present = headers.contains_key(&rule.name);
            let set = match rule.action {
                Action::Insert => !present,
                Action::Update => present,
                Action::Upsert => true,
                Action::Delete => false,
            };
            if set {
                headers.insert(rule.name.clone(), value);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Component for HeadersSetter {
    async fn shutdown(&self, _deadline: Instant) {}
}

impl Extension for HeadersSetter {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn client_authenticator(&self) -> Option<Arc<dyn ClientAuthenticator>> {
        Some(self.rules.clone())
    }
}
