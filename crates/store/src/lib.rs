//! Threadline's trace store: OTLP in (through the collector's receivers and the `store`
//! exporter), a write-ahead log, immutable blocks on local disk or object storage, compaction and
//! retention, and Grafana Tempo's HTTP API.

pub mod api;
pub mod api_admission;
pub mod api_doctor;
pub mod api_grpc;
pub mod api_insight;
pub mod api_metrics;
pub mod api_search_metrics;
pub mod api_search_stream;
pub mod api_service_graph;
pub mod api_tags;
pub mod attr_keys;
pub mod auth;
pub mod block;
pub mod block_summary;
pub mod columns;
pub mod config;
pub mod engine;
pub mod error;
pub mod exporter;
pub mod generator;
pub mod model;
pub mod page_values;
pub mod search;
pub mod tags;
pub mod tempo_blocks;
pub mod tempopb;
#[cfg(test)]
mod tests;
pub mod ui;
pub mod wal;

pub use config::StoreConfig;
pub use engine::{SearchRequest, Store, SINGLE_TENANT};
pub use error::StoreError;
