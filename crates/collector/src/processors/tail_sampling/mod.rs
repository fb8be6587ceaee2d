//! The `tail_sampling` processor: holds each trace's spans until `decision_wait` has passed since
//! its first span, then keeps the whole trace when the policies say so (errors, slow traces, a
//! share of the rest), as contrib's `tailsamplingprocessor`, with the same policy types, rules for
//! combining decisions and metrics.
//!
//! Spans are held as encoded bytes per trace; what the policies need (span count, time bounds,
//! statuses, flags, matched attributes) is folded into a small summary as spans arrive, so nothing
//! is decoded. Where upstream's users suffer, Threadline differs:
//!
//! * Traces live in shards by trace id, each behind its own lock and decided by its own task, so
//!   a huge trace or a slow shard does not stall every other decision (contrib #45200);
//!   `maximum_trace_size_bytes` decides a trace at once when it grows past the cap.
//! * Memory is bounded in bytes, not only in trace count (contrib #29762): while the
//!   `memory_limiter` refuses data, the oldest pending traces are decided early (not dropped)
//!   until the pressure ends. When `num_traces` traces are pending, the oldest is decided early
//!   too. Both are counted in `..._sampling_trace_dropped_too_early`.
//! * Decided trace ids are remembered (100 000 of each kind by default, where upstream remembers
//!   none), so late spans follow their trace's decision (contrib #14760).
//! * With `metadata_keys` (the `batch` processor's setting), the trace table is partitioned by
//!   those client-metadata values: one tenant's spans never join another tenant's trace of the
//!   same id, and kept spans go downstream with their partition's metadata (contrib drops client
//!   metadata here, so a multi-tenant backend behind it cannot tell tenants apart).

mod config;
mod policies;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use threadline_config::ComponentId;
use threadline_otlp::{SliceWriter, TraceData, TraceSlice};
use tokio_util::sync::CancellationToken;

pub use config::TailSamplingConfig;
use policies::{Decision, Policies, TraceSummary};

use crate::client::{self, ClientInfo};
use crate::component::{
    About, Component, CreateContext, MemoryPressure, Processor, TypedProcessorFactory,
};
use crate::consumer::{ConsumeError, NextConsumer, TracesConsumer};
use crate::metrics;
use crate::telemetry::{PolicyMetrics, TailSamplingMetrics};

const DEFAULT_DECISION_CACHE: usize = 100_000;
/// Shards of the trace table; decisions of different shards run in parallel.
const SHARDS: usize = 16;
/// While memory is short, 1/this of each shard's pending traces (the oldest) is decided early per tick.
const PRESSURE_RELEASE_SHARE: usize = 4;

pub struct TailSamplingFactory;

impl TypedProcessorFactory for TailSamplingFactory {
    type Config = TailSamplingConfig;

    fn kind(&self) -> &'static str {
        "tail_sampling"
    }

    fn about(&self) -> About {
        About {
            upstream: "contrib tailsamplingprocessor",
            metrics: &[metrics::TAIL_SAMPLING],
        }
    }

    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: TailSamplingConfig,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<dyn Processor>> {
        Ok(TailSampler::start(
            ctx.id.clone(),
            &config,
            next,
            ctx.telemetry.tail_sampling(ctx.id),
            ctx.host.memory_pressure.clone(),
        )?)
    }
}

/// A trace in the table: its metadata partition (0 without `metadata_keys`) and its id.
type TraceKey = (u32, [u8; 16]);

/// Spans to send downstream, by metadata partition.
#[derive(Default)]
struct Outputs {
    by_partition: HashMap<u32, SliceWriter>,
}

impl Outputs {
    fn push(&mut self, partition: u32, part: &TraceSlice) {
        self.by_partition.entry(partition).or_default().push(part);
    }
}

/// The distinct `metadata_keys` value combinations seen, each numbered once for the life of the
/// process (as upstream's batcher per combination).
struct Partitions {
    keys: Vec<String>,
    /// 0 means no limit.
    limit: usize,
    table: Mutex<(HashMap<ClientInfo, u32>, Vec<ClientInfo>)>,
}

