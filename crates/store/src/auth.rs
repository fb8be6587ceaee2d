//! Credentials that name a tenant (`auth` in the store config): with it, every request to the
//! HTTP API (and its gRPC streaming search) and every OTLP request to the store's receivers
//! must carry a credential, and is served as that credential's tenant only.
//!
//! ```yaml
//! multitenancy_enabled: true
//! auth:
//!   bearer_tokens:                       # Authorization: Bearer <token>
//!     - {token: "${env:TEAM_A_TOKEN}", tenant: team-a}
//!     - {token_file: /var/run/secrets/team-b/token, tenant: team-b}
//!   basic:                               # Authorization: Basic base64(user:password)
//!     - {username: grafana-b, password: "$2y$10$...", tenant: team-b}   # bcrypt or plain
//! ```
//!
//! - No credential, or one that matches nothing: 401 (gRPC UNAUTHENTICATED).
//! - `X-Scope-OrgID` naming another tenant than the credential's: 403 (PERMISSION_DENIED).
//!   Without the header, the credential's tenant is used (the header is set for the rest of
//!   the request, so the API, the ingest pipeline and the `store` exporter all see it).
//! - `token_file` is read at start and re-read when it changes (checked at most once a second,
//!   on a request), so a rotated token applies without a restart.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{self, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use threadline_collector::auth::{
    constant_time_eq, header_value, parse_basic, AuthError, Htpasswd, ServerAuthenticator,
};
use threadline_config::ConfigError;

/// The header naming the tenant, as Tempo's.
const ORG_ID: &str = "x-scope-orgid";
/// How often token files are checked for changes.
const FILE_CHECK: Duration = Duration::from_secs(1);

/// `auth`: credentials, each mapped to one tenant. Needs `multitenancy_enabled: true`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreAuthConfig {
    /// Bearer tokens (`Authorization: Bearer <token>`), each with its tenant.
    #[serde(default)]
    pub bearer_tokens: Vec<BearerTokenEntry>,
    /// Basic-auth users (`Authorization: Basic ...`), each with its tenant.
    #[serde(default)]
    pub basic: Vec<BasicEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerTokenEntry {
    /// The token.
    #[serde(default)]
    pub token: Option<String>,
    /// A file whose first non-blank line is the token (a Kubernetes Secret), instead of
    /// `token`; re-read when it changes.
    #[serde(default)]
    pub token_file: Option<String>,
    /// The tenant this token reads and writes.
    #[serde(default)]
    pub tenant: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicEntry {
    #[serde(default)]
    pub username: String,
    /// The password as plain text or as a bcrypt hash (`$2y$...`, from `htpasswd -nB`).
    #[serde(default)]
    pub password: String,
    /// The tenant this user reads and writes.
    #[serde(default)]
    pub tenant: String,
}

impl StoreAuthConfig {
    pub fn validate(&self, multitenancy: bool, errors: &mut Vec<ConfigError>) {
        if self.bearer_tokens.is_empty() && self.basic.is_empty() {
            errors.push(ConfigError::new(
                "auth",
                "no credentials: list bearer_tokens and/or basic (or remove auth)",
            ));
        }
        if !multitenancy {
            errors.push(ConfigError::new(
                "auth",
                "auth maps each credential to a tenant: set multitenancy_enabled: true",
            ));
        }
        for (i, entry) in self.bearer_tokens.iter().enumerate() {
            let at = |key: &str| format!("auth::bearer_tokens::{i}::{key}");
            let token = entry.token.as_deref().filter(|t| !t.is_empty());
            let file = entry.token_file.as_deref().filter(|t| !t.is_empty());
            match (token, file) {
                (None, None) => {
                    errors.push(ConfigError::new(at("token"), "set token or token_file"))
                }
                (Some(_), Some(_)) => errors.push(ConfigError::new(
                    at("token_file"),
                    "set token or token_file, not both",
                )),
                _ => {}
            }
            if !crate::api::valid_tenant(&entry.tenant) {
                errors.push(ConfigError::new(
                    at("tenant"),
                    tenant_message(&entry.tenant),
                ));
            }
        }
        for (i, entry) in self.basic.iter().enumerate() {
            let at = |key: &str| format!("auth::basic::{i}::{key}");
            if entry.username.is_empty() || entry.username.contains(':') {
                errors.push(ConfigError::new(
                    at("username"),
                    "a user name is required and must not contain ':'",
                ));
            }
            if entry.password.is_empty() {
                errors.push(ConfigError::new(at("password"), "a password is required"));
            }
            if !crate::api::valid_tenant(&entry.tenant) {
                errors.push(ConfigError::new(
                    at("tenant"),
                    tenant_message(&entry.tenant),
                ));
            }
        }
    }
}

fn tenant_message(tenant: &str) -> String {
    format!("{tenant:?} is not a tenant id: use letters, digits, '-', '_' and '.'")
}

/// A token, from the config or from a file.
struct Token {
    file: Option<String>,
    stamp: Option<(SystemTime, u64)>,
    value: Option<String>,
    tenant: String,
}

/// Checks credentials and maps them to tenants; shared by the API and the ingest receivers.
pub struct TenantAuth {
    tokens: Mutex<(Vec<Token>, Instant)>,
    users: Htpasswd,
    user_tenants: Vec<(String, String)>,
}

fn stamp(path: &str) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_token(path: &str) -> std::io::Result<Option<String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string))
}

