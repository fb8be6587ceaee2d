//! Pipelines and components.
