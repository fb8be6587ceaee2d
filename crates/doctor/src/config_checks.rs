//! Collector configs: the seed's split-trace layout (agents exporting with plain `otlp` to a
//! tail-sampling gateway tier instead of `loadbalancing` by trace id), memory_limiter not first,
//! batch before tail_sampling, retries or queues turned off, plain-text export to a non-local
//! endpoint, and a `decision_wait` shorter than the traces the store has seen.
//!
//! A file is a collector config, or an `OpenTelemetryCollector` resource (its `spec.config`
//! and `spec.replicas`), as the seed ships both.

use std::path::Path;
use std::time::Duration;

use serde_yaml_ng::Value;
use threadline_config::{
    parse_collector_config, resolve, CollectorConfig, ComponentId, ConfigSources,
};

use crate::finding::{Category, Finding, Severity};
use crate::DoctorError;

/// One collector's config as the doctor reads it.
pub struct CollectorFile {
    /// The file it came from (how findings name it).
    pub source: String,
    pub config: CollectorConfig,
    /// `spec.replicas` of an OpenTelemetryCollector resource (None for a plain config).
    pub replicas: Option<u64>,
    /// `metadata.name` of the resource: its Service is `<name>-collector`.
    pub resource_name: Option<String>,
}

impl CollectorFile {
    /// Reads a collector config or an OpenTelemetryCollector resource.
    pub fn load(path: &Path) -> Result<CollectorFile, DoctorError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| DoctorError::Read {
            path: source.clone(),
            source: e,
        })?;
        let invalid = |message: String| DoctorError::Config {
            path: source.clone(),
            message,
        };
        let root: Value = serde_yaml_ng::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let is_resource = root
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k == "OpenTelemetryCollector");
        let (tree, replicas, resource_name) = if is_resource {
            let spec = root
                .get("spec")
                .ok_or_else(|| invalid("an OpenTelemetryCollector without spec".into()))?;
            let config = match spec.get("config") {
                Some(Value::String(text)) => serde_yaml_ng::from_str(text)
                    .map_err(|e| invalid(format!("spec.config: {e}")))?,
                Some(tree @ Value::Mapping(_)) => tree.clone(),
                _ => return Err(invalid("spec.config is missing".into())),
            };
            let replicas = spec.get("replicas").and_then(Value::as_u64).unwrap_or(1);
            let name = root
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(str::to_string);
            (config, Some(replicas), name)
        } else {
            let sources = ConfigSources {
                configs: vec![source.clone()],
                sets: Vec::new(),
            };
            (
                resolve(&sources).map_err(|e| invalid(e.to_string()))?,
                None,
                None,
            )
        };
        let config = parse_collector_config(&tree).map_err(|e| invalid(e.to_string()))?;
        Ok(CollectorFile {
            source,
            config,
            replicas,
            resource_name,
        })
    }

    fn has_tail_sampling(&self) -> bool {
        self.config
            .service
            .pipelines
            .values()
            .any(|p| p.processors.iter().any(|id| id.kind == "tail_sampling"))
    }

    /// Plain `otlp` exporters of traces pipelines with their endpoint.
    fn otlp_exporters(&self) -> Vec<(ComponentId, String)> {
        let mut out = Vec::new();
        for (pipeline_id, pipeline) in &self.config.service.pipelines {
            if pipeline_id.signal.as_str() != "traces" {
                continue;
            }
            for id in &pipeline.exporters {
                if id.kind != "otlp" {
                    continue;
                }
                if let Some(endpoint) = self
                    .config
                    .exporters
                    .get(id)
                    .and_then(|e| e.get("endpoint"))
                    .and_then(Value::as_str)
                {
                    if !out.iter().any(|(o, _)| o == id) {
                        out.push((id.clone(), endpoint.to_string()));
                    }
                }
            }
        }
        out
    }
}

