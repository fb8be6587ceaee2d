//! Auto-instrumentation injection: what the pod webhook does to a pod, following the upstream
//! operator step for step so that the same `Instrumentation` and pod give the same result.
//!
//! 1. A pod already instrumented (an instrumentation init container, or
//!    `OTEL_RESOURCE_ATTRIBUTES_NODE_NAME` in a container) is left alone: admitting twice injects
//!    once.
//! 2. For each language annotation `instrumentation.opentelemetry.io/inject-<lang>` (pod first,
//!    then namespace, combined as upstream's `annotationValue`): `"true"` picks the namespace's
//!    only Instrumentation, `"false"` or absent nothing, `name` or `namespace/name` that one.
//! 3. Which containers: `instrumentation.opentelemetry.io/container-names` for all languages,
//!    `<lang>-container-names` for one; the first container by default.
//! 4. Per language ([`languages`]), then the common SDK configuration ([`sdk`]).
//!
//! Languages supported: java, nodejs, python (glibc and musl), and sdk (environment only). Other
//! upstream languages (dotnet, go, apache-httpd, nginx) admit the pod unchanged with a warning.

mod languages;
#[cfg(test)]
mod platform_tests;
mod sdk;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::crd::Instrumentation;

pub use languages::{Language, PYTHON_PLATFORM_ANNOTATION};

pub const ANNOTATION_PREFIX: &str = "instrumentation.opentelemetry.io/";
const CONTAINER_NAMES: &str = "instrumentation.opentelemetry.io/container-names";
/// Upstream languages Threadline does not inject yet.
const UNSUPPORTED_LANGUAGES: [&str; 4] = ["dotnet", "go", "apache-httpd", "nginx"];

/// The Instrumentations and namespace annotations the webhook decides with: filled from the
/// cluster by the operator, or from files by `threadline operator render`.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub instrumentations: Vec<Instrumentation>,
    /// Annotations of each namespace, by name (a namespace not listed has none).
    pub namespace_annotations: BTreeMap<String, BTreeMap<String, String>>,
}

/// Why no Instrumentation could be chosen for an annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("no OpenTelemetry Instrumentation instances available in namespace {0}")]
    NoneAvailable(String),
    #[error(
        "multiple OpenTelemetry Instrumentation instances available in namespace {0}, cannot \
         determine which one to select: name one in the annotation"
    )]
    Ambiguous(String),
    #[error("Instrumentation {0}/{1} not found")]
    NotFound(String, String),
}

impl Catalog {
    fn namespace_annotation(&self, namespace: &str, key: &str) -> String {
        self.namespace_annotations
            .get(namespace)
            .and_then(|a| a.get(key))
            .cloned()
            .unwrap_or_default()
    }

    fn in_namespace<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Instrumentation> {
        self.instrumentations
            .iter()
            .filter(move |i| i.metadata.namespace.as_deref().unwrap_or("default") == namespace)
    }

    /// Upstream's `getInstrumentationInstance`.
    fn select(&self, namespace: &str, value: &str) -> Result<Option<Instrumentation>, SelectError> {
        if value.is_empty() || value.eq_ignore_ascii_case("false") {
            return Ok(None);
        }
        if value.eq_ignore_ascii_case("true") {
            let mut all = self.in_namespace(namespace);
            return match (all.next(), all.next()) {
                (None, _) => Err(SelectError::NoneAvailable(namespace.to_string())),
                (Some(_), Some(_)) => Err(SelectError::Ambiguous(namespace.to_string())),
                (Some(only), None) => Ok(Some(only.clone())),
            };
        }
        let (inst_namespace, name) = value.split_once('/').unwrap_or((namespace, value));
        self.in_namespace(inst_namespace)
            .find(|i| i.metadata.name.as_deref() == Some(name))
            .cloned()
            .map(Some)
            .ok_or_else(|| SelectError::NotFound(inst_namespace.to_string(), name.to_string()))
    }
}

