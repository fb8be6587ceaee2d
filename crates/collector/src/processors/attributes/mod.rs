//! The `attributes` processor: inserts, updates, deletes, hashes, extracts and converts span
//! attributes, as upstream's `attributesprocessor`. Unlike the rest of the pipeline it must change
//! spans, so it decodes each request into prost structs and encodes it again.

mod config;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use regex::Regex;
use sha2::{Digest, Sha256};
use threadline_otlp::proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use threadline_otlp::proto::tonic::trace::v1::span::SpanKind;
use threadline_otlp::proto::tonic::trace::v1::Span;
use threadline_otlp::TraceData;

pub use config::{Action, AttributesConfig, ConvertedType, MatchType};

use crate::component::{About, Component, CreateContext, Processor, TypedProcessorFactory};
use crate::consumer::{ConsumeError, NextConsumer, TracesConsumer};

pub struct AttributesProcessorFactory;

impl TypedProcessorFactory for AttributesProcessorFactory {
    type Config = AttributesConfig;

    fn kind(&self) -> &'static str {
        "attributes"
    }

    fn about(&self) -> About {
        About {
            upstream: "contrib attributesprocessor",
            metrics: &[],
        }
    }

    fn create(
        &self,
        _ctx: &CreateContext<'_>,
        config: AttributesConfig,
        next: NextConsumer,
    ) -> anyhow::Result<Arc<dyn Processor>> {
        Ok(Arc::new(AttributesProcessor::new(&config, next)?))
    }
}

/// One action, compiled.
struct CompiledAction {
    key: String,
    action: Action,
    value: Option<AnyValue>,
    from_attribute: Option<String>,
    pattern: Option<Regex>,
    converted_type: Option<ConvertedType>,
}

/// Span selection by `include`/`exclude`, compiled.
struct Matcher {
    services: Vec<Pattern>,
    span_names: Vec<Pattern>,
    span_kinds: Vec<i32>,
    attributes: Vec<(String, Option<Pattern>)>,
    resources: Vec<(String, Option<Pattern>)>,
}

enum Pattern {
    Exact(String),
    Regex(Regex),
}

impl Pattern {
    fn new(text: &str, match_type: MatchType) -> anyhow::Result<Self> {
        Ok(match match_type {
            MatchType::Strict => Pattern::Exact(text.to_string()),
            MatchType::Regexp => Pattern::Regex(Regex::new(text)?),
        })
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == text,
            Pattern::Regex(regex) => regex.is_match(text),
        }
    }
}

pub struct AttributesProcessor {
    actions: Vec<CompiledAction>,
    include: Option<Matcher>,
    exclude: Option<Matcher>,
    next: NextConsumer,
}

fn yaml_to_any_value(value: &serde_yaml_ng::Value) -> Option<AnyValue> {
    let value = match value {
        serde_yaml_ng::Value::String(s) => any_value::Value::StringValue(s.clone()),
        serde_yaml_ng::Value::Bool(b) => any_value::Value::BoolValue(*b),
        serde_yaml_ng::Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64()?),
        },
        _ => return None,
    };
    Some(AnyValue { value: Some(value) })
}

