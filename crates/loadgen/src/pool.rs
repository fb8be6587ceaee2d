//! A pool of pre-encoded export requests.
//!
//! Encoding 500 spans with prost for every request would make the generator as expensive as the
//! collector it measures. Instead each template is encoded once; for every request the template
//! bytes are copied and only the fixed-size fields are overwritten in place: trace ids, span ids,
//! parent span ids (fresh per request, so every trace is new) and timestamps (shifted to "now").

use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::traces::{
    self, decode_template_span_id, GeneratedSpan, ScopeKind, Service, TraceShape, PODS_PER_SERVICE,
    SPANS_PER_TRACE,
};

/// Templates are generated "as of" this instant (unix nanoseconds, late 2023); rendering shifts
/// every timestamp by `now - TEMPLATE_EPOCH_NANOS`.
const TEMPLATE_EPOCH_NANOS: u64 = 1_700_000_000_000_000_000;

/// Traces in a template end within this window before the template epoch.
const TRACE_END_SPREAD_NANOS: u64 = 1_000_000_000;

const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.26.0";

/// What the pool should contain.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// Traces in each request.
    pub traces_per_request: usize,
    /// Total traces to send, if bounded; the last request then carries the remainder.
    pub total_traces: Option<u64>,
    /// Distinct request templates to cycle through.
    pub templates: usize,
    /// Share of traces with one span in status ERROR.
    pub error_ratio: f64,
    /// Share of traces whose root lasts longer than 2 s.
    pub slow_ratio: f64,
    /// Seed for attribute values, durations and ids; random when `None`.
    pub seed: Option<u64>,
}

/// One request, ready to send.
#[derive(Clone, Debug)]
pub struct RenderedRequest {
    /// Encoded `ExportTraceServiceRequest`.
    pub body: Bytes,
    /// Spans in the request.
    pub spans: usize,
    /// Traces in the request, and how many of them have an error span / a slow root.
    pub traces: usize,
    pub error_traces: usize,
    pub slow_traces: usize,
}

/// Pre-encoded requests plus the byte offsets to patch in each of them.
pub struct RequestPool {
    templates: Vec<RequestTemplate>,
    /// For bounded runs whose trace count is not a multiple of the request size: the smaller
    /// template used by the very last request, and that request's sequence number.
    last_request: Option<(u64, RequestTemplate)>,
    traces_per_request: usize,
    run_key: u64,
}

impl RequestPool {
    /// Generates and encodes the templates.
    pub fn generate(options: &PoolOptions) -> Result<Self, MalformedRequest> {
        let traces_per_request = options.traces_per_request.max(1);
        let mut rng = match options.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        let run_key: u64 = rng.random();

        let full_requests = options
            .total_traces
            .map(|total| total / traces_per_request as u64);
        // Bounded runs need no more templates than requests; at least one keeps `render` total.
        let template_count = match full_requests {
            Some(full) => (options.templates as u64).min(full) as usize,
            None => options.templates,
        }
        .max(1);

        let pool_traces = template_count * traces_per_request;
        let pool_shapes = shapes(&mut rng, pool_traces, options);
        let templates = pool_shapes
            .chunks(traces_per_request)
            .map(|chunk| RequestTemplate::build(&mut rng, chunk))
            .collect::<Result<Vec<_>, _>>()?;

        let last_request = match (options.total_traces, full_requests) {
            (Some(total), Some(full)) if total % traces_per_request as u64 != 0 => {
                let remainder = (total % traces_per_request as u64) as usize;
                let remainder_shapes = shapes(&mut rng, remainder, options);
                Some((full, RequestTemplate::build(&mut rng, &remainder_shapes)?))
            }
            _ => None,
        };

        Ok(Self {
            templates,
            last_request,
            traces_per_request,
            run_key,
        })
    }

    /// Number of requests in a bounded run (`total_traces` set), `None` otherwise.
    pub fn request_count(&self, total_traces: Option<u64>) -> Option<u64> {
        total_traces.map(|total| total.div_ceil(self.traces_per_request as u64))
    }

