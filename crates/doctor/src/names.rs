//! Span-name cardinality: per service and span kind, names that carry ids (numbers, UUIDs, hex,
//! emails) are reduced to the route template they should have (`GET /api/v2/orders/{orderId}`),
//! and groups with too many distinct names are reported even when no id is recognised.

use std::collections::{HashMap, HashSet};

use crate::finding::{Category, Example, Finding, Severity};
use crate::spans::{kind_name, TraceIndex};
use crate::Thresholds;

/// Distinct raw names kept per group: enough to tell "many" from "few".
const MAX_DISTINCT: usize = 10_000;
const MAX_RAW_PER_TEMPLATE: usize = 1_000;

#[derive(Default)]
struct TemplateStats {
    spans: u64,
    raw: HashSet<String>,
    examples: Vec<([u8; 16], String)>,
}

#[derive(Default)]
struct Group {
    spans: u64,
    /// Distinct names, each with its template (None: no id in it). Doubles as a cache: a name
    /// seen before is not parsed again, which is most spans of a healthy estate.
    distinct: HashMap<String, Option<String>>,
    /// Templates of names that contained ids.
    templates: HashMap<String, TemplateStats>,
}

/// Groups by service, then span kind (nested, so a span's group is found without allocating).
#[derive(Default)]
pub struct NameDetector {
    groups: HashMap<String, HashMap<&'static str, Group>>,
}

impl NameDetector {
    pub fn observe(&mut self, index: &TraceIndex<'_>, thresholds: &Thresholds) {
        for span in &index.trace.spans {
            let service = span.service_name();
            let kinds = match self.groups.get_mut(service) {
                Some(kinds) => kinds,
                None => self.groups.entry(service.to_string()).or_default(),
            };
            let group = kinds.entry(kind_name(span.kind)).or_default();
            group.spans += 1;
            let template = match group.distinct.get(&span.name) {
                Some(cached) => cached.clone(),
                None => {
                    let template = template(&span.name);
                    if group.distinct.len() < MAX_DISTINCT {
                        group.distinct.insert(span.name.clone(), template.clone());
                    }
                    template
                }
            };
            if let Some(template) = template {
                let stats = group.templates.entry(template).or_default();
                stats.spans += 1;
                if stats.raw.len() < MAX_RAW_PER_TEMPLATE && !stats.raw.contains(&span.name) {
                    stats.raw.insert(span.name.clone());
                    if stats.examples.len() < thresholds.examples {
                        stats
                            .examples
                            .push((index.trace.trace_id, span.name.clone()));
                    }
                }
            }
        }
    }

