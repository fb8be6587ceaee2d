//! Shared pieces of the crate's tests: a recording consumer, request headers and loopback ports.

use std::sync::Mutex;

use async_trait::async_trait;
use threadline_otlp::proto::tonic::trace::v1::Span;
use threadline_otlp::TraceData;

use crate::consumer::{ConsumeError, TracesConsumer};

/// A next consumer that records every batch it gets, or fails as told.
#[derive(Default)]
pub struct Recorder {
    batches: Mutex<Vec<TraceData>>,
    /// The client info each batch came with.
    clients: Mutex<Vec<crate::client::ClientInfo>>,
    fail_with: Mutex<Option<ConsumeError>>,
}

#[async_trait]
impl TracesConsumer for Recorder {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        if let Some(err) = self.fail_with.lock().unwrap().clone() {
            return Err(err);
        }
        self.batches.lock().unwrap().push(data);
        self.clients.lock().unwrap().push(crate::client::current());
        Ok(())
    }
}

impl Recorder {
    /// From now on, answer every call with `err` (None: accept again).
    pub fn fail_with(&self, err: Option<ConsumeError>) {
        *self.fail_with.lock().unwrap() = err;
    }

    pub fn batches(&self) -> Vec<TraceData> {
        self.batches.lock().unwrap().clone()
    }

    /// The client info of each batch received, in order.
    pub fn clients(&self) -> Vec<crate::client::ClientInfo> {
        self.clients.lock().unwrap().clone()
    }

    /// Span count of each batch received, in order.
    pub fn sizes(&self) -> Vec<usize> {
        self.batches().iter().map(|b| b.span_count()).collect()
    }

    /// Every span received, decoded, in order.
    pub fn spans(&self) -> Vec<Span> {
        self.batches()
            .iter()
            .flat_map(|d| d.to_request().unwrap().resource_spans)
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .collect()
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Request headers (HTTP headers or gRPC metadata) from `(name, value)` pairs, in order; a name
/// may repeat.
pub fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

/// The client info a receiver with `include_metadata` gives a request with these headers.
pub fn client_info(pairs: &[(&str, &str)]) -> crate::client::ClientInfo {
    crate::client::ClientInfo::from_headers(&headers(pairs))
}
