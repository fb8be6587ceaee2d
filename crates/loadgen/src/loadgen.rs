//! The load generator: sends realistic traces over OTLP at a given rate and reports what the
//! receiver acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::time::Instant;

use crate::exporter::{ExportOutcome, Exporter};
use crate::pool::{MalformedRequest, PoolOptions, RenderedRequest, RequestPool};
use crate::traces::SPANS_PER_TRACE;

/// Run length when neither `--duration` nor `--traces` is given.
const DEFAULT_DURATION_SECS: f64 = 10.0;
/// First and largest pause between retries of one request.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How far the pacer may fall behind schedule and then catch up in a burst.
const MAX_PACING_BURST: Duration = Duration::from_millis(100);

/// Options of `threadline loadgen`.
#[derive(Args, Clone, Debug)]
pub struct LoadgenArgs {
    /// Receiver address as host:port (or a full http:// URL). Defaults to 127.0.0.1:4317 for
    /// gRPC and 127.0.0.1:4318 for HTTP.
    #[arg(long)]
    pub endpoint: Option<String>,

    /// OTLP transport: gRPC, or HTTP posting application/x-protobuf to /v1/traces.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,

    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,

    /// gRPC connections to spread the requests over.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,

    /// Target spans per second; 0 sends as fast as the receiver accepts.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,

    /// Stop after this many seconds (default 10 when --traces is not given either).
    #[arg(long, conflicts_with = "traces")]
    pub duration: Option<f64>,

    /// Stop after sending this many traces.
    #[arg(long)]
    pub traces: Option<u64>,

    /// Spans per export request; a multiple of 10, since every trace has 10 spans.
    #[arg(long, default_value_t = 500)]
    pub spans_per_request: usize,

    /// Compression of the export requests.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,

    /// Share of traces with one span in status ERROR.
    #[arg(long, default_value_t = 0.05)]
    pub error_ratio: f64,

    /// Share of traces whose root span lasts longer than 2 seconds.
    #[arg(long, default_value_t = 0.05)]
    pub slow_ratio: f64,

    /// Retries of a request that got a retryable error (UNAVAILABLE, RESOURCE_EXHAUSTED,
    /// HTTP 429/502/503/504, connection failures) before its spans count as failed.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,

    /// Timeout of one export request, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub request_timeout: f64,

    /// Distinct pre-encoded requests to cycle through (ids and timestamps are fresh anyway).
    #[arg(long, default_value_t = 32)]
    pub pool_size: usize,

    /// Seed for the generated content, for reproducible runs.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl Default for LoadgenArgs {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: Protocol::Grpc,
            concurrency: 4,
            connections: 1,
            rate: 0.0,
            duration: None,
            traces: None,
            spans_per_request: 500,
            compression: Compression::None,
            error_ratio: 0.05,
            slow_ratio: 0.05,
            max_retries: 5,
            request_timeout: 10.0,
            pool_size: 32,
            seed: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    None,
    Gzip,
}

/// Invalid options or endpoint.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("invalid --{flag}: {message}")]
    InvalidArgument { flag: &'static str, message: String },
    #[error("invalid endpoint {endpoint:?}: {message}")]
    InvalidEndpoint { endpoint: String, message: String },
    #[error(transparent)]
    Generation(#[from] MalformedRequest),
}

/// What a load generator run achieved. Serialized as the one-line JSON summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LoadgenReport {
    /// Spans the receiver acknowledged (excluding partial-success rejections).
    pub sent_spans: u64,
    /// Traces in fully acknowledged requests, and how many of them have an error span or a
    /// slow root (a trace may be both): what a tail-sampling gateway must keep.
    pub sent_traces: u64,
    pub sent_error_traces: u64,
    pub sent_slow_traces: u64,
    /// Spans given up on: permanent errors, retries exhausted, partial-success rejections.
    pub failed_spans: u64,
    /// Wall-clock seconds from the first request to the last answer.
    pub seconds: f64,
    /// `sent_spans / seconds`.
    pub spans_per_sec: f64,
    /// Export requests acknowledged.
    pub requests: u64,
    /// Export requests given up on.
    pub failed_requests: u64,
    /// Answers with a retryable error (each retry of a request counts again).
    pub retryable_errors: u64,
    /// Requests sent again after a retryable error.
    pub retries: u64,
    /// Spans the receiver rejected in partial-success answers (included in `failed_spans`).
    pub rejected_spans: u64,
    /// CPU seconds the load generator itself used while sending.
    pub cpu_seconds: f64,
    /// The last error seen, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl LoadgenReport {
    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    }

    fn add(&mut self, other: &LoadgenReport) {
        self.sent_spans += other.sent_spans;
        self.sent_traces += other.sent_traces;
        self.sent_error_traces += other.sent_error_traces;
        self.sent_slow_traces += other.sent_slow_traces;
        self.failed_spans += other.failed_spans;
        self.requests += other.requests;
        self.failed_requests += other.failed_requests;
        self.retryable_errors += other.retryable_errors;
        self.retries += other.retries;
        self.rejected_spans += other.rejected_spans;
        if other.last_error.is_some() {
            self.last_error.clone_from(&other.last_error);
        }
    }
}

