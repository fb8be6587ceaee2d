//! The TraceQL suite: every operator, intrinsic, scope, structural operator and pipeline stage
//! against a known data set, and malformed queries.

use proptest::prelude::*;

use crate::model::{Span, SpanKind, StatusCode, Trace, Value};
use crate::parse;

pub(crate) fn span(id: u8, parent: Option<u8>, name: &str, service: &str, ms: u64) -> Span {
    Span {
        trace_id: [1; 16],
        span_id: [id; 8],
        parent_span_id: parent.map(|p| [p; 8]),
        name: name.into(),
        kind: SpanKind::Server,
        start_unix_nano: 1_000_000_000,
        end_unix_nano: 1_000_000_000 + ms * 1_000_000,
        resource_attributes: vec![("service.name".into(), Value::Str(service.into()))],
        ..Default::default()
    }
}

/// frontend GET /checkout (root, 2500 ms)
///  ├─ orders POST /orders (800 ms, http.status_code 500, error "declined")
///  │   └─ payments charge (600 ms, client, amount 12.5, retry true)
///  └─ inventory reserve (100 ms, internal, items 3)
pub(crate) fn shop() -> Trace {
    let mut root = span(1, None, "GET /checkout", "frontend", 2500);
    root.attributes
        .push(("http.method".into(), Value::Str("GET".into())));
    let mut orders = span(2, Some(1), "POST /orders", "orders", 800);
    orders.status = StatusCode::Error;
    orders.status_message = "declined".into();
    orders
        .attributes
        .push(("http.status_code".into(), Value::Int(500)));
    orders
        .attributes
        .push(("http.method".into(), Value::Str("POST".into())));
    let mut payments = span(3, Some(2), "charge", "payments", 600);
    payments.kind = SpanKind::Client;
    payments
        .attributes
        .push(("amount".into(), Value::Float(12.5)));
    payments
        .attributes
        .push(("retry".into(), Value::Bool(true)));
    let mut inventory = span(4, Some(1), "reserve", "inventory", 100);
    inventory.kind = SpanKind::Internal;
    inventory.status = StatusCode::Ok;
    inventory.attributes.push(("items".into(), Value::Int(3)));
    Trace {
        trace_id: [1; 16],
        spans: vec![root, orders, payments, inventory],
    }
}

/// Names of the matched spans, or None when the trace does not match.
fn run(query: &str) -> Option<Vec<String>> {
    let trace = shop();
    let parsed = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    parsed
        .evaluate(&trace)
        .map(|m| m.iter().map(|m| trace.spans[m.span].name.clone()).collect())
}

fn names(list: &[&str]) -> Option<Vec<String>> {
    Some(list.iter().map(|s| s.to_string()).collect())
}

