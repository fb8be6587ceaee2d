//! What each fuzz target checks. Every decoder that takes outside bytes has one function here:
//! it must not panic, hang or allocate without bound on any input, and what it accepts must
//! keep the guarantees listed on the function. The cargo-fuzz targets in `fuzz/` call these
//! (`bench/fuzz.sh` runs them), and `tests/regressions.rs` replays every input kept under
//! `regressions/<target>/` on every CI run, so a crash once found stays fixed.

use std::sync::OnceLock;

use bytes::Bytes;
use prost::Message;
use threadline_otlp::json::{request_from_json, request_to_json};
use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::{count_spans, TraceData};

/// A target: the name of its folder under `regressions/` and of its cargo-fuzz binary, and the
/// check it runs on one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("otlp_protobuf", otlp_protobuf),
    ("otlp_json", otlp_json),
    ("http_body", http_body),
    ("traceql", traceql),
    ("collector_config", collector_config),
    ("admission_review", admission_review),
    ("wal_segment", wal_segment),
    ("block_files", block_files),
];

/// Limit of decompressed bytes in [`http_body`]: small, so a bomb is found quickly.
const BODY_LIMIT: usize = 1 << 20;

fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// The OTLP protobuf walk and validation (`TraceData::from_request_bytes`): accepted ⇒ prost
/// decodes the input and the stored data, with the span counts the walk claims; splitting and
/// viewing what was accepted works.
pub fn otlp_protobuf(input: &[u8]) {
    let counted = count_spans(input);
    let Ok((data, rejected)) = TraceData::from_request_bytes(Bytes::copy_from_slice(input)) else {
        return;
    };
    let request = ExportTraceServiceRequest::decode(input)
        .unwrap_or_else(|e| panic!("accepted input that prost rejects: {e}"));
    let stored = data
        .to_request()
        .unwrap_or_else(|e| panic!("stored data that prost rejects: {e}"));
    assert_eq!(
        data.span_count() + rejected.spans as usize,
        span_count(&request)
    );
    assert_eq!(data.span_count(), span_count(&stored));
    assert_eq!(counted.ok(), Some(span_count(&request)));
    let mut visited = 0;
    data.for_each_span(|_, _, span| {
        visited += 1;
        let _ = (span.name(), span.status_code(), span.attribute("k"));
    });
    assert_eq!(visited, data.span_count());
    let mut rest = data.clone();
    let front = rest.split_off_front(1);
    assert_eq!(front.span_count() + rest.span_count(), data.span_count());
    let groups = data.split_by_trace();
    assert_eq!(
        groups.iter().map(|(_, g)| g.span_count()).sum::<usize>(),
        data.span_count()
    );
}

/// OTLP/JSON: accepted ⇒ encoding it again and decoding that gives the same request.
pub fn otlp_json(input: &[u8]) {
    let Ok(request) = request_from_json(input) else {
        return;
    };
    let again = request_to_json(&request);
    let back = request_from_json(&again).unwrap_or_else(|e| {
        panic!(
            "our own JSON is refused: {e}\n{}",
            String::from_utf8_lossy(&again)
        )
    });
    assert_eq!(back, request);
}

/// OTLP/HTTP bodies: the first byte picks `Content-Encoding` (gzip, zstd, deflate, identity),
/// the rest is the body. Never more than the limit comes out; a bomb is refused with 413.
pub fn http_body(input: &[u8]) {
    let Some((&choice, body)) = input.split_first() else {
        return;
    };
    let encoding = ["gzip", "zstd", "deflate", "identity"][choice as usize % 4];
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        "content-encoding",
        axum::http::HeaderValue::from_static(encoding),
    );
    let raw = Bytes::copy_from_slice(body);
    match threadline_collector::receivers::otlp::decompress_http_body(&headers, raw, BODY_LIMIT) {
        Ok(out) => assert!(encoding == "identity" || out.len() <= BODY_LIMIT),
        Err((status, message)) => {
            assert!(status.is_client_error(), "{status}: {message}");
            assert!(!message.is_empty());
        }
    }
}

/// A small trace to evaluate parsed queries against: a server span with a client child in
/// another service, attributes of several types, an error.
fn sample_trace() -> &'static threadline_traceql::model::Trace {
    static TRACE: OnceLock<threadline_traceql::model::Trace> = OnceLock::new();
    TRACE.get_or_init(|| {
        let json = include_str!("../seeds/sample_trace.json");
        let request = request_from_json(json.as_bytes()).expect("the sample trace is valid");
        let data = TraceData::from_request(&request);
        let trace_id = data
            .split_by_trace()
            .first()
            .map(|(id, _)| *id)
            .expect("one trace");
        threadline_store::model::to_model(trace_id, &data)
    })
}

