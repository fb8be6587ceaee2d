//! Threadline's collector: pipelines of receivers, processors and exporters configured with the
//! OpenTelemetry Collector's YAML, plus extensions and self-telemetry.

pub mod auth;
pub mod client;
pub mod component;
pub mod consumer;
pub mod exporters;
pub mod extensions;
pub mod metrics;
pub mod process;
pub mod processors;
pub mod receivers;
pub mod reference;
pub mod registry;
pub mod rpc_status;
pub mod server;
pub mod service;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod test_support;
