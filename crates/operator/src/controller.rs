//! The reconcile loop: for each `OpenTelemetryCollector`, apply the planned objects (server-side
//! apply, owned by the resource so deleting it deletes them), remove what an older spec left
//! (ConfigMaps of earlier configs, a workload of another mode), and write the status. An invalid
//! config is reported in the status (`ConfigValid=False`) and as a Warning event, and nothing is
//! rolled out: the running collectors keep their last good config.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{json, Value};

use crate::collector::{self, CollectorObjects};
use crate::crd::{
    collector_api_resource, CollectorStatus, Condition, OpenTelemetryCollector, ScaleStatus,
};
use crate::render::{plan_collectors, Note};

/// The field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "threadline-operator";
/// How often each resource is reconciled even without changes (status, wiring of other
/// resources).
pub const RESYNC: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{action} {kind} {name}: {source}")]
    Api {
        action: &'static str,
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the resource has no namespace or name")]
    Unnamed,
}

/// What reconcile needs.
pub struct Context {
    pub client: Client,
    /// Every collector resource (the wiring looks across them).
    pub collectors: Store<OpenTelemetryCollector>,
    pub recorder: Recorder,
}

fn api_resource_of(object: &Value) -> ApiResource {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A condition, keeping the previous transition time when its status did not change.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(now_rfc3339);
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

fn object_reference(collector: &OpenTelemetryCollector) -> ObjectReference {
    ObjectReference {
        api_version: Some("opentelemetry.io/v1beta1".into()),
        kind: Some("OpenTelemetryCollector".into()),
        name: collector.metadata.name.clone(),
        namespace: collector.metadata.namespace.clone(),
        uid: collector.metadata.uid.clone(),
        resource_version: collector.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// Reconciles one collector resource.
pub async fn reconcile(
    collector: Arc<OpenTelemetryCollector>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let (Some(namespace), Some(name)) = (
        collector.metadata.namespace.clone(),
        collector.metadata.name.clone(),
    ) else {
        return Err(ReconcileError::Unnamed);
    };
    if collector
        .spec
        .management_state
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("unmanaged"))
    {
        return Ok(Action::await_change());
    }
    let mut all: Vec<OpenTelemetryCollector> = ctx
        .collectors
        .state()
        .iter()
        .map(|c| (**c).clone())
        .filter(|c| {
            !(c.metadata.namespace.as_deref() == Some(&namespace)
                && c.metadata.name.as_deref() == Some(&name))
        })
        .collect();
    all.push((*collector).clone());
    let plans = plan_collectors(&all);
    let Some(plan) = plans.into_iter().last() else {
        return Ok(Action::requeue(RESYNC));
    };
    let previous = collector.status.clone().unwrap_or_default().conditions;
    let generation = collector.metadata.generation;
    let collectors_api: Api<OpenTelemetryCollector> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &collector_api_resource());

    let objects = match plan.objects {
        Ok(objects) => objects,
        Err(err) => {
            let message = err.to_string();
            tracing::warn!(%namespace, %name, %message, "not rolled out");
            let mut status = collector.status.clone().unwrap_or_default();
            status.conditions = vec![condition(
                &previous,
                "ConfigValid",
                false,
                "InvalidConfig",
                message.clone(),
                generation,
            )];
            status.observed_generation = generation;
            patch_status(&collectors_api, &name, &status).await?;
            let event = Event {
                type_: EventType::Warning,
                reason: "InvalidConfig".into(),
                note: Some(truncate(&message, 1000)),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(err) = ctx
                .recorder
                .publish(&event, &object_reference(&collector))
                .await
            {
                tracing::warn!(%err, "cannot record the event");
            }
            return Ok(Action::await_change());
        }
    };

    let params = PatchParams::apply(FIELD_MANAGER).force();
    for object in objects.all() {
        let resource = api_resource_of(object);
        let object_name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
        api.patch(&object_name, &params, &Patch::Apply(object))
            .await
            .map_err(|source| ReconcileError::Api {
                action: "apply",
                kind: resource.kind.clone(),
                name: object_name.clone(),
                source,
            })?;
    }
    remove_stale(&ctx.client, &collector, &namespace, &objects).await?;

    let status = build_status(
        &ctx.client,
        &collector,
        &namespace,
        &objects,
        &plan.notes,
        &previous,
    )
    .await?;
    if collector.status.as_ref() != Some(&status) {
        patch_status(&collectors_api, &name, &status).await?;
    }
    Ok(Action::requeue(RESYNC))
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

async fn patch_status(
    api: &Api<OpenTelemetryCollector>,
    name: &str,
    status: &CollectorStatus,
) -> Result<(), ReconcileError> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .map(|_| ())
    .map_err(|source| ReconcileError::Api {
        action: "update status of",
        kind: "OpenTelemetryCollector".into(),
        name: name.to_string(),
        source,
    })
}

fn owned_by(object: &DynamicObject, collector: &OpenTelemetryCollector) -> bool {
    object.owner_references().iter().any(|o| {
        o.kind == "OpenTelemetryCollector" && Some(&o.uid) == collector.metadata.uid.as_ref()
    })
}

/// Deletes ConfigMaps of earlier configs and the workload of an earlier mode.
async fn remove_stale(
    client: &Client,
    collector: &OpenTelemetryCollector,
    namespace: &str,
    objects: &CollectorObjects,
) -> Result<(), ReconcileError> {
    let map_err = |action: &'static str, kind: &str, name: &str| {
        let kind = kind.to_string();
        let name = name.to_string();
        move |source| ReconcileError::Api {
            action,
            kind,
            name,
            source,
        }
    };
    let config_maps: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap")),
    );
    let selector = collector::selector_string(collector);
    let current = objects.config_map["metadata"]["name"]
        .as_str()
        .unwrap_or_default();
    let listed = config_maps
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(map_err("list", "ConfigMap", &selector))?;
    for old in listed.items {
        let old_name = old.name_any();
        if old_name != current && owned_by(&old, collector) {
            config_maps
                .delete(&old_name, &DeleteParams::default())
                .await
                .map_err(map_err("delete", "ConfigMap", &old_name))?;
        }
    }
    let workload_name = objects.workload["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for kind in ["Deployment", "DaemonSet", "StatefulSet"] {
        if kind == objects.workload_kind() {
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            namespace,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", kind)),
        );
        let existing =
            api.get_opt(&workload_name)
                .await
                .map_err(map_err("get", kind, &workload_name))?;
        if existing.is_some_and(|w| owned_by(&w, collector)) {
            api.delete(&workload_name, &DeleteParams::default())
                .await
                .map_err(map_err("delete", kind, &workload_name))?;
        }
    }
    Ok(())
}

