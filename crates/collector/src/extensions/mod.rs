//! Extensions: capabilities beside the pipelines (health checks, storage for persistent queues).

pub mod file_storage;
pub mod health_check;
