//! Per-language injection: an init container copies the agent out of the language's image into
//! an `emptyDir` (200Mi unless `volumeLimitSize` says otherwise), the instrumented containers
//! mount it and get the variable that loads it (JAVA_TOOL_OPTIONS, NODE_OPTIONS, PYTHONPATH).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EphemeralVolumeSource, Pod, ResourceRequirements,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::sdk::{self, append_if_not_set, append_or_replace, env_index, literal};
use super::Owners;
use crate::crd::{Instrumentation, InstrumentationSpec, LanguageSpec};

const VOLUME_PREFIX: &str = "opentelemetry-auto-instrumentation";
const JAVA_MOUNT: &str = "/otel-auto-instrumentation-java";
const NODEJS_MOUNT: &str = "/otel-auto-instrumentation-nodejs";
const PYTHON_MOUNT: &str = "/otel-auto-instrumentation-python";
const PYTHON_PATH_PREFIX: &str =
    "/otel-auto-instrumentation-python/opentelemetry/instrumentation/auto_instrumentation";
/// The pod annotation choosing the Python agent's C library build (upstream's
/// `annotationPythonPlatform`): `glibc` (the default) or `musl`.
pub const PYTHON_PLATFORM_ANNOTATION: &str =
    "instrumentation.opentelemetry.io/otel-python-platform";

/// Default agent images, used when the Instrumentation names none (upstream's operator flags).
pub const DEFAULT_JAVA_IMAGE: &str =
    "ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-java:2.6.0";
pub const DEFAULT_NODEJS_IMAGE: &str =
    "ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-nodejs:0.52.1";
pub const DEFAULT_PYTHON_IMAGE: &str =
    "ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-python:0.48b0";

/// A language the webhook injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Java,
    NodeJs,
    Python,
    /// Environment only, no agent.
    Sdk,
}

impl Language {
    /// In upstream's injection order.
    pub const ALL: [Language; 4] = [
        Language::Java,
        Language::NodeJs,
        Language::Python,
        Language::Sdk,
    ];

    /// As in the annotation `inject-<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Language::Java => "java",
            Language::NodeJs => "nodejs",
            Language::Python => "python",
            Language::Sdk => "sdk",
        }
    }

    fn init_container_name(self) -> String {
        format!("{VOLUME_PREFIX}-{}", self.name())
    }

    fn volume_name(self) -> String {
        format!("{VOLUME_PREFIX}-{}", self.name())
    }

    fn spec(self, spec: &InstrumentationSpec) -> Option<&LanguageSpec> {
        match self {
            Language::Java => Some(&spec.java),
            Language::NodeJs => Some(&spec.nodejs),
            Language::Python => Some(&spec.python),
            Language::Sdk => None,
        }
    }
}

fn quantity(text: &str) -> Quantity {
    Quantity(text.to_string())
}

fn resources(
    cpu_limit: &str,
    memory: &str,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let limits = BTreeMap::from([
        ("cpu".to_string(), quantity(cpu_limit)),
        ("memory".to_string(), quantity(memory)),
    ]);
    let requests = BTreeMap::from([
        ("cpu".to_string(), quantity("50m")),
        ("memory".to_string(), quantity(memory)),
    ]);
    (limits, requests)
}

/// Upstream's Instrumentation defaulting for one language: image and init-container resources.
pub fn apply_defaults(language: Language, spec: &mut InstrumentationSpec) {
    let (target, image, memory) = match language {
        Language::Java => (&mut spec.java, DEFAULT_JAVA_IMAGE, "64Mi"),
        Language::NodeJs => (&mut spec.nodejs, DEFAULT_NODEJS_IMAGE, "128Mi"),
        Language::Python => (&mut spec.python, DEFAULT_PYTHON_IMAGE, "32Mi"),
        Language::Sdk => return,
    };
    if target.image.as_deref().is_none_or(str::is_empty) {
        target.image = Some(image.to_string());
    }
    let (limits, requests) = resources("500m", memory);
    let current = target
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    if current.limits.is_none() {
        current.limits = Some(limits);
    }
    if current.requests.is_none() {
        current.requests = Some(requests);
    }
}

