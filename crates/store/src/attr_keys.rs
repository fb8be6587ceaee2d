//! Attribute keys per scope: what a block's index keeps so that a query on an attribute no span
//! of the block has skips the block without reading a page (the complaint of grafana/tempo
//! #4422, where such a query scans every block), and what a query needs to be present.

use std::collections::{HashMap, HashSet};

use threadline_otlp::wire::{FieldIter, WireValue};
use threadline_otlp::{AnyValueView, TraceData};
use threadline_traceql::ast::{
    BinaryOp, FieldExpr, Literal, MetricsExpr, Root, Scope, SpansetExpr, SpansetOp,
};
use threadline_traceql::Query;

use crate::page_values::ValueKey;

/// The scope of an attribute key, as stored in a block index (one byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum KeyScope {
    Span = 1,
    Resource = 2,
    Event = 3,
    Link = 4,
    Instrumentation = 5,
}

impl KeyScope {
    pub const ALL: [KeyScope; 5] = [
        KeyScope::Span,
        KeyScope::Resource,
        KeyScope::Event,
        KeyScope::Link,
        KeyScope::Instrumentation,
    ];

    pub fn from_byte(byte: u8) -> Option<KeyScope> {
        KeyScope::ALL.into_iter().find(|s| *s as u8 == byte)
    }

    /// Tempo's name of the scope (`span`, `resource`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KeyScope::Span => "span",
            KeyScope::Resource => "resource",
            KeyScope::Event => "event",
            KeyScope::Link => "link",
            KeyScope::Instrumentation => "instrumentation",
        }
    }

    pub fn from_name(name: &str) -> Option<KeyScope> {
        KeyScope::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Attribute keys per scope (a block's, or a trace's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeySet {
    scopes: HashMap<KeyScope, HashSet<String>>,
}

impl KeySet {
    /// Adds a key; allocates only for a key not seen before (most keys repeat on every span).
    pub fn insert(&mut self, scope: KeyScope, key: &str) {
        let keys = self.scopes.entry(scope).or_default();
        if !keys.contains(key) {
            keys.insert(key.to_string());
        }
    }

    pub fn contains(&self, scope: KeyScope, key: &str) -> bool {
        self.scopes
            .get(&scope)
            .is_some_and(|keys| keys.contains(key))
    }

    pub fn iter(&self) -> impl Iterator<Item = (KeyScope, &str)> {
        self.scopes
            .iter()
            .flat_map(|(scope, keys)| keys.iter().map(|k| (*scope, k.as_str())))
    }

    pub fn of_scope(&self, scope: KeyScope) -> impl Iterator<Item = &str> {
        self.scopes
            .get(&scope)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}

/// Calls `visit` with every (scope, key) of the spans of `data`, repeats included.
pub fn for_each_key(data: &TraceData, mut visit: impl FnMut(KeyScope, &str)) {
    for_each_attribute(data, |scope, key, _| visit(scope, key));
}

/// Calls `visit` with every (scope, key, value) of the spans of `data`, repeats included; each
/// distinct resource and instrumentation scope once. Reads the encoded bytes as they are: this
/// runs for every trace written to a block (its keys, its page's value filter).
pub fn for_each_attribute<'a>(
    data: &'a TraceData,
    mut visit: impl FnMut(KeyScope, &'a str, AnyValueView<'a>),
) {
    let mut resources: Vec<&[u8]> = Vec::new();
    let mut scopes: Vec<&[u8]> = Vec::new();
    data.for_each_span(|resource, scope, span| {
        if !resources.contains(&resource.raw()) {
            resources.push(resource.raw());
            for (key, value) in resource.attributes() {
                visit(KeyScope::Resource, key, value);
            }
        }
        if !scopes.contains(&scope.raw()) {
            scopes.push(scope.raw());
            for (key, value) in scope.attributes() {
                visit(KeyScope::Instrumentation, key, value);
            }
        }
        for (number, field) in FieldIter::new(span.raw()).map_while(Result::ok) {
            match (number, field) {
                (9, WireValue::Bytes(kv)) => visit_key_value(kv, KeyScope::Span, &mut visit),
                // Span.Event: attributes are field 3; Span.Link: field 4.
                (11, WireValue::Bytes(event)) => nested(event, 3, KeyScope::Event, &mut visit),
                (13, WireValue::Bytes(link)) => nested(link, 4, KeyScope::Link, &mut visit),
                _ => {}
            }
        }
    });
}

fn nested<'a>(
    raw: &'a [u8],
    field: u32,
    scope: KeyScope,
    visit: &mut impl FnMut(KeyScope, &'a str, AnyValueView<'a>),
) {
    for (number, value) in FieldIter::new(raw).map_while(Result::ok) {
        if let (n, WireValue::Bytes(kv)) = (number, value) {
            if n == field {
                visit_key_value(kv, scope, visit);
            }
        }
    }
}

fn visit_key_value<'a>(
    key_value: &'a [u8],
    scope: KeyScope,
    visit: &mut impl FnMut(KeyScope, &'a str, AnyValueView<'a>),
) {
    let mut key = None;
    let mut value = AnyValueView::Empty;
    for (number, field) in FieldIter::new(key_value).map_while(Result::ok) {
        match (number, field) {
            (1, WireValue::Bytes(k)) => key = std::str::from_utf8(k).ok(),
            (2, WireValue::Bytes(v)) => value = AnyValueView::from_encoded(v),
            _ => {}
        }
    }
    if let Some(key) = key {
        visit(scope, key, value);
    }
}

