//! OTLP/JSON round trips on random requests, cross-checked against opentelemetry-proto's serde
//! support (an independent implementation of the same mapping).

mod common;

use common::arb_request;
use proptest::prelude::*;
use threadline_otlp::json::{request_from_json, request_to_json};
use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::proto::tonic::common::v1::{any_value, AnyValue};

/// opentelemetry-proto's serde reads doubles only as JSON numbers, so replace the non-finite ones
/// (which JSON writes as strings) before comparing with it.
fn finite_doubles_only(request: &mut ExportTraceServiceRequest) {
    fn fix(value: &mut AnyValue) {
        match &mut value.value {
            Some(any_value::Value::DoubleValue(d)) if !d.is_finite() => *d = 0.0,
            Some(any_value::Value::ArrayValue(array)) => array.values.iter_mut().for_each(fix),
            Some(any_value::Value::KvlistValue(list)) => list
                .values
                .iter_mut()
                .filter_map(|kv| kv.value.as_mut())
                .for_each(fix),
            _ => {}
        }
    }
    let resources = request.resource_spans.iter_mut();
    for span in resources
        .flat_map(|r| r.scope_spans.iter_mut())
        .flat_map(|s| s.spans.iter_mut())
    {
        span.attributes
            .iter_mut()
            .filter_map(|kv| kv.value.as_mut())
            .for_each(fix);
        for event in &mut span.events {
            event
                .attributes
                .iter_mut()
                .filter_map(|kv| kv.value.as_mut())
                .for_each(fix);
        }
    }
    for resource in request
        .resource_spans
        .iter_mut()
        .filter_map(|r| r.resource.as_mut())
    {
        resource
            .attributes
            .iter_mut()
            .filter_map(|kv| kv.value.as_mut())
            .for_each(fix);
    }
    for scope in request
        .resource_spans
        .iter_mut()
        .flat_map(|r| r.scope_spans.iter_mut())
        .filter_map(|s| s.scope.as_mut())
    {
        scope
            .attributes
            .iter_mut()
            .filter_map(|kv| kv.value.as_mut())
            .for_each(fix);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn json_round_trips(request in arb_request()) {
        let written = request_to_json(&request);
        prop_assert_eq!(request_from_json(&written).unwrap(), request);
    }

    #[test]
    fn opentelemetry_proto_serde_reads_what_we_write(mut request in arb_request()) {
        finite_doubles_only(&mut request);
        let theirs: ExportTraceServiceRequest =
            serde_json::from_slice(&request_to_json(&request)).unwrap();
        prop_assert_eq!(theirs, request);
    }

    #[test]
    fn we_read_what_opentelemetry_proto_serde_writes(mut request in arb_request()) {
        finite_doubles_only(&mut request);
        let written = serde_json::to_vec(&request).unwrap();
        prop_assert_eq!(request_from_json(&written).unwrap(), request);
    }
}
