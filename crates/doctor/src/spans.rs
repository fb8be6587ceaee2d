//! Reading the span model: attribute lookups, and the endpoint keys that tie a client span to
//! the server spans of the service it calls.

use std::collections::HashMap;

use threadline_traceql::model::{Span, SpanKind, Trace, Value};

/// A span attribute as text (ints too: ports are often ints).
pub fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| match v {
            Value::Str(s) if !s.is_empty() => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        })
}

pub fn is_outgoing(kind: SpanKind) -> bool {
    matches!(kind, SpanKind::Client | SpanKind::Producer)
}

pub fn is_incoming(kind: SpanKind) -> bool {
    matches!(kind, SpanKind::Server | SpanKind::Consumer)
}

pub fn kind_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Unspecified => "unspecified",
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

/// `host:port` of a URL (`http://h:1/x` → `h:1`, default ports filled in), lower-cased.
pub fn url_authority(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    let authority = authority.to_ascii_lowercase();
    if has_port {
        return Some(authority);
    }
    let port = match scheme.to_ascii_lowercase().as_str() {
        "https" | "grpcs" => 443,
        _ => 80,
    };
    Some(format!("{authority}:{port}"))
}

fn host_port(host: Option<String>, port: Option<String>) -> Option<String> {
    let host = host?.to_ascii_lowercase();
    Some(match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// Names a client (or producer) span gives its callee, most specific first: `peer.service`,
/// `rpc.service`, messaging destination, `server.address:port`, the authority of `url.full`.
pub fn callee_keys(span: &Span) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(peer) = attr(span, "peer.service") {
        keys.push(format!("service:{peer}"));
    }
    if let Some(rpc) = attr(span, "rpc.service") {
        keys.push(format!("rpc:{rpc}"));
    }
    for key in ["messaging.destination.name", "messaging.destination"] {
        if let Some(dest) = attr(span, key) {
            keys.push(format!("dest:{dest}"));
            break;
        }
    }
    let address = attr(span, "server.address").or_else(|| attr(span, "net.peer.name"));
    let port = attr(span, "server.port").or_else(|| attr(span, "net.peer.port"));
    if let Some(hp) = host_port(address, port) {
        keys.push(format!("addr:{hp}"));
    }
    if let Some(authority) = attr(span, "url.full")
        .or_else(|| attr(span, "http.url"))
        .and_then(|u| url_authority(&u))
    {
        let key = format!("addr:{authority}");
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Names a server (or consumer) span answers to: its own service (`peer.service`), `rpc.service`,
/// messaging destination, `server.address:port` (the Host it was called on), `url.full`.
pub fn own_keys(span: &Span) -> Vec<String> {
    let mut keys = Vec::new();
    let service = span.service_name();
    if !service.is_empty() {
        keys.push(format!("service:{service}"));
    }
    if let Some(rpc) = attr(span, "rpc.service") {
        keys.push(format!("rpc:{rpc}"));
    }
    for key in ["messaging.destination.name", "messaging.destination"] {
        if let Some(dest) = attr(span, key) {
            keys.push(format!("dest:{dest}"));
            break;
        }
    }
    let address = attr(span, "server.address").or_else(|| attr(span, "net.host.name"));
    let port = attr(span, "server.port").or_else(|| attr(span, "net.host.port"));
    if let Some(hp) = host_port(address, port) {
        keys.push(format!("addr:{hp}"));
    }
    if let Some(authority) = attr(span, "url.full").and_then(|u| url_authority(&u)) {
        let key = format!("addr:{authority}");
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Parent/child structure of one trace.
pub struct TraceIndex<'a> {
    pub trace: &'a Trace,
    pub by_id: HashMap<[u8; 8], usize>,
    /// Children of each span, by index.
    pub children: Vec<Vec<usize>>,
}

impl<'a> TraceIndex<'a> {
    pub fn new(trace: &'a Trace) -> TraceIndex<'a> {
        let mut by_id = HashMap::with_capacity(trace.spans.len());
        for (i, span) in trace.spans.iter().enumerate() {
            by_id.insert(span.span_id, i);
        }
        let mut children = vec![Vec::new(); trace.spans.len()];
        for (i, span) in trace.spans.iter().enumerate() {
            if let Some(parent) = span.parent_span_id.and_then(|p| by_id.get(&p)) {
                if *parent != i {
                    children[*parent].push(i);
                }
            }
        }
        TraceIndex {
            trace,
            by_id,
            children,
        }
    }

    pub fn parent(&self, span: &Span) -> Option<&'a Span> {
        let index = *self.by_id.get(&span.parent_span_id?)?;
        self.trace.spans.get(index)
    }

    /// A span whose parent id is set but not in the trace.
    pub fn is_orphan(&self, span: &Span) -> bool {
        span.parent_span_id
            .is_some_and(|p| !self.by_id.contains_key(&p))
    }
}