/// An attribute a matching trace must have: `key` in one of `scopes` (an unscoped `.key` is
/// the span's or the resource's, as TraceQL evaluates it).
#[derive(Debug, Clone, PartialEq)]
pub struct RequiredKey {
    pub scopes: Vec<KeyScope>,
    pub key: String,
    /// The value the attribute must equal (`=` against a string, number or boolean), for
    /// skipping pages whose value filters lack it ([`crate::page_values`]).
    pub value: Option<ValueKey>,
}

impl RequiredKey {
    /// Whether a block whose key set is `keys` may hold a trace with this attribute.
    pub fn present_in(&self, keys: &KeySet) -> bool {
        self.scopes
            .iter()
            .any(|scope| keys.contains(*scope, &self.key))
    }

    /// The value hashes of which a page holding a match has one (one per scope), or None
    /// without a required value.
    pub fn value_hashes(&self) -> Option<Vec<u64>> {
        let value = self.value.as_ref()?;
        Some(
            self.scopes
                .iter()
                .map(|scope| crate::page_values::value_hash(*scope, &self.key, value.as_ref()))
                .collect(),
        )
    }
}

/// Attributes every trace matching `query` has, for skipping blocks without them. Never
/// narrower than the query: only conditions that cannot hold on a missing attribute count
/// (`=`, `>`, `>=`, `<`, `<=`, `=~` against a value that is not `nil`), found in the top-level
/// `&&` of filters joined by operators that need both sides (`&&`, `>`, `>>`, `<`, `<<`, `~`
/// and their union forms); `||`, negated structural operators and anything after a pipeline
/// stage other than `select` give nothing.
pub fn required_keys(query: &Query) -> Vec<RequiredKey> {
    let mut out = Vec::new();
    // A metrics query counts only the spans its pipeline selects (`{ ... } | rate()`, with
    // second stages such as `topk`); arithmetic between queries gives nothing.
    let pipeline = match &query.ast().root {
        Root::Spans(pipeline) => Some(pipeline),
        Root::Metrics(MetricsExpr::Pipeline { pipeline, .. }) => Some(pipeline),
        Root::Metrics(MetricsExpr::Staged { inner, .. }) => match &**inner {
            MetricsExpr::Pipeline { pipeline, .. } => Some(pipeline),
            _ => None,
        },
        Root::Metrics(_) => None,
    };
    if let Some(pipeline) = pipeline {
        let only_selects = pipeline
            .stages
            .iter()
            .all(|s| matches!(s, threadline_traceql::ast::Stage::Select(_)));
        if only_selects {
            spanset_keys(&pipeline.spanset, &mut out);
        }
    }
    out
}

