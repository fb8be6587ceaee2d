use super::*;
use crate::proto::tonic::trace::v1::span::Link;
use crate::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use crate::wire::{encode_length_delimited, encode_tag, encode_varint, WireError, WireType};
use prost::Message;

fn valid_span(name: &str) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.to_owned(),
        ..Span::default()
    }
}

/// A request with `scopes` scopes of `spans` valid spans in one resource.
fn request(scopes: usize, spans: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: (0..scopes)
                .map(|_| ScopeSpans {
                    spans: (0..spans).map(|i| valid_span(&format!("s{i}"))).collect(),
                    ..ScopeSpans::default()
                })
                .collect(),
            ..ResourceSpans::default()
        }],
    }
}

/// Wraps encoded span messages into a request with one resource and one scope.
fn request_with_raw_spans(spans: &[Vec<u8>]) -> Bytes {
    let mut scope = Vec::new();
    for span in spans {
        encode_length_delimited(2, span, &mut scope);
    }
    let mut resource = Vec::new();
    encode_length_delimited(2, &scope, &mut resource);
    let mut request = Vec::new();
    encode_length_delimited(1, &resource, &mut request);
    Bytes::from(request)
}

fn decode_error(buf: Bytes) -> String {
    TraceData::from_request_bytes(buf).unwrap_err().to_string()
}

#[test]
fn wrong_length_trace_id_names_the_span() {
    let mut request = request(2, 4);
    request.resource_spans[0].scope_spans[1].spans[3].trace_id = vec![7; 5];
    let error = TraceData::from_request_bytes(Bytes::from(request.encode_to_vec())).unwrap_err();
    assert_eq!(
        error.to_string(),
        "resource_spans[0].scope_spans[1].spans[3].trace_id: expected 16 bytes, got 5"
    );
    assert_eq!(
        error.path(),
        Some("resource_spans[0].scope_spans[1].spans[3].trace_id")
    );
    assert_eq!(
        count_spans(&request.encode_to_vec()),
        Ok(8),
        "count does not validate"
    );
}

#[test]
fn wrong_length_span_parent_and_link_ids() {
    let mut request = request(1, 2);
    request.resource_spans[0].scope_spans[0].spans[1].span_id = vec![1; 16];
    assert_eq!(
        decode_error(Bytes::from(request.encode_to_vec())),
        "resource_spans[0].scope_spans[0].spans[1].span_id: expected 8 bytes, got 16"
    );

    let mut request = self::request(1, 1);
    request.resource_spans[0].scope_spans[0].spans[0].parent_span_id = vec![1; 7];
    assert_eq!(
        decode_error(Bytes::from(request.encode_to_vec())),
        "resource_spans[0].scope_spans[0].spans[0].parent_span_id: expected 8 bytes, got 7"
    );

    let mut request = self::request(1, 1);
    request.resource_spans[0].scope_spans[0].spans[0].links = vec![
        Link {
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            ..Link::default()
        },
        Link {
            trace_id: vec![1; 16],
            span_id: vec![1; 3],
            ..Link::default()
        },
    ];
    assert_eq!(
        decode_error(Bytes::from(request.encode_to_vec())),
        "resource_spans[0].scope_spans[0].spans[0].links[1].span_id: expected 8 bytes, got 3"
    );
}

#[test]
fn wrong_wire_type_names_the_field() {
    let mut span = valid_span("ok").encode_to_vec();
    // `name` (field 5) as a varint.
    encode_tag(5, WireType::Varint, &mut span);
    encode_varint(1, &mut span);
    let error = TraceData::from_request_bytes(request_with_raw_spans(&[span])).unwrap_err();
    assert_eq!(
        error,
        DecodeError::WrongWireType {
            path: "resource_spans[0].scope_spans[0].spans[0].name".to_owned(),
            expected: WireType::LengthDelimited,
            found: WireType::Varint,
        }
    );
    assert_eq!(
        error.to_string(),
        "resource_spans[0].scope_spans[0].spans[0].name: wrong wire type varint, expected length-delimited"
    );
}

#[test]
fn invalid_utf8_names_the_attribute() {
    let good = KeyValueBytes::string("good", "v");
    let mut bad_key = Vec::new();
    encode_length_delimited(1, &[b'k', 0xff], &mut bad_key);
    let mut span = valid_span("s").encode_to_vec();
    encode_length_delimited(9, &good.0, &mut span);
    encode_length_delimited(9, &bad_key, &mut span);
    assert_eq!(
        decode_error(request_with_raw_spans(&[
            valid_span("first").encode_to_vec(),
            span
        ])),
        "resource_spans[0].scope_spans[0].spans[1].attributes[1].key: string is not valid UTF-8"
    );
}

struct KeyValueBytes(Vec<u8>);

impl KeyValueBytes {
    fn string(key: &str, value: &str) -> Self {
        let mut any_value = Vec::new();
        encode_length_delimited(1, value.as_bytes(), &mut any_value);
        let mut key_value = Vec::new();
        encode_length_delimited(1, key.as_bytes(), &mut key_value);
        encode_length_delimited(2, &any_value, &mut key_value);
        KeyValueBytes(key_value)
    }
}

