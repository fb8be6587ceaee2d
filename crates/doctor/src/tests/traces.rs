//! Lost context, broken traces, sampling and clock skew.

use super::*;

#[test]
fn lost_context_is_found_and_the_halves_are_paired() {
    let mut traces = Vec::new();
    for i in 0..25u32 {
        traces.extend(checkout(i, i as u64 * 100, i == 0));
    }
    let findings = analyze(&traces);
    assert_eq!(kinds(&findings), vec!["lost_context"], "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f.title, "orders → payments loses context on 96% of calls");
    assert_eq!(
        f.hop,
        Some(Hop {
            from: "orders".into(),
            to: "payments".into()
        })
    );
    assert_eq!((f.count, f.total), (24, 25));
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.examples.len(), 5);
    for e in &f.examples {
        let client: u32 = u32::from_str_radix(&e.trace_id[24..], 16).unwrap();
        let server = e.linked_trace_id.as_deref().unwrap();
        assert_eq!(server, hex::encode(tid(client + 100_000)), "wrong pair");
    }
    assert!(f.fix_config.as_deref().unwrap().contains("tracecontext"));
}

#[test]
fn clean_calls_and_uninstrumented_callees_give_nothing() {
    let mut traces = Vec::new();
    for i in 0..20u32 {
        traces.extend(checkout(i, i as u64 * 100, true));
    }
    assert_eq!(analyze(&traces), vec![]);
}

#[test]
fn a_root_outside_the_client_interval_is_not_its_other_half() {
    // Near-miss: payments' roots start after the calls ended: nothing to pair.
    let mut traces = Vec::new();
    for i in 0..10u32 {
        let mut t = checkout(i, i as u64 * 100, false);
        for s in &mut t[1].spans {
            s.start_unix_nano += 60 * MS;
            s.end_unix_nano += 60 * MS;
        }
        traces.extend(t);
    }
    traces.extend(checkout(99, 5000, true));
    let findings = analyze(&traces);
    assert!(!kinds(&findings).contains(&"lost_context"), "{findings:#?}");
    // The calls found no span of payments at all: payments did not record them.
    assert_eq!(kinds(&findings), vec!["callee_not_parent_based"]);
    assert_eq!(findings[0].services[0], "payments");
}

#[test]
fn a_callee_that_drops_sampled_calls_is_named() {
    let mut traces = Vec::new();
    for i in 0..10u32 {
        let mut t = checkout(i, i as u64 * 100, true);
        if i % 2 == 1 {
            t[0].spans.retain(|s| s.service_name() != "payments");
        }
        traces.extend(t);
    }
    let findings = analyze(&traces);
    assert_eq!(kinds(&findings), vec!["callee_not_parent_based"]);
    let f = &findings[0];
    assert_eq!(
        f.hop,
        Some(Hop {
            from: "orders".into(),
            to: "payments".into()
        })
    );
    assert_eq!((f.count, f.total), (5, 10));
}

#[test]
fn a_service_recording_unsampled_traces_is_not_parent_based() {
    let mut traces = Vec::new();
    for i in 0..10u32 {
        let mut t = checkout(i, i as u64 * 100, true);
        if i % 2 == 1 {
            // frontend and orders did not sample; payments recorded anyway.
            t[0].spans.retain(|s| s.service_name() == "payments");
        }
        traces.extend(t);
    }
    let findings = analyze(&traces);
    assert_eq!(
        kinds(&findings),
        vec!["sampling_not_parent_based"],
        "{findings:#?}"
    );
    assert_eq!(findings[0].services, vec!["payments".to_string()]);
    assert_eq!(findings[0].count, 5);
}

#[test]
fn orphans_and_several_roots() {
    let mut traces = Vec::new();
    for i in 0..4u32 {
        let mut t = checkout(i, i as u64 * 100, true);
        // orders' server span was lost: its client spans are orphans in a trace with a root.
        t[0].spans.retain(|s| s.name != "POST /orders");
        traces.extend(t);
    }
    for i in 10..13u32 {
        traces.push(trace(
            i,
            vec![
                span("worker", "job", SpanKind::Internal, 1, None),
                span("worker", "job", SpanKind::Internal, 2, None),
            ],
        ));
    }
    let findings = analyze(&traces);
    let orphan = findings
        .iter()
        .find(|f| f.kind == "orphan_spans")
        .expect("orphans");
    assert_eq!(orphan.services, vec!["orders".to_string()]);
    assert_eq!(orphan.count, 8);
    let roots = findings
        .iter()
        .find(|f| f.kind == "several_roots")
        .expect("roots");
    assert_eq!(roots.count, 3);
    assert_eq!(roots.services, vec!["worker".to_string()]);
}

