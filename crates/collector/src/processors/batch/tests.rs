//! The batch processor with a real recording consumer downstream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use threadline_otlp::TraceData;

use super::{BatchConfig, BatchProcessor};
use crate::client::{self, ClientInfo};
use crate::component::{decode_config, Component};
use crate::consumer::TracesConsumer;
use crate::telemetry::Telemetry;
use crate::test_support::{client_info, Recorder};

/// A request of `count` spans named `{prefix}{i}`.
fn request(prefix: &str, count: usize) -> TraceData {
    let spans = (0..count)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("{prefix}{i}"),
            ..Default::default()
        })
        .collect();
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

fn start(yaml: &str) -> (BatchProcessor, Arc<Recorder>, Arc<Telemetry>) {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    let config: BatchConfig = decode_config(&value, "processors::batch").unwrap();
    let recorder = Arc::new(Recorder::default());
    let telemetry = Telemetry::new("test");
    let id = "batch".parse().unwrap();
    let processor = BatchProcessor::start(
        "batch".parse().unwrap(),
        &config,
        recorder.clone(),
        telemetry.processor(&id),
        telemetry.batch(&id),
    );
    (processor, recorder, telemetry)
}

async fn wait_for(recorder: &Recorder, spans: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while recorder.sizes().iter().sum::<usize>() < spans {
        assert!(
            Instant::now() < deadline,
            "only {:?} arrived",
            recorder.sizes()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn sends_when_the_size_is_reached_without_waiting_for_the_timeout() {
    let (processor, recorder, _) = start("timeout: 1h\nsend_batch_size: 10\n");
    for i in 0..3 {
        processor
            .consume(request(&format!("r{i}-"), 4))
            .await
            .unwrap();
    }
    wait_for(&recorder, 12).await;
    // 4 + 4 + 4 crosses 10 at the third request: one batch of 12, nothing held.
    assert_eq!(recorder.sizes(), vec![12]);
    let names = recorder
        .spans()
        .into_iter()
        .map(|s| s.name)
        .collect::<Vec<_>>();
    assert_eq!(names[0], "r0-0");
    assert_eq!(names[11], "r2-3");
}

#[tokio::test]
async fn sends_on_timeout_when_the_size_is_not_reached() {
    let (processor, recorder, telemetry) = start("timeout: 50ms\nsend_batch_size: 1000\n");
    let started = Instant::now();
    processor.consume(request("a", 3)).await.unwrap();
    processor.consume(request("b", 2)).await.unwrap();
    wait_for(&recorder, 5).await;
    assert!(started.elapsed() >= Duration::from_millis(45));
    assert_eq!(recorder.sizes(), vec![5]);
    let metrics = telemetry.render();
    assert!(
        metrics.contains("otelcol_processor_batch_timeout_trigger_send{processor=\"batch\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn splits_batches_above_the_max_size_and_keeps_the_remainder() {
    let (processor, recorder, _) =
        start("timeout: 100ms\nsend_batch_size: 10\nsend_batch_max_size: 10\n");
    processor.consume(request("x", 25)).await.unwrap();
    wait_for(&recorder, 20).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        recorder.sizes(),
        vec![10, 10],
        "the 5 left wait for the timeout"
    );
    wait_for(&recorder, 25).await;
    assert_eq!(recorder.sizes(), vec![10, 10, 5]);
    let names = recorder
        .spans()
        .into_iter()
        .map(|s| s.name)
        .collect::<Vec<_>>();
    let expected: Vec<String> = (0..25).map(|i| format!("x{i}")).collect();
    assert_eq!(names, expected, "order kept, nothing lost or duplicated");
}

#[tokio::test]
async fn shutdown_flushes_what_is_held() {
    let (processor, recorder, _) = start("timeout: 1h\nsend_batch_size: 1000\n");
    processor.consume(request("held", 7)).await.unwrap();
    processor
        .shutdown(Instant::now() + Duration::from_secs(2))
        .await;
    assert_eq!(recorder.sizes(), vec![7]);
    let err = processor.consume(request("late", 1)).await.unwrap_err();
    assert!(!err.is_permanent());
}

fn queue_full() -> crate::consumer::ConsumeError {
    crate::consumer::ConsumeError::retryable("sending queue is full")
}

#[tokio::test]
async fn a_refused_batch_is_held_and_new_data_refused_until_the_next_stage_takes_it() {
    let (processor, recorder, telemetry) = start("timeout: 5ms\nsend_batch_size: 4\n");
    recorder.fail_with(Some(queue_full()));
    // Accepted until the batching task has met the refusal; refused (retryable) from then on.
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        let name = format!("r{i}-");
        match processor.consume(request(&name, 4)).await {
            Ok(()) => accepted.push(name),
            Err(err) => {
                assert!(!err.is_permanent(), "{err:?}");
                refused += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        refused > 150,
        "only {refused} of 200 refused while the next stage refused"
    );
    assert!(!accepted.is_empty());
    let id = "batch".parse().unwrap();
    assert_eq!(
        telemetry.processor(&id).refused_spans.get(),
        refused * 4,
        "refusals are counted as otelcol_processor_refused_spans"
    );

    recorder.fail_with(None);
    wait_for(&recorder, accepted.len() * 4).await;
    let mut arrived: Vec<String> = recorder.spans().into_iter().map(|s| s.name).collect();
    arrived.sort();
    let mut expected: Vec<String> = accepted
        .iter()
        .flat_map(|prefix| (0..4).map(move |i| format!("{prefix}{i}")))
        .collect();
    expected.sort();
    assert_eq!(
        arrived, expected,
        "every accepted span arrives once, no refused one"
    );
    processor.consume(request("after", 4)).await.unwrap();
    wait_for(&recorder, accepted.len() * 4 + 4).await;
}

#[tokio::test]
async fn a_batch_still_refused_at_the_shutdown_deadline_is_dropped_and_shutdown_returns() {
    let (processor, recorder, _) = start("timeout: 1h\nsend_batch_size: 1000\n");
    recorder.fail_with(Some(queue_full()));
    processor.consume(request("held", 7)).await.unwrap();
    let started = Instant::now();
    processor
        .shutdown(Instant::now() + Duration::from_millis(300))
        .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert!(recorder.sizes().is_empty());
}

#[tokio::test]
async fn a_permanent_refusal_drops_the_batch_and_does_not_block_new_data() {
    let (processor, recorder, _) = start("timeout: 5ms\nsend_batch_size: 1\n");
    recorder.fail_with(Some(crate::consumer::ConsumeError::Permanent(
        "invalid".into(),
    )));
    processor.consume(request("bad", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    recorder.fail_with(None);
    processor.consume(request("good", 1)).await.unwrap();
    wait_for(&recorder, 1).await;
    assert_eq!(recorder.spans()[0].name, "good0");
}

#[test]
fn max_size_below_batch_size_is_rejected_naming_both_fields() {
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str("send_batch_size: 100\nsend_batch_max_size: 10\n").unwrap();
    let errors = decode_config::<BatchConfig>(&value, "processors::batch").unwrap_err();
    assert_eq!(errors.0[0].path, "processors::batch::send_batch_max_size");
    assert!(errors.0[0].message.contains("send_batch_size"));
}

#[test]
fn testdata_decodes() {
    let all: serde_yaml_ng::Mapping =
        serde_yaml_ng::from_str(include_str!("testdata/config.yaml")).unwrap();
    let custom: BatchConfig = decode_config(&all["batch/2"], "processors::batch/2").unwrap();
    assert_eq!(custom.timeout.0, Duration::from_secs(10));
    assert_eq!(custom.send_batch_max_size, 11000);
    let defaults: BatchConfig = decode_config(&all["batch"], "processors::batch").unwrap();
    assert_eq!(defaults.send_batch_size, 8192);
    assert_eq!(defaults.timeout.0, Duration::from_millis(200));
}

async fn consume_as(processor: &BatchProcessor, info: ClientInfo, data: TraceData) {
    client::scope(info, processor.consume(data)).await.unwrap();
}

#[tokio::test]
async fn metadata_keys_batch_each_combination_apart_and_carry_only_those_keys_on() {
    let (processor, recorder, _) =
        start("timeout: 50ms\nsend_batch_size: 1000\nmetadata_keys: [X-Scope-OrgID]\n");
    let acme = client_info(&[("x-scope-orgid", "acme"), ("user-agent", "sdk/1")]);
    let acme_other_client = client_info(&[("X-Scope-OrgID", "acme"), ("user-agent", "sdk/2")]);
    let globex = client_info(&[("x-scope-orgid", "globex")]);
    consume_as(&processor, acme, request("a", 3)).await;
    consume_as(&processor, globex, request("g", 2)).await;
    consume_as(&processor, acme_other_client, request("a2-", 1)).await;
    consume_as(&processor, ClientInfo::default(), request("none", 4)).await;
    wait_for(&recorder, 10).await;
    assert_eq!(processor.metadata_cardinality(), 3);

    let mut by_tenant: Vec<(Vec<String>, usize, bool)> = recorder
        .batches()
        .iter()
        .zip(recorder.clients())
        .map(|(batch, info)| {
            (
                info.get("x-scope-orgid").to_vec(),
                batch.span_count(),
                info.get("user-agent").is_empty(),
            )
        })
        .collect();
    by_tenant.sort();
    assert_eq!(
        by_tenant,
        vec![
            (vec![], 4, true),
            (vec!["acme".to_string()], 4, true),
            (vec!["globex".to_string()], 2, true),
        ],
        "one batch per tenant (the requests without one apart), only the key carried on"
    );
    processor
        .shutdown(Instant::now() + Duration::from_secs(2))
        .await;
}

#[tokio::test]
async fn a_new_combination_past_the_cardinality_limit_is_refused_permanently() {
    let (processor, recorder, _) =
        start("timeout: 20ms\nmetadata_keys: [tenant]\nmetadata_cardinality_limit: 2\n");
    consume_as(&processor, client_info(&[("tenant", "1")]), request("a", 1)).await;
    consume_as(&processor, client_info(&[("tenant", "2")]), request("b", 1)).await;
    let err = client::scope(
        client_info(&[("tenant", "3")]),
        processor.consume(request("c", 1)),
    )
    .await
    .unwrap_err();
    assert!(err.is_permanent() && err.to_string().contains("metadata_cardinality_limit 2"));
    // Known combinations still pass.
    consume_as(&processor, client_info(&[("tenant", "1")]), request("a", 1)).await;
    wait_for(&recorder, 3).await;
    processor
        .shutdown(Instant::now() + Duration::from_secs(2))
        .await;
    assert_eq!(recorder.sizes().iter().sum::<usize>(), 3);
}

#[tokio::test]
async fn without_metadata_keys_batches_carry_no_client_metadata() {
    let (processor, recorder, _) = start("timeout: 20ms\n");
    consume_as(
        &processor,
        client_info(&[("x-scope-orgid", "acme")]),
        request("a", 2),
    )
    .await;
    wait_for(&recorder, 2).await;
    assert!(recorder.clients().iter().all(ClientInfo::is_empty));
    processor
        .shutdown(Instant::now() + Duration::from_secs(2))
        .await;
}

#[test]
fn duplicate_metadata_keys_are_rejected_case_insensitively() {
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str("metadata_keys: [Tenant, tenant]\n").unwrap();
    let errors = decode_config::<BatchConfig>(&value, "processors::batch").unwrap_err();
    assert_eq!(errors.0[0].path, "processors::batch::metadata_keys");
    assert!(
        errors.0[0].message.contains("duplicate"),
        "{}",
        errors.0[0].message
    );
}
