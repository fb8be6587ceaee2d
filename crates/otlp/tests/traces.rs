//! TraceData against prost: random requests are encoded with prost, walked, split, filtered and
//! concatenated, and the results decoded with prost again.

mod common;

use bytes::Bytes;
use common::{
    arb_request, arb_valid_request, flatten, has_valid_ids, realistic_request, span_count, FlatSpan,
};
use proptest::prelude::*;
use prost::Message;
use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use threadline_otlp::{count_spans, AnyValueView, TraceData, TraceDataBuilder};

fn data_of(request: &ExportTraceServiceRequest) -> TraceData {
    let (data, rejected) =
        TraceData::from_request_bytes(Bytes::from(request.encode_to_vec())).unwrap();
    assert_eq!(rejected.spans, 0);
    data
}

fn flat_of(data: &TraceData) -> Vec<FlatSpan> {
    flatten(&data.to_request().unwrap())
}

/// What a view reports, next to what prost decoded.
fn check_views_match(data: &TraceData, expected: &[FlatSpan]) {
    let mut index = 0;
    data.for_each_span(|resource, scope, span| {
        let (exp_resource, exp_resource_schema, exp_scope, exp_scope_schema, exp_span) =
            &expected[index];
        index += 1;
        assert_eq!(span.trace_id().to_vec(), pad(&exp_span.trace_id, 16));
        assert_eq!(span.span_id().to_vec(), pad(&exp_span.span_id, 8));
        let parent = span.parent_span_id().map(|p| p.to_vec());
        let exp_parent = Some(exp_span.parent_span_id.clone())
            .filter(|p| p.len() == 8 && p.iter().any(|&b| b != 0));
        assert_eq!(parent, exp_parent);
        assert_eq!(span.name(), exp_span.name);
        assert_eq!(span.trace_state(), exp_span.trace_state);
        assert_eq!(span.kind(), exp_span.kind);
        assert_eq!(span.start_time_unix_nano(), exp_span.start_time_unix_nano);
        assert_eq!(span.end_time_unix_nano(), exp_span.end_time_unix_nano);
        assert_eq!(span.flags(), exp_span.flags);
        let status = exp_span.status.clone().unwrap_or_default();
        assert_eq!(span.status_code(), status.code);
        assert_eq!(span.status_message(), status.message);
        assert_eq!(span.attributes().count(), exp_span.attributes.len());
        for attribute in &exp_span.attributes {
            let first = exp_span
                .attributes
                .iter()
                .find(|a| a.key == attribute.key)
                .unwrap();
            assert_value_eq(span.attribute(&attribute.key), first.value.as_ref());
        }
        assert_eq!(resource.schema_url(), exp_resource_schema);
        let resource_attributes = exp_resource
            .as_ref()
            .map(|r| r.attributes.clone())
            .unwrap_or_default();
        assert_eq!(resource.attributes().count(), resource_attributes.len());
        for attribute in &resource_attributes {
            let first = resource_attributes
                .iter()
                .find(|a| a.key == attribute.key)
                .unwrap();
            assert_value_eq(resource.attribute(&attribute.key), first.value.as_ref());
        }
        let exp_scope = exp_scope.clone().unwrap_or_default();
        assert_eq!(scope.name(), exp_scope.name);
        assert_eq!(scope.version(), exp_scope.version);
        assert_eq!(scope.schema_url(), exp_scope_schema);
        assert_eq!(scope.attributes().count(), exp_scope.attributes.len());
    });
    assert_eq!(index, expected.len());
}

fn pad(id: &[u8], len: usize) -> Vec<u8> {
    if id.len() == len {
        id.to_vec()
    } else {
        vec![0; len]
    }
}

