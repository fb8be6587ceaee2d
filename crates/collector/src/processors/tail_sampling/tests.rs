//! Tail sampling with a real downstream recorder: whole traces kept or dropped, late spans.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use threadline_otlp::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use threadline_otlp::TraceData;

use super::policies::{combine, trace_id_hash, Decision, Policies, TraceSummary};
use super::{TailSampler, TailSamplingConfig};
use crate::component::{decode_config, Component, MemoryPressure};
use crate::consumer::TracesConsumer;
use crate::telemetry::Telemetry;
use crate::test_support::{client_info, Recorder};

fn start(config: &TailSamplingConfig, recorder: &Arc<Recorder>) -> Arc<TailSampler> {
    start_with(config, recorder, &Telemetry::new("test"), Arc::default())
}

fn start_with(
    config: &TailSamplingConfig,
    recorder: &Arc<Recorder>,
    telemetry: &Telemetry,
    memory_pressure: Arc<MemoryPressure>,
) -> Arc<TailSampler> {
    let id = "tail_sampling".parse().unwrap();
    let metrics = telemetry.tail_sampling(&id);
    TailSampler::start(id, config, recorder.clone(), metrics, memory_pressure).unwrap()
}

/// Spans received per trace id.
fn by_trace(recorder: &Recorder) -> HashMap<Vec<u8>, usize> {
    let mut counts = HashMap::new();
    for span in recorder.spans() {
        *counts.entry(span.trace_id).or_insert(0) += 1;
    }
    counts
}

fn trace_id(n: u32) -> [u8; 16] {
    let mut id = [7u8; 16];
    id[12..].copy_from_slice(&n.to_be_bytes());
    id
}

