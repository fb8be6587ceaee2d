//! Evaluating a parsed spanset query on one trace: field expressions on spans (arrays and the
//! event and link scopes are multi-valued: `=` holds when any value matches, `!=` when none
//! does), spanset operators, and pipeline stages over groups of spans.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;

use crate::ast::*;
use crate::model::{Span, SpanKind, StatusCode, Trace, Value};

mod structural;

use structural::structural;

/// A value during evaluation, borrowing from the trace where it can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Duration(u64),
    Status(StatusCode),
    Kind(SpanKind),
    Nil,
    /// An array: `=`, `=~`, `<`... hold when one element does; `!=` and `!~` when none is
    /// equal / matches (Tempo's array semantics).
    Multi(Vec<Val<'a>>),
    /// One value per event or link: a condition holds when it holds for one of them (Tempo
    /// evaluates event and link conditions per event and link).
    Each(Vec<Val<'a>>),
}

impl Val<'_> {
    pub(crate) fn number(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            Val::Duration(d) => Some(*d as f64),
            _ => None,
        }
    }

    /// As a model value (statuses and kinds as their names, durations in nanoseconds).
    pub(crate) fn to_value(&self) -> Option<Value> {
        Some(match self {
            Val::Str(s) => Value::Str(s.to_string()),
            Val::Int(i) => Value::Int(*i),
            Val::Float(f) => Value::Float(*f),
            Val::Bool(b) => Value::Bool(*b),
            Val::Duration(d) => Value::Int(i64::try_from(*d).unwrap_or(i64::MAX)),
            Val::Status(s) => Value::Str(crate::display::status_name(*s).to_string()),
            Val::Kind(k) => Value::Str(crate::display::kind_name(*k).to_string()),
            Val::Nil => return None,
            Val::Multi(items) | Val::Each(items) => {
                Value::Array(items.iter().filter_map(Val::to_value).collect())
            }
        })
    }
}

impl From<&Literal> for Val<'static> {
    fn from(literal: &Literal) -> Val<'static> {
        match literal {
            Literal::Str(s) => Val::Str(Cow::Owned(s.clone())),
            Literal::Int(i) => Val::Int(*i),
            Literal::Float(f) => Val::Float(*f),
            Literal::Bool(b) => Val::Bool(*b),
            Literal::Duration(d) => Val::Duration(*d),
            Literal::Status(s) => Val::Status(*s),
            Literal::Kind(k) => Val::Kind(*k),
            Literal::Nil => Val::Nil,
        }
    }
}

fn from_value(value: &Value) -> Val<'_> {
    match value {
        Value::Str(s) => Val::Str(Cow::Borrowed(s)),
        Value::Int(i) => Val::Int(*i),
        Value::Float(f) => Val::Float(*f),
        Value::Bool(b) => Val::Bool(*b),
        Value::Array(items) => Val::Multi(items.iter().map(from_value).collect()),
    }
}

/// One value per event or link, collapsed: none is nil, one is itself.
fn collapse(mut values: Vec<Val<'_>>) -> Val<'_> {
    match values.len() {
        0 => Val::Nil,
        1 => values.pop().unwrap_or(Val::Nil),
        _ => Val::Each(values),
    }
}

fn hex(bytes: &[u8]) -> Cow<'static, str> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    Cow::Owned(out)
}

/// Where each span sits in its trace's tree: parent index, direct children, and the nested
/// set numbering Tempo exposes (`nestedSetLeft/Right/Parent`; roots have parent -1, spans
/// not reachable from a root 0).
struct Tree {
    parent: Vec<Option<usize>>,
    children: Vec<Vec<usize>>,
    left: Vec<i64>,
    right: Vec<i64>,
    nested_parent: Vec<i64>,
}

/// Trace-level facts and the span tree, each computed on first use.
pub struct TraceContext<'t> {
    pub trace: &'t Trace,
    root: OnceCell<Option<usize>>,
    duration: OnceCell<u64>,
    tree: OnceCell<Tree>,
}

impl<'t> TraceContext<'t> {
    pub fn new(trace: &'t Trace) -> Self {
        TraceContext {
            trace,
            root: OnceCell::new(),
            duration: OnceCell::new(),
            tree: OnceCell::new(),
        }
    }