/// Where in the Python agent image the files for `platform` are (upstream's `pythonPlatformSrc`).
fn python_agent_source(platform: &str) -> Result<&'static str, String> {
    match platform {
        "" | "glibc" => Ok("/autoinstrumentation/."),
        "musl" => Ok("/autoinstrumentation-musl/."),
        other => Err(format!(
            "provided {PYTHON_PLATFORM_ANNOTATION} annotation value '{other}' is not supported \
             (supported: glibc, musl)"
        )),
    }
}

/// What the injection needs to know about the pod's surroundings.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub namespace: &'a str,
    /// The workloads owning the pod (`k8s.deployment.name`, ...).
    pub owners: &'a Owners,
    /// The effective `otel-python-platform` annotation (pod, else namespace).
    pub python_platform: &'a str,
}

/// Where a container is in the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Init(usize),
    Main(usize),
}

fn container_mut(pod: &mut Pod, slot: Slot) -> &mut Container {
    let spec = pod.spec.get_or_insert_with(Default::default);
    match slot {
        Slot::Init(i) => &mut spec.init_containers.get_or_insert_with(Vec::new)[i],
        Slot::Main(i) => &mut spec.containers[i],
    }
}

/// Upstream's `containersToInstrument`: named containers that exist, init containers first in
/// their pod order.
fn containers_to_instrument(pod: &Pod, names: &[String]) -> Vec<Slot> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let init = spec.init_containers.clone().unwrap_or_default();
    let mut inits = Vec::new();
    let mut mains = Vec::new();
    for name in names {
        if let Some(i) = spec.containers.iter().position(|c| &c.name == name) {
            if init.iter().any(|c| &c.name == name) {
                if let Some(j) = init.iter().position(|c| &c.name == name) {
                    inits.push(Slot::Init(j));
                }
            } else {
                mains.push(Slot::Main(i));
            }
        } else if let Some(j) = init.iter().position(|c| &c.name == name) {
            inits.push(Slot::Init(j));
        }
    }
    inits.sort_by_key(|s| match s {
        Slot::Init(j) => *j,
        Slot::Main(_) => usize::MAX,
    });
    inits.extend(mains);
    inits
}

