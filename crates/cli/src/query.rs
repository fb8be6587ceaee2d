//! `search` and `trace`: query a running store (or Tempo) from the terminal.

use std::collections::HashMap;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct ApiArgs {
    /// Base URL of the store's (or Tempo's) HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:3200", env = "THREADLINE_API")]
    api: String,
    /// Tenant, sent as X-Scope-OrgID (for stores with multitenancy on).
    #[arg(long)]
    org_id: Option<String>,
}

#[derive(Args)]
pub struct SearchArgs {
    /// A TraceQL query, e.g. '{ status = error }'.
    query: String,
    #[command(flatten)]
    api: ApiArgs,
    /// Traces to list at most.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Only traces of the last ...: e.g. 15m, 1h (default: all).
    #[arg(long)]
    since: Option<String>,
}

#[derive(Args)]
pub struct TraceArgs {
    /// The trace id (hex).
    id: String,
    #[command(flatten)]
    api: ApiArgs,
}

/// A JSON answer of the API and the headers that came with it.
struct Answer {
    body: Value,
    headers: reqwest::header::HeaderMap,
}

fn get(api: &ApiArgs, path_and_query: &str) -> anyhow::Result<Value> {
    get_with_headers(api, path_and_query).map(|answer| answer.body)
}

/// The store answered with an error status.
#[derive(Debug)]
struct ApiStatusError {
    status: reqwest::StatusCode,
    message: String,
}

impl std::fmt::Display for ApiStatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for ApiStatusError {}

/// Whether `err` is the store's 404 for a search: the tenant holds no traces (yet).
fn is_unknown_tenant(err: &anyhow::Error) -> bool {
    err.downcast_ref::<ApiStatusError>()
        .is_some_and(|e| e.status == reqwest::StatusCode::NOT_FOUND)
}

fn get_with_headers(api: &ApiArgs, path_and_query: &str) -> anyhow::Result<Answer> {
    let url = format!("{}{}", api.api.trim_end_matches('/'), path_and_query);
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()?;
    let mut request = client.get(&url);
    if let Some(org) = &api.org_id {
        request = request.header("X-Scope-OrgID", org);
    }
    let response = request
        .send()
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().unwrap_or_default();
    if !status.is_success() {
        return Err(ApiStatusError {
            status,
            message: body.trim().to_string(),
        }
        .into());
    }
    let body = serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))?;
    Ok(Answer { body, headers })
}

