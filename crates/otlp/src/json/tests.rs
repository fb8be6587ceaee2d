use serde_json::{json, Value};

use super::*;
use crate::proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use crate::proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue, KeyValueList};
use crate::proto::tonic::trace::v1::Span;

/// `examples/trace.json` from opentelemetry-proto (Apache-2.0), the spec's reference payload.
const SPEC_EXAMPLE: &str = include_str!("testdata/spec_trace.json");

fn parse(value: Value) -> ExportTraceServiceRequest {
    request_from_json(value.to_string().as_bytes()).unwrap()
}

fn first_span(request: &ExportTraceServiceRequest) -> &Span {
    &request.resource_spans[0].scope_spans[0].spans[0]
}

/// A request with one span built from `span` (a JSON object).
fn with_span(span: Value) -> Value {
    json!({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
}

fn invalid(body: Value) -> (String, String) {
    match request_from_json(body.to_string().as_bytes()) {
        Err(JsonError::Invalid { path, problem }) => (path, problem),
        other => panic!("expected an invalid-field error, got {other:?}"),
    }
}

fn string_value(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    })
}

#[test]
fn parses_the_spec_example() {
    let request = request_from_json(SPEC_EXAMPLE.as_bytes()).unwrap();
    let resource_spans = &request.resource_spans[0];
    let resource = resource_spans.resource.as_ref().unwrap();
    assert_eq!(resource.attributes[0].key, "service.name");
    assert_eq!(resource.attributes[0].value, string_value("my.service"));
    let scope_spans = &resource_spans.scope_spans[0];
    let scope = scope_spans.scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("my.library", "1.0.0")
    );
    assert_eq!(scope.attributes[0].key, "my.scope.attribute");
    let span = &scope_spans.spans[0];
    assert_eq!(
        span.trace_id,
        hex::decode("5b8efff798038103d269b633813fc60c").unwrap()
    );
    assert_eq!(span.span_id, hex::decode("eee19b7ec3c1b174").unwrap());
    assert_eq!(
        span.parent_span_id,
        hex::decode("eee19b7ec3c1b173").unwrap()
    );
    assert_eq!(span.name, "I'm a server span");
    assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
    assert_eq!(span.kind, 2);
    assert_eq!(span.attributes[0].key, "my.span.attr");
    assert_eq!(span.attributes[0].value, string_value("some value"));
}

#[test]
fn writes_the_spec_example_back_in_spec_shape() {
    let request = request_from_json(SPEC_EXAMPLE.as_bytes()).unwrap();
    let written: Value = serde_json::from_slice(&request_to_json(&request)).unwrap();
    // Same document, with ids in lowercase hex (the spec allows either case).
    let mut expected: Value = serde_json::from_str(SPEC_EXAMPLE).unwrap();
    let span = &mut expected["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    for id in ["traceId", "spanId", "parentSpanId"] {
        span[id] = Value::String(span[id].as_str().unwrap().to_lowercase());
    }
    assert_eq!(written, expected);
}

