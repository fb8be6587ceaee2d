//! Collector configuration.
