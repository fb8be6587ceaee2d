//! `threadline operator run`: the controller, the pod webhook and its certificate, and health
//! endpoints, in one process in the cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::certs::{self, ReloadableCert, WebhookCertificate};
use crate::controller::{self, FIELD_MANAGER};
use crate::crd::{instrumentation_api_resource, Instrumentation};
use crate::inject::Catalog;
use crate::install::{CERT_SECRET, NOT_AFTER_ANNOTATION, WEBHOOK_CONFIGURATION, WEBHOOK_SERVICE};
use crate::webhook::{self, ClusterAccess, WebhookState};

/// Where cert-manager's Secret is mounted (`--cert-manager`).
const MOUNTED_CERT_DIR: &str = "/tmp/k8s-webhook-server/serving-certs";
/// How often the certificate is checked for renewal.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(6 * 3600);

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The operator's own namespace (where the certificate Secret lives).
    pub namespace: String,
    pub webhook_addr: SocketAddr,
    pub health_addr: SocketAddr,
    /// Use the certificate cert-manager mounts instead of managing one.
    pub cert_manager: bool,
}

pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)")?;

    let instrumentations = controller::watch_all(
        Api::<Instrumentation>::all_with(client.clone(), &instrumentation_api_resource()),
        instrumentation_api_resource(),
    );
    let namespaces = controller::watch_all(Api::<Namespace>::all(client.clone()), ());
    let catalog: webhook::CatalogSource = Arc::new(move || Catalog {
        instrumentations: instrumentations
            .state()
            .iter()
            .map(|i| (**i).clone())
            .collect(),
        namespace_annotations: controller::namespace_annotations(&namespaces),
    });

    let reloadable = if options.cert_manager {
        let (cert, key) = read_mounted_cert().await?;
        ReloadableCert::new(certs::certified_key(&cert, &key)?)
    } else {
        let current = ensure_certificate(&client, &options.namespace, None).await?;
        ReloadableCert::new(certs::certified_key(&current.cert_pem, &current.key_pem)?)
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(rotate_certificates(
        client.clone(),
        options.clone(),
        Arc::clone(&reloadable),
        shutdown.clone(),
    ));

    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("HOSTNAME").ok(),
        },
    );
    let state = WebhookState {
        catalog,
        cluster: Some(ClusterAccess {
            client: client.clone(),
            recorder: Arc::new(recorder),
        }),
    };
    let listener = tokio::net::TcpListener::bind(options.webhook_addr)
        .await
        .with_context(|| format!("cannot listen for the webhook on {}", options.webhook_addr))?;
    let webhook_task = tokio::spawn(webhook::serve(
        listener,
        reloadable,
        state,
        shutdown.clone(),
    ));

    let health = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(|| async { "ok" }));
    let health_listener = tokio::net::TcpListener::bind(options.health_addr)
        .await
        .with_context(|| format!("cannot listen for health checks on {}", options.health_addr))?;
    let health_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(health_listener, health)
            .with_graceful_shutdown(async move { health_shutdown.cancelled().await })
            .await;
    });

    tracing::info!(webhook = %options.webhook_addr, "operator started");
    controller::run_controller(client).await;
    shutdown.cancel();
    let _ = webhook_task.await;
    tracing::info!("operator stopped");
    Ok(())
}

