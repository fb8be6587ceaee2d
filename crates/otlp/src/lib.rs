//! OTLP trace data model.