fn assert_value_eq(view: Option<AnyValueView<'_>>, expected: Option<&AnyValue>) {
    use any_value::Value as V;
    let view = view.expect("attribute present");
    match expected.and_then(|v| v.value.as_ref()) {
        None => assert_eq!(view, AnyValueView::Empty),
        Some(V::StringValue(s)) => assert_eq!(view, AnyValueView::String(s)),
        Some(V::BoolValue(b)) => assert_eq!(view, AnyValueView::Bool(*b)),
        Some(V::IntValue(i)) => assert_eq!(view, AnyValueView::Int(*i)),
        Some(V::DoubleValue(d)) => assert_eq!(view, AnyValueView::Double(*d)),
        Some(V::BytesValue(b)) => assert_eq!(view, AnyValueView::Bytes(b)),
        Some(other) => {
            let AnyValueView::Raw(raw) = view else {
                panic!("expected a raw value for {other:?}, got {view:?}");
            };
            assert_eq!(
                AnyValue::decode(raw).unwrap().value.as_ref(),
                Some(other),
                "raw bytes decode to the value"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn validation_matches_prost(request in arb_request()) {
        let encoded = Bytes::from(request.encode_to_vec());
        let total = span_count(&request);
        prop_assert_eq!(count_spans(&encoded).unwrap(), total);

        let (data, rejected) = TraceData::from_request_bytes(encoded.clone()).unwrap();
        let all = flatten(&request);
        let expected: Vec<FlatSpan> = all.iter().filter(|f| has_valid_ids(&f.4)).cloned().collect();
        prop_assert_eq!(rejected.spans as usize, total - expected.len());
        prop_assert_eq!(rejected.spans == 0, rejected.message.is_empty());
        prop_assert_eq!(data.span_count(), expected.len());
        prop_assert_eq!(count_spans(data.as_bytes()).unwrap(), expected.len());
        if rejected.spans == 0 {
            // Nothing to remove: the received bytes are stored as they are.
            prop_assert_eq!(data.as_bytes(), &encoded);
            prop_assert_eq!(data.to_request().unwrap(), request.clone());
        }
        prop_assert_eq!(flat_of(&data), expected.clone());
        check_views_match(&data, &expected);
    }

    #[test]
    fn from_request_matches_prost_encoding(request in arb_request()) {
        let data = TraceData::from_request(&request);
        prop_assert_eq!(data.span_count(), span_count(&request));
        prop_assert_eq!(data.as_bytes().to_vec(), request.encode_to_vec());
        prop_assert_eq!(data.encoded_len(), request.encoded_len());
        prop_assert_eq!(data.to_request().unwrap(), request);
    }

    #[test]
    fn split_off_front_cuts_at_span_granularity(request in arb_valid_request(), cut in 0usize..40) {
        let mut rest = data_of(&request);
        let all = flatten(&request);
        let front = rest.split_off_front(cut);
        let cut = cut.min(all.len());
        prop_assert_eq!(front.span_count(), cut);
        prop_assert_eq!(rest.span_count(), all.len() - cut);
        prop_assert_eq!(flat_of(&front), all[..cut].to_vec());
        prop_assert_eq!(flat_of(&rest), all[cut..].to_vec());
        // Both halves are valid requests with exactly the spans they claim.
        prop_assert_eq!(count_spans(front.as_bytes()).unwrap(), cut);
        prop_assert_eq!(TraceData::from_request_bytes(rest.as_bytes().clone()).unwrap().0.span_count(), all.len() - cut);

        // Concatenating the halves gives back every span, in order.
        let mut builder = TraceDataBuilder::new();
        builder.push(&front);
        builder.push(&rest);
        prop_assert_eq!(builder.span_count(), all.len());
        prop_assert_eq!(builder.encoded_len(), front.encoded_len() + rest.encoded_len());
        let joined = builder.finish();
        prop_assert_eq!(joined.span_count(), all.len());
        prop_assert_eq!(flat_of(&joined), all);
    }

    #[test]
    fn repeated_splitting_preserves_spans(request in arb_valid_request(), chunk in 1usize..7) {
        let mut rest = data_of(&request);
        let mut collected = Vec::new();
        while !rest.is_empty() {
            let front = rest.split_off_front(chunk);
            prop_assert!(front.span_count() <= chunk);
            prop_assert!(front.span_count() > 0);
            collected.extend(flat_of(&front));
        }
        prop_assert_eq!(collected, flatten(&request));
    }

    #[test]
    fn into_batches_cuts_in_one_pass(request in arb_valid_request(), max in 0usize..7) {
        let data = data_of(&request);
        let all = flatten(&request);
        let batches = data.clone().into_batches(max);
        let mut collected = Vec::new();
        for (i, batch) in batches.iter().enumerate() {
            if max > 0 && i + 1 < batches.len() {
                prop_assert_eq!(batch.span_count(), max, "all batches but the last are full");
            }
            prop_assert!(max == 0 || batch.span_count() <= max);
            prop_assert_eq!(count_spans(batch.as_bytes()).unwrap(), batch.span_count());
            collected.extend(flat_of(batch));
        }
        prop_assert_eq!(collected, all);
    }

    #[test]
    fn retain_keeps_exactly_the_selected_spans(request in arb_valid_request(), mask in any::<u64>()) {
        let data = data_of(&request);
        let mut index = 0;
        let kept = data.retain_spans(|_| {
            let keep = mask >> (index % 64) & 1 == 1;
            index += 1;
            keep
        });
        let expected: Vec<FlatSpan> = flatten(&request)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| mask >> (i % 64) & 1 == 1)
            .map(|(_, span)| span)
            .collect();
        prop_assert_eq!(kept.span_count(), expected.len());
        prop_assert_eq!(count_spans(kept.as_bytes()).unwrap(), expected.len());
        let decoded = kept.to_request().unwrap();
        if expected.len() < span_count(&request) {
            // Rebuilt: containers without spans are dropped. (Keeping every span returns the
            // data unchanged, empty containers included.)
            prop_assert!(decoded.resource_spans.iter().all(|r| !r.scope_spans.is_empty()
                && r.scope_spans.iter().all(|s| !s.spans.is_empty())));
        }
        prop_assert_eq!(flatten(&decoded), expected);
    }

    #[test]
    fn split_by_trace_groups_every_span(request in arb_valid_request()) {
        let data = data_of(&request);
        let all = flatten(&request);
        let groups = data.split_by_trace();
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        for (trace_id, group) in &groups {
            prop_assert!(seen.insert(*trace_id), "each trace appears once");
            let expected: Vec<FlatSpan> =
                all.iter().filter(|f| f.4.trace_id == trace_id).cloned().collect();
            prop_assert!(!expected.is_empty());
            prop_assert_eq!(group.span_count(), expected.len());
            prop_assert_eq!(flat_of(group), expected);
            total += group.span_count();
        }
        prop_assert_eq!(total, all.len());
        // Groups come in order of first appearance.
        let mut first_seen: Vec<[u8; 16]> = Vec::new();
        for span in &all {
            let id: [u8; 16] = span.4.trace_id.clone().try_into().unwrap();
            if !first_seen.contains(&id) {
                first_seen.push(id);
            }
        }
        prop_assert_eq!(groups.iter().map(|g| g.0).collect::<Vec<_>>(), first_seen);
    }

    #[test]
    fn essentials_agree_with_the_accessors(request in arb_valid_request()) {
        let data = data_of(&request);
        data.for_each_span(|_, _, span| {
            let e = span.essentials();
            assert_eq!(e.start_time_unix_nano, span.start_time_unix_nano());
            assert_eq!(e.end_time_unix_nano, span.end_time_unix_nano());
            assert_eq!(e.has_parent, span.parent_span_id().is_some());
            assert_eq!(e.flags, span.flags());
            assert_eq!(e.status_code, span.status_code());
        });
    }

    #[test]
    fn slices_rebuild_what_split_by_trace_copies(request in arb_valid_request()) {
        let data = data_of(&request);
        let copied = data.split_by_trace();
        let sliced = data.slices_by_trace();
        prop_assert_eq!(copied.len(), sliced.len());
        for ((copied_id, copied), (sliced_id, slice)) in copied.iter().zip(&sliced) {
            prop_assert_eq!(copied_id, sliced_id);
            prop_assert_eq!(slice.span_count(), copied.span_count());
            let mut writer = threadline_otlp::SliceWriter::new();
            writer.push(slice);
            let rebuilt = writer.finish();
            prop_assert_eq!(flat_of(&rebuilt), flat_of(copied));
            let mut names = Vec::new();
            slice.for_each_span(|_, span| names.push(span.name().to_string()));
            let mut expected = Vec::new();
            copied.for_each_span(|_, _, span| expected.push(span.name().to_string()));
            prop_assert_eq!(names, expected);
        }
    }

    #[test]
    fn partition_puts_every_span_in_its_part_once(request in arb_valid_request(), parts in 1usize..5) {
        let data = data_of(&request);
        let all = flatten(&request);
        let part_of = |trace_id: &[u8]| trace_id[0] as usize % parts;
        let split = data.partition(parts, |_, span| part_of(&span.trace_id()));
        prop_assert_eq!(split.len(), parts);
        for (index, part) in split.iter().enumerate() {
            let expected: Vec<FlatSpan> =
                all.iter().filter(|f| part_of(&f.4.trace_id) == index).cloned().collect();
            prop_assert_eq!(part.span_count(), expected.len());
            prop_assert_eq!(flat_of(part), expected);
        }
    }
}

#[test]
fn realistic_request_round_trips() {
    let request = realistic_request(4, 25);
    let data = data_of(&request);
    assert_eq!(data.span_count(), 1000);
    check_views_match(&data, &flatten(&request));
    let groups = data.split_by_trace();
    assert_eq!(groups.len(), 100);
    assert!(groups.iter().all(|(_, g)| g.span_count() == 10));
    let span = {
        let mut first = None;
        data.for_each_span(|resource, scope, span| {
            if first.is_none() {
                first = Some((
                    resource
                        .attribute("service.name")
                        .and_then(|v| v.as_str().map(str::to_owned)),
                    scope.name().to_owned(),
                    span.attribute("http.response.status_code")
                        .and_then(|v| v.as_i64()),
                ));
            }
        });
        first.unwrap()
    };
    assert_eq!(
        span,
        (
            Some("service-0".to_owned()),
            "io.opentelemetry.okhttp-3.0".to_owned(),
            Some(200)
        )
    );
}

#[test]
fn split_between_resources_copies_nothing() {
    let request = realistic_request(3, 2);
    let data = data_of(&request);
    let mut rest = data.clone();
    let front = rest.split_off_front(20);
    assert_eq!(front.span_count(), 20);
    assert_eq!(rest.span_count(), 40);
    // Both halves point into the original buffer.
    let original = data.as_bytes().as_ptr_range();
    assert!(original.contains(&front.as_bytes().as_ptr()));
    assert!(original.contains(&rest.as_bytes().as_ptr()));
    assert_eq!(front.encoded_len() + rest.encoded_len(), data.encoded_len());
}

#[test]
fn straddling_split_carries_resource_and_scope_to_both_halves() {
    let request = realistic_request(1, 2);
    let mut rest = data_of(&request);
    let front = rest.split_off_front(5);
    for half in [&front, &rest] {
        let decoded = half.to_request().unwrap();
        assert_eq!(decoded.resource_spans.len(), 1);
        let resource = &decoded.resource_spans[0];
        assert_eq!(resource.resource, request.resource_spans[0].resource);
        assert_eq!(resource.schema_url, request.resource_spans[0].schema_url);
        assert_eq!(resource.scope_spans.len(), 1);
        assert_eq!(
            resource.scope_spans[0].scope,
            request.resource_spans[0].scope_spans[0].scope
        );
    }
    assert_eq!(front.span_count(), 5);
    assert_eq!(rest.span_count(), 15);
}

#[test]
fn retain_all_and_none() {
    let data = data_of(&realistic_request(2, 3));
    let all = data.retain_spans(|_| true);
    assert_eq!(all, data);
    assert_eq!(all.as_bytes().as_ptr(), data.as_bytes().as_ptr(), "no copy");
    let none = data.retain_spans(|_| false);
    assert!(none.is_empty());
    assert_eq!(none.encoded_len(), 0);
    let servers = data.retain_spans(|span| span.kind() == 2);
    assert_eq!(servers.span_count(), 6);
}

#[test]
fn builder_keeps_a_single_push_uncopied() {
    let data = data_of(&realistic_request(1, 1));
    let mut builder = TraceDataBuilder::with_capacity(1024);
    assert!(builder.is_empty());
    builder.push(&TraceData::default());
    builder.push(&data);
    let built = builder.finish();
    assert_eq!(built.as_bytes().as_ptr(), data.as_bytes().as_ptr());
    assert_eq!(built.span_count(), 10);
}

#[test]
fn unknown_fields_survive_rebuilding() {
    // A span with an unknown field 100, next to a span with a zero trace id that forces a rebuild.
    let mut request = realistic_request(1, 1);
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![0; 16];
    let mut encoded = request.encode_to_vec();
    // Append an unknown top-level field (dropped) ...
    encoded.extend_from_slice(&[0x10, 0x01]);
    let (data, rejected) = TraceData::from_request_bytes(Bytes::from(encoded)).unwrap();
    assert_eq!(rejected.spans, 1);
    assert_eq!(data.span_count(), 9);

    // ... and unknown fields inside a span, resource and scope (kept).
    let span_bytes = request.resource_spans[0].scope_spans[0].spans[0].encode_to_vec();
    let mut span_with_unknown = span_bytes.clone();
    span_with_unknown.extend_from_slice(&[0xa0, 0x06, 0x2a]); // field 100, varint 42
    let mut scope = Vec::new();
    threadline_otlp::wire::encode_length_delimited(2, &span_with_unknown, &mut scope);
    let zero_span = request.resource_spans[0].scope_spans[0].spans[1].encode_to_vec();
    threadline_otlp::wire::encode_length_delimited(2, &zero_span, &mut scope);
    scope.extend_from_slice(&[0xa8, 0x06, 0x07]); // field 101, varint 7
    let mut resource = Vec::new();
    threadline_otlp::wire::encode_length_delimited(2, &scope, &mut resource);
    resource.extend_from_slice(&[0xb0, 0x06, 0x09]); // field 102, varint 9
    let mut request_bytes = Vec::new();
    threadline_otlp::wire::encode_length_delimited(1, &resource, &mut request_bytes);

    let (data, rejected) = TraceData::from_request_bytes(Bytes::from(request_bytes)).unwrap();
    assert_eq!(rejected.spans, 1);
    assert_eq!(data.span_count(), 1);
    let has_field = |buf: &[u8], number: u32| {
        threadline_otlp::wire::FieldIter::new(buf).any(|f| matches!(f, Ok((n, _)) if n == number))
    };
    data.for_each_span(|resource, scope, span| {
        assert_eq!(span.raw(), &span_with_unknown[..]);
        assert!(has_field(scope.scope_spans_raw(), 101));
        assert!(has_field(resource.resource_spans_raw(), 102));
    });
}

#[test]
fn zero_and_missing_ids_are_rejected_not_fatal() {
    let mut request = realistic_request(2, 1);
    request.resource_spans[0].scope_spans[0].spans[3].trace_id = vec![0; 16];
    request.resource_spans[1].scope_spans[0].spans[0].span_id = vec![0; 8];
    request.resource_spans[1].scope_spans[0].spans[1]
        .trace_id
        .clear();
    // An all-zero parent id is fine: it marks a root span.
    request.resource_spans[1].scope_spans[0].spans[2].parent_span_id = vec![0; 8];
    let (data, rejected) =
        TraceData::from_request_bytes(Bytes::from(request.encode_to_vec())).unwrap();
    assert_eq!(rejected.spans, 3);
    assert_eq!(
        rejected.message,
        "3 spans rejected: trace_id and span_id must be present and not all zeros \
         (first at resource_spans[0].scope_spans[0].spans[3])"
    );
    let response = rejected.to_response();
    assert_eq!(response.partial_success.unwrap().rejected_spans, 3);
    assert_eq!(data.span_count(), 17);
    let expected: Vec<FlatSpan> = flatten(&request)
        .into_iter()
        .filter(|f| has_valid_ids(&f.4))
        .collect();
    assert_eq!(flat_of(&data), expected);
}

#[test]
fn all_spans_rejected_leaves_empty_data() {
    let mut request = realistic_request(1, 1);
    for span in &mut request.resource_spans[0].scope_spans[0].spans {
        span.span_id = vec![0; 8];
    }
    let (data, rejected) =
        TraceData::from_request_bytes(Bytes::from(request.encode_to_vec())).unwrap();
    assert_eq!(rejected.spans, 10);
    assert!(data.is_empty());
    assert_eq!(data.encoded_len(), 0);
}

#[test]
fn empty_request_is_valid() {
    let (data, rejected) = TraceData::from_request_bytes(Bytes::new()).unwrap();
    assert!(data.is_empty());
    assert!(rejected.is_empty());
    assert_eq!(rejected.to_response().partial_success, None);
    assert_eq!(
        data.to_request().unwrap(),
        ExportTraceServiceRequest::default()
    );
    assert!(data.split_by_trace().is_empty());
}

#[test]
fn attribute_lookup_returns_the_first_match() {
    let mut request = realistic_request(1, 1);
    let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
    span.attributes.push(KeyValue {
        key: "http.request.method".to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("POST".to_owned())),
        }),
        key_strindex: 0,
    });
    let data = data_of(&request);
    let mut method = None;
    data.for_each_span(|_, _, span| {
        method.get_or_insert_with(|| span.attribute("http.request.method"));
    });
    assert_eq!(method.unwrap(), Some(AnyValueView::String("GET")));
}