async fn read_mounted_cert() -> anyhow::Result<(String, String)> {
    let cert = tokio::fs::read_to_string(format!("{MOUNTED_CERT_DIR}/tls.crt"))
        .await
        .with_context(|| {
            format!("cannot read {MOUNTED_CERT_DIR}/tls.crt (cert-manager's Secret)")
        })?;
    let key = tokio::fs::read_to_string(format!("{MOUNTED_CERT_DIR}/tls.key"))
        .await
        .with_context(|| format!("cannot read {MOUNTED_CERT_DIR}/tls.key"))?;
    Ok((cert, key))
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// Returns a valid certificate: the Secret's when it is not due for renewal, a new one otherwise
/// (written to the Secret, its CA added to the webhook's caBundle beside the previous CA so
/// that requests keep working during the switch).
async fn ensure_certificate(
    client: &Client,
    namespace: &str,
    force_new_after: Option<OffsetDateTime>,
) -> anyhow::Result<WebhookCertificate> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let existing = secrets
        .get_opt(CERT_SECRET)
        .await
        .with_context(|| format!("cannot read Secret {namespace}/{CERT_SECRET}"))?;
    let current = existing.as_ref().and_then(|secret| {
        let not_after = secret
            .metadata
            .annotations
            .as_ref()?
            .get(NOT_AFTER_ANNOTATION)
            .and_then(|t| parse_not_after(t))?;
        Some(WebhookCertificate {
            ca_pem: secret_text(secret, "ca.crt")?,
            cert_pem: secret_text(secret, "tls.crt")?,
            key_pem: secret_text(secret, "tls.key")?,
            not_after,
        })
    });
    if let Some(current) = &current {
        let forced = force_new_after.is_some_and(|t| current.not_after <= t);
        if !certs::needs_renewal(current.not_after) && !forced {
            patch_ca_bundle(client, &current.ca_pem).await?;
            return Ok(current.clone());
        }
    }
    let fresh = certs::generate(&certs::service_dns_names(WEBHOOK_SERVICE, namespace))?;
    let mut object = crate::install::certificate_secret(namespace, &fresh);
    // Server-side apply takes `data`; stringData is write-only.
    object.as_object_mut().map(|o| o.remove("stringData"));
    let data: std::collections::BTreeMap<&str, ByteString> = [
        ("tls.crt", &fresh.cert_pem),
        ("tls.key", &fresh.key_pem),
        ("ca.crt", &fresh.ca_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k, ByteString(v.as_bytes().to_vec())))
    .collect();
    object["data"] = serde_json::to_value(data)?;
    secrets
        .patch(
            CERT_SECRET,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("cannot write Secret {namespace}/{CERT_SECRET}"))?;
    let bundle = match &current {
        Some(old) => format!("{}{}", fresh.ca_pem, old.ca_pem),
        None => fresh.ca_pem.clone(),
    };
    patch_ca_bundle(client, &bundle).await?;
    tracing::info!(not_after = %fresh.not_after, "generated the webhook certificate");
    Ok(fresh)
}

/// The certificate's expiry from its Secret's annotation: Unix seconds (RFC 3339 accepted too).
fn parse_not_after(text: &str) -> Option<OffsetDateTime> {
    match text.parse::<i64>() {
        Ok(seconds) => OffsetDateTime::from_unix_timestamp(seconds).ok(),
        Err(_) => OffsetDateTime::parse(text, &Rfc3339).ok(),
    }
}

async fn patch_ca_bundle(client: &Client, ca_pem: &str) -> anyhow::Result<()> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let encoded = ByteString(ca_pem.as_bytes().to_vec());
    let patch =
        json!({"webhooks": [{"name": "mpod.kb.io", "clientConfig": {"caBundle": encoded}}]});
    match api
        .patch(
            WEBHOOK_CONFIGURATION,
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::warn!("MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION} not found: pods will not be instrumented until it is installed");
            Ok(())
        }
        Err(err) => Err(err).context(format!(
            "cannot update the caBundle of {WEBHOOK_CONFIGURATION}"
        )),
    }
}

async fn rotate_certificates(
    client: Client,
    options: RunOptions,
    cert: Arc<ReloadableCert>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CERT_CHECK_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
        let renewed = if options.cert_manager {
            read_mounted_cert().await
        } else {
            ensure_certificate(&client, &options.namespace, None)
                .await
                .map(|c| (c.cert_pem, c.key_pem))
        };
        match renewed.and_then(|(c, k)| Ok(certs::certified_key(&c, &k)?)) {
            Ok(key) => cert.replace(key),
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "cannot renew the webhook certificate")
            }
        }
    }
}