/// The effective value of an annotation from the pod's and the namespace's (upstream's
/// `annotationValue`): the pod wins unless it says `"true"` and the namespace names an instance.
pub fn annotation_value(pod: &BTreeMap<String, String>, namespace: &str, key: &str) -> String {
    let pod_value = pod.get(key).cloned().unwrap_or_default();
    if namespace.is_empty() {
        return pod_value;
    }
    if pod_value.is_empty() {
        return namespace.to_string();
    }
    if !pod_value.eq_ignore_ascii_case("true") || namespace.eq_ignore_ascii_case("false") {
        return pod_value;
    }
    namespace.to_string()
}

/// Names of the workloads that own a pod (`k8s.deployment.name`, `k8s.replicaset.name`, ...),
/// resolved through ReplicaSets and Jobs as upstream does.
pub type Owners = BTreeMap<&'static str, String>;

/// The owner names reachable from `references`; `parent_of` returns the owner references of a
/// ReplicaSet or Job (from the API server, or nothing when offline).
pub fn resolve_owners(
    references: &[OwnerReference],
    parent_of: &dyn Fn(&str, &str) -> Vec<OwnerReference>,
) -> Owners {
    let mut owners = Owners::new();
    resolve_into(references, parent_of, &mut owners, 0);
    owners
}

/// The resource attribute naming a workload of `kind` (`Deployment` → `k8s.deployment.name`).
pub fn owner_attribute(kind: &str) -> Option<&'static str> {
    Some(match kind.to_ascii_lowercase().as_str() {
        "replicaset" => "k8s.replicaset.name",
        "deployment" => "k8s.deployment.name",
        "statefulset" => "k8s.statefulset.name",
        "daemonset" => "k8s.daemonset.name",
        "job" => "k8s.job.name",
        "cronjob" => "k8s.cronjob.name",
        _ => return None,
    })
}

fn resolve_into(
    references: &[OwnerReference],
    parent_of: &dyn Fn(&str, &str) -> Vec<OwnerReference>,
    owners: &mut Owners,
    depth: usize,
) {
    if depth > 3 {
        return;
    }
    for owner in references {
        let Some(key) = owner_attribute(&owner.kind) else {
            continue;
        };
        owners.insert(key, owner.name.clone());
        if matches!(key, "k8s.replicaset.name" | "k8s.job.name") {
            let parents = parent_of(&owner.kind, &owner.name);
            resolve_into(&parents, parent_of, owners, depth + 1);
        }
    }
}

/// What admitting a pod did.
#[derive(Clone, Debug, Default)]
pub struct Mutation {
    /// The pod after injection (equal to the input when nothing was injected).
    pub pod: Pod,
    /// The languages injected, in order.
    pub injected: Vec<Language>,
    /// Why something asked for was not injected; the webhook returns these as admission warnings
    /// and records them as events.
    pub warnings: Vec<String>,
}

/// The Instrumentation chosen for one language, and the containers it applies to.
#[derive(Clone, Debug)]
struct Selected {
    language: Language,
    instrumentation: Instrumentation,
    containers: Vec<String>,
}

