use std::collections::{BTreeMap, BTreeSet};

use threadline_config::ComponentId;

use super::*;
use crate::metrics::{self, MetricKind};
use crate::telemetry::Telemetry;

#[test]
fn every_component_has_a_page_with_its_fields() {
    let registry = Registry::builtin();
    let pages = pages(&registry);
    let batch = pages
        .iter()
        .find(|p| p.path == "processors/batch.md")
        .expect("a page for the batch processor");
    assert!(batch
        .text
        .contains("| `timeout` | duration | `200ms` | How long a batch may wait for more spans"));
    assert!(batch
        .text
        .contains("| `send_batch_size` | integer | `8192` |"));
    assert!(batch
        .text
        .contains("| `otelcol_processor_batch_batch_send_size` | histogram | `processor` |"));
    let otlp = pages
        .iter()
        .find(|p| p.path == "exporters/otlp.md")
        .expect("a page for the otlp exporter");
    assert!(
        otlp.text.contains("| `sending_queue.queue_size` |"),
        "{}",
        otlp.text
    );
    let count = registry.receivers.len()
        + registry.processors.len()
        + registry.exporters.len()
        + registry.extensions.len();
    assert_eq!(
        pages.len(),
        count + 1,
        "one page per component and the index"
    );
}

#[test]
fn every_field_has_a_description() {
    let registry = Registry::builtin();
    let mut undocumented = Vec::new();
    for page in pages(&registry).iter().skip(1) {
        for line in page.text.lines().filter(|l| l.starts_with("| `")) {
            if line.ends_with("|  |") {
                undocumented.push(format!("{}: {line}", page.path));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "fields without a doc comment:\n{}",
        undocumented.join("\n")
    );
}

/// Family name -> (type, help, label names besides the common ones), from the text format.
fn families(text: &str) -> BTreeMap<String, (String, String, BTreeSet<String>)> {
    let common = [
        "service_name",
        "service_version",
        "service_instance_id",
        "le",
    ];
    let mut families: BTreeMap<String, (String, String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.into()).or_default().1 = help.into();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.into()).or_default().0 = ty.into();
        } else if let Some((sample, labels)) = line.split_once('{') {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    sample
                        .strip_suffix(suffix)
                        .filter(|name| families.contains_key(*name))
                })
                .unwrap_or(sample);
            let names = labels
                .split(',')
                .filter_map(|pair| pair.split_once('=').map(|(name, _)| name.to_string()))
                .filter(|name| !common.contains(&name.as_str()));
            if let Some(entry) = families.get_mut(family) {
                entry.2.extend(names);
            }
        }
    }
    families
}

#[test]
fn declared_metrics_are_the_registered_families() {
    let telemetry = Telemetry::new("test");
    let id: ComponentId = "x".parse().unwrap();
    let _ = telemetry.receiver(&id, "grpc");
    let _ = telemetry.processor(&id);
    let _ = telemetry.batch(&id);
    let _ = telemetry.exporter(&id);
    let tail = telemetry.tail_sampling(&id);
    let _ = tail.policy("p", &[("sampled", true)]);
    let _ = tail.final_decisions();
    tail.timer_run(1.0);
    let _ = tail.dropped_too_early();
    let _ = tail.traces_on_memory();
    let _ = tail.new_trace();
    tail.late_span(1.0, true);
    let registered = families(&telemetry.render());
    for def in metrics::ALL.iter().flat_map(|group| group.iter()) {
        let (ty, help, labels) = registered
            .get(def.name)
            .unwrap_or_else(|| panic!("{} is declared but not registered", def.name));
        let kind = match ty.as_str() {
            "counter" => MetricKind::Counter,
            "gauge" => MetricKind::Gauge,
            "histogram" => MetricKind::Histogram,
            other => panic!("{}: unexpected type {other}", def.name),
        };
        assert_eq!(kind, def.kind, "{}", def.name);
        assert_eq!(help, def.help, "{}", def.name);
        let declared: BTreeSet<String> = def.labels.iter().map(|l| l.to_string()).collect();
        assert_eq!(labels, &declared, "labels of {}", def.name);
    }
    let declared: BTreeSet<&str> = metrics::ALL
        .iter()
        .flat_map(|group| group.iter().map(|d| d.name))
        .collect();
    for name in registered.keys() {
        assert!(
            name.starts_with("otelcol_process_") || declared.contains(name.as_str()),
            "{name} is registered but no component declares it"
        );
    }
}

#[test]
fn every_builtin_component_describes_itself() {
    let registry = Registry::builtin();
    for e in entries(&registry) {
        let id = format!("{}::{}", e.kind.section(), e.type_name);
        assert!(e.schema.is_object(), "{id}: config has no json_schema()");
        assert!(
            !e.about.upstream.is_empty(),
            "{id}: about() names no upstream"
        );
    }
}
