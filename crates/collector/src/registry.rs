//! The component types this build knows, by their config `type` name.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;
use threadline_config::ConfigErrors;

use crate::component::{
    ExporterFactory, ExtensionFactory, Kind, ProcessorFactory, ReceiverFactory,
};
use crate::exporters::debug::DebugExporterFactory;
use crate::exporters::loadbalancing::LoadBalancingFactory;
use crate::exporters::otlp::OtlpExporterFactory;
use crate::exporters::otlphttp::OtlpHttpExporterFactory;
use crate::extensions::basicauth::BasicAuthFactory;
use crate::extensions::bearertokenauth::BearerTokenAuthFactory;
use crate::extensions::file_storage::FileStorageFactory;
use crate::extensions::headers_setter::HeadersSetterFactory;
use crate::extensions::health_check::HealthCheckFactory;
use crate::processors::attributes::AttributesProcessorFactory;
use crate::processors::batch::BatchProcessorFactory;
use crate::processors::memory_limiter::MemoryLimiterFactory;
use crate::processors::tail_sampling::TailSamplingFactory;
use crate::receivers::otlp::OtlpReceiverFactory;

/// Factories by component type.
pub struct Registry {
    pub receivers: BTreeMap<&'static str, Box<dyn ReceiverFactory>>,
    pub processors: BTreeMap<&'static str, Box<dyn ProcessorFactory>>,
    pub exporters: BTreeMap<&'static str, Box<dyn ExporterFactory>>,
    pub extensions: BTreeMap<&'static str, Box<dyn ExtensionFactory>>,
}

impl Registry {
    /// Every component compiled into Threadline.
    pub fn builtin() -> Self {
        let mut registry = Registry {
            receivers: BTreeMap::new(),
            processors: BTreeMap::new(),
            exporters: BTreeMap::new(),
            extensions: BTreeMap::new(),
        };
        registry.add_receiver(Box::new(OtlpReceiverFactory));
        registry.add_processor(Box::new(BatchProcessorFactory));
        registry.add_processor(Box::new(MemoryLimiterFactory));
        registry.add_processor(Box::new(AttributesProcessorFactory));
        registry.add_processor(Box::new(TailSamplingFactory));
        registry.add_exporter(Box::new(OtlpExporterFactory));
        registry.add_exporter(Box::new(OtlpHttpExporterFactory));
        registry.add_exporter(Box::new(DebugExporterFactory));
        registry.add_exporter(Box::new(LoadBalancingFactory::default()));
        registry.add_exporter(Box::new(LoadBalancingFactory::newer_name()));
        registry.add_extension(Box::new(HealthCheckFactory));
        registry.add_extension(Box::new(FileStorageFactory));
        registry.add_extension(Box::new(BearerTokenAuthFactory));
        registry.add_extension(Box::new(BasicAuthFactory));
        registry.add_extension(Box::new(HeadersSetterFactory));
        registry
    }

    pub fn add_receiver(&mut self, factory: Box<dyn ReceiverFactory>) {
        self.receivers.insert(factory.kind(), factory);
    }

    pub fn add_processor(&mut self, factory: Box<dyn ProcessorFactory>) {
        self.processors.insert(factory.kind(), factory);
    }

    pub fn add_exporter(&mut self, factory: Box<dyn ExporterFactory>) {
        self.exporters.insert(factory.kind(), factory);
    }

    pub fn add_extension(&mut self, factory: Box<dyn ExtensionFactory>) {
        self.extensions.insert(factory.kind(), factory);
    }

    /// The types of `kind` this registry knows, sorted.
    pub fn types(&self, kind: Kind) -> Vec<&'static str> {
        match kind {
            Kind::Receiver => self.receivers.keys().copied().collect(),
            Kind::Processor => self.processors.keys().copied().collect(),
            Kind::Exporter => self.exporters.keys().copied().collect(),
            Kind::Extension => self.extensions.keys().copied().collect(),
        }
    }

    /// Decodes and validates the section at `path` with the factory of `kind` and `type_name`;
    /// None when no such factory is registered.
    pub fn validate(
        &self,
        kind: Kind,
        type_name: &str,
        config: &Value,
        path: &str,
    ) -> Option<Result<(), ConfigErrors>> {
        Some(match kind {
            Kind::Receiver => self.receivers.get(type_name)?.validate(config, path),
            Kind::Processor => self.processors.get(type_name)?.validate(config, path),
            Kind::Exporter => self.exporters.get(type_name)?.validate(config, path),
            Kind::Extension => self.extensions.get(type_name)?.validate(config, path),
        })
    }
}

/// "a, b, c": the supported types, for error messages.
pub fn list<T>(factories: &BTreeMap<&'static str, T>) -> String {
    factories.keys().copied().collect::<Vec<_>>().join(", ")
}