impl TenantAuth {
    /// Reads the token files (an unreadable one fails the start, naming it).
    pub fn new(config: &StoreAuthConfig) -> anyhow::Result<TenantAuth> {
        let mut tokens = Vec::new();
        for (i, entry) in config.bearer_tokens.iter().enumerate() {
            let file = entry.token_file.clone().filter(|f| !f.is_empty());
            let value = match &file {
                Some(path) => read_token(path).map_err(|e| {
                    anyhow::anyhow!(
                        "auth::bearer_tokens::{i}::token_file: cannot read {path:?}: {e}"
                    )
                })?,
                None => entry.token.clone(),
            };
            tokens.push(Token {
                stamp: file.as_deref().and_then(stamp),
                file,
                value,
                tenant: entry.tenant.clone(),
            });
        }
        let lines: String = config
            .basic
            .iter()
            .map(|b| format!("{}:{}\n", b.username, b.password))
            .collect();
        let users = Htpasswd::parse(&[("auth::basic", lines)]).map_err(|e| anyhow::anyhow!(e))?;
        Ok(TenantAuth {
            tokens: Mutex::new((tokens, Instant::now())),
            users,
            user_tenants: config
                .basic
                .iter()
                .map(|b| (b.username.clone(), b.tenant.clone()))
                .collect(),
        })
    }

    /// The tenant of the request's credential.
    pub fn tenant(&self, headers: &HeaderMap) -> Result<String, AuthError> {
        let value = header_value(headers, "authorization")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                AuthError::Unauthenticated(
                    "no credentials: send Authorization: Bearer <token> or Basic <user:password>"
                        .into(),
                )
            })?;
        let scheme = value.split(' ').next().unwrap_or_default();
        if scheme.eq_ignore_ascii_case("bearer") {
            let presented = value[scheme.len()..].trim();
            return self
                .token_tenant(presented)
                .ok_or_else(|| AuthError::Unauthenticated("invalid bearer token".into()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, password) = parse_basic(value)?;
            if self.users.matches(&user, &password) {
                if let Some((_, tenant)) = self.user_tenants.iter().rev().find(|(u, _)| *u == user)
                {
                    return Ok(tenant.clone());
                }
            }
            return Err(AuthError::Unauthenticated("invalid credentials".into()));
        }
        Err(AuthError::Unauthenticated(
            "unsupported authorization scheme: use Bearer or Basic".into(),
        ))
    }

    fn token_tenant(&self, presented: &str) -> Option<String> {
        let mut guard = self.tokens.lock().ok()?;
        let (tokens, checked) = &mut *guard;
        if checked.elapsed() >= FILE_CHECK {
            *checked = Instant::now();
            for token in tokens.iter_mut() {
                let Some(path) = token.file.clone() else {
                    continue;
                };
                let now = stamp(&path);
                if now != token.stamp {
                    token.stamp = now;
                    match read_token(&path) {
                        Ok(value) => {
                            tracing::info!(file = %path, tenant = %token.tenant, "reloaded a store token");
                            token.value = value;
                        }
                        Err(error) => {
                            tracing::warn!(file = %path, %error, "cannot re-read a store token; keeping the previous one")
                        }
                    }
                }
            }
        }
        // Every token is compared, so the time taken does not say which one matched.
        let mut found = None;
        for token in tokens.iter() {
            if let Some(value) = &token.value {
                if constant_time_eq(value.as_bytes(), presented.as_bytes()) && found.is_none() {
                    found = Some(token.tenant.clone());
                }
            }
        }
        found
    }
}

