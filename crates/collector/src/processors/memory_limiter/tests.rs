//! memory_limiter against a controllable probe and against the real RSS of this test process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use threadline_otlp::TraceData;

use super::{Limits, MemoryLimiter, MemoryLimiterConfig};
use crate::component::{decode_config, Component, MemoryPressure};
use crate::consumer::{ConsumeError, TracesConsumer};
use crate::process;
use crate::telemetry::Telemetry;

const MIB: u64 = 1024 * 1024;

#[derive(Default)]
struct Counter {
    spans: Mutex<usize>,
}

#[async_trait]
impl TracesConsumer for Counter {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        *self.spans.lock().unwrap() += data.span_count();
        Ok(())
    }
}

fn one_span() -> TraceData {
    TraceData::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![1; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn limiter(
    limits: Limits,
    probe: Arc<dyn Fn() -> u64 + Send + Sync>,
) -> (Arc<MemoryLimiter>, Arc<Counter>, Arc<MemoryPressure>) {
    let counter = Arc::new(Counter::default());
    let pressure = Arc::new(MemoryPressure::default());
    let telemetry = Telemetry::new("test");
    let limiter = MemoryLimiter::start(
        "memory_limiter".parse().unwrap(),
        limits,
        Duration::from_millis(20),
        counter.clone(),
        telemetry.processor(&"memory_limiter".parse().unwrap()),
        pressure.clone(),
        probe,
    );
    (limiter, counter, pressure)
}

#[tokio::test]
async fn refuses_above_the_soft_limit_and_resumes_below_it() {
    let used = Arc::new(AtomicU64::new(50 * MIB));
    let probe_used = used.clone();
    let limits = Limits {
        hard: 100 * MIB,
        soft: 80 * MIB,
    };
    let (limiter, counter, pressure) =
        limiter(limits, Arc::new(move || probe_used.load(Ordering::Relaxed)));

    limiter.consume(one_span()).await.unwrap();
    used.store(90 * MIB, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(40)).await;
    match limiter.consume(one_span()).await {
        Err(ConsumeError::Retryable { retry_after, .. }) => assert!(retry_after.is_some()),
        other => panic!("expected a retryable refusal, got {other:?}"),
    }
    assert!(pressure.is_refusing(), "receivers are told to refuse too");

    used.store(60 * MIB, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(40)).await;
    limiter.consume(one_span()).await.unwrap();
    assert!(!pressure.is_refusing());
    assert_eq!(*counter.spans.lock().unwrap(), 2);
    limiter.shutdown(Instant::now()).await;
}

#[tokio::test]
async fn measures_the_real_resident_memory() {
    let baseline = process::resident_memory_bytes().unwrap();
    let limits = Limits {
        hard: baseline + 120 * MIB,
        soft: baseline + 100 * MIB,
    };
    let (limiter, _counter, _) = limiter(
        limits,
        Arc::new(|| process::resident_memory_bytes().unwrap_or(0)),
    );
    limiter.consume(one_span()).await.unwrap();

    // Touch 200 MiB so it is really resident.
    let mut ballast = vec![0u8; 200 * MIB as usize];
    for page in ballast.chunks_mut(4096) {
        page[0] = 1;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        limiter.consume(one_span()).await.is_err(),
        "200 MiB over a 100 MiB headroom must be refused"
    );
    assert_eq!(
        ballast.iter().step_by(4096).filter(|b| **b == 1).count(),
        ballast.len() / 4096
    );
    drop(ballast);
    tokio::time::sleep(Duration::from_millis(50)).await;
    limiter.consume(one_span()).await.unwrap();
    limiter.shutdown(Instant::now()).await;
}

#[test]
fn limits_resolve_like_upstream() {
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str("check_interval: 1s\nlimit_mib: 300\n").unwrap();
    let config: MemoryLimiterConfig = decode_config(&value, "processors::memory_limiter").unwrap();
    let limits = config.limits(None).unwrap();
    assert_eq!(limits.hard, 300 * MIB);
    assert_eq!(limits.soft, 240 * MIB, "spike defaults to 20% of the limit");

    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "check_interval: 1s\nlimit_percentage: 50\nspike_limit_percentage: 10\n",
    )
    .unwrap();
    let config: MemoryLimiterConfig = decode_config(&value, "processors::memory_limiter").unwrap();
    let limits = config.limits(Some(1000 * MIB)).unwrap();
    assert_eq!(limits.hard, 500 * MIB);
    assert_eq!(limits.soft, 400 * MIB);
}

#[test]
fn invalid_configs_name_the_field() {
    for (yaml, field) in [
        ("limit_mib: 100\n", "check_interval"),
        ("check_interval: 1s\n", "limit_mib"),
        (
            "check_interval: 1s\nlimit_mib: 100\nspike_limit_mib: 100\n",
            "spike_limit_mib",
        ),
        (
            "check_interval: 1s\nlimit_percentage: 120\n",
            "limit_percentage",
        ),
    ] {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let errors =
            decode_config::<MemoryLimiterConfig>(&value, "processors::memory_limiter").unwrap_err();
        assert!(
            errors
                .0
                .iter()
                .any(|e| e.path == format!("processors::memory_limiter::{field}")),
            "{yaml}: {errors}"
        );
    }
}

#[test]
fn testdata_decodes() {
    let all: serde_yaml_ng::Mapping =
        serde_yaml_ng::from_str(include_str!("testdata/config.yaml")).unwrap();
    for key in ["memory_limiter", "memory_limiter/percentage"] {
        decode_config::<MemoryLimiterConfig>(&all[key], key).unwrap();
    }
}
