//! Queue, retry and shutdown behaviour, exercised through the `otlp` exporter against a real gRPC
//! backend on 127.0.0.1 (and a child process killed with SIGKILL for the persistent queue).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tonic::{Code, Status};

use super::*;
use crate::component::{Exporter, ExporterFactory};
use crate::exporters::otlp::OtlpExporterFactory;
use crate::exporters::testkit::{tags, traces, wait_until, yaml, GrpcBackend, TestContext};
use crate::extensions::file_storage::{FileStorage, FileStorageConfig};
use crate::rpc_status::{ProtoAny, ProtoDuration, RetryInfo, RpcStatus, RETRY_INFO_TYPE_URL};

const WAIT: Duration = Duration::from_secs(10);

/// An `otlp` exporter towards `endpoint`, with fast retries; `extra` is more YAML for the section.
fn exporter(tc: &TestContext, endpoint: &str, extra: &str) -> Arc<dyn Exporter> {
    let config = format!(
        "endpoint: {endpoint}\ntls: {{insecure: true}}\ncompression: none\n\
         retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, randomization_factor: 0}}\n{extra}"
    );
    OtlpExporterFactory
        .create_traces(&tc.ctx(), &yaml(&config))
        .unwrap()
}

/// A context whose host has a `file_storage` extension on `dir`.
fn context_with_storage(dir: &Path) -> TestContext {
    let mut tc = TestContext::new("otlp");
    let storage = FileStorage::open(&FileStorageConfig {
        directory: dir.to_path_buf(),
        ..FileStorageConfig::default()
    })
    .unwrap();
    tc.host
        .extensions
        .insert("file_storage".parse().unwrap(), Arc::new(storage));
    tc
}

fn retry_info_status(code: Code, delay: Duration) -> Status {
    let details = RpcStatus {
        code: code as i32,
        message: "slow down".into(),
        details: vec![ProtoAny {
            type_url: RETRY_INFO_TYPE_URL.into(),
            value: RetryInfo {
                retry_delay: Some(ProtoDuration {
                    seconds: delay.as_secs() as i64,
                    nanos: delay.subsec_nanos() as i32,
                }),
            }
            .encode_to_vec(),
        }],
    };
    Status::with_details(code, "slow down", Bytes::from(details.encode_to_vec()))
}

