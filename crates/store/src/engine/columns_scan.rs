//! Span-local metrics queries over blocks' columns ([`crate::columns`]): row groups spread over
//! every core (rayon), one evaluator per thread merged at the end, a few blocks in memory at a
//! time.

use rayon::prelude::*;
use threadline_traceql::metrics::Evaluator;

use super::*;
use crate::columns::ColumnFile;

/// Blocks whose columns are in memory at once: memory is bounded by their columns objects (about
/// a sixth of their data), whatever the number of blocks.
const BLOCKS_PER_BATCH: usize = 4;

/// What a scan over columns read.
#[derive(Debug, Default, Clone, Copy)]
pub struct ColumnsScanStats {
    pub blocks: u64,
    pub row_groups: u64,
    /// Row groups not decoded: their start times lie outside the range.
    pub row_groups_skipped: u64,
    pub spans: u64,
    /// Traces the spans read belong to (a trace split over row groups counts in each).
    pub traces: u64,
    pub bytes: u64,
}

/// Makes an empty evaluator of the query (one per thread of the scan).
pub type NewEvaluator = Arc<dyn Fn() -> Evaluator + Send + Sync>;

impl Store {
    /// Observes, into one evaluator from `new_evaluator`, every span in the columns of the
    /// blocks of `tenant` that have columns and overlap `[start, end]`. A block that goes away
    /// under the scan (compaction) starts it again over a fresh block list.
    pub async fn metrics_from_columns(
        &self,
        tenant: &str,
        (start, end): (u64, u64),
        new_evaluator: NewEvaluator,
    ) -> anyhow::Result<(Evaluator, ColumnsScanStats)> {
        self.check_open()?;
        let mut attempts = 0;
        loop {
            match self
                .metrics_from_columns_once(tenant, (start, end), new_evaluator.clone())
                .await
            {
                Err(err) => self.recover_from_vanished_block(err, &mut attempts).await?,
                done => return done,
            }
        }
    }

    async fn metrics_from_columns_once(
        &self,
        tenant: &str,
        (start, end): (u64, u64),
        new_evaluator: NewEvaluator,
    ) -> anyhow::Result<(Evaluator, ColumnsScanStats)> {
        let blocks: Vec<Arc<Block>> = self
            .blocks_of(tenant)
            .into_iter()
            .filter(|b| {
                b.meta.columns_bytes > 0
                    && b.meta.end_unix_nano >= start
                    && b.meta.start_unix_nano <= end
            })
            .collect();
        let mut evaluator = new_evaluator();
        let mut stats = ColumnsScanStats::default();
        for batch in blocks.chunks(BLOCKS_PER_BATCH) {
            let mut loaded = Vec::with_capacity(batch.len());
            for block in batch {
                let bytes = self
                    .get_block_file(block, crate::columns::OBJECT, None)
                    .await?;
                stats.bytes += bytes.len() as u64;
                let index = self.block_index(block).await?;
                loaded.push((block.clone(), bytes, index));
            }
            let new_evaluator = new_evaluator.clone();
            let (part, part_stats) = tokio::task::spawn_blocking(move || {
                scan_batch(loaded, (start, end), new_evaluator.as_ref())
            })
            .await
            .context("scanning columns")??;
            evaluator.merge(part);
            stats.blocks += part_stats.blocks;
            stats.row_groups += part_stats.row_groups;
            stats.row_groups_skipped += part_stats.row_groups_skipped;
            stats.spans += part_stats.spans;
            stats.traces += part_stats.traces;
        }
        Ok((evaluator, stats))
    }
}

/// One batch of blocks, on the rayon pool: each row group decoded into traces and observed by
/// the evaluator of the thread that took it.
fn scan_batch(
    loaded: Vec<(Arc<Block>, Bytes, Arc<BlockIndex>)>,
    (start, end): (u64, u64),
    new_evaluator: &(dyn Fn() -> Evaluator + Send + Sync),
) -> anyhow::Result<(Evaluator, ColumnsScanStats)> {
    let mut stats = ColumnsScanStats::default();
    let mut files = Vec::with_capacity(loaded.len());
    for (block, bytes, index) in loaded {
        let file = ColumnFile::open(bytes).with_context(|| {
            format!(
                "reading the columns of block {}/{}",
                block.meta.tenant, block.meta.block_id
            )
        })?;
        files.push((block, file, index));
    }
    let mut work = Vec::new();
    for (at, (_, file, _)) in files.iter().enumerate() {
        for group in 0..file.row_groups() {
            if file.may_overlap(group, start, end) {
                work.push((at, group));
            } else {
                stats.row_groups_skipped += 1;
            }
        }
    }
    stats.blocks = files.len() as u64;
    stats.row_groups = work.len() as u64;
    let (evaluator, spans, traces) = work
        .into_par_iter()
        .try_fold(
            || (new_evaluator(), 0u64, 0u64),
            |(mut evaluator, spans, traces), (at, group)| {
                let (block, file, index) = &files[at];
                let read = file
                    .spans(group, |row| {
                        index.rows.get(row as usize).map(|r| r.trace_id)
                    })
                    .with_context(|| {
                        format!(
                            "reading row group {group} of the columns of block {}/{}",
                            block.meta.tenant, block.meta.block_id
                        )
                    })?;
                evaluator.observe(&read.spans);
                let read_spans = read.spans.spans.len() as u64;
                anyhow::Ok((evaluator, spans + read_spans, traces + read.traces))
            },
        )
        .try_reduce(
            || (new_evaluator(), 0, 0),
            |(mut a, a_spans, a_traces), (b, b_spans, b_traces)| {
                a.merge(b);
                Ok((a, a_spans + b_spans, a_traces + b_traces))
            },
        )?;
    stats.spans = spans;
    stats.traces = traces;
    Ok((evaluator, stats))
}