/// The attribute's value as text, for matching and extraction.
fn value_text(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn compile_matcher(properties: &config::MatchProperties) -> anyhow::Result<Matcher> {
    let match_type = properties.match_type;
    let patterns = |texts: &[String]| -> anyhow::Result<Vec<Pattern>> {
        texts.iter().map(|t| Pattern::new(t, match_type)).collect()
    };
    let attributes =
        |list: &[config::AttributeMatch]| -> anyhow::Result<Vec<(String, Option<Pattern>)>> {
            list.iter()
                .map(|a| {
                    let value = match a
                        .value
                        .as_ref()
                        .and_then(yaml_to_any_value)
                        .as_ref()
                        .and_then(value_text)
                    {
                        Some(text) => Some(Pattern::new(&text, match_type)?),
                        None => None,
                    };
                    Ok((a.key.clone(), value))
                })
                .collect()
        };
    Ok(Matcher {
        services: patterns(&properties.services)?,
        span_names: patterns(&properties.span_names)?,
        span_kinds: properties
            .span_kinds
            .iter()
            .filter_map(|k| SpanKind::from_str_name(k).map(|k| k as i32))
            .collect(),
        attributes: attributes(&properties.attributes)?,
        resources: attributes(&properties.resources)?,
    })
}

fn attributes_match(wanted: &[(String, Option<Pattern>)], attributes: &[KeyValue]) -> bool {
    wanted.iter().all(|(key, value)| {
        attributes.iter().any(|kv| {
            &kv.key == key
                && match value {
                    None => true,
                    Some(pattern) => kv
                        .value
                        .as_ref()
                        .and_then(value_text)
                        .is_some_and(|text| pattern.matches(&text)),
                }
        })
    })
}

impl Matcher {
    fn matches(&self, service: &str, resource: &[KeyValue], span: &Span) -> bool {
        (self.services.is_empty() || self.services.iter().any(|p| p.matches(service)))
            && (self.span_names.is_empty() || self.span_names.iter().any(|p| p.matches(&span.name)))
            && (self.span_kinds.is_empty() || self.span_kinds.contains(&span.kind))
            && attributes_match(&self.attributes, &span.attributes)
            && attributes_match(&self.resources, resource)
    }
}

impl AttributesProcessor {
    pub fn new(config: &AttributesConfig, next: NextConsumer) -> anyhow::Result<Self> {
        let actions = config
            .actions
            .iter()
            .map(|a| {
                Ok(CompiledAction {
                    key: a.key.clone(),
                    action: a.action,
                    value: a.value.as_ref().and_then(yaml_to_any_value),
                    from_attribute: a.from_attribute.clone(),
                    pattern: a.pattern.as_deref().map(Regex::new).transpose()?,
                    converted_type: a.converted_type,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(AttributesProcessor {
            actions,
            include: config.include.as_ref().map(compile_matcher).transpose()?,
            exclude: config.exclude.as_ref().map(compile_matcher).transpose()?,
            next,
        })
    }

    fn selected(&self, service: &str, resource: &[KeyValue], span: &Span) -> bool {
        self.include
            .as_ref()
            .is_none_or(|m| m.matches(service, resource, span))
            && !self
                .exclude
                .as_ref()
                .is_some_and(|m| m.matches(service, resource, span))
    }

    /// Applies every action, in order, to one span's attributes.
    fn apply(&self, attributes: &mut Vec<KeyValue>) {
        for action in &self.actions {
            let position = attributes.iter().position(|kv| kv.key == action.key);
            match action.action {
                Action::Insert | Action::Update | Action::Upsert => {
                    let value = match &action.from_attribute {
                        Some(source) => attributes
                            .iter()
                            .find(|kv| &kv.key == source)
                            .and_then(|kv| kv.value.clone()),
                        None => action.value.clone(),
                    };
                    let Some(value) = value else { continue };
                    match (position, action.action) {
                        (Some(i), Action::Update | Action::Upsert) => {
                            attributes[i].value = Some(value)
                        }
                        (None, Action::Insert | Action::Upsert) => attributes.push(KeyValue {
                            key: action.key.clone(),
                            value: Some(value),
                            ..Default::default()
                        }),
                        _ => {}
                    }
                }
                Action::Delete => attributes.retain(|kv| {
                    kv.key != action.key
                        && !action.pattern.as_ref().is_some_and(|p| p.is_match(&kv.key))
                }),
                Action::Hash => {
                    for kv in attributes.iter_mut() {
                        if kv.key == action.key
                            || action.pattern.as_ref().is_some_and(|p| p.is_match(&kv.key))
                        {
                            if let Some(value) = kv.value.as_mut() {
                                hash_value(value);
                            }
                        }
                    }
                }
                Action::Extract => {
                    let (Some(i), Some(pattern)) = (position, &action.pattern) else {
                        continue;
                    };
                    let Some(any_value::Value::StringValue(text)) =
                        attributes[i].value.as_ref().and_then(|v| v.value.clone())
                    else {
                        continue;
                    };
                    let Some(captures) = pattern.captures(&text) else {
                        continue;
                    };
                    for name in pattern.capture_names().flatten() {
                        let Some(found) = captures.name(name) else {
                            continue;
                        };
                        let value = Some(AnyValue {
                            value: Some(any_value::Value::StringValue(found.as_str().to_string())),
                        });
                        match attributes.iter_mut().find(|kv| kv.key == name) {
                            Some(existing) => existing.value = value,
                            None => attributes.push(KeyValue {
                                key: name.to_string(),
                                value,
                                ..Default::default()
                            }),
                        }
                    }
                }
                Action::Convert => {
                    let (Some(i), Some(target)) = (position, action.converted_type) else {
                        continue;
                    };
                    if let Some(value) = attributes[i].value.as_mut() {
                        convert_value(value, target);
                    }
                }
            }
        }
    }
}

/// SHA-256 of the value's bytes as upstream hashes them (strings as UTF-8, bools as one byte,
/// ints and doubles as 8 little-endian bytes), as a lowercase hex string.
fn hash_value(value: &mut AnyValue) {
    let bytes: Vec<u8> = match value.value.as_ref() {
        Some(any_value::Value::StringValue(s)) => s.as_bytes().to_vec(),
        Some(any_value::Value::BoolValue(b)) => vec![u8::from(*b)],
        Some(any_value::Value::IntValue(i)) => i.to_le_bytes().to_vec(),
        Some(any_value::Value::DoubleValue(d)) => d.to_bits().to_le_bytes().to_vec(),
        Some(any_value::Value::BytesValue(b)) => b.clone(),
        _ => return,
    };
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    value.value = Some(any_value::Value::StringValue(hex));
}

/// Converts in place; a value that cannot be converted is left unchanged, as upstream does.
fn convert_value(value: &mut AnyValue, target: ConvertedType) {
    use any_value::Value as V;
    let converted = match (value.value.as_ref(), target) {
        (Some(V::StringValue(s)), ConvertedType::Int) => {
            s.trim().parse::<i64>().ok().map(V::IntValue)
        }
        (Some(V::DoubleValue(d)), ConvertedType::Int) => Some(V::IntValue(*d as i64)),
        (Some(V::BoolValue(b)), ConvertedType::Int) => Some(V::IntValue(i64::from(*b))),
        (Some(V::StringValue(s)), ConvertedType::Double) => {
            s.trim().parse::<f64>().ok().map(V::DoubleValue)
        }
        (Some(V::IntValue(i)), ConvertedType::Double) => Some(V::DoubleValue(*i as f64)),
        (Some(V::BoolValue(b)), ConvertedType::Double) => {
            Some(V::DoubleValue(f64::from(u8::from(*b))))
        }
        (Some(other), ConvertedType::String) => value_text(&AnyValue {
            value: Some(other.clone()),
        })
        .map(V::StringValue),
        _ => None,
    };
    if let Some(converted) = converted {
        value.value = Some(converted);
    }
}

#[async_trait]
impl TracesConsumer for AttributesProcessor {
    async fn consume(&self, data: TraceData) -> Result<(), ConsumeError> {
        let mut request = data
            .to_request()
            .map_err(|e| ConsumeError::Permanent(format!("attributes processor: {e}")))?;
        for resource_spans in &mut request.resource_spans {
            let resource = resource_spans
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default();
            let service = resource
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(value_text)
                .unwrap_or_default();
            let resource = resource.to_vec();
            for scope_spans in &mut resource_spans.scope_spans {
                for span in &mut scope_spans.spans {
                    if self.selected(&service, &resource, span) {
                        self.apply(&mut span.attributes);
                    }
                }
            }
        }
        self.next.consume(TraceData::from_request(&request)).await
    }
}

#[async_trait]
impl Component for AttributesProcessor {
    async fn shutdown(&self, _deadline: Instant) {}
}