    fn root(&self) -> Option<&'t Span> {
        let index = *self.root.get_or_init(|| {
            self.trace
                .spans
                .iter()
                .position(|s| s.parent_span_id.is_none())
        });
        index.map(|i| &self.trace.spans[i])
    }

    fn duration(&self) -> u64 {
        *self.duration.get_or_init(|| {
            let spans = &self.trace.spans;
            let start = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
            let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(0);
            end.saturating_sub(start)
        })
    }

    fn tree(&self) -> &Tree {
        self.tree.get_or_init(|| build_tree(self.trace))
    }

    pub(crate) fn parent(&self, span: usize) -> Option<usize> {
        self.tree().parent.get(span).copied().flatten()
    }

    fn ancestors(&self, span: usize) -> impl Iterator<Item = usize> + '_ {
        let mut current = span;
        let mut steps = 0;
        std::iter::from_fn(move || {
            // Bounded: a malformed trace may have a parent cycle.
            steps += 1;
            if steps > self.trace.spans.len() {
                return None;
            }
            current = self.parent(current)?;
            Some(current)
        })
    }
}

fn build_tree(trace: &Trace) -> Tree {
    let n = trace.spans.len();
    let by_id: HashMap<[u8; 8], usize> = trace
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    let parent: Vec<Option<usize>> = trace
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parent_span_id
                .and_then(|p| by_id.get(&p).copied())
                .filter(|&p| p != i)
        })
        .collect();
    let mut children = vec![Vec::new(); n];
    for (i, p) in parent.iter().enumerate() {
        if let Some(p) = p {
            children[*p].push(i);
        }
    }
    for list in &mut children {
        list.sort_by_key(|&c| (trace.spans[c].start_unix_nano, c));
    }
    let mut left = vec![0i64; n];
    let mut right = vec![0i64; n];
    let mut nested_parent = vec![0i64; n];
    let mut counter = 0i64;
    let mut roots: Vec<usize> = (0..n)
        .filter(|&i| trace.spans[i].parent_span_id.is_none())
        .collect();
    roots.sort_by_key(|&r| (trace.spans[r].start_unix_nano, r));
    for root in roots {
        nested_parent[root] = -1;
        // Iterative depth-first walk: (span, next child to visit).
        let mut stack = vec![(root, 0usize)];
        counter += 1;
        left[root] = counter;
        while let Some((span, next)) = stack.last_mut() {
            let span = *span;
            if let Some(&child) = children[span].get(*next) {
                *next += 1;
                if left[child] != 0 {
                    continue; // a cycle
                }
                counter += 1;
                left[child] = counter;
                nested_parent[child] = left[span];
                stack.push((child, 0));
            } else {
                counter += 1;
                right[span] = counter;
                stack.pop();
            }
        }
    }
    Tree {
        parent,
        children,
        left,
        right,
        nested_parent,
    }
}

fn find<'a>(list: &'a [(String, Value)], name: &str) -> Option<Val<'a>> {
    list.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| from_value(v))
}

pub(crate) fn attribute<'a>(span: &'a Span, scope: Scope, name: &str) -> Val<'a> {
    let found = match scope {
        Scope::Span => find(&span.attributes, name),
        Scope::Resource => find(&span.resource_attributes, name),
        Scope::Unscoped => {
            find(&span.attributes, name).or_else(|| find(&span.resource_attributes, name))
        }
        Scope::Instrumentation => find(&span.scope.attributes, name),
        Scope::Event => Some(collapse(
            span.events
                .iter()
                .filter_map(|e| find(&e.attributes, name))
                .collect(),
        )),
        Scope::Link => Some(collapse(
            span.links
                .iter()
                .filter_map(|l| find(&l.attributes, name))
                .collect(),
        )),
    };
    found.unwrap_or(Val::Nil)
}

