//! `threadline doctor`: where traces break. The trace checks run in the store
//! (`GET /api/threadline/doctor`); collectors' metrics (`--metrics URL`) and configs
//! (`--config FILE`) are checked here; one report, ordered by impact, as text or JSON, with a
//! non-zero exit when findings reach `--fail-on`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use threadline_doctor::config_checks::{check_configs, CollectorFile};
use threadline_doctor::metrics_checks::{check_metrics, parse_prometheus};
use threadline_doctor::{parse_since, render, Report, Severity};

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What each check looks for, printed under `threadline doctor --help`.
const CHECKS: &str = "\
Checks (each finding says what, where, how often, example trace ids, and the fix):
  Trace checks (run in the store over the traces of --since):
    lost_context             a CLIENT/PRODUCER span with no SERVER/CONSUMER child while the callee's
                             server span started a new trace inside the call (a consumer: up to
                             10 s after the producer span), matched by server.address,
                             peer.service, url.full, rpc.service or messaging destination; the
                             two halves are paired as example trace ids
    callee_not_parent_based  the callee records no span for calls its caller sampled
    orphan_spans             spans whose parent never arrived, by service
    several_roots            traces with more than one root span
    sampling_not_parent_based / sampled_flag_disagrees
                             a service samples on its own instead of following its parent
    traces_sampled_apart     many services hold fragments without callers (tail sampling split)
    clock_skew               children outside their parent by more than 10 ms; the skew is
                             estimated per service pair and the service whose clock is off named
    span_name_has_ids        span names with ids (numbers, UUIDs, hex, emails), with the route
                             template they should have; span_name_cardinality: too many names
    pii_*                    emails, card numbers (Luhn), IBANs, phone numbers, bearer tokens,
                             JWTs, API keys, secret-named keys (password, authorization...);
                             values are never printed; an attributes processor snippet is given
  --metrics URL (a collector's otelcol_* metrics):
    receiver/processor refusals, exporter send and enqueue failures, queues near capacity,
    tail sampling decisions made too early and late spans
  --config FILE (collector configs or OpenTelemetryCollector resources):
    split-trace layout (agents spread spans over tail-sampling replicas without routing by trace
    id), memory_limiter not first, batch before tail_sampling, export without retry or queue,
    plain-text export to a non-local endpoint, decision_wait shorter than the p99 trace duration
    the store has seen

Exit status: 0, or 1 when a finding reaches --fail-on (or on an error).
The store serves the same trace report at GET /api/threadline/doctor?since=1h.";

#[derive(Args)]
#[command(after_long_help = CHECKS)]
pub struct DoctorArgs {
    /// Base URL of the store's HTTP API (the trace checks run there).
    #[arg(long, default_value = "http://127.0.0.1:3200", env = "THREADLINE_API")]
    store: String,
    /// Skip the trace checks (only --metrics and --config).
    #[arg(long)]
    no_store: bool,
    /// Tenant, sent as X-Scope-OrgID (for stores with multitenancy on).
    #[arg(long)]
    org_id: Option<String>,
    /// Traces of the last ...: e.g. 15m, 1h, 2d.
    #[arg(long, default_value = "1h")]
    since: String,
    /// A collector's Prometheus metrics URL (`otelcol_*`), e.g. http://gw:8888/metrics. Repeatable.
    #[arg(long = "metrics", value_name = "URL")]
    metrics: Vec<String>,
    /// A collector config or OpenTelemetryCollector resource (YAML). Repeatable: give agents and
    /// gateways together so their layout can be checked.
    #[arg(long = "config", value_name = "FILE")]
    configs: Vec<PathBuf>,
    /// Output: a report for people, or the report JSON.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Exit non-zero when a finding is at this severity or above: info, warning, critical.
    #[arg(long, value_name = "SEVERITY")]
    fail_on: Option<Severity>,
}

fn client() -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()?)
}

fn store_report(args: &DoctorArgs, since_seconds: u64) -> anyhow::Result<Report> {
    let url = format!(
        "{}/api/threadline/doctor?since={since_seconds}s",
        args.store.trim_end_matches('/')
    );
    let mut request = client()?.get(&url);
    if let Some(org) = &args.org_id {
        request = request.header("X-Scope-OrgID", org);
    }
    let response = request.send().with_context(|| {
        format!("cannot reach the store at {url} (give --store URL, or --no-store to skip the trace checks)")
    })?;
    let status = response.status();
    let body = response.text().unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{url}: {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("{url} did not answer a doctor report"))
}

fn metrics_findings(url: &str) -> anyhow::Result<Vec<threadline_doctor::Finding>> {
    let response = client()?
        .get(url)
        .send()
        .with_context(|| format!("cannot reach collector metrics at {url}"))?;
    let status = response.status();
    let body = response.text().unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{url}: {status}");
    }
    let samples = parse_prometheus(&body).with_context(|| url.to_string())?;
    if !samples.iter().any(|s| s.name.starts_with("otelcol_")) {
        anyhow::bail!("{url} serves no otelcol_* metrics: is it a collector's telemetry endpoint?");
    }
    Ok(check_metrics(url, &samples))
}

pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let since_seconds = parse_since(&args.since).context("--since")?;
    let mut report = if args.no_store {
        Report::default()
    } else {
        store_report(&args, since_seconds)?
    };
    for url in &args.metrics {
        report.findings.extend(metrics_findings(url)?);
    }
    if !args.configs.is_empty() {
        let files = args
            .configs
            .iter()
            .map(|path| CollectorFile::load(path))
            .collect::<Result<Vec<_>, _>>()?;
        let p99 = (!args.no_store && report.scanned.traces > 0)
            .then_some(report.scanned.trace_duration_p99_ms);
        report.findings.extend(check_configs(&files, p99));
    }
    report.sort();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", render::text(&report)),
    }
    if let Some(severity) = args.fail_on {
        let n = report.at_least(severity);
        if n > 0 {
            anyhow::bail!("{n} findings at {} or above (--fail-on)", severity.as_str());
        }
    }
    Ok(())
}
