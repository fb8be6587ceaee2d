//! Tail sampling with a real downstream recorder: whole traces kept or dropped, late spans.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use threadline_otlp::TraceData;

use super::policies::trace_id_hash;
use super::{TailSampler, TailSamplingConfig};
use crate::component::{decode_config, Component};
use crate::consumer::TracesConsumer;
use crate::test_support::Recorder;

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
    let sampler = TailSampler::start(
        "tail_sampling".parse().unwrap(),
        &seed_config("100ms", 0),
        recorder.clone(),
    )
    .unwrap();
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
    let sampler = TailSampler::start(
        "tail_sampling".parse().unwrap(),
        &seed_config("50ms", 10),
        recorder.clone(),
    )
    .unwrap();
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
        "decision_wait: 1h\nnum_traces: 2\npolicies: [{name: all, type: always_sample}]\n",
    )
    .unwrap();
    let config: TailSamplingConfig = decode_config(&value, "p").unwrap();
    let sampler =
        TailSampler::start("tail_sampling".parse().unwrap(), &config, recorder.clone()).unwrap();
    for n in 1..=3 {
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
            "policies: [{name: x, type: rate_limiting, rate_limiting: {spans_per_second: 5}}]",
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