fn volume(language: Language, spec: &LanguageSpec) -> Volume {
    if let Some(template) = &spec.volume_claim_template {
        return Volume {
            name: language.volume_name(),
            ephemeral: Some(EphemeralVolumeSource {
                volume_claim_template: Some(template.clone()),
            }),
            ..Default::default()
        };
    }
    Volume {
        name: language.volume_name(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(
                spec.volume_limit_size
                    .clone()
                    .unwrap_or_else(|| quantity("200Mi")),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Upstream's `validateContainerEnv`: the variable we must extend cannot come from `valueFrom`.
fn check_env(container: &Container, name: &str) -> Result<(), String> {
    match container.env.iter().flatten().find(|e| e.name == name) {
        Some(var) if var.value_from.is_some() => Err(format!(
            "the container defines env var value via ValueFrom, envVar: {name}"
        )),
        _ => Ok(()),
    }
}

/// The container-level part of a language's injection.
fn inject_container(
    language: Language,
    spec: &LanguageSpec,
    container: &mut Container,
) -> Result<(), String> {
    let mount = |path: String| VolumeMount {
        name: language.volume_name(),
        mount_path: path,
        ..Default::default()
    };
    match language {
        Language::Java => {
            check_env(container, "JAVA_TOOL_OPTIONS")?;
            append_if_not_set(container.env.get_or_insert_with(Vec::new), &spec.env);
            let path = format!("{JAVA_MOUNT}-{}", container.name);
            container
                .volume_mounts
                .get_or_insert_with(Vec::new)
                .push(mount(path));
        }
        Language::NodeJs => {
            check_env(container, "NODE_OPTIONS")?;
            append_if_not_set(container.env.get_or_insert_with(Vec::new), &spec.env);
            container
                .volume_mounts
                .get_or_insert_with(Vec::new)
                .push(mount(NODEJS_MOUNT.to_string()));
        }
        Language::Python => {
            check_env(container, "PYTHONPATH")?;
            let env = container.env.get_or_insert_with(Vec::new);
            append_if_not_set(env, &spec.env);
            match env_index(env, "PYTHONPATH") {
                None => env.push(literal(
                    "PYTHONPATH",
                    format!("{PYTHON_PATH_PREFIX}:{PYTHON_MOUNT}"),
                )),
                Some(i) => {
                    let current = env[i].value.clone().unwrap_or_default();
                    env[i].value = Some(format!("{PYTHON_PATH_PREFIX}:{current}:{PYTHON_MOUNT}"));
                }
            }
            container
                .volume_mounts
                .get_or_insert_with(Vec::new)
                .push(mount(PYTHON_MOUNT.to_string()));
        }
        Language::Sdk => {}
    }
    Ok(())
}

/// The language's own variables, after the common ones (upstream's `injectDefault*EnvVars`).
fn default_env(language: Language, spec: &LanguageSpec, container: &mut Container) {
    let env = container.env.get_or_insert_with(Vec::new);
    let extend = |env: &Vec<EnvVar>, name: &str, argument: String| -> Vec<EnvVar> {
        match env.iter().find(|e| e.name == name) {
            None => vec![literal(name, argument)],
            Some(var) if var.value_from.is_some() => Vec::new(),
            Some(var) => vec![literal(
                name,
                format!("{}{argument}", var.value.clone().unwrap_or_default()),
            )],
        }
    };
    match language {
        Language::Java => {
            let mut argument = format!(" -javaagent:{JAVA_MOUNT}-{}/javaagent.jar", container.name);
            if !spec.extensions.is_empty() {
                argument.push_str(&format!(
                    " -Dotel.javaagent.extensions={JAVA_MOUNT}-{}/extensions",
                    container.name
                ));
            }
            let vars = extend(env, "JAVA_TOOL_OPTIONS", argument);
            append_or_replace(env, vars);
        }
        Language::NodeJs => {
            let mut vars = extend(
                env,
                "NODE_OPTIONS",
                format!(" --require {NODEJS_MOUNT}/autoinstrumentation.js"),
            );
            // The Node.js SDK starts its metrics SDK only when a reader is configured: without
            // this default (upstream's) its metrics are silently dropped.
            if env_index(env, "OTEL_METRICS_EXPORTER").is_none() {
                vars.push(literal("OTEL_METRICS_EXPORTER", "otlp"));
            }
            append_or_replace(env, vars);
        }
        Language::Python => append_if_not_set(
            env,
            &[
                literal("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                literal("OTEL_TRACES_EXPORTER", "otlp"),
                literal("OTEL_METRICS_EXPORTER", "otlp"),
                literal("OTEL_LOGS_EXPORTER", "otlp"),
            ],
        ),
        Language::Sdk => {}
    }
}

/// The pod-level part: the volume and the init container that fills it, inserted before the
/// first instrumented container when that is an init container, appended otherwise.
fn inject_pod(
    language: Language,
    instrumentation: &InstrumentationSpec,
    spec: &LanguageSpec,
    pod: &mut Pod,
    first: Slot,
    python_source: &str,
) {
    let init_name = language.init_container_name();
    let pod_spec = pod.spec.get_or_insert_with(Default::default);
    let inits = pod_spec.init_containers.get_or_insert_with(Vec::new);
    if inits.iter().any(|c| c.name == init_name) {
        return;
    }
    let volume = volume(language, spec);
    let command: Vec<String> = match language {
        Language::Java => vec![
            "cp".into(),
            "/javaagent.jar".into(),
            format!("{JAVA_MOUNT}/javaagent.jar"),
        ],
        Language::NodeJs => vec![
            "cp".into(),
            "-r".into(),
            "/autoinstrumentation/.".into(),
            NODEJS_MOUNT.into(),
        ],
        Language::Python => vec![
            "cp".into(),
            "-r".into(),
            python_source.into(),
            PYTHON_MOUNT.into(),
        ],
        Language::Sdk => return,
    };
    let mount_path = match language {
        Language::Java => JAVA_MOUNT,
        Language::NodeJs => NODEJS_MOUNT,
        _ => PYTHON_MOUNT,
    };
    let init = Container {
        name: init_name,
        image: spec.image.clone(),
        command: Some(command),
        resources: spec.resources.clone(),
        volume_mounts: Some(vec![VolumeMount {
            name: volume.name.clone(),
            mount_path: mount_path.to_string(),
            ..Default::default()
        }]),
        image_pull_policy: instrumentation.image_pull_policy.clone(),
        ..Default::default()
    };
    let mut to_insert = vec![init];
    if language == Language::Java {
        for (i, extension) in spec.extensions.iter().enumerate() {
            to_insert.push(Container {
                name: format!("{VOLUME_PREFIX}-extension-{i}"),
                image: Some(extension.image.clone()),
                command: Some(vec![
                    "cp".into(),
                    "-r".into(),
                    format!("{}/.", extension.dir),
                    format!("{JAVA_MOUNT}/extensions"),
                ]),
                resources: spec.resources.clone(),
                volume_mounts: Some(vec![VolumeMount {
                    name: volume.name.clone(),
                    mount_path: JAVA_MOUNT.to_string(),
                    ..Default::default()
                }]),
                ..Default::default()
            });
        }
    }
    pod_spec.volumes.get_or_insert_with(Vec::new).push(volume);
    match first {
        Slot::Init(position) => {
            for (offset, container) in to_insert.into_iter().enumerate() {
                inits.insert(position + offset, container);
            }
        }
        Slot::Main(_) => inits.extend(to_insert),
    }
}

/// Injects one language into the named containers of `pod`. Returns whether anything was
/// injected; containers that cannot be (e.g. JAVA_TOOL_OPTIONS from `valueFrom`) are skipped
/// with a warning, as upstream logs and skips them.
pub fn inject(
    language: Language,
    instrumentation: &Instrumentation,
    context: &Context,
    pod: &mut Pod,
    names: &[String],
    warnings: &mut Vec<String>,
) -> bool {
    // Upstream skips every container on an unknown platform but still adds the init container,
    // with an empty source path that fails at start; not injecting at all keeps the pod running.
    let python_source = match language {
        Language::Python => match python_agent_source(context.python_platform) {
            Ok(source) => source,
            Err(reason) => {
                warnings.push(format!("inject-python: {reason}; not injected"));
                return false;
            }
        },
        _ => "",
    };
    let slots = containers_to_instrument(pod, names);
    let Some(&first) = slots.first() else {
        warnings.push(format!(
            "inject-{}: no container named {} in the pod; nothing injected",
            language.name(),
            names.join(",")
        ));
        return false;
    };
    let empty = LanguageSpec::default();
    let spec = language.spec(&instrumentation.spec).unwrap_or(&empty);
    let mut injected = false;
    for slot in &slots {
        let mut container = container_mut(pod, *slot).clone();
        if let Err(reason) = inject_container(language, spec, &mut container) {
            warnings.push(format!(
                "inject-{}: skipping container {}: {reason}",
                language.name(),
                container.name
            ));
            continue;
        }
        sdk::inject_common_env(instrumentation, &mut container);
        default_env(language, spec, &mut container);
        sdk::inject_common_sdk_config(
            instrumentation,
            context.namespace,
            pod,
            &mut container,
            context.owners,
        );
        *container_mut(pod, *slot) = container;
        injected = true;
    }
    if language != Language::Sdk {
        // As upstream, the pod-level part follows the first listed container even if it was skipped.
        let first_security = container_mut(pod, first).security_context.clone();
        inject_pod(
            language,
            &instrumentation.spec,
            spec,
            pod,
            first,
            python_source,
        );
        let security = spec.security_context.clone().or(first_security);
        let init_name = language.init_container_name();
        if let Some(init) = pod
            .spec
            .as_mut()
            .and_then(|s| s.init_containers.as_mut())
            .and_then(|inits| inits.iter_mut().find(|c| c.name == init_name))
        {
            init.security_context = security;
        }
    }
    injected
}