#[test]
fn writes_64_bit_integers_as_strings_and_enums_as_integers() {
    let request = parse(with_span(json!({
        "traceId": "0102030405060708090a0b0c0d0e0f10",
        "spanId": "0102030405060708",
        "kind": 3,
        "startTimeUnixNano": "18446744073709551615",
        "attributes": [{"key": "n", "value": {"intValue": "-9223372036854775808"}}],
        "status": {"code": 2, "message": "failed"},
        "events": [{"timeUnixNano": "5", "name": "e"}]
    })));
    let written: Value = serde_json::from_slice(&request_to_json(&request)).unwrap();
    let span = &written["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["startTimeUnixNano"], json!("18446744073709551615"));
    assert_eq!(span["kind"], json!(3));
    assert_eq!(span["status"], json!({"code": 2, "message": "failed"}));
    assert_eq!(
        span["attributes"][0]["value"],
        json!({"intValue": "-9223372036854775808"})
    );
    assert_eq!(span["events"][0], json!({"timeUnixNano": "5", "name": "e"}));
    // Defaults are omitted.
    assert!(span.get("endTimeUnixNano").is_none());
    assert!(span.get("parentSpanId").is_none());
    assert!(span.get("droppedAttributesCount").is_none());
}

#[test]
fn accepts_enum_names_numbers_as_strings_and_snake_case() {
    let request = parse(json!({
        "resource_spans": [{"scope_spans": [{"spans": [{
            "trace_id": "5B8EFFF798038103D269B633813FC60C",
            "span_id": "eee19b7ec3c1b174",
            "kind": "SPAN_KIND_CLIENT",
            "start_time_unix_nano": 1544712660000000000u64,
            "dropped_attributes_count": "4",
            "flags": 257,
            "status": {"code": "STATUS_CODE_ERROR"}
        }]}]}]
    }));
    let span = first_span(&request);
    assert_eq!(span.kind, 3);
    assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(span.dropped_attributes_count, 4);
    assert_eq!(span.flags, 257);
    assert_eq!(span.status.as_ref().unwrap().code, 2);
    assert_eq!(span.trace_id[0], 0x5b);
}

#[test]
fn ignores_unknown_fields_and_nulls() {
    let request = parse(json!({
        "resourceSpans": [{
            "futureField": {"nested": [1, 2, 3]},
            "resource": null,
            "scopeSpans": [{"spans": [{
                "traceId": "0102030405060708090a0b0c0d0e0f10",
                "spanId": "0102030405060708",
                "name": null,
                "unknown": "x",
                "attributes": [{"key": "k", "value": {"newValueKind": 1}}]
            }]}]
        }]
    }));
    let span = first_span(&request);
    assert_eq!(span.name, "");
    assert_eq!(request.resource_spans[0].resource, None);
    assert_eq!(span.attributes[0].value, Some(AnyValue { value: None }));
}

#[test]
fn empty_ids_are_allowed() {
    let request = parse(with_span(
        json!({"traceId": "", "spanId": "", "parentSpanId": ""}),
    ));
    let span = first_span(&request);
    assert!(span.trace_id.is_empty() && span.span_id.is_empty() && span.parent_span_id.is_empty());
}

#[test]
fn wrong_ids_name_the_field() {
    let (path, problem) = invalid(with_span(json!({"traceId": "0102"})));
    assert_eq!(path, "resourceSpans[0].scopeSpans[0].spans[0].traceId");
    assert_eq!(
        problem,
        "expected 16 bytes (32 hex digits), got 4 hex digits"
    );

    let (path, problem) = invalid(with_span(json!({
        "traceId": "0102030405060708090a0b0c0d0e0f10",
        "spanId": "zz02030405060708"
    })));
    assert_eq!(path, "resourceSpans[0].scopeSpans[0].spans[0].spanId");
    assert!(problem.starts_with("invalid hex id"), "{problem}");

    let (path, _) = invalid(with_span(json!({
        "links": [{}, {"traceId": "0102030405060708090a0b0c0d0e0f"}]
    })));
    assert_eq!(
        path,
        "resourceSpans[0].scopeSpans[0].spans[0].links[1].traceId"
    );
}

#[test]
fn wrong_types_name_the_field() {
    let (path, problem) = invalid(with_span(json!({"kind": "SPAN_KIND_SIDEWAYS"})));
    assert_eq!(path, "resourceSpans[0].scopeSpans[0].spans[0].kind");
    assert_eq!(problem, "unknown enum value \"SPAN_KIND_SIDEWAYS\"");

    let (path, problem) = invalid(with_span(json!({"startTimeUnixNano": -1})));
    assert_eq!(
        path,
        "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano"
    );
    assert_eq!(problem, "integer -1 is out of range");

    let (path, problem) = invalid(json!({"resourceSpans": {"not": "a list"}}));
    assert_eq!(path, "resourceSpans");
    assert_eq!(problem, "expected an array, got an object");

    let (path, _) = invalid(with_span(json!({
        "attributes": [{"key": "a", "value": {"arrayValue": {"values": [{"intValue": "x"}]}}}]
    })));
    assert_eq!(
        path,
        "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.arrayValue.values[0].intValue"
    );

    let (path, problem) = invalid(json!([1, 2]));
    assert_eq!(path, "request");
    assert_eq!(problem, "expected an object, got an array");
}

#[test]
fn syntax_errors_are_reported() {
    let error = request_from_json(b"{\"resourceSpans\": [").unwrap_err();
    assert!(matches!(error, JsonError::Syntax(_)));
    assert!(error.to_string().starts_with("invalid JSON"));
}

#[test]
fn all_value_kinds_round_trip() {
    use any_value::Value as V;
    let values = vec![
        V::StringValue(String::new()),
        V::BoolValue(false),
        V::IntValue(i64::MIN),
        V::DoubleValue(1.5),
        V::DoubleValue(f64::INFINITY),
        V::DoubleValue(f64::NEG_INFINITY),
        V::BytesValue(vec![0, 255, 10]),
        V::ArrayValue(ArrayValue { values: vec![] }),
        V::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(V::BoolValue(true)),
            }],
        }),
        V::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "inner".to_owned(),
                value: string_value("x"),
                key_strindex: 0,
            }],
        }),
    ];
    let mut request = parse(with_span(json!({})));
    request.resource_spans[0].scope_spans[0].spans[0].attributes = values
        .into_iter()
        .enumerate()
        .map(|(i, value)| KeyValue {
            key: format!("k{i}"),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        })
        .collect();
    let written = request_to_json(&request);
    assert_eq!(request_from_json(&written).unwrap(), request);

    let written: Value = serde_json::from_slice(&written).unwrap();
    let attributes = &written["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"];
    assert_eq!(attributes[0]["value"], json!({"stringValue": ""}));
    assert_eq!(attributes[1]["value"], json!({"boolValue": false}));
    assert_eq!(attributes[4]["value"], json!({"doubleValue": "Infinity"}));
    assert_eq!(attributes[6]["value"], json!({"bytesValue": "AP8K"}));
    assert_eq!(
        attributes[7]["value"],
        json!({"arrayValue": {"values": []}})
    );
    assert_eq!(
        attributes[9]["value"],
        json!({"kvlistValue": {"values": [{"key": "inner", "value": {"stringValue": "x"}}]}})
    );
}

