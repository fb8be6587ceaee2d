//! Hostile input: arbitrary bytes and mutations of valid encodings must never panic, and whatever
//! is accepted must be data prost can decode, with the span count it claims.

mod common;

use bytes::Bytes;
use common::{arb_request, span_count};
use proptest::prelude::*;
use prost::Message;
use threadline_otlp::json::{request_from_json, request_to_json};
use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::{count_spans, TraceData};

/// Runs every entry point on `input` and checks the guarantees that hold for any input.
fn check_any_input(input: &[u8]) -> Result<(), TestCaseError> {
    let prost_result = ExportTraceServiceRequest::decode(input);
    let counted = count_spans(input);
    match TraceData::from_request_bytes(Bytes::copy_from_slice(input)) {
        Ok((data, rejected)) => {
            // Accepted ⇒ prost accepts the input and the stored data, with matching counts.
            let request = prost_result.map_err(|e| {
                TestCaseError::fail(format!("accepted input that prost rejects: {e}"))
            })?;
            let stored = data
                .to_request()
                .map_err(|e| TestCaseError::fail(format!("stored data that prost rejects: {e}")))?;
            prop_assert_eq!(
                data.span_count() + rejected.spans as usize,
                span_count(&request)
            );
            prop_assert_eq!(data.span_count(), span_count(&stored));
            prop_assert_eq!(counted.ok(), Some(span_count(&request)));
            // Views and rebuilding work on whatever was accepted.
            let mut visited = 0;
            data.for_each_span(|_, _, span| {
                visited += 1;
                let _ = (span.name(), span.status_code(), span.attribute("k"));
            });
            prop_assert_eq!(visited, data.span_count());
            let mut rest = data.clone();
            let front = rest.split_off_front(1);
            prop_assert_eq!(front.span_count() + rest.span_count(), data.span_count());
            prop_assert!(front.to_request().is_ok() && rest.to_request().is_ok());
            let groups = data.split_by_trace();
            prop_assert_eq!(
                groups.iter().map(|(_, g)| g.span_count()).sum::<usize>(),
                data.span_count()
            );
        }
        Err(error) => {
            prop_assert!(!error.to_string().is_empty());
        }
    }
    let _ = request_from_json(input);
    Ok(())
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, value: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len();
        if len == 0 {
            break;
        }
        match mutation {
            Mutation::Flip { at, bit } => bytes[at % len] ^= 1 << bit,
            Mutation::Set { at, value } => bytes[at % len] = *value,
            Mutation::Truncate { at } => bytes.truncate(at % len),
            Mutation::Insert { at, bytes: new } => {
                let at = at % (len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Remove { at, len: n } => {
                let at = at % len;
                let end = (at + n).min(len);
                bytes.drain(at..end);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_any_input(&input)?;
    }

    #[test]
    fn mutated_protobuf_never_panics(
        request in arb_request(),
        mutations in proptest::collection::vec(arb_mutation(), 1..4),
    ) {
        let mutated = mutate(request.encode_to_vec(), &mutations);
        check_any_input(&mutated)?;
    }

    #[test]
    fn mutated_json_never_panics(
        request in arb_request(),
        mutations in proptest::collection::vec(arb_mutation(), 1..4),
    ) {
        let mutated = mutate(request_to_json(&request), &mutations);
        if let Ok(decoded) = request_from_json(&mutated) {
            // Anything parsed re-encodes and parses to the same request.
            let again = request_from_json(&request_to_json(&decoded)).unwrap();
            prop_assert_eq!(again.encode_to_vec(), decoded.encode_to_vec());
        }
    }
}

proptest! {
    // Each case checks every prefix of an encoding, so fewer cases suffice.
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn every_truncation_is_handled(request in arb_request()) {
        let encoded = request.encode_to_vec();
        for end in 0..encoded.len() {
            check_any_input(&encoded[..end])?;
        }
    }
}

/// Deeply nested values: accepted exactly as deep as prost accepts them.
#[test]
fn nesting_limit_matches_prost() {
    use threadline_otlp::proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
    use threadline_otlp::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    let nested = |depth: usize| {
        let mut value = AnyValue {
            value: Some(any_value::Value::IntValue(1)),
        };
        for _ in 0..depth {
            value = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })),
            };
        }
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![1; 8],
                        attributes: vec![KeyValue {
                            key: "deep".to_owned(),
                            value: Some(value),
                            key_strindex: 0,
                        }],
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
        .encode_to_vec()
    };
    let mut prost_limit_seen = false;
    for depth in 40..60 {
        let encoded = nested(depth);
        let prost_ok = ExportTraceServiceRequest::decode(&encoded[..]).is_ok();
        let ours = TraceData::from_request_bytes(Bytes::from(encoded));
        assert_eq!(ours.is_ok(), prost_ok, "depth {depth}: {ours:?}");
        if !prost_ok {
            prost_limit_seen = true;
            assert!(ours
                .unwrap_err()
                .to_string()
                .contains("nested more than 100 levels"));
        }
    }
    assert!(prost_limit_seen, "the range covers prost's limit");
}