pub(crate) fn intrinsic<'a>(
    ctx: &TraceContext<'a>,
    index: usize,
    span: &'a Span,
    which: Intrinsic,
) -> Val<'a> {
    let borrowed = |s: &'a str| Val::Str(Cow::Borrowed(s));
    match which {
        Intrinsic::Name => borrowed(&span.name),
        Intrinsic::Status => Val::Status(span.status),
        Intrinsic::StatusMessage => borrowed(&span.status_message),
        Intrinsic::Kind => Val::Kind(span.kind),
        Intrinsic::Duration => Val::Duration(span.duration_nanos()),
        Intrinsic::SpanId => Val::Str(hex(&span.span_id)),
        Intrinsic::ParentId => span.parent_span_id.map_or(Val::Nil, |p| Val::Str(hex(&p))),
        Intrinsic::ChildCount => Val::Int(ctx.tree().children[index].len() as i64),
        Intrinsic::TraceId => Val::Str(hex(&span.trace_id)),
        Intrinsic::RootName => ctx.root().map_or(Val::Nil, |r| borrowed(&r.name)),
        Intrinsic::RootServiceName => ctx.root().map_or(Val::Nil, |r| borrowed(r.service_name())),
        Intrinsic::TraceDuration => Val::Duration(ctx.duration()),
        Intrinsic::NestedSetLeft => Val::Int(ctx.tree().left[index]),
        Intrinsic::NestedSetRight => Val::Int(ctx.tree().right[index]),
        Intrinsic::NestedSetParent => Val::Int(ctx.tree().nested_parent[index]),
        Intrinsic::EventName => collapse(span.events.iter().map(|e| borrowed(&e.name)).collect()),
        Intrinsic::EventTimeSinceStart => collapse(
            span.events
                .iter()
                .map(|e| Val::Duration(e.time_unix_nano.saturating_sub(span.start_unix_nano)))
                .collect(),
        ),
        Intrinsic::LinkTraceId => collapse(
            span.links
                .iter()
                .map(|l| Val::Str(hex(&l.trace_id)))
                .collect(),
        ),
        Intrinsic::LinkSpanId => collapse(
            span.links
                .iter()
                .map(|l| Val::Str(hex(&l.span_id)))
                .collect(),
        ),
        Intrinsic::InstrumentationName => borrowed(&span.scope.name),
        Intrinsic::InstrumentationVersion => borrowed(&span.scope.version),
    }
}

pub(crate) fn field<'a>(ctx: &TraceContext<'a>, index: usize, expr: &FieldExpr) -> Val<'a> {
    let span = &ctx.trace.spans[index];
    match expr {
        FieldExpr::Literal(literal) => Val::from(literal),
        FieldExpr::Attribute { scope, name } => attribute(span, *scope, name),
        FieldExpr::Intrinsic(which) => intrinsic(ctx, index, span, *which),
        FieldExpr::Not(inner) => match field(ctx, index, inner) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Nil,
        },
        FieldExpr::Negate(inner) => match field(ctx, index, inner) {
            Val::Int(i) => Val::Int(i.wrapping_neg()),
            Val::Float(f) => Val::Float(-f),
            _ => Val::Nil,
        },
        FieldExpr::Binary {
            op,
            lhs,
            rhs,
            regex,
        } => {
            let left = field(ctx, index, lhs);
            // && and || short-circuit; a missing side is false.
            match op {
                BinaryOp::And => {
                    return Val::Bool(
                        left == Val::Bool(true) && field(ctx, index, rhs) == Val::Bool(true),
                    )
                }
                BinaryOp::Or => {
                    return Val::Bool(
                        left == Val::Bool(true) || field(ctx, index, rhs) == Val::Bool(true),
                    )
                }
                _ => {}
            }
            let right = field(ctx, index, rhs);
            // `nil != x` is `x != nil`.
            if matches!(**lhs, FieldExpr::Literal(Literal::Nil))
                && matches!(op, BinaryOp::Eq | BinaryOp::NotEq)
            {
                return binary(*op, &right, &left, None);
            }
            binary(*op, &left, &right, regex.as_ref().map(|p| &p.0))
        }
    }
}

pub(crate) fn binary<'a>(
    op: BinaryOp,
    left: &Val<'a>,
    right: &Val<'a>,
    regex: Option<&regex::Regex>,
) -> Val<'a> {
    use BinaryOp::*;
    if let Val::Each(items) = left {
        return match op {
            Add | Sub | Mul | Div | Mod | Pow | And | Or => Val::Nil,
            _ => Val::Bool(
                items
                    .iter()
                    .any(|item| binary(op, item, right, regex) == Val::Bool(true)),
            ),
        };
    }
    if let Val::Each(items) = right {
        return match op {
            Add | Sub | Mul | Div | Mod | Pow | And | Or => Val::Nil,
            _ => Val::Bool(
                items
                    .iter()
                    .any(|item| binary(op, left, item, regex) == Val::Bool(true)),
            ),
        };
    }
    // Arrays: `=`, `=~`, `<`... hold when one element does; `!=` and `!~` when every element
    // does (no element is equal / matches).
    if let Val::Multi(items) = left {
        let mut results = items.iter().map(|item| binary(op, item, right, regex));
        return match op {
            NotEq | NotRegex => Val::Bool(results.all(|r| r == Val::Bool(true))),
            Eq | Gt | Gte | Lt | Lte | Regex => Val::Bool(results.any(|r| r == Val::Bool(true))),
            _ => Val::Nil,
        };
    }
    if let Val::Multi(items) = right {
        let mut results = items.iter().map(|item| binary(op, left, item, regex));
        return match op {
            NotEq => Val::Bool(results.all(|r| r == Val::Bool(true))),
            Eq | Gt | Gte | Lt | Lte => Val::Bool(results.any(|r| r == Val::Bool(true))),
            _ => Val::Nil,
        };
    }
    match op {
        Add | Sub | Mul | Div | Mod | Pow => arithmetic(op, left, right),
        Regex | NotRegex => match (left, regex) {
            (Val::Str(text), Some(re)) => Val::Bool(re.is_match(text) == (op == Regex)),
            _ => Val::Bool(false),
        },
        Eq | NotEq | Gt | Gte | Lt | Lte => comparison(op, left, right),
        And | Or => Val::Nil,
    }
}

