//! TraceQL, Grafana Tempo's trace query language: a parser with positioned errors and an
//! evaluator over one trace at a time.
//!
//! ```
//! let query = threadline_traceql::parse(r#"{ resource.service.name = "api" && duration > 2s }"#).unwrap();
//! # let _ = query;
//! ```

pub mod ast;
mod eval;
mod lexer;
pub mod model;
mod parser;
#[cfg(test)]
mod tests;

use ast::{FieldExpr, Literal, Pipeline, Scope, SpansetExpr};
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
        let before = &query[..position.min(query.len())];
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
    pub attributes: Vec<(String, Value)>,
}

/// A parsed query.
#[derive(Debug, Clone)]
pub struct Query {
    pipeline: Pipeline,
}

/// Parses a TraceQL query.
pub fn parse(query: &str) -> Result<Query, ParseError> {
    Ok(Query {
        pipeline: parser::parse(query)?,
    })
}

impl Query {
    /// The matched spans of `trace`, or None when the trace does not match.
    pub fn evaluate(&self, trace: &Trace) -> Option<Vec<SpanMatch>> {
        let ctx = eval::TraceContext::new(trace);
        let (spans, selected) = eval::pipeline(&ctx, &self.pipeline);
        if spans.is_empty() {
            return None;
        }
        let mut names = Vec::new();
        eval::referenced_in_spanset(&self.pipeline.spanset, &mut names);
        for field in &selected {
            eval::referenced(field, &mut names);
        }
        Some(
            spans
                .into_iter()
                .map(|i| SpanMatch {
                    span: i,
                    attributes: names
                        .iter()
                        .filter_map(|(scope, name)| {
                            let value = eval::attribute_value(&trace.spans[i], *scope, name)?;
                            let prefix = match scope {
                                Scope::Span => "span.",
                                Scope::Resource => "resource.",
                                Scope::Unscoped => ".",
                            };
                            Some((
                                format!("{prefix}{name}")
                                    .trim_start_matches('.')
                                    .to_string(),
                                value,
                            ))
                        })
                        .collect(),
                })
                .collect(),
        )
    }

    /// Conditions every matching trace must meet, for a store to skip traces without reading
    /// them: `(service name, needs an error span)`. Found only in a single filter's top-level
    /// `&&` conjuncts; `None`/`false` when unknown (never narrower than the query).
    pub fn hints(&self) -> (Option<String>, bool) {
        let mut service = None;
        let mut error = false;
        if !self.pipeline.stages.is_empty() {
            return (None, false);
        }
        if let SpansetExpr::Filter(Some(expr)) = &self.pipeline.spanset {
            let mut conjuncts = Vec::new();
            collect_conjuncts(expr, &mut conjuncts);
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
