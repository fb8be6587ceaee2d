//! Which metrics queries a block's columns answer exactly.

use threadline_traceql::ast::{
    FieldExpr, Intrinsic, MetricsExpr, MetricsFunction, Root, Scope, SpansetExpr,
};
use threadline_traceql::Query;

/// Whether every leaf of `query` is `{ filter } | fn(field) by (fields)` with no further
/// spanset stage, and every field it names is a column: span-local, so evaluating each span
/// from its columns gives what evaluating it within its whole trace gives, however the trace is
/// split over blocks. `compare()` reads every attribute and is not answered.
pub fn answers(query: &Query) -> bool {
    match &query.ast().root {
        Root::Metrics(expr) => metrics_answered(expr),
        Root::Spans(_) => false,
    }
}

fn metrics_answered(expr: &MetricsExpr) -> bool {
    match expr {
        MetricsExpr::Pipeline {
            pipeline,
            aggregation,
        } => {
            let filter = match &pipeline.spanset {
                SpansetExpr::Filter(filter) => filter.as_ref().is_none_or(field_answered),
                SpansetExpr::Binary { .. } | SpansetExpr::Pipeline(_) => false,
            };
            let function = match &aggregation.function {
                MetricsFunction::Rate | MetricsFunction::CountOverTime => true,
                MetricsFunction::MinOverTime(f)
                | MetricsFunction::MaxOverTime(f)
                | MetricsFunction::SumOverTime(f)
                | MetricsFunction::AvgOverTime(f)
                | MetricsFunction::QuantileOverTime(f, _)
                | MetricsFunction::HistogramOverTime(f) => field_answered(f),
                MetricsFunction::Compare { .. } => false,
            };
            filter
                && function
                && pipeline.stages.is_empty()
                && aggregation.by.iter().all(field_answered)
        }
        MetricsExpr::Binary { lhs, rhs, .. } => metrics_answered(lhs) && metrics_answered(rhs),
        MetricsExpr::Scalar(_) => true,
        MetricsExpr::Staged { inner, .. } => metrics_answered(inner),
    }
}

fn field_answered(expr: &FieldExpr) -> bool {
    match expr {
        FieldExpr::Literal(_) => true,
        // Unscoped `.service.name` would look at span attributes first: not a column.
        FieldExpr::Attribute { scope, name } => *scope == Scope::Resource && name == "service.name",
        FieldExpr::Intrinsic(which) => matches!(
            which,
            Intrinsic::Name
                | Intrinsic::Status
                | Intrinsic::Kind
                | Intrinsic::Duration
                | Intrinsic::TraceId
        ),
        FieldExpr::Not(inner) | FieldExpr::Negate(inner) => field_answered(inner),
        FieldExpr::Binary { lhs, rhs, .. } => field_answered(lhs) && field_answered(rhs),
    }
}
