//! The parsed form of a TraceQL query (Tempo's grammar, `pkg/traceql/expr.y` at grafana/tempo
//! ad33aa8f). `Display` prints a query that parses back to the same tree.

use crate::model::{SpanKind, StatusCode};

/// Where an attribute is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Span,
    Resource,
    Event,
    Link,
    Instrumentation,
    /// `.name`: the span's attributes, then its resource's.
    Unscoped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intrinsic {
    Name,
    Status,
    StatusMessage,
    Kind,
    Duration,
    /// `span:id`, hex.
    SpanId,
    /// `span:parentID`, hex.
    ParentId,
    ChildCount,
    /// `trace:id`, hex.
    TraceId,
    RootName,
    RootServiceName,
    TraceDuration,
    NestedSetLeft,
    NestedSetRight,
    NestedSetParent,
    EventName,
    EventTimeSinceStart,
    LinkTraceId,
    LinkSpanId,
    InstrumentationName,
    InstrumentationVersion,
}

impl Intrinsic {
    /// Every spelling the parser accepts, the canonical one (as printed) first.
    pub const SPELLINGS: &'static [(&'static str, Intrinsic)] = &[
        ("name", Intrinsic::Name),
        ("span:name", Intrinsic::Name),
        ("status", Intrinsic::Status),
        ("span:status", Intrinsic::Status),
        ("statusMessage", Intrinsic::StatusMessage),
        ("span:statusMessage", Intrinsic::StatusMessage),
        ("kind", Intrinsic::Kind),
        ("span:kind", Intrinsic::Kind),
        ("duration", Intrinsic::Duration),
        ("span:duration", Intrinsic::Duration),
        ("span:id", Intrinsic::SpanId),
        ("span:parentID", Intrinsic::ParentId),
        ("span:childCount", Intrinsic::ChildCount),
        ("trace:id", Intrinsic::TraceId),
        ("rootName", Intrinsic::RootName),
        ("trace:rootName", Intrinsic::RootName),
        ("rootServiceName", Intrinsic::RootServiceName),
        ("trace:rootService", Intrinsic::RootServiceName),
        ("traceDuration", Intrinsic::TraceDuration),
        ("trace:duration", Intrinsic::TraceDuration),
        ("nestedSetLeft", Intrinsic::NestedSetLeft),
        ("nestedSetRight", Intrinsic::NestedSetRight),
        ("nestedSetParent", Intrinsic::NestedSetParent),
        ("event:name", Intrinsic::EventName),
        ("event:timeSinceStart", Intrinsic::EventTimeSinceStart),
        ("link:traceID", Intrinsic::LinkTraceId),
        ("link:spanID", Intrinsic::LinkSpanId),
        ("instrumentation:name", Intrinsic::InstrumentationName),
        ("instrumentation:version", Intrinsic::InstrumentationVersion),
    ];

    pub fn from_name(name: &str) -> Option<Intrinsic> {
        Self::SPELLINGS
            .iter()
            .find(|(spelling, _)| *spelling == name)
            .map(|(_, i)| *i)
    }

    /// The canonical spelling.
    pub fn name(self) -> &'static str {
        Self::SPELLINGS
            .iter()
            .find(|(_, i)| *i == self)
            .map_or("?", |(spelling, _)| spelling)
    }
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
    Mod,
    Pow,
}

/// A compiled `=~` / `!~` pattern; two are equal when their sources are.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// An expression evaluated on one span.
#[derive(Debug, Clone, PartialEq)]
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
        regex: Option<Pattern>,
    },
}

