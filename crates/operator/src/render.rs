//! What the operator would do with a set of resources, computed offline: the objects for every
//! `OpenTelemetryCollector` (after upstream's config defaults and the trace-id wiring), and each
//! workload annotated for injection with its pod template as the webhook would mutate it.
//! `threadline operator render -f FILE...` prints this for GitOps review; the controller uses
//! [`plan_collectors`] for the live cluster.

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;

use crate::collector::{self, CollectorObjects, RenderError};
use crate::crd::{Instrumentation, OpenTelemetryCollector};
use crate::inject::{self, Catalog, Owners, ANNOTATION_PREFIX};
use crate::wiring::{self, Planned};

/// A condition to report on a collector resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The plan for one collector resource.
#[derive(Debug)]
pub struct CollectorPlan {
    pub namespace: String,
    pub name: String,
    pub objects: Result<CollectorObjects, RenderError>,
    pub notes: Vec<Note>,
}

/// Plans every collector in `collectors` together (the wiring looks across resources).
pub fn plan_collectors(collectors: &[OpenTelemetryCollector]) -> Vec<CollectorPlan> {
    let mut trees = Vec::new();
    let mut planned = Vec::new();
    let mut errors: Vec<Option<RenderError>> = Vec::new();
    for resource in collectors {
        match collector::config_tree(resource) {
            Ok(mut tree) => {
                let rewritten = wiring::apply_defaults(&mut tree);
                planned.push(Planned {
                    resource,
                    tree,
                    rewritten,
                });
                errors.push(None);
            }
            Err(err) => {
                planned.push(Planned {
                    resource,
                    tree: serde_yaml_ng::Value::Null,
                    rewritten: false,
                });
                errors.push(Some(err));
            }
        }
    }
    let wiring_notes = wiring::wire(&mut planned);
    for p in &planned {
        trees.push((p.tree.clone(), p.rewritten));
    }
    collectors
        .iter()
        .zip(trees)
        .zip(errors)
        .enumerate()
        .map(|(index, ((resource, (tree, rewritten)), error))| {
            let objects = match error {
                Some(err) => Err(err),
                None => collector::render(resource, &tree, rewritten),
            };
            let notes = wiring_notes
                .iter()
                .filter(|n| n.resource == index)
                .map(|n| Note {
                    type_: wiring::CONDITION_TYPE,
                    status: n.status,
                    reason: n.reason,
                    message: n.message.clone(),
                })
                .collect();
            CollectorPlan {
                namespace: resource
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                name: resource.metadata.name.clone().unwrap_or_default(),
                objects,
                notes,
            }
        })
        .collect()
}

/// The result of rendering a set of files.
#[derive(Debug, Default)]
pub struct Rendered {
    pub objects: Vec<Value>,
    /// Per resource: notes and errors, `namespace/name: message`.
    pub messages: Vec<String>,
    /// Whether some collector could not be rendered (invalid config).
    pub failed: bool,
}

/// Renders the documents of manifest files (already parsed).
pub fn render_documents(documents: &[Value]) -> Rendered {
    let mut collectors = Vec::new();
    let mut catalog = Catalog::default();
    let mut workloads = Vec::new();
    let mut rendered = Rendered::default();
    for doc in documents {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default();
        match (api_version.split('/').next().unwrap_or_default(), kind) {
            ("opentelemetry.io", "OpenTelemetryCollector") => {
                match serde_json::from_value::<OpenTelemetryCollector>(doc.clone()) {
                    Ok(mut c) => {
                        c.metadata.namespace.get_or_insert_with(|| "default".into());
                        collectors.push(c);
                    }
                    Err(err) => {
                        rendered.failed = true;
                        rendered.messages.push(format!(
                            "{}: not a valid OpenTelemetryCollector: {err}",
                            describe(doc)
                        ));
                    }
                }
            }
            ("opentelemetry.io", "Instrumentation") => {
                match serde_json::from_value::<Instrumentation>(doc.clone()) {
                    Ok(mut i) => {
                        i.metadata.namespace.get_or_insert_with(|| "default".into());
                        catalog.instrumentations.push(i);
                    }
                    Err(err) => {
                        rendered.failed = true;
                        rendered.messages.push(format!(
                            "{}: not a valid Instrumentation: {err}",
                            describe(doc)
                        ));
                    }
                }
            }
            (_, "Namespace") => {
                if let (Some(name), Some(annotations)) = (
                    doc["metadata"]["name"].as_str(),
                    doc["metadata"]
                        .get("annotations")
                        .and_then(|a| serde_json::from_value(a.clone()).ok()),
                ) {
                    catalog
                        .namespace_annotations
                        .insert(name.to_string(), annotations);
                }
            }
            (
                _,
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "CronJob"
                | "Pod",
            ) => workloads.push(doc.clone()),
            _ => {}
        }
    }
    for plan in plan_collectors(&collectors) {
        for note in &plan.notes {
            rendered.messages.push(format!(
                "{}/{}: {}={} {}: {}",
                plan.namespace,
                plan.name,
                note.type_,
                if note.status { "True" } else { "False" },
                note.reason,
                note.message
            ));
        }
        match plan.objects {
            Ok(objects) => {
                for warning in &objects.warnings {
                    rendered.messages.push(format!(
                        "{}/{}: warning: {warning}",
                        plan.namespace, plan.name
                    ));
                }
                rendered.objects.extend(objects.all().into_iter().cloned());
            }
            Err(err) => {
                rendered.failed = true;
                rendered.messages.push(format!(
                    "{}/{}: not rolled out: {err}",
                    plan.namespace, plan.name
                ));
            }
        }
    }
    for workload in workloads {
        if let Some((object, warnings)) = inject_workload(&catalog, &workload) {
            rendered.messages.extend(
                warnings
                    .into_iter()
                    .map(|w| format!("{}: {w}", describe(&workload))),
            );
            rendered.objects.push(object);
        }
    }
    rendered
}

