//! Threadline's trace store: OTLP in, a write-ahead log, immutable columnar blocks with a
//! trace-id index, compaction and retention, on local disk or object storage.
