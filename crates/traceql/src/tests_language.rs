//! The language as Tempo defines it: every scope, intrinsic, structural operator (plain, union,
//! negated), array matching, `by()`/`coalesce()`/`select()`, hints, errors, and printing a
//! query back to text that parses to the same tree.

use proptest::prelude::*;

use crate::ast::Literal;
use crate::model::{Event, InstrumentationScope, Link, Trace, Value};
use crate::parse;
use crate::tests::shop;

/// The shop trace with span events, links, an array attribute and an instrumentation scope:
/// - GET /checkout: `span.tags = ["a", "b"]`
/// - POST /orders: an `exception` event 5 ms after its start (ValueError, "declined card")
/// - charge: a link to trace 07.., span 08.. (`link.kind = "follows"`)
fn rich() -> Trace {
    let mut trace = shop();
    let scope = std::sync::Arc::new(InstrumentationScope {
        name: "shop-lib".into(),
        version: "1.2.0".into(),
        attributes: vec![("lib.lang".into(), Value::Str("rust".into()))],
    });
    for span in &mut trace.spans {
        span.scope = scope.clone();
    }
    trace.spans[0].attributes.push((
        "tags".into(),
        Value::Array(vec![Value::Str("a".into()), Value::Str("b".into())]),
    ));
    let start = trace.spans[1].start_unix_nano;
    trace.spans[1].events.push(Event {
        name: "exception".into(),
        time_unix_nano: start + 5_000_000,
        attributes: vec![
            ("exception.type".into(), Value::Str("ValueError".into())),
            (
                "exception.message".into(),
                Value::Str("declined card".into()),
            ),
        ],
    });
    trace.spans[1].events.push(Event {
        name: "retry".into(),
        time_unix_nano: start + 1_000_000,
        attributes: vec![],
    });
    trace.spans[2].links.push(Link {
        trace_id: [7; 16],
        span_id: [8; 8],
        attributes: vec![("kind".into(), Value::Str("follows".into()))],
    });
    trace
}

fn run(query: &str) -> Vec<String> {
    let trace = rich();
    let parsed = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    parsed
        .evaluate(&trace)
        .map(|m| m.iter().map(|m| trace.spans[m.span].name.clone()).collect())
        .unwrap_or_default()
}

