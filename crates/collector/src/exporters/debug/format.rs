//! Text renderings of trace data for the `debug` exporter, in the layout of upstream's `otlptext`
//! (detailed) and `normal` marshalers.

use std::fmt::Write;

use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::proto::tonic::common::v1::any_value::Value;
use threadline_otlp::proto::tonic::common::v1::{AnyValue, KeyValue};
use threadline_otlp::proto::tonic::trace::v1::span::SpanKind;
use threadline_otlp::proto::tonic::trace::v1::status::StatusCode;

/// `verbosity: normal`: one line per span, `name trace_id span_id [key=value ...]`.
pub fn normal(request: &ExportTraceServiceRequest) -> String {
    let mut out = String::new();
    for resource_spans in &request.resource_spans {
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                let _ = write!(
                    out,
                    "{} {} {}",
                    span.name,
                    hex::encode(&span.trace_id),
                    hex::encode(&span.span_id)
                );
                for attribute in &span.attributes {
                    let _ = write!(out, " {}={}", attribute.key, plain_value(&attribute.value));
                }
                out.push('\n');
            }
        }
    }
    out
}

/// `verbosity: detailed`: every field of every resource, scope, span, event and link.
pub fn detailed(request: &ExportTraceServiceRequest) -> String {
    let mut out = String::new();
    for (r, resource_spans) in request.resource_spans.iter().enumerate() {
        let _ = writeln!(out, "ResourceSpans #{r}");
        let _ = writeln!(out, "Resource SchemaURL: {}", resource_spans.schema_url);
        if let Some(resource) = &resource_spans.resource {
            write_attributes(&mut out, "Resource attributes:", &resource.attributes, "");
        }
        for (s, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            let _ = writeln!(out, "ScopeSpans #{s}");
            let _ = writeln!(out, "ScopeSpans SchemaURL: {}", scope_spans.schema_url);
            match &scope_spans.scope {
                Some(scope) => {
                    let _ = writeln!(out, "InstrumentationScope {} {}", scope.name, scope.version);
                    write_attributes(
                        &mut out,
                        "InstrumentationScope attributes:",
                        &scope.attributes,
                        "",
                    );
                }
                None => {
                    let _ = writeln!(out, "InstrumentationScope  ");
                }
            }
            for (i, span) in scope_spans.spans.iter().enumerate() {
                let _ = writeln!(out, "Span #{i}");
                let _ = writeln!(out, "    Trace ID       : {}", hex::encode(&span.trace_id));
                let _ = writeln!(
                    out,
                    "    Parent ID      : {}",
                    hex::encode(&span.parent_span_id)
                );
                let _ = writeln!(out, "    ID             : {}", hex::encode(&span.span_id));
                let _ = writeln!(out, "    Name           : {}", span.name);
                let _ = writeln!(out, "    Kind           : {}", span_kind(span.kind));
                if !span.trace_state.is_empty() {
                    let _ = writeln!(out, "    TraceState     : {}", span.trace_state);
                }
                let _ = writeln!(
                    out,
                    "    Start time     : {}",
                    timestamp(span.start_time_unix_nano)
                );
                let _ = writeln!(
                    out,
                    "    End time       : {}",
                    timestamp(span.end_time_unix_nano)
                );
                let (code, message) = span
                    .status
                    .as_ref()
                    .map_or((0, ""), |s| (s.code, s.message.as_str()));
                let _ = writeln!(out, "    Status code    : {}", status_code(code));
                let _ = writeln!(out, "    Status message : {message}");
                if span.dropped_attributes_count > 0 {
                    let _ = writeln!(
                        out,
                        "    DroppedAttributesCount: {}",
                        span.dropped_attributes_count
                    );
                }
                write_attributes(&mut out, "Attributes:", &span.attributes, "");
                if !span.events.is_empty() {
                    out.push_str("Events:\n");
                }
                for (e, event) in span.events.iter().enumerate() {
                    let _ = writeln!(out, "SpanEvent #{e}");
                    let _ = writeln!(out, "     -> Name: {}", event.name);
                    let _ = writeln!(
                        out,
                        "     -> Timestamp: {}",
                        timestamp(event.time_unix_nano)
                    );
                    let _ = writeln!(
                        out,
                        "     -> DroppedAttributesCount: {}",
                        event.dropped_attributes_count
                    );
                    write_attributes(&mut out, "     -> Attributes::", &event.attributes, "     ");
                }
                if span.dropped_events_count > 0 {
                    let _ = writeln!(out, "    DroppedEventsCount: {}", span.dropped_events_count);
                }
                if !span.links.is_empty() {
                    out.push_str("Links:\n");
                }
                for (l, link) in span.links.iter().enumerate() {
                    let _ = writeln!(out, "SpanLink #{l}");
                    let _ = writeln!(out, "     -> Trace ID: {}", hex::encode(&link.trace_id));
                    let _ = writeln!(out, "     -> ID: {}", hex::encode(&link.span_id));
                    let _ = writeln!(out, "     -> TraceState: {}", link.trace_state);
                    let _ = writeln!(
                        out,
                        "     -> DroppedAttributesCount: {}",
                        link.dropped_attributes_count
                    );
                    write_attributes(&mut out, "     -> Attributes::", &link.attributes, "     ");
                }
                if span.dropped_links_count > 0 {
                    let _ = writeln!(out, "    DroppedLinksCount: {}", span.dropped_links_count);
                }
            }
        }
    }
    out
}

