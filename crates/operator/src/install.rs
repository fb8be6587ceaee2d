//! Everything needed to run the operator, without Helm: the CRDs, least-privilege RBAC, the
//! operator Deployment, the webhook Service and MutatingWebhookConfiguration, and the webhook's
//! certificate (self-generated here and renewed by the operator, or cert-manager's).
//! `threadline install | kubectl apply -f -` installs it; `deploy/` holds the same set as a
//! kustomize base (without a certificate: the operator creates it at start).

use serde_json::{json, Value};

use crate::certs::{self, CertError};
use crate::collector::DEFAULT_IMAGE;
use crate::webhook::MUTATE_PATH;

pub const OPERATOR_NAME: &str = "threadline-operator";
pub const WEBHOOK_SERVICE: &str = "threadline-operator-webhook";
pub const WEBHOOK_CONFIGURATION: &str = "threadline-operator-mutation";
pub const CERT_SECRET: &str = "threadline-operator-webhook-cert";
/// Annotation on the certificate Secret: when the serving certificate expires (Unix seconds).
pub const NOT_AFTER_ANNOTATION: &str = "threadline.dev/not-after";
pub const WEBHOOK_PORT: i32 = 9443;
pub const DEFAULT_NAMESPACE: &str = "threadline-system";

const COLLECTOR_CRD: &str = include_str!("../crds/opentelemetry.io_opentelemetrycollectors.yaml");
const INSTRUMENTATION_CRD: &str = include_str!("../crds/opentelemetry.io_instrumentations.yaml");

/// How to install.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    pub namespace: String,
    pub image: String,
    /// Let cert-manager issue the webhook certificate (an Issuer and a Certificate are emitted,
    /// and cert-manager injects the CA bundle).
    pub cert_manager: bool,
    /// Emit a freshly generated certificate Secret and the CA bundle (`threadline install`);
    /// without it the operator generates them when it starts (`deploy/`).
    pub generate_certificate: bool,
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.into(),
            image: DEFAULT_IMAGE.into(),
            cert_manager: false,
            generate_certificate: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("embedded CRD {0} is not valid YAML: {1}")]
    Crd(&'static str, serde_yaml_ng::Error),
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// The CRDs as Threadline installs them: upstream's, with `spec.config` accepting a string or an
/// object in every version.
pub fn crds() -> Result<Vec<Value>, InstallError> {
    let mut collector: Value = serde_yaml_ng::from_str(COLLECTOR_CRD)
        .map_err(|e| InstallError::Crd("opentelemetrycollectors", e))?;
    if let Some(versions) = collector["spec"]["versions"].as_array_mut() {
        for version in versions {
            let config = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"]
                ["properties"]["config"];
            if config.is_object() {
                *config = json!({
                    "description": "Collector configuration: an object (v1beta1 form) or a YAML \
                                    string (v1alpha1 form); Threadline accepts both.",
                    "x-kubernetes-preserve-unknown-fields": true,
                });
            }
        }
    }
    let instrumentation: Value = serde_yaml_ng::from_str(INSTRUMENTATION_CRD)
        .map_err(|e| InstallError::Crd("instrumentations", e))?;
    Ok(vec![collector, instrumentation])
}

fn labels() -> Value {
    json!({
        "app.kubernetes.io/name": OPERATOR_NAME,
        "app.kubernetes.io/part-of": "threadline",
    })
}

fn rbac(namespace: &str, cert_manager: bool) -> Vec<Value> {
    let verbs_all = json!(["get", "list", "watch", "create", "update", "patch", "delete"]);
    let mut rules = vec![
        json!({"apiGroups": ["opentelemetry.io"], "resources": ["opentelemetrycollectors"], "verbs": ["get", "list", "watch", "update", "patch"]}),
        json!({"apiGroups": ["opentelemetry.io"], "resources": ["opentelemetrycollectors/status"], "verbs": ["get", "update", "patch"]}),
        json!({"apiGroups": ["opentelemetry.io"], "resources": ["opentelemetrycollectors/finalizers"], "verbs": ["update"]}),
        json!({"apiGroups": ["opentelemetry.io"], "resources": ["instrumentations"], "verbs": ["get", "list", "watch"]}),
        json!({"apiGroups": [""], "resources": ["configmaps", "services", "serviceaccounts"], "verbs": verbs_all}),
        json!({"apiGroups": ["apps"], "resources": ["deployments", "daemonsets", "statefulsets"], "verbs": verbs_all}),
        // Owner lookups for OTEL_SERVICE_NAME and k8s.* attributes (ReplicaSet → Deployment).
        json!({"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]}),
        json!({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]}),
        json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}),
        json!({"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}),
    ];
    if !cert_manager {
        rules.push(json!({
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [WEBHOOK_CONFIGURATION],
            "verbs": ["get", "patch"],
        }));
    }
    let mut objects = vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": OPERATOR_NAME, "namespace": namespace, "labels": labels()},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": OPERATOR_NAME, "labels": labels()},
            "rules": rules,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": OPERATOR_NAME, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": OPERATOR_NAME},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_NAME, "namespace": namespace}],
        }),
    ];
    if !cert_manager {
        // The certificate Secret lives in the operator's own namespace only.
        objects.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": OPERATOR_NAME, "namespace": namespace, "labels": labels()},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "update", "patch"]}],
        }));
        objects.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": OPERATOR_NAME, "namespace": namespace, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OPERATOR_NAME},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_NAME, "namespace": namespace}],
        }));
    }
    objects
}