fn format_time(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn number(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

pub fn search(args: SearchArgs) -> anyhow::Result<()> {
    let window = match &args.since {
        Some(since) => {
            let window = threadline_config::settings::duration::parse(since)
                .map_err(|e| anyhow::anyhow!("--since {since:?}: {e}"))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            format!("&start={}&end={now}", now.saturating_sub(window.as_secs()))
        }
        None => String::new(),
    };
    let search = |query: &str, limit: usize| {
        get_with_headers(
            &args.api,
            &format!("/api/search?q={}&limit={limit}{window}", urlencode(query)),
        )
    };
    let Answer { body, headers } = match search(&args.query, args.limit) {
        // A tenant the store knows nothing of: nothing stored for it yet.
        Err(err) if is_unknown_tenant(&err) => {
            println!("{}", no_match_reason(&args, Some(false), None));
            return Ok(());
        }
        answer => answer?,
    };
    let traces = body["traces"].as_array().cloned().unwrap_or_default();
    if traces.is_empty() {
        // Whether anything is stored at all (in the window): the store's own statistics cannot
        // say, as its indexes skip traces without reading them. Asked only when nothing matched.
        let stored = match search("{ }", 1) {
            Ok(answer) => answer.body["traces"]
                .as_array()
                .map(|traces| !traces.is_empty()),
            Err(_) => None,
        };
        let held_for = headers
            .get(crate::all_in_one::DECISION_WAIT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        println!("{}", no_match_reason(&args, stored, held_for));
        return Ok(());
    }
    println!(
        "{:<32}  {:<20}  {:>9}  {:<16}  {:<32}  MATCHED",
        "TRACE ID", "START", "DURATION", "ROOT SERVICE", "ROOT SPAN"
    );
    for trace in traces {
        println!(
            "{:<32}  {:<20}  {:>7}ms  {:<16}  {:<32}  {}",
            trace["traceID"].as_str().unwrap_or(""),
            format_time(number(&trace["startTimeUnixNano"])),
            number(&trace["durationMs"]),
            trace["rootServiceName"].as_str().unwrap_or(""),
            trace["rootTraceName"].as_str().unwrap_or(""),
            number(&trace["spanSet"]["matched"]),
        );
    }
    Ok(())
}

/// "no traces match", and why when it is likely: nothing is stored yet (for the tenant, in the
/// window), or traces are still held by the pipeline's tail sampling (all-in-one says for how
/// long in [`crate::all_in_one::DECISION_WAIT_HEADER`]).
fn no_match_reason(args: &SearchArgs, stored: Option<bool>, held_for: Option<u64>) -> String {
    let mut text = String::from("no traces match");
    if stored == Some(false) {
        let tenant = match &args.api.org_id {
            Some(org) => format!(" for tenant {org:?}"),
            None => String::new(),
        };
        let window = match &args.since {
            Some(since) => format!(" in the last {since}"),
            None => String::new(),
        };
        text.push_str(&format!(
            ": {} holds no traces{tenant}{window} yet",
            args.api.api
        ));
    }
    if let Some(seconds) = held_for {
        text.push_str(&format!(
            "\nnote: traces reach this store {seconds}s after their first span (the pipeline's \
             tail_sampling decision_wait), and only those its policies keep"
        ));
    }
    text
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Row {
    span_id: String,
    parent: String,
    service: String,
    name: String,
    start: u64,
    end: u64,
    status: &'static str,
}

pub fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let body = get(&args.api, &format!("/api/traces/{}", urlencode(&args.id)))?;
    let mut rows = Vec::new();
    for batch in body["batches"].as_array().into_iter().flatten() {
        let service = batch["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|kv| kv["key"] == "service.name")
            .and_then(|kv| kv["value"]["stringValue"].as_str())
            .unwrap_or("")
            .to_string();
        for scope in batch["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                rows.push(Row {
                    span_id: span["spanId"].as_str().unwrap_or("").to_string(),
                    parent: span["parentSpanId"].as_str().unwrap_or("").to_string(),
                    service: service.clone(),
                    name: span["name"].as_str().unwrap_or("").to_string(),
                    start: number(&span["startTimeUnixNano"]),
                    end: number(&span["endTimeUnixNano"]),
                    status: match span["status"]["code"].as_u64() {
                        Some(2) => "ERROR",
                        Some(1) => "OK",
                        _ => "",
                    },
                });
            }
        }
    }
    rows.sort_by_key(|r| r.start);
    let trace_start = rows.iter().map(|r| r.start).min().unwrap_or(0);
    let trace_end = rows.iter().map(|r| r.end).max().unwrap_or(0);
    let total = trace_end.saturating_sub(trace_start).max(1);
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r.span_id.as_str()).collect();
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if row.parent.is_empty() || !ids.contains(row.parent.as_str()) {
            roots.push(i);
        } else {
            children.entry(row.parent.as_str()).or_default().push(i);
        }
    }
    println!(
        "trace {}  {} spans  {:.1}ms  started {}",
        args.id,
        rows.len(),
        total as f64 / 1e6,
        format_time(trace_start)
    );
    println!(
        "{:<48}  {:<14}  {:>10}  {:>10}  {:<6}  WATERFALL",
        "SPAN", "SERVICE", "OFFSET", "DURATION", "STATUS"
    );
    const WIDTH: u64 = 40;
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&r| (r, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        let row = &rows[i];
        let offset = row.start.saturating_sub(trace_start);
        let duration = row.end.saturating_sub(row.start);
        let from = offset * WIDTH / total;
        let len = (duration * WIDTH / total).max(1);
        let bar = format!(
            "{}{}",
            " ".repeat(from as usize),
            "█".repeat(len.min(WIDTH - from.min(WIDTH - 1)) as usize)
        );
        let label = format!("{}{}", "  ".repeat(depth), row.name);
        println!(
            "{:<48}  {:<14}  {:>8.1}ms  {:>8.1}ms  {:<6}  {}",
            truncate(&label, 48),
            truncate(&row.service, 14),
            offset as f64 / 1e6,
            duration as f64 / 1e6,
            row.status,
            bar
        );
        if let Some(kids) = children.get(row.span_id.as_str()) {
            for &k in kids.iter().rev() {
                stack.push((k, depth + 1));
            }
        }
    }
    Ok(())
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(width - 1).collect();
        out.push('…');
        out
    }
}