#[test]
fn truncation_is_reported_where_it_happens() {
    let encoded = request(1, 2).encode_to_vec();
    let error = decode_error(Bytes::copy_from_slice(&encoded[..encoded.len() - 1]));
    assert_eq!(
        error,
        "request: truncated message: field at offset 0 runs past the end"
    );

    // A span whose own field overruns the span, inside consistent outer framing.
    let mut span = valid_span("s").encode_to_vec();
    span.extend_from_slice(&[0x2a, 0x0a, b'x']); // name: 10 bytes announced, 1 present
    let error = TraceData::from_request_bytes(request_with_raw_spans(&[span])).unwrap_err();
    assert!(matches!(
        &error,
        DecodeError::Wire { path, error: WireError::Truncated { .. } }
            if path == "resource_spans[0].scope_spans[0].spans[0]"
    ));
}

#[test]
fn envelope_fields_with_wrong_wire_type() {
    // resource_spans as a varint.
    let error = TraceData::from_request_bytes(Bytes::from_static(&[0x08, 0x01])).unwrap_err();
    assert_eq!(
        error.to_string(),
        "resource_spans[0]: wrong wire type varint, expected length-delimited"
    );
    assert_eq!(count_spans(&[0x08, 0x01]).unwrap_err(), error);
    // spans as fixed32 inside a scope.
    let mut scope = Vec::new();
    encode_tag(2, WireType::Fixed32, &mut scope);
    scope.extend_from_slice(&[0; 4]);
    let mut resource = Vec::new();
    encode_length_delimited(2, &scope, &mut resource);
    let mut request = Vec::new();
    encode_length_delimited(1, &resource, &mut request);
    assert_eq!(
        count_spans(&request).unwrap_err().to_string(),
        "resource_spans[0].scope_spans[0].spans[0]: wrong wire type fixed32, expected length-delimited"
    );
}

#[test]
fn unknown_top_level_fields_are_dropped() {
    let original = request(1, 2).encode_to_vec();
    let mut with_extra = Vec::new();
    encode_tag(7, WireType::Varint, &mut with_extra);
    encode_varint(3, &mut with_extra);
    with_extra.extend_from_slice(&original);
    encode_length_delimited(9, b"ignored", &mut with_extra);
    let (data, rejected) = TraceData::from_request_bytes(Bytes::from(with_extra)).unwrap();
    assert!(rejected.is_empty());
    assert_eq!(data.as_bytes().as_ref(), &original[..]);
    assert_eq!(data.span_count(), 2);
}

#[test]
fn views_read_defaults_for_missing_fields() {
    let span = SpanView::new(&[]);
    assert_eq!(span.trace_id(), [0; 16]);
    assert_eq!(span.span_id(), [0; 8]);
    assert_eq!(span.parent_span_id(), None);
    assert_eq!(span.name(), "");
    assert_eq!(span.kind(), 0);
    assert_eq!(span.status_code(), 0);
    assert_eq!(span.status_message(), "");
    assert_eq!(span.attribute("x"), None);
    let resource = ResourceView::new(&[]);
    assert_eq!(resource.raw(), &[] as &[u8]);
    assert_eq!(resource.attribute("service.name"), None);
    let scope = ScopeView::new(&[]);
    assert_eq!((scope.name(), scope.version()), ("", ""));
}

#[test]
fn span_view_reads_every_accessor() {
    use crate::proto::tonic::trace::v1::Status;
    let span = Span {
        trace_id: (1..=16).collect(),
        span_id: (1..=8).collect(),
        parent_span_id: vec![9; 8],
        trace_state: "a=b".to_owned(),
        name: "op".to_owned(),
        kind: 3,
        start_time_unix_nano: 10,
        end_time_unix_nano: 20,
        flags: 0x101,
        status: Some(Status {
            message: "boom".to_owned(),
            code: 2,
        }),
        ..Span::default()
    };
    let encoded = span.encode_to_vec();
    let view = SpanView::new(&encoded);
    assert_eq!(view.trace_id().to_vec(), span.trace_id);
    assert_eq!(view.span_id().to_vec(), span.span_id);
    assert_eq!(view.parent_span_id(), Some([9; 8]));
    assert_eq!(view.trace_state(), "a=b");
    assert_eq!(view.name(), "op");
    assert_eq!(view.kind(), 3);
    assert_eq!(view.start_time_unix_nano(), 10);
    assert_eq!(view.end_time_unix_nano(), 20);
    assert_eq!(view.flags(), 0x101);
    assert_eq!(view.status_code(), 2);
    assert_eq!(view.status_message(), "boom");
    assert_eq!(view.raw(), &encoded[..]);
}

#[test]
fn rejected_response_shape() {
    let nothing = Rejected::default();
    assert!(nothing.is_empty());
    assert_eq!(nothing.to_response().partial_success, None);
    let some = Rejected {
        spans: 2,
        message: "bad ids".to_owned(),
    };
    let partial = some.to_response().partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert_eq!(partial.error_message, "bad ids");
}
