//! From stored OTLP bytes to what search needs: a per-trace summary (kept in block indexes) and
//! the TraceQL span model (built only for traces a search may match).

use std::collections::BTreeSet;

use threadline_otlp::{AnyValueView, TraceData};
use threadline_traceql::model::{Span, SpanKind, StatusCode, Trace, Value};

/// What a block index keeps per trace, so that most searches never open its spans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceSummary {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub root_service: String,
    pub root_name: String,
    pub has_error: bool,
    pub spans: u32,
    pub services: BTreeSet<String>,
}

impl TraceSummary {
    /// Folds `data` (spans of one trace) into the summary.
    pub fn add(&mut self, data: &TraceData) {
        data.for_each_span(|resource, _scope, span| {
            let e = span.essentials();
            if self.spans == 0 || e.start_time_unix_nano < self.start_unix_nano {
                self.start_unix_nano = e.start_time_unix_nano;
            }
            self.end_unix_nano = self.end_unix_nano.max(e.end_time_unix_nano);
            self.spans += 1;
            self.has_error |= e.status_code == 2;
            let service = resource
                .attribute("service.name")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            if !self.services.contains(service) {
                self.services.insert(service.to_string());
            }
            if !e.has_parent {
                self.root_service = service.to_string();
                self.root_name = span.name().to_string();
            }
        });
    }

    pub fn of(data: &TraceData) -> TraceSummary {
        let mut summary = TraceSummary::default();
        summary.add(data);
        summary
    }

    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }
}

fn value(view: AnyValueView<'_>) -> Option<Value> {
    Some(match view {
        AnyValueView::String(s) => Value::Str(s.to_string()),
        AnyValueView::Bool(b) => Value::Bool(b),
        AnyValueView::Int(i) => Value::Int(i),
        AnyValueView::Double(d) => Value::Float(d),
        AnyValueView::Bytes(b) => Value::Str(hex::encode(b)),
        AnyValueView::Raw(_) | AnyValueView::Empty => return None,
    })
}

fn kind(number: i32) -> SpanKind {
    match number {
        1 => SpanKind::Internal,
        2 => SpanKind::Server,
        3 => SpanKind::Client,
        4 => SpanKind::Producer,
        5 => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }
}

/// The spans of `data` in TraceQL's model.
pub fn to_model(trace_id: [u8; 16], data: &TraceData) -> Trace {
    let mut spans = Vec::with_capacity(data.span_count());
    data.for_each_span(|resource, _scope, span| {
        spans.push(Span {
            trace_id,
            span_id: span.span_id(),
            parent_span_id: span.parent_span_id(),
            name: span.name().to_string(),
            kind: kind(span.kind()),
            status: match span.status_code() {
                1 => StatusCode::Ok,
                2 => StatusCode::Error,
                _ => StatusCode::Unset,
            },
            status_message: span.status_message().to_string(),
            start_unix_nano: span.start_time_unix_nano(),
            end_unix_nano: span.end_time_unix_nano(),
            attributes: span
                .attributes()
                .filter_map(|(k, v)| Some((k.to_string(), value(v)?)))
                .collect(),
            resource_attributes: resource
                .attributes()
                .filter_map(|(k, v)| Some((k.to_string(), value(v)?)))
                .collect(),
        });
    });
    Trace { trace_id, spans }
}
