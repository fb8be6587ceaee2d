//! Evaluating a parsed query on one trace.

use std::collections::{BTreeSet, HashMap};

use crate::ast::*;
use crate::model::{Span, SpanKind, StatusCode, Trace, Value};

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Duration(u64),
    Status(StatusCode),
    Kind(SpanKind),
    Nil,
}

impl Val {
    fn number(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            Val::Duration(d) => Some(*d as f64),
            _ => None,
        }
    }
}

impl From<&Literal> for Val {
    fn from(literal: &Literal) -> Val {
        match literal {
            Literal::Str(s) => Val::Str(s.clone()),
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

impl From<&Value> for Val {
    fn from(value: &Value) -> Val {
        match value {
            Value::Str(s) => Val::Str(s.clone()),
            Value::Int(i) => Val::Int(*i),
            Value::Float(f) => Val::Float(*f),
            Value::Bool(b) => Val::Bool(*b),
        }
    }
}

/// Trace-level facts and the span tree, computed once per trace.
pub struct TraceContext<'t> {
    pub trace: &'t Trace,
    root_name: String,
    root_service: String,
    duration: u64,
    /// Span index by span id.
    by_id: HashMap<[u8; 8], usize>,
}

impl<'t> TraceContext<'t> {
    pub fn new(trace: &'t Trace) -> Self {
        let root = trace.spans.iter().find(|s| s.parent_span_id.is_none());
        let start = trace
            .spans
            .iter()
            .map(|s| s.start_unix_nano)
            .min()
            .unwrap_or(0);
        let end = trace
            .spans
            .iter()
            .map(|s| s.end_unix_nano)
            .max()
            .unwrap_or(0);
        TraceContext {
            trace,
            root_name: root.map(|s| s.name.clone()).unwrap_or_default(),
            root_service: root
                .map(|s| s.service_name().to_string())
                .unwrap_or_default(),
            duration: end.saturating_sub(start),
            by_id: trace
                .spans
                .iter()
                .enumerate()
                .map(|(i, s)| (s.span_id, i))
                .collect(),
        }
    }

    fn parent(&self, span: usize) -> Option<usize> {
        let parent = self.trace.spans.get(span)?.parent_span_id?;
        self.by_id.get(&parent).copied()
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

fn attribute(span: &Span, scope: Scope, name: &str) -> Val {
    let find = |list: &[(String, Value)]| {
        list.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| Val::from(v))
    };
    let found = match scope {
        Scope::Span => find(&span.attributes),
        Scope::Resource => find(&span.resource_attributes),
        Scope::Unscoped => find(&span.attributes).or_else(|| find(&span.resource_attributes)),
    };
    found.unwrap_or(Val::Nil)
}

fn field(ctx: &TraceContext<'_>, span: &Span, expr: &FieldExpr) -> Val {
    match expr {
        FieldExpr::Literal(literal) => Val::from(literal),
        FieldExpr::Attribute { scope, name } => attribute(span, *scope, name),
        FieldExpr::Intrinsic(intrinsic) => match intrinsic {
            Intrinsic::Name => Val::Str(span.name.clone()),
            Intrinsic::Status => Val::Status(span.status),
            Intrinsic::StatusMessage => Val::Str(span.status_message.clone()),
            Intrinsic::Kind => Val::Kind(span.kind),
            Intrinsic::Duration => Val::Duration(span.duration_nanos()),
            Intrinsic::RootName => Val::Str(ctx.root_name.clone()),
            Intrinsic::RootServiceName => Val::Str(ctx.root_service.clone()),
            Intrinsic::TraceDuration => Val::Duration(ctx.duration),
        },
        FieldExpr::Not(inner) => match field(ctx, span, inner) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Nil,
        },
        FieldExpr::Negate(inner) => match field(ctx, span, inner) {
            Val::Int(i) => Val::Int(-i),
            Val::Float(f) => Val::Float(-f),
            _ => Val::Nil,
        },
        FieldExpr::Binary {
            op,
            lhs,
            rhs,
            regex,
        } => {
            let left = field(ctx, span, lhs);
            // && and || short-circuit; a missing side is false.
            match op {
                BinaryOp::And => {
                    return Val::Bool(
                        left == Val::Bool(true) && field(ctx, span, rhs) == Val::Bool(true),
                    )
                }
                BinaryOp::Or => {
                    return Val::Bool(
                        left == Val::Bool(true) || field(ctx, span, rhs) == Val::Bool(true),
                    )
                }
                _ => {}
            }
            let right = field(ctx, span, rhs);
            binary(*op, &left, &right, regex.as_ref())
        }
    }
}

fn binary(op: BinaryOp, left: &Val, right: &Val, regex: Option<&regex::Regex>) -> Val {
    use BinaryOp::*;
    match op {
        Add | Sub | Mul | Div => {
            let (Some(a), Some(b)) = (left.number(), right.number()) else {
                return Val::Nil;
            };
            let result = match op {
                Add => a + b,
                Sub => a - b,
                Mul => a * b,
                _ if b == 0.0 => return Val::Nil,
                _ => a / b,
            };
            match (left, right) {
                (Val::Int(_), Val::Int(_)) if op != Div => Val::Int(result as i64),
                (Val::Duration(_), _) | (_, Val::Duration(_)) => {
                    Val::Duration(result.max(0.0) as u64)
                }
                _ => Val::Float(result),
            }
        }
        Regex | NotRegex => match (left, regex) {
            (Val::Str(text), Some(re)) => Val::Bool(re.is_match(text) == (op == Regex)),
            _ => Val::Bool(false),
        },
        Eq | NotEq | Gt | Gte | Lt | Lte => {
            // `x = nil` tests absence, `x != nil` presence; otherwise a missing value never matches.
            if *right == Val::Nil || *left == Val::Nil {
                let both_nil = *left == Val::Nil && *right == Val::Nil;
                return Val::Bool(match op {
                    Eq => both_nil,
                    NotEq => {
                        !both_nil
                            && (*left == Val::Nil) != (*right == Val::Nil)
                            && *left != Val::Nil
                    }
                    _ => false,
                });
            }
            let ordering = match (left, right) {
                (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
                (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(b)),
                (Val::Status(a), Val::Status(b)) => (a == b)
                    .then_some(std::cmp::Ordering::Equal)
                    .or(Some(std::cmp::Ordering::Less))
                    .filter(|_| matches!(op, Eq | NotEq)),
                (Val::Kind(a), Val::Kind(b)) => (a == b)
                    .then_some(std::cmp::Ordering::Equal)
                    .or(Some(std::cmp::Ordering::Less))
                    .filter(|_| matches!(op, Eq | NotEq)),
                _ => match (left.number(), right.number()) {
                    (Some(a), Some(b)) => a.partial_cmp(&b),
                    _ => None,
                },
            };
            let Some(ordering) = ordering else {
                // Different types: never equal, and != holds only between comparable types.
                return Val::Bool(false);
            };
            use std::cmp::Ordering::*;
            Val::Bool(match op {
                Eq => ordering == Equal,
                NotEq => ordering != Equal,
                Gt => ordering == Greater,
                Gte => ordering != Less,
                Lt => ordering == Less,
                _ => ordering != Greater,
            })
        }
        And | Or => Val::Nil,
    }
}

fn filter(
    ctx: &TraceContext<'_>,
    expr: Option<&FieldExpr>,
    among: impl Iterator<Item = usize>,
) -> BTreeSet<usize> {
    among
        .filter(|&i| match expr {
            None => true,
            Some(expr) => field(ctx, &ctx.trace.spans[i], expr) == Val::Bool(true),
        })
        .collect()
}

pub fn spanset(ctx: &TraceContext<'_>, expr: &SpansetExpr) -> BTreeSet<usize> {
    match expr {
        SpansetExpr::Filter(e) => filter(ctx, e.as_ref(), 0..ctx.trace.spans.len()),
        SpansetExpr::Pipeline(p) => pipeline(ctx, p).0,
        SpansetExpr::Binary { op, lhs, rhs } => {
            let left = spanset(ctx, lhs);
            let right = spanset(ctx, rhs);
            match op {
                SpansetOp::And if left.is_empty() || right.is_empty() => BTreeSet::new(),
                SpansetOp::And | SpansetOp::Or => left.union(&right).copied().collect(),
                SpansetOp::Child => right
                    .into_iter()
                    .filter(|&r| ctx.parent(r).is_some_and(|p| left.contains(&p)))
                    .collect(),
                SpansetOp::Descendant => right
                    .into_iter()
                    .filter(|&r| ctx.ancestors(r).any(|a| left.contains(&a)))
                    .collect(),
                SpansetOp::Parent => {
                    let parents: BTreeSet<usize> =
                        right.iter().filter_map(|&r| ctx.parent(r)).collect();
                    left.intersection(&parents).copied().collect()
                }
                SpansetOp::Ancestor => {
                    let ancestors: BTreeSet<usize> =
                        right.iter().flat_map(|&r| ctx.ancestors(r)).collect();
                    left.intersection(&ancestors).copied().collect()
                }
                SpansetOp::Sibling => right
                    .into_iter()
                    .filter(|&r| {
                        let parent = ctx.trace.spans[r].parent_span_id;
                        parent.is_some()
                            && left
                                .iter()
                                .any(|&l| l != r && ctx.trace.spans[l].parent_span_id == parent)
                    })
                    .collect(),
            }
        }
    }
}

/// The spans after every stage, and the fields `select()` asked for.
pub fn pipeline(ctx: &TraceContext<'_>, p: &Pipeline) -> (BTreeSet<usize>, Vec<FieldExpr>) {
    let mut spans = spanset(ctx, &p.spanset);
    let mut selected = Vec::new();
    for stage in &p.stages {
        if spans.is_empty() {
            break;
        }
        match stage {
            Stage::Filter(e) => spans = filter(ctx, e.as_ref(), spans.into_iter()),
            Stage::Select(fields) => selected.extend(fields.iter().cloned()),
            Stage::Aggregate {
                function,
                field: f,
                op,
                value,
            } => {
                let values: Vec<Val> = match f {
                    None => Vec::new(),
                    Some(f) => spans
                        .iter()
                        .map(|&i| field(ctx, &ctx.trace.spans[i], f))
                        .collect(),
                };
                let numbers: Vec<f64> = values.iter().filter_map(Val::number).collect();
                let is_duration = values.iter().any(|v| matches!(v, Val::Duration(_)));
                let result = match function {
                    Aggregate::Count => Some(spans.len() as f64),
                    _ if numbers.is_empty() => None,
                    Aggregate::Sum => Some(numbers.iter().sum()),
                    Aggregate::Avg => Some(numbers.iter().sum::<f64>() / numbers.len() as f64),
                    Aggregate::Min => numbers.iter().copied().reduce(f64::min),
                    Aggregate::Max => numbers.iter().copied().reduce(f64::max),
                };
                let keep = result.is_some_and(|r| {
                    let left = if is_duration {
                        Val::Duration(r.max(0.0) as u64)
                    } else {
                        Val::Float(r)
                    };
                    binary(*op, &left, &Val::from(value), None) == Val::Bool(true)
                });
                if !keep {
                    spans.clear();
                }
            }
        }
    }
    (spans, selected)
}

/// The attributes a query names (to return them with matched spans).
pub fn referenced(expr: &FieldExpr, out: &mut Vec<(Scope, String)>) {
    match expr {
        FieldExpr::Attribute { scope, name } => {
            if !out.iter().any(|(s, n)| s == scope && n == name) {
                out.push((*scope, name.clone()));
            }
        }
        FieldExpr::Not(inner) | FieldExpr::Negate(inner) => referenced(inner, out),
        FieldExpr::Binary { lhs, rhs, .. } => {
            referenced(lhs, out);
            referenced(rhs, out);
        }
        FieldExpr::Literal(_) | FieldExpr::Intrinsic(_) => {}
    }
}

pub fn referenced_in_spanset(expr: &SpansetExpr, out: &mut Vec<(Scope, String)>) {
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

/// The value of an attribute on a span, as stored.
pub fn attribute_value(span: &Span, scope: Scope, name: &str) -> Option<Value> {
    let find =
        |list: &[(String, Value)]| list.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match scope {
        Scope::Span => find(&span.attributes),
        Scope::Resource => find(&span.resource_attributes),
        Scope::Unscoped => find(&span.attributes).or_else(|| find(&span.resource_attributes)),
    }
}
