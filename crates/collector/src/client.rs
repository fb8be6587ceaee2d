//! Who sent the data being consumed, as upstream's `client.Info`: the request's metadata (HTTP
//! headers, gRPC metadata), set by a receiver whose protocol has `include_metadata: true` and
//! available to every consumer called within that request.
//!
//! Stages that hold data and send it later (`batch`, `tail_sampling`) run downstream outside the
//! request; as upstream's `batch`, they carry only the values of their `metadata_keys` on (one
//! batch or trace table partition per distinct combination of values) and nothing without them.
//! The `store` exporter reads the tenant (`X-Scope-OrgID`) from here.

use std::future::Future;
use std::sync::Arc;

use http::HeaderMap;

tokio::task_local! {
    static CURRENT: ClientInfo;
}

/// Request metadata: lower-case keys, each with its values in arrival order. Immutable and cheap
/// to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientInfo {
    metadata: Arc<Vec<(String, Vec<String>)>>,
}

impl ClientInfo {
    /// Every header of a request (values that are not visible ASCII are left out, as they cannot
    /// be compared or forwarded as text).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut metadata: Vec<(String, Vec<String>)> = Vec::new();
        for name in headers.keys() {
            let values: Vec<String> = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect();
            metadata.push((name.as_str().to_ascii_lowercase(), values));
        }
        metadata.sort();
        ClientInfo {
            metadata: Arc::new(metadata),
        }
    }

    /// Metadata with exactly `keys` (lower-cased), each with its values in `self`, possibly none:
    /// what a batch or trace partition carries on, and the identity of that partition.
    pub fn restricted_to(&self, keys: &[String]) -> Self {
        let mut metadata: Vec<(String, Vec<String>)> = keys
            .iter()
            .map(|key| {
                let key = key.to_ascii_lowercase();
                let values = self.get(&key).to_vec();
                (key, values)
            })
            .collect();
        metadata.sort();
        ClientInfo {
            metadata: Arc::new(metadata),
        }
    }

    /// The values of `key` (case-insensitive); empty when it is absent.
    pub fn get(&self, key: &str) -> &[String] {
        self.metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, values)| values.as_slice())
            .unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.metadata.is_empty()
    }
}

/// Runs `work` with `info` as the client info of the data it consumes.
pub async fn scope<F: Future>(info: ClientInfo, work: F) -> F::Output {
    CURRENT.scope(info, work).await
}

/// Runs the synchronous `work` with `info` as the client info (e.g. on the blocking pool, where
/// the caller's task-local is not visible).
pub fn sync_scope<R>(info: ClientInfo, work: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(info, work)
}

/// The client info of the data being consumed (empty outside any request or partition).
pub fn current() -> ClientInfo {
    CURRENT.try_with(ClientInfo::clone).unwrap_or_default()
}

/// The first value of metadata key `name` (case-insensitive) of the data being consumed, if any.
pub fn metadata_value(name: &str) -> Option<String> {
    CURRENT
        .try_with(|info| info.get(name).first().cloned())
        .ok()
        .flatten()
}

/// Lower-cased `metadata_keys` of a processor config, or the path and message of the first
/// duplicate (keys are case-insensitive, as upstream).
pub fn normalize_keys(keys: &[String]) -> Result<Vec<String>, String> {
    let mut seen: Vec<String> = Vec::with_capacity(keys.len());
    for key in keys {
        let lower = key.to_ascii_lowercase();
        if seen.contains(&lower) {
            return Err(format!(
                "duplicate entry in metadata_keys: {lower:?} (case-insensitive)"
            ));
        }
        seen.push(lower);
    }
    seen.sort();
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    #[test]
    fn keys_are_case_insensitive_and_values_kept_in_order() {
        let info = ClientInfo::from_headers(&headers(&[
            ("X-Scope-OrgID", "a"),
            ("x-scope-orgid", "b"),
            ("user-agent", "sdk"),
        ]));
        assert_eq!(info.get("X-SCOPE-ORGID"), ["a", "b"]);
        assert_eq!(info.get("missing"), [] as [String; 0]);
    }

    #[test]
    fn restriction_keeps_only_the_keys_and_identifies_the_partition() {
        let a1 = ClientInfo::from_headers(&headers(&[("x-scope-orgid", "a"), ("ua", "1")]));
        let a2 = ClientInfo::from_headers(&headers(&[("x-scope-orgid", "a"), ("ua", "2")]));
        let b = ClientInfo::from_headers(&headers(&[("x-scope-orgid", "b")]));
        let keys = vec!["X-Scope-OrgID".to_string()];
        assert_eq!(a1.restricted_to(&keys), a2.restricted_to(&keys));
        assert_ne!(a1.restricted_to(&keys), b.restricted_to(&keys));
        assert!(a1.restricted_to(&keys).get("ua").is_empty());
        // Unset and empty are distinct partitions, as upstream.
        let unset = ClientInfo::default().restricted_to(&keys);
        let empty = ClientInfo::from_headers(&headers(&[("x-scope-orgid", "")]));
        assert_ne!(unset, empty.restricted_to(&keys));
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = normalize_keys(&["Tenant".into(), "tenant".into()]).unwrap_err();
        assert!(err.contains("duplicate entry in metadata_keys"), "{err}");
    }

    #[tokio::test]
    async fn scope_sets_the_current_info() {
        assert_eq!(metadata_value("x-scope-orgid"), None);
        let info = ClientInfo::from_headers(&headers(&[("X-Scope-OrgID", "t1")]));
        let seen = scope(info, async { metadata_value("X-Scope-OrgID") }).await;
        assert_eq!(seen.as_deref(), Some("t1"));
    }
}