impl ServerAuthenticator for TenantAuth {
    /// Accepts a request whose credential's tenant is the one it asks for (or that asks for
    /// none), and sets `X-Scope-OrgID` to that tenant.
    fn authenticate(&self, headers: &mut HeaderMap) -> Result<(), AuthError> {
        let tenant = self.tenant(headers)?;
        let asked: Vec<&str> = headers
            .get_all(ORG_ID)
            .iter()
            .map(|v| v.to_str().unwrap_or("").trim())
            .collect();
        if let Some(other) = asked.iter().find(|asked| **asked != tenant) {
            return Err(AuthError::PermissionDenied(format!(
                "this credential is for tenant {tenant:?}; it cannot use tenant {other:?}"
            )));
        }
        let value = HeaderValue::from_str(&tenant)
            .map_err(|_| AuthError::Unauthenticated("invalid tenant".into()))?;
        headers.insert(ORG_ID, value);
        Ok(())
    }
}

/// The API's middleware: refuses requests `auth` does not accept (plain-text 401/403, as
/// Tempo answers errors) and serves the rest as the credential's tenant.
pub async fn require(
    State(auth): State<std::sync::Arc<TenantAuth>>,
    mut request: Request,
    next: Next,
) -> Response {
    // The UI's own files and the readiness probe carry no data.
    let path = request.uri().path();
    if path == "/ready" || path == "/" || path.starts_with("/ui/") {
        return next.run(request).await;
    }
    match auth.authenticate(request.headers_mut()) {
        Ok(()) => next.run(request).await,
        Err(err) => {
            let status = err.http_status();
            let mut response = (status, err.to_string()).into_response();
            if status == http::StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer, Basic realm=\"threadline\""),
                );
            }
            response
        }
    }
}

/// The id under which `threadline store` runs [`TenantAuth`] as an extension for its
/// receivers (`auth: {authenticator: store_auth}` on every protocol).
pub const EXTENSION_ID: &str = "threadline_store_auth";

/// Runs the store's [`TenantAuth`] as a collector extension, so its receivers check OTLP
/// requests with it. Registered by `threadline store` only; its config section is empty.
pub struct StoreAuthFactory(pub std::sync::Arc<TenantAuth>);

/// The (empty) config of [`StoreAuthFactory`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

impl threadline_collector::component::ComponentConfig for NoConfig {}

struct StoreAuthExtension(std::sync::Arc<TenantAuth>);

#[async_trait::async_trait]
impl threadline_collector::component::Component for StoreAuthExtension {
    async fn shutdown(&self, _deadline: Instant) {}
}

impl threadline_collector::component::Extension for StoreAuthExtension {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn server_authenticator(&self) -> Option<std::sync::Arc<dyn ServerAuthenticator>> {
        Some(self.0.clone())
    }
}

