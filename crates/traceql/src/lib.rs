//! TraceQL, Grafana Tempo's trace query language: a parser with positioned errors, an
//! evaluator over one trace at a time, and TraceQL metrics (spans in, time series out).
//!
//! ```
//! let query = threadline_traceql::parse(r#"{ resource.service.name = "api" && duration > 2s }"#).unwrap();
//! # let _ = query;
//! ```

pub mod ast;
mod display;
mod eval;
mod lexer;
pub mod metrics;
pub mod model;
mod parser;
mod parser_metrics;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_language;
#[cfg(test)]
mod tests_metrics;

use ast::{FieldExpr, Literal, Pipeline, Root, RootExpr, Scope, SpansetExpr};
use model::{Trace, Value};

/// A malformed query: where, and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parse error at line {line}, column {column}: {message}")]
pub struct ParseError {
    /// Byte offset in the query.
    pub position: usize,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ParseError {
    fn new(query: &str, position: usize, message: impl Into<String>) -> Self {
        let position = position.min(query.len());
        let before = query.get(..position).unwrap_or(query);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ParseError {
            position,
            line,
            column,
            message: message.into(),
        }
    }
}

/// One matched span, with the attributes the query named (filters and `select`).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanMatch {
    /// Index into the trace's spans.
    pub span: usize,
    /// Attributes named by the query, keyed as written (`span.x`, `resource.x`, `x` for `.x`).
    /// Event and link attributes hold one value per event/link (an array when several).
    pub attributes: Vec<(String, Value)>,
    /// Intrinsics named by the query (`status`, `nestedSetParent`, ...), keyed by their
    /// canonical spelling; statuses and kinds as their names, durations in nanoseconds.
    pub intrinsics: Vec<(String, Value)>,
}

/// One spanset of a trace: the result of `by()` groups one per value.
#[derive(Debug, Clone, PartialEq)]
pub struct SpansetMatch {
    pub spans: Vec<SpanMatch>,
    /// The `by()` expressions and the value this spanset has for each (None: nil).
    pub by: Vec<(String, Option<Value>)>,
}

/// A parsed query.
#[derive(Debug, Clone)]
pub struct Query {
    expr: RootExpr,
}

/// Parses a TraceQL query (a spanset query or a metrics query).
pub fn parse(query: &str) -> Result<Query, ParseError> {
    Ok(Query {
        expr: parser::parse(query)?,
    })
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.expr.fmt(f)
    }
}

impl Query {
    /// The parsed tree.
    pub fn ast(&self) -> &RootExpr {
        &self.expr
    }

    /// Whether this is a metrics query (`... | rate()`), for `/api/metrics/*` only.
    pub fn is_metrics(&self) -> bool {
        matches!(self.expr.root, Root::Metrics(_))
    }

