//! Tempo's gRPC streaming API, `tempopb.StreamingQuerier`, on the HTTP port, as Tempo serves it
//! with `stream_over_http_enabled` (grafana/tempo ad33aa8 `cmd/tempo/app/server_service.go`: an
//! HTTP/2 request whose content type is `application/grpc…` goes to the gRPC server, anything
//! else to the HTTP router). Grafana's Tempo data source dials the data source URL's host and
//! port with insecure credentials, so this is HTTP/2 over cleartext with prior knowledge, which
//! `axum::serve` (hyper-util's auto connection builder) answers on the same listener as
//! HTTP/1.1 (grafana/grafana 08602cc `pkg/tsdb/tempo/grpc.go`).
//!
//! Each RPC answers as Tempo's query frontend streams (ad33aa8 `modules/frontend/pipeline/
//! collector_grpc.go`, `combiner/*.go`): partial messages while the search runs, then one final
//! message with the whole answer; see [`search`], [`tags`] and [`metrics`] for what each message
//! holds. The tenant is the `X-Scope-OrgID` metadata, as Tempo copies it from the gRPC context
//! (ad33aa8 `modules/frontend/grpc_util.go`).
//!
//! The service is written by hand (what tonic-build would generate, for seven server-streaming
//! methods) on the messages of [`crate::tempopb`]; `proto/tempo_streaming.proto` describes it.

mod metrics;
mod search;
mod tags;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode, Version};
use axum::response::Response;
use axum::Router;
use futures::Stream;
use tonic::codec::CompressionEncoding;
use tonic::Status;
use tower::ServiceExt;

use crate::api::ApiError;
use crate::engine::{Progress, Store};
use crate::tempopb as pb;

/// The gRPC service name, as in tempo.proto.
pub const SERVICE: &str = "tempopb.StreamingQuerier";

/// A server-streaming answer.
type MessageStream<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>;
type Answer<M> = Result<tonic::Response<MessageStream<M>>, Status>;

/// What the RPCs need: the store, and the HTTP router, through which the tag RPCs run their
/// HTTP twin (Tempo's frontend also turns each streaming request into its HTTP request).
#[derive(Clone)]
struct Context {
    store: Arc<Store>,
    http: Router,
}

/// `http` (Tempo's HTTP API) with the gRPC streaming API beside it on the same port.
pub fn beside(http: Router, store: Arc<Store>) -> Router {
    let context = Context {
        store,
        http: http.clone(),
    };
    Router::new().fallback_service(tower::service_fn(move |request: Request| {
        let http = http.clone();
        let context = context.clone();
        async move {
            if is_grpc(&request) {
                Ok::<_, Infallible>(call(context, request).await)
            } else {
                http.oneshot(request).await
            }
        }
    }))
}

/// Tempo's test: HTTP/2 and a content type that contains `application/grpc`.
fn is_grpc(request: &Request) -> bool {
    request.version() == Version::HTTP_2
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/grpc"))
}

async fn call(context: Context, request: Request) -> Response {
    let path = request.uri().path();
    let method = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(SERVICE))
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or("")
        .to_string();
    match method.as_str() {
        "Search" => serve(request, context, search::search).await,
        "SearchTags" => serve(request, context, tags::tags_v1).await,
        "SearchTagsV2" => serve(request, context, tags::tags_v2).await,
        "SearchTagValues" => serve(request, context, tags::tag_values_v1).await,
        "SearchTagValuesV2" => serve(request, context, tags::tag_values_v2).await,
        "MetricsQueryRange" => serve(request, context, metrics::query_range).await,
        "MetricsQueryInstant" => serve(request, context, metrics::query_instant).await,
        _ => unimplemented(path),
    }
}

/// Decodes the request message, runs `handler` and streams its messages, as tonic's generated
/// code does for a server-streaming method (gzip accepted and, when asked, sent).
async fn serve<Req, Resp, F, Fut>(request: Request, context: Context, handler: F) -> Response
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: Fn(Context, tonic::Request<Req>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Answer<Resp>> + Send + 'static,
{
    let codec = tonic_prost::ProstCodec::<Resp, Req>::default();
    let mut grpc = tonic::server::Grpc::new(codec)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let method = tower::service_fn(move |request: tonic::Request<Req>| {
        handler.clone()(context.clone(), request)
    });
    grpc.server_streaming(method, request)
        .await
        .map(axum::body::Body::new)
}

fn unimplemented(path: &str) -> Response {
    let status = Status::unimplemented(format!("no gRPC method {path}"));
    let mut response = status.into_http::<axum::body::Body>();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The gRPC status of an HTTP API error, as Tempo's frontend maps them.
fn status(err: ApiError) -> Status {
    let message = err.message().to_string();
    match err.status() {
        StatusCode::BAD_REQUEST => Status::invalid_argument(message),
        StatusCode::UNAUTHORIZED => Status::unauthenticated(message),
        StatusCode::NOT_FOUND => Status::not_found(message),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
            Status::unavailable(message)
        }
        _ => Status::internal(message),
    }
}

/// The request's metadata as HTTP headers (`x-scope-orgid`, `authorization`, ...).
fn headers<M>(request: &tonic::Request<M>) -> HeaderMap {
    request.metadata().clone().into_headers()
}

/// Tempo's `SearchMetrics` of a search's progress (cumulative: jobs done out of jobs, blocks,
/// bytes), as searches and metrics queries stream it.
fn search_metrics(p: &Progress<'_>) -> pb::SearchMetrics {
    pb::SearchMetrics {
        inspected_traces: u32::try_from(p.stats.inspected_traces).unwrap_or(u32::MAX),
        inspected_bytes: p.stats.inspected_bytes,
        total_blocks: p.total_blocks,
        completed_jobs: p.completed_jobs,
        total_jobs: p.total_jobs,
        total_block_bytes: p.total_block_bytes,
        inspected_spans: 0,
    }
}

/// Where a producer task sends its messages.
type Sender<M> = tokio::sync::mpsc::UnboundedSender<Result<M, Status>>;

/// Runs `produce` in its own task and streams what it sends; the task is aborted when the
/// stream is dropped (the client went away), so an abandoned search does not run on.
fn spawn_stream<M, Fut>(produce: impl FnOnce(Sender<M>) -> Fut) -> MessageStream<M>
where
    M: Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = AbortOnDrop(tokio::spawn(produce(tx)));
    Box::pin(futures::stream::unfold(
        (rx, task),
        |(mut rx, task)| async move { rx.recv().await.map(|message| (message, (rx, task))) },
    ))
}

/// A stream of one message (or one error).
fn once<M: Send + 'static>(message: Result<M, Status>) -> MessageStream<M> {
    Box::pin(futures::stream::once(async move { message }))
}
