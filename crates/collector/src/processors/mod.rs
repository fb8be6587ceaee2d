//! Processors: stages between receivers and exporters.

pub mod attributes;
pub mod batch;
pub mod memory_limiter;
pub mod tail_sampling;