fn operator_deployment(options: &InstallOptions) -> Value {
    let mut args = vec![json!("operator"), json!("run")];
    if options.cert_manager {
        args.push(json!("--cert-manager"));
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": OPERATOR_NAME, "namespace": options.namespace, "labels": labels()},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": OPERATOR_NAME}},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {
                    "serviceAccountName": OPERATOR_NAME,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "operator",
                        "image": options.image,
                        "args": args,
                        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                        "ports": [
                            {"name": "webhook", "containerPort": WEBHOOK_PORT, "protocol": "TCP"},
                            {"name": "health", "containerPort": 8081, "protocol": "TCP"},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8081}},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8081}},
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"memory": "256Mi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "webhook-cert", "mountPath": "/tmp/k8s-webhook-server/serving-certs", "readOnly": true}],
                    }],
                    "volumes": [{"name": "webhook-cert", "secret": {"secretName": CERT_SECRET, "optional": !options.cert_manager}}],
                },
            },
        },
    })
}

fn webhook_service(namespace: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": WEBHOOK_SERVICE, "namespace": namespace, "labels": labels()},
        "spec": {
            "selector": {"app.kubernetes.io/name": OPERATOR_NAME},
            "ports": [{"name": "https", "port": 443, "targetPort": WEBHOOK_PORT, "protocol": "TCP"}],
        },
    })
}

/// The MutatingWebhookConfiguration for pods, as upstream's (`mpod.kb.io`, CREATE, Ignore).
pub fn webhook_configuration(
    namespace: &str,
    ca_bundle: Option<&str>,
    cert_manager: bool,
) -> Value {
    let mut client_config = json!({
        "service": {"name": WEBHOOK_SERVICE, "namespace": namespace, "path": MUTATE_PATH, "port": 443},
    });
    if let Some(ca) = ca_bundle {
        client_config["caBundle"] = json!(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            ca
        ));
    }
    let mut metadata = json!({"name": WEBHOOK_CONFIGURATION, "labels": labels()});
    if cert_manager {
        metadata["annotations"] = json!({"cert-manager.io/inject-ca-from": format!("{namespace}/{OPERATOR_NAME}-serving-cert")});
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata,
        "webhooks": [{
            "name": "mpod.kb.io",
            "admissionReviewVersions": ["v1"],
            "clientConfig": client_config,
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "timeoutSeconds": 10,
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            // Never intercept the operator's own pods: it must be able to start without itself.
            "objectSelector": {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "NotIn", "values": [OPERATOR_NAME]}]},
        }],
    })
}