#[test]
fn nan_and_lenient_base64_are_accepted() {
    let request = parse(with_span(json!({"attributes": [
        {"key": "d", "value": {"doubleValue": "NaN"}},
        {"key": "b", "value": {"bytesValue": "AP8K"}},
        {"key": "u", "value": {"bytesValue": "_-8"}},
        {"key": "i", "value": {"intValue": 42}}
    ]})));
    let attributes = &first_span(&request).attributes;
    let value = |i: usize| attributes[i].value.clone().unwrap().value.unwrap();
    assert!(matches!(value(0), any_value::Value::DoubleValue(d) if d.is_nan()));
    assert_eq!(value(1), any_value::Value::BytesValue(vec![0, 255, 10]));
    assert_eq!(value(2), any_value::Value::BytesValue(vec![0xff, 0xef]));
    assert_eq!(value(3), any_value::Value::IntValue(42));
}

#[test]
fn response_json_shapes() {
    let empty = ExportTraceServiceResponse::default();
    assert_eq!(response_to_json(&empty), b"{}");
    let zero = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess::default()),
    };
    assert_eq!(response_to_json(&zero), b"{}");
    let partial = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 3,
            error_message: "3 spans rejected".to_owned(),
        }),
    };
    let written = response_to_json(&partial);
    assert_eq!(
        serde_json::from_slice::<Value>(&written).unwrap(),
        json!({"partialSuccess": {"rejectedSpans": "3", "errorMessage": "3 spans rejected"}})
    );
    assert_eq!(response_from_json(&written).unwrap(), partial);
    assert_eq!(response_from_json(b"{}").unwrap(), empty);
}