/// Admits `pod` (in `namespace`): injects what its annotations ask for.
pub fn mutate(catalog: &Catalog, namespace: &str, pod: &Pod, owners: &Owners) -> Mutation {
    let mut result = Mutation {
        pod: pod.clone(),
        ..Mutation::default()
    };
    if pod.spec.as_ref().is_none_or(|s| s.containers.is_empty()) {
        return result;
    }
    if is_already_instrumented(pod) {
        return result;
    }
    let pod_annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let value_of = |key: &str| {
        annotation_value(
            &pod_annotations,
            &catalog.namespace_annotation(namespace, key),
            key,
        )
    };

    for language in UNSUPPORTED_LANGUAGES {
        let value = value_of(&format!("{ANNOTATION_PREFIX}inject-{language}"));
        if !value.is_empty() && !value.eq_ignore_ascii_case("false") {
            result.warnings.push(format!(
                "inject-{language}: {language} auto-instrumentation is not supported by Threadline \
                 yet (supported: java, nodejs, python, sdk); not injected"
            ));
        }
    }

    let mut selected = Vec::new();
    for language in Language::ALL {
        let value = value_of(&format!("{ANNOTATION_PREFIX}inject-{}", language.name()));
        match catalog.select(namespace, &value) {
            Ok(Some(instrumentation)) => selected.push(Selected {
                language,
                instrumentation: with_defaults(instrumentation),
                containers: Vec::new(),
            }),
            Ok(None) => {}
            Err(err) => {
                // As upstream: one failed selection admits the pod unchanged.
                result.warnings.push(format!(
                    "inject-{}: {err}; the pod is admitted without instrumentation",
                    language.name()
                ));
                result.injected.clear();
                return result;
            }
        }
    }
    if selected.is_empty() {
        return result;
    }

    // Containers: the common annotation for all, then each language's own.
    let common = value_of(CONTAINER_NAMES);
    for annotation in std::iter::once(common.clone()).chain(selected.iter().map(|s| {
        value_of(&format!(
            "{ANNOTATION_PREFIX}{}-container-names",
            s.language.name()
        ))
    })) {
        if !annotation.is_empty()
            && !annotation
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ',')
        {
            result.warnings.push(format!(
                "not valid characters included in the instrumentation container annotation {annotation}; \
                 the pod is admitted without instrumentation"
            ));
            return result;
        }
    }
    for s in &mut selected {
        if !common.is_empty() {
            s.containers = common.split(',').map(str::to_string).collect();
        }
        let own = value_of(&format!(
            "{ANNOTATION_PREFIX}{}-container-names",
            s.language.name()
        ));
        if !own.is_empty() {
            s.containers.extend(own.split(',').map(str::to_string));
        }
    }
    if let Err(message) = check_containers(&selected) {
        result.warnings.push(format!(
            "{message}; the pod is admitted without instrumentation"
        ));
        return result;
    }

    let python_platform = value_of(PYTHON_PLATFORM_ANNOTATION);
    let context = languages::Context {
        namespace,
        owners,
        python_platform: &python_platform,
    };
    let mut mutated = pod.clone();
    for s in &mut selected {
        if s.containers.is_empty() {
            s.containers = vec![mutated
                .spec
                .as_ref()
                .and_then(|spec| spec.containers.first())
                .map(|c| c.name.clone())
                .unwrap_or_default()];
        }
        let injected = languages::inject(
            s.language,
            &s.instrumentation,
            &context,
            &mut mutated,
            &s.containers,
            &mut result.warnings,
        );
        if injected {
            result.injected.push(s.language);
        }
    }
    result.pod = mutated;
    result
}

/// Upstream's `areInstrumentedContainersCorrect`.
fn check_containers(selected: &[Selected]) -> Result<(), String> {
    let mut seen = BTreeMap::new();
    for name in selected.iter().flat_map(|s| s.containers.iter()) {
        if !name.is_empty() {
            *seen.entry(name.as_str()).or_insert(0) += 1;
        }
    }
    let duplicates: Vec<&str> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| *k)
        .collect();
    if !duplicates.is_empty() {
        return Err(format!(
            "duplicated container names detected: [{}]",
            duplicates.join(" ")
        ));
    }
    let without = selected.iter().filter(|s| s.containers.is_empty()).count();
    if without > 0 && selected.len() > 1 {
        return Err(
            "incorrect instrumentation configuration - please provide container names for all \
             instrumentations"
                .into(),
        );
    }
    Ok(())
}

/// Upstream's `isAutoInstrumentationInjected`.
pub fn is_already_instrumented(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let init_names = [
        "opentelemetry-auto-instrumentation-java",
        "opentelemetry-auto-instrumentation-nodejs",
        "opentelemetry-auto-instrumentation-python",
        "opentelemetry-auto-instrumentation-dotnet",
        "otel-agent-source-container-clone",
        "otel-agent-attach-apache",
    ];
    if spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| init_names.contains(&c.name.as_str()))
    {
        return true;
    }
    spec.containers.iter().any(|c: &Container| {
        c.name == "opentelemetry-auto-instrumentation"
            || (c.name != "otc-container"
                && c.env.iter().flatten().any(|e| e.name == sdk::ENV_NODE_NAME))
    })
}

/// The defaults upstream's Instrumentation defaulting webhook fills in: each language's image and
/// its init container's resources.
pub fn with_defaults(mut instrumentation: Instrumentation) -> Instrumentation {
    for language in Language::ALL {
        languages::apply_defaults(language, &mut instrumentation.spec);
    }
    instrumentation
}
