//! The parsed form of a TraceQL query.

use crate::model::{SpanKind, StatusCode};

/// Where an attribute is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Span,
    Resource,
    /// `.name`: the span's attributes, then its resource's.
    Unscoped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intrinsic {
    Name,
    Status,
    StatusMessage,
    Kind,
    Duration,
    RootName,
    RootServiceName,
    TraceDuration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Nanoseconds.
    Duration(u64),
    Status(StatusCode),
    Kind(SpanKind),
    Nil,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    And,
    Or,
    Eq,
    NotEq,
    Gt,
    Gte,
    Lt,
    Lte,
    Regex,
    NotRegex,
    Add,
    Sub,
    Mul,
    Div,
}

/// An expression evaluated on one span.
#[derive(Debug, Clone)]
pub enum FieldExpr {
    Literal(Literal),
    Attribute {
        scope: Scope,
        name: String,
    },
    Intrinsic(Intrinsic),
    Not(Box<FieldExpr>),
    Negate(Box<FieldExpr>),
    Binary {
        op: BinaryOp,
        lhs: Box<FieldExpr>,
        rhs: Box<FieldExpr>,
        /// Compiled pattern of `=~` / `!~` with a literal right-hand side.
        regex: Option<regex::Regex>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpansetOp {
    And,
    Or,
    /// `>`: right-hand spans whose parent matches the left.
    Child,
    /// `>>`: right-hand spans with an ancestor matching the left.
    Descendant,
    /// `<`: left-hand spans that are the parent of a right-hand span.
    Parent,
    /// `<<`: left-hand spans that are an ancestor of a right-hand span.
    Ancestor,
    /// `~`: right-hand spans with a sibling matching the left.
    Sibling,
}

#[derive(Debug, Clone)]
pub enum SpansetExpr {
    /// `{ ... }`; `None` for `{}` (every span).
    Filter(Option<FieldExpr>),
    Binary {
        op: SpansetOp,
        lhs: Box<SpansetExpr>,
        rhs: Box<SpansetExpr>,
    },
    /// A parenthesised pipeline used as a spanset.
    Pipeline(Box<Pipeline>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    Avg,
    Min,
    Max,
    Sum,
}

#[derive(Debug, Clone)]
pub enum Stage {
    /// `count() > 2`, `avg(duration) > 1s`, ...
    Aggregate {
        function: Aggregate,
        field: Option<FieldExpr>,
        op: BinaryOp,
        value: Literal,
    },
    /// `select(span.a, resource.b)`.
    Select(Vec<FieldExpr>),
    /// `{ ... }` after a pipe: keeps the spans that match.
    Filter(Option<FieldExpr>),
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub spanset: SpansetExpr,
    pub stages: Vec<Stage>,
}
