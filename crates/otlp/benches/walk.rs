//! Walking encoded requests vs decoding them with prost, on a realistic request: 4 services,
//! 25 traces each of 10 spans with 8 attributes (1000 spans).
//!
//! Throughput is reported in spans (criterion's "elements"), so `thrpt` reads as spans/s. Times
//! are this thread's CPU time, not wall-clock time: the machines this runs on are shared, and
//! wall-clock time would count other processes' work.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use prost::Message;
use threadline_otlp::json::{request_from_json, request_to_json};
use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::{count_spans, TraceData, TraceDataBuilder};

/// CPU time consumed by the calling thread so far.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` only writes the timespec it is given, which lives on our stack.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(result, 0, "CLOCK_THREAD_CPUTIME_ID is available on Linux");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Benchmarks `routine`, timed in CPU time.
fn bench<O>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut routine: impl FnMut() -> O) {
    group.bench_function(name, |b| {
        b.iter_custom(|iterations| {
            let start = thread_cpu_time();
            for _ in 0..iterations {
                black_box(routine());
            }
            thread_cpu_time() - start
        })
    });
}

fn benchmarks(c: &mut Criterion) {
    let request = common::realistic_request(4, 25);
    let spans = common::span_count(&request) as u64;
    let encoded = Bytes::from(request.encode_to_vec());
    let data = TraceData::from_request_bytes(encoded.clone()).unwrap().0;

    let mut group = c.benchmark_group("walk");
    group.throughput(Throughput::Elements(spans));

    bench(&mut group, "from_request_bytes", || {
        TraceData::from_request_bytes(black_box(encoded.clone())).unwrap()
    });
    bench(&mut group, "prost_decode", || {
        ExportTraceServiceRequest::decode(black_box(encoded.clone())).unwrap()
    });
    bench(&mut group, "prost_decode_encode", || {
        ExportTraceServiceRequest::decode(black_box(encoded.clone()))
            .unwrap()
            .encode_to_vec()
    });
    bench(&mut group, "count_spans", || {
        count_spans(black_box(&encoded)).unwrap()
    });
    // Batches of 100 spans: every cut falls inside a resource, so each one rebuilds.
    bench(&mut group, "split_off_front_100", || {
        let mut rest = black_box(&data).clone();
        while !rest.is_empty() {
            black_box(rest.split_off_front(100));
        }
    });
    bench(&mut group, "into_batches_100", || {
        black_box(&data).clone().into_batches(100)
    });
    // The same batching done the decoded way: decode, regroup structs, re-encode each batch.
    bench(&mut group, "prost_split_100", || {
        let request = ExportTraceServiceRequest::decode(black_box(encoded.clone())).unwrap();
        let mut batch = ExportTraceServiceRequest::default();
        let mut in_batch = 0;
        for mut resource in request.resource_spans {
            for mut scope in std::mem::take(&mut resource.scope_spans) {
                let mut spans = std::mem::take(&mut scope.spans);
                while !spans.is_empty() {
                    let take = (100 - in_batch).min(spans.len());
                    let rest = spans.split_off(take);
                    let mut part_scope = scope.clone();
                    part_scope.spans = spans;
                    let mut part_resource = resource.clone();
                    part_resource.scope_spans = vec![part_scope];
                    batch.resource_spans.push(part_resource);
                    in_batch += take;
                    spans = rest;
                    if in_batch == 100 {
                        black_box(std::mem::take(&mut batch).encode_to_vec());
                        in_batch = 0;
                    }
                }
            }
        }
    });
    bench(&mut group, "for_each_span_name_and_attribute", || {
        let mut errors = 0usize;
        data.for_each_span(|_, _, span| {
            let status = span.attribute("http.response.status_code");
            if status.and_then(|v| v.as_i64()) >= Some(500) || span.name().is_empty() {
                errors += 1;
            }
        });
        errors
    });
    bench(&mut group, "retain_half", || {
        data.retain_spans(|span| span.span_id()[0] & 1 == 0)
    });
    bench(&mut group, "split_by_trace", || data.split_by_trace());
    // Ten copies of the request per iteration.
    group.throughput(Throughput::Elements(spans * 10));
    bench(&mut group, "builder_concat_10", || {
        let mut builder = TraceDataBuilder::new();
        for _ in 0..10 {
            builder.push(black_box(&data));
        }
        builder.finish()
    });
    group.finish();

    let json = request_to_json(&request);
    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Elements(spans));
    bench(&mut group, "request_from_json", || {
        request_from_json(black_box(&json)).unwrap()
    });
    bench(&mut group, "request_to_json", || {
        request_to_json(black_box(&request))
    });
    group.finish();
}

criterion_group!(benches, benchmarks);
criterion_main!(benches);