    /// A `with(...)` hint's value.
    pub fn hint(&self, name: &str) -> Option<&Literal> {
        self.expr
            .hints
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// `with(most_recent=true)`: the caller should return the most recent traces.
    pub fn most_recent(&self) -> bool {
        self.hint("most_recent") == Some(&Literal::Bool(true))
    }

    fn spans_pipeline(&self) -> Option<&Pipeline> {
        match &self.expr.root {
            Root::Spans(p) => Some(p),
            Root::Metrics(_) => None,
        }
    }

    /// The matched spans of `trace` (all spansets together), or None when the trace does not
    /// match. Always None for a metrics query.
    pub fn evaluate(&self, trace: &Trace) -> Option<Vec<SpanMatch>> {
        let sets = self.evaluate_spansets(trace);
        match sets.len() {
            0 => None,
            1 => sets.into_iter().next().map(|s| s.spans),
            _ => {
                let mut all: Vec<SpanMatch> = sets.into_iter().flat_map(|s| s.spans).collect();
                all.sort_by_key(|m| m.span);
                all.dedup_by_key(|m| m.span);
                Some(all)
            }
        }
    }

    /// The spansets of `trace` (several after `by()`), empty when the trace does not match.
    pub fn evaluate_spansets(&self, trace: &Trace) -> Vec<SpansetMatch> {
        let Some(pipeline) = self.spans_pipeline() else {
            return Vec::new();
        };
        let ctx = eval::TraceContext::new(trace);
        let (groups, selected) = eval::pipeline(&ctx, pipeline);
        if groups.is_empty() {
            return Vec::new();
        }
        let mut fields = Vec::new();
        eval::referenced_in_spanset(&pipeline.spanset, &mut fields);
        for field in &selected {
            eval::referenced(field, &mut fields);
        }
        groups
            .into_iter()
            .map(|group| SpansetMatch {
                spans: group
                    .spans
                    .iter()
                    .map(|&i| span_match(&ctx, i, &fields))
                    .collect(),
                by: group.by,
            })
            .collect()
    }

    /// Conditions every matching trace must meet, for a store to skip traces without reading
    /// them: `(service name, needs an error span)`. Found only in a single filter's top-level
    /// `&&` conjuncts (of a spanset query, or of a metrics query's pipeline); `None`/`false`
    /// when unknown (never narrower than the query).
    pub fn hints(&self) -> (Option<String>, bool) {
        let pipeline = match &self.expr.root {
            Root::Spans(p) => p,
            Root::Metrics(ast::MetricsExpr::Pipeline { pipeline, .. }) => pipeline,
            Root::Metrics(_) => return (None, false),
        };
        pipeline_hints(pipeline)
    }
}

fn span_match(ctx: &eval::TraceContext<'_>, index: usize, fields: &[FieldExpr]) -> SpanMatch {
    let span = &ctx.trace.spans[index];
    let mut attributes = Vec::new();
    let mut intrinsics = Vec::new();
    for f in fields {
        match f {
            FieldExpr::Attribute { scope, name } => {
                if let Some(value) = eval::attribute(span, *scope, name).to_value() {
                    let key = match scope {
                        Scope::Unscoped => name.clone(),
                        other => format!("{}{name}", other.prefix()),
                    };
                    attributes.push((key, value));
                }
            }
            FieldExpr::Intrinsic(which) => {
                if let Some(value) = eval::intrinsic(ctx, index, span, *which).to_value() {
                    intrinsics.push((which.name().to_string(), value));
                }
            }
            _ => {}
        }
    }
    SpanMatch {
        span: index,
        attributes,
        intrinsics,
    }
}

pub(crate) fn pipeline_hints(pipeline: &Pipeline) -> (Option<String>, bool) {
    let mut service = None;
    let mut error = false;
    let only_filters = pipeline
        .stages
        .iter()
        .all(|s| matches!(s, ast::Stage::Select(_)));
    if !only_filters {
        return (None, false);
    }
    if let SpansetExpr::Filter(Some(expr)) = &pipeline.spanset {
        let mut conjuncts = Vec::new();
        collect_conjuncts(expr, &mut conjuncts);
        // `a || b && c` is `(a || b) && c` in TraceQL: conjuncts only come from && nodes.
        for c in conjuncts {
            if let FieldExpr::Binary {
                op: ast::BinaryOp::Eq,
                lhs,
                rhs,
                ..
            } = c
            {
                match (&**lhs, &**rhs) {
                    (
                        FieldExpr::Attribute {
                            scope: Scope::Resource,
                            name,
                        },
                        FieldExpr::Literal(Literal::Str(v)),
                    ) if name == "service.name" => service = Some(v.clone()),
                    (
                        FieldExpr::Intrinsic(ast::Intrinsic::Status),
                        FieldExpr::Literal(Literal::Status(model::StatusCode::Error)),
                    ) => error = true,
                    _ => {}
                }
            }
        }
    }
    (service, error)
}

fn collect_conjuncts<'e>(expr: &'e FieldExpr, out: &mut Vec<&'e FieldExpr>) {
    match expr {
        FieldExpr::Binary {
            op: ast::BinaryOp::And,
            lhs,
            rhs,
            ..
        } => {
            collect_conjuncts(lhs, out);
            collect_conjuncts(rhs, out);
        }
        other => out.push(other),
    }
}
