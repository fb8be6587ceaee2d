//! The component model, after the OpenTelemetry Collector's: every component type has a factory that
//! validates its config section and creates running instances; the service wires them into pipelines.
//! How a factory is written and how the service calls it: see [`factory`].

mod factory;

pub use factory::decode_config;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use threadline_config::ComponentId;

use crate::consumer::TracesConsumer;
use crate::telemetry::Telemetry;

/// What the service needs from every running component: an orderly stop.
#[async_trait]
pub trait Component: Send + Sync {
    /// Stops the component by `deadline`. Receivers stop accepting and finish in-flight requests,
    /// processors flush what they hold downstream, exporters drain their queues (a persistent queue
    /// keeps what is left for the next start).
    async fn shutdown(&self, deadline: Instant);
}

/// A running processor: consumes data and forwards it to the next stage.
pub trait Processor: TracesConsumer + Component {}
impl<T: TracesConsumer + Component> Processor for T {}

/// A running exporter: consumes data and sends it out of the process.
pub trait Exporter: TracesConsumer + Component {}

/// A running extension. Other components find it by id and downcast it (e.g. `file_storage`),
/// or ask it for the authenticator it is (receivers' and exporters' `auth`).
pub trait Extension: Component {
    fn as_any(&self) -> &dyn Any;

    /// This extension as a server authenticator, if it is one.
    fn server_authenticator(&self) -> Option<Arc<dyn crate::auth::ServerAuthenticator>> {
        None
    }

    /// This extension as a client authenticator, if it is one.
    fn client_authenticator(&self) -> Option<Arc<dyn crate::auth::ClientAuthenticator>> {
        None
    }
}

/// Readiness shared with the `health_check` extension: set once every pipeline is running.
#[derive(Default)]
pub struct HealthState {
    ready: AtomicBool,
}

impl HealthState {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Process-wide memory pressure, set by `memory_limiter` and read by receivers so that they refuse
/// a request before reading its body into memory (the processor alone would see data only after
/// the receiver had already buffered and decoded it).
#[derive(Default)]
pub struct MemoryPressure {
    refusing: AtomicBool,
}

impl MemoryPressure {
    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::Relaxed);
    }

    pub fn is_refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }
}

/// What components may use of the process around them.
#[derive(Default)]
pub struct Host {
    pub extensions: BTreeMap<ComponentId, Arc<dyn Extension>>,
    pub health: Arc<HealthState>,
    pub memory_pressure: Arc<MemoryPressure>,
}

impl Host {
    /// The extension `id` as its concrete type, if it is configured and of that type.
    pub fn extension<T: 'static>(&self, id: &ComponentId) -> Option<&T> {
        self.extensions.get(id)?.as_any().downcast_ref::<T>()
    }
}

/// Passed to factories when they create a component.
pub struct CreateContext<'a> {
    pub id: &'a ComponentId,
    pub telemetry: &'a Arc<Telemetry>,
    pub host: &'a Host,
}

impl CreateContext<'_> {
    /// The component's YAML path in a section of `kind`, e.g. `exporters::otlp/tempo`, for errors.
    pub fn path(&self, kind: Kind) -> String {
        format!("{}::{}", kind.section(), self.id)
    }
}

pub use factory::{
    About, ComponentConfig, ExporterFactory, ExtensionFactory, Kind, ProcessorFactory,
    ReceiverFactory, TypedExporterFactory, TypedExtensionFactory, TypedProcessorFactory,
    TypedReceiverFactory,
};