#[test]
fn comparison_operators() {
    assert_eq!(run(r#"{ name = "charge" }"#), names(&["charge"]));
    assert_eq!(
        run(r#"{ span.http.method != "GET" }"#),
        names(&["POST /orders"])
    );
    assert_eq!(
        run("{ span.http.status_code > 499 }"),
        names(&["POST /orders"])
    );
    assert_eq!(
        run("{ span.http.status_code >= 500 }"),
        names(&["POST /orders"])
    );
    assert_eq!(run("{ span.items < 4 }"), names(&["reserve"]));
    assert_eq!(run("{ span.items <= 2 }"), None);
    assert_eq!(run(r#"{ name =~ "GET.*" }"#), names(&["GET /checkout"]));
    assert_eq!(
        run(r#"{ name =~ "GET" }"#),
        None,
        "regexes match the whole value"
    );
    assert_eq!(run(r#"{ name !~ ".*/.*" }"#), names(&["charge", "reserve"]));
    assert_eq!(run("{ span.amount = 12.5 }"), names(&["charge"]));
    assert_eq!(
        run("{ span.amount > 12 }"),
        names(&["charge"]),
        "float against int"
    );
    assert_eq!(run("{ span.retry = true }"), names(&["charge"]));
    assert_eq!(run("{ span.retry != false }"), names(&["charge"]));
}

#[test]
fn missing_attributes_and_type_mismatches_do_not_match() {
    assert_eq!(run(r#"{ span.nope = "x" }"#), None);
    assert_eq!(run(r#"{ span.nope != "x" }"#), None);
    assert_eq!(run(r#"{ span.items = "3" }"#), None, "int against string");
    assert_eq!(run("{ span.retry != nil }"), names(&["charge"]));
    assert_eq!(
        run("{ span.retry = nil }"),
        names(&["GET /checkout", "POST /orders", "reserve"])
    );
}

#[test]
fn intrinsics() {
    assert_eq!(run("{ status = error }"), names(&["POST /orders"]));
    assert_eq!(run("{ status = ok }"), names(&["reserve"]));
    assert_eq!(
        run("{ span:status = unset && kind = client }"),
        names(&["charge"])
    );
    assert_eq!(
        run(r#"{ statusMessage = "declined" }"#),
        names(&["POST /orders"])
    );
    assert_eq!(run("{ kind = internal }"), names(&["reserve"]));
    assert_eq!(run("{ duration > 2s }"), names(&["GET /checkout"]));
    assert_eq!(
        run("{ span:duration >= 600ms && duration < 1s }"),
        names(&["POST /orders", "charge"])
    );
    assert_eq!(
        run(r#"{ rootName = "GET /checkout" && name = "reserve" }"#),
        names(&["reserve"])
    );
    assert_eq!(
        run(r#"{ rootServiceName = "frontend" && kind = client }"#),
        names(&["charge"])
    );
    assert_eq!(run(r#"{ trace:rootService = "orders" }"#), None);
    assert_eq!(
        run("{ traceDuration > 2s && name = \"charge\" }"),
        names(&["charge"])
    );
    assert_eq!(run("{ trace:duration < 1s }"), None);
}

#[test]
fn scopes() {
    assert_eq!(
        run(r#"{ resource.service.name = "payments" }"#),
        names(&["charge"])
    );
    assert_eq!(run(r#"{ span.service.name = "payments" }"#), None);
    assert_eq!(
        run(r#"{ .service.name = "inventory" }"#),
        names(&["reserve"])
    );
    assert_eq!(
        run(r#"{ .http.method = "POST" }"#),
        names(&["POST /orders"])
    );
}

#[test]
fn logical_operators_inside_and_between_spansets() {
    assert_eq!(
        run(r#"{ name = "charge" || name = "reserve" }"#),
        names(&["charge", "reserve"])
    );
    assert_eq!(run(r#"{ name = "charge" && status = error }"#), None);
    assert_eq!(
        run(r#"{ !(status = unset) }"#),
        names(&["POST /orders", "reserve"])
    );
    assert_eq!(
        run(r#"{ status = error } && { name = "reserve" }"#),
        names(&["POST /orders", "reserve"])
    );
    assert_eq!(run(r#"{ status = error } && { name = "nope" }"#), None);
    assert_eq!(
        run(r#"{ name = "nope" } || { kind = client }"#),
        names(&["charge"])
    );
    assert_eq!(
        run(r#"({ name = "charge" } || { name = "reserve" }) && { status = error }"#),
        names(&["POST /orders", "charge", "reserve"])
    );
}

#[test]
fn structural_operators() {
    assert_eq!(
        run(r#"{ resource.service.name = "frontend" } > { }"#),
        names(&["POST /orders", "reserve"])
    );
    assert_eq!(
        run(r#"{ resource.service.name = "frontend" } > { name = "charge" }"#),
        None
    );
    assert_eq!(
        run(r#"{ resource.service.name = "frontend" } >> { name = "charge" }"#),
        names(&["charge"])
    );
    // `<` and `<<` return right-hand spans (the parents/ancestors), as Tempo's docs define.
    assert_eq!(
        run(r#"{ name = "charge" } < { }"#),
        names(&["POST /orders"])
    );
    assert_eq!(run(r#"{ } < { name = "charge" }"#), None);
    assert_eq!(
        run(r#"{ name = "charge" } << { }"#),
        names(&["GET /checkout", "POST /orders"])
    );
    assert_eq!(
        run(r#"{ name = "reserve" } ~ { }"#),
        names(&["POST /orders"])
    );
    assert_eq!(run(r#"{ name = "charge" } ~ { }"#), None);
}

#[test]
fn pipelines() {
    assert_eq!(
        run("{ } | count() > 3"),
        names(&["GET /checkout", "POST /orders", "charge", "reserve"])
    );
    assert_eq!(run("{ } | count() > 4"), None);
    assert_eq!(
        run("{ kind = server } | count() = 2"),
        names(&["GET /checkout", "POST /orders"])
    );
    assert_eq!(run("{ } | avg(duration) > 1s"), None);
    assert_eq!(run("{ } | avg(duration) > 900ms").map(|n| n.len()), Some(4));
    assert_eq!(
        run("{ } | max(duration) >= 2500ms").map(|n| n.len()),
        Some(4)
    );
    assert_eq!(run("{ } | min(duration) < 100ms"), None);
    assert_eq!(
        run("{ span.items > 0 } | sum(span.items) = 3"),
        names(&["reserve"])
    );
    assert_eq!(run(r#"{ } | { name = "charge" }"#), names(&["charge"]));
}

#[test]
fn matched_spans_carry_the_attributes_named_and_selected() {
    let trace = shop();
    let query =
        parse(r#"{ span.http.status_code >= 500 } | select(resource.service.name, span.nope)"#)
            .unwrap();
    let matches = query.evaluate(&trace).unwrap();
    assert_eq!(matches.len(), 1);
    assert_eq!(
        matches[0].attributes,
        vec![
            ("span.http.status_code".to_string(), Value::Int(500)),
            (
                "resource.service.name".to_string(),
                Value::Str("orders".into())
            ),
        ]
    );
}

#[test]
fn hints_never_narrow_the_query() {
    let q = parse(r#"{ resource.service.name = "x" && duration > 2s && status = error }"#).unwrap();
    assert_eq!(q.hints(), (Some("x".into()), true));
    let q = parse(r#"{ resource.service.name = "x" || status = error }"#).unwrap();
    assert_eq!(q.hints(), (None, false));
}

fn error(query: &str) -> String {
    parse(query).unwrap_err().to_string()
}

#[test]
fn malformed_queries_name_the_position_and_what_was_expected() {
    let e = error("{ name = }");
    assert!(
        e.contains("line 1, column 10") && e.contains("expected a value after \"=\""),
        "{e}"
    );
    let e = error("{ name = \"x\"");
    assert!(e.contains("column 13") && e.contains("expected '}'"), "{e}");
    let e = error("name = \"x\"");
    assert!(
        e.contains("column 1") && e.contains("spanset filter"),
        "{e}"
    );
    let e = error("{ foo = 1 }");
    assert!(e.contains("unknown identifier \"foo\""), "{e}");
    let e = error("{ name =~ \"(\" }");
    assert!(e.contains("invalid regular expression"), "{e}");
    let e = error("{ } | by(name");
    assert!(e.contains("column 14") && e.contains("expected ')'"), "{e}");
    let e = error("{ duration > 5x }");
    assert!(e.contains("unknown unit"), "{e}");
    let e = error("{ name = \"x\" } {");
    assert!(e.contains("column 16"), "{e}");
    let e = error("{ name = \"unterminated }");
    assert!(e.contains("unterminated string"), "{e}");
}

#[test]
fn durations_and_quoted_names() {
    assert_eq!(run("{ duration > 1h } "), None);
    assert_eq!(run("{ duration >= 2.5s }"), names(&["GET /checkout"]));
    assert_eq!(run("{ duration > 1m30s }"), None);
    let mut trace = shop();
    trace.spans[0]
        .attributes
        .push(("a b".into(), Value::Str("x".into())));
    let q = parse(r#"{ span."a b" = "x" }"#).unwrap();
    assert_eq!(q.evaluate(&trace).map(|m| m.len()), Some(1));
}

proptest! {
    #[test]
    fn the_parser_never_panics(query in ".{0,60}") {
        let _ = parse(&query);
    }

    #[test]
    fn the_parser_never_panics_on_query_like_text(query in r#"[{}()|&!=<>~.a-z0-9" :]{0,40}"#) {
        if let Ok(q) = parse(&query) {
            let _ = q.evaluate(&shop());
        }
    }
}
