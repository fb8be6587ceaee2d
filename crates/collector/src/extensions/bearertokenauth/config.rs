//! Configuration of the `bearertokenauth` extension, as upstream's `bearertokenauthextension`.

use serde::Deserialize;
use threadline_config::ConfigError;

use crate::component::ComponentConfig;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BearerTokenAuthConfig {
    /// Put in front of the token: the header carries `<scheme> <token>`. Default `Bearer`; an
    /// empty scheme sends (and expects) the token alone.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// The token. Exporters send it; receivers accept it.
    #[serde(default)]
    pub token: Option<String>,
    /// Several tokens: receivers accept any of them, exporters send the first. Not together
    /// with `token`.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// A file holding the token(s), one per line (blank lines ignored). Read at start and
    /// again whenever it changes (checked every second), so a rotated token applies without a
    /// restart. Takes precedence over `token` and `tokens`.
    #[serde(default)]
    pub filename: Option<String>,
    /// The header carrying the token. Default `Authorization`.
    #[serde(default = "default_header")]
    pub header: String,
}

fn default_scheme() -> String {
    "Bearer".into()
}

fn default_header() -> String {
    "Authorization".into()
}

fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

impl BearerTokenAuthConfig {
    pub fn filename(&self) -> Option<&str> {
        set(&self.filename)
    }

    /// The configured tokens (not the file's).
    pub fn inline_tokens(&self) -> Vec<String> {
        match set(&self.token) {
            Some(token) => vec![token.to_string()],
            None => self.tokens.clone(),
        }
    }
}

impl ComponentConfig for BearerTokenAuthConfig {
    fn json_schema() -> Option<serde_json::Value> {
        Some(crate::reference::schema_of::<Self>())
    }

    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if set(&self.token).is_none() && self.tokens.is_empty() && self.filename().is_none() {
            errors.push(ConfigError::new(
                "",
                "no bearer token provided: set token, tokens or filename",
            ));
        }
        if set(&self.token).is_some() && !self.tokens.is_empty() {
            errors.push(ConfigError::new(
                "tokens",
                "either tokens or token can be specified, not both",
            ));
        }
        if http::HeaderName::from_bytes(self.header.as_bytes()).is_err() {
            errors.push(ConfigError::new(
                "header",
                format!("{:?} is not a valid header name", self.header),
            ));
        }
        for (key, token) in self
            .tokens
            .iter()
            .map(|t| ("tokens", t.as_str()))
            .chain(set(&self.token).map(|t| ("token", t)))
        {
            if token.is_empty()
                || http::HeaderValue::from_str(&format!("{} {token}", self.scheme)).is_err()
            {
                errors.push(ConfigError::new(
                    key,
                    "a token must be non-empty visible ASCII (it is sent in a header)",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