fn queue_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn retries_unavailable_then_delivers_exactly_once() {
    let backend = GrpcBackend::start().await;
    backend.state.respond_with(|n| {
        if n < 2 {
            Err(Status::unavailable("warming up"))
        } else {
            Ok(Default::default())
        }
    });
    let tc = TestContext::new("otlp");
    let exporter = exporter(&tc, &backend.endpoint(), "");
    exporter.consume(traces("a", 3)).await.unwrap();

    assert!(wait_until(WAIT, || backend.state.accepted().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(backend.state.attempts(), 3);
    assert_eq!(backend.state.accepted().len(), 1, "no duplicates");
    let metrics = tc.metrics();
    assert_eq!(metrics.sent_spans.get(), 3);
    assert_eq!(metrics.send_failed_spans.get(), 0);
    exporter
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
}

#[tokio::test]
async fn retry_info_delay_is_waited_for() {
    let backend = GrpcBackend::start().await;
    let delay = Duration::from_millis(700);
    backend.state.respond_with(move |n| {
        if n == 0 {
            Err(retry_info_status(Code::ResourceExhausted, delay))
        } else {
            Ok(Default::default())
        }
    });
    let tc = TestContext::new("otlp");
    let exporter = exporter(&tc, &backend.endpoint(), "");
    exporter.consume(traces("a", 1)).await.unwrap();

    assert!(wait_until(WAIT, || backend.state.accepted().len() == 1).await);
    let received = backend.state.received.lock().unwrap().clone();
    let gap = received[1].at - received[0].at;
    // The backoff alone would wait 50ms.
    assert!(
        gap >= delay,
        "retried after {gap:?}, before the {delay:?} the server asked for"
    );
    assert!(
        gap < delay + Duration::from_millis(1500),
        "retried after {gap:?}"
    );
}

#[tokio::test]
async fn resource_exhausted_without_retry_info_is_permanent() {
    let backend = GrpcBackend::start().await;
    backend
        .state
        .respond_with(|_| Err(Status::resource_exhausted("quota")));
    let tc = TestContext::new("otlp");
    let exporter = exporter(&tc, &backend.endpoint(), "");
    exporter.consume(traces("a", 4)).await.unwrap();

    let metrics = tc.metrics();
    assert!(wait_until(WAIT, || metrics.send_failed_spans.get() == 4).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(backend.state.attempts(), 1, "not retried");
    assert_eq!(metrics.sent_spans.get(), 0);
}

#[tokio::test]
async fn permanent_error_is_dropped_and_counted() {
    let backend = GrpcBackend::start().await;
    backend
        .state
        .respond_with(|_| Err(Status::invalid_argument("bad data")));
    let tc = TestContext::new("otlp");
    let exporter = exporter(&tc, &backend.endpoint(), "");
    exporter.consume(traces("a", 5)).await.unwrap();
    exporter.consume(traces("b", 2)).await.unwrap();

    let metrics = tc.metrics();
    assert!(wait_until(WAIT, || metrics.send_failed_spans.get() == 7).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(backend.state.attempts(), 2);
    assert_eq!(metrics.sent_spans.get(), 0);
    assert_eq!(metrics.queue_size.get(), 0);
}

#[tokio::test]
async fn retries_stop_after_max_elapsed_time() {
    let backend = GrpcBackend::start().await;
    backend
        .state
        .respond_with(|_| Err(Status::unavailable("down")));
    let tc = TestContext::new("otlp");
    let config = format!(
        "endpoint: {}\ntls: {{insecure: true}}\n\
         retry_on_failure: {{initial_interval: 100ms, max_interval: 100ms, max_elapsed_time: 450ms, randomization_factor: 0}}",
        backend.endpoint()
    );
    let exporter = OtlpExporterFactory
        .create_traces(&tc.ctx(), &yaml(&config))
        .unwrap();
    let started = Instant::now();
    exporter.consume(traces("a", 2)).await.unwrap();

    let metrics = tc.metrics();
    assert!(wait_until(WAIT, || metrics.send_failed_spans.get() == 2).await);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "gave up after {elapsed:?}"
    );
    // Attempts at about 0, 100, 200, 300, 400ms; the next would start after 450ms.
    let attempts = backend.state.attempts();
    assert!((4..=6).contains(&attempts), "{attempts} attempts");
}

#[tokio::test]
async fn full_queue_refuses_data_and_counts_it() {
    let backend = GrpcBackend::start().await;
    backend.state.hold_requests();
    let tc = TestContext::new("otlp");
    let exporter = exporter(
        &tc,
        &backend.endpoint(),
        "sending_queue: {num_consumers: 1, queue_size: 2}",
    );
    let metrics = tc.metrics();
    assert_eq!(metrics.queue_capacity.get(), 2);

    // The single worker takes the first request and waits on the backend; two more fill the queue.
    exporter.consume(traces("a", 1)).await.unwrap();
    assert!(wait_until(WAIT, || metrics.queue_size.get() == 0).await);
    exporter.consume(traces("b", 1)).await.unwrap();
    exporter.consume(traces("c", 1)).await.unwrap();
    assert_eq!(metrics.queue_size.get(), 2);

    let refused = exporter.consume(traces("d", 6)).await.unwrap_err();
    assert!(
        matches!(&refused, ConsumeError::Retryable { message, .. } if message.contains("queue is full")),
        "{refused:?}"
    );
    assert_eq!(metrics.enqueue_failed_spans.get(), 6);

    backend.state.gate.add_permits(10);
    assert!(wait_until(WAIT, || backend.state.accepted().len() == 3).await);
    let mut delivered: Vec<String> = backend
        .state
        .accepted()
        .iter()
        .flat_map(|r| tags(&r.request))
        .collect();
    delivered.sort();
    assert_eq!(delivered, vec!["a", "b", "c"]);
    assert_eq!(metrics.queue_size.get(), 0);
}

#[tokio::test]
async fn the_items_sizer_counts_spans_and_a_request_larger_than_the_queue_waits_for_an_empty_one() {
    let backend = GrpcBackend::start().await;
    backend.state.hold_requests();
    let tc = TestContext::new("otlp");
    let exporter = exporter(
        &tc,
        &backend.endpoint(),
        "sending_queue: {num_consumers: 1, queue_size: 10, sizer: items}",
    );
    let metrics = tc.metrics();
    assert_eq!(metrics.queue_capacity.get(), 10);

    // The worker holds "a" at the backend; 4 + 6 spans fill the ten items exactly.
    exporter.consume(traces("a", 1)).await.unwrap();
    assert!(wait_until(WAIT, || metrics.queue_size.get() == 0).await);
    exporter.consume(traces("b", 4)).await.unwrap();
    exporter.consume(traces("c", 6)).await.unwrap();
    assert!(wait_until(WAIT, || metrics.queue_size.get() == 10).await);
    let refused = exporter.consume(traces("d", 1)).await.unwrap_err();
    assert!(!refused.is_permanent(), "{refused:?}");
    assert_eq!(metrics.enqueue_failed_spans.get(), 1);

    // Once everything is sent, a request of 25 spans (more than the queue) is taken whole.
    backend.state.gate.add_permits(10);
    assert!(wait_until(WAIT, || backend.state.accepted().len() == 3).await);
    assert!(wait_until(WAIT, || metrics.queue_size.get() == 0).await);
    exporter.consume(traces("e", 25)).await.unwrap();
    assert!(wait_until(WAIT, || backend.state.accepted().len() == 4).await);
    assert_eq!(metrics.sent_spans.get(), 36);
}

#[tokio::test]
async fn blocking_queue_waits_for_room() {
    let backend = GrpcBackend::start().await;
    backend.state.hold_requests();
    let tc = TestContext::new("otlp");
    let exporter = exporter(
        &tc,
        &backend.endpoint(),
        "sending_queue: {num_consumers: 1, queue_size: 1, block_on_overflow: true}",
    );
    exporter.consume(traces("a", 1)).await.unwrap();
    assert!(wait_until(WAIT, || tc.metrics().queue_size.get() == 0).await);
    exporter.consume(traces("b", 1)).await.unwrap();

    let blocked = {
        let exporter = exporter.clone();
        tokio::spawn(async move { exporter.consume(traces("c", 1)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !blocked.is_finished(),
        "a full blocking queue makes consume wait"
    );
    backend.state.gate.add_permits(10);
    blocked.await.unwrap().unwrap();
    assert!(wait_until(WAIT, || backend.state.accepted().len() == 3).await);
    assert_eq!(tc.metrics().enqueue_failed_spans.get(), 0);
}

#[tokio::test]
async fn without_a_queue_errors_reach_the_caller() {
    let backend = GrpcBackend::start().await;
    backend.state.respond_with(|n| match n {
        0 => Ok(Default::default()),
        1 => Err(Status::unavailable("down")),
        _ => Err(Status::invalid_argument("malformed")),
    });
    let tc = TestContext::new("otlp");
    let config = format!(
        "endpoint: {}\ntls: {{insecure: true}}\nsending_queue: {{enabled: false}}\nretry_on_failure: {{enabled: false}}",
        backend.endpoint()
    );
    let exporter = OtlpExporterFactory
        .create_traces(&tc.ctx(), &yaml(&config))
        .unwrap();

    exporter.consume(traces("a", 2)).await.unwrap();
    assert_eq!(
        backend.state.accepted().len(),
        1,
        "sent before consume returned"
    );

    let retryable = exporter.consume(traces("b", 3)).await.unwrap_err();
    assert!(
        matches!(&retryable, ConsumeError::Retryable { message, .. } if message.contains("Unavailable")),
        "{retryable:?}"
    );
    let permanent = exporter.consume(traces("c", 4)).await.unwrap_err();
    assert!(
        matches!(&permanent, ConsumeError::Permanent(message) if message.contains("malformed")),
        "{permanent:?}"
    );
    let metrics = tc.metrics();
    assert_eq!(metrics.sent_spans.get(), 2);
    assert_eq!(metrics.send_failed_spans.get(), 7);
}

#[tokio::test]
async fn without_a_queue_retries_inside_consume() {
    let backend = GrpcBackend::start().await;
    backend.state.respond_with(|n| {
        if n == 0 {
            Err(Status::unavailable("down"))
        } else {
            Ok(Default::default())
        }
    });
    let tc = TestContext::new("otlp");
    let exporter = exporter(&tc, &backend.endpoint(), "sending_queue: {enabled: false}");
    exporter.consume(traces("a", 1)).await.unwrap();
    assert_eq!(backend.state.attempts(), 2);
    assert_eq!(backend.state.accepted().len(), 1);
}

#[tokio::test]
async fn shutdown_drains_the_memory_queue_before_the_deadline() {
    let backend = GrpcBackend::start().await;
    backend.state.hold_requests();
    let tc = TestContext::new("otlp");
    let exporter = exporter(
        &tc,
        &backend.endpoint(),
        "sending_queue: {num_consumers: 2, queue_size: 100}",
    );
    for i in 0..6 {
        exporter.consume(traces(&format!("r{i}"), 1)).await.unwrap();
    }
    let release = {
        let state = backend.state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            state.gate.add_permits(100);
        })
    };
    let started = Instant::now();
    exporter
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await;
    release.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        backend.state.accepted().len(),
        6,
        "everything queued was sent"
    );
    assert_eq!(tc.metrics().sent_spans.get(), 6);

    let refused = exporter.consume(traces("late", 1)).await.unwrap_err();
    assert!(matches!(refused, ConsumeError::Retryable { .. }));
}

#[tokio::test]
async fn shutdown_cuts_retries_short_at_the_deadline() {
    let backend = GrpcBackend::start().await;
    backend
        .state
        .respond_with(|_| Err(Status::unavailable("down")));
    let tc = TestContext::new("otlp");
    let config = format!(
        "endpoint: {}\ntls: {{insecure: true}}\nretry_on_failure: {{initial_interval: 10s, randomization_factor: 0}}",
        backend.endpoint()
    );
    let exporter = OtlpExporterFactory
        .create_traces(&tc.ctx(), &yaml(&config))
        .unwrap();
    exporter.consume(traces("a", 3)).await.unwrap();
    assert!(wait_until(WAIT, || backend.state.attempts() == 1).await);

    let started = Instant::now();
    exporter
        .shutdown(Instant::now() + Duration::from_millis(400))
        .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(350),
        "returned after {took:?}, before the deadline"
    );
    assert!(
        took < Duration::from_millis(1500),
        "returned after {took:?}"
    );
    // An in-memory queue cannot keep the data: it is counted as failed.
    assert_eq!(tc.metrics().send_failed_spans.get(), 3);
}

#[tokio::test]
async fn persistent_queue_survives_a_dropped_exporter() {
    let backend = GrpcBackend::start().await;
    backend
        .state
        .respond_with(|_| Err(Status::unavailable("down")));
    let storage = tempfile::tempdir().unwrap();
    let queue_dir = storage.path().join("exporter_otlp_traces");

    let tc = context_with_storage(storage.path());
    let first = exporter(
        &tc,
        &backend.endpoint(),
        "sending_queue: {storage: file_storage}",
    );
    for i in 0..5 {
        first.consume(traces(&format!("r{i}"), 2)).await.unwrap();
        // Acknowledged means on disk, synced.
        assert_eq!(queue_files(&queue_dir).len(), i + 1);
    }
    // No shutdown: as after a crash.
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(queue_files(&queue_dir).len(), 5);
    let failed_attempts = backend.state.attempts();
    assert!(failed_attempts > 0);

    backend.state.respond_with(|_| Ok(Default::default()));
    let tc = context_with_storage(storage.path());
    let second = exporter(
        &tc,
        &backend.endpoint(),
        "sending_queue: {storage: file_storage}",
    );
    assert!(wait_until(WAIT, || backend.state.accepted().len() == 5).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut delivered: Vec<String> = backend
        .state
        .accepted()
        .iter()
        .flat_map(|r| tags(&r.request))
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        vec!["r0", "r1", "r2", "r3", "r4"],
        "each exactly once"
    );
    assert!(wait_until(WAIT, || queue_files(&queue_dir).is_empty()).await);
    assert_eq!(tc.metrics().sent_spans.get(), 10);
    second
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
}

#[tokio::test]
async fn persistent_queue_sends_old_requests_first_and_ignores_torn_files() {
    let storage = tempfile::tempdir().unwrap();
    let queue_dir = storage.path().join("exporter_otlp_traces");
    {
        let (disk, pending) = DiskQueue::open(&queue_dir).unwrap();
        assert!(pending.is_empty());
        disk.write(&traces("old-1", 1)).await.unwrap();
        disk.write(&traces("old-2", 1)).await.unwrap();
    }
    // A write cut short by a crash: a header promising more bytes than there are.
    let torn = std::fs::read(queue_dir.join(format!("{:020}.req", 1))).unwrap();
    std::fs::write(
        queue_dir.join(format!("{:020}.req", 2)),
        &torn[..torn.len() - 7],
    )
    .unwrap();
    std::fs::write(queue_dir.join(format!("{:020}.req", 3)), b"TLQ1 garbage").unwrap();

    let backend = GrpcBackend::start().await;
    let tc = context_with_storage(storage.path());
    let exporter = exporter(
        &tc,
        &backend.endpoint(),
        "sending_queue: {storage: file_storage, num_consumers: 1}",
    );
    exporter.consume(traces("new", 1)).await.unwrap();

    assert!(wait_until(WAIT, || backend.state.accepted().len() == 3).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let delivered: Vec<String> = backend
        .state
        .accepted()
        .iter()
        .flat_map(|r| tags(&r.request))
        .collect();
    assert_eq!(delivered, vec!["old-1", "old-2", "new"]);
    assert!(
        wait_until(WAIT, || queue_files(&queue_dir).is_empty()).await,
        "torn files are cleared"
    );
    exporter
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
}

#[tokio::test]
async fn persistent_queue_keeps_unsent_requests_at_shutdown() {
    let backend = GrpcBackend::start().await;
    backend
        .state
        .respond_with(|_| Err(Status::unavailable("down")));
    let storage = tempfile::tempdir().unwrap();
    let queue_dir = storage.path().join("exporter_otlp_traces");
    let tc = context_with_storage(storage.path());
    let config = format!(
        "endpoint: {}\ntls: {{insecure: true}}\n\
         sending_queue: {{storage: file_storage, num_consumers: 2}}\n\
         retry_on_failure: {{initial_interval: 10s}}",
        backend.endpoint()
    );
    let exporter = OtlpExporterFactory
        .create_traces(&tc.ctx(), &yaml(&config))
        .unwrap();
    for i in 0..4 {
        exporter.consume(traces(&format!("r{i}"), 1)).await.unwrap();
    }
    // Both workers are now waiting 10s to retry.
    assert!(wait_until(WAIT, || backend.state.attempts() == 2).await);

    let started = Instant::now();
    exporter
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "waiting to retry ends at shutdown, took {took:?}"
    );
    assert_eq!(
        queue_files(&queue_dir).len(),
        4,
        "unsent requests stay on disk"
    );
    assert_eq!(tc.metrics().send_failed_spans.get(), 0, "nothing was lost");
}

#[tokio::test]
async fn missing_storage_extension_is_an_error() {
    let tc = TestContext::new("otlp");
    let err = OtlpExporterFactory
        .create_traces(
            &tc.ctx(),
            &yaml("endpoint: localhost:4317\nsending_queue: {storage: file_storage/missing}"),
        )
        .err()
        .unwrap();
    let text = format!("{err:#}");
    assert!(text.contains("file_storage/missing"), "{text}");
    assert!(text.contains("service::extensions"), "{text}");
}

const CHILD_DIR_ENV: &str = "THREADLINE_TEST_QUEUE_CHILD_DIR";

/// Runs in a child process started by `persistent_queue_loses_nothing_acknowledged_on_sigkill`:
/// writes requests to a persistent queue (the backend is unreachable) and prints each one that
/// `consume` acknowledged, until the parent kills it.
#[test]
#[ignore = "run as a child process by persistent_queue_loses_nothing_acknowledged_on_sigkill"]
fn persistent_queue_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let tc = context_with_storage(Path::new(&dir));
        // Port 1 on loopback refuses connections: every send fails and is retried.
        let exporter = exporter(
            &tc,
            "127.0.0.1:1",
            "sending_queue: {storage: file_storage, queue_size: 1000000}",
        );
        let mut tasks = tokio::task::JoinSet::new();
        // Several writers at once, so that kills land in the middle of group commits too.
        for writer in 0..4 {
            let exporter = exporter.clone();
            tasks.spawn(async move {
                for i in 0.. {
                    let tag = format!("w{writer}-{i}");
                    exporter.consume(traces(&tag, 2)).await.unwrap();
                    println!("acked {tag}");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

#[tokio::test]
async fn persistent_queue_loses_nothing_acknowledged_on_sigkill() {
    let storage = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "exporters::helper::tests::persistent_queue_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, storage.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let acked = tokio::task::spawn_blocking(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(tag) = line.strip_prefix("acked ") {
                acked.push(tag.to_string());
                if acked.len() == 200 {
                    break;
                }
            }
        }
        acked
    });
    let acked = tokio::time::timeout(Duration::from_secs(60), acked)
        .await
        .expect("the child acknowledged 200 requests within 60s")
        .unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(acked.len(), 200);

    let (disk, pending) = DiskQueue::open(&storage.path().join("exporter_otlp_traces")).unwrap();
    let mut on_disk = std::collections::HashSet::new();
    let mut damaged = 0;
    for seq in pending {
        match disk.read(seq).await {
            Ok(data) => on_disk.extend(tags(&data.to_request().unwrap())),
            Err(ReadError::Corrupt { .. }) => damaged += 1,
            Err(err) => panic!("{err}"),
        }
    }
    let lost: Vec<&String> = acked.iter().filter(|tag| !on_disk.contains(*tag)).collect();
    assert!(lost.is_empty(), "acknowledged but not on disk: {lost:?}");
    // At most one write per writer task can have been cut short, and none was acknowledged.
    assert!(damaged <= 4, "{damaged} damaged files");
}

/// A sender whose `prepare` waits for the test to allow it (one permit per request) and turns a
/// request into the text "prepared <tags>"; `send` fails its first `fail_first` attempts. Clones
/// share their state, so the test keeps one to watch and steer the exporter's.
#[derive(Clone)]
struct GatedSender {
    permits: Arc<(std::sync::Mutex<u32>, std::sync::Condvar)>,
    prepared: Arc<std::sync::atomic::AtomicU64>,
    attempts: Arc<std::sync::atomic::AtomicU64>,
    fail_first: u64,
    sent: Arc<std::sync::Mutex<Vec<String>>>,
}

impl GatedSender {
    fn new(fail_first: u64) -> Self {
        GatedSender {
            permits: Arc::default(),
            prepared: Arc::default(),
            attempts: Arc::default(),
            fail_first,
            sent: Arc::default(),
        }
    }

    fn allow(&self, preparations: u32) {
        let (count, wake) = &*self.permits;
        *count.lock().unwrap() += preparations;
        wake.notify_all();
    }

    fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }
}

impl Sender for GatedSender {
    type Payload = String;

    fn prepare(&self, data: TraceData) -> Result<String, SendError> {
        let (count, wake) = &*self.permits;
        let guard = count.lock().unwrap();
        // Bounded, so that a broken test fails instead of hanging.
        let (mut guard, _) = wake
            .wait_timeout_while(guard, WAIT, |permits| *permits == 0)
            .unwrap();
        if *guard == 0 {
            return Err(SendError::Permanent("the test never allowed it".into()));
        }
        *guard -= 1;
        self.prepared.fetch_add(1, Ordering::SeqCst);
        let request = data.to_request().unwrap();
        if tags(&request).iter().any(|tag| tag == "unpreparable") {
            return Err(SendError::Permanent("cannot encode it".into()));
        }
        Ok(format!("prepared {}", tags(&request).join(",")))
    }

    async fn send(&self, payload: &String) -> Result<Delivered, SendError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if attempt <= self.fail_first {
            return Err(SendError::retryable("backend unavailable"));
        }
        self.sent.lock().unwrap().push(payload.clone());
        Ok(Delivered::default())
    }
}

