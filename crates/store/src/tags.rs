//! Tag names and values over every trace of a time range, as Tempo's tag endpoints answer them:
//! what is collected from which spans, in which scope, with which type.
//!
//! Read against grafana/tempo ad33aa8fafc41a4ea58519f7b7a88b1aa1383224: `pkg/search/util.go`
//! (the intrinsic scope's list and the fixed values of `status` and `kind`),
//! `pkg/traceql/util.go` (value types), `modules/querier/querier.go` (virtual values first,
//! v2 stops there), `pkg/traceql/lenient_extract.go` (a `q` that does not parse filters nothing).

use std::collections::BTreeSet;

use threadline_traceql::model::{Span, Trace, Value};

use crate::attr_keys::KeyScope;

/// Tempo's intrinsic scope, in Tempo's order (`GetVirtualIntrinsicValues`).
pub const INTRINSICS: &[&str] = &[
    "duration",
    "name",
    "status",
    "statusMessage",
    "kind",
    "rootServiceName",
    "rootName",
    "traceDuration",
    "event:name",
    "event:timeSinceStart",
    "link:spanID",
    "link:traceID",
    "instrumentation:name",
    "instrumentation:version",
    "trace:id",
    "span:id",
    "span:parentID",
    "span:status",
    "span:statusMessage",
    "span:duration",
    "span:name",
    "span:kind",
    "trace:rootName",
    "trace:rootService",
    "trace:duration",
];

/// Distinct strings with Tempo's two bounds: at most `limit` kept (0: no bound), and with
/// `max_stale` > 0, collection stops once that many values in a row were already known (the
/// rest of the range would mostly repeat them: Tempo's `staleValueThreshold`).
#[derive(Debug, Default)]
pub struct Distinct<T: Ord> {
    pub values: BTreeSet<T>,
    max_stale: usize,
    stale_run: usize,
    pub stopped_stale: bool,
}

impl<T: Ord> Distinct<T> {
    pub fn new(max_stale: usize) -> Self {
        Distinct {
            values: BTreeSet::new(),
            max_stale,
            stale_run: 0,
            stopped_stale: false,
        }
    }

    pub fn add(&mut self, value: T) {
        if self.stopped_stale {
            return;
        }
        if self.values.insert(value) {
            self.stale_run = 0;
        } else if self.max_stale > 0 {
            self.stale_run += 1;
            self.stopped_stale = self.stale_run >= self.max_stale;
        }
    }

    /// The first `limit` in sort order (all when `limit` is 0).
    pub fn into_vec(self, limit: usize) -> Vec<T> {
        let take = if limit == 0 { usize::MAX } else { limit };
        self.values.into_iter().take(take).collect()
    }
}

/// Attribute lists of a span in `scope`: one for span, resource and instrumentation, one per
/// event or link.
pub fn attribute_lists(span: &Span, scope: KeyScope) -> Vec<&[(String, Value)]> {
    match scope {
        KeyScope::Span => vec![&span.attributes],
        KeyScope::Resource => vec![&span.resource_attributes],
        KeyScope::Instrumentation => vec![&span.scope.attributes],
        KeyScope::Event => span.events.iter().map(|e| &e.attributes[..]).collect(),
        KeyScope::Link => span.links.iter().map(|l| &l.attributes[..]).collect(),
    }
}

/// What a tag-values request asks for, from the tag's name.
#[derive(Debug, Clone, PartialEq)]
pub enum TagName {
    /// An attribute `key` in any of `scopes`.
    Attribute { scopes: Vec<KeyScope>, key: String },
    /// An intrinsic (its canonical spelling, e.g. `name` for `span:name`).
    Intrinsic(&'static str),
}

impl TagName {
    /// A v2 name: `span.k`, `resource.k`, `event.k`, `link.k`, `instrumentation.k`, `.k`
    /// (span or resource, as TraceQL evaluates it) or an intrinsic. Anything else is an error,
    /// as Tempo's `ParseIdentifier`.
    pub fn parse_v2(name: &str) -> Result<TagName, String> {
        if let Some(key) = name.strip_prefix('.') {
            if !key.is_empty() {
                return Ok(TagName::Attribute {
                    scopes: vec![KeyScope::Span, KeyScope::Resource],
                    key: key.to_string(),
                });
            }
        }
        if let Some((scope, key)) = name.split_once('.') {
            if let Some(scope) = KeyScope::from_name(scope) {
                if !key.is_empty() {
                    return Ok(TagName::Attribute {
                        scopes: vec![scope],
                        key: key.to_string(),
                    });
                }
            }
        }
        if let Some(intrinsic) = canonical_intrinsic(name) {
            return Ok(TagName::Intrinsic(intrinsic));
        }
        Err(format!(
            "please provide a valid tagName: {name:?} is neither a scoped attribute \
             (span., resource., event., link., instrumentation. or .) nor an intrinsic"
        ))
    }

    /// A v1 name: the attribute of that key in span or resource attributes (Tempo's v1 does
    /// not know scopes or intrinsics).
    pub fn v1(name: &str) -> TagName {
        TagName::Attribute {
            scopes: vec![KeyScope::Span, KeyScope::Resource],
            key: name.to_string(),
        }
    }
}

fn canonical_intrinsic(name: &str) -> Option<&'static str> {
    Some(match name {
        "name" | "span:name" => "name",
        "status" | "span:status" => "status",
        "kind" | "span:kind" => "kind",
        "statusMessage" | "span:statusMessage" => "statusMessage",
        "duration" | "span:duration" => "duration",
        "traceDuration" | "trace:duration" => "traceDuration",
        "rootName" | "trace:rootName" => "rootName",
        "rootServiceName" | "trace:rootService" => "rootServiceName",
        other => return INTRINSICS.iter().copied().find(|i| *i == other),
    })
}