/// [`required_keys`] of a search's matcher: a TraceQL query's, or every `tags=` key but the
/// intrinsics `name` and `status` (a `tags=` pair matches span or resource attributes).
pub fn matcher_required_keys(matcher: &crate::search::Matcher) -> Vec<RequiredKey> {
    match matcher {
        crate::search::Matcher::TraceQl(query) => required_keys(query),
        crate::search::Matcher::Tags(tags) => tags
            .iter()
            .filter(|(key, _)| key != "name" && key != "status")
            .map(|(key, _)| RequiredKey {
                scopes: vec![KeyScope::Span, KeyScope::Resource],
                key: key.clone(),
                // `tags=` values match as text, whatever the attribute's type.
                value: None,
            })
            .collect(),
    }
}

fn spanset_keys(expr: &SpansetExpr, out: &mut Vec<RequiredKey>) {
    match expr {
        SpansetExpr::Filter(Some(field)) => conjunct_keys(field, out),
        SpansetExpr::Filter(None) | SpansetExpr::Pipeline(_) => {}
        SpansetExpr::Binary { op, lhs, rhs } => {
            let both = matches!(
                op,
                SpansetOp::And
                    | SpansetOp::Child
                    | SpansetOp::Descendant
                    | SpansetOp::Parent
                    | SpansetOp::Ancestor
                    | SpansetOp::Sibling
                    | SpansetOp::UnionChild
                    | SpansetOp::UnionDescendant
                    | SpansetOp::UnionParent
                    | SpansetOp::UnionAncestor
                    | SpansetOp::UnionSibling
            );
            if both {
                spanset_keys(lhs, out);
                spanset_keys(rhs, out);
            }
        }
    }
}

