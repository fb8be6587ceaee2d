//! The upstream operator's custom resources as Threadline reads them: `OpenTelemetryCollector`
//! (`opentelemetry.io/v1beta1`, also served as `v1alpha1`) and `Instrumentation`
//! (`opentelemetry.io/v1alpha1`).
//!
//! Every resource valid under upstream's CRDs must be accepted, so nothing here denies unknown
//! fields: the fields Threadline acts on are typed, the rest is kept in `other` and ignored.
//! `spec.config` is read both as upstream's v1beta1 object and as the v1alpha1 YAML string (the
//! seed's manifests use the string form with `v1beta1`; Threadline's CRD accepts both).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimTemplate,
    PodSecurityContext, ResourceRequirements, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::{ApiResource, GroupVersionKind, Object};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const GROUP: &str = "opentelemetry.io";

/// An `OpenTelemetryCollector` resource.
pub type OpenTelemetryCollector = Object<CollectorSpec, CollectorStatus>;
/// An `Instrumentation` resource.
pub type Instrumentation = Object<InstrumentationSpec, Value>;

/// The API resource of `OpenTelemetryCollector` at the version the operator reads (`v1beta1`).
pub fn collector_api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1beta1", "OpenTelemetryCollector"),
        "opentelemetrycollectors",
    )
}

/// The API resource of `Instrumentation` (`v1alpha1`).
pub fn instrumentation_api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1alpha1", "Instrumentation"),
        "instrumentations",
    )
}

/// How the collector is deployed (`spec.mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectorMode {
    #[default]
    Deployment,
    Daemonset,
    Statefulset,
    Sidecar,
}

impl CollectorMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CollectorMode::Deployment => "deployment",
            CollectorMode::Daemonset => "daemonset",
            CollectorMode::Statefulset => "statefulset",
            CollectorMode::Sidecar => "sidecar",
        }
    }
}

/// `spec` of an `OpenTelemetryCollector`: the fields Threadline renders into objects.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CollectorSpec {
    pub mode: CollectorMode,
    /// The collector config: a YAML string (v1alpha1 form) or an object (v1beta1 form).
    pub config: Value,
    pub replicas: Option<i32>,
    pub image: Option<String>,
    pub image_pull_policy: Option<String>,
    pub resources: Option<ResourceRequirements>,
    pub env: Vec<EnvVar>,
    pub env_from: Vec<EnvFromSource>,
    /// Extra command-line arguments, `--key=value` each.
    pub args: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
    pub pod_annotations: BTreeMap<String, String>,
    pub security_context: Option<SecurityContext>,
    pub pod_security_context: Option<PodSecurityContext>,
    pub volume_mounts: Vec<VolumeMount>,
    pub volumes: Vec<Volume>,
    pub volume_claim_templates: Vec<PersistentVolumeClaim>,
    pub host_network: bool,
    pub priority_class_name: Option<String>,
    pub termination_grace_period_seconds: Option<i64>,
    /// `managed` (default) or `unmanaged`: an unmanaged resource is left alone.
    pub management_state: Option<String>,
    /// Everything else upstream's schema allows; accepted, not acted upon.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `status` of an `OpenTelemetryCollector`, in upstream's v1beta1 shape.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CollectorStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScaleStatus {
    pub replicas: i32,
    pub selector: String,
    /// `ready/desired`, as upstream's `Ready` column shows.
    pub status_replicas: String,
}

/// A `metav1.Condition`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// `spec` of an `Instrumentation`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InstrumentationSpec {
    pub exporter: ExporterSpec,
    pub resource: ResourceSpec,
    pub propagators: Vec<String>,
    pub sampler: SamplerSpec,
    pub defaults: DefaultsSpec,
    pub env: Vec<EnvVar>,
    pub image_pull_policy: Option<String>,
    pub java: LanguageSpec,
    pub nodejs: LanguageSpec,
    pub python: LanguageSpec,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExporterSpec {
    pub endpoint: Option<String>,
    pub tls: Option<ExporterTls>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ExporterTls {
    #[serde(rename = "secretName")]
    pub secret_name: Option<String>,
    #[serde(rename = "configMapName")]
    pub config_map_name: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceSpec {
    #[serde(rename = "addK8sUIDAttributes")]
    pub add_k8s_uid_attributes: bool,
    pub resource_attributes: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct SamplerSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub argument: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DefaultsSpec {
    pub use_labels_for_resource_attributes: bool,
}

/// One language's section (`java`, `nodejs`, `python`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LanguageSpec {
    pub image: Option<String>,
    pub env: Vec<EnvVar>,
    /// `resources` in `java`, `resourceRequirements` in `nodejs` and `python`.
    #[serde(alias = "resourceRequirements")]
    pub resources: Option<ResourceRequirements>,
    pub volume_limit_size: Option<Quantity>,
    pub volume_claim_template: Option<PersistentVolumeClaimTemplate>,
    pub security_context: Option<SecurityContext>,
    pub extensions: Vec<JavaExtension>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct JavaExtension {
    pub image: String,
    pub dir: String,
}
