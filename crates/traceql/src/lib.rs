//! TraceQL, Grafana Tempo's trace query language: a parser with positioned errors and an
//! evaluator over one trace at a time.

pub mod model;
