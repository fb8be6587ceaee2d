//! Metrics from traces, as Grafana Tempo's metrics-generator writes them: service-graph and
//! span-metrics series per tenant, served for Prometheus to scrape and sent by remote write.
//!
//! The store feeds it every batch it writes (or, in all-in-one, the `metrics_generator`
//! processor feeds it before `tail_sampling` decides, so it counts every span).

pub mod config;
pub mod exposition;
pub mod filter;
pub mod gateway;
pub mod instance;
pub mod pairing;
pub mod processor;
pub mod registry;
pub mod remote_write;
pub mod span;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use threadline_otlp::TraceData;

use crate::engine::Store;
pub use config::MetricsGeneratorConfig;
use instance::Instance;
use span::WireSpan;

pub struct Generator {
    config: MetricsGeneratorConfig,
    tenants: Mutex<HashMap<String, Arc<Mutex<Instance>>>>,
    /// Set when a processor upstream of sampling feeds the generator: the store exporter then
    /// leaves it alone, so no span is counted twice.
    fed_before_sampling: AtomicBool,
    remote_write: Option<remote_write::RemoteWriter>,
}

impl Store {
    /// This store's generator when `metrics_generator.processors` names any (or a
    /// `metrics_generator` collector processor started one), else None.
    pub fn generator(&self) -> Option<Arc<Generator>> {
        if let Some(running) = self.generator_cell().get() {
            return Some(running.clone());
        }
        self.config()
            .metrics_generator
            .enabled()
            .then(|| self.generator_or_default())
    }

    /// This store's generator, started with both processors when its config names none (the
    /// `metrics_generator` collector processor asks for one explicitly).
    pub fn generator_or_default(&self) -> Arc<Generator> {
        self.generator_cell()
            .get_or_init(|| {
                let mut config = self.config().metrics_generator.clone();
                if !config.enabled() {
                    config.processors =
                        vec![config::SERVICE_GRAPHS.into(), config::SPAN_METRICS.into()];
                }
                Generator::start(config)
            })
            .clone()
    }
}

impl Generator {
    /// A generator; its expiry and remote-write tasks run on the current tokio runtime (none
    /// outside one, as in unit tests, which call [`Generator::tick`] themselves).
    pub fn start(config: MetricsGeneratorConfig) -> Arc<Generator> {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let remote_write = runtime
            .as_ref()
            .filter(|_| !config.storage.remote_write.is_empty())
            .map(|_| remote_write::RemoteWriter::start(&config));
        let generator = Arc::new(Generator {
            config,
            tenants: Mutex::new(HashMap::new()),
            fed_before_sampling: AtomicBool::new(false),
            remote_write,
        });
        if let Some(runtime) = runtime {
            let weak = Arc::downgrade(&generator);
            runtime.spawn(async move {
                let mut ticker = tokio::time::interval(Duration::from_secs(1));
                let mut last_collection = Instant::now();
                loop {
                    ticker.tick().await;
                    let Some(generator) = weak.upgrade() else {
                        return;
                    };
                    let now = Instant::now();
                    generator.tick(now);
                    let interval = generator.config.registry.collection_interval.as_duration();
                    if now.duration_since(last_collection) >= interval {
                        last_collection = now;
                        generator.collect_for_remote_write();
                    }
                }
            });
        }
        generator
    }

    pub fn config(&self) -> &MetricsGeneratorConfig {
        &self.config
    }

    pub fn set_fed_before_sampling(&self) {
        self.fed_before_sampling.store(true, Ordering::Relaxed);
    }

    pub fn fed_before_sampling(&self) -> bool {
        self.fed_before_sampling.load(Ordering::Relaxed)
    }

