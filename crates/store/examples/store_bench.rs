//! Measures the store with the load generator's traces: ingest rate, bytes per span on disk,
//! trace-by-id latency and search latency.
//!
//! ```text
//! cargo run --release -p threadline-store --example store_bench -- --spans 1000000
//! ```
//!
//! Everything happens in a temporary directory (or `--dir`), with the default configuration
//! (`fsync: always`) unless told otherwise.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::seq::IndexedRandom;
use threadline_loadgen::{PoolOptions, RequestPool, SPANS_PER_TRACE};
use threadline_otlp::TraceData;
use threadline_store::{SearchRequest, Store, StoreConfig, SINGLE_TENANT};
use threadline_traceql::model::{StatusCode, Trace};

#[derive(Parser)]
struct Args {
    /// Spans to ingest.
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    /// Spans per append (one export request).
    #[arg(long, default_value_t = 500)]
    spans_per_request: usize,
    /// Concurrent appenders (their appends share fsyncs).
    #[arg(long, default_value_t = 4)]
    writers: u64,
    /// `always` or `never`.
    #[arg(long, default_value = "always")]
    fsync: String,
    /// Trace-by-id lookups to time.
    #[arg(long, default_value_t = 2000)]
    lookups: usize,
    /// Data directory (a temporary one when absent; it is kept when given).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn config(dir: &std::path::Path, fsync: &str) -> anyhow::Result<StoreConfig> {
    let yaml = format!(
        "storage:\n  trace:\n    backend: local\n    wal: {{path: {}, fsync: {fsync}}}\n    local: {{path: {}}}\n\
         ingester: {{max_block_duration: 1h}}\n\
         compactor: {{compaction: {{compaction_cycle: 1h}}}}\n",
        dir.join("wal").display(),
        dir.join("blocks").display()
    );
    let config: StoreConfig = serde_yaml_ng::from_str(&yaml)?;
    let errors = config.validate();
    anyhow::ensure!(errors.is_empty(), "invalid bench config: {errors:?}");
    Ok(config)
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn time_search(
    store: &Store,
    label: &str,
    request: SearchRequest,
    matches: &(dyn Fn(&Trace) -> bool + Sync),
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (found, stats) = store.search(SINGLE_TENANT, &request, matches).await?;
    println!(
        "search {label:<45} {:>10}  found {:>3}  inspected {} traces",
        ms(started.elapsed()),
        found.len(),
        stats.inspected_traces
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // RUST_LOG=info shows every block written.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let traces_per_request = (args.spans_per_request / SPANS_PER_TRACE).max(1);
    let total_traces = args.spans.div_ceil(SPANS_PER_TRACE as u64);
    let pool = RequestPool::generate(&PoolOptions {
        traces_per_request,
        total_traces: Some(total_traces),
        templates: 32,
        error_ratio: 0.05,
        slow_ratio: 0.05,
        seed: Some(7),
    })?;
    let requests = pool.request_count(Some(total_traces)).unwrap_or(0);

    let store = Store::open(config(&dir, &args.fsync)?).await?;
    let now = now_nanos();
    let started = Instant::now();
    let mut writers = Vec::new();
    let pool = Arc::new(pool);
    for writer in 0..args.writers {
        let (store, pool) = (store.clone(), pool.clone());
        writers.push(tokio::spawn(async move {
            let mut sampled_ids = Vec::new();
            let mut spans = 0u64;
            let mut sequence = writer;
            while sequence < requests {
                let rendered = pool.render(sequence, now);
                let (data, _) = TraceData::from_request_bytes(rendered.body)?;
                if sequence % 7 == 0 {
                    sampled_ids.extend(data.split_by_trace().into_iter().map(|(id, _)| id));
                }
                spans += data.span_count() as u64;
                store.append(SINGLE_TENANT, &data).await?;
                sequence += args.writers;
            }
            anyhow::Ok((spans, sampled_ids))
        }));
    }
    let mut ids = Vec::new();
    let mut spans = 0;
    for writer in writers {
        let (written, sampled) = writer.await??;
        spans += written;
        ids.extend(sampled);
    }
    let appended = started.elapsed();
    store.cut().await?;
    let ingest = started.elapsed();
    println!(
        "ingest   {spans} spans in {:.1} s: {:.0} spans/s appended (WAL fsync {}), {:.0} spans/s including the final cut",
        ingest.as_secs_f64(),
        spans as f64 / appended.as_secs_f64(),
        args.fsync,
        spans as f64 / ingest.as_secs_f64()
    );
    // Compaction merges one group of blocks per tenant and cycle: run cycles until it is done.
    let compaction_started = Instant::now();
    let blocks_before = store.block_metas().len();
    let mut blocks = blocks_before;
    loop {
        store.compact_and_expire().await?;
        let left = store.block_metas().len();
        if left == blocks {
            break;
        }
        blocks = left;
    }
    println!(
        "compact  {:.1} s: {blocks_before} blocks -> {blocks}",
        compaction_started.elapsed().as_secs_f64(),
    );
    store.flush_and_close().await?;
    drop(store);

    let block_bytes = dir_bytes(&dir.join("blocks"));
    println!(
        "disk     {block_bytes} bytes of blocks: {:.1} bytes/span (WAL left: {} bytes)",
        block_bytes as f64 / spans as f64,
        dir_bytes(&dir.join("wal"))
    );

    // A fresh process: indexes loaded from storage, no page cached.
    let opened = Instant::now();
    let store = Store::open(config(&dir, &args.fsync)?).await?;
    println!("open     {}", ms(opened.elapsed()));

    let mut rng = rand::rng();
    let mut latencies = Vec::with_capacity(args.lookups);
    let mut fetched = Vec::with_capacity(args.lookups);
    for _ in 0..args.lookups {
        let Some(id) = ids.choose(&mut rng) else {
            break;
        };
        let started = Instant::now();
        let trace = store.trace_by_id(SINGLE_TENANT, id).await?;
        latencies.push(started.elapsed());
        match trace {
            Some(trace) if trace.span_count() == SPANS_PER_TRACE => fetched.push((*id, trace)),
            _ => anyhow::bail!("trace {} is missing or incomplete", hex::encode(id)),
        }
    }
    latencies.sort();
    println!(
        "by id    {} lookups: p50 {}  p99 {}  max {}",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default())
    );

    // What a search pays per trace it cannot rule out from the index.
    let started = Instant::now();
    let spans: usize = fetched
        .iter()
        .map(|(id, data)| threadline_store::model::to_model(*id, data).spans.len())
        .sum();
    println!(
        "decode   {:.1} µs per trace into the TraceQL model ({spans} spans)",
        started.elapsed().as_secs_f64() * 1e6 / fetched.len().max(1) as f64
    );

    let any_error = |t: &Trace| t.spans.iter().any(|s| s.status == StatusCode::Error);
    let slow_frontend = |t: &Trace| {
        t.spans.iter().any(|s| {
            s.end_unix_nano.saturating_sub(s.start_unix_nano) > 2_000_000_000
                && s.resource_attributes.iter().any(|(k, v)| {
                    k == "service.name"
                        && *v == threadline_traceql::model::Value::Str("frontend".into())
                })
        })
    };
    let never = |_: &Trace| false;
    let limit = |limit: usize| SearchRequest {
        limit,
        ..Default::default()
    };
    time_search(
        &store,
        "status=error (limit 20)",
        SearchRequest {
            error_hint: true,
            ..limit(20)
        },
        &any_error,
    )
    .await?;
    time_search(
        &store,
        "service.name=frontend && duration>2s (limit 20)",
        SearchRequest {
            service_hint: Some("frontend".into()),
            min_duration_nanos: Some(2_000_000_000),
            ..limit(20)
        },
        &slow_frontend,
    )
    .await?;
    time_search(
        &store,
        "status=error (limit 1000)",
        SearchRequest {
            error_hint: true,
            ..limit(1000)
        },
        &any_error,
    )
    .await?;
    time_search(
        &store,
        "service.name=nobody (pruned by the index)",
        SearchRequest {
            service_hint: Some("nobody".into()),
            ..limit(20)
        },
        &never,
    )
    .await?;
    time_search(
        &store,
        "matcher never true, no hint (full scan)",
        limit(20),
        &never,
    )
    .await?;
    store.flush_and_close().await?;
    Ok(())
}