fn arithmetic<'a>(op: BinaryOp, left: &Val<'a>, right: &Val<'a>) -> Val<'a> {
    use BinaryOp::*;
    if let (Val::Int(a), Val::Int(b)) = (left, right) {
        return match op {
            Add => Val::Int(a.wrapping_add(*b)),
            Sub => Val::Int(a.wrapping_sub(*b)),
            Mul => Val::Int(a.wrapping_mul(*b)),
            Div | Mod if *b == 0 => Val::Nil,
            Div => Val::Int(a.wrapping_div(*b)),
            Mod => Val::Int(a.wrapping_rem(*b)),
            _ => Val::Float((*a as f64).powf(*b as f64)),
        };
    }
    let (Some(a), Some(b)) = (left.number(), right.number()) else {
        return Val::Nil;
    };
    let result = match op {
        Add => a + b,
        Sub => a - b,
        Mul => a * b,
        Div | Mod if b == 0.0 => return Val::Nil,
        Div => a / b,
        Mod => a % b,
        _ => a.powf(b),
    };
    match (left, right) {
        (Val::Duration(_), _) | (_, Val::Duration(_)) => Val::Duration(result.max(0.0) as u64),
        _ => Val::Float(result),
    }
}

fn comparison<'a>(op: BinaryOp, left: &Val<'a>, right: &Val<'a>) -> Val<'a> {
    use std::cmp::Ordering::*;
    use BinaryOp::*;
    // `x = nil` tests absence, `x != nil` presence; otherwise a missing value never matches.
    if *right == Val::Nil || *left == Val::Nil {
        let (l, r) = (*left == Val::Nil, *right == Val::Nil);
        return Val::Bool(match op {
            Eq => l && r,
            // Only `x != nil` (x present); a missing value is never unequal to a value.
            NotEq => !l && r,
            _ => false,
        });
    }
    let equality_only =
        |equal: bool| matches!(op, Eq | NotEq).then_some(if equal { Equal } else { Less });
    let ordering = match (left, right) {
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(b)),
        (Val::Status(a), Val::Status(b)) => equality_only(a == b),
        (Val::Kind(a), Val::Kind(b)) => equality_only(a == b),
        _ => match (left.number(), right.number()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
    };
    let Some(ordering) = ordering else {
        // Different types: never equal, and != holds only between comparable types.
        return Val::Bool(false);
    };
    Val::Bool(match op {
        Eq => ordering == Equal,
        NotEq => ordering != Equal,
        Gt => ordering == Greater,
        Gte => ordering != Less,
        Lt => ordering == Less,
        _ => ordering != Greater,
    })
}

fn matches(ctx: &TraceContext<'_>, expr: Option<&FieldExpr>, index: usize) -> bool {
    match expr {
        None => true,
        Some(expr) => field(ctx, index, expr) == Val::Bool(true),
    }
}

/// Span indices, ascending.
type Spans = Vec<usize>;

pub(crate) fn spanset(ctx: &TraceContext<'_>, expr: &SpansetExpr) -> Spans {
    match expr {
        SpansetExpr::Filter(e) => (0..ctx.trace.spans.len())
            .filter(|&i| matches(ctx, e.as_ref(), i))
            .collect(),
        SpansetExpr::Pipeline(p) => {
            let groups = pipeline(ctx, p).0;
            let mut all: Spans = groups.into_iter().flat_map(|g| g.spans).collect();
            all.sort_unstable();
            all.dedup();
            all
        }
        SpansetExpr::Binary { op, lhs, rhs } => {
            let left = spanset(ctx, lhs);
            let right = spanset(ctx, rhs);
            structural(ctx, *op, &left, &right)
        }
    }
}

/// A spanset during a pipeline: its spans and the `by()` values that formed it.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub spans: Spans,
    pub by: Vec<(String, Option<Value>)>,
}

