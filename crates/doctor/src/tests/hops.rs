//! Lost context on gRPC, messaging and `peer.service` hops: how a client or producer span is tied
//! to the callee's new trace.

use super::*;

/// orders calls payments over gRPC (`rpc.service`), inventory by `peer.service`, and publishes
/// to `order-events`, consumed by billing `consumed_after_ms` after the send. No hop propagates:
/// each callee's span is a root of a trace of its own (ids n + 100_000, + 200_000, + 300_000).
fn estate(n: u32, s: u64, consumed_after_ms: u64) -> Vec<Trace> {
    let orders = trace(
        n,
        vec![
            span("orders", "POST /orders", SpanKind::Server, 1, None).at(s, s + 60),
            span(
                "orders",
                "payments.Payments/Charge",
                SpanKind::Client,
                2,
                Some(1),
            )
            .at(s + 1, s + 20)
            .attr("rpc.service", "payments.Payments")
            .attr("rpc.system", "grpc"),
            span("orders", "GET", SpanKind::Client, 3, Some(1))
                .at(s + 21, s + 40)
                .attr("peer.service", "inventory"),
            span(
                "orders",
                "order-events publish",
                SpanKind::Producer,
                4,
                Some(1),
            )
            .at(s + 41, s + 42)
            .attr("messaging.destination.name", "order-events"),
        ],
    );
    let payments = trace(
        n + 100_000,
        vec![span(
            "payments",
            "payments.Payments/Charge",
            SpanKind::Server,
            5,
            None,
        )
        .at(s + 2, s + 19)
        .attr("rpc.service", "payments.Payments")],
    );
    let inventory = trace(
        n + 200_000,
        vec![span("inventory", "GET /stock", SpanKind::Server, 6, None).at(s + 22, s + 39)],
    );
    let consumed = s + 42 + consumed_after_ms;
    let billing = trace(
        n + 300_000,
        vec![span(
            "billing",
            "order-events process",
            SpanKind::Consumer,
            7,
            None,
        )
        .at(consumed, consumed + 5)
        .attr("messaging.destination.name", "order-events")],
    );
    vec![orders, payments, inventory, billing]
}

#[test]
fn grpc_peer_service_and_messaging_hops_are_paired_with_the_callees_traces() {
    // A message consumed 2 s after it was sent: after the producer span, within the queue wait.
    let traces: Vec<Trace> = (0..4u32)
        .flat_map(|i| estate(i, i as u64 * 10_000, 2_000))
        .collect();
    let findings = analyze(&traces);
    let mut hops: Vec<(String, u64)> = findings
        .iter()
        .filter(|f| f.kind == "lost_context")
        .map(|f| {
            let hop = f.hop.as_ref().unwrap();
            (format!("{}->{}", hop.from, hop.to), f.count)
        })
        .collect();
    hops.sort();
    assert_eq!(
        hops,
        vec![
            ("orders->billing".to_string(), 4),
            ("orders->inventory".to_string(), 4),
            ("orders->payments".to_string(), 4)
        ],
        "{findings:#?}"
    );
    // Each example pairs orders' trace with the callee's trace of the same request.
    for (callee, offset) in [
        ("payments", 100_000),
        ("inventory", 200_000),
        ("billing", 300_000),
    ] {
        let f = findings
            .iter()
            .find(|f| f.hop.as_ref().is_some_and(|h| h.to == callee))
            .unwrap();
        assert_eq!(f.examples.len(), 4);
        for e in &f.examples {
            let n = u32::from_str_radix(&e.trace_id[24..], 16).unwrap();
            assert_eq!(
                e.linked_trace_id,
                Some(hex::encode(tid(n + offset))),
                "{callee}"
            );
        }
    }
}

#[test]
fn a_message_consumed_much_later_is_not_paired() {
    // Consumed 20 s after the send: beyond the queue wait, so not taken for the other half.
    let traces: Vec<Trace> = (0..4u32)
        .flat_map(|i| estate(i, i as u64 * 100_000, 20_000))
        .collect();
    let findings = analyze(&traces);
    assert!(
        findings
            .iter()
            .all(|f| f.hop.as_ref().is_none_or(|h| h.to != "billing")),
        "{findings:#?}"
    );
    assert_eq!(
        findings.iter().filter(|f| f.kind == "lost_context").count(),
        2
    );
}
