//! The collector's top-level structure: component sections and `service`, with upstream's
//! cross-reference checks. Every problem is reported, not just the first.

use std::collections::HashSet;

use indexmap::IndexMap;
use serde_yaml_ng::{Mapping, Value};

use crate::resolve::kind_of;
use crate::{
    decode_component, join_path, ComponentId, ConfigError, ConfigErrors, PipelineId,
    TelemetryConfig,
};

const TOP_LEVEL_KEYS: &[&str] = &[
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
    "service",
];
const SERVICE_KEYS: &[&str] = &["extensions", "pipelines", "telemetry"];
const PIPELINE_KEYS: &[&str] = &["receivers", "processors", "exporters"];
const TELEMETRY_KEYS: &[&str] = &["logs", "metrics", "traces", "resource"];

/// The whole collector configuration. Component sections keep their raw YAML: each component
/// decodes its own with [`decode_component`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CollectorConfig {
    pub receivers: IndexMap<ComponentId, Value>,
    pub processors: IndexMap<ComponentId, Value>,
    pub exporters: IndexMap<ComponentId, Value>,
    pub extensions: IndexMap<ComponentId, Value>,
    pub connectors: IndexMap<ComponentId, Value>,
    pub service: ServiceConfig,
}

/// The `service` section: what runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceConfig {
    /// Extensions to start, in order. Each must be configured under `extensions`.
    pub extensions: Vec<ComponentId>,
    pub pipelines: IndexMap<PipelineId, PipelineConfig>,
    pub telemetry: TelemetryConfig,
}

/// One pipeline: data flows from every receiver through the processors in order to every
/// exporter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineConfig {
    pub receivers: Vec<ComponentId>,
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
}

/// Parses a resolved tree (see [`crate::resolve`]) into a [`CollectorConfig`] and checks it as
/// upstream does: known top-level keys, valid ids, pipelines that reference configured
/// components, at least one receiver and exporter per pipeline, no component listed twice in a
/// pipeline, connectors used on both sides. Component sections themselves are not decoded here.
pub fn parse_collector_config(root: &Value) -> Result<CollectorConfig, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let empty = Mapping::new();
    let root_map = match root {
        Value::Mapping(map) => map,
        Value::Null => &empty,
        other => {
            errors.push(ConfigError::new(
                "",
                format!("the configuration must be a map, got {}", kind_of(other)),
            ));
            return Err(errors);
        }
    };

    for key in root_map.keys() {
        let key = key_text(key);
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            errors.push(unknown_key(&key, "", TOP_LEVEL_KEYS));
        }
    }

    let section =
        |name: &str, errors: &mut ConfigErrors| parse_components(root_map.get(name), name, errors);
    let mut config = CollectorConfig {
        receivers: section("receivers", &mut errors),
        processors: section("processors", &mut errors),
        exporters: section("exporters", &mut errors),
        connectors: section("connectors", &mut errors),
        extensions: section("extensions", &mut errors),
        service: ServiceConfig::default(),
    };
    config.service = parse_service(root_map.get("service"), &mut errors);

    validate_references(&config, &mut errors);
    errors.into_result(config)
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => kind_of(other).to_string(),
    }
}

fn unknown_key(key: &str, parent: &str, allowed: &[&str]) -> ConfigError {
    let mut message = format!("unknown key; expected one of {}", allowed.join(", "));
    if key.contains('.') && !key.contains("::") {
        message.push_str(" (nested keys are joined with \"::\", e.g. processors::batch::timeout)");
    }
    ConfigError::new(join_path(parent, key), message)
}

/// A map that may be absent or empty (`receivers:`).
fn as_map<'a>(
    value: Option<&'a Value>,
    path: &str,
    errors: &mut ConfigErrors,
) -> Option<&'a Mapping> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::Mapping(map)) => Some(map),
        Some(other) => {
            errors.push(ConfigError::new(
                path,
                format!("expected a map, got {}", kind_of(other)),
            ));
            None
        }
    }
}