fn conjunct_keys(expr: &FieldExpr, out: &mut Vec<RequiredKey>) {
    let FieldExpr::Binary { op, lhs, rhs, .. } = expr else {
        return;
    };
    if *op == BinaryOp::And {
        conjunct_keys(lhs, out);
        conjunct_keys(rhs, out);
        return;
    }
    let needs_value = matches!(
        op,
        BinaryOp::Eq
            | BinaryOp::Gt
            | BinaryOp::Gte
            | BinaryOp::Lt
            | BinaryOp::Lte
            | BinaryOp::Regex
    );
    if !needs_value {
        return;
    }
    let (attribute, literal) = match (&**lhs, &**rhs) {
        (FieldExpr::Attribute { scope, name }, FieldExpr::Literal(l))
        | (FieldExpr::Literal(l), FieldExpr::Attribute { scope, name }) => ((scope, name), l),
        _ => return,
    };
    if matches!(literal, Literal::Nil) {
        return;
    }
    let (scope, name) = attribute;
    let value = match (op, literal) {
        (BinaryOp::Eq, Literal::Str(s)) => Some(ValueKey::Str(s.clone())),
        (BinaryOp::Eq, Literal::Int(i)) => Some(ValueKey::Number(*i as f64)),
        (BinaryOp::Eq, Literal::Float(f)) => Some(ValueKey::Number(*f)),
        (BinaryOp::Eq, Literal::Bool(b)) => Some(ValueKey::Bool(*b)),
        _ => None,
    };
    let scopes = match scope {
        Scope::Span => vec![KeyScope::Span],
        Scope::Resource => vec![KeyScope::Resource],
        Scope::Event => vec![KeyScope::Event],
        Scope::Link => vec![KeyScope::Link],
        Scope::Instrumentation => vec![KeyScope::Instrumentation],
        Scope::Unscoped => vec![KeyScope::Span, KeyScope::Resource],
    };
    out.push(RequiredKey {
        scopes,
        key: name.clone(),
        value,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(q: &str) -> Vec<(Vec<KeyScope>, String)> {
        let query = threadline_traceql::parse(q).expect("query parses");
        required_keys(&query)
            .into_iter()
            .map(|r| (r.scopes, r.key))
            .collect()
    }

    #[test]
    fn conjuncts_of_comparisons_need_their_attribute() {
        assert_eq!(
            keys(r#"{ span.a = "x" && resource.b > 3 && .c =~ "y.*" }"#),
            vec![
                (vec![KeyScope::Span], "a".to_string()),
                (vec![KeyScope::Resource], "b".to_string()),
                (vec![KeyScope::Span, KeyScope::Resource], "c".to_string()),
            ]
        );
        assert_eq!(
            keys(r#"{ event.exception.type = "x" } | rate() by (span.a)"#),
            vec![(vec![KeyScope::Event], "exception.type".to_string())]
        );
        assert_eq!(
            keys(r#"{ span.a = 1 } | count_over_time() | topk(2)"#),
            vec![(vec![KeyScope::Span], "a".to_string())]
        );
        assert!(keys(r#"({ span.a = 1 } | rate()) / ({ } | rate())"#).is_empty());
        assert_eq!(
            keys(r#"{ event.e = "x" } >> { link.l = 1 }"#),
            vec![
                (vec![KeyScope::Event], "e".to_string()),
                (vec![KeyScope::Link], "l".to_string()),
            ]
        );
    }

    #[test]
    fn conditions_that_hold_without_the_attribute_need_nothing() {
        for q in [
            r#"{ span.a = "x" || span.b = "y" }"#,
            r#"{ span.a != "x" }"#,
            r#"{ span.a !~ "x" }"#,
            r#"{ span.a = nil }"#,
            r#"{ span.a = "x" } || { span.b = "y" }"#,
            r#"{ span.a = "x" } !>> { span.b = "y" }"#,
            r#"{ span.a = "x" } | count() > 1"#,
            r#"{ !(span.a = "x") }"#,
            "{ }",
        ] {
            let found = keys(q);
            assert!(
                found.iter().all(|(_, k)| k != "a" && k != "b"),
                "{q}: {found:?}"
            );
        }
    }

    #[test]
    fn block_indexes_keep_keys_of_every_scope_and_old_indexes_still_read() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{
            any_value, AnyValue, InstrumentationScope, KeyValue,
        };
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let kv = |key: &str| KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::BoolValue(true)),
            }),
            ..Default::default()
        };
        let data = TraceData::from_request(&ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("r")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        attributes: vec![kv("i")],
                        ..Default::default()
                    }),
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![1; 8],
                        attributes: vec![kv("s")],
                        events: vec![Event {
                            attributes: vec![kv("e")],
                            ..Default::default()
                        }],
                        links: vec![Link {
                            attributes: vec![kv("l")],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let built = crate::block::build("b".into(), "t", [([1u8; 16], data)].into(), 0)
            .expect("block builds");
        let encoded = built.index.encode();
        assert_eq!(encoded.len(), built.index.encoded_len());
        let index = crate::block::BlockIndex::decode(&encoded).expect("index decodes");
        let mut keys: Vec<(KeyScope, String)> = index
            .keys
            .iter()
            .flat_map(KeySet::iter)
            .map(|(s, k)| (s, k.to_string()))
            .collect();
        keys.sort();
        let expected: Vec<(KeyScope, String)> = [
            (KeyScope::Span, "s"),
            (KeyScope::Resource, "r"),
            (KeyScope::Event, "e"),
            (KeyScope::Link, "l"),
            (KeyScope::Instrumentation, "i"),
        ]
        .into_iter()
        .map(|(s, k)| (s, k.to_string()))
        .collect();
        assert_eq!(keys, expected);
        assert!(!index.may_have_key(KeyScope::Span, "r"));
        // An index written before keys (TLIDX1: no key section) reads with no key set, so its
        // block is never skipped for a key.
        let key_section: usize = 4 + expected.iter().map(|(_, k)| 5 + k.len()).sum::<usize>();
        let mut old = encoded[..encoded.len() - key_section].to_vec();
        old[..6].copy_from_slice(b"TLIDX1");
        let old = crate::block::BlockIndex::decode(&old).expect("old index decodes");
        assert_eq!(old.keys, None);
        assert_eq!(old.rows, index.rows);
        assert!(old.may_have_key(KeyScope::Span, "anything"));
    }
}
