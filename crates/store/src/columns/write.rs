//! Writing a block's columns while its pages are written: spans are gathered per page and each
//! page becomes a row group.

use std::sync::Arc;

use arrow_array::builder::{StringBuilder, UInt32Builder, UInt64Builder, UInt8Builder};
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use threadline_otlp::wire::{FieldIter, WireValue};
use threadline_otlp::TraceData;

use super::{schema, ColumnsError};

/// Spans of the page being written, column by column.
struct PageColumns {
    trace: UInt32Builder,
    start: UInt64Builder,
    duration: UInt64Builder,
    kind: UInt8Builder,
    status: UInt8Builder,
    name: StringBuilder,
    service: StringBuilder,
    rows: usize,
}

impl PageColumns {
    fn new() -> PageColumns {
        PageColumns {
            trace: UInt32Builder::new(),
            start: UInt64Builder::new(),
            duration: UInt64Builder::new(),
            kind: UInt8Builder::new(),
            status: UInt8Builder::new(),
            name: StringBuilder::new(),
            service: StringBuilder::new(),
            rows: 0,
        }
    }

    fn finish(&mut self) -> Result<RecordBatch, ColumnsError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.service.finish()),
        ];
        self.rows = 0;
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

/// Builds the columns object of one block: [`ColumnsBuilder::push`] each trace as the block's
/// builder takes it, [`ColumnsBuilder::end_page`] when it cuts a page, then
/// [`ColumnsBuilder::finish`].
pub struct ColumnsBuilder {
    writer: ArrowWriter<Vec<u8>>,
    page: PageColumns,
}

impl ColumnsBuilder {
    pub fn new() -> Result<ColumnsBuilder, ColumnsError> {
        let delta = |name: &str| ColumnPath::from(name);
        let properties = WriterProperties::builder()
            // No compression on top of the encodings: on the load generator's traffic zstd
            // saved 1.0 byte per span (9.6 against 10.6) and creating its decoder for every
            // column chunk took 18% of a metrics scan's profile (BENCHMARKS.md, 2026-12-04).
            .set_compression(Compression::UNCOMPRESSED)
            .set_statistics_enabled(EnabledStatistics::Chunk)
            // Row groups are cut by `end_page`, never by size.
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(None)
            .set_column_dictionary_enabled(delta("start_unix_nano"), false)
            .set_column_encoding(delta("start_unix_nano"), Encoding::DELTA_BINARY_PACKED)
            .set_column_dictionary_enabled(delta("duration_nano"), false)
            .set_column_encoding(delta("duration_nano"), Encoding::DELTA_BINARY_PACKED)
            .build();
        Ok(ColumnsBuilder {
            writer: ArrowWriter::try_new(Vec::new(), schema(), Some(properties))?,
            page: PageColumns::new(),
        })
    }

    /// Adds the spans of the trace in row `row` of the block index.
    pub fn push(&mut self, row: u32, trace: &TraceData) {
        // A trace has a few resources, repeated per part: the service is looked up once each.
        let mut services: Vec<(&[u8], Option<&str>)> = Vec::new();
        let page = &mut self.page;
        trace.for_each_span(|resource, _scope, span| {
            let raw = resource.raw();
            let service = match services.iter().find(|(r, _)| *r == raw) {
                Some((_, service)) => *service,
                None => {
                    let service = resource.attribute("service.name").and_then(|v| v.as_str());
                    services.push((raw, service));
                    service
                }
            };
            let fields = SpanFields::of(span.raw());
            page.trace.append_value(row);
            page.start.append_value(fields.start);
            page.duration
                .append_value(fields.end.saturating_sub(fields.start));
            page.kind.append_value(fields.kind);
            page.status.append_value(fields.status);
            page.name.append_value(fields.name);
            page.service.append_option(service);
            page.rows += 1;
        });
    }

    /// Ends the row group of the page just cut (a page without spans gives none).
    pub fn end_page(&mut self) -> Result<(), ColumnsError> {
        if self.page.rows == 0 {
            return Ok(());
        }
        let batch = self.page.finish()?;
        self.writer.write(&batch)?;
        self.writer.flush()?;
        Ok(())
    }

    /// The columns object's bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, ColumnsError> {
        self.end_page()?;
        Ok(self.writer.into_inner()?)
    }
}

/// The fields of one encoded span the columns keep, read in one pass.
struct SpanFields<'a> {
    name: &'a str,
    kind: u8,
    start: u64,
    end: u64,
    status: u8,
}

impl<'a> SpanFields<'a> {
    fn of(raw: &'a [u8]) -> SpanFields<'a> {
        let mut fields = SpanFields {
            name: "",
            kind: 0,
            start: 0,
            end: 0,
            status: 0,
        };
        for (number, field) in FieldIter::new(raw).map_while(Result::ok) {
            match (number, field) {
                (5, WireValue::Bytes(name)) => {
                    fields.name = std::str::from_utf8(name).unwrap_or_default()
                }
                (6, WireValue::Varint(kind)) => fields.kind = kind.min(255) as u8,
                (7, WireValue::Fixed64(start)) => fields.start = start,
                (8, WireValue::Fixed64(end)) => fields.end = end,
                (15, WireValue::Bytes(status)) => {
                    for (number, field) in FieldIter::new(status).map_while(Result::ok) {
                        if let (3, WireValue::Varint(code)) = (number, field) {
                            fields.status = code.min(255) as u8;
                        }
                    }
                }
                _ => {}
            }
        }
        fields
    }
}
