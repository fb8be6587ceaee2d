//! A block's span columns: the fields span-local TraceQL metrics read, one row per span, in
//! Apache Parquet beside the block's OTLP pages.
//!
//! The pages keep each trace as the SDK sent it (trace by id returns it field for field); a
//! metrics query such as `{ } | rate() by (resource.service.name)` needs four fields of every
//! span, and decoding whole traces to get them ran at 345k spans per CPU-second (BENCHMARKS.md,
//! 2026-12-03). The `columns` object of a block holds those fields alone:
//!
//! | column | type | encoding |
//! |---|---|---|
//! | `trace` | u32: the trace's row in the block index | dictionary/RLE (runs of one trace) |
//! | `start_unix_nano` | u64 | delta (spans of a trace start close together) |
//! | `duration_nano` | u64 | delta |
//! | `kind`, `status` | u8 | dictionary/RLE |
//! | `name` | string | dictionary |
//! | `service` | string, null without a string `service.name` | dictionary |
//!
//! One row group per page of the block (so a row group is a few thousand spans and memory stays
//! bounded by it), no compression beyond the encodings (see `write.rs`), min/max statistics per row group on the start time (row groups outside
//! a query's range are not decoded). Parquet rather than a format of our own: the `parquet`
//! crate's encodings and statistics are what a format of ours would redo, and any Parquet tool
//! reads the file.
//!
//! Span ids are left out: random, they took 8 of 17 bytes per span on the load generator's
//! traffic (and the budget is 60 bytes per span for the whole block). Exemplars of
//! spans counted from columns carry `trace:id` alone (the evaluator leaves out the `span:id`
//! of a span whose id is zero, which OTLP does not allow a real span to have).
//!
//! Which queries the columns answer is [`answers`]: span-local ones, whose every field is one of
//! the columns. Others (structural operators, other attributes, trace-level intrinsics) read the
//! pages.

mod projection;
mod read;
mod write;

pub use projection::answers;
pub use read::{ColumnFile, RowGroupSpans};
pub use write::ColumnsBuilder;

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};

/// The object name of a block's columns, beside `data`, `index` and `meta.json`.
pub const OBJECT: &str = "columns";

/// Column positions in [`schema`].
pub(crate) mod col {
    pub const TRACE: usize = 0;
    pub const START: usize = 1;
    pub const DURATION: usize = 2;
    pub const KIND: usize = 3;
    pub const STATUS: usize = 4;
    pub const NAME: usize = 5;
    pub const SERVICE: usize = 6;
}

pub(crate) fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("trace", DataType::UInt32, false),
        Field::new("start_unix_nano", DataType::UInt64, false),
        Field::new("duration_nano", DataType::UInt64, false),
        Field::new("kind", DataType::UInt8, false),
        Field::new("status", DataType::UInt8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("service", DataType::Utf8, true),
    ]))
}

/// Errors writing or reading a columns object.
#[derive(Debug, thiserror::Error)]
pub enum ColumnsError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("the columns object is damaged: {0}")]
    Corrupt(String),
}

#[cfg(test)]
mod tests;