/// The host of an endpoint (`http://h:4318/x`, `h:4317`, `dns:///h:4317`), lower-cased.
fn host_of(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let rest = rest.trim_start_matches('/');
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = if let Some(stripped) = authority.strip_prefix('[') {
        stripped.split(']').next().unwrap_or(stripped)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.to_ascii_lowercase()
}

fn is_local(host: &str) -> bool {
    host == "localhost" || host.starts_with("127.") || host == "::1" || host.is_empty()
}

fn component(kind: &str, id: &ComponentId) -> String {
    format!("{kind}::{id}")
}

/// A `loadbalancing` exporter over the gateway's headless Service (the upstream exporter's keys).
pub fn loadbalancing_snippet(headless_host: &str) -> String {
    format!(
        "exporters:\n  loadbalancing:\n    routing_key: traceID\n    protocol:\n      otlp:\n        \
         tls:\n          insecure: true   # or a CA: see the plain-text finding\n    resolver:\n      \
         dns:\n        hostname: {headless_host}\n        port: 4317\nservice:\n  pipelines:\n    \
         traces:\n      exporters: [loadbalancing]\n"
    )
}

/// `otel-gateway-collector.observability.svc` → `otel-gateway-collector-headless.observability.svc`.
fn headless(host: &str) -> String {
    match host.split_once('.') {
        Some((first, rest)) if !first.ends_with("-headless") => format!("{first}-headless.{rest}"),
        Some(_) => host.to_string(),
        None => format!("{host}-headless"),
    }
}

fn duration_of(value: Option<&Value>) -> Option<Duration> {
    match value? {
        Value::String(s) => threadline_config::settings::duration::parse(s).ok(),
        Value::Number(n) => n.as_u64().map(Duration::from_nanos),
        _ => None,
    }
}

fn bool_at(value: &Value, path: &[&str]) -> Option<bool> {
    let mut v = value;
    for key in path {
        v = v.get(*key)?;
    }
    v.as_bool()
}

/// Every config check over the given files. `observed_p99_ms`: the 99th percentile of trace
/// durations the store holds, when known.
pub fn check_configs(files: &[CollectorFile], observed_p99_ms: Option<f64>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for file in files {
        check_pipelines(file, &mut findings);
        check_exporters(file, &mut findings);
        check_decision_wait(file, observed_p99_ms, &mut findings);
    }
    check_split_layout(files, &mut findings);
    findings
}

// Every finding of this module is one call: the arguments are its fields.
#[allow(clippy::too_many_arguments)]
fn finding(
    kind: &str,
    severity: Severity,
    file: &CollectorFile,
    attribute: String,
    title: String,
    detail: String,
    fix: String,
    fix_config: Option<String>,
) -> Finding {
    Finding {
        kind: kind.into(),
        category: Category::Pipeline,
        severity,
        title,
        services: vec![file.source.clone()],
        hop: None,
        attribute: Some(attribute),
        count: 1,
        total: 0,
        examples: Vec::new(),
        detail,
        fix,
        fix_config,
    }
}

fn check_pipelines(file: &CollectorFile, findings: &mut Vec<Finding>) {
    for (pipeline_id, pipeline) in &file.config.service.pipelines {
        let processors = &pipeline.processors;
        let position = |kind: &str| processors.iter().position(|p| p.kind == kind);
        let names: Vec<String> = processors.iter().map(|p| p.to_string()).collect();
        if let Some(i) = position("memory_limiter").filter(|i| *i > 0) {
            let mut fixed = names.clone();
            let limiter = fixed.remove(i);
            fixed.insert(0, limiter);
            findings.push(finding(
                "memory_limiter_not_first",
                Severity::Warning,
                file,
                format!("service::pipelines::{pipeline_id}::processors"),
                format!(
                    "{}: memory_limiter is not the first processor of {pipeline_id}",
                    file.source
                ),
                format!(
                    "Processors before memory_limiter ({}) hold data the limiter cannot refuse: \
                     under pressure the collector grows until it is killed.",
                    names[..i].join(", ")
                ),
                "Put memory_limiter first.".into(),
                Some(format!(
                    "service:\n  pipelines:\n    {pipeline_id}:\n      processors: [{}]\n",
                    fixed.join(", ")
                )),
            ));
        }
        if let (Some(b), Some(t)) = (position("batch"), position("tail_sampling")) {
            if b < t {
                let mut fixed = names.clone();
                let batch = fixed.remove(b);
                fixed.push(batch);
                findings.push(finding(
                    "batch_before_tail_sampling",
                    Severity::Warning,
                    file,
                    format!("service::pipelines::{pipeline_id}::processors"),
                    format!(
                        "{}: batch runs before tail_sampling in {pipeline_id}",
                        file.source
                    ),
                    "tail_sampling regroups spans by trace, so batching before it only delays \
                     spans and holds memory; the batches after sampling are what exporters need."
                        .into(),
                    "Move batch after tail_sampling (last).".into(),
                    Some(format!(
                        "service:\n  pipelines:\n    {pipeline_id}:\n      processors: [{}]\n",
                        fixed.join(", ")
                    )),
                ));
            }
        }
    }
}

fn check_exporters(file: &CollectorFile, findings: &mut Vec<Finding>) {
    let used: Vec<&ComponentId> = file
        .config
        .service
        .pipelines
        .values()
        .flat_map(|p| p.exporters.iter())
        .collect();
    for (id, section) in &file.config.exporters {
        if !used.contains(&id)
            || !matches!(
                id.kind.as_str(),
                "otlp" | "otlphttp" | "otlp_http" | "loadbalancing"
            )
        {
            continue;
        }
        // loadbalancing keeps its client settings under protocol::otlp.
        let client = if id.kind == "loadbalancing" {
            section
                .get("protocol")
                .and_then(|p| p.get("otlp"))
                .unwrap_or(section)
        } else {
            section
        };
        for (setting, what) in [
            ("retry_on_failure", "retries"),
            ("sending_queue", "a sending queue"),
        ] {
            if bool_at(section, &[setting, "enabled"]) == Some(false) {
                findings.push(finding(
                    "export_without_retry_or_queue",
                    Severity::Warning,
                    file,
                    component("exporters", id),
                    format!("{}: exporter {id} runs without {what}", file.source),
                    format!(
                        "With {setting}.enabled: false, a backend restart or a slow moment loses \
                         the spans in flight."
                    ),
                    format!("Enable {setting}."),
                    Some(format!(
                        "exporters:\n  {id}:\n    {setting}:\n      enabled: true\n"
                    )),
                ));
            }
        }
        let mut targets: Vec<String> = Vec::new();
        if let Some(endpoint) = client.get("endpoint").and_then(Value::as_str) {
            targets.push(endpoint.to_string());
        }
        if id.kind == "loadbalancing" {
            if let Some(resolver) = section.get("resolver") {
                if let Some(host) = resolver
                    .get("dns")
                    .and_then(|d| d.get("hostname"))
                    .and_then(Value::as_str)
                {
                    targets.push(host.to_string());
                }
                if let Some(Value::Sequence(hosts)) =
                    resolver.get("static").and_then(|s| s.get("hostnames"))
                {
                    targets.extend(hosts.iter().filter_map(Value::as_str).map(str::to_string));
                }
                if let Some(service) = resolver
                    .get("k8s")
                    .and_then(|k| k.get("service"))
                    .and_then(Value::as_str)
                {
                    targets.push(service.to_string());
                }
            }
        }
        let insecure_tls = bool_at(client, &["tls", "insecure"]) == Some(true);
        for target in targets {
            let plain = insecure_tls || target.starts_with("http://");
            let host = host_of(&target);
            if plain && !is_local(&host) {
                findings.push(finding(
                    "plaintext_export",
                    Severity::Warning,
                    file,
                    component("exporters", id),
                    format!("{}: exporter {id} sends plain text to {host}", file.source),
                    format!(
                        "Spans (with whatever attributes they carry) cross the network to {target} \
                         unencrypted."
                    ),
                    "Use TLS to non-local endpoints.".into(),
                    Some(format!(
                        "exporters:\n  {id}:\n    tls:\n      insecure: false\n      ca_file: \
                         /etc/otel/certs/ca.crt\n"
                    )),
                ));
            }
        }
    }
}

fn check_decision_wait(
    file: &CollectorFile,
    observed_p99_ms: Option<f64>,
    findings: &mut Vec<Finding>,
) {
    let Some(p99_ms) = observed_p99_ms else {
        return;
    };
    for (id, section) in &file.config.processors {
        if id.kind != "tail_sampling" {
            continue;
        }
        // Upstream's default decision_wait is 30s.
        let wait = duration_of(section.get("decision_wait")).unwrap_or(Duration::from_secs(30));
        let wait_ms = wait.as_secs_f64() * 1000.0;
        if p99_ms > wait_ms {
            let suggested = ((p99_ms / 1000.0) * 1.5).ceil().max(1.0) as u64;
            findings.push(finding(
                "decision_wait_too_short",
                Severity::Warning,
                file,
                component("processors", id),
                format!(
                    "{}: {id} decides after {:.1}s, but 1% of stored traces last longer than {:.1}s",
                    file.source,
                    wait_ms / 1000.0,
                    p99_ms / 1000.0
                ),
                "Spans that arrive after the decision follow it, but the decision was made \
                 without them: policies on latency or errors miss the slow traces' ends."
                    .into(),
                "Raise decision_wait above the longest traces you want judged whole.".into(),
                Some(format!("processors:\n  {id}:\n    decision_wait: {suggested}s\n")),
            ));
        }
    }
}

fn check_split_layout(files: &[CollectorFile], findings: &mut Vec<Finding>) {
    let gateways: Vec<&CollectorFile> = files.iter().filter(|f| f.has_tail_sampling()).collect();
    for agent in files.iter().filter(|f| !f.has_tail_sampling()) {
        for (id, endpoint) in agent.otlp_exporters() {
            let host = host_of(&endpoint);
            if is_local(&host) {
                continue;
            }
            // The gateway this endpoint names: a resource whose Service is `<name>-collector`.
            let named = gateways.iter().find(|g| {
                g.resource_name
                    .as_ref()
                    .is_some_and(|n| host.split('.').next() == Some(&format!("{n}-collector")))
            });
            let (severity, why) = match named {
                Some(g) if g.replicas.unwrap_or(1) > 1 => (
                    Severity::Critical,
                    format!(
                        "{} runs {} replicas with tail_sampling",
                        g.source,
                        g.replicas.unwrap_or(1)
                    ),
                ),
                Some(_) => continue,
                None if !gateways.is_empty() => (
                    Severity::Warning,
                    format!(
                        "{} samples by trace (tail_sampling); with more than one replica",
                        gateways[0].source
                    ),
                ),
                None if host.contains("gateway") => (
                    Severity::Warning,
                    "the endpoint looks like a gateway tier; if it tail-samples on more than one replica".into(),
                ),
                None => continue,
            };
            findings.push(finding(
                "split_trace_layout",
                severity,
                agent,
                component("exporters", &id),
                format!(
                    "{}: agents send to {host} with plain otlp, so one trace's spans reach different gateway replicas",
                    agent.source
                ),
                format!(
                    "{why}, each replica sees only the spans that happened to reach it and decides \
                     alone: traces are kept in part, split, or judged without their error span. \
                     The plain otlp exporter balances connections, not traces."
                ),
                "Export with the loadbalancing exporter, routing by trace id to the gateway's \
                 headless Service."
                    .into(),
                Some(loadbalancing_snippet(&headless(&host))),
            ));
        }
    }
}
