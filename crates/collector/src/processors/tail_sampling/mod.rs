//! The `tail_sampling` processor: holds each trace's spans until `decision_wait` has passed since
//! its first span, then keeps the whole trace when any policy samples it (errors, slow traces, a
//! share of the rest), as contrib's `tailsamplingprocessor`.
//!
//! Spans are held as encoded bytes per trace; what the policies need (span count, time bounds,
//! statuses, matched attributes) is folded into a small summary as spans arrive, so nothing is
//! decoded. Decided trace ids are remembered, so late spans follow their trace's decision (kept
//! traces stay whole; dropped ones stay dropped). When `num_traces` traces are pending, the oldest
//! is decided early rather than dropped.
//!
//! Not yet here (issue 3): the and/composite/drop/rate policies, invert_match, the upstream
//! metric families, sharding the decision work by trace id, and bounding memory in bytes.

mod config;
mod policies;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_yaml_ng::Value;
use threadline_config::{ComponentId, ConfigErrors};
use threadline_otlp::{TraceData, TraceDataBuilder};
use tokio_util::sync::CancellationToken;

pub use config::TailSamplingConfig;
use policies::{Policy, TraceSummary};

use crate::component::{decode_config, Component, CreateContext, Processor, ProcessorFactory};
use crate::consumer::{ConsumeError, NextConsumer, TracesConsumer};

const DEFAULT_DECISION_CACHE: usize = 100_000;

pub struct TailSamplingFactory;

impl ProcessorFactory for TailSamplingFactory {
    fn kind(&self) -> &'static str {
        "tail_sampling"
    }

    fn validate(&self, config: &Value, path: &str) -> Result<(), ConfigErrors> {
        decode_config::<TailSamplingConfig>(config, path).map(|_| ())
    }

    fn create_traces(
        &self,
        ctx: &CreateContext<'_>,
        config: &Value,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<dyn Processor>> {
        let config: TailSamplingConfig = decode_config(config, &format!("processors::{}", ctx.id))?;
        Ok(TailSampler::start(ctx.id.clone(), &config, next)?)
    }
}

struct PendingTrace {
    parts: Vec<TraceData>,
    summary: TraceSummary,
    decide_at: Instant,
}

/// A bounded set of trace ids, forgetting the oldest first.
struct DecisionCache {
    ids: HashSet<[u8; 16]>,
    order: VecDeque<[u8; 16]>,
    capacity: usize,
}

impl DecisionCache {
    fn new(capacity: usize) -> Self {
        let capacity = if capacity == 0 {
            DEFAULT_DECISION_CACHE
        } else {
            capacity
        };
        DecisionCache {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn insert(&mut self, id: [u8; 16]) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }

    fn contains(&self, id: &[u8; 16]) -> bool {
        self.ids.contains(id)
    }
}

struct State {
    pending: HashMap<[u8; 16], PendingTrace>,
    /// Trace ids in arrival order, for deciding by age.
    arrival: VecDeque<[u8; 16]>,
    sampled: DecisionCache,
    not_sampled: DecisionCache,
}

struct Settings {
    id: ComponentId,
    decision_wait: Duration,
    after_root: Option<Duration>,
    num_traces: usize,
    max_trace_bytes: u64,
    sample_on_first_match: bool,
    drop_pending_on_shutdown: bool,
    policies: Vec<Policy>,
}

pub struct TailSampler {
    settings: Settings,
    state: Mutex<State>,
    next: NextConsumer,
    stop: CancellationToken,
}

impl TailSampler {
    pub fn start(
        id: ComponentId,
        config: &TailSamplingConfig,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<Self>> {
        let policies = config
            .policies
            .iter()
            .map(Policy::compile)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let after_root = (!config.decision_wait_after_root_received.0.is_zero())
            .then_some(config.decision_wait_after_root_received.0);
        let sampler = Arc::new(TailSampler {
            settings: Settings {
                id,
                decision_wait: config.decision_wait.0,
                after_root,
                num_traces: config.num_traces,
                max_trace_bytes: config.maximum_trace_size_bytes,
                sample_on_first_match: config.sample_on_first_match,
                drop_pending_on_shutdown: config.drop_pending_traces_on_shutdown,
                policies,
            },
            state: Mutex::new(State {
                pending: HashMap::new(),
                arrival: VecDeque::new(),
                sampled: DecisionCache::new(config.decision_cache.sampled_cache_size),
                not_sampled: DecisionCache::new(config.decision_cache.non_sampled_cache_size),
            }),
            next,
            stop: CancellationToken::new(),
        });
        let ticker = sampler.clone();
        // Decide about ten times per decision_wait, so a trace waits at most 10% longer than asked.
        let tick =
            (config.decision_wait.0 / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            loop {
                tokio::select! {
                    _ = interval.tick() => ticker.decide_due(Instant::now(), false).await,
                    _ = ticker.stop.cancelled() => break,
                }
            }
        });
        Ok(sampler)
    }

