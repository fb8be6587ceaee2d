//! Resolving real files: seed configs, merging, environment expansion, `--set`, and the errors
//! each step reports.

use std::collections::HashMap;

use serde_yaml_ng::Value;
use threadline_config::{
    parse_collector_config, resolve, resolve_with_env, ComponentId, ConfigSources, PipelineId,
    Signal,
};

fn testdata(name: &str) -> String {
    format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn sources(configs: &[&str], sets: &[&str]) -> ConfigSources {
    ConfigSources {
        configs: configs.iter().map(|s| s.to_string()).collect(),
        sets: sets.iter().map(|s| s.to_string()).collect(),
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Reads `a::b::c` out of a resolved tree.
fn at<'a>(root: &'a Value, path: &str) -> &'a Value {
    path.split("::").fold(root, |value, key| {
        value
            .get(key)
            .unwrap_or_else(|| panic!("no {key:?} on the way to {path}"))
    })
}

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap()
}

fn id(text: &str) -> ComponentId {
    text.parse().unwrap()
}

#[test]
fn agent_seed_config_resolves_and_parses() {
    let root = resolve(&sources(&[&testdata("agent-config.yaml")], &[])).unwrap();
    let config = parse_collector_config(&root).unwrap();
    assert_eq!(
        config.receivers.keys().cloned().collect::<Vec<_>>(),
        [id("otlp")]
    );
    assert_eq!(
        config.processors.keys().cloned().collect::<Vec<_>>(),
        [id("memory_limiter"), id("batch")]
    );
    let pipeline = &config.service.pipelines[&PipelineId::new(Signal::Traces)];
    assert_eq!(pipeline.processors, [id("memory_limiter"), id("batch")]);
    assert_eq!(pipeline.exporters, [id("otlp")]);
    assert_eq!(
        at(&config.exporters[&id("otlp")], "endpoint"),
        &yaml("otel-gateway-collector.observability.svc:4317")
    );
    // No telemetry section: upstream's defaults apply.
    assert_eq!(
        config
            .service
            .telemetry
            .metrics
            .prometheus_endpoint()
            .as_deref(),
        Some("localhost:8888")
    );
}

#[test]
fn gateway_seed_config_resolves_and_parses() {
    // Plain path and `file:` are the same thing.
    let uri = format!("file:{}", testdata("gateway-config.yaml"));
    let root = resolve(&sources(&[&uri], &[])).unwrap();
    let config = parse_collector_config(&root).unwrap();
    let tempo = id("otlp/tempo");
    assert_eq!(tempo.name.as_deref(), Some("tempo"));
    assert!(config.exporters.contains_key(&tempo));
    let pipeline = &config.service.pipelines[&PipelineId::new(Signal::Traces)];
    assert_eq!(
        pipeline.processors,
        [
            id("memory_limiter"),
            id("tail_sampling"),
            id("attributes"),
            id("batch")
        ]
    );
    assert_eq!(pipeline.exporters, [tempo]);
    let policies = at(&config.processors[&id("tail_sampling")], "policies");
    assert_eq!(policies.as_sequence().unwrap().len(), 3);
}

#[test]
fn later_files_merge_deeply_and_replace_lists() {
    let root = resolve(&sources(
        &[&testdata("base.yaml"), &testdata("override.yaml")],
        &[],
    ))
    .unwrap();
    // Scalars from the later file win; keys only in the earlier file stay.
    assert_eq!(at(&root, "processors::batch::timeout"), &yaml("5s"));
    assert_eq!(
        at(&root, "processors::batch::send_batch_size"),
        &yaml("4096")
    );
    // Maps merge key by key.
    assert_eq!(
        at(&root, "exporters::otlp::headers"),
        &yaml("{x-team: base, x-env: prod}")
    );
    assert_eq!(
        at(&root, "exporters::otlp::endpoint"),
        &yaml("gateway:4317")
    );
    // Lists are replaced, not appended.
    assert_eq!(
        at(&root, "service::pipelines::traces::processors"),
        &yaml("[batch]")
    );
    assert_eq!(
        at(&root, "service::pipelines::traces::exporters"),
        &yaml("[otlp, otlp/backup]")
    );
    let config = parse_collector_config(&root).unwrap();
    assert!(config.exporters.contains_key(&id("otlp/backup")));
}

