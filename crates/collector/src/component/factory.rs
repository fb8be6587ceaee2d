//! Factories: how a component type turns its config section into a running component.
//!
//! A component implements one of the typed traits (`TypedProcessorFactory` and its siblings): it
//! names its type, declares its [`ComponentConfig`] and creates the component from that config,
//! already decoded and validated. It never sees YAML. The blanket impls below wrap every typed
//! factory once into the object-safe form the [`Registry`](crate::registry::Registry) stores and the
//! service calls: they decode the section (serde defaults, `deny_unknown_fields`), run the config's
//! own `validate`, and attach the section's YAML path (`processors::batch/2::timeout`) to every
//! error, so messages read the same for every component.
//!
//! Components outside this crate may still implement the object-safe traits directly.

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;
use std::sync::Arc;
use threadline_config::{decode_component, ConfigError, ConfigErrors};

use super::{Component, CreateContext, Exporter, Extension, Processor};
use crate::consumer::NextConsumer;
use crate::metrics::MetricDef;

/// The four kinds of component, each with its section of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Receiver,
    Processor,
    Exporter,
    Extension,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Receiver,
        Kind::Processor,
        Kind::Exporter,
        Kind::Extension,
    ];

    /// The config section of this kind: `receivers`, `processors`, ...
    pub fn section(self) -> &'static str {
        match self {
            Kind::Receiver => "receivers",
            Kind::Processor => "processors",
            Kind::Exporter => "exporters",
            Kind::Extension => "extensions",
        }
    }
}

/// A component's typed configuration. Validation beyond what serde checks goes in `validate`,
/// returning errors whose `path` is relative to the component (e.g. `timeout`).
pub trait ComponentConfig: DeserializeOwned + Send + 'static {
    fn validate(&self) -> Result<(), Vec<ConfigError>> {
        Ok(())
    }

    /// The JSON Schema of this config for the generated reference, usually
    /// `Some(crate::reference::schema_of::<Self>())` with `schemars::JsonSchema` derived beside
    /// `Deserialize`. None leaves the component's page without a field table.
    fn json_schema() -> Option<serde_json::Value> {
        None
    }
}

/// What a component type tells the generated reference (`threadline components --docs`) besides
/// its config, whose doc comments, types and defaults come from the config struct itself.
#[derive(Debug, Clone, Copy)]
pub struct About {
    /// The upstream component this one follows, e.g. `batchprocessor`, or `contrib
    /// tailsamplingprocessor` for one of opentelemetry-collector-contrib.
    pub upstream: &'static str,
    /// The metric families it emits, as groups of [`crate::metrics`].
    pub metrics: &'static [&'static [MetricDef]],
}

impl About {
    /// What a factory implementing the object-safe trait directly says unless it tells more.
    pub const UNDESCRIBED: About = About {
        upstream: "",
        metrics: &[],
    };
}

/// Decodes and validates a component's config section found at `path` (e.g. `processors::batch`).
pub fn decode_config<C: ComponentConfig>(value: &Value, path: &str) -> Result<C, ConfigErrors> {
    let config: C = decode_component(value, path)?;
    config.validate().map_err(|errors| {
        ConfigErrors(
            errors
                .into_iter()
                .map(|e| ConfigError {
                    path: if e.path.is_empty() {
                        path.to_string()
                    } else {
                        format!("{path}::{}", e.path)
                    },
                    message: e.message,
                })
                .collect(),
        )
    })?;
    Ok(config)
}

/// A receiver type: starts a receiver (binding its ports) that sends what it receives to `next`.
pub trait TypedReceiverFactory: Send + Sync + 'static {
    type Config: ComponentConfig;
    fn kind(&self) -> &'static str;
    fn about(&self) -> About {
        About::UNDESCRIBED
    }
    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: Self::Config,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<dyn Component>>;
}

/// A processor type: starts a processor that forwards to `next`.
pub trait TypedProcessorFactory: Send + Sync + 'static {
    type Config: ComponentConfig;
    fn kind(&self) -> &'static str;
    fn about(&self) -> About {
        About::UNDESCRIBED
    }
    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: Self::Config,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<dyn Processor>>;
}

/// An exporter type.
pub trait TypedExporterFactory: Send + Sync + 'static {
    type Config: ComponentConfig;
    fn kind(&self) -> &'static str;
    fn about(&self) -> About {
        About::UNDESCRIBED
    }
    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: Self::Config,
    ) -> anyhow::Result<Arc<dyn Exporter>>;
}