/// The spansets after every stage, and the fields `select()` asked for.
pub(crate) fn pipeline(ctx: &TraceContext<'_>, p: &Pipeline) -> (Vec<Group>, Vec<FieldExpr>) {
    let first = spanset(ctx, &p.spanset);
    let mut groups = if first.is_empty() {
        Vec::new()
    } else {
        vec![Group {
            spans: first,
            by: Vec::new(),
        }]
    };
    let mut selected = Vec::new();
    for stage in &p.stages {
        if groups.is_empty() {
            break;
        }
        match stage {
            Stage::Filter(e) => {
                for g in &mut groups {
                    g.spans.retain(|&i| matches(ctx, e.as_ref(), i));
                }
                groups.retain(|g| !g.spans.is_empty());
            }
            Stage::Select(fields) => selected.extend(fields.iter().cloned()),
            Stage::Coalesce => {
                let mut all: Spans = groups.drain(..).flat_map(|g| g.spans).collect();
                all.sort_unstable();
                all.dedup();
                groups.push(Group {
                    spans: all,
                    by: Vec::new(),
                });
            }
            Stage::By(expr) => {
                let label = expr.to_string();
                let mut out: Vec<Group> = Vec::new();
                for g in groups.drain(..) {
                    let mut keyed: Vec<(Option<Value>, Spans)> = Vec::new();
                    for &i in &g.spans {
                        let value = field(ctx, i, expr).to_value();
                        match keyed.iter_mut().find(|(k, _)| *k == value) {
                            Some((_, spans)) => spans.push(i),
                            None => keyed.push((value, vec![i])),
                        }
                    }
                    for (value, spans) in keyed {
                        let mut by = g.by.clone();
                        by.push((label.clone(), value));
                        out.push(Group { spans, by });
                    }
                }
                groups = out;
            }
            Stage::Aggregate {
                function,
                field: f,
                op,
                value,
            } => groups.retain(|g| aggregate_holds(ctx, g, *function, f.as_ref(), *op, value)),
        }
    }
    (groups, selected)
}

fn aggregate_holds(
    ctx: &TraceContext<'_>,
    group: &Group,
    function: Aggregate,
    f: Option<&FieldExpr>,
    op: BinaryOp,
    value: &Literal,
) -> bool {
    let values: Vec<Val<'_>> = match f {
        None => Vec::new(),
        Some(f) => group.spans.iter().map(|&i| field(ctx, i, f)).collect(),
    };
    let numbers: Vec<f64> = values.iter().filter_map(Val::number).collect();
    let is_duration = values.iter().any(|v| matches!(v, Val::Duration(_)));
    let result = match function {
        Aggregate::Count => Some(group.spans.len() as f64),
        _ if numbers.is_empty() => None,
        Aggregate::Sum => Some(numbers.iter().sum()),
        Aggregate::Avg => Some(numbers.iter().sum::<f64>() / numbers.len() as f64),
        Aggregate::Min => numbers.iter().copied().reduce(f64::min),
        Aggregate::Max => numbers.iter().copied().reduce(f64::max),
    };
    result.is_some_and(|r| {
        let left = if is_duration {
            Val::Duration(r.max(0.0) as u64)
        } else {
            Val::Float(r)
        };
        binary(op, &left, &Val::from(value), None) == Val::Bool(true)
    })
}

/// The attributes and intrinsics a query names (to return them with matched spans).
pub(crate) fn referenced(expr: &FieldExpr, out: &mut Vec<FieldExpr>) {
    match expr {
        FieldExpr::Attribute { .. } | FieldExpr::Intrinsic(_) => {
            if !out.contains(expr) {
                out.push(expr.clone());
            }
        }
        FieldExpr::Not(inner) | FieldExpr::Negate(inner) => referenced(inner, out),
        FieldExpr::Binary { lhs, rhs, .. } => {
            referenced(lhs, out);
            referenced(rhs, out);
        }
        FieldExpr::Literal(_) => {}
    }
}

pub(crate) fn referenced_in_spanset(expr: &SpansetExpr, out: &mut Vec<FieldExpr>) {
    match expr {
        SpansetExpr::Filter(Some(e)) => referenced(e, out),
        SpansetExpr::Filter(None) => {}
        SpansetExpr::Binary { lhs, rhs, .. } => {
            referenced_in_spanset(lhs, out);
            referenced_in_spanset(rhs, out);
        }
        SpansetExpr::Pipeline(p) => referenced_in_spanset(&p.spanset, out),
    }
}