#[test]
fn environment_references_expand_with_defaults_and_escapes() {
    let vars: HashMap<&str, &str> = [
        ("OTLP_PORT", "14317"),
        ("GATEWAY", "gw.example:4317"),
        ("TOKEN", "abc$$def"),
        ("CONSUMERS", "7"),
    ]
    .into();
    let env = |name: &str| vars.get(name).map(|v| v.to_string());
    let root = resolve_with_env(&sources(&[&testdata("env.yaml")], &[]), &env).unwrap();

    // Default for the host, variable for the port, in one string.
    assert_eq!(
        at(&root, "receivers::otlp::protocols::grpc::endpoint"),
        &yaml("0.0.0.0:14317")
    );
    // `${VAR}` shorthand.
    assert_eq!(
        at(&root, "exporters::otlp::endpoint"),
        &yaml("gw.example:4317")
    );
    // `$$` becomes `$`, also inside expanded values, as upstream.
    assert_eq!(
        at(&root, "exporters::otlp::headers::authorization"),
        &yaml("Bearer abc$def")
    );
    assert_eq!(
        at(&root, "exporters::otlp::headers::literal"),
        &Value::String("${env:NOT_EXPANDED}".into())
    );
    assert_eq!(
        at(&root, "exporters::otlp::headers::price"),
        &Value::String("$5".into())
    );
    // A whole-value reference takes the YAML type of what it holds.
    assert_eq!(
        at(&root, "exporters::otlp::sending_queue::num_consumers"),
        &yaml("7")
    );
    assert_eq!(
        at(&root, "exporters::otlp::sending_queue::enabled"),
        &yaml("true")
    );
    assert_eq!(
        at(&root, "processors::batch::send_batch_size"),
        &yaml("8192")
    );
}

#[test]
fn process_environment_is_read_by_resolve() {
    // PATH is set in every test environment; nothing here changes the process environment.
    let path = std::env::var("PATH").unwrap();
    let root = resolve(&sources(&["yaml:value: ${env:PATH}"], &[])).unwrap();
    assert_eq!(at(&root, "value"), &Value::String(path));
}

#[test]
fn set_overrides_nest_create_maps_and_are_typed() {
    let root = resolve_with_env(
        &sources(
            &[&testdata("base.yaml")],
            &[
                "processors::batch::timeout=10s",
                "processors::batch::send_batch_size=100",
                "exporters::otlp/backup::endpoint=backup:4317",
                "exporters::otlp/backup::tls::insecure=true",
                "service::pipelines::traces::exporters=[otlp, otlp/backup]",
                "exporters::otlp::headers::x-from-env=${env:FROM_ENV:-dflt}",
            ],
        ),
        &no_env,
    )
    .unwrap();
    assert_eq!(at(&root, "processors::batch::timeout"), &yaml("10s"));
    assert_eq!(
        at(&root, "processors::batch::send_batch_size"),
        &yaml("100")
    );
    assert!(at(&root, "processors::batch::send_batch_size").is_u64());
    assert_eq!(
        at(&root, "exporters::otlp/backup"),
        &yaml("{endpoint: 'backup:4317', tls: {insecure: true}}")
    );
    // Other keys of a map touched by --set stay.
    assert_eq!(
        at(&root, "exporters::otlp::endpoint"),
        &yaml("gateway:4317")
    );
    assert_eq!(
        at(&root, "exporters::otlp::headers::x-from-env"),
        &yaml("dflt")
    );
    let config = parse_collector_config(&root).unwrap();
    let pipeline = &config.service.pipelines[&PipelineId::new(Signal::Traces)];
    assert_eq!(pipeline.exporters, [id("otlp"), id("otlp/backup")]);
}

#[test]
fn inline_yaml_and_env_sources() {
    let env = |name: &str| {
        (name == "OTEL_CONFIG").then(|| "exporters: {debug: {verbosity: detailed}}".to_string())
    };
    let root = resolve_with_env(
        &sources(
            &[
                &testdata("base.yaml"),
                "env:OTEL_CONFIG",
                "yaml:processors::batch::timeout: 3s",
            ],
            &[],
        ),
        &env,
    )
    .unwrap();
    assert_eq!(at(&root, "exporters::debug::verbosity"), &yaml("detailed"));
    assert_eq!(
        at(&root, "exporters::otlp::endpoint"),
        &yaml("gateway:4317")
    );
    assert_eq!(at(&root, "processors::batch::timeout"), &yaml("3s"));
    assert_eq!(
        at(&root, "processors::batch::send_batch_size"),
        &yaml("4096")
    );
}