impl Partitions {
    /// The partition of the data being consumed.
    fn current(&self) -> Result<u32, ConsumeError> {
        let info = client::current().restricted_to(&self.keys);
        // The table is complete after every insert: a guard poisoned elsewhere is still good.
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let (numbers, infos) = &mut *table;
        if let Some(number) = numbers.get(&info) {
            return Ok(*number);
        }
        if self.limit != 0 && infos.len() >= self.limit {
            return Err(ConsumeError::Permanent(format!(
                "too many tail_sampling metadata-value combinations (metadata_cardinality_limit {})",
                self.limit
            )));
        }
        let number = infos.len() as u32;
        infos.push(info.clone());
        numbers.insert(info, number);
        Ok(number)
    }

    fn info(&self, partition: u32) -> ClientInfo {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.1.get(partition as usize).cloned().unwrap_or_default()
    }
}

struct PendingTrace {
    /// The trace's spans, pointing into the requests they came in (no copy per trace).
    parts: Vec<TraceSlice>,
    summary: TraceSummary,
    decide_at: Instant,
}

/// A bounded set of decided trace ids with the time of the decision, forgetting the oldest first.
struct DecisionCache {
    ids: HashMap<TraceKey, Instant>,
    order: VecDeque<TraceKey>,
    capacity: usize,
}