fn describe(doc: &Value) -> String {
    format!(
        "{} {}/{}",
        doc["kind"].as_str().unwrap_or("object"),
        doc["metadata"]["namespace"].as_str().unwrap_or("default"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Where a workload keeps its pod template.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        "Pod" => Some(""),
        _ => None,
    }
}

/// The workload with its pod template mutated, when it asks for injection.
fn inject_workload(catalog: &Catalog, workload: &Value) -> Option<(Value, Vec<String>)> {
    let kind = workload["kind"].as_str()?;
    let pointer = template_pointer(kind)?;
    let template = workload.pointer(pointer)?;
    let namespace = workload["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let metadata: ObjectMeta =
        serde_json::from_value(template.get("metadata").cloned().unwrap_or_default()).ok()?;
    let asks = |annotations: Option<&std::collections::BTreeMap<String, String>>| {
        annotations.is_some_and(|a| {
            a.keys()
                .any(|k| k.starts_with(ANNOTATION_PREFIX) && k.contains("/inject-"))
        })
    };
    if !asks(metadata.annotations.as_ref()) && !asks(catalog.namespace_annotations.get(&namespace))
    {
        return None;
    }
    let spec: PodSpec =
        serde_json::from_value(template.get("spec").cloned().unwrap_or_default()).ok()?;
    let pod = Pod {
        metadata,
        spec: Some(spec),
        status: None,
    };
    let name = workload["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let owners = offline_owners(kind, &name, workload);
    let mutation = inject::mutate(catalog, &namespace, &pod, &owners);
    let mut messages = mutation.warnings.clone();
    if !mutation.injected.is_empty() {
        messages.extend(unknown_offline(kind, &name));
    }
    let mut out = workload.clone();
    let mut new_template = serde_json::to_value(&mutation.pod).ok()?;
    if let Some(t) = new_template.as_object_mut() {
        // A pod template is only metadata and spec.
        for key in ["status", "apiVersion", "kind"] {
            t.remove(key);
        }
    }
    if pointer.is_empty() {
        let keep_kind = (out["apiVersion"].clone(), out["kind"].clone());
        out = new_template;
        out["apiVersion"] = keep_kind.0;
        out["kind"] = keep_kind.1;
    } else if let Some(slot) = out.pointer_mut(pointer) {
        *slot = new_template;
    }
    Some((out, messages))
}

/// The owners the webhook would find for a pod of `workload`, as far as the file tells: the
/// workload itself, and for a ReplicaSet or Job the owners its own metadata names (a Pod's
/// are its own owner references).
fn offline_owners(kind: &str, name: &str, workload: &Value) -> Owners {
    let own: Vec<OwnerReference> = workload["metadata"]
        .get("ownerReferences")
        .and_then(|o| serde_json::from_value(o.clone()).ok())
        .unwrap_or_default();
    if kind == "Pod" {
        return inject::resolve_owners(&own, &|_, _| Vec::new());
    }
    let this = OwnerReference {
        api_version: workload["apiVersion"].as_str().unwrap_or_default().into(),
        kind: kind.into(),
        name: name.into(),
        ..OwnerReference::default()
    };
    inject::resolve_owners(&[this], &|_, _| own.clone())
}

/// What the webhook knows at admission that a file cannot tell: said plainly, so nobody
/// takes the rendered resource attributes for the whole set.
fn unknown_offline(kind: &str, name: &str) -> Option<String> {
    let (attribute, value, why) = match kind {
        "Deployment" => (
            "k8s.replicaset.name",
            format!("{name}-<pod-template-hash>"),
            "the Deployment controller in the cluster computes the hash from the pod template \
             when it creates the ReplicaSet",
        ),
        "CronJob" => (
            "k8s.job.name",
            format!("{name}-<scheduled-time>"),
            "the Job is named by the CronJob controller when the schedule fires",
        ),
        _ => return None,
    };
    Some(format!(
        "note: cannot know offline: {attribute} (it will be {value}; {why}), so \
         OTEL_RESOURCE_ATTRIBUTES here lacks it. The webhook adds it when it mutates pods of the \
         original {kind}; pods of this rendered template are already instrumented, so it leaves \
         them as rendered"
    ))
}

/// Parses the YAML documents of one file (`---` separated); empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, serde_yaml_ng::Error> {
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// Objects as a multi-document YAML stream.
pub fn to_yaml_stream(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}