    /// Spans that request number `sequence` carries.
    pub fn spans_in_request(&self, sequence: u64) -> usize {
        self.template_for(sequence).spans.len()
    }

    /// Renders request number `sequence`: fresh ids, timestamps ending shortly before
    /// `now_unix_nanos`.
    pub fn render(&self, sequence: u64, now_unix_nanos: u64) -> RenderedRequest {
        let template = self.template_for(sequence);
        let mut body = BytesMut::from(template.encoded.as_slice());

        let ids: Vec<TraceIds> = (0..template.traces)
            .map(|trace| {
                let number = sequence
                    .wrapping_mul(self.traces_per_request as u64)
                    .wrapping_add(trace as u64);
                TraceIds::derive(self.run_key.wrapping_add(number))
            })
            .collect();

        for span in &template.spans {
            let trace = &ids[span.trace];
            body[span.trace_id_at..span.trace_id_at + 16].copy_from_slice(&trace.trace_id);
            body[span.span_id_at..span.span_id_at + 8].copy_from_slice(&trace.span_id(span.span));
            if let Some((parent_at, parent)) = span.parent {
                body[parent_at..parent_at + 8].copy_from_slice(&trace.span_id(parent));
            }
        }

        let shift = now_unix_nanos.saturating_sub(TEMPLATE_EPOCH_NANOS);
        for &at in &template.timestamps_at {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&body[at..at + 8]);
            let shifted = u64::from_le_bytes(raw).wrapping_add(shift);
            body[at..at + 8].copy_from_slice(&shifted.to_le_bytes());
        }

        RenderedRequest {
            body: body.freeze(),
            spans: template.spans.len(),
            traces: template.traces,
            error_traces: template.error_traces,
            slow_traces: template.slow_traces,
        }
    }

    fn template_for(&self, sequence: u64) -> &RequestTemplate {
        match &self.last_request {
            Some((last, template)) if *last == sequence => template,
            _ => &self.templates[(sequence % self.templates.len() as u64) as usize],
        }
    }
}

/// Picks which of `count` traces are errors and which are slow: exactly `round(count * ratio)`
/// of each, at random positions, so the configured shares hold over the whole pool.
fn shapes(rng: &mut SmallRng, count: usize, options: &PoolOptions) -> Vec<TraceShape> {
    let pick = |rng: &mut SmallRng, ratio: f64| -> Vec<bool> {
        let wanted = ((count as f64) * ratio.clamp(0.0, 1.0)).round() as usize;
        let mut chosen = vec![false; count];
        for index in rand::seq::index::sample(rng, count, wanted.min(count)) {
            chosen[index] = true;
        }
        chosen
    };
    let errors = pick(rng, options.error_ratio);
    let slow = pick(rng, options.slow_ratio);
    (0..count)
        .map(|index| TraceShape {
            error: errors[index],
            slow: slow[index],
            end_time: TEMPLATE_EPOCH_NANOS - rng.random_range(0..TRACE_END_SPREAD_NANOS),
        })
        .collect()
}

/// Ids of one rendered trace.
struct TraceIds {
    trace_id: [u8; 16],
    span_seed: u64,
}

impl TraceIds {
    /// `mix64` is a bijection, so distinct trace numbers always give distinct trace ids.
    fn derive(trace_number: u64) -> Self {
        let high = mix64(trace_number);
        let low = mix64(trace_number ^ 0x5851_f42d_4c95_7f2d);
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&high.to_be_bytes());
        trace_id[8..].copy_from_slice(&low.to_be_bytes());
        Self {
            trace_id,
            span_seed: low,
        }
    }

    fn span_id(&self, span: usize) -> [u8; 8] {
        // All-zero span ids are invalid.
        mix64(self.span_seed.wrapping_add(span as u64 + 1))
            .max(1)
            .to_be_bytes()
    }
}

