//! Printing a parsed query as TraceQL that parses back to the same tree: every binary
//! expression is parenthesised, floats keep their point, durations are printed in nanoseconds.

use std::fmt::{self, Display, Formatter};

use crate::ast::*;
use crate::model::{SpanKind, StatusCode};

fn quoted(f: &mut Formatter<'_>, text: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in text.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

fn float(f: &mut Formatter<'_>, value: f64) -> fmt::Result {
    if value.fract() == 0.0 {
        write!(f, "{value:.1}")
    } else {
        write!(f, "{value}")
    }
}

pub(crate) fn status_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::Unset => "unset",
        StatusCode::Ok => "ok",
        StatusCode::Error => "error",
    }
}

pub(crate) fn kind_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Unspecified => "unspecified",
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => quoted(f, s),
            Literal::Int(i64::MIN) => f.write_str("minInt"),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(v) => float(f, *v),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Duration(d) => write!(f, "{d}ns"),
            Literal::Status(s) => f.write_str(status_name(*s)),
            Literal::Kind(k) => f.write_str(kind_name(*k)),
            Literal::Nil => f.write_str("nil"),
        }
    }
}

impl Scope {
    pub fn prefix(self) -> &'static str {
        match self {
            Scope::Span => "span.",
            Scope::Resource => "resource.",
            Scope::Event => "event.",
            Scope::Link => "link.",
            Scope::Instrumentation => "instrumentation.",
            Scope::Unscoped => ".",
        }
    }
}

/// Whether an attribute name can be written without quotes.
fn plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || !c.is_ascii())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.') || !c.is_ascii())
        && !name.ends_with('.')
        && !name.contains("..")
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        use BinaryOp::*;
        match self {
            And => "&&",
            Or => "||",
            Eq => "=",
            NotEq => "!=",
            Gt => ">",
            Gte => ">=",
            Lt => "<",
            Lte => "<=",
            Regex => "=~",
            NotRegex => "!~",
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Mod => "%",
            Pow => "^",
        }
    }
}

impl Display for FieldExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            FieldExpr::Literal(l) => write!(f, "{l}"),
            FieldExpr::Attribute { scope, name } => {
                f.write_str(scope.prefix())?;
                if plain_name(name) {
                    f.write_str(name)
                } else {
                    quoted(f, name)
                }
            }
            FieldExpr::Intrinsic(i) => f.write_str(i.name()),
            FieldExpr::Not(inner) => write!(f, "!({inner})"),
            FieldExpr::Negate(inner) => write!(f, "-({inner})"),
            FieldExpr::Binary { op, lhs, rhs, .. } => {
                write!(f, "({lhs} {} {rhs})", op.symbol())
            }
        }
    }
}

fn filter(f: &mut Formatter<'_>, expr: &Option<FieldExpr>) -> fmt::Result {
    match expr {
        None => f.write_str("{ }"),
        Some(e) => write!(f, "{{ {e} }}"),
    }
}

impl Display for SpansetExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            SpansetExpr::Filter(e) => filter(f, e),
            SpansetExpr::Binary { op, lhs, rhs } => write!(f, "({lhs} {} {rhs})", op.symbol()),
            SpansetExpr::Pipeline(p) => write!(f, "({p})"),
        }
    }
}

fn list(f: &mut Formatter<'_>, items: &[FieldExpr]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl Display for Stage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Aggregate {
                function,
                field,
                op,
                value,
            } => {
                write!(f, "{}(", function.name())?;
                if let Some(field) = field {
                    write!(f, "{field}")?;
                }
                write!(f, ") {} {value}", op.symbol())
            }
            Stage::Select(fields) => {
                f.write_str("select(")?;
                list(f, fields)?;
                f.write_str(")")
            }
            Stage::Filter(e) => filter(f, e),
            Stage::By(e) => write!(f, "by({e})"),
            Stage::Coalesce => f.write_str("coalesce()"),
        }
    }
}

impl Display for Pipeline {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.spanset)?;
        for stage in &self.stages {
            write!(f, " | {stage}")?;
        }
        Ok(())
    }
}

impl Display for MetricsAggregation {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.function.name())?;
        match &self.function {
            MetricsFunction::Rate | MetricsFunction::CountOverTime => {}
            MetricsFunction::MinOverTime(e)
            | MetricsFunction::MaxOverTime(e)
            | MetricsFunction::SumOverTime(e)
            | MetricsFunction::AvgOverTime(e)
            | MetricsFunction::HistogramOverTime(e) => write!(f, "{e}")?,
            MetricsFunction::QuantileOverTime(e, qs) => {
                write!(f, "{e}")?;
                for q in qs {
                    f.write_str(", ")?;
                    float(f, *q)?;
                }
            }
            MetricsFunction::Compare {
                selection,
                top,
                start,
                end,
            } => {
                filter(f, selection)?;
                write!(f, ", {top}")?;
                if *start != 0 || *end != 0 {
                    write!(f, ", {start}, {end}")?;
                }
            }
        }
        f.write_str(")")?;
        if !self.by.is_empty() {
            f.write_str(" by (")?;
            list(f, &self.by)?;
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl Display for SecondStage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            SecondStage::TopK(k) => write!(f, "| topk({k})"),
            SecondStage::BottomK(k) => write!(f, "| bottomk({k})"),
            SecondStage::Filter { op, value } => {
                write!(f, "{} ", op.symbol())?;
                float(f, *value)
            }
        }
    }
}

impl Display for MetricsExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            MetricsExpr::Pipeline {
                pipeline,
                aggregation,
            } => write!(f, "({pipeline} | {aggregation})"),
            MetricsExpr::Binary { op, lhs, rhs } => write!(f, "({lhs} {} {rhs})", op.symbol()),
            MetricsExpr::Scalar(v) => float(f, *v),
            MetricsExpr::Staged { inner, stages } => {
                // A staged pipeline prints inside its parentheses: `({} | rate() | topk(2))`.
                let (open, close) = match &**inner {
                    MetricsExpr::Pipeline {
                        pipeline,
                        aggregation,
                    } => {
                        write!(f, "({pipeline} | {aggregation}")?;
                        ("", ")")
                    }
                    other => {
                        write!(f, "({other}")?;
                        ("", ")")
                    }
                };
                f.write_str(open)?;
                for stage in stages {
                    write!(f, " {stage}")?;
                }
                f.write_str(close)
            }
        }
    }
}

impl Display for RootExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.root {
            Root::Spans(p) => write!(f, "{p}")?,
            Root::Metrics(m) => write!(f, "{m}")?,
        }
        if !self.hints.is_empty() {
            f.write_str(" with(")?;
            for (i, (name, value)) in self.hints.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{name}={value}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}