    fn instance(&self, tenant: &str) -> Arc<Mutex<Instance>> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = tenants.get(tenant) {
            return i.clone();
        }
        let i = Arc::new(Mutex::new(Instance::new(&self.config)));
        tenants.insert(tenant.to_string(), i.clone());
        i
    }

    pub fn tenants(&self) -> Vec<(String, Arc<Mutex<Instance>>)> {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = tenants
            .iter()
            .map(|(t, i)| (t.clone(), i.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Called by the store exporter with what it wrote.
    pub fn observe_stored(&self, tenant: &str, data: &TraceData) {
        if !self.fed_before_sampling() {
            self.observe(tenant, data, Instant::now());
        }
    }

    pub fn observe(&self, tenant: &str, data: &TraceData, now: Instant) {
        let instance = self.instance(tenant);
        let mut instance = instance.lock().unwrap_or_else(|e| e.into_inner());
        // A batch has few resources: their attributes are decoded once each.
        let mut resource: (*const u8, span::DecodedAttributes<'_>, &str) =
            (std::ptr::null(), Vec::new(), "");
        data.for_each_span(|resource_view, _scope, span| {
            let raw = resource_view.raw();
            if raw.as_ptr() != resource.0 {
                let attributes: span::DecodedAttributes<'_> =
                    resource_view.raw_attributes().collect();
                let service = attributes
                    .iter()
                    .find(|(k, _)| *k == b"service.name")
                    .and_then(|(_, v)| v.decode().as_str())
                    .unwrap_or("");
                resource = (raw.as_ptr(), attributes, service);
            }
            let wire = WireSpan::new(&resource.1, *span, resource.2);
            instance.add(&wire, now);
        });
    }

    /// Expires waiting halves and stale series.
    pub fn tick(&self, now: Instant) {
        for (_, instance) in self.tenants() {
            let mut instance = instance.lock().unwrap_or_else(|e| e.into_inner());
            instance.expire(now);
            instance.registry.remove_stale(now);
        }
    }

    /// The labels every series of `tenant` gets on the way out.
    pub fn extra_labels(&self, tenant: &str, tenant_label: Option<&str>) -> Vec<(String, String)> {
        let mut labels: Vec<(String, String)> = self
            .config
            .registry
            .external_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let inject = &self.config.registry.inject_tenant_id_as;
        if let Some(name) = tenant_label.or((!inject.is_empty()).then_some(inject.as_str())) {
            labels.push((name.to_string(), tenant.to_string()));
        }
        if self.config.input_sampled {
            labels.push(("sampled".into(), "true".into()));
        }
        labels
    }

    /// Every tenant with the labels its series get on a page that shows them all: a tenant
    /// label (`inject_tenant_id_as`, else `tenant`) keeps their series apart.
    pub fn labelled_tenants(&self) -> Vec<(String, Vec<(String, String)>)> {
        let inject = &self.config.registry.inject_tenant_id_as;
        let label = if inject.is_empty() { "tenant" } else { inject };
        self.tenants()
            .into_iter()
            .map(|(t, _)| {
                let extra = self.extra_labels(&t, Some(label));
                (t, extra)
            })
            .collect()
    }

    fn collect_for_remote_write(&self) {
        let Some(writer) = &self.remote_write else {
            return;
        };
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        for (tenant, instance) in self.tenants() {
            let extra = self.extra_labels(&tenant, None);
            let mut instance = instance.lock().unwrap_or_else(|e| e.into_inner());
            let request = remote_write::write_request(&mut instance, &extra, timestamp_ms);
            drop(instance);
            writer.enqueue(tenant, request);
        }
    }

    /// At shutdown: one last collection for remote write, sent before `deadline` (the series
    /// counted since the previous collection would otherwise never reach Prometheus).
    pub async fn flush_remote_write(&self, deadline: Instant) {
        let Some(writer) = &self.remote_write else {
            return;
        };
        self.collect_for_remote_write();
        if !writer.drain(deadline).await {
            tracing::warn!("remote write: shutdown deadline passed with requests still queued");
        }
    }

    pub fn remote_write_stats(&self) -> Option<remote_write::Stats> {
        self.remote_write.as_ref().map(|w| w.stats())
    }
}