/// Runs the load generator and prints the one-line JSON summary to stdout.
pub async fn run_loadgen(args: LoadgenArgs) -> anyhow::Result<LoadgenReport> {
    let report = generate_load(&args).await?;
    println!("{}", report.to_json_line());
    Ok(report)
}

/// Runs the load generator and returns its report without printing.
pub async fn generate_load(args: &LoadgenArgs) -> Result<LoadgenReport, LoadgenError> {
    validate(args)?;
    let traces_per_request = args.spans_per_request / SPANS_PER_TRACE;
    let pool = RequestPool::generate(&PoolOptions {
        traces_per_request,
        total_traces: args.traces,
        templates: args.pool_size,
        error_ratio: args.error_ratio,
        slow_ratio: args.slow_ratio,
        seed: args.seed,
    })?;
    let timeout = Duration::from_secs_f64(args.request_timeout);
    let exporter = match args.protocol {
        Protocol::Grpc => Exporter::grpc(
            args.endpoint.as_deref().unwrap_or("127.0.0.1:4317"),
            args.connections,
            args.compression,
            timeout,
        )?,
        Protocol::Http => Exporter::http(
            args.endpoint.as_deref().unwrap_or("127.0.0.1:4318"),
            args.compression,
            timeout,
        )?,
    };

    let start = Instant::now();
    let deadline = match (args.traces, args.duration) {
        (Some(_), _) => None,
        (None, duration) => {
            Some(start + Duration::from_secs_f64(duration.unwrap_or(DEFAULT_DURATION_SECS)))
        }
    };
    let pacer = (args.rate > 0.0).then(|| Pacer::new(args.rate, start));
    let run = Arc::new(Run {
        request_count: pool.request_count(args.traces),
        pool,
        exporter,
        pacer,
        deadline,
        max_retries: args.max_retries,
        next_sequence: AtomicU64::new(0),
    });

    let cpu_before = process_cpu_seconds();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(Arc::clone(&run).worker()))
        .collect();
    let mut report = LoadgenReport::default();
    for worker in workers {
        match worker.await {
            Ok(tally) => report.add(&tally),
            Err(error) => report.last_error = Some(format!("worker stopped: {error}")),
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.spans_per_sec = if report.seconds > 0.0 {
        report.sent_spans as f64 / report.seconds
    } else {
        0.0
    };
    report.cpu_seconds = process_cpu_seconds() - cpu_before;
    Ok(report)
}

fn validate(args: &LoadgenArgs) -> Result<(), LoadgenError> {
    let invalid = |flag, message: &str| {
        Err(LoadgenError::InvalidArgument {
            flag,
            message: message.to_owned(),
        })
    };
    if args.spans_per_request == 0 || !args.spans_per_request.is_multiple_of(SPANS_PER_TRACE) {
        return invalid(
            "spans-per-request",
            "must be a positive multiple of 10 (every trace has 10 spans)",
        );
    }
    if args.concurrency == 0 {
        return invalid("concurrency", "must be at least 1");
    }
    if args.connections == 0 {
        return invalid("connections", "must be at least 1");
    }
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        return invalid("rate", "must be a number of spans per second, 0 or more");
    }
    if args.duration.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
        return invalid("duration", "must be a positive number of seconds");
    }
    if args.traces == Some(0) {
        return invalid("traces", "must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.error_ratio) {
        return invalid("error-ratio", "must be between 0 and 1");
    }
    if !(0.0..=1.0).contains(&args.slow_ratio) {
        return invalid("slow-ratio", "must be between 0 and 1");
    }
    if !(args.request_timeout.is_finite() && args.request_timeout > 0.0) {
        return invalid("request-timeout", "must be a positive number of seconds");
    }
    if args.pool_size == 0 {
        return invalid("pool-size", "must be at least 1");
    }
    Ok(())
}

/// State shared by the workers of one run.
struct Run {
    pool: RequestPool,
    exporter: Exporter,
    pacer: Option<Pacer>,
    /// End of a timed run.
    deadline: Option<Instant>,
    /// Requests in a run bounded by `--traces`.
    request_count: Option<u64>,
    max_retries: u32,
    next_sequence: AtomicU64,
}

