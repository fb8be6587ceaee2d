//! The pod mutating webhook: HTTPS, `POST /mutate-v1-pod`, AdmissionReview v1 in and out.
//!
//! Installed with `failurePolicy: Ignore`, and it never denies a pod itself: when an
//! Instrumentation is missing or ambiguous the pod is admitted unchanged, with the reason as an
//! admission warning (shown by `kubectl`) and a Warning event. A body that is not an
//! AdmissionReview gets HTTP 400 with a message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::certs::ReloadableCert;
use crate::inject::{self, Catalog, Owners};

/// The path the MutatingWebhookConfiguration calls, as upstream's.
pub const MUTATE_PATH: &str = "/mutate-v1-pod";

/// Provides the current Instrumentations and namespace annotations.
pub type CatalogSource = Arc<dyn Fn() -> Catalog + Send + Sync>;

/// What the webhook needs from the cluster besides the catalog; `None` when offline (tests).
#[derive(Clone)]
pub struct ClusterAccess {
    pub client: kube::Client,
    pub recorder: Arc<kube::runtime::events::Recorder>,
}

#[derive(Clone)]
pub struct WebhookState {
    pub catalog: CatalogSource,
    pub cluster: Option<ClusterAccess>,
}

pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate_handler))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

async fn mutate_handler(State(state): State<WebhookState>, body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(err) => {
            return bad_request(format!("request body is not an AdmissionReview v1: {err}"))
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => return bad_request("AdmissionReview has no request".into()),
    };
    let response = admit(&state, &request).await;
    Json(response.into_review()).into_response()
}

fn bad_request(message: String) -> Response {
    tracing::warn!(%message, "rejected a malformed admission request");
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

/// Decides one admission request. Always allowed; a patch when something was injected.
pub async fn admit(
    state: &WebhookState,
    request: &AdmissionRequest<DynamicObject>,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(object) = &request.object else {
        return response;
    };
    let original = match serde_json::to_value(object) {
        Ok(value) => value,
        Err(err) => return with_warnings(response, vec![format!("cannot read the pod: {err}")]),
    };
    let pod: Pod = match serde_json::from_value(original.clone()) {
        Ok(pod) => pod,
        Err(err) => {
            return with_warnings(
                response,
                vec![format!(
                    "the object is not a valid Pod ({err}); admitted without instrumentation"
                )],
            )
        }
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let owners = match &state.cluster {
        Some(cluster) => resolve_owners_live(&cluster.client, &namespace, &pod).await,
        None => inject::resolve_owners(
            pod.metadata.owner_references.as_deref().unwrap_or(&[]),
            &|_, _| Vec::new(),
        ),
    };
    let catalog = (state.catalog)();
    let mutation = inject::mutate(&catalog, &namespace, &pod, &owners);
    if !mutation.warnings.is_empty() {
        tracing::warn!(namespace, pod = pod_display_name(&pod), warnings = ?mutation.warnings, "instrumentation not injected as asked");
        if let Some(cluster) = &state.cluster {
            record_warning(cluster, &namespace, &pod, &mutation.warnings).await;
        }
    }
    if mutation.injected.is_empty() {
        return with_warnings(response, mutation.warnings);
    }
    let mutated = match serde_json::to_value(&mutation.pod) {
        Ok(value) => value,
        Err(err) => return with_warnings(response, vec![format!("cannot write the pod: {err}")]),
    };
    let patch = json_patch::diff(&original, &mutated);
    tracing::info!(
        namespace,
        pod = pod_display_name(&pod),
        languages = ?mutation.injected.iter().map(|l| l.name()).collect::<Vec<_>>(),
        "injected auto-instrumentation"
    );
    match response.clone().with_patch(patch) {
        Ok(patched) => with_warnings(patched, mutation.warnings),
        Err(err) => with_warnings(response, vec![format!("cannot serialize the patch: {err}")]),
    }
}

fn with_warnings(mut response: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

fn pod_display_name(pod: &Pod) -> String {
    pod.metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default()
}

/// Owner names through the API: ReplicaSet → Deployment, Job → CronJob.
async fn resolve_owners_live(client: &kube::Client, namespace: &str, pod: &Pod) -> Owners {
    let references = pod.metadata.owner_references.clone().unwrap_or_default();
    let mut parents: BTreeMap<(String, String), Vec<OwnerReference>> = BTreeMap::new();
    for owner in &references {
        let found = match owner.kind.as_str() {
            "ReplicaSet" => kube::Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(
                client.clone(),
                namespace,
            )
            .get_opt(&owner.name)
            .await
            .ok()
            .flatten()
            .and_then(|rs| rs.metadata.owner_references),
            "Job" => {
                kube::Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), namespace)
                    .get_opt(&owner.name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|job| job.metadata.owner_references)
            }
            _ => None,
        };
        if let Some(found) = found {
            parents.insert((owner.kind.clone(), owner.name.clone()), found);
        }
    }
    inject::resolve_owners(&references, &|kind, name| {
        parents
            .get(&(kind.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default()
    })
}

async fn record_warning(cluster: &ClusterAccess, namespace: &str, pod: &Pod, warnings: &[String]) {
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.to_string()),
        name: Some(pod_display_name(pod)),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    };
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "InstrumentationNotInjected".into(),
        note: Some(warnings.join("; ")),
        action: "Admit".into(),
        secondary: None,
    };
    if let Err(err) = cluster.recorder.publish(&event, &reference).await {
        tracing::warn!(%err, "cannot record the event");
    }
}

/// Serves the webhook over TLS on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    cert: Arc<ReloadableCert>,
    state: WebhookState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_no_client_auth()
    .with_cert_resolver(cert);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let app = router(state);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(stream).await {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::debug!(%peer, %err, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        tower::ServiceExt::oneshot(app, request.map(axum::body::Body::new)).await
                    }
                },
            );
            if let Err(err) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %err, "webhook connection ended with an error");
            }
        });
    }
}
