//! Reading a block's columns back as traces holding only the columns' fields, one row group at
//! a time (row groups are independent: a scan spreads them over threads).

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt32Type, UInt64Type, UInt8Type};
use arrow_array::{Array, RecordBatch};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::statistics::Statistics;
use std::sync::Arc;

use threadline_traceql::model::{InstrumentationScope, Span, Trace, Value};

use super::{col, ColumnsError};

/// One block's columns object, its footer parsed.
#[derive(Clone)]
pub struct ColumnFile {
    bytes: Bytes,
    metadata: ArrowReaderMetadata,
}

/// The spans of one row group with their columns' fields (no span id, no other attribute, no
/// parent, events or links), all in one [`Trace`]: a span-local query evaluates each span
/// alone (each keeps its own `trace_id`), and one evaluation per row group instead of one per
/// trace halved the scan's time.
pub struct RowGroupSpans {
    pub spans: Trace,
    /// Traces the spans belong to.
    pub traces: u64,
}

impl ColumnFile {
    pub fn open(bytes: Bytes) -> Result<ColumnFile, ColumnsError> {
        let metadata = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new())?;
        if metadata.schema().fields() != super::schema().fields() {
            return Err(ColumnsError::Corrupt(format!(
                "unexpected schema {:?}",
                metadata.schema()
            )));
        }
        Ok(ColumnFile { bytes, metadata })
    }

    pub fn row_groups(&self) -> usize {
        self.metadata.metadata().num_row_groups()
    }

    /// Whether row group `i` may hold a span starting within `[start, end]` (from its start
    /// time statistics; true without them).
    pub fn may_overlap(&self, i: usize, start: u64, end: u64) -> bool {
        let chunk = self.metadata.metadata().row_group(i).column(col::START);
        match chunk.statistics() {
            Some(Statistics::Int64(stats)) => {
                let (Some(min), Some(max)) = (stats.min_opt(), stats.max_opt()) else {
                    return true;
                };
                // u64 stored in INT64: times before 2262 are positive.
                (*max as u64) >= start && (*min as u64) <= end
            }
            _ => true,
        }
    }

    /// The spans of row group `i`; `trace_id` gives the id of a block index row.
    pub fn spans(
        &self,
        i: usize,
        trace_id: impl Fn(u32) -> Option<[u8; 16]>,
    ) -> Result<RowGroupSpans, ColumnsError> {
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.bytes.clone(),
            self.metadata.clone(),
        )
        .with_row_groups(vec![i])
        .with_batch_size(1 << 16)
        .build()?;
        let rows = self.metadata.metadata().row_group(i).num_rows().max(0) as usize;
        let mut out = RowGroupSpans {
            spans: Trace {
                trace_id: [0; 16],
                spans: Vec::with_capacity(rows),
            },
            traces: 0,
        };
        let mut current: Option<(u32, [u8; 16])> = None;
        // One scope for all: `Span::default()` would allocate one per span.
        let scope = Arc::new(InstrumentationScope::default());
        for batch in reader {
            add_batch(&batch?, &trace_id, &mut current, &scope, &mut out)?;
        }
        Ok(out)
    }
}

fn add_batch(
    batch: &RecordBatch,
    trace_id: &impl Fn(u32) -> Option<[u8; 16]>,
    current: &mut Option<(u32, [u8; 16])>,
    scope: &Arc<InstrumentationScope>,
    out: &mut RowGroupSpans,
) -> Result<(), ColumnsError> {
    let column = |i: usize| batch.column(i);
    let wrong = |name: &str| ColumnsError::Corrupt(format!("column {name} has the wrong type"));
    let traces = column(col::TRACE)
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(|| wrong("trace"))?;
    let starts = column(col::START)
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| wrong("start_unix_nano"))?;
    let durations = column(col::DURATION)
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| wrong("duration_nano"))?;
    let kinds = column(col::KIND)
        .as_primitive_opt::<UInt8Type>()
        .ok_or_else(|| wrong("kind"))?;
    let statuses = column(col::STATUS)
        .as_primitive_opt::<UInt8Type>()
        .ok_or_else(|| wrong("status"))?;
    let names = column(col::NAME)
        .as_string_opt::<i32>()
        .ok_or_else(|| wrong("name"))?;
    let services = column(col::SERVICE)
        .as_string_opt::<i32>()
        .ok_or_else(|| wrong("service"))?;
    // Services repeat: one String per distinct run, cloned into each span.
    let mut last_service: Option<(usize, Value)> = None;
    for i in 0..batch.num_rows() {
        let row = traces.value(i);
        let id = match *current {
            Some((r, id)) if r == row => id,
            _ => {
                let id = trace_id(row).ok_or_else(|| {
                    ColumnsError::Corrupt(format!("trace row {row} is not in the block index"))
                })?;
                *current = Some((row, id));
                out.traces += 1;
                id
            }
        };
        let service = if services.is_null(i) {
            None
        } else {
            let text = services.value(i);
            Some(match &last_service {
                Some((at, value)) if services.value(*at) == text => value.clone(),
                _ => {
                    let value = Value::Str(text.to_string());
                    last_service = Some((i, value.clone()));
                    value
                }
            })
        };
        let start = starts.value(i);
        out.spans.spans.push(Span {
            trace_id: id,
            name: names.value(i).to_string(),
            kind: crate::model::kind(i32::from(kinds.value(i))),
            status: crate::model::status_code(i32::from(statuses.value(i))),
            start_unix_nano: start,
            end_unix_nano: start.saturating_add(durations.value(i)),
            resource_attributes: service
                .map(|s| vec![("service.name".to_string(), s)])
                .unwrap_or_default(),
            scope: scope.clone(),
            ..Default::default()
        });
    }
    Ok(())
}