/// Operators between spansets. Every structural one returns right-hand spans (the `Union*`
/// forms also the left-hand spans in the relation; the `Not*` forms the right-hand spans not in
/// it), as Tempo's docs define them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpansetOp {
    And,
    Or,
    /// `>`: right-hand spans whose parent matches the left.
    Child,
    /// `>>`: right-hand spans with an ancestor matching the left.
    Descendant,
    /// `<`: right-hand spans that are the parent of a left-hand span.
    Parent,
    /// `<<`: right-hand spans that are an ancestor of a left-hand span.
    Ancestor,
    /// `~`: right-hand spans with a sibling matching the left.
    Sibling,
    NotChild,
    NotDescendant,
    NotParent,
    NotAncestor,
    NotSibling,
    UnionChild,
    UnionDescendant,
    UnionParent,
    UnionAncestor,
    UnionSibling,
}

impl SpansetOp {
    pub fn symbol(self) -> &'static str {
        use SpansetOp::*;
        match self {
            And => "&&",
            Or => "||",
            Child => ">",
            Descendant => ">>",
            Parent => "<",
            Ancestor => "<<",
            Sibling => "~",
            NotChild => "!>",
            NotDescendant => "!>>",
            NotParent => "!<",
            NotAncestor => "!<<",
            NotSibling => "!~",
            UnionChild => "&>",
            UnionDescendant => "&>>",
            UnionParent => "&<",
            UnionAncestor => "&<<",
            UnionSibling => "&~",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
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

impl Aggregate {
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Avg => "avg",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Sum => "sum",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
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
    /// `by(expr)`: one spanset per value of `expr`.
    By(FieldExpr),
    /// `coalesce()`: all spansets into one.
    Coalesce,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub spanset: SpansetExpr,
    pub stages: Vec<Stage>,
}

/// The first stage of a metrics query.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsFunction {
    Rate,
    CountOverTime,
    MinOverTime(FieldExpr),
    MaxOverTime(FieldExpr),
    SumOverTime(FieldExpr),
    AvgOverTime(FieldExpr),
    /// The field and the quantiles (0..=1).
    QuantileOverTime(FieldExpr, Vec<f64>),
    HistogramOverTime(FieldExpr),
    /// `compare({selection}, topN, start, end)`; start/end 0 = the whole range.
    Compare {
        selection: Option<FieldExpr>,
        top: u64,
        start: u64,
        end: u64,
    },
}

impl MetricsFunction {
    pub fn name(&self) -> &'static str {
        match self {
            MetricsFunction::Rate => "rate",
            MetricsFunction::CountOverTime => "count_over_time",
            MetricsFunction::MinOverTime(_) => "min_over_time",
            MetricsFunction::MaxOverTime(_) => "max_over_time",
            MetricsFunction::SumOverTime(_) => "sum_over_time",
            MetricsFunction::AvgOverTime(_) => "avg_over_time",
            MetricsFunction::QuantileOverTime(..) => "quantile_over_time",
            MetricsFunction::HistogramOverTime(_) => "histogram_over_time",
            MetricsFunction::Compare { .. } => "compare",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsAggregation {
    pub function: MetricsFunction,
    /// `by(a, b)`.
    pub by: Vec<FieldExpr>,
}

/// What runs on the series of a metrics query.
#[derive(Debug, Clone, PartialEq)]
pub enum SecondStage {
    TopK(u64),
    BottomK(u64),
    /// `> 5`: samples failing the comparison are dropped (durations in seconds).
    Filter {
        op: BinaryOp,
        value: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricsExpr {
    /// `{ ... } | rate() by (...)`.
    Pipeline {
        pipeline: Pipeline,
        aggregation: MetricsAggregation,
    },
    /// Arithmetic between metrics queries (series joined by labels) or with a number.
    Binary {
        op: BinaryOp,
        lhs: Box<MetricsExpr>,
        rhs: Box<MetricsExpr>,
    },
    Scalar(f64),
    /// `... | topk(3)`, `... > 10`.
    Staged {
        inner: Box<MetricsExpr>,
        stages: Vec<SecondStage>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Root {
    Spans(Pipeline),
    Metrics(MetricsExpr),
}

/// A whole query: the expression and its `with(...)` hints.
#[derive(Debug, Clone, PartialEq)]
pub struct RootExpr {
    pub root: Root,
    pub hints: Vec<(String, Literal)>,
}