/// The certificate Secret for a generated certificate.
pub fn certificate_secret(namespace: &str, cert: &certs::WebhookCertificate) -> Value {
    // Unix seconds: a bare RFC 3339 time is a YAML 1.1 timestamp, which YAML tools (PyYAML,
    // yq) would turn into a date where Kubernetes wants a string.
    let not_after = cert.not_after.unix_timestamp().to_string();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": CERT_SECRET,
            "namespace": namespace,
            "labels": labels(),
            "annotations": {NOT_AFTER_ANNOTATION: not_after},
        },
        "stringData": {"tls.crt": cert.cert_pem, "tls.key": cert.key_pem, "ca.crt": cert.ca_pem},
    })
}

/// Every object of an installation, in apply order.
pub fn objects(options: &InstallOptions) -> Result<Vec<Value>, InstallError> {
    let namespace = &options.namespace;
    let mut objects = vec![json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": labels()},
    })];
    objects.extend(crds()?);
    objects.extend(rbac(namespace, options.cert_manager));
    let mut ca_bundle = None;
    if options.cert_manager {
        objects.push(json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "Issuer",
            "metadata": {"name": format!("{OPERATOR_NAME}-selfsigned"), "namespace": namespace, "labels": labels()},
            "spec": {"selfSigned": {}},
        }));
        objects.push(json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": {"name": format!("{OPERATOR_NAME}-serving-cert"), "namespace": namespace, "labels": labels()},
            "spec": {
                "dnsNames": certs::service_dns_names(WEBHOOK_SERVICE, namespace),
                "issuerRef": {"kind": "Issuer", "name": format!("{OPERATOR_NAME}-selfsigned")},
                "secretName": CERT_SECRET,
            },
        }));
    } else if options.generate_certificate {
        let cert = certs::generate(&certs::service_dns_names(WEBHOOK_SERVICE, namespace))?;
        ca_bundle = Some(cert.ca_pem.clone());
        objects.push(certificate_secret(namespace, &cert));
    }
    objects.push(operator_deployment(options));
    objects.push(webhook_service(namespace));
    objects.push(webhook_configuration(
        namespace,
        ca_bundle.as_deref(),
        options.cert_manager,
    ));
    Ok(objects)
}

/// The kustomize base under `deploy/`: file name → content. Objects carry the default namespace
/// (`threadline-system`).
pub fn kustomize_base() -> Result<Vec<(String, String)>, InstallError> {
    let options = InstallOptions {
        generate_certificate: false,
        ..InstallOptions::default()
    };
    let objects = objects(&options)?;
    let mut files: Vec<(String, Vec<Value>)> = vec![
        ("namespace.yaml".into(), Vec::new()),
        ("crds.yaml".into(), Vec::new()),
        ("rbac.yaml".into(), Vec::new()),
        ("operator.yaml".into(), Vec::new()),
        ("webhook.yaml".into(), Vec::new()),
    ];
    for object in objects {
        let index = match object["kind"].as_str().unwrap_or_default() {
            "Namespace" => 0,
            "CustomResourceDefinition" => 1,
            "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => 2,
            "Deployment" | "Service" => 3,
            _ => 4,
        };
        files[index].1.push(object);
    }
    let header =
        "# Generated by `threadline install --write-kustomize deploy/`; do not edit by hand.\n";
    let mut out: Vec<(String, String)> = files
        .iter()
        .map(|(name, objects)| {
            (
                name.clone(),
                format!("{header}{}", crate::render::to_yaml_stream(objects)),
            )
        })
        .collect();
    let resources: Vec<String> = files
        .iter()
        .map(|(name, _)| format!("  - {name}\n"))
        .collect();
    out.push((
        "kustomization.yaml".into(),
        format!(
            "{header}apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {DEFAULT_NAMESPACE}\nresources:\n{}",
            resources.concat()
        ),
    ));
    Ok(out)
}