async fn build_status(
    client: &Client,
    collector: &OpenTelemetryCollector,
    namespace: &str,
    objects: &CollectorObjects,
    notes: &[Note],
    previous: &[Condition],
) -> Result<CollectorStatus, ReconcileError> {
    let kind = objects.workload_kind().to_string();
    let name = objects.workload["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", &kind)),
    );
    let workload = api
        .get_opt(&name)
        .await
        .map_err(|source| ReconcileError::Api {
            action: "get",
            kind: kind.clone(),
            name: name.clone(),
            source,
        })?;
    let status = workload
        .as_ref()
        .map(|w| w.data["status"].clone())
        .unwrap_or(Value::Null);
    let as_i32 = |v: &Value| v.as_i64().and_then(|n| i32::try_from(n).ok()).unwrap_or(0);
    let (ready, desired) = match kind.as_str() {
        "DaemonSet" => (
            as_i32(&status["numberReady"]),
            as_i32(&status["desiredNumberScheduled"]),
        ),
        _ => (
            as_i32(&status["readyReplicas"]),
            objects.workload["spec"]["replicas"]
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(1),
        ),
    };
    let generation = collector.metadata.generation;
    let mut conditions = vec![
        condition(
            previous,
            "ConfigValid",
            true,
            "Valid",
            "the config passed the collector's validator".into(),
            generation,
        ),
        condition(
            previous,
            "Ready",
            desired > 0 && ready >= desired,
            if desired > 0 && ready >= desired {
                "AllReplicasReady"
            } else {
                "ReplicasNotReady"
            },
            format!("{ready}/{desired} replicas of {kind} {name} ready"),
            generation,
        ),
    ];
    for note in notes {
        conditions.push(condition(
            previous,
            note.type_,
            note.status,
            note.reason,
            note.message.clone(),
            generation,
        ));
    }
    let image = objects.workload["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .map(str::to_string);
    Ok(CollectorStatus {
        image,
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
        scale: Some(ScaleStatus {
            replicas: ready,
            selector: collector::selector_string(collector),
            status_replicas: format!("{ready}/{desired}"),
        }),
        conditions,
        observed_generation: generation,
    })
}

fn error_policy(
    collector: Arc<OpenTelemetryCollector>,
    error: &ReconcileError,
    _ctx: Arc<Context>,
) -> Action {
    tracing::warn!(name = %collector.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

/// Runs the controller until the process is asked to stop.
pub async fn run_controller(client: Client) {
    let resource = collector_api_resource();
    let api: Api<OpenTelemetryCollector> = Api::all_with(client.clone(), &resource);
    let controller = Controller::new_with(api, watcher::Config::default(), resource);
    let owned = |kind: &str, group: &str| {
        let r = ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind));
        (Api::<DynamicObject>::all_with(client.clone(), &r), r)
    };
    let mut controller = controller;
    for (kind, group) in [
        ("ConfigMap", ""),
        ("Service", ""),
        ("ServiceAccount", ""),
        ("Deployment", "apps"),
        ("DaemonSet", "apps"),
        ("StatefulSet", "apps"),
    ] {
        let (api, r) = owned(kind, group);
        controller = controller.owns_with(
            api,
            r,
            watcher::Config::default()
                .labels("app.kubernetes.io/managed-by=opentelemetry-operator"),
        );
    }
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: std::env::var("HOSTNAME").ok(),
    };
    let context = Arc::new(Context {
        client: client.clone(),
        collectors: controller.store(),
        recorder: Recorder::new(client, reporter),
    });
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(err) => tracing::debug!(%err, "reconcile error"),
            }
        })
        .await;
}

/// A store of every `kind` in the cluster kept current by a watch, for the webhook's catalog.
pub fn watch_all<K>(api: Api<K>, dyntype: K::DynamicType) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let store = writer.as_reader();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(err) = event {
                tracing::warn!(%err, "watch interrupted; kube's watcher retries");
            }
        }
    });
    store
}

/// Namespace annotations from a store of namespaces.
pub fn namespace_annotations(
    namespaces: &Store<k8s_openapi::api::core::v1::Namespace>,
) -> BTreeMap<String, BTreeMap<String, String>> {
    namespaces
        .state()
        .iter()
        .filter_map(|ns| {
            Some((
                ns.metadata.name.clone()?,
                ns.metadata.annotations.clone().unwrap_or_default(),
            ))
        })
        .collect()
}