impl threadline_collector::component::TypedExtensionFactory for StoreAuthFactory {
    type Config = NoConfig;

    fn kind(&self) -> &'static str {
        EXTENSION_ID
    }

    fn create(
        &self,
        _ctx: &threadline_collector::component::CreateContext<'_>,
        _config: NoConfig,
    ) -> anyhow::Result<std::sync::Arc<dyn threadline_collector::component::Extension>> {
        Ok(std::sync::Arc::new(StoreAuthExtension(self.0.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(yaml: &str) -> TenantAuth {
        let config: StoreAuthConfig = serde_yaml_ng::from_str(yaml).unwrap();
        TenantAuth::new(&config).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_credential_is_served_as_its_tenant_only() {
        let auth = auth(
            "bearer_tokens: [{token: ta, tenant: a}, {token: tb, tenant: b}]\n\
             basic: [{username: u, password: pw, tenant: b}]",
        );
        let mut request = headers(&[("authorization", "Bearer ta")]);
        auth.authenticate(&mut request).unwrap();
        assert_eq!(request["x-scope-orgid"], "a");
        let mut request = headers(&[("authorization", "bearer tb"), ("x-scope-orgid", "b")]);
        auth.authenticate(&mut request).unwrap();
        let basic = threadline_collector::auth::basic_header("u", "pw");
        let mut request = headers(&[("authorization", &basic)]);
        auth.authenticate(&mut request).unwrap();
        assert_eq!(request["x-scope-orgid"], "b");

        let mut other = headers(&[("authorization", "Bearer ta"), ("x-scope-orgid", "b")]);
        assert!(matches!(
            auth.authenticate(&mut other),
            Err(AuthError::PermissionDenied(m)) if m.contains("\"a\"") && m.contains("\"b\"")
        ));
        // Two org ids, one of them another tenant's, are refused too.
        let mut two = headers(&[
            ("authorization", "Bearer ta"),
            ("x-scope-orgid", "a"),
            ("x-scope-orgid", "b"),
        ]);
        assert!(matches!(
            auth.authenticate(&mut two),
            Err(AuthError::PermissionDenied(_))
        ));
        for bad in [
            &[][..],
            &[("authorization", "Bearer tc")][..],
            &[("authorization", "Token ta")][..],
        ] {
            let mut request = headers(bad);
            assert!(matches!(
                auth.authenticate(&mut request),
                Err(AuthError::Unauthenticated(_))
            ));
        }
    }

    #[test]
    fn token_files_are_read_and_followed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "\n  first  \n").unwrap();
        let auth = auth(&format!(
            "bearer_tokens: [{{token_file: {}, tenant: a}}]",
            file.display()
        ));
        assert_eq!(
            auth.tenant(&headers(&[("authorization", "Bearer first")]))
                .unwrap(),
            "a"
        );
        std::fs::write(&file, "second-token\n").unwrap();
        std::thread::sleep(FILE_CHECK + Duration::from_millis(100));
        assert!(auth
            .tenant(&headers(&[("authorization", "Bearer first")]))
            .is_err());
        assert_eq!(
            auth.tenant(&headers(&[("authorization", "Bearer second-token")]))
                .unwrap(),
            "a"
        );
    }

    #[test]
    fn invalid_configs_name_the_key() {
        let config: StoreAuthConfig = serde_yaml_ng::from_str(
            "bearer_tokens: [{tenant: \"a/b\"}, {token: x, token_file: y, tenant: c}]\n\
             basic: [{username: \"u:v\", password: \"\", tenant: d}]",
        )
        .unwrap();
        let mut errors = Vec::new();
        config.validate(false, &mut errors);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for path in [
            "auth",
            "auth::bearer_tokens::0::token",
            "auth::bearer_tokens::0::tenant",
            "auth::bearer_tokens::1::token_file",
            "auth::basic::0::username",
            "auth::basic::0::password",
        ] {
            assert!(paths.contains(&path), "{path} not in {paths:?}");
        }
    }
}