/// Values Tempo answers without reading data (`GetVirtualTagValuesV2`): None when the tag's
/// values come from the spans.
pub fn virtual_values_v2(name: &TagName) -> Option<Vec<(&'static str, String)>> {
    let keyword = |values: &[&str]| {
        values
            .iter()
            .map(|v| ("keyword", v.to_string()))
            .collect::<Vec<_>>()
    };
    match name {
        TagName::Intrinsic("status") => Some(keyword(&["ok", "error", "unset"])),
        TagName::Intrinsic("kind") => Some(keyword(&[
            "client",
            "server",
            "producer",
            "consumer",
            "internal",
            "unspecified",
        ])),
        TagName::Intrinsic("duration" | "traceDuration") => Some(Vec::new()),
        // Ids and offsets: every value differs; Tempo lists none for them either.
        TagName::Intrinsic(
            "trace:id"
            | "span:id"
            | "span:parentID"
            | "link:traceID"
            | "link:spanID"
            | "event:timeSinceStart",
        ) => Some(Vec::new()),
        _ => None,
    }
}

/// Tempo's v1 virtual values (`GetVirtualTagValues`), listed before the data's.
pub fn virtual_values_v1(name: &str) -> &'static [&'static str] {
    match name {
        "status.code" => &["unset", "ok", "error"],
        "error" => &["true"],
        _ => &[],
    }
}

/// Tempo's type name and text of a scalar value; arrays give one value per element.
pub fn typed_values(value: &Value, out: &mut impl FnMut(&'static str, String)) {
    match value {
        Value::Str(s) => out("string", s.clone()),
        Value::Int(i) => out("int", i.to_string()),
        Value::Float(f) => out("float", f.to_string()),
        Value::Bool(b) => out("bool", b.to_string()),
        Value::Array(items) => {
            for item in items {
                typed_values(item, out);
            }
        }
    }
}

/// Calls `out` with each typed value of `name` on `span` of `trace`.
pub fn span_values(
    trace: &Trace,
    span: &Span,
    name: &TagName,
    out: &mut impl FnMut(&'static str, String),
) {
    match name {
        TagName::Attribute { scopes, key } => {
            for scope in scopes {
                for list in attribute_lists(span, *scope) {
                    for (k, v) in list {
                        if k == key {
                            typed_values(v, out);
                        }
                    }
                }
            }
        }
        TagName::Intrinsic(which) => {
            let root = || trace.spans.iter().find(|s| s.parent_span_id.is_none());
            match *which {
                "name" => out("string", span.name.clone()),
                "statusMessage" if !span.status_message.is_empty() => {
                    out("string", span.status_message.clone())
                }
                "rootName" => {
                    if let Some(root) = root() {
                        out("string", root.name.clone());
                    }
                }
                "rootServiceName" => {
                    if let Some(root) = root() {
                        out("string", root.service_name().to_string());
                    }
                }
                "event:name" => {
                    for event in &span.events {
                        out("string", event.name.clone());
                    }
                }
                "instrumentation:name" if !span.scope.name.is_empty() => {
                    out("string", span.scope.name.clone())
                }
                "instrumentation:version" if !span.scope.version.is_empty() => {
                    out("string", span.scope.version.clone())
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_names_parse_by_scope_and_intrinsic() {
        assert_eq!(
            TagName::parse_v2("event.exception.type"),
            Ok(TagName::Attribute {
                scopes: vec![KeyScope::Event],
                key: "exception.type".into()
            })
        );
        assert_eq!(
            TagName::parse_v2(".http.method"),
            Ok(TagName::Attribute {
                scopes: vec![KeyScope::Span, KeyScope::Resource],
                key: "http.method".into()
            })
        );
        assert_eq!(
            TagName::parse_v2("span:name"),
            Ok(TagName::Intrinsic("name"))
        );
        assert_eq!(
            TagName::parse_v2("trace:rootService"),
            Ok(TagName::Intrinsic("rootServiceName"))
        );
        assert!(TagName::parse_v2("http.method").is_err());
        assert!(TagName::parse_v2("span.").is_err());
        assert!(TagName::parse_v2(".").is_err());
    }

    #[test]
    fn distinct_keeps_the_first_in_order_and_stops_when_stale() {
        let mut d = Distinct::new(2);
        for v in ["b", "a", "a", "c", "c", "c", "d"] {
            d.add(v);
        }
        assert!(d.stopped_stale);
        assert_eq!(d.into_vec(2), vec!["a", "b"]);
        let mut unbounded = Distinct::new(0);
        for v in ["b", "a", "a", "a", "d"] {
            unbounded.add(v);
        }
        assert_eq!(unbounded.into_vec(0), vec!["a", "b", "d"]);
    }

    #[test]
    fn arrays_give_each_element_with_its_type() {
        let mut got = Vec::new();
        typed_values(
            &Value::Array(vec![Value::Int(1), Value::Str("x".into())]),
            &mut |t, v| got.push((t, v)),
        );
        assert_eq!(got, vec![("int", "1".into()), ("string", "x".into())]);
    }
}
