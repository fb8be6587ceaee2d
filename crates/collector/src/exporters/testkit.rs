//! Test backends for the exporter tests: a real OTLP/gRPC server (tonic, with the generated
//! `TraceService`) and a real OTLP/HTTP server (axum), both on 127.0.0.1, recording what they
//! receive and answering as a test tells them to; plus trace data and certificates.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use threadline_config::ComponentId;
use threadline_otlp::proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use threadline_otlp::proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use threadline_otlp::proto::tonic::common::v1::{
    any_value, AnyValue, InstrumentationScope, KeyValue,
};
use threadline_otlp::proto::tonic::resource::v1::Resource;
use threadline_otlp::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use threadline_otlp::TraceData;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::component::{CreateContext, Host};
use crate::telemetry::{ExporterMetrics, Telemetry};

/// A request of `spans` spans named `<tag>-<i>`, with random valid ids.
pub fn trace_request(tag: &str, spans: usize) -> ExportTraceServiceRequest {
    let attribute = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", tag)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "threadline-test".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: rand::random::<[u8; 16]>().to_vec(),
                        span_id: rand::random::<[u8; 8]>().to_vec(),
                        name: format!("{tag}-{i}"),
                        kind: 2,
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_500_000_000,
                        attributes: vec![attribute("http.method", "GET")],
                        ..Default::default()
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub fn traces(tag: &str, spans: usize) -> TraceData {
    TraceData::from_request(&trace_request(tag, spans))
}

/// The service name (`tag`) of each resource in a request.
pub fn tags(request: &ExportTraceServiceRequest) -> Vec<String> {
    request
        .resource_spans
        .iter()
        .filter_map(|r| r.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .filter(|kv| kv.key == "service.name")
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// Telemetry, host and id for creating a component in a test.
pub struct TestContext {
    pub telemetry: Arc<Telemetry>,
    pub host: Host,
    pub id: ComponentId,
}

impl TestContext {
    pub fn new(id: &str) -> Self {
        TestContext {
            telemetry: Telemetry::new("test"),
            host: Host::default(),
            id: id.parse().unwrap(),
        }
    }

    pub fn ctx(&self) -> CreateContext<'_> {
        CreateContext {
            id: &self.id,
            telemetry: &self.telemetry,
            host: &self.host,
        }
    }

    pub fn metrics(&self) -> ExporterMetrics {
        self.telemetry.exporter(&self.id)
    }
}

pub fn yaml(text: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(text).unwrap()
}

/// Polls `condition` every 10ms until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// One request as a backend saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub request: ExportTraceServiceRequest,
    /// The request body after decompression (HTTP), or the request re-encoded (gRPC).
    pub body: Bytes,
    /// `grpc-encoding` or `Content-Encoding`.
    pub encoding: Option<String>,
    pub content_type: Option<String>,
    pub headers: HashMap<String, String>,
    pub at: Instant,
    /// Whether the backend answered with success.
    pub accepted: bool,
}

type GrpcResponder =
    Box<dyn FnMut(usize) -> Result<ExportTraceServiceResponse, tonic::Status> + Send>;

/// What a gRPC backend has seen, and how it answers (by the 0-based number of the request).
pub struct GrpcState {
    pub received: Mutex<Vec<Received>>,
    responder: Mutex<GrpcResponder>,
    /// Holds requests until released (for queue-full and shutdown tests).
    pub gate: tokio::sync::Semaphore,
    gated: std::sync::atomic::AtomicBool,
}

impl GrpcState {
    pub fn accepted(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.accepted)
            .cloned()
            .collect()
    }

    pub fn attempts(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn respond_with(
        &self,
        responder: impl FnMut(usize) -> Result<ExportTraceServiceResponse, tonic::Status>
            + Send
            + 'static,
    ) {
        *self.responder.lock().unwrap() = Box::new(responder);
    }

    /// Makes requests wait for [`GrpcState::gate`] permits.
    pub fn hold_requests(&self) {
        self.gated.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

struct Handler(Arc<GrpcState>);

#[tonic::async_trait]
impl TraceService for Handler {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers: HashMap<String, String> = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        if self.0.gated.load(std::sync::atomic::Ordering::SeqCst) {
            self.0.gate.acquire().await.unwrap().forget();
        }
        let request = request.into_inner();
        let number = self.0.received.lock().unwrap().len();
        let answer = (self.0.responder.lock().unwrap())(number);
        self.0.received.lock().unwrap().push(Received {
            body: Bytes::from(request.encode_to_vec()),
            request,
            encoding: headers.get("grpc-encoding").cloned(),
            content_type: headers.get("content-type").cloned(),
            headers,
            at: Instant::now(),
            accepted: answer.is_ok(),
        });
        answer.map(tonic::Response::new)
    }
}

/// A running OTLP/gRPC backend.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    pub state: Arc<GrpcState>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl GrpcBackend {
    pub async fn start() -> Self {
        Self::start_with(None, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_with(
        tls: Option<tonic::transport::ServerTlsConfig>,
        addr: SocketAddr,
    ) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(GrpcState {
            received: Mutex::new(Vec::new()),
            responder: Mutex::new(Box::new(|_| Ok(ExportTraceServiceResponse::default()))),
            gate: tokio::sync::Semaphore::new(0),
            gated: std::sync::atomic::AtomicBool::new(false),
        });
        let service = TraceServiceServer::new(Handler(state.clone()))
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).unwrap();
        }
        let stop = CancellationToken::new();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let signal = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            let _ = server
                .serve_with_incoming_shutdown(service, incoming, signal)
                .await;
        });
        GrpcBackend {
            addr,
            state,
            stop,
            task: Some(task),
        }
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Stops gracefully: clients are told to go away, so they must reconnect to reach a new one.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn partial_success(rejected: i64, message: &str) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message: message.into(),
        }),
    }
}