    /// Decides every trace whose time has come (all of them when `all`) and forwards the kept ones.
    async fn decide_due(&self, now: Instant, all: bool) {
        let kept = {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            let mut kept = TraceDataBuilder::new();
            let mut index = 0;
            while index < state.arrival.len() {
                let id = state.arrival[index];
                let due = state
                    .pending
                    .get(&id)
                    .is_none_or(|t| all || t.decide_at <= now);
                if due {
                    state.arrival.remove(index);
                    if let Some(trace) = state.pending.remove(&id) {
                        self.decide(&mut state, id, trace, &mut kept);
                    }
                } else {
                    index += 1;
                }
            }
            kept.finish()
        };
        self.forward(kept).await;
    }

    fn decide(
        &self,
        state: &mut State,
        id: [u8; 16],
        trace: PendingTrace,
        kept: &mut TraceDataBuilder,
    ) {
        let sampled = policies::evaluate(
            &self.settings.policies,
            &id,
            &trace.summary,
            self.settings.sample_on_first_match,
        );
        if sampled {
            state.sampled.insert(id);
            for part in &trace.parts {
                kept.push(part);
            }
        } else {
            state.not_sampled.insert(id);
        }
    }

    async fn forward(&self, kept: TraceData) {
        if kept.is_empty() {
            return;
        }
        let spans = kept.span_count();
        if let Err(err) = self.next.consume(kept).await {
            tracing::warn!(processor = %self.settings.id, spans, error = %err, "sending sampled traces failed");
        }
    }
}

#[async_trait]
impl TracesConsumer for TailSampler {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        let now = Instant::now();
        let (late_kept, early) = {
            let mut state = self
                .state
                .lock()
                .map_err(|_| ConsumeError::Permanent("tail_sampling state poisoned".into()))?;
            let mut late_kept = TraceDataBuilder::new();
            let mut early = TraceDataBuilder::new();
            for (id, part) in data.split_by_trace() {
                // Late spans follow the decision already taken for their trace.
                if state.sampled.contains(&id) {
                    late_kept.push(&part);
                    continue;
                }
                if state.not_sampled.contains(&id) {
                    continue;
                }
                if !state.pending.contains_key(&id) {
                    if state.pending.len() >= self.settings.num_traces {
                        // Full: decide the oldest now instead of dropping it.
                        if let Some(oldest) = state.arrival.pop_front() {
                            if let Some(trace) = state.pending.remove(&oldest) {
                                self.decide(&mut state, oldest, trace, &mut early);
                            }
                        }
                    }
                    state.arrival.push_back(id);
                    state.pending.insert(
                        id,
                        PendingTrace {
                            parts: Vec::new(),
                            summary: TraceSummary::new(self.settings.policies.len()),
                            decide_at: now + self.settings.decision_wait,
                        },
                    );
                }
                let Some(trace) = state.pending.get_mut(&id) else {
                    continue;
                };
                let root_seen = trace.summary.root_seen;
                trace.summary.add(&part, &self.settings.policies);
                if let (false, true, Some(after_root)) =
                    (root_seen, trace.summary.root_seen, self.settings.after_root)
                {
                    trace.decide_at = trace.decide_at.min(now + after_root);
                }
                if self.settings.max_trace_bytes > 0
                    && trace.summary.bytes > self.settings.max_trace_bytes
                {
                    trace.decide_at = now;
                }
                trace.parts.push(part);
            }
            (late_kept.finish(), early.finish())
        };
        self.forward(late_kept).await;
        self.forward(early).await;
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
        self.decide_due(Instant::now(), true).await;
    }
}
