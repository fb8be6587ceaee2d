//! The Prometheus text exposition format (0.0.4) of the generated series, and of the
//! generator's own counters (named as Tempo's, `tempo_metrics_generator_*`).

use std::fmt::Write;

use super::instance::Instance;
use super::registry::{MetricKind, Series};
use super::Generator;

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(
    out: &mut String,
    labels: &[(String, String)],
    extra: &[(String, String)],
    le: Option<&str>,
) {
    let mut first = true;
    let pairs = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .chain(le.map(|le| ("le", le)));
    for (k, v) in pairs {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    if !first {
        out.push('}');
    }
}

pub fn format_float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

fn series_lines(
    out: &mut String,
    name: &str,
    kind: &MetricKind,
    s: &Series,
    extra: &[(String, String)],
) {
    match kind {
        MetricKind::Counter => {
            out.push_str(name);
            labels(out, &s.labels, extra, None);
            let _ = writeln!(out, " {}", format_float(s.value));
        }
        MetricKind::Histogram(bounds) => {
            let mut cumulative = 0;
            for (i, count) in s.buckets.iter().enumerate() {
                cumulative += count;
                let le = bounds
                    .get(i)
                    .map_or("+Inf".to_string(), |b| format_float(*b));
                let _ = write!(out, "{name}_bucket");
                labels(out, &s.labels, extra, Some(&le));
                let _ = writeln!(out, " {cumulative}");
            }
            let _ = write!(out, "{name}_sum");
            labels(out, &s.labels, extra, None);
            let _ = writeln!(out, " {}", format_float(s.sum));
            let _ = write!(out, "{name}_count");
            labels(out, &s.labels, extra, None);
            let _ = writeln!(out, " {}", s.count);
        }
    }
}

/// Label pairs added to every series of a tenant on the way out.
pub type ExtraLabels = Vec<(String, String)>;

/// One of the generator's own series: name, type, help, and its value for a tenant.
type OwnSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Instance) -> f64,
);

/// The page for `tenants` (each with the labels its series get).
pub fn render(generator: &Generator, tenants: &[(String, ExtraLabels)]) -> String {
    let all = generator.tenants();
    let chosen: Vec<(&ExtraLabels, &std::sync::Arc<std::sync::Mutex<Instance>>)> = tenants
        .iter()
        .filter_map(|(t, extra)| all.iter().find(|(id, _)| id == t).map(|(_, i)| (extra, i)))
        .collect();
    let guards: Vec<_> = chosen
        .iter()
        .map(|(extra, i)| (*extra, i.lock().unwrap_or_else(|e| e.into_inner())))
        .collect();
    let mut out = String::new();
    let Some((_, first)) = guards.first() else {
        return out;
    };
    for (m, metric) in first.registry.metrics().iter().enumerate() {
        let type_name = match metric.kind {
            MetricKind::Counter => "counter",
            MetricKind::Histogram(_) => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", metric.name, metric.help);
        let _ = writeln!(out, "# TYPE {} {type_name}", metric.name);
        for (extra, instance) in &guards {
            if let Some(metric) = instance.registry.metrics().get(m) {
                for s in metric.series() {
                    series_lines(&mut out, metric.name, &metric.kind, s, extra);
                }
            }
        }
    }
    let own: [OwnSeries; 6] = [
        (
            "tempo_metrics_generator_registry_active_series",
            "gauge",
            "Active series of the tenant.",
            |i| i.registry.active_series() as f64,
        ),
        (
            "tempo_metrics_generator_registry_max_active_series",
            "gauge",
            "max_active_series of the tenant (0: no limit).",
            |i| i.registry.limits().max_active_series as f64,
        ),
        (
            "tempo_metrics_generator_registry_series_limited_total",
            "counter",
            "Samples sent to the overflow series because max_active_series was reached.",
            |i| i.registry.series_limited as f64,
        ),
        (
            "tempo_metrics_generator_processor_service_graphs_dropped_spans",
            "counter",
            "Spans dropped because max_items halves of edges were waiting.",
            |i| i.dropped_spans() as f64,
        ),
        (
            "tempo_metrics_generator_processor_service_graphs_waiting_halves",
            "gauge",
            "Client or server spans waiting for the other half of their edge.",
            |i| i.waiting_halves() as f64,
        ),
        (
            "tempo_metrics_generator_spans_filtered_total",
            "counter",
            "Spans left out by filter_policies.",
            |i| i.filtered_spans as f64,
        ),
    ];
    for (name, type_name, help, value) in own {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {type_name}");
        for (extra, instance) in &guards {
            out.push_str(name);
            labels(&mut out, &[], extra, None);
            let _ = writeln!(out, " {}", value(instance));
        }
    }
    let name = "tempo_metrics_generator_registry_label_values_limited_total";
    let _ = writeln!(out, "# HELP {name} Label values replaced by __cardinality_overflow__ (max_cardinality_per_label).\n# TYPE {name} counter");
    for (extra, instance) in &guards {
        let mut limited: Vec<_> = instance.registry.label_values_limited.iter().collect();
        limited.sort();
        for (label, count) in limited {
            out.push_str(name);
            labels(
                &mut out,
                &[("label_name".to_string(), label.clone())],
                extra,
                None,
            );
            let _ = writeln!(out, " {count}");
        }
    }
    if let Some(stats) = generator.remote_write_stats() {
        for (name, help, value) in [
            (
                "threadline_generator_remote_write_requests_sent_total",
                "Remote-write requests accepted by the receiver.",
                stats.sent,
            ),
            (
                "threadline_generator_remote_write_requests_failed_total",
                "Remote-write requests given up after retries or refused.",
                stats.failed,
            ),
            (
                "threadline_generator_remote_write_requests_retried_total",
                "Remote-write attempts retried.",
                stats.retried,
            ),
            (
                "threadline_generator_remote_write_requests_dropped_total",
                "Remote-write requests dropped because the queue was full.",
                stats.dropped,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
    }
    out
}