impl DecisionCache {
    fn new(capacity: usize) -> Self {
        DecisionCache {
            ids: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn insert(&mut self, id: TraceKey, at: Instant) {
        if self.ids.insert(id, at).is_none() {
            self.order.push_back(id);
            if self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }

    fn decided_at(&self, id: &TraceKey) -> Option<Instant> {
        self.ids.get(id).copied()
    }
}

/// One shard of the trace table.
struct Shard {
    pending: HashMap<TraceKey, PendingTrace>,
    /// Traces in arrival order, for deciding by age.
    arrival: VecDeque<TraceKey>,
    sampled: DecisionCache,
    not_sampled: DecisionCache,
    /// Scratch space for the policies' decisions.
    decisions: Vec<Decision>,
}

struct Settings {
    id: ComponentId,
    decision_wait: Duration,
    after_root: Option<Duration>,
    /// Pending traces per shard at most.
    traces_per_shard: usize,
    max_trace_bytes: u64,
    sample_on_first_match: bool,
    drop_pending_on_shutdown: bool,
    policies: Policies,
}

pub struct TailSampler {
    settings: Settings,
    shards: Vec<Mutex<Shard>>,
    /// With `metadata_keys`: the metadata partitions of the trace table.
    partitions: Option<Partitions>,
    next: NextConsumer,
    metrics: TailSamplingMetrics,
    /// Per top-level policy, in order.
    policy_metrics: Vec<PolicyMetrics>,
    /// `global_count_traces_sampled` for not sampled / sampled.
    final_metrics: [prometheus::IntCounter; 2],
    traces_on_memory: prometheus::IntGauge,
    new_traces: prometheus::IntCounter,
    decided_early: prometheus::IntCounter,
    memory_pressure: Arc<MemoryPressure>,
    stop: CancellationToken,
}

fn shard_of(trace_id: &[u8; 16]) -> usize {
    // The low bytes of a trace id are random (W3C), so they spread traces evenly.
    usize::from(trace_id[15]) % SHARDS
}

impl TailSampler {
    pub fn start(
        id: ComponentId,
        config: &TailSamplingConfig,
        next: NextConsumer,
        metrics: TailSamplingMetrics,
        memory_pressure: Arc<MemoryPressure>,
    ) -> anyhow::Result<Arc<Self>> {
        let policies = Policies::compile(&config.policies)?;
        let decision_labels: Vec<(&str, bool)> = Decision::ALL
            .iter()
            .map(|d| (d.label(), d.samples()))
            .collect();
        let policy_metrics = policies
            .top
            .iter()
            .map(|p| metrics.policy(&p.name, &decision_labels))
            .collect();
        let after_root = config.decision_wait_after_root_received.non_zero();
        let cache_size = |configured: usize| {
            let total = if configured == 0 {
                DEFAULT_DECISION_CACHE
            } else {
                configured
            };
            total.div_ceil(SHARDS)
        };
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    pending: HashMap::new(),
                    arrival: VecDeque::new(),
                    sampled: DecisionCache::new(cache_size(
                        config.decision_cache.sampled_cache_size,
                    )),
                    not_sampled: DecisionCache::new(cache_size(
                        config.decision_cache.non_sampled_cache_size,
                    )),
                    decisions: Vec::with_capacity(policies.len()),
                })
            })
            .collect();
        let keys = client::normalize_keys(&config.metadata_keys)
            .map_err(|e| anyhow::anyhow!("metadata_keys: {e}"))?;
        let partitions = (!keys.is_empty()).then(|| Partitions {
            keys,
            limit: config.metadata_cardinality_limit as usize,
            table: Mutex::new((HashMap::new(), Vec::new())),
        });
        let sampler = Arc::new(TailSampler {
            settings: Settings {
                id,
                decision_wait: config.decision_wait.0,
                after_root,
                traces_per_shard: config.num_traces.div_ceil(SHARDS).max(1),
                max_trace_bytes: config.maximum_trace_size_bytes,
                sample_on_first_match: config.sample_on_first_match,
                drop_pending_on_shutdown: config.drop_pending_traces_on_shutdown,
                policies,
            },
            shards,
            partitions,
            next,
            policy_metrics,
            final_metrics: metrics.final_decisions(),
            traces_on_memory: metrics.traces_on_memory(),
            new_traces: metrics.new_trace(),
            decided_early: metrics.dropped_too_early(),
            metrics,
            memory_pressure,
            stop: CancellationToken::new(),
        });
        let ticker = sampler.clone();
        // Decide about ten times per decision_wait, so a trace waits at most 10% longer than asked.
        let tick =
            (config.decision_wait.0 / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => ticker.clone().decide_all_shards(false).await,
                    _ = ticker.stop.cancelled() => break,
                }
            }
        });
        Ok(sampler)
    }

    /// One timer run: every shard decides its due traces, in parallel.
    async fn decide_all_shards(self: Arc<Self>, all: bool) {
        let started = Instant::now();
        let under_pressure = !all && self.memory_pressure.is_refusing();
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..SHARDS {
            let sampler = self.clone();
            tasks.spawn(async move {
                let kept = sampler.decide_due(index, Instant::now(), all, under_pressure);
                sampler.forward(kept).await;
            });
        }
        while tasks.join_next().await.is_some() {}
        self.metrics
            .timer_run(started.elapsed().as_secs_f64() * 1000.0);
    }

    /// Decides the shard's traces whose time has come (all of them with `all`; and the oldest
    /// share when memory is short), returning the kept spans.
    fn decide_due(&self, index: usize, now: Instant, all: bool, under_pressure: bool) -> Outputs {
        let mut kept = Outputs::default();
        let Some(Ok(mut shard)) = self.shards.get(index).map(|s| s.lock()) else {
            return kept;
        };
        // While memory is short, the oldest quarter is decided early as well.
        let mut early = if under_pressure {
            (shard.arrival.len() / PRESSURE_RELEASE_SHARE).max(1)
        } else {
            0
        };
        let mut due = Vec::new();
        for id in &shard.arrival {
            let Some(trace) = shard.pending.get(id) else {
                continue;
            };
            if all || trace.decide_at <= now {
                due.push(*id);
            } else if early > 0 {
                early -= 1;
                self.decided_early.inc();
                due.push(*id);
            }
        }
        for id in due {
            if let Some(trace) = shard.pending.remove(&id) {
                self.decide(&mut shard, id, trace, now, &mut kept);
            }
        }
        let Shard {
            arrival, pending, ..
        } = &mut *shard;
        arrival.retain(|id| pending.contains_key(id));
        kept
    }

    fn decide(
        &self,
        shard: &mut Shard,
        id: TraceKey,
        trace: PendingTrace,
        now: Instant,
        kept: &mut Outputs,
    ) {
        let started = Instant::now();
        let mut decisions = std::mem::take(&mut shard.decisions);
        let sampled = self.settings.policies.evaluate(
            &id.1,
            &trace.summary,
            self.settings.sample_on_first_match,
            &mut decisions,
        );
        let spans = trace.summary.spans as u64;
        let per_policy = started.elapsed().as_secs_f64() * 1e6 / decisions.len().max(1) as f64;
        for (metrics, decision) in self.policy_metrics.iter().zip(&decisions) {
            if let Some((traces, span_count)) = metrics.by_decision.get(decision.index()) {
                traces.inc();
                span_count.inc_by(spans);
            }
            metrics.latency.observe(per_policy);
        }
        shard.decisions = decisions;
        self.final_metrics[usize::from(sampled)].inc();
        self.traces_on_memory.dec();
        if sampled {
            shard.sampled.insert(id, now);
            for part in &trace.parts {
                kept.push(id.0, part);
            }
        } else {
            shard.not_sampled.insert(id, now);
        }
    }

    /// Sends kept spans on, each partition's with its client metadata.
    async fn forward(&self, kept: Outputs) {
        for (partition, writer) in kept.by_partition {
            let data = writer.finish();
            if data.is_empty() {
                continue;
            }
            let spans = data.span_count();
            let info = match &self.partitions {
                Some(partitions) => partitions.info(partition),
                None => ClientInfo::default(),
            };
            if let Err(err) = client::scope(info, self.next.consume(data)).await {
                tracing::warn!(processor = %self.settings.id, spans, error = %err, "sending sampled traces failed");
            }
        }
    }

    /// Files one trace's part in its shard; returns spans to forward now (late spans of a kept
    /// trace, or traces decided early to make room).
    fn add_to_shard(&self, id: TraceKey, part: TraceSlice, now: Instant, out: &mut Outputs) {
        let Some(Ok(mut shard)) = self.shards.get(shard_of(&id.1)).map(|s| s.lock()) else {
            return;
        };
        // Late spans follow the decision already taken for their trace.
        if let Some(at) = shard.sampled.decided_at(&id) {
            self.metrics
                .late_span(now.saturating_duration_since(at).as_secs_f64(), true);
            out.push(id.0, &part);
            return;
        }
        if let Some(at) = shard.not_sampled.decided_at(&id) {
            self.metrics
                .late_span(now.saturating_duration_since(at).as_secs_f64(), false);
            return;
        }
        if !shard.pending.contains_key(&id) {
            if shard.pending.len() >= self.settings.traces_per_shard {
                // Full: decide the oldest now instead of dropping it.
                if let Some(oldest) = shard.arrival.pop_front() {
                    if let Some(trace) = shard.pending.remove(&oldest) {
                        self.decided_early.inc();
                        self.decide(&mut shard, oldest, trace, now, out);
                    }
                }
            }
            self.new_traces.inc();
            self.traces_on_memory.inc();
            shard.arrival.push_back(id);
            shard.pending.insert(
                id,
                PendingTrace {
                    parts: Vec::new(),
                    summary: TraceSummary::new(&self.settings.policies),
                    decide_at: now + self.settings.decision_wait,
                },
            );
        }
        let Some(trace) = shard.pending.get_mut(&id) else {
            return;
        };
        let root_seen = trace.summary.root_seen;
        trace.summary.add(&part, &self.settings.policies);
        if let (false, true, Some(after_root)) =
            (root_seen, trace.summary.root_seen, self.settings.after_root)
        {
            trace.decide_at = trace.decide_at.min(now + after_root);
        }
        if self.settings.max_trace_bytes > 0 && trace.summary.bytes > self.settings.max_trace_bytes
        {
            trace.decide_at = now;
        }
        trace.parts.push(part);
    }
}

#[async_trait]
impl TracesConsumer for TailSampler {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        let now = Instant::now();
        let partition = match &self.partitions {
            Some(partitions) => partitions.current()?,
            None => 0,
        };
        let mut out = Outputs::default();
        // Held for up to decision_wait: one exact-size copy of the request, which every trace's
        // slice then shares (rather than a rebuilt copy per trace, or the receive buffer).
        let data = data.compacted();
        for (id, part) in data.slices_by_trace() {
            self.add_to_shard((partition, id), part, now, &mut out);
        }
        self.forward(out).await;
        Ok(())
    }
}

#[async_trait]
impl Component for TailSampler {
    async fn shutdown(&self, _deadline: Instant) {
        self.stop.cancel();
        if self.settings.drop_pending_on_shutdown {
            return;
        }
        for index in 0..SHARDS {
            let kept = self.decide_due(index, Instant::now(), true, false);
            self.forward(kept).await;
        }
    }
}
