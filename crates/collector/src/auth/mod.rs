//! Authentication, after upstream's `extensionauth`: an extension may be a server authenticator
//! (a receiver's `auth: {authenticator: <id>}` checks every request with it before reading the
//! body) and/or a client authenticator (an exporter's `auth: {authenticator: <id>}` adds its
//! headers to every request it sends).
//!
//! The extensions are in `extensions/` (`bearertokenauth`, `basicauth`, `headers_setter`); the
//! store maps credentials to tenants with the same checks ([`bearer_matches`], [`Htpasswd`]).

use std::sync::Arc;

use base64::Engine;
use http::HeaderMap;
use threadline_config::settings::AuthSettings;

use crate::client::ClientInfo;
use crate::component::{Extension, Host};

pub mod htpasswd;

pub use htpasswd::Htpasswd;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential, or a wrong one: HTTP 401, gRPC UNAUTHENTICATED.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid credential that may not do this (e.g. another tenant's data): HTTP 403, gRPC
    /// PERMISSION_DENIED.
    #[error("{0}")]
    PermissionDenied(String),
}

impl AuthError {
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            AuthError::Unauthenticated(_) => http::StatusCode::UNAUTHORIZED,
            AuthError::PermissionDenied(_) => http::StatusCode::FORBIDDEN,
        }
    }

    pub fn grpc_status(&self) -> tonic::Status {
        match self {
            AuthError::Unauthenticated(m) => tonic::Status::unauthenticated(m.clone()),
            AuthError::PermissionDenied(m) => tonic::Status::permission_denied(m.clone()),
        }
    }
}

/// Checks incoming requests (upstream `extensionauth.Server`).
pub trait ServerAuthenticator: Send + Sync {
    /// Accepts or refuses a request by its headers (HTTP headers or gRPC metadata). It may add
    /// headers that the pipeline then sees as client metadata (the store sets the tenant).
    fn authenticate(&self, headers: &mut HeaderMap) -> Result<(), AuthError>;
}

/// Adds credentials to outgoing requests (upstream `extensionauth.HTTPClient`/`GRPCClient`).
pub trait ClientAuthenticator: Send + Sync {
    /// Sets this authenticator's headers on a request carrying data of `client` (the metadata
    /// the receiver put on the data, as far as the pipeline carried it).
    fn apply(&self, headers: &mut HeaderMap, client: &ClientInfo) -> Result<(), String>;
}

/// The server authenticator named by a receiver's `auth` (at `path`, for errors); `None` when
/// the receiver has no `auth`.
pub fn server_authenticator(
    host: &Host,
    auth: Option<&AuthSettings>,
    path: &str,
) -> anyhow::Result<Option<Arc<dyn ServerAuthenticator>>> {
    named_authenticator(
        host,
        auth,
        path,
        |extension| extension.server_authenticator(),
        "cannot authenticate requests a server receives (server authenticators: \
         bearertokenauth, basicauth with htpasswd)",
    )
}

/// The client authenticator named by an exporter's `auth` (at `path`, for errors); `None` when
/// the exporter has no `auth`.
pub fn client_authenticator(
    host: &Host,
    auth: Option<&AuthSettings>,
    path: &str,
) -> anyhow::Result<Option<Arc<dyn ClientAuthenticator>>> {
    named_authenticator(
        host,
        auth,
        path,
        |extension| extension.client_authenticator(),
        "cannot add credentials to requests an exporter sends (client authenticators: \
         bearertokenauth, basicauth with client_auth, headers_setter)",
    )
}

/// The running extension `auth` names, as the authenticator `role` picks from it; `cannot` says
/// what an extension that is not one cannot do.
fn named_authenticator<A: ?Sized>(
    host: &Host,
    auth: Option<&AuthSettings>,
    path: &str,
    role: impl FnOnce(&dyn Extension) -> Option<Arc<A>>,
    cannot: &str,
) -> anyhow::Result<Option<Arc<A>>> {
    let Some(auth) = auth else {
        return Ok(None);
    };
    let id = &auth.authenticator;
    let extension = host.extensions.get(id).ok_or_else(|| {
        anyhow::anyhow!(
            "{path}::auth::authenticator: extension {id} is not running; configure it under \
             extensions and list it in service::extensions"
        )
    })?;
    role(extension.as_ref())
        .map(Some)
        .ok_or_else(|| anyhow::anyhow!("{path}::auth::authenticator: extension {id} {cannot}"))
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The first value of `header` (case-insensitive), if it is text.
pub fn header_value<'a>(headers: &'a HeaderMap, header: &str) -> Option<&'a str> {
    headers.get(header).and_then(|v| v.to_str().ok())
}

/// Whether `presented` (a whole header value) equals one of `expected`, in constant time per
/// candidate, as upstream's bearertokenauth.
pub fn bearer_matches(presented: &str, expected: &[String]) -> bool {
    expected
        .iter()
        .any(|value| constant_time_eq(value.as_bytes(), presented.as_bytes()))
}

/// `Basic <base64(user:password)>` (scheme case-insensitive) as username and password.
pub fn parse_basic(value: &str) -> Result<(String, String), AuthError> {
    const PREFIX: &str = "basic ";
    let scheme = value.get(..PREFIX.len()).unwrap_or_default();
    if !scheme.eq_ignore_ascii_case(PREFIX) {
        return Err(AuthError::Unauthenticated(
            "invalid authorization scheme prefix: expected \"Basic\"".into(),
        ));
    }
    let invalid = || AuthError::Unauthenticated("invalid authorization format".into());
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value[PREFIX.len()..].trim())
        .map_err(|_| invalid())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (user, password) = decoded.split_once(':').ok_or_else(invalid)?;
    Ok((user.to_string(), password.to_string()))
}

/// `Basic <base64(user:password)>`.
pub fn basic_header(username: &str, password: &str) -> String {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

#[cfg(test)]
mod helper_tests {
    use super::*;

    #[test]
    fn basic_credentials_round_trip_and_bad_ones_are_refused() {
        let header = basic_header("alice", "s3:cret");
        assert_eq!(
            parse_basic(&header).unwrap(),
            ("alice".into(), "s3:cret".into())
        );
        assert_eq!(
            parse_basic(&header.replace("Basic", "bAsIc")).unwrap().0,
            "alice"
        );
        for bad in ["Bearer abc", "Basic !!!", "Basic YWxpY2U=", "", "Bas"] {
            assert!(
                matches!(parse_basic(bad), Err(AuthError::Unauthenticated(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn bearer_tokens_compare_whole_values() {
        let expected = vec!["Bearer a".to_string(), "Bearer bb".to_string()];
        assert!(bearer_matches("Bearer bb", &expected));
        assert!(!bearer_matches("Bearer b", &expected));
        assert!(!bearer_matches("bearer a", &expected));
        assert!(!bearer_matches("", &expected));
    }

    #[test]
    fn errors_map_to_http_and_grpc_statuses() {
        let denied = AuthError::PermissionDenied("no".into());
        assert_eq!(denied.http_status(), http::StatusCode::FORBIDDEN);
        assert_eq!(denied.grpc_status().code(), tonic::Code::PermissionDenied);
        let missing = AuthError::Unauthenticated("who".into());
        assert_eq!(missing.http_status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(missing.grpc_status().code(), tonic::Code::Unauthenticated);
    }
}

#[cfg(test)]
mod tests;
