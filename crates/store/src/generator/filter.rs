//! Tempo's `filter_policies` (`pkg/spanfilter`): a span is processed when it matches every
//! policy's `include` (all its attributes) and no policy's `exclude`. Keys are the intrinsics
//! `name`, `kind` (`SPAN_KIND_SERVER`, ...), `status` (`STATUS_CODE_ERROR`, ...), or
//! `span.<attribute>` / `resource.<attribute>`; `match_type` is `strict` (equal) or `regex`
//! (matches anywhere, as Go's `MatchString`).

use regex::Regex;

use super::config::{FilterPolicy, PolicyMatch};
use super::span::{kind_label, status_label, SpanSource};

enum Key {
    Name,
    Kind,
    Status,
    Span(String),
    Resource(String),
}

enum Matcher {
    Strict(String),
    Regex(Regex),
}

struct Condition {
    key: Key,
    matcher: Matcher,
}

struct Compiled {
    include: Option<Vec<Condition>>,
    exclude: Option<Vec<Condition>>,
}

#[derive(Default)]
pub struct SpanFilter {
    policies: Vec<Compiled>,
}

fn compile(m: &PolicyMatch) -> Result<Vec<Condition>, String> {
    let regex = match m.match_type.as_str() {
        "strict" => false,
        "regex" => true,
        other => return Err(format!("match_type {other:?} is not valid (strict, regex)")),
    };
    m.attributes
        .iter()
        .map(|a| {
            let key = match a.key.as_str() {
                "name" => Key::Name,
                "kind" => Key::Kind,
                "status" => Key::Status,
                k => {
                    if let Some(attr) = k.strip_prefix("span.") {
                        Key::Span(attr.to_string())
                    } else if let Some(attr) = k.strip_prefix("resource.") {
                        Key::Resource(attr.to_string())
                    } else {
                        return Err(format!(
                            "key {k:?} is not valid: use name, kind, status, span.<attribute> or resource.<attribute>"
                        ));
                    }
                }
            };
            let value = match &a.value {
                serde_yaml_ng::Value::String(s) => s.clone(),
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                serde_yaml_ng::Value::Bool(b) => b.to_string(),
                _ => return Err(format!("the value of {:?} must be a scalar", a.key)),
            };
            let matcher = if regex {
                Matcher::Regex(
                    Regex::new(&value).map_err(|e| format!("invalid regex {value:?}: {e}"))?,
                )
            } else {
                Matcher::Strict(value)
            };
            Ok(Condition { key, matcher })
        })
        .collect()
}

impl SpanFilter {
    pub fn new(policies: &[FilterPolicy]) -> Result<SpanFilter, String> {
        let policies = policies
            .iter()
            .map(|p| {
                Ok(Compiled {
                    include: p.include.as_ref().map(compile).transpose()?,
                    exclude: p.exclude.as_ref().map(compile).transpose()?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(SpanFilter { policies })
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn keeps<'a>(&self, span: &impl SpanSource<'a>) -> bool {
        self.policies.iter().all(|p| {
            p.include.as_ref().is_none_or(|c| all_match(c, span))
                && !p.exclude.as_ref().is_some_and(|c| all_match(c, span))
        })
    }
}

fn all_match<'a>(conditions: &[Condition], span: &impl SpanSource<'a>) -> bool {
    conditions.iter().all(|c| {
        let e = span.essentials();
        let value = match &c.key {
            Key::Name => Some(e.name.into()),
            Key::Kind => Some(kind_label(e.kind).into()),
            Key::Status => Some(status_label(e.status_code).into()),
            Key::Span(k) => span.span_attribute(k),
            Key::Resource(k) => span.resource_attribute(k),
        };
        let Some(value) = value else { return false };
        match &c.matcher {
            Matcher::Strict(s) => *s == value,
            Matcher::Regex(r) => r.is_match(&value),
        }
    })
}