    pub fn findings(self, thresholds: &Thresholds) -> Vec<Finding> {
        let mut findings = Vec::new();
        let groups = self.groups.into_iter().flat_map(|(service, kinds)| {
            kinds.into_iter().map(move |(k, g)| (service.clone(), k, g))
        });
        for (service, kind, group) in groups {
            let mut explained = 0usize;
            for (template, stats) in &group.templates {
                if stats.raw.len() < 2 || stats.spans < thresholds.min_count {
                    continue;
                }
                explained += stats.raw.len();
                let distinct = if stats.raw.len() >= MAX_RAW_PER_TEMPLATE {
                    format!("{MAX_RAW_PER_TEMPLATE}+")
                } else {
                    stats.raw.len().to_string()
                };
                findings.push(Finding {
                    kind: "span_name_has_ids".into(),
                    category: Category::SpanNames,
                    severity: if stats.raw.len() >= 100 {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    title: format!(
                        "{service} names {} spans with raw ids: {distinct} names for `{template}`",
                        kind
                    ),
                    services: vec![service.clone()],
                    hop: None,
                    attribute: Some(template.clone()),
                    count: stats.spans,
                    total: group.spans,
                    examples: stats
                        .examples
                        .iter()
                        .map(|(t, name)| Example::trace(t).with_note(name.clone()))
                        .collect(),
                    detail: format!(
                        "{} {} spans of {service} carry ids in their name ({distinct} distinct \
                         names): every id becomes a new span name, which breaks grouping by \
                         operation and grows indexes and metrics derived from names.",
                        stats.spans, kind
                    ),
                    fix: format!(
                        "Name these spans by their route template `{template}` and put the ids in \
                         attributes (for HTTP servers: set `http.route`, name = `{{method}} \
                         {{http.route}}`). Until the service is fixed, the collector can rename \
                         them."
                    ),
                    fix_config: Some(rename_snippet(template)),
                });
            }
            let unexplained = group.distinct.len().saturating_sub(explained);
            if unexplained > thresholds.max_span_names {
                findings.push(Finding {
                    kind: "span_name_cardinality".into(),
                    category: Category::SpanNames,
                    severity: Severity::Warning,
                    title: format!(
                        "{service} uses {}{} distinct {} span names",
                        group.distinct.len(),
                        if group.distinct.len() >= MAX_DISTINCT {
                            "+"
                        } else {
                            ""
                        },
                        kind
                    ),
                    services: vec![service.clone()],
                    hop: None,
                    attribute: None,
                    count: group.distinct.len() as u64,
                    total: group.spans,
                    examples: Vec::new(),
                    detail: format!(
                        "More than {} distinct names for one service and kind: names should \
                         name operations, not requests.",
                        thresholds.max_span_names
                    ),
                    fix: "Move the varying part of the name into attributes.".into(),
                    fix_config: None,
                });
            }
        }
        findings
    }
}

/// An upstream `transform` processor statement that renames the spans to their template.
fn rename_snippet(template: &str) -> String {
    let mut pattern = String::from("^");
    for piece in split_keep(template) {
        if piece.starts_with('{') && piece.ends_with('}') {
            pattern.push_str("[^/ ?]+");
        } else {
            for c in piece.chars() {
                if "\\.+*?()|[]{}^$".contains(c) {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
        }
    }
    pattern.push('$');
    let pattern = pattern.replace('\\', "\\\\").replace('"', "\\\"");
    let template = template.replace('"', "\\\"");
    format!(
        "processors:\n  transform/span-names:\n    trace_statements:\n      - context: span\n        \
         statements:\n          - replace_pattern(name, \"{pattern}\", \"{template}\")\n"
    )
}

/// A name split into tokens and the separators between them, both kept.
fn split_keep(name: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, c) in name.char_indices() {
        if is_separator(c) {
            if start < i {
                pieces.push(&name[start..i]);
            }
            pieces.push(&name[i..i + c.len_utf8()]);
            start = i + c.len_utf8();
        }
    }
    if start < name.len() {
        pieces.push(&name[start..]);
    }
    pieces
}

fn is_separator(c: char) -> bool {
    matches!(c, '/' | ' ' | ':' | ',' | '=' | '&' | ';')
}

/// The template of a name that contains ids, or None when it has none. A query string is
/// dropped; each id token becomes `{<singular of the previous segment>Id}` (or `{id}`).
pub fn template(name: &str) -> Option<String> {
    let (path, query) = match name.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (name, None),
    };
    let mut out = String::with_capacity(path.len());
    let mut changed = query.is_some_and(|q| !q.is_empty());
    let mut previous_word: Option<&str> = None;
    for piece in split_keep(path) {
        if piece.len() == 1 && piece.chars().all(is_separator) {
            out.push_str(piece);
            continue;
        }
        match id_kind(piece) {
            Some(kind) => {
                changed = true;
                out.push('{');
                out.push_str(&placeholder(previous_word, kind));
                out.push('}');
            }
            None => {
                out.push_str(piece);
                if piece.chars().any(|c| c.is_ascii_alphabetic()) && !is_version(piece) {
                    previous_word = Some(piece);
                }
            }
        }
    }
    changed.then_some(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Number,
    Uuid,
    Hex,
    Email,
    Token,
}

fn placeholder(previous: Option<&str>, kind: IdKind) -> String {
    if kind == IdKind::Email {
        return "email".into();
    }
    let Some(word) = previous.filter(|w| {
        w.chars()
            .all(|c| c.is_ascii_alphabetic() || c == '-' || c == '_')
    }) else {
        return "id".into();
    };
    let lower = word.to_ascii_lowercase();
    let singular = if let Some(stem) = lower.strip_suffix("ies") {
        format!("{stem}y")
    } else if lower.ends_with("ss") {
        lower.clone()
    } else if let Some(stem) = lower.strip_suffix('s') {
        stem.to_string()
    } else {
        lower.clone()
    };
    // camelCase: order-items → orderItem.
    let mut camel = String::new();
    let mut upper = false;
    for c in singular.chars() {
        if c == '-' || c == '_' {
            upper = true;
        } else if upper {
            camel.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            camel.push(c);
        }
    }
    format!("{camel}Id")
}

/// `v2`, `v1.3`, `1.0`: a version, which belongs to the route.
fn is_version(token: &str) -> bool {
    let digits = token
        .strip_prefix('v')
        .or_else(|| token.strip_prefix('V'))
        .unwrap_or(token);
    let has_v = digits.len() != token.len();
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && !digits.starts_with('.')
        && !digits.ends_with('.')
        && (has_v || digits.contains('.'))
}

/// What kind of id a token is, or None for a word.
pub fn id_kind(token: &str) -> Option<IdKind> {
    if token.is_empty() || is_version(token) {
        return None;
    }
    if token.chars().all(|c| c.is_ascii_digit()) {
        return Some(IdKind::Number);
    }
    if is_uuid(token) {
        return Some(IdKind::Uuid);
    }
    if let Some((local, domain)) = token.split_once('@') {
        if !local.is_empty() && domain.contains('.') && !domain.starts_with('.') {
            return Some(IdKind::Email);
        }
    }
    let digits = token.chars().filter(|c| c.is_ascii_digit()).count();
    if token.len() >= 8 && digits >= 1 && token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Some(IdKind::Hex);
    }
    let alnum = token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if alnum && token.len() >= 8 && digits >= 3 && token.chars().any(|c| c.is_ascii_alphabetic()) {
        return Some(IdKind::Token);
    }
    None
}

fn is_uuid(token: &str) -> bool {
    let parts: Vec<&str> = token.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}
