//! The `metrics` object of search and tag answers: Tempo's figures (`SearchMetrics`,
//! `MetadataMetrics` in grafana/tempo ad33aa8 `pkg/tempopb/tempo.proto`; 64-bit counts as
//! strings, as Tempo's JSON has them), and Threadline's account of the blocks it did not read.

use serde_json::{json, Value as Json};

use crate::engine::SearchStats;

pub fn metrics_json(stats: &SearchStats) -> Json {
    let skipped = &stats.skipped;
    json!({
        "inspectedTraces": stats.inspected_traces,
        "inspectedBytes": stats.inspected_bytes.to_string(),
        "totalBlocks": stats.total_blocks,
        "completedJobs": 1,
        "totalJobs": 1,
        // Not in Tempo: blocks read, blocks not read, and why each was not.
        "inspectedBlocks": stats.inspected_blocks,
        "skippedBlocks": skipped.total(),
        "threadlineSkippedPages": stats.pages_without_value,
        "threadlineSkippedTraces": stats.traces_without_needle,
        "threadlineSkippedBlocks": {
            "outside time range": skipped.outside_time_range,
            "attribute absent from block": skipped.attribute_absent,
            "service absent from block": skipped.service_absent,
            "no trace in the block passes the index": skipped.no_candidate_trace,
            "search limit reached": skipped.limit_reached,
            "answered from the block index": skipped.answered_from_index,
            "answered from the block columns": skipped.answered_from_columns,
            "no page holds a required value": skipped.value_absent,
        },
    })
}
