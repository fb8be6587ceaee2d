//! The W3C propagator for the `opentelemetry` API, built on [`crate::w3c`]: every hop of the demo
//! (HTTP headers and queue message headers) injects and extracts through it.

use std::sync::OnceLock;

use opentelemetry::propagation::{
    text_map_propagator::FieldIter, Extractor, Injector, TextMapPropagator,
};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;

use crate::w3c;

/// `traceparent` + `tracestate`, with the specification's validation.
#[derive(Debug, Default, Clone, Copy)]
pub struct W3cPropagator;

fn fields() -> &'static [String] {
    static FIELDS: OnceLock<[String; 2]> = OnceLock::new();
    FIELDS.get_or_init(|| ["traceparent".to_string(), "tracestate".to_string()])
}

impl TextMapPropagator for W3cPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let context = span.span_context();
        if !context.is_valid() {
            return;
        }
        let parent = w3c::TraceParent {
            trace_id: context.trace_id().to_bytes(),
            parent_id: context.span_id().to_bytes(),
            flags: context.trace_flags().to_u8() & (w3c::SAMPLED | w3c::RANDOM),
        };
        injector.set("traceparent", parent.to_string());
        let state = context.trace_state().header();
        if !state.is_empty() {
            injector.set("tracestate", state);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let parents = extractor.get_all("traceparent").unwrap_or_default();
        // Two traceparent headers are as bad as a malformed one.
        let traceparent = if parents.len() == 1 {
            Some(parents[0])
        } else {
            None
        };
        let states = extractor.get_all("tracestate").unwrap_or_default();
        let Some((parent, state)) = w3c::extract(traceparent, states) else {
            return cx.clone();
        };
        // The `opentelemetry` crate still checks keys by the older `tenant@system` grammar
        // (`foo@bar@baz` fails it): keep every member it takes rather than lose the whole list.
        let accepted = state
            .members
            .into_iter()
            .filter(|member| TraceState::from_key_value([member.clone()]).is_ok());
        let trace_state = TraceState::from_key_value(accepted).unwrap_or_default();
        cx.with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.parent_id),
            TraceFlags::new(parent.flags),
            true,
            trace_state,
        ))
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(fields())
    }
}

/// `http::HeaderMap` as an injector/extractor (every value of a repeated header is kept).
pub struct Headers<'a>(pub &'a mut http::HeaderMap);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

pub struct HeadersRef<'a>(pub &'a http::HeaderMap);

impl Extractor for HeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let all: Vec<&str> = self
            .0
            .get_all(key)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!all.is_empty()).then_some(all)
    }
}