/// SplitMix64's finalizer: a cheap bijective mixer.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Where one span's ids sit in the encoded template.
#[derive(Debug)]
struct SpanPatch {
    trace: usize,
    span: usize,
    trace_id_at: usize,
    span_id_at: usize,
    /// Offset of the parent span id and the parent's index within the trace.
    parent: Option<(usize, usize)>,
}

/// One encoded request and the offsets to patch in it.
struct RequestTemplate {
    encoded: Vec<u8>,
    traces: usize,
    error_traces: usize,
    slow_traces: usize,
    spans: Vec<SpanPatch>,
    /// Offsets of every fixed64 timestamp: span start/end and event times.
    timestamps_at: Vec<usize>,
}

impl RequestTemplate {
    fn build(rng: &mut SmallRng, shapes: &[TraceShape]) -> Result<Self, MalformedRequest> {
        let request = build_request(rng, shapes);
        let encoded = request.encode_to_vec();
        let mut template = Self {
            encoded,
            traces: shapes.len(),
            error_traces: shapes.iter().filter(|s| s.error).count(),
            slow_traces: shapes.iter().filter(|s| s.slow).count(),
            spans: Vec::with_capacity(shapes.len() * SPANS_PER_TRACE),
            timestamps_at: Vec::with_capacity(shapes.len() * SPANS_PER_TRACE * 2),
        };
        template.locate_patch_points()?;
        if template.spans.len() != shapes.len() * SPANS_PER_TRACE {
            return Err(MalformedRequest(
                "span count differs from the generated one",
            ));
        }
        Ok(template)
    }

    /// Walks the encoded request (request → resource_spans → scope_spans → spans) and records
    /// where the ids and timestamps of each span are.
    fn locate_patch_points(&mut self) -> Result<(), MalformedRequest> {
        let encoded = std::mem::take(&mut self.encoded);
        let result = (|| {
            for resource_spans in fields(&encoded, 0, encoded.len()) {
                let Field::Bytes {
                    number: 1,
                    start,
                    end,
                } = resource_spans?
                else {
                    continue;
                };
                for scope_spans in fields(&encoded, start, end) {
                    let Field::Bytes {
                        number: 2,
                        start,
                        end,
                    } = scope_spans?
                    else {
                        continue;
                    };
                    for span in fields(&encoded, start, end) {
                        let Field::Bytes {
                            number: 2,
                            start,
                            end,
                        } = span?
                        else {
                            continue;
                        };
                        self.locate_in_span(&encoded, start, end)?;
                    }
                }
            }
            Ok(())
        })();
        self.encoded = encoded;
        result
    }

    fn locate_in_span(
        &mut self,
        encoded: &[u8],
        start: usize,
        end: usize,
    ) -> Result<(), MalformedRequest> {
        let mut trace_id_at = None;
        let mut span_id_at = None;
        let mut parent_at = None;
        for field in fields(encoded, start, end) {
            match field? {
                Field::Bytes {
                    number: 1,
                    start,
                    end,
                } if end - start == 16 => trace_id_at = Some(start),
                Field::Bytes {
                    number: 2,
                    start,
                    end,
                } if end - start == 8 => span_id_at = Some(start),
                Field::Bytes {
                    number: 4,
                    start,
                    end,
                } if end - start == 8 => parent_at = Some(start),
                // start_time_unix_nano, end_time_unix_nano
                Field::Fixed64 { number: 7 | 8, at } => self.timestamps_at.push(at),
                // events: their time_unix_nano is field 1
                Field::Bytes {
                    number: 11,
                    start,
                    end,
                } => {
                    for event_field in fields(encoded, start, end) {
                        if let Field::Fixed64 { number: 1, at } = event_field? {
                            self.timestamps_at.push(at);
                        }
                    }
                }
                _ => {}
            }
        }
        let trace_id_at = trace_id_at.ok_or(MalformedRequest("span without a 16-byte trace id"))?;
        let span_id_at = span_id_at.ok_or(MalformedRequest("span without an 8-byte span id"))?;
        let (trace, span) = decode_template_span_id(&encoded[span_id_at..span_id_at + 8])
            .ok_or(MalformedRequest("span id is not a template id"))?;
        let parent = match parent_at {
            Some(at) => {
                let (parent_trace, parent) = decode_template_span_id(&encoded[at..at + 8])
                    .ok_or(MalformedRequest("parent span id is not a template id"))?;
                if parent_trace != trace {
                    return Err(MalformedRequest("parent belongs to another trace"));
                }
                Some((at, parent))
            }
            None => None,
        };
        self.spans.push(SpanPatch {
            trace,
            span,
            trace_id_at,
            span_id_at,
            parent,
        });
        Ok(())
    }
}