fn write_attributes(out: &mut String, title: &str, attributes: &[KeyValue], indent: &str) {
    if attributes.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title}");
    for attribute in attributes {
        let _ = writeln!(
            out,
            "{indent}     -> {}: {}",
            attribute.key,
            typed_value(&attribute.value)
        );
    }
}

/// `Str(text)`, `Int(1)`, `Map({"k":"v"})`... as upstream prints attribute values.
fn typed_value(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        None => "Empty()".into(),
        Some(Value::StringValue(s)) => format!("Str({s})"),
        Some(Value::BoolValue(b)) => format!("Bool({b})"),
        Some(Value::IntValue(i)) => format!("Int({i})"),
        Some(Value::DoubleValue(d)) => format!("Double({})", double(*d)),
        Some(Value::BytesValue(_)) => format!("Bytes({})", plain_value(value)),
        Some(Value::ArrayValue(_)) => format!("Slice({})", plain_value(value)),
        Some(Value::KvlistValue(_)) => format!("Map({})", plain_value(value)),
        Some(Value::StringValueStrindex(i)) => format!("Strindex({i})"),
    }
}

/// The value as text: strings bare, bytes in base64, arrays and maps as JSON.
fn plain_value(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        _ => match json_value(value) {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        },
    }
}

fn json_value(value: &Option<AnyValue>) -> serde_json::Value {
    use base64::Engine;
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        None => serde_json::Value::Null,
        Some(Value::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Value::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Value::IntValue(i)) => serde_json::Value::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Value::from(*d),
        Some(Value::BytesValue(b)) => {
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(Value::ArrayValue(array)) => serde_json::Value::Array(
            array
                .values
                .iter()
                .map(|v| json_value(&Some(v.clone())))
                .collect(),
        ),
        Some(Value::KvlistValue(list)) => serde_json::Value::Object(
            list.values
                .iter()
                .map(|kv| (kv.key.clone(), json_value(&kv.value)))
                .collect(),
        ),
        Some(Value::StringValueStrindex(i)) => serde_json::Value::from(*i),
    }
}

/// Go's `strconv.FormatFloat(d, 'f', -1, 64)`: shortest text, no exponent.
fn double(d: f64) -> String {
    if d.is_finite() {
        format!("{d}")
    } else if d.is_nan() {
        "NaN".into()
    } else if d > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

fn span_kind(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Unspecified) | Err(_) => "Unspecified",
        Ok(SpanKind::Internal) => "Internal",
        Ok(SpanKind::Server) => "Server",
        Ok(SpanKind::Client) => "Client",
        Ok(SpanKind::Producer) => "Producer",
        Ok(SpanKind::Consumer) => "Consumer",
    }
}

fn status_code(code: i32) -> &'static str {
    match StatusCode::try_from(code) {
        Ok(StatusCode::Unset) | Err(_) => "Unset",
        Ok(StatusCode::Ok) => "Ok",
        Ok(StatusCode::Error) => "Error",
    }
}

/// Nanoseconds since the Unix epoch as Go prints a UTC `time.Time`:
/// `2020-02-11 20:26:12.000000321 +0000 UTC` (fraction without trailing zeros, omitted when zero).
pub fn timestamp(unix_nanos: u64) -> String {
    let seconds = unix_nanos / 1_000_000_000;
    let nanos = unix_nanos % 1_000_000_000;
    let days = (seconds / 86_400) as i64;
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push_str(" +0000 UTC");
    text
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
