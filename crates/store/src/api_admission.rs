//! When the API cannot answer a query, it says so with 503 and `Retry-After` (the status the
//! issue and HTTP prescribe for "try again later"), never with a refused connection or a hang:
//! - while the store opens (WAL replay, block listing), the port is already bound and every
//!   request gets 503 `the store is starting` ([`until_open`]);
//! - when a tenant has `query_frontend.max_outstanding_per_tenant` queries in flight, one more is
//!   refused ([`limit_outstanding`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body::{Frame, SizeHint};
use parking_lot::Mutex;
use tower::ServiceExt;

use crate::engine::SINGLE_TENANT;

/// Seconds a refused client is told to wait.
const RETRY_AFTER_SECONDS: &str = "1";

fn unavailable(message: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER_SECONDS)],
        message,
    )
        .into_response()
}

/// Hands the API's router to the server bound by [`until_open`] once the store is open.
pub struct Opener(Arc<OnceLock<Router>>);

impl Opener {
    pub fn open(self, router: Router) {
        // Only this opener sets it, once.
        let _ = self.0.set(router);
    }
}

/// A router for a port bound before the store opens: 503 to everything (`/ready` included, so
/// probes wait) until [`Opener::open`], then the API's router answers.
pub fn until_open() -> (Router, Opener) {
    let api: Arc<OnceLock<Router>> = Arc::new(OnceLock::new());
    let opened = api.clone();
    let router = Router::new().fallback(move |request: Request| {
        let api = opened.clone();
        async move {
            match api.get() {
                Some(router) => match router.clone().oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                None => unavailable(
                    "the store is starting: replaying its write-ahead log and listing its \
                     blocks; try again in a moment"
                        .into(),
                ),
            }
        }
    });
    (router, Opener(api))
}

/// Queries in flight per tenant, bounded.
pub struct Outstanding {
    limit: usize,
    by_tenant: Mutex<HashMap<String, usize>>,
}

impl Outstanding {
    pub fn new(limit: usize) -> Arc<Outstanding> {
        Arc::new(Outstanding {
            limit,
            by_tenant: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more query of `tenant`, or None at the limit.
    fn admit(self: &Arc<Self>, tenant: &str) -> Option<Admitted> {
        let mut by_tenant = self.by_tenant.lock();
        let count = by_tenant.entry(tenant.to_string()).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Admitted {
            outstanding: self.clone(),
            tenant: tenant.to_string(),
        })
    }
}

/// Held while a query runs; its place is given back when dropped (also when the client goes
/// away and the handler's future is dropped).
struct Admitted {
    outstanding: Arc<Outstanding>,
    tenant: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut by_tenant = self.outstanding.by_tenant.lock();
        if let Some(count) = by_tenant.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                // Entries exist only while queries run: the map stays as small as the load.
                by_tenant.remove(&self.tenant);
            }
        }
    }
}

/// Whether a path runs a query (work that grows with the data), as opposed to a probe, a
/// static page or a trace-by-id read.
fn is_query(path: &str) -> bool {
    [
        "/api/search",
        "/api/v2/search",
        "/api/metrics/",
        "/api/threadline/",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
}

/// Middleware: queries beyond `max_outstanding_per_tenant` of their tenant get 503.
pub async fn limit_outstanding(
    State(outstanding): State<Arc<Outstanding>>,
    request: Request,
    next: Next,
) -> Response {
    if !is_query(request.uri().path()) {
        return next.run(request).await;
    }
    let tenant = request
        .headers()
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or(SINGLE_TENANT)
        .to_string();
    let Some(admitted) = outstanding.admit(&tenant) else {
        return unavailable(format!(
            "overloaded: tenant {tenant:?} already has {} queries in flight \
             (query_frontend::max_outstanding_per_tenant); try again in a moment",
            outstanding.limit
        ));
    };
    // The place is held until the body is sent or dropped, not just until the handler returns:
    // a streamed search (NDJSON) works while its body is being written.
    let (parts, body) = next.run(request).await.into_parts();
    Response::from_parts(
        parts,
        Body::new(Holding {
            body,
            _admitted: admitted,
        }),
    )
}

/// A response body holding its query's admission place until it is sent or dropped. It passes
/// everything else on as it is (frames, trailers, and the size, so a sized answer keeps its
/// `Content-Length`).
struct Holding {
    body: Body,
    _admitted: Admitted,
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[test]
    fn places_are_per_tenant_and_given_back_on_drop() {
        let outstanding = Outstanding::new(2);
        let a1 = outstanding.admit("a");
        let a2 = outstanding.admit("a");
        assert!(a1.is_some() && a2.is_some());
        assert!(
            outstanding.admit("a").is_none(),
            "a third query of a is refused"
        );
        let b = outstanding.admit("b");
        assert!(b.is_some(), "another tenant has its own places");
        drop(a1);
        assert!(outstanding.admit("a").is_some(), "a place came back");
        drop((a2, b));
        assert!(
            outstanding.by_tenant.lock().is_empty(),
            "no entry outlives its queries"
        );
    }

    /// A streamed answer keeps its place until its body is done, not just until its headers.
    #[tokio::test]
    async fn a_streaming_answer_holds_its_place_until_its_body_ends() {
        let router = Router::new()
            .route(
                "/api/search",
                axum::routing::get(|| async {
                    let lines = futures::stream::iter(["{}\n", "{}\n"])
                        .map(Ok::<_, std::convert::Infallible>);
                    Body::from_stream(lines)
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Outstanding::new(1),
                limit_outstanding,
            ));
        let ask = || {
            router
                .clone()
                .oneshot(Request::get("/api/search").body(Body::empty()).unwrap())
        };
        let streaming = ask().await.unwrap();
        assert_eq!(streaming.status(), StatusCode::OK);
        let refused = ask().await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(streaming.into_body(), 1 << 10)
            .await
            .unwrap();
        assert_eq!(&body[..], b"{}\n{}\n");
        assert_eq!(ask().await.unwrap().status(), StatusCode::OK, "given back");
    }

    #[test]
    fn probes_pages_and_trace_reads_are_not_queries() {
        for path in [
            "/ready",
            "/api/echo",
            "/api/traces/00",
            "/api/v2/traces/00",
            "/",
            "/ui/app.js",
        ] {
            assert!(!is_query(path), "{path}");
        }
        for path in [
            "/api/search",
            "/api/search/tags",
            "/api/v2/search/tag/x/values",
            "/api/metrics/query_range",
            "/api/threadline/service-graph",
        ] {
            assert!(is_query(path), "{path}");
        }
    }
}
