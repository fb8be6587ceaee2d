//! The payments service's gRPC API (`shop.payments.v1.Payments/Charge`), served and called with
//! tonic. Messages are declared with prost's derive (no protoc step). The caller's trace context
//! travels in gRPC metadata: a client interceptor injects it, the server extracts it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::Context;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::Status;

pub const CHARGE_PATH: &str = "/shop.payments.v1.Payments/Charge";

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChargeRequest {
    #[prost(string, tag = "1")]
    pub order_id: String,
    #[prost(bool, tag = "2")]
    pub fail: bool,
    #[prost(bool, tag = "3")]
    pub slow: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChargeReply {
    #[prost(bool, tag = "1")]
    pub approved: bool,
}

/// gRPC metadata as an injector.
pub struct Metadata<'a>(pub &'a mut MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// What the server does with a charge: given the caller's context (extracted from metadata).
pub type ChargeFn = Arc<
    dyn Fn(
            http::HeaderMap,
            ChargeRequest,
        ) -> Pin<Box<dyn Future<Output = Result<ChargeReply, Status>> + Send>>
        + Send
        + Sync,
>;

#[derive(Clone)]
struct ChargeHandler(ChargeFn);

impl tonic::server::UnaryService<ChargeRequest> for ChargeHandler {
    type Response = ChargeReply;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<ChargeReply>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<ChargeRequest>) -> Self::Future {
        let charge = self.0.clone();
        Box::pin(async move {
            let headers = request.metadata().clone().into_headers();
            charge(headers, request.into_inner())
                .await
                .map(tonic::Response::new)
        })
    }
}

/// The tower service tonic's server drives.
#[derive(Clone)]
pub struct PaymentsServer(pub ChargeFn);

impl tower::Service<http::Request<tonic::body::Body>> for PaymentsServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let handler = ChargeHandler(self.0.clone());
        Box::pin(async move {
            if request.uri().path() != CHARGE_PATH {
                return Ok(Status::unimplemented(format!(
                    "unknown method {}",
                    request.uri().path()
                ))
                .into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
                ChargeReply,
                ChargeRequest,
            >::default());
            Ok(grpc.unary(handler, request).await)
        })
    }
}

/// The metadata carrying `cx`, as `propagator` writes it.
pub fn context_metadata(cx: &Context, propagator: &dyn TextMapPropagator) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    propagator.inject_context(cx, &mut Metadata(&mut metadata));
    metadata
}

/// Calls `Charge`; an interceptor adds `metadata` (the trace context) to the call.
pub async fn charge(
    channel: tonic::transport::Channel,
    metadata: MetadataMap,
    request: ChargeRequest,
) -> Result<ChargeReply, Status> {
    let interceptor = move |mut call: tonic::Request<()>| -> Result<tonic::Request<()>, Status> {
        for entry in metadata.iter() {
            if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry {
                call.metadata_mut().insert(key.clone(), value.clone());
            }
        }
        Ok(call)
    };
    let service = tonic::service::interceptor::InterceptedService::new(channel, interceptor);
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("payments is not reachable: {e}")))?;
    let path = http::uri::PathAndQuery::from_static(CHARGE_PATH);
    grpc.unary(
        tonic::Request::new(request),
        path,
        tonic_prost::ProstCodec::<ChargeRequest, ChargeReply>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}
