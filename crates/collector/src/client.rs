//! Who sent the data being consumed: the request's headers (gRPC metadata), available to every
//! consumer called within the receiver's request, as upstream's `client.Info`. Stages that hold
//! data and send it later (batch, queues) do not carry it; the store reads the tenant
//! (`X-Scope-OrgID`) from here in its pipeline, which has none of those.

use std::future::Future;
use std::sync::Arc;

use http::HeaderMap;

tokio::task_local! {
    static METADATA: Arc<HeaderMap>;
}

/// Runs `work` with `headers` as the client metadata.
pub async fn scope<F: Future>(headers: Arc<HeaderMap>, work: F) -> F::Output {
    METADATA.scope(headers, work).await
}

/// The value of header `name` of the request being consumed, if any.
pub fn metadata_value(name: &str) -> Option<String> {
    METADATA
        .try_with(|headers| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .ok()
        .flatten()
}