/// Generates the traces and groups their spans the way an agent would send them: one
/// `ResourceSpans` per pod, one `ScopeSpans` per instrumentation library.
fn build_request(rng: &mut SmallRng, shapes: &[TraceShape]) -> ExportTraceServiceRequest {
    let groups = Service::ALL.len() * PODS_PER_SERVICE * ScopeKind::ALL.len();
    let group_of = |service: Service, pod: usize, scope: ScopeKind| {
        (service.index() * PODS_PER_SERVICE + pod) * ScopeKind::ALL.len() + scope.index()
    };
    let mut grouped: Vec<Vec<Span>> = (0..groups).map(|_| Vec::new()).collect();
    for (trace, shape) in shapes.iter().enumerate() {
        for GeneratedSpan {
            service,
            pod,
            scope,
            span,
        } in traces::generate_trace(rng, trace, shape)
        {
            grouped[group_of(service, pod, scope)].push(span);
        }
    }

    let mut resource_spans = Vec::new();
    for service in Service::ALL {
        for pod in 0..PODS_PER_SERVICE {
            let scope_spans: Vec<ScopeSpans> = ScopeKind::ALL
                .iter()
                .filter_map(|&scope| {
                    let spans = std::mem::take(&mut grouped[group_of(service, pod, scope)]);
                    (!spans.is_empty()).then(|| ScopeSpans {
                        scope: Some(traces::scope(service, scope)),
                        spans,
                        schema_url: SCHEMA_URL.to_owned(),
                    })
                })
                .collect();
            if !scope_spans.is_empty() {
                resource_spans.push(ResourceSpans {
                    resource: Some(traces::resource(service, pod)),
                    scope_spans,
                    schema_url: SCHEMA_URL.to_owned(),
                });
            }
        }
    }
    ExportTraceServiceRequest { resource_spans }
}

/// The pool's own encoding could not be walked: a bug in this crate, never caused by input.
#[derive(Debug, thiserror::Error)]
#[error("generated request has an unexpected layout: {0}")]
pub struct MalformedRequest(&'static str);

/// One protobuf field, with absolute offsets into the buffer.
enum Field {
    Other,
    Fixed64 {
        number: u64,
        at: usize,
    },
    Bytes {
        number: u64,
        start: usize,
        end: usize,
    },
}

/// Iterates the fields of the message stored in `buf[start..end]`.
fn fields(
    buf: &[u8],
    start: usize,
    end: usize,
) -> impl Iterator<Item = Result<Field, MalformedRequest>> + '_ {
    let mut position = start;
    std::iter::from_fn(move || {
        if position >= end {
            return None;
        }
        Some(next_field(buf, &mut position, end))
    })
}

fn next_field(buf: &[u8], position: &mut usize, end: usize) -> Result<Field, MalformedRequest> {
    let key = read_varint(buf, position, end)?;
    let number = key >> 3;
    match key & 0b111 {
        0 => {
            read_varint(buf, position, end)?;
            Ok(Field::Other)
        }
        1 => {
            let at = *position;
            *position = at
                .checked_add(8)
                .filter(|&next| next <= end)
                .ok_or(TRUNCATED)?;
            Ok(Field::Fixed64 { number, at })
        }
        2 => {
            let length =
                usize::try_from(read_varint(buf, position, end)?).map_err(|_| TRUNCATED)?;
            let start = *position;
            let value_end = start
                .checked_add(length)
                .filter(|&next| next <= end)
                .ok_or(TRUNCATED)?;
            *position = value_end;
            Ok(Field::Bytes {
                number,
                start,
                end: value_end,
            })
        }
        5 => {
            *position = position
                .checked_add(4)
                .filter(|&next| next <= end)
                .ok_or(TRUNCATED)?;
            Ok(Field::Other)
        }
        _ => Err(MalformedRequest("unsupported wire type")),
    }
}