#[test]
fn resolve_reports_every_bad_source_and_reference() {
    let err = resolve_with_env(
        &sources(
            &[
                &testdata("does-not-exist.yaml"),
                "http://example.com/config.yaml",
                "yaml:[not, a, map]",
                "env:UNSET_CONFIG",
            ],
            &["no-equals-sign", "a::::b=1"],
        ),
        &no_env,
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.len(), 6, "{text}");
    assert!(
        text.contains("does-not-exist.yaml: cannot read file"),
        "{text}"
    );
    assert!(text.contains("unsupported scheme \"http\""), "{text}");
    assert!(
        text.contains("must be a YAML map at the top level, got a list"),
        "{text}"
    );
    assert!(
        text.contains("environment variable \"UNSET_CONFIG\" is not set"),
        "{text}"
    );
    assert!(
        text.contains("--set no-equals-sign: missing equal sign"),
        "{text}"
    );
    assert!(text.contains("--set a::::b=1: empty key segment"), "{text}");

    // Expansion errors name the key that holds the reference.
    let err = resolve_with_env(
        &sources(
            &["yaml:{exporters: {otlp: {endpoint: '${env:9BAD}', headers: {k: '${ftp:x}'}}}}"],
            &[],
        ),
        &no_env,
    )
    .unwrap_err();
    let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("exporters::otlp::endpoint: cannot expand ${env:9BAD}: environment variable \"9BAD\" has an invalid name"), "{lines:?}");
    assert!(
        lines[1].starts_with(
            "exporters::otlp::headers::k: cannot expand ${ftp:x}: unsupported scheme \"ftp\""
        ),
        "{lines:?}"
    );

    let err = resolve(&ConfigSources::default()).unwrap_err();
    assert!(err.to_string().contains("no configuration given"));
}

#[test]
fn invalid_config_lists_every_error_with_its_path() {
    let root = resolve(&sources(&[&testdata("invalid.yaml")], &[])).unwrap();
    let err = parse_collector_config(&root).unwrap_err();
    let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
    let expected = [
        "exporter: unknown key; expected one of receivers, processors, exporters, connectors, extensions, service",
        "receivers::1bad: in \"1bad\" id: invalid character(s) in type \"1bad\"",
        "service::pipelines::spans: in \"spans\" id: unknown signal \"spans\"; expected traces, metrics or logs",
        "service::telemetry::logs::level: unknown log level \"loud\"; expected one of: debug, info, warn, error",
        "service::telemetry::metrics::level: unknown telemetry level \"verbose\"; expected one of: none, basic, normal, detailed",
        "service::extensions: references extension \"pprof\" which is not configured",
        "service::pipelines::traces::receivers: references receiver \"jaeger\" which is not configured",
        "service::pipelines::traces::processors: references processor \"batch/x\" which is not configured",
        "service::pipelines::traces::processors: references processor \"batch\" multiple times",
        "service::pipelines::metrics::exporters: must have at least one exporter",
        "connectors::forward: connector is used as an exporter but not as a receiver",
    ];
    for want in expected {
        assert!(
            lines.iter().any(|line| line.starts_with(want)),
            "missing {want:?} in:\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(lines.len(), expected.len(), "{}", lines.join("\n"));
    // Display lists one error per line.
    assert_eq!(err.to_string().lines().count(), expected.len());
}

#[test]
fn an_empty_config_says_what_is_missing() {
    let err = parse_collector_config(&Value::Null).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("receivers: no receiver configuration specified in config"),
        "{text}"
    );
    assert!(
        text.contains("exporters: no exporter configuration specified in config"),
        "{text}"
    );
    assert!(
        text.contains("service::pipelines: service must have at least one pipeline"),
        "{text}"
    );
}

#[test]
fn dotted_set_keys_get_a_hint() {
    let root = resolve(&sources(
        &[&testdata("base.yaml")],
        &["processors.batch.timeout=1s"],
    ))
    .unwrap();
    let err = parse_collector_config(&root).unwrap_err().to_string();
    assert!(
        err.contains("processors.batch.timeout: unknown key"),
        "{err}"
    );
    assert!(err.contains("nested keys are joined with \"::\""), "{err}");
}