impl Run {
    /// One of `--concurrency` workers: claims request numbers until the run is over, sending
    /// each (with retries) before claiming the next.
    async fn worker(self: Arc<Self>) -> LoadgenReport {
        let mut tally = LoadgenReport::default();
        loop {
            if self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                break;
            }
            let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed);
            if self.request_count.is_some_and(|count| sequence >= count) {
                break;
            }
            let spans = self.pool.spans_in_request(sequence);
            if let Some(pacer) = &self.pacer {
                let slot = pacer.reserve(spans);
                if self.deadline.is_some_and(|deadline| slot >= deadline) {
                    break;
                }
                tokio::time::sleep_until(slot).await;
            }
            let request = self.pool.render(sequence, unix_nanos_now());
            self.send(&request, &mut tally).await;
        }
        tally
    }

    async fn send(&self, request: &RenderedRequest, tally: &mut LoadgenReport) {
        let spans = request.spans as u64;
        let mut backoff = INITIAL_BACKOFF;
        let mut attempt = 0;
        loop {
            match self.exporter.export(request.body.clone()).await {
                ExportOutcome::Accepted { rejected_spans } => {
                    let rejected = rejected_spans.min(spans);
                    if rejected == 0 {
                        tally.sent_traces += request.traces as u64;
                        tally.sent_error_traces += request.error_traces as u64;
                        tally.sent_slow_traces += request.slow_traces as u64;
                    }
                    tally.requests += 1;
                    tally.sent_spans += spans - rejected;
                    tally.failed_spans += rejected;
                    tally.rejected_spans += rejected;
                    return;
                }
                ExportOutcome::Retryable(error) => {
                    tally.retryable_errors += 1;
                    if attempt >= self.max_retries {
                        tally.failed_requests += 1;
                        tally.failed_spans += spans;
                        tally.last_error = Some(error);
                        return;
                    }
                    tally.last_error = Some(error);
                    attempt += 1;
                    tally.retries += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                ExportOutcome::Failed(error) => {
                    tally.failed_requests += 1;
                    tally.failed_spans += spans;
                    tally.last_error = Some(error);
                    return;
                }
            }
        }
    }
}

/// Token bucket in its "virtual scheduling" form: each request reserves the next send slot,
/// spaced by its span count over the rate. A receiver that falls behind may catch up with a
/// burst of at most [`MAX_PACING_BURST`] worth of requests, no more.
struct Pacer {
    seconds_per_span: f64,
    next_slot: Mutex<Instant>,
}

impl Pacer {
    fn new(spans_per_second: f64, start: Instant) -> Self {
        Self {
            seconds_per_span: 1.0 / spans_per_second,
            next_slot: Mutex::new(start),
        }
    }

    /// Reserves the send time of a request with `spans` spans.
    fn reserve(&self, spans: usize) -> Instant {
        let now = Instant::now();
        let earliest = now.checked_sub(MAX_PACING_BURST).unwrap_or(now);
        let mut next_slot = self
            .next_slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = (*next_slot).max(earliest);
        *next_slot = slot + Duration::from_secs_f64(self.seconds_per_span * spans as f64);
        slot
    }
}

fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// User plus system CPU time of this process so far.
pub(crate) fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a properly sized rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spaces_requests_by_their_span_count() {
        let start = Instant::now() + Duration::from_secs(1);
        let pacer = Pacer::new(50_000.0, start);
        let first = pacer.reserve(500);
        let second = pacer.reserve(500);
        let third = pacer.reserve(250);
        let fourth = pacer.reserve(500);
        assert_eq!(first, start);
        assert_eq!(second - first, Duration::from_millis(10));
        assert_eq!(third - second, Duration::from_millis(10));
        assert_eq!(fourth - third, Duration::from_millis(5));
    }

    #[test]
    fn pacer_limits_catch_up_bursts() {
        let start = Instant::now() - Duration::from_secs(5);
        let pacer = Pacer::new(1000.0, start);
        let slot = pacer.reserve(10);
        // Five seconds behind schedule: the slot is moved up to at most 100 ms in the past.
        assert!(Instant::now() - slot <= MAX_PACING_BURST + Duration::from_millis(50));
    }

    #[test]
    fn invalid_arguments_name_the_flag() {
        let args = LoadgenArgs {
            spans_per_request: 55,
            ..LoadgenArgs::default()
        };
        let error = validate(&args).unwrap_err().to_string();
        assert!(error.contains("--spans-per-request"), "{error}");
        let args = LoadgenArgs {
            error_ratio: 1.5,
            ..LoadgenArgs::default()
        };
        assert!(validate(&args)
            .unwrap_err()
            .to_string()
            .contains("--error-ratio"));
    }
}