const TRUNCATED: MalformedRequest = MalformedRequest("field runs past its message");

fn read_varint(buf: &[u8], position: &mut usize, end: usize) -> Result<u64, MalformedRequest> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if *position >= end {
            return Err(TRUNCATED);
        }
        let byte = buf[*position];
        *position += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(MalformedRequest("varint longer than 10 bytes"))
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

    use super::*;
    use crate::traces::{NORMAL_ROOT_MAX_NANOS, SLOW_ROOT_MIN_NANOS};

    const NOW: u64 = 1_760_000_000_000_000_000;

    fn options(traces_per_request: usize, templates: usize) -> PoolOptions {
        PoolOptions {
            traces_per_request,
            total_traces: None,
            templates,
            error_ratio: 0.05,
            slow_ratio: 0.05,
            seed: Some(7),
        }
    }

    fn decode(request: &RenderedRequest) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest::decode(request.body.clone()).unwrap()
    }

    fn all_spans(request: &ExportTraceServiceRequest) -> Vec<&Span> {
        request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .collect()
    }

    fn string_attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            })
    }

    #[test]
    fn requests_decode_into_well_formed_traces() {
        let pool = RequestPool::generate(&options(50, 4)).unwrap();
        for sequence in 0..8 {
            let rendered = pool.render(sequence, NOW);
            let request = decode(&rendered);
            let spans = all_spans(&request);
            assert_eq!(spans.len(), 500);
            assert_eq!(rendered.spans, 500);

            let mut traces: HashMap<&[u8], Vec<&Span>> = HashMap::new();
            for span in &spans {
                traces
                    .entry(span.trace_id.as_slice())
                    .or_default()
                    .push(span);
            }
            assert_eq!(traces.len(), 50);
            for trace in traces.values() {
                assert_eq!(trace.len(), SPANS_PER_TRACE);
                let by_id: HashMap<&[u8], &Span> =
                    trace.iter().map(|s| (s.span_id.as_slice(), *s)).collect();
                assert_eq!(
                    by_id.len(),
                    SPANS_PER_TRACE,
                    "span ids are unique within a trace"
                );
                let roots: Vec<_> = trace
                    .iter()
                    .filter(|s| s.parent_span_id.is_empty())
                    .collect();
                assert_eq!(roots.len(), 1);
                for span in trace {
                    assert_ne!(span.span_id, vec![0u8; 8]);
                    assert!(span.start_time_unix_nano < span.end_time_unix_nano);
                    assert!(span.end_time_unix_nano <= NOW);
                    assert!(span.start_time_unix_nano > NOW - 10_000_000_000);
                    if span.parent_span_id.is_empty() {
                        continue;
                    }
                    let parent = by_id
                        .get(span.parent_span_id.as_slice())
                        .expect("parent is in the same trace");
                    assert!(parent.start_time_unix_nano <= span.start_time_unix_nano);
                    assert!(span.end_time_unix_nano <= parent.end_time_unix_nano);
                }
                let errors = trace
                    .iter()
                    .filter(|s| {
                        s.status
                            .as_ref()
                            .is_some_and(|st| st.code == StatusCode::Error as i32)
                    })
                    .count();
                assert!(errors <= 1);
            }
        }
    }

    #[test]
    fn spans_carry_realistic_attributes_and_resources() {
        let pool = RequestPool::generate(&options(50, 1)).unwrap();
        let request = decode(&pool.render(0, NOW));
        assert!(request.resource_spans.len() >= 4, "one resource per pod");
        let mut services = HashSet::new();
        for resource_spans in &request.resource_spans {
            let resource = resource_spans.resource.as_ref().unwrap();
            let keys: HashSet<&str> = resource
                .attributes
                .iter()
                .map(|kv| kv.key.as_str())
                .collect();
            for key in [
                "service.name",
                "service.version",
                "k8s.pod.name",
                "k8s.namespace.name",
            ] {
                assert!(keys.contains(key), "resource lacks {key}");
            }
            let name = resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .unwrap();
            services.insert(format!("{:?}", name.value));
        }
        assert_eq!(services.len(), 4);

        let spans = all_spans(&request);
        let average =
            spans.iter().map(|s| s.attributes.len()).sum::<usize>() as f64 / spans.len() as f64;
        assert!(
            (8.0..=10.0).contains(&average),
            "average attributes per span {average}"
        );
        for span in spans {
            if let Some(route) = string_attribute(span, "http.route") {
                assert!(
                    span.name.ends_with(route),
                    "server span named after its route"
                );
                assert!(string_attribute(span, "url.path").is_some());
            }
            assert!(
                !span.name.chars().any(|c| c.is_ascii_digit()),
                "span names are templates without concrete ids: {}",
                span.name
            );
        }
    }

    #[test]
    fn error_and_slow_shares_match_the_ratios() {
        let mut opts = options(50, 8);
        opts.error_ratio = 0.1;
        opts.slow_ratio = 0.05;
        let pool = RequestPool::generate(&opts).unwrap();
        let (mut traces, mut errors, mut slow) = (0, 0, 0);
        for sequence in 0..8 {
            let request = decode(&pool.render(sequence, NOW));
            for span in all_spans(&request) {
                if span
                    .status
                    .as_ref()
                    .is_some_and(|s| s.code == StatusCode::Error as i32)
                {
                    errors += 1;
                    assert_eq!(
                        span.events.len(),
                        1,
                        "error span records an exception event"
                    );
                    assert!(span.events[0].time_unix_nano >= span.start_time_unix_nano);
                }
                if span.parent_span_id.is_empty() {
                    traces += 1;
                    let duration = span.end_time_unix_nano - span.start_time_unix_nano;
                    if duration > 2_000_000_000 {
                        assert!(duration >= SLOW_ROOT_MIN_NANOS);
                        slow += 1;
                    } else {
                        assert!(duration <= NORMAL_ROOT_MAX_NANOS);
                    }
                }
            }
        }
        assert_eq!(traces, 400);
        assert_eq!(errors, 40);
        assert_eq!(slow, 20);
    }

    #[test]
    fn every_request_gets_fresh_ids_and_current_timestamps() {
        let pool = RequestPool::generate(&options(50, 2)).unwrap();
        let first = decode(&pool.render(0, NOW));
        // Same template (2 templates in the pool), later request.
        let third = decode(&pool.render(2, NOW + 5_000_000_000));
        let ids = |request: &ExportTraceServiceRequest| -> HashSet<Vec<u8>> {
            all_spans(request)
                .iter()
                .map(|s| s.trace_id.clone())
                .collect()
        };
        assert!(ids(&first).is_disjoint(&ids(&third)));
        let (a, b) = (all_spans(&first), all_spans(&third));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                y.start_time_unix_nano - x.start_time_unix_nano,
                5_000_000_000
            );
            assert_eq!(x.name, y.name, "only ids and timestamps change");
            assert_eq!(x.attributes, y.attributes);
        }
    }

    #[test]
    fn bounded_runs_send_exactly_the_requested_traces() {
        let mut opts = options(50, 64);
        opts.total_traces = Some(123);
        let pool = RequestPool::generate(&opts).unwrap();
        let requests = pool.request_count(opts.total_traces).unwrap();
        assert_eq!(requests, 3);
        let spans: usize = (0..requests)
            .map(|seq| decode(&pool.render(seq, NOW)))
            .map(|r| all_spans(&r).len())
            .sum();
        assert_eq!(spans, 1230);
        assert_eq!(pool.spans_in_request(2), 230);
    }
}