fn gated_exporter(tc: &TestContext, sender: &GatedSender) -> QueuedRetrySender<GatedSender> {
    let settings = HelperSettings {
        exporter: "otlp".into(),
        metrics: tc.metrics(),
        retry: RetryPolicy {
            initial_interval: Duration::from_millis(20),
            max_interval: Duration::from_millis(50),
            randomization_factor: 0.0,
            ..RetryPolicy::default()
        },
        queue: QueuePolicy::default(),
        attempt_timeout: Some(WAIT),
    };
    QueuedRetrySender::start(sender.clone(), settings).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_queue_holds_the_prepared_request_and_retries_reuse_it() {
    let tc = TestContext::new("otlp");
    let sender = GatedSender::new(2);
    sender.allow(10);
    let exporter = gated_exporter(&tc, &sender);

    exporter.consume(traces("a", 3)).await.unwrap();
    assert!(wait_until(WAIT, || !sender.sent().is_empty()).await);
    assert_eq!(sender.sent(), vec!["prepared a"]);
    assert_eq!(sender.prepared.load(Ordering::SeqCst), 1, "prepared once");
    assert_eq!(
        sender.attempts.load(Ordering::SeqCst),
        3,
        "two failures, one success"
    );
    let metrics = tc.metrics();
    assert_eq!(metrics.sent_spans.get(), 3);
    assert_eq!(metrics.queue_size.get(), 0);
    exporter.shutdown(Instant::now() + WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_waits_while_every_preparer_is_busy() {
    let tc = TestContext::new("otlp");
    let sender = GatedSender::new(0);
    let exporter = Arc::new(gated_exporter(&tc, &sender));
    let preparers = preparer_count() as usize;

    // One request per preparer is taken at once, and counts as queued while it is prepared.
    for i in 0..preparers {
        tokio::time::timeout(
            Duration::from_secs(2),
            exporter.consume(traces(&format!("r{i}"), 1)),
        )
        .await
        .expect("a free preparer takes the request at once")
        .unwrap();
    }
    assert_eq!(tc.metrics().queue_size.get(), preparers as i64);
    let blocked = {
        let exporter = exporter.clone();
        tokio::spawn(async move { exporter.consume(traces("last", 1)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !blocked.is_finished(),
        "with every preparer busy, consume waits (back-pressure) instead of buffering"
    );

    sender.allow(preparers as u32 + 1);
    blocked.await.unwrap().unwrap();
    assert!(wait_until(WAIT, || sender.sent().len() == preparers + 1).await);
    let mut sent = sender.sent();
    sent.sort();
    let mut expected: Vec<String> = (0..preparers).map(|i| format!("prepared r{i}")).collect();
    expected.push("prepared last".into());
    expected.sort();
    assert_eq!(sent, expected);
    exporter.shutdown(Instant::now() + WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_be_prepared_is_dropped_and_counted() {
    let tc = TestContext::new("otlp");
    let sender = GatedSender::new(0);
    sender.allow(10);
    let exporter = gated_exporter(&tc, &sender);
    let metrics = tc.metrics();

    exporter.consume(traces("unpreparable", 4)).await.unwrap();
    exporter.consume(traces("fine", 2)).await.unwrap();
    assert!(wait_until(WAIT, || metrics.send_failed_spans.get() == 4).await);
    assert!(wait_until(WAIT, || sender.sent() == vec!["prepared fine"]).await);
    assert!(wait_until(WAIT, || metrics.queue_size.get() == 0).await);
    assert_eq!(metrics.sent_spans.get(), 2);
    exporter.shutdown(Instant::now() + WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_the_requests_still_being_prepared() {
    let tc = TestContext::new("otlp");
    let sender = GatedSender::new(0);
    let exporter = Arc::new(gated_exporter(&tc, &sender));

    exporter.consume(traces("in-preparation", 5)).await.unwrap();
    let shutdown = {
        let exporter = exporter.clone();
        tokio::spawn(async move { exporter.shutdown(Instant::now() + WAIT).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the preparation"
    );
    sender.allow(1);
    shutdown.await.unwrap();
    assert_eq!(sender.sent(), vec!["prepared in-preparation"]);
    assert_eq!(tc.metrics().sent_spans.get(), 5);
}