/// TraceQL: parsing never panics; what parses prints as a query that parses to the same text;
/// evaluating it on a real trace never panics.
pub fn traceql(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(query) = threadline_traceql::parse(text) else {
        return;
    };
    let printed = query.to_string();
    let again = threadline_traceql::parse(&printed)
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which does not parse: {e}"));
    assert_eq!(
        again.to_string(),
        printed,
        "printing is not stable for {text:?}"
    );
    let trace = sample_trace();
    let _ = query.evaluate(trace);
    let _ = query.evaluate_spansets(trace);
}

/// Collector YAML: the input's lines starting with `--set ` are `--set` values, the rest is one
/// inline `--config`; `${env:...}` references see a fixed environment. Resolving and loading
/// with every built-in component never panics, and every error names a path and a message.
pub fn collector_config(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let mut yaml = String::new();
    let mut sets = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("--set ") {
            Some(set) => sets.push(set.to_string()),
            None => {
                yaml.push_str(line);
                yaml.push('\n');
            }
        }
    }
    let sources = threadline_config::ConfigSources {
        configs: vec![format!("yaml:{yaml}")],
        sets,
    };
    let env = |name: &str| match name {
        "HOST" => Some("127.0.0.1".to_string()),
        "PORT" => Some("4317".to_string()),
        _ => None,
    };
    let root = match threadline_config::resolve_with_env(&sources, &env) {
        Ok(root) => root,
        Err(errors) => return check_errors(&errors),
    };
    let registry = threadline_collector::registry::Registry::builtin();
    if let Err(errors) = threadline_collector::service::load(&registry, &root) {
        check_errors(&errors);
    }
}

fn check_errors(errors: &threadline_config::ConfigErrors) {
    assert!(!errors.0.is_empty());
    for error in &errors.0 {
        assert!(
            !error.message.is_empty(),
            "an error without a message at {}",
            error.path
        );
    }
}

/// The operator's webhook: an AdmissionReview JSON body, decided with the seed's
/// Instrumentation. Never panics; a review with a request gets a response with its uid.
pub fn admission_review(input: &[u8]) {
    use kube::core::admission::{AdmissionRequest, AdmissionReview};
    use kube::core::DynamicObject;
    use threadline_operator::webhook::{admit, WebhookState};

    static STATE: OnceLock<(tokio::runtime::Runtime, WebhookState)> = OnceLock::new();
    let (runtime, state) = STATE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let docs = threadline_operator::render::parse_documents(include_str!(
            "../../operator/testdata/instrumentation.yaml"
        ))
        .expect("the seed Instrumentation parses");
        let instrumentations = docs
            .into_iter()
            .filter(|d| d["kind"] == "Instrumentation")
            .map(|d| serde_json::from_value(d).expect("an Instrumentation"))
            .collect();
        let catalog = threadline_operator::inject::Catalog {
            instrumentations,
            ..Default::default()
        };
        let state = WebhookState {
            catalog: std::sync::Arc::new(move || catalog.clone()),
            cluster: None,
        };
        (runtime, state)
    });
    let Ok(review) = serde_json::from_slice::<AdmissionReview<DynamicObject>>(input) else {
        return;
    };
    let Ok(request): Result<AdmissionRequest<DynamicObject>, _> = review.try_into() else {
        return;
    };
    let response = runtime.block_on(admit(state, &request));
    assert_eq!(response.uid, request.uid);
    let _ = serde_json::to_vec(&response.into_review());
}

/// WAL replay: any segment bytes give the records before the first damaged one, each inside
/// the input, and a good length that is a record boundary within the input.
pub fn wal_segment(input: &[u8]) {
    let contents = Bytes::copy_from_slice(input);
    let (records, good_len) = threadline_store::wal::parse_segment(&contents);
    assert!(good_len <= input.len());
    let payload: usize = records
        .iter()
        .map(|r| 8 + 2 + r.tenant.len() + r.data.len())
        .sum();
    assert!(payload <= good_len, "records cover more than the good part");
}

/// Block files: the first byte picks the file (index, data page, meta.json); a damaged file is
/// an error, never a panic; an index that decodes encodes to one that decodes the same.
pub fn block_files(input: &[u8]) {
    use threadline_store::block::{page_traces, BlockIndex, BlockMeta};
    let Some((&choice, file)) = input.split_first() else {
        return;
    };
    match choice % 3 {
        0 => {
            if let Ok(index) = BlockIndex::decode(file) {
                let again = BlockIndex::decode(&index.encode())
                    .unwrap_or_else(|e| panic!("our own index does not decode: {e}"));
                assert_eq!(again.rows, index.rows);
                assert_eq!(again.strings, index.strings);
                assert_eq!(again.pages, index.pages);
            }
        }
        1 => {
            if let Ok(traces) = page_traces(file) {
                for (_, data) in traces {
                    assert!(data.to_request().is_ok());
                }
            }
        }
        _ => {
            let _ = serde_json::from_slice::<BlockMeta>(file);
        }
    }
}