const ROOT: &str = "GET /checkout";
const ORDERS: &str = "POST /orders";
const CHARGE: &str = "charge";
const RESERVE: &str = "reserve";
const ALL: &[&str] = &[ROOT, ORDERS, CHARGE, RESERVE];

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_intrinsic() {
    let cases: &[(&str, &[&str])] = &[
        (r#"{ span:name = "charge" }"#, &[CHARGE]),
        ("{ span:status = error }", &[ORDERS]),
        (r#"{ span:statusMessage = "declined" }"#, &[ORDERS]),
        ("{ span:kind = client }", &[CHARGE]),
        ("{ span:duration > 700ms }", &[ROOT, ORDERS]),
        (r#"{ span:id = "0202020202020202" }"#, &[ORDERS]),
        (
            r#"{ span:parentID = "0101010101010101" }"#,
            &[ORDERS, RESERVE],
        ),
        ("{ span:childCount = 2 }", &[ROOT]),
        ("{ span:childCount = 0 }", &[CHARGE, RESERVE]),
        (r#"{ trace:id = "01010101010101010101010101010101" }"#, ALL),
        (r#"{ trace:id = "02020202020202020202020202020202" }"#, &[]),
        (
            r#"{ trace:rootName = "GET /checkout" && rootName = "GET /checkout" }"#,
            ALL,
        ),
        (
            r#"{ trace:rootService = "frontend" && rootServiceName = "frontend" }"#,
            ALL,
        ),
        ("{ trace:duration = 2500ms && traceDuration = 2.5s }", ALL),
        ("{ nestedSetParent < 0 }", &[ROOT]),
        ("{ nestedSetLeft = 3 && nestedSetRight = 4 }", &[CHARGE]),
        ("{ nestedSetParent = 1 }", &[ORDERS, RESERVE]),
        ("{ nestedSetLeft = 6 && nestedSetRight = 7 }", &[RESERVE]),
        ("{ nestedSetLeft = 1 && nestedSetRight = 8 }", &[ROOT]),
        (r#"{ event:name = "exception" }"#, &[ORDERS]),
        // Per event: the `retry` event is not named exception; spans without events never match.
        (r#"{ event:name != "exception" }"#, &[ORDERS]),
        (
            r#"{ event:name != "exception" && event:name = "exception" }"#,
            &[ORDERS],
        ),
        ("{ event:timeSinceStart > 4ms }", &[ORDERS]),
        ("{ event:timeSinceStart > 6ms }", &[]),
        (
            r#"{ link:traceID = "07070707070707070707070707070707" }"#,
            &[CHARGE],
        ),
        (r#"{ link:spanID = "0808080808080808" }"#, &[CHARGE]),
        (r#"{ instrumentation:name = "shop-lib" }"#, ALL),
        (
            r#"{ instrumentation:version = "1.2.0" && name = "charge" }"#,
            &[CHARGE],
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(run(query), names(expected), "{query}");
    }
}

#[test]
fn every_scope() {
    let cases: &[(&str, &[&str])] = &[
        (r#"{ span.http.method = "POST" }"#, &[ORDERS]),
        (r#"{ resource.service.name = "payments" }"#, &[CHARGE]),
        (r#"{ .service.name = "payments" }"#, &[CHARGE]),
        (r#"{ .http.method = "GET" }"#, &[ROOT]),
        (r#"{ event.exception.type = "ValueError" }"#, &[ORDERS]),
        (r#"{ event.exception.message =~ "declined.*" }"#, &[ORDERS]),
        (r#"{ event.exception.type != nil }"#, &[ORDERS]),
        (r#"{ link.kind = "follows" }"#, &[CHARGE]),
        (r#"{ instrumentation.lib.lang = "rust" }"#, ALL),
        (r#"{ span.lib.lang = "rust" }"#, &[]),
        (
            r#"{ event.exception.type = "ValueError" && event:name = "exception" }"#,
            &[ORDERS],
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(run(query), names(expected), "{query}");
    }
}

#[test]
fn arrays_match_element_wise() {
    let cases: &[(&str, &[&str])] = &[
        (r#"{ span.tags = "b" }"#, &[ROOT]),
        (r#"{ span.tags = "a" && span.tags = "b" }"#, &[ROOT]),
        (r#"{ span.tags = "c" }"#, &[]),
        (r#"{ span.tags != "c" }"#, &[ROOT]),
        (r#"{ span.tags != "a" }"#, &[]),
        (r#"{ span.tags =~ "b|z" }"#, &[ROOT]),
        (r#"{ span.tags !~ "a" }"#, &[]),
        (r#"{ span.tags !~ "z.*" }"#, &[ROOT]),
        (r#"{ span.tags > "a" }"#, &[ROOT]),
        (r#"{ span.tags != nil }"#, &[ROOT]),
    ];
    for (query, expected) in cases {
        assert_eq!(run(query), names(expected), "{query}");
    }
}

#[test]
fn every_structural_operator() {
    let cases: &[(&str, &[&str])] = &[
        (r#"{ name = "GET /checkout" } > { }"#, &[ORDERS, RESERVE]),
        (r#"{ name = "GET /checkout" } !> { }"#, &[ROOT, CHARGE]),
        (
            r#"{ name = "GET /checkout" } &> { }"#,
            &[ROOT, ORDERS, RESERVE],
        ),
        (r#"{ name = "charge" } < { }"#, &[ORDERS]),
        (r#"{ name = "charge" } !< { }"#, &[ROOT, CHARGE, RESERVE]),
        (r#"{ name = "charge" } &< { }"#, &[ORDERS, CHARGE]),
        (
            r#"{ name = "GET /checkout" } >> { }"#,
            &[ORDERS, CHARGE, RESERVE],
        ),
        (r#"{ name = "GET /checkout" } !>> { }"#, &[ROOT]),
        (r#"{ name = "POST /orders" } &>> { }"#, &[ORDERS, CHARGE]),
        (r#"{ name = "charge" } << { }"#, &[ROOT, ORDERS]),
        (r#"{ name = "charge" } !<< { }"#, &[CHARGE, RESERVE]),
        (r#"{ name = "charge" } &<< { }"#, &[ROOT, ORDERS, CHARGE]),
        (r#"{ name = "reserve" } ~ { }"#, &[ORDERS]),
        (r#"{ name = "reserve" } !~ { }"#, &[ROOT, CHARGE, RESERVE]),
        (r#"{ name = "reserve" } &~ { }"#, &[ORDERS, RESERVE]),
        (
            r#"{ nestedSetParent < 0 } &>> { status = error }"#,
            &[ROOT, ORDERS],
        ),
        (r#"{ status = error } &>> { kind = server }"#, &[]),
        // Tempo's precedence: && and || share a level, structural operators bind tighter.
        (
            r#"{ name = "nope" } || { name = "charge" } && { name = "reserve" }"#,
            &[CHARGE, RESERVE],
        ),
        (
            r#"{ name = "charge" } && { name = "nope" } || { name = "reserve" }"#,
            &[RESERVE],
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(run(query), names(expected), "{query}");
    }
}

#[test]
fn the_structure_tab_query_of_traces_drilldown() {
    // grafana/traces-drilldown 2edd9c93, StructureScene.tsx buildQuery('errors').
    let q = "({true && status = error} &>> { status = error }) || ({true && status = error}) | select(status, resource.service.name, name, nestedSetParent, nestedSetLeft, nestedSetRight)";
    let trace = rich();
    let matches = parse(q).unwrap().evaluate(&trace).unwrap();
    assert_eq!(matches.len(), 1);
    let m = &matches[0];
    assert_eq!(trace.spans[m.span].name, ORDERS);
    assert_eq!(
        m.intrinsics,
        vec![
            ("status".into(), Value::Str("error".into())),
            ("name".into(), Value::Str(ORDERS.into())),
            ("nestedSetParent".into(), Value::Int(1)),
            ("nestedSetLeft".into(), Value::Int(2)),
            ("nestedSetRight".into(), Value::Int(5)),
        ]
    );
    assert_eq!(
        m.attributes,
        vec![("resource.service.name".into(), Value::Str("orders".into()))]
    );
}

#[test]
fn the_exceptions_query_of_traces_drilldown() {
    // grafana/traces-drilldown 2edd9c93, exceptions.ts buildExceptionsQuery().
    let q = "{true && status = error} | select(resource.service.name, event.exception.message,event.exception.stacktrace,event.exception.type) with(most_recent=true)";
    let query = parse(q).unwrap();
    assert!(query.most_recent());
    let trace = rich();
    let matches = query.evaluate(&trace).unwrap();
    assert_eq!(matches.len(), 1);
    assert_eq!(
        matches[0].attributes,
        vec![
            ("resource.service.name".into(), Value::Str("orders".into())),
            (
                "event.exception.message".into(),
                Value::Str("declined card".into())
            ),
            (
                "event.exception.type".into(),
                Value::Str("ValueError".into())
            ),
        ]
    );
}

#[test]
fn by_coalesce_and_select() {
    let trace = rich();
    let sets = parse("{ } | by(resource.service.name)")
        .unwrap()
        .evaluate_spansets(&trace);
    assert_eq!(sets.len(), 4);
    assert_eq!(
        sets[1].by,
        vec![(
            "resource.service.name".to_string(),
            Some(Value::Str("orders".into()))
        )]
    );
    let sets = parse("{ } | by(kind) | count() > 1")
        .unwrap()
        .evaluate_spansets(&trace);
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].by[0].1, Some(Value::Str("server".into())));
    assert_eq!(sets[0].spans.len(), 2);
    let sets = parse("{ } | by(kind) | coalesce()")
        .unwrap()
        .evaluate_spansets(&trace);
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].spans.len(), 4);
    let sets = parse("{ } | by(span.http.method) | { kind = server }")
        .unwrap()
        .evaluate_spansets(&trace);
    // GET and POST groups keep their server span; the nil group (charge, reserve) has none.
    assert_eq!(sets.len(), 2);
    let m = parse(r#"{ name = "charge" } | select(span.amount, span:id, link.kind)"#)
        .unwrap()
        .evaluate(&trace)
        .unwrap();
    assert_eq!(
        m[0].attributes,
        vec![
            ("span.amount".into(), Value::Float(12.5)),
            ("link.kind".into(), Value::Str("follows".into()))
        ]
    );
    assert_eq!(
        m[0].intrinsics,
        vec![
            ("name".into(), Value::Str("charge".into())),
            ("span:id".into(), Value::Str("0303030303030303".into()))
        ]
    );
}

#[test]
fn hints_are_parsed() {
    let q = parse("{ } | rate() by (resource.service.name) with(sample=true)").unwrap();
    assert!(q.is_metrics());
    assert_eq!(q.hint("sample"), Some(&Literal::Bool(true)));
    let q = parse("{ } with(sample=0.1, most_recent=false)").unwrap();
    assert!(!q.most_recent());
    assert_eq!(q.hint("sample"), Some(&Literal::Float(0.1)));
    let e = parse("{ } with(sample)").unwrap_err().to_string();
    assert!(e.contains("column 16") && e.contains("'='"), "{e}");
}

#[test]
fn arithmetic_and_modulo_in_fields() {
    assert_eq!(run("{ span.items % 2 = 1 }"), names(&[RESERVE]));
    assert_eq!(run("{ span.items ^ 2 = 9 }"), names(&[RESERVE]));
    assert_eq!(run("{ span.items * 2 - 1 = 5 }"), names(&[RESERVE]));
    assert_eq!(run("{ duration / 2 > 1s }"), names(&[ROOT]));
    assert_eq!(run("{ nestedSetParent = -1 }"), names(&[ROOT]));
}

#[test]
fn errors_name_line_column_and_what_was_expected() {
    let e = parse("{ span:foo = 1 }").unwrap_err();
    assert!(e.message.contains("unknown intrinsic \"foo\""), "{e}");
    let e = parse("{ name = \"x\"\n  && }").unwrap_err();
    assert_eq!((e.line, e.column), (2, 6), "{e}");
    assert!(e.message.contains("a value after \"&&\""), "{e}");
    let e = parse("{ } | quantile_over_time(duration)").unwrap_err();
    assert!(e.message.contains("at least one quantile"), "{e}");
    let e = parse("{ } | quantile_over_time(duration, 2)").unwrap_err();
    assert!(e.message.contains("between 0 and 1"), "{e}");
    let e = parse("{ } | rate() by (name").unwrap_err();
    assert!(e.message.contains("')' or ','"), "{e}");
    let e = parse("{ } | topk(2)").unwrap_err();
    assert!(e.message.contains("metrics function"), "{e}");
    let e = parse("{ } | rate() | topk(0)").unwrap_err();
    assert!(e.message.contains("positive integer"), "{e}");
    let e = parse("({ } | rate()) + ").unwrap_err();
    assert_eq!(e.column, 18, "{e}");
}

fn roundtrip(query: &str) {
    let first = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    let printed = first.to_string();
    let second = parse(&printed).unwrap_or_else(|e| panic!("{query} printed as {printed}: {e}"));
    assert_eq!(first.ast(), second.ast(), "{query} printed as {printed}");
    assert_eq!(printed, second.to_string());
}

#[test]
fn printing_parses_back_to_the_same_query() {
    for q in [
        r#"{ span.a = "x" && (duration > 1.5s || status != error) }"#,
        r#"{ span."a b" = "q\"uote" } >> { .x =~ "a.*" } | by(name) | coalesce() | select(span:id, event:name)"#,
        "{ nestedSetParent < 0 } &>> { kind = server } | count() > 2",
        "{ } !~ { } || { } &< { }",
        "{ -span.a = -1 && span.b = -2.5 && span.c ^ 2 ^ 3 = 1 && span.d % 3 = 0 }",
        "{ } | rate() by (resource.service.name, span.http.method) with(sample=true)",
        "{ status = error } | quantile_over_time(duration, 0.5, 0.9, 1) by (name) | topk(3)",
        "{ } | histogram_over_time(duration)",
        "{ } | compare({ status = error }, 5, 1000, 2000)",
        "({ status = error } | count_over_time()) / ({ } | count_over_time()) * 100",
        "{ } | avg_over_time(span.x) > 2 | bottomk(1)",
        "({ } | rate() | topk(1)) - 2",
        "{ } | min_over_time(duration) by (kind) with(sample=0.1, most_recent=true)",
    ] {
        roundtrip(q);
    }
}

/// Query-shaped text from the grammar, including invalid combinations.
fn query_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("name".to_string()),
        Just("duration".to_string()),
        Just("status".to_string()),
        Just("span:id".to_string()),
        Just("nestedSetParent".to_string()),
        Just("event:name".to_string()),
        Just("span.http.method".to_string()),
        Just("resource.service.name".to_string()),
        Just("event.exception.type".to_string()),
        Just("link.kind".to_string()),
        Just("instrumentation.x".to_string()),
        Just(".tags".to_string()),
        Just("span.\"a b\"".to_string()),
        (-5i64..100).prop_map(|i| i.to_string()),
        (0u32..1000).prop_map(|f| format!("{}.{}", f / 100, f % 100)),
        (0u32..3000).prop_map(|d| format!("{d}ms")),
        "[a-z ]{0,4}".prop_map(|s| format!("\"{s}\"")),
        Just("error".to_string()),
        Just("server".to_string()),
        Just("nil".to_string()),
        Just("true".to_string()),
    ];
    let ops = prop_oneof![
        Just("="),
        Just("!="),
        Just(">"),
        Just(">="),
        Just("<"),
        Just("<="),
        Just("=~"),
        Just("!~"),
        Just("&&"),
        Just("||"),
        Just("+"),
        Just("-"),
        Just("*"),
        Just("/"),
        Just("%"),
        Just("^"),
    ];
    let field = leaf.prop_recursive(3, 16, 2, move |inner| {
        prop_oneof![
            (inner.clone(), ops.clone(), inner.clone())
                .prop_map(|(a, o, b)| format!("{a} {o} {b}")),
            inner.clone().prop_map(|a| format!("({a})")),
            inner.clone().prop_map(|a| format!("!{a}")),
            inner.prop_map(|a| format!("-{a}")),
        ]
    });
    let filter = prop_oneof![
        Just("{ }".to_string()),
        field.clone().prop_map(|f| format!("{{ {f} }}")),
    ];
    let spanset_ops = prop_oneof![
        Just("&&"),
        Just("||"),
        Just(">"),
        Just(">>"),
        Just("<"),
        Just("<<"),
        Just("~"),
        Just("!>"),
        Just("!>>"),
        Just("!<"),
        Just("!<<"),
        Just("!~"),
        Just("&>"),
        Just("&>>"),
        Just("&<"),
        Just("&<<"),
        Just("&~"),
    ];
    let spanset = filter.prop_recursive(2, 8, 2, move |inner| {
        prop_oneof![
            (inner.clone(), spanset_ops.clone(), inner.clone())
                .prop_map(|(a, o, b)| format!("{a} {o} {b}")),
            inner.prop_map(|a| format!("({a})")),
        ]
    });
    let stage = prop_oneof![
        field.clone().prop_map(|f| format!("by({f})")),
        Just("coalesce()".to_string()),
        (field.clone(), field.clone()).prop_map(|(a, b)| format!("select({a}, {b})")),
        (0u32..5).prop_map(|n| format!("count() > {n}")),
        field.clone().prop_map(|f| format!("avg({f}) >= 1s")),
        field.clone().prop_map(|f| format!("{{ {f} }}")),
    ];
    let metrics = prop_oneof![
        Just("rate()".to_string()),
        Just("count_over_time()".to_string()),
        field.clone().prop_map(|f| format!("sum_over_time({f})")),
        field
            .clone()
            .prop_map(|f| format!("quantile_over_time({f}, 0.5, 0.99)")),
        field
            .clone()
            .prop_map(|f| format!("histogram_over_time({f}) by ({f})")),
        field.clone().prop_map(|f| format!("compare({{ {f} }}, 3)")),
    ];
    let second = prop_oneof![
        Just(String::new()),
        Just(" | topk(2)".to_string()),
        Just(" > 0.5".to_string()),
    ];
    let hints = prop_oneof![
        Just(String::new()),
        Just(" with(most_recent=true)".to_string()),
        Just(" with(sample=0.5)".to_string()),
    ];
    (
        spanset,
        proptest::collection::vec(stage, 0..3),
        proptest::option::of((metrics, second)),
        proptest::bool::ANY,
        hints,
    )
        .prop_map(|(s, stages, metrics, arithmetic, hints)| {
            let mut q = s;
            for stage in stages {
                q = format!("{q} | {stage}");
            }
            if let Some((m, second)) = metrics {
                q = format!("{q} | {m}{second}");
                if arithmetic {
                    q = format!("({q}) / ({q})");
                }
            }
            q + &hints
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn printing_and_reparsing_gives_the_same_tree(query in query_text()) {
        if let Ok(first) = parse(&query) {
            let printed = first.to_string();
            let second = parse(&printed);
            prop_assert!(second.is_ok(), "{} printed as {} fails: {:?}", query, printed, second.err());
            let second = second.unwrap();
            prop_assert_eq!(first.ast(), second.ast(), "{} printed as {}", query, printed);
            // Evaluating any query on any trace never panics.
            let _ = first.evaluate(&rich());
        }
    }

    #[test]
    fn the_parser_never_panics_on_grammar_soup(query in r#"[{}()|&!=<>~.,a-z0-9" :%^*/+-]{0,50}"#) {
        if let Ok(q) = parse(&query) {
            let _ = q.evaluate(&rich());
            let _ = parse(&q.to_string());
        }
    }
}