fn parse_components(
    value: Option<&Value>,
    section: &str,
    errors: &mut ConfigErrors,
) -> IndexMap<ComponentId, Value> {
    let mut components = IndexMap::new();
    let Some(map) = as_map(value, section, errors) else {
        return components;
    };
    for (key, config) in map {
        let key = key_text(key);
        let path = join_path(section, &key);
        match key.parse::<ComponentId>() {
            Ok(id) => {
                if components.contains_key(&id) {
                    errors.push(ConfigError::new(path, format!("duplicate id {id}")));
                } else {
                    components.insert(id, config.clone());
                }
            }
            Err(err) => errors.push(ConfigError::new(path, err.to_string())),
        }
    }
    components
}

fn parse_service(value: Option<&Value>, errors: &mut ConfigErrors) -> ServiceConfig {
    let mut service = ServiceConfig::default();
    let Some(map) = as_map(value, "service", errors) else {
        return service;
    };
    for key in map.keys() {
        let key = key_text(key);
        if !SERVICE_KEYS.contains(&key.as_str()) {
            errors.push(unknown_key(&key, "service", SERVICE_KEYS));
        }
    }
    service.extensions = parse_id_list(map.get("extensions"), "service::extensions", errors);
    if let Some(pipelines) = as_map(map.get("pipelines"), "service::pipelines", errors) {
        for (key, pipeline) in pipelines {
            let key = key_text(key);
            let path = join_path("service::pipelines", &key);
            match key.parse::<PipelineId>() {
                Ok(id) if service.pipelines.contains_key(&id) => errors.push(ConfigError::new(
                    path,
                    format!("duplicate pipeline id {id}"),
                )),
                Ok(id) => {
                    let pipeline = parse_pipeline(pipeline, &path, errors);
                    service.pipelines.insert(id, pipeline);
                }
                Err(err) => errors.push(ConfigError::new(path, err.to_string())),
            }
        }
    }
    service.telemetry = parse_telemetry(map.get("telemetry"), errors);
    service
}

/// Decodes each part of `service::telemetry` on its own, so that a mistake in `logs` does not
/// hide one in `metrics`.
fn parse_telemetry(value: Option<&Value>, errors: &mut ConfigErrors) -> TelemetryConfig {
    const PATH: &str = "service::telemetry";
    let mut telemetry = TelemetryConfig::default();
    let Some(map) = as_map(value, PATH, errors) else {
        return telemetry;
    };
    for (key, section) in map {
        let key = key_text(key);
        let path = join_path(PATH, &key);
        let decoded = match key.as_str() {
            "logs" => decode_component(section, &path).map(|logs| telemetry.logs = logs),
            "metrics" => {
                decode_component(section, &path).map(|metrics| telemetry.metrics = metrics)
            }
            "traces" => decode_component(section, &path).map(|traces| telemetry.traces = traces),
            "resource" => {
                decode_component(section, &path).map(|resource| telemetry.resource = resource)
            }
            _ => {
                errors.push(unknown_key(&key, PATH, TELEMETRY_KEYS));
                Ok(())
            }
        };
        if let Err(found) = decoded {
            errors.extend(found);
        }
    }
    telemetry
}

fn parse_pipeline(value: &Value, path: &str, errors: &mut ConfigErrors) -> PipelineConfig {
    let mut pipeline = PipelineConfig::default();
    let Some(map) = as_map(Some(value), path, errors) else {
        return pipeline;
    };
    for key in map.keys() {
        let key = key_text(key);
        if !PIPELINE_KEYS.contains(&key.as_str()) {
            errors.push(unknown_key(&key, path, PIPELINE_KEYS));
        }
    }
    pipeline.receivers = parse_id_list(map.get("receivers"), &join_path(path, "receivers"), errors);
    pipeline.processors = parse_id_list(
        map.get("processors"),
        &join_path(path, "processors"),
        errors,
    );
    pipeline.exporters = parse_id_list(map.get("exporters"), &join_path(path, "exporters"), errors);
    pipeline
}