fn request(spans: &[(&str, u32)]) -> TraceData {
    let resource_spans = spans
        .iter()
        .enumerate()
        .map(|(i, (service, flags))| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.to_string())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![ProtoSpan {
                    trace_id: vec![1; 16],
                    span_id: vec![i as u8 + 1; 8],
                    name: "x".into(),
                    flags: *flags,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    TraceData::from_request(&ExportTraceServiceRequest { resource_spans })
}

#[test]
fn spans_disagreeing_on_the_sampled_flag() {
    let mut analyzer = TraceAnalyzer::new(Thresholds::default());
    for i in 0..3 {
        // frontend sampled (0x301: remote parent, sampled); recommendations exported with 0.
        let data = request(&[
            ("frontend", 0x101),
            ("recommendations", 0x300),
            ("recommendations", 0x100),
        ]);
        analyzer.add_flags(tid(i), &data);
        // recommendations also sets the sampled bit elsewhere: it encodes the flags.
        analyzer.add_flags(tid(100 + i), &request(&[("recommendations", 0x101)]));
    }
    let findings = analyzer.finish().0;
    assert_eq!(kinds(&findings), vec!["sampled_flag_disagrees"]);
    assert_eq!(findings[0].services, vec!["recommendations".to_string()]);
    assert_eq!(findings[0].count, 3);
}

#[test]
fn sdks_that_leave_the_trace_flags_out_are_not_disagreeing() {
    // Near-miss: the Python SDK writes only the is-remote bits (0x100/0x300).
    let mut analyzer = TraceAnalyzer::new(Thresholds::default());
    for i in 0..5 {
        analyzer.add_flags(
            tid(i),
            &request(&[("frontend", 0x101), ("py", 0x100), ("py", 0x300)]),
        );
    }
    assert_eq!(analyzer.finish().0, vec![]);
}

/// frontend → shipping → warehouse, shipping's clock `skew_ms` ahead.
fn shipping(n: u32, s: u64, skew_ms: u64) -> Trace {
    trace(
        n,
        vec![
            span("frontend", "GET /ship", SpanKind::Server, 1, None).at(s, s + 100),
            span("frontend", "GET", SpanKind::Client, 2, Some(1)).at(s + 10, s + 90),
            span("shipping", "GET /ship", SpanKind::Server, 3, Some(2))
                .at(s + 20 + skew_ms, s + 80 + skew_ms),
            span("shipping", "GET", SpanKind::Client, 4, Some(3))
                .at(s + 30 + skew_ms, s + 70 + skew_ms),
            span("warehouse", "GET /stock", SpanKind::Server, 5, Some(4)).at(s + 40, s + 60),
            // A consumer running after its producer ended is normal.
            span("warehouse", "publish", SpanKind::Producer, 6, Some(5)).at(s + 41, s + 42),
            span("mailer", "process", SpanKind::Consumer, 7, Some(6)).at(s + 500, s + 510),
        ],
    )
}

#[test]
fn clock_skew_names_the_service_whose_clock_is_off() {
    let traces: Vec<Trace> = (0..10).map(|i| shipping(i, i as u64 * 1000, 300)).collect();
    let findings = analyze(&traces);
    assert_eq!(kinds(&findings), vec!["clock_skew"], "{findings:#?}");
    let f = &findings[0];
    assert_eq!(
        f.services,
        vec![
            "shipping".to_string(),
            "frontend".into(),
            "warehouse".into()
        ]
    );
    assert!(
        f.title.starts_with("shipping's clock is +300 ms off"),
        "{}",
        f.title
    );
    assert_eq!((f.count, f.total), (20, 20));
}

#[test]
fn no_skew_when_children_lie_inside_their_parents() {
    let traces: Vec<Trace> = (0..10).map(|i| shipping(i, i as u64 * 1000, 0)).collect();
    assert_eq!(analyze(&traces), vec![]);
    // Near-miss: 5 ms off is inside the tolerance.
    let traces: Vec<Trace> = (0..10).map(|i| shipping(i, i as u64 * 1000, 5)).collect();
    assert_eq!(analyze(&traces), vec![]);
}