/// An extension type.
pub trait TypedExtensionFactory: Send + Sync + 'static {
    type Config: ComponentConfig;
    fn kind(&self) -> &'static str;
    fn about(&self) -> About {
        About::UNDESCRIBED
    }
    fn create(
        &self,
        ctx: &CreateContext<'_>,
        config: Self::Config,
    ) -> anyhow::Result<Arc<dyn Extension>>;
}

/// The object-safe form of a receiver factory, as the registry holds it.
pub trait ReceiverFactory: Send + Sync {
    fn kind(&self) -> &'static str;
    /// Upstream's name and the metrics, for the generated reference.
    fn about(&self) -> About {
        About::UNDESCRIBED
    }
    /// The JSON Schema of the config section (doc comments as descriptions, serde defaults);
    /// null when the component does not describe it.
    fn config_schema(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Decodes and validates the section at `path`, reporting every error with its full path.
    fn validate(&self, config: &Value, path: &str) -> Result<(), ConfigErrors>;
    /// Creates and starts the receiver (binding its ports), sending what it receives to `next`.
    fn create_traces(
        &self,
        ctx: &CreateContext<'_>,
        config: &Value,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<dyn Component>>;
}

/// The object-safe form of a processor factory.
pub trait ProcessorFactory: Send + Sync {
    fn kind(&self) -> &'static str;
    fn about(&self) -> About {
        About::UNDESCRIBED
    }
    fn config_schema(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn validate(&self, config: &Value, path: &str) -> Result<(), ConfigErrors>;
    fn create_traces(
        &self,
        ctx: &CreateContext<'_>,
        config: &Value,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<dyn Processor>>;
}

/// The object-safe form of an exporter factory.
pub trait ExporterFactory: Send + Sync {
    fn kind(&self) -> &'static str;
    fn about(&self) -> About {
        About::UNDESCRIBED
    }
    fn config_schema(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn validate(&self, config: &Value, path: &str) -> Result<(), ConfigErrors>;
    fn create_traces(
        &self,
        ctx: &CreateContext<'_>,
        config: &Value,
    ) -> anyhow::Result<Arc<dyn Exporter>>;
}

/// The object-safe form of an extension factory.
pub trait ExtensionFactory: Send + Sync {
    fn kind(&self) -> &'static str;
    fn about(&self) -> About {
        About::UNDESCRIBED
    }
    fn config_schema(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn validate(&self, config: &Value, path: &str) -> Result<(), ConfigErrors>;
    fn create(&self, ctx: &CreateContext<'_>, config: &Value)
        -> anyhow::Result<Arc<dyn Extension>>;
}

/// Wraps every typed factory of one kind into its object-safe form. The four kinds differ only
/// in the traits, the method's name and whether it takes the next consumer: each decodes and
/// validates the section once and attaches the section's YAML path to every error.
macro_rules! object_safe_factory {
    ($typed:ident => $object:ident, $kind:expr, fn $method:ident($($next:ident)?) -> $out:ty) => {
        impl<F: $typed> $object for F {
            fn kind(&self) -> &'static str {
                $typed::kind(self)
            }

            fn about(&self) -> About {
                $typed::about(self)
            }

            fn config_schema(&self) -> serde_json::Value {
                F::Config::json_schema().unwrap_or_default()
            }

            fn validate(&self, config: &Value, path: &str) -> Result<(), ConfigErrors> {
                decode_config::<F::Config>(config, path).map(|_| ())
            }

            fn $method(
                &self,
                ctx: &CreateContext<'_>,
                config: &Value,
                $($next: NextConsumer,)?
            ) -> anyhow::Result<Arc<$out>> {
                let config = decode_config(config, &ctx.path($kind))?;
                $typed::create(self, ctx, config, $($next)?)
            }
        }
    };
}

object_safe_factory!(
    TypedReceiverFactory => ReceiverFactory,
    Kind::Receiver,
    fn create_traces(next) -> dyn Component
);
object_safe_factory!(
    TypedProcessorFactory => ProcessorFactory,
    Kind::Processor,
    fn create_traces(next) -> dyn Processor
);
object_safe_factory!(
    TypedExporterFactory => ExporterFactory,
    Kind::Exporter,
    fn create_traces() -> dyn Exporter
);
object_safe_factory!(
    TypedExtensionFactory => ExtensionFactory,
    Kind::Extension,
    fn create() -> dyn Extension
);
