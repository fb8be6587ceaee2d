//! Extensions: capabilities beside the pipelines (health checks, storage for persistent queues,
//! authenticators for receivers and exporters).

pub mod basicauth;
pub mod bearertokenauth;
pub mod file_storage;
pub mod headers_setter;
pub mod health_check;