/// Span `index` of trace `n`; span 0 is the root. `duration_ms` and `error` shape the trace.
fn span(n: u32, index: u8, duration_ms: u64, error: bool) -> Span {
    let start = 1_700_000_000_000_000_000u64;
    Span {
        trace_id: trace_id(n).to_vec(),
        span_id: vec![index + 1; 8],
        parent_span_id: if index == 0 { vec![] } else { vec![1; 8] },
        name: format!("span-{index}"),
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration_ms * 1_000_000,
        status: error.then(|| Status {
            code: 2,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

fn data(spans: Vec<Span>) -> TraceData {
    TraceData::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn seed_config(wait: &str, percentage: u32) -> TailSamplingConfig {
    let yaml = format!(
        "decision_wait: {wait}\nnum_traces: 100000\npolicies:\n  - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}\n  - {{name: slow, type: latency, latency: {{threshold_ms: 2000}}}}\n  - {{name: standard, type: probabilistic, probabilistic: {{sampling_percentage: {percentage}}}}}\n"
    );
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    decode_config(&value, "processors::tail_sampling").unwrap()
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn keeps_every_error_and_slow_trace_whole_and_drops_the_rest_at_0_percent() {
    let recorder = Arc::new(Recorder::default());
    let sampler = start(&seed_config("100ms", 0), &recorder);
    // Trace 1: error on a child; 2: slow; 3: normal. Each arrives in two requests.
    for (n, duration, error) in [(1, 10, true), (2, 3000, false), (3, 10, false)] {
        sampler
            .consume(data(vec![
                span(n, 0, duration, false),
                span(n, 1, 5, false),
            ]))
            .await
            .unwrap();
        sampler
            .consume(data(vec![span(n, 2, 5, error)]))
            .await
            .unwrap();
    }
    wait_until(|| by_trace(&recorder).len() == 2).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let kept = by_trace(&recorder);
    assert_eq!(
        kept.get(trace_id(1).as_slice()),
        Some(&3),
        "error trace whole"
    );
    assert_eq!(
        kept.get(trace_id(2).as_slice()),
        Some(&3),
        "slow trace whole"
    );
    assert_eq!(
        kept.get(trace_id(3).as_slice()),
        None,
        "normal trace dropped at 0%"
    );

    // Late spans follow the decision.
    sampler
        .consume(data(vec![span(1, 3, 5, false), span(3, 3, 5, false)]))
        .await
        .unwrap();
    wait_until(|| by_trace(&recorder).get(trace_id(1).as_slice()) == Some(&4)).await;
    assert_eq!(by_trace(&recorder).get(trace_id(3).as_slice()), None);
    sampler.shutdown(Instant::now()).await;
}

#[tokio::test]
async fn probabilistic_share_is_within_a_binomial_bound() {
    let recorder = Arc::new(Recorder::default());
    let sampler = start(&seed_config("50ms", 10), &recorder);
    let traces = 4000u32;
    for n in 0..traces {
        // Random-looking ids: the hash of n spreads them.
        sampler
            .consume(data(vec![span(
                n.wrapping_mul(2_654_435_761),
                0,
                10,
                false,
            )]))
            .await
            .unwrap();
    }
    sampler.shutdown(Instant::now()).await;
    let kept = by_trace(&recorder).len() as f64;
    // 10% of 4000 = 400, sigma = sqrt(4000 * 0.1 * 0.9) ~ 19; allow 4 sigma.
    assert!((kept - 400.0).abs() < 76.0, "kept {kept} of {traces}");
}

#[tokio::test]
async fn num_traces_decides_the_oldest_early_instead_of_dropping_it() {
    let recorder = Arc::new(Recorder::default());
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "decision_wait: 1h\nnum_traces: 32\npolicies: [{name: all, type: always_sample}]\n",
    )
    .unwrap();
    let config: TailSamplingConfig = decode_config(&value, "p").unwrap();
    let sampler = start(&config, &recorder);
    // 32 traces over 16 shards: 2 per shard. Traces 1, 17 and 33 share a shard.
    for n in [1, 17, 33] {
        sampler
            .consume(data(vec![span(n, 0, 10, false)]))
            .await
            .unwrap();
    }
    let kept = by_trace(&recorder);
    assert_eq!(
        kept.len(),
        1,
        "the oldest was decided when the third arrived"
    );
    assert!(kept.contains_key(trace_id(1).as_slice()));
    sampler.shutdown(Instant::now()).await;
    assert_eq!(
        by_trace(&recorder).len(),
        3,
        "shutdown decides what is pending"
    );
}

#[test]
fn the_trace_id_hash_is_stable_across_processes() {
    // Replicas must agree: the value is a fixed function of salt and id.
    assert_eq!(
        trace_id_hash(b"default-hash-seed", &[0; 16]),
        trace_id_hash(b"default-hash-seed", &[0; 16])
    );
    assert_ne!(trace_id_hash(b"a", &[1; 16]), trace_id_hash(b"b", &[1; 16]));
}

#[test]
fn unsupported_policies_and_bad_values_are_named() {
    for (yaml, path) in [
        (
            "policies: [{name: x, type: ottl_condition, ottl_condition: {}}]",
            "p::policies[0]::type",
        ),
        (
            "policies: [{name: x, type: status_code, status_code: {status_codes: [BAD]}}]",
            "p::policies[0]::status_code::status_codes",
        ),
        (
            "policies: [{name: x, type: latency}]",
            "p::policies[0]::latency",
        ),
        ("policies: []", "p::policies"),
    ] {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let errors = decode_config::<TailSamplingConfig>(&value, "p").unwrap_err();
        assert!(errors.0.iter().any(|e| e.path == path), "{yaml}: {errors}");
    }
}

#[test]
fn testdata_decodes() {
    let all: serde_yaml_ng::Mapping =
        serde_yaml_ng::from_str(include_str!("testdata/config.yaml")).unwrap();
    for (key, value) in all {
        decode_config::<TailSamplingConfig>(&value, key.as_str().unwrap()).unwrap();
    }
}

// ---- policies and decision combining ----

fn policies(yaml: &str) -> Policies {
    let config: TailSamplingConfig =
        decode_config(&serde_yaml_ng::from_str(yaml).unwrap(), "p").unwrap();
    Policies::compile(&config.policies).unwrap()
}

/// The decisions and the final verdict for one trace made of `spans`.
fn evaluate(policies: &Policies, spans: Vec<Span>) -> (Vec<Decision>, bool) {
    let trace = data(spans);
    let id: [u8; 16] = trace_id(1);
    let mut summary = TraceSummary::new(policies);
    for (_, slice) in trace.slices_by_trace() {
        summary.add(&slice, policies);
    }
    let mut decisions = Vec::new();
    let kept = policies.evaluate(&id, &summary, false, &mut decisions);
    (decisions, kept)
}

fn with_attribute(mut span: Span, key: &str, value: any_value::Value) -> Span {
    span.attributes.push(KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    });
    span
}

fn text(value: &str) -> any_value::Value {
    any_value::Value::StringValue(value.into())
}

#[test]
fn combining_follows_upstream_rules() {
    use Decision::*;
    for (decisions, kept) in [
        (vec![NotSampled], false),
        (vec![Sampled, NotSampled], true),
        (vec![InvertSampled], true),
        (vec![InvertSampled, NotSampled], false),
        (vec![InvertSampled, Sampled, NotSampled], true),
        (vec![Sampled, InvertNotSampled], false),
        (vec![Sampled, Dropped], false),
        (vec![InvertSampled, Dropped], false),
        (vec![], false),
    ] {
        assert_eq!(combine(&decisions), kept, "{decisions:?}");
    }
}

#[test]
fn invert_match_overrides_other_policies() {
    let p = policies(
        "policies:\n  - {name: all, type: always_sample}\n  - {name: no-health, type: string_attribute, string_attribute: {key: http.route, values: [/health], invert_match: true}}",
    );
    let health = with_attribute(span(1, 0, 10, false), "http.route", text("/health"));
    let (decisions, kept) = evaluate(&p, vec![health]);
    assert_eq!(decisions, [Decision::Sampled, Decision::InvertNotSampled]);
    assert!(!kept);
    let orders = with_attribute(span(1, 0, 10, false), "http.route", text("/orders"));
    let (decisions, kept) = evaluate(&p, vec![orders]);
    assert_eq!(decisions[1], Decision::InvertSampled);
    assert!(kept);

    let numeric = policies(
        "policies: [{name: n, type: numeric_attribute, numeric_attribute: {key: items, min_value: 1, max_value: 5, invert_match: true}}]",
    );
    let big = with_attribute(
        span(1, 0, 10, false),
        "items",
        any_value::Value::IntValue(50),
    );
    assert_eq!(
        evaluate(&numeric, vec![big]),
        (vec![Decision::InvertSampled], true)
    );
}

#[test]
fn attribute_policies_look_at_spans_and_resources() {
    let p = policies(
        "policies:\n  - {name: s, type: string_attribute, string_attribute: {key: tier, values: [\"gold.*\"], enabled_regex_matching: true}}\n  - {name: n, type: numeric_attribute, numeric_attribute: {key: items, min_value: 10}}\n  - {name: b, type: boolean_attribute, boolean_attribute: {key: debug, value: true}}",
    );
    let spans = vec![
        with_attribute(span(1, 0, 10, false), "tier", text("gold-plus")),
        with_attribute(
            span(1, 1, 10, false),
            "items",
            any_value::Value::IntValue(3),
        ),
        with_attribute(
            span(1, 2, 10, false),
            "debug",
            any_value::Value::BoolValue(true),
        ),
    ];
    let (decisions, _) = evaluate(&p, spans);
    assert_eq!(
        decisions,
        [Decision::Sampled, Decision::NotSampled, Decision::Sampled]
    );
}

#[test]
fn and_needs_every_sub_policy_and_drop_wins_over_everything() {
    let p = policies(
        "policies:\n  - name: slow-errors\n    type: and\n    and: {and_sub_policy: [{name: e, type: status_code, status_code: {status_codes: [ERROR]}}, {name: l, type: latency, latency: {threshold_ms: 1000}}]}",
    );
    assert!(!evaluate(&p, vec![span(1, 0, 10, true)]).1);
    assert!(evaluate(&p, vec![span(1, 0, 1500, true)]).1);

    let p = policies(
        "policies:\n  - {name: all, type: always_sample}\n  - name: no-health-checks\n    type: drop\n    drop: {drop_sub_policy: [{name: h, type: string_attribute, string_attribute: {key: http.route, values: [/health]}}]}",
    );
    let health = with_attribute(span(1, 0, 10, false), "http.route", text("/health"));
    assert_eq!(
        evaluate(&p, vec![health]),
        (vec![Decision::Sampled, Decision::Dropped], false)
    );
    assert!(evaluate(&p, vec![span(1, 0, 10, false)]).1);
}

#[test]
fn trace_state_and_trace_flags() {
    let p = policies(
        "policies:\n  - {name: gold, type: trace_state, trace_state: {key: tier, values: [gold]}}\n  - {name: flags, type: trace_flags}",
    );
    let mut gold = span(1, 0, 10, false);
    gold.trace_state = "vendor=x,tier=gold".into();
    assert_eq!(
        evaluate(&p, vec![gold]).0,
        [Decision::Sampled, Decision::NotSampled]
    );
    let mut flagged = span(1, 0, 10, false);
    flagged.flags = 0x101;
    assert_eq!(
        evaluate(&p, vec![flagged]).0,
        [Decision::NotSampled, Decision::Sampled]
    );
}

#[test]
fn rate_and_bytes_limits_sample_within_their_budget() {
    let p = policies(
        "policies: [{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 10}}]",
    );
    let four_spans = || (0..4).map(|i| span(1, i, 10, false)).collect::<Vec<_>>();
    let kept: Vec<bool> = (0..4).map(|_| evaluate(&p, four_spans()).1).collect();
    // Within one second: 4 + 4 fit in 10, the third trace does not. (A second boundary in
    // between resets the budget, so only the first two are certain.)
    assert!(kept[0] && kept[1]);
    assert!(kept.iter().filter(|k| **k).count() <= 3 + usize::from(kept[2] && kept[3]));

    let p = policies("policies: [{name: b, type: bytes_limiting, bytes_limiting: {bytes_per_second: 1, burst_capacity: 200}}]");
    let first = evaluate(&p, vec![span(1, 0, 10, false)]);
    assert!(first.1, "the burst covers one small trace");
    let many: Vec<Span> = (0..20).map(|i| span(1, i, 10, false)).collect();
    assert!(
        !evaluate(&p, many).1,
        "a trace beyond the remaining bytes is not sampled"
    );
}

#[test]
fn composite_shares_its_rate_between_sub_policies_in_order() {
    let p = policies(
        "policies:\n  - name: c\n    type: composite\n    composite:\n      max_total_spans_per_second: 1000\n      policy_order: [errors, rest]\n      composite_sub_policy:\n        - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n        - {name: rest, type: always_sample}\n      rate_allocation:\n        - {policy: errors, percent: 60}\n        - {policy: rest, percent: 1}",
    );
    // `rest` may take 10 spans per second: a 5-span trace fits twice, the third does not.
    let five = || (0..5).map(|i| span(1, i, 10, false)).collect::<Vec<_>>();
    let kept: Vec<bool> = (0..3).map(|_| evaluate(&p, five()).1).collect();
    assert!(kept[0]);
    assert!(!kept.iter().all(|k| *k), "{kept:?}");
    // Errors have their own share.
    assert!(evaluate(&p, vec![span(1, 0, 10, true)]).1);
}

#[test]
fn nested_and_unknown_sub_policies_are_named() {
    let yaml = "policies:\n  - name: a\n    type: and\n    and: {and_sub_policy: [{name: d, type: drop, drop: {drop_sub_policy: []}}]}";
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    let errors = decode_config::<TailSamplingConfig>(&value, "p").unwrap_err();
    assert!(
        errors
            .0
            .iter()
            .any(|e| e.path == "p::policies[0]::and::and_sub_policy[0]::type"),
        "{errors}"
    );
    let yaml = "policies:\n  - name: c\n    type: composite\n    composite: {max_total_spans_per_second: 10, policy_order: [x], composite_sub_policy: [{name: y, type: always_sample}]}";
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    let errors = decode_config::<TailSamplingConfig>(&value, "p").unwrap_err();
    assert!(
        errors
            .to_string()
            .contains("\"x\" is not a composite_sub_policy"),
        "{errors}"
    );
}

// ---- metrics and memory ----

#[tokio::test]
async fn decisions_are_counted_under_upstream_metric_names() {
    let recorder = Arc::new(Recorder::default());
    let telemetry = Telemetry::new("test");
    let sampler = start_with(
        &seed_config("50ms", 0),
        &recorder,
        &telemetry,
        Arc::default(),
    );
    sampler
        .consume(data(vec![span(1, 0, 10, true)]))
        .await
        .unwrap();
    sampler
        .consume(data(vec![span(2, 0, 10, false)]))
        .await
        .unwrap();
    wait_until(|| by_trace(&recorder).len() == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A late span of the kept trace.
    sampler
        .consume(data(vec![span(1, 1, 10, false)]))
        .await
        .unwrap();
    let text = telemetry.render();
    for expected in [
        "otelcol_processor_tail_sampling_count_traces_sampled{decision=\"sampled\",policy=\"errors\",processor=\"tail_sampling\",sampled=\"true\"",
        "otelcol_processor_tail_sampling_count_traces_sampled{decision=\"not_sampled\",policy=\"errors\",processor=\"tail_sampling\",sampled=\"false\"",
        "otelcol_processor_tail_sampling_global_count_traces_sampled{processor=\"tail_sampling\",sampled=\"true\"",
        "otelcol_processor_tail_sampling_new_trace_id_received{processor=\"tail_sampling\"",
        "otelcol_processor_tail_sampling_sampling_decision_latency_bucket",
        "otelcol_processor_tail_sampling_sampling_decision_timer_latency_bucket",
        "otelcol_processor_tail_sampling_sampling_late_span_age_count",
        "otelcol_processor_tail_sampling_sampling_traces_on_memory",
    ] {
        assert!(text.contains(expected), "missing {expected}");
    }
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .map(|v| v.parse::<f64>().unwrap())
    };
    assert_eq!(
        line("otelcol_processor_tail_sampling_new_trace_id_received{"),
        Some(2.0)
    );
    assert_eq!(
        line("otelcol_processor_tail_sampling_sampling_traces_on_memory{"),
        Some(0.0)
    );
    sampler.shutdown(Instant::now()).await;
}

#[tokio::test]
async fn memory_pressure_decides_the_oldest_traces_early() {
    let recorder = Arc::new(Recorder::default());
    let pressure = Arc::new(MemoryPressure::default());
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "decision_wait: 1h\npolicies: [{name: all, type: always_sample}]\n",
    )
    .unwrap();
    let config: TailSamplingConfig = decode_config(&value, "p").unwrap();
    let sampler = start_with(
        &config,
        &recorder,
        &Telemetry::new("test"),
        pressure.clone(),
    );
    for n in 1..=200 {
        sampler
            .consume(data(vec![span(n, 0, 10, false)]))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(by_trace(&recorder).is_empty(), "nothing is due for an hour");
    pressure.set_refusing(true);
    wait_until(|| by_trace(&recorder).len() >= 100).await;
    pressure.set_refusing(false);
    sampler.shutdown(Instant::now()).await;
    assert_eq!(
        by_trace(&recorder).len(),
        200,
        "every trace decided once, none lost"
    );
}

fn tenant(name: &str) -> crate::client::ClientInfo {
    client_info(&[
        ("x-scope-orgid", name),
        ("user-agent", &format!("sdk-of-{name}")),
    ])
}

#[tokio::test]
async fn metadata_keys_keep_tenants_apart_within_one_trace_id_and_carry_the_tenant_on() {
    let recorder = Arc::new(Recorder::default());
    let mut config = seed_config("100ms", 0);
    config.metadata_keys = vec!["X-Scope-OrgID".into()];
    let sampler = start(&config, &recorder);
    // Both tenants send trace 1; only acme's has an error, so only acme's is kept.
    crate::client::scope(
        tenant("acme"),
        sampler.consume(data(vec![span(1, 0, 10, false), span(1, 1, 5, true)])),
    )
    .await
    .unwrap();
    crate::client::scope(
        tenant("globex"),
        sampler.consume(data(vec![span(1, 0, 10, false), span(1, 2, 5, false)])),
    )
    .await
    .unwrap();
    // Trace 2 of globex: an error, kept, and carried on as globex's.
    crate::client::scope(
        tenant("globex"),
        sampler.consume(data(vec![span(2, 0, 10, true)])),
    )
    .await
    .unwrap();
    wait_until(|| recorder.sizes().iter().sum::<usize>() == 3).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut kept: Vec<(String, Vec<u8>, usize)> = recorder
        .batches()
        .iter()
        .zip(recorder.clients())
        .flat_map(|(batch, info)| {
            let tenant = info.get("x-scope-orgid").join(",");
            assert!(
                info.get("user-agent").is_empty(),
                "only metadata_keys go on"
            );
            let request = batch.to_request().unwrap();
            let mut per_trace: HashMap<Vec<u8>, usize> = HashMap::new();
            for span in request
                .resource_spans
                .into_iter()
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans)
            {
                *per_trace.entry(span.trace_id).or_insert(0) += 1;
            }
            per_trace
                .into_iter()
                .map(move |(id, count)| (tenant.clone(), id, count))
        })
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        vec![
            ("acme".to_string(), trace_id(1).to_vec(), 2),
            ("globex".to_string(), trace_id(2).to_vec(), 1),
        ],
        "globex's spans of trace 1 were decided apart (no error: dropped), not mixed into acme's"
    );
    sampler.shutdown(Instant::now()).await;
}

#[tokio::test]
async fn tail_sampling_refuses_a_new_tenant_past_the_cardinality_limit() {
    let recorder = Arc::new(Recorder::default());
    let mut config = seed_config("50ms", 100);
    config.metadata_keys = vec!["x-scope-orgid".into()];
    config.metadata_cardinality_limit = 1;
    let sampler = start(&config, &recorder);
    crate::client::scope(
        tenant("a"),
        sampler.consume(data(vec![span(1, 0, 1, false)])),
    )
    .await
    .unwrap();
    let err = crate::client::scope(
        tenant("b"),
        sampler.consume(data(vec![span(2, 0, 1, false)])),
    )
    .await
    .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    sampler.shutdown(Instant::now()).await;
}