/// A list of component ids: `[otlp, batch/x]`.
fn parse_id_list(value: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Vec<ComponentId> {
    let items = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Sequence(items)) => items,
        Some(other) => {
            errors.push(ConfigError::new(
                path,
                format!("expected a list of component ids, got {}", kind_of(other)),
            ));
            return Vec::new();
        }
    };
    let mut ids = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        match item {
            Value::String(text) => match text.parse::<ComponentId>() {
                Ok(id) => ids.push(id),
                Err(err) => errors.push(ConfigError::new(item_path, err.to_string())),
            },
            other => errors.push(ConfigError::new(
                item_path,
                format!("expected a component id, got {}", kind_of(other)),
            )),
        }
    }
    ids
}

/// Upstream's `Config.Validate` and pipeline checks.
fn validate_references(config: &CollectorConfig, errors: &mut ConfigErrors) {
    if config.receivers.is_empty() {
        errors.push(ConfigError::new(
            "receivers",
            "no receiver configuration specified in config",
        ));
    }
    if config.exporters.is_empty() {
        errors.push(ConfigError::new(
            "exporters",
            "no exporter configuration specified in config",
        ));
    }
    if config.service.pipelines.is_empty() {
        errors.push(ConfigError::new(
            "service::pipelines",
            "service must have at least one pipeline",
        ));
    }

    let mut seen = HashSet::new();
    for id in &config.service.extensions {
        if !seen.insert(id) {
            errors.push(ConfigError::new(
                "service::extensions",
                format!("references extension {:?} multiple times", id.to_string()),
            ));
        }
        if !config.extensions.contains_key(id) {
            errors.push(ConfigError::new(
                "service::extensions",
                format!(
                    "references extension {:?} which is not configured",
                    id.to_string()
                ),
            ));
        }
    }

    for (pipeline_id, pipeline) in &config.service.pipelines {
        let path = join_path("service::pipelines", &pipeline_id.to_string());
        let lists: [(&str, &str, &[ComponentId]); 3] = [
            ("receivers", "receiver", &pipeline.receivers),
            ("processors", "processor", &pipeline.processors),
            ("exporters", "exporter", &pipeline.exporters),
        ];
        for (list_name, what, ids) in lists {
            let list_path = join_path(&path, list_name);
            let mut seen = HashSet::new();
            for id in ids {
                if !seen.insert(id) {
                    errors.push(ConfigError::new(
                        &list_path,
                        format!("references {what} {:?} multiple times", id.to_string()),
                    ));
                }
                let configured = match what {
                    "receiver" => {
                        config.receivers.contains_key(id) || config.connectors.contains_key(id)
                    }
                    "processor" => config.processors.contains_key(id),
                    _ => config.exporters.contains_key(id) || config.connectors.contains_key(id),
                };
                if !configured {
                    errors.push(ConfigError::new(
                        &list_path,
                        format!(
                            "references {what} {:?} which is not configured",
                            id.to_string()
                        ),
                    ));
                }
            }
        }
        if pipeline.receivers.is_empty() {
            errors.push(ConfigError::new(
                join_path(&path, "receivers"),
                "must have at least one receiver",
            ));
        }
        if pipeline.exporters.is_empty() {
            errors.push(ConfigError::new(
                join_path(&path, "exporters"),
                "must have at least one exporter",
            ));
        }
    }

    // A connector joins pipelines: it must be an exporter of one and a receiver of another.
    for id in config.connectors.keys() {
        let pipelines = config.service.pipelines.values();
        let as_exporter = pipelines.clone().any(|p| p.exporters.contains(id));
        let as_receiver = pipelines.clone().any(|p| p.receivers.contains(id));
        if as_exporter != as_receiver {
            let (used, unused) = if as_exporter {
                ("an exporter", "a receiver")
            } else {
                ("a receiver", "an exporter")
            };
            errors.push(ConfigError::new(
                join_path("connectors", &id.to_string()),
                format!(
                    "connector is used as {used} but not as {unused}: a connector must be an \
                     exporter in one pipeline and a receiver in another"
                ),
            ));
        }
    }
}