/// An HTTP answer: status, extra headers, body.
pub type HttpReply = (u16, Vec<(String, String)>, Vec<u8>);
type HttpResponder = Box<dyn FnMut(usize) -> HttpReply + Send>;

pub struct HttpState {
    pub received: Mutex<Vec<Received>>,
    pub paths: Mutex<Vec<String>>,
    responder: Mutex<HttpResponder>,
}

impl HttpState {
    pub fn accepted(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.accepted)
            .cloned()
            .collect()
    }

    pub fn attempts(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn respond_with(&self, responder: impl FnMut(usize) -> HttpReply + Send + 'static) {
        *self.responder.lock().unwrap() = Box::new(responder);
    }
}

/// A running OTLP/HTTP backend accepting `POST` on any path.
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub state: Arc<HttpState>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HttpBackend {
    pub async fn start(tls: Option<rustls::ServerConfig>) -> Self {
        let listener = crate::server::bind("127.0.0.1:0", "test backend").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HttpState {
            received: Mutex::new(Vec::new()),
            paths: Mutex::new(Vec::new()),
            responder: Mutex::new(Box::new(|_| (200, Vec::new(), Vec::new()))),
        });
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(
            move |uri: http::Uri, headers: http::HeaderMap, body: Bytes| {
                let state = handler_state.clone();
                async move { handle_http(&state, uri, headers, body) }
            },
        );
        let stop = CancellationToken::new();
        let tls = tls.map(|tls| crate::server::with_alpn(tls, &[b"h2", b"http/1.1"]));
        let task = tokio::spawn(crate::server::serve_http(
            listener,
            tls,
            app,
            stop.clone(),
            Duration::from_millis(100),
            Default::default(),
        ));
        HttpBackend {
            addr,
            state,
            stop,
            task: Some(task),
        }
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn handle_http(
    state: &HttpState,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use std::io::Read;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let encoding = header("content-encoding");
    let body = match encoding.as_deref() {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            Bytes::from(out)
        }
        Some("zstd") => Bytes::from(zstd::decode_all(&body[..]).unwrap()),
        _ => body,
    };
    let content_type = header("content-type");
    let request = if content_type.as_deref() == Some("application/json") {
        threadline_otlp::json::request_from_json(&body).unwrap()
    } else {
        ExportTraceServiceRequest::decode(&body[..]).unwrap()
    };
    let number = state.received.lock().unwrap().len();
    let (status, extra_headers, reply_body) = (state.responder.lock().unwrap())(number);
    state.paths.lock().unwrap().push(uri.path().to_string());
    state.received.lock().unwrap().push(Received {
        request,
        body,
        encoding,
        content_type,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        at: Instant::now(),
        accepted: (200..300).contains(&status),
    });
    let mut response = axum::response::Response::builder().status(status);
    for (name, value) in extra_headers {
        response = response.header(name, value);
    }
    response.body(axum::body::Body::from(reply_body)).unwrap()
}

/// A CA, a server certificate (for `localhost` and 127.0.0.1 by default) and a client
/// certificate, in PEM.
pub struct TestPki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl TestPki {
    pub fn generate() -> Self {
        Self::generate_for(&["localhost", "127.0.0.1"])
    }

    /// With a server certificate valid only for `server_names`.
    pub fn generate_for(server_names: &[&str]) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "threadline test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let names: Vec<String> = server_names.iter().map(|n| n.to_string()).collect();
        let server = CertificateParams::new(names)
            .unwrap()
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec!["client".into()]).unwrap();
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
        TestPki {
            ca_pem: ca.pem(),
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    /// Writes the PEM files into `dir`: ca.pem, server.pem, server.key, client.pem, client.key.
    pub fn write_to(&self, dir: &Path) {
        for (name, pem) in [
            ("ca.pem", &self.ca_pem),
            ("server.pem", &self.server_cert_pem),
            ("server.key", &self.server_key_pem),
            ("client.pem", &self.client_cert_pem),
            ("client.key", &self.client_key_pem),
        ] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
    }
}
