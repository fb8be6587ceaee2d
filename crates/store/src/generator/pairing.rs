//! Pairs the two spans of each call into an edge of the service graph, as Tempo's service-graphs
//! processor (`modules/generator/processor/servicegraphs`, grafana/tempo@ad33aa8f) but by
//! parent/child ids alone, for as long as `wait`: a CLIENT (or PRODUCER) span and the SERVER (or
//! CONSUMER) span whose parent it is make one edge, whatever order and however far apart they
//! arrive. CLIENT spans with database attributes are edges to the database at once (virtual
//! node); root SERVER spans are edges from `user` (or their peer attribute). When a half waits
//! longer than `wait`, a client half with a peer attribute becomes an edge to that peer (virtual
//! node), and every expired half is counted as unpaired with its service and peer attribute.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::config::ServiceGraphsConfig;
use super::span::{SpanSource, KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER};

pub const CONNECTION_NONE: &str = "";
pub const CONNECTION_MESSAGING: &str = "messaging_system";
pub const CONNECTION_DATABASE: &str = "database";
pub const CONNECTION_VIRTUAL: &str = "virtual_node";

/// What a virtual (uninstrumented) node is, for the JSON graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtualKind {
    /// Both ends are instrumented services.
    None,
    Database,
    MessagingSystem,
    External,
}

/// One call, both ends known.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub client: String,
    pub server: String,
    pub connection_type: &'static str,
    pub failed: bool,
    pub client_seconds: f64,
    pub server_seconds: f64,
    /// Start of the call (client span's start when there is one).
    pub start_unix_nano: u64,
    /// Dimension values: client side then server side, per configured dimension.
    pub client_dimensions: Vec<Option<String>>,
    pub server_dimensions: Vec<Option<String>>,
    /// Which end is not instrumented (the other is a service).
    pub virtual_end: Option<(&'static str, VirtualKind)>,
}

/// A half that expired without its other half and without a peer to name.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpaired {
    /// `client` or `server`: the side that was seen.
    pub side: &'static str,
    pub service: String,
    /// The peer attribute found on the span (`peer.service`, ...) and its value, if any.
    pub peer_attribute: String,
    pub peer: String,
}

#[derive(Debug, Default, Clone)]
struct Side {
    service: String,
    seconds: f64,
    start_unix_nano: u64,
    failed: bool,
    kind: i32,
    dimensions: Vec<Option<String>>,
}

#[derive(Debug, Default)]
struct Pending {
    client: Option<Side>,
    server: Option<Side>,
    peer_attribute: String,
    peer: String,
    expires: Option<Instant>,
}

pub enum Outcome {
    Edge(Edge),
    Unpaired(Unpaired),
}

pub struct Pairer {
    wait: Duration,
    max_items: usize,
    peer_attributes: Vec<String>,
    database_attributes: Vec<String>,
    dimensions: Vec<String>,
    pending: HashMap<([u8; 16], [u8; 8]), Pending, super::registry::FastHash>,
    /// Spans dropped because `max_items` halves were waiting.
    pub dropped_spans: u64,
}

impl Pairer {
    pub fn new(config: &ServiceGraphsConfig) -> Pairer {
        Pairer {
            wait: config.wait.as_duration(),
            max_items: config.max_items,
            peer_attributes: config.peer_attributes.clone(),
            database_attributes: config.database_name_attributes.clone(),
            dimensions: config.dimensions.clone(),
            pending: HashMap::default(),
            dropped_spans: 0,
        }
    }

    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// Adds one span; returns the edge it completes, if any.
    pub fn add<'a>(&mut self, span: &impl SpanSource<'a>, now: Instant) -> Option<Edge> {
        let e = span.essentials();
        let client = match e.kind {
            KIND_CLIENT | KIND_PRODUCER => true,
            KIND_SERVER | KIND_CONSUMER => false,
            _ => return None,
        };
        let side = Side {
            service: e.service.to_string(),
            seconds: e.duration_seconds(),
            start_unix_nano: e.start_unix_nano,
            failed: e.failed(),
            kind: e.kind,
            dimensions: self
                .dimensions
                .iter()
                .map(|d| span.attribute(d).map(|v| v.into_owned()))
                .collect(),
        };
        // Peer attributes matter for client halves and root server spans only: a server span
        // with a parent is not searched (decoding its attributes cost ~10% of ingest CPU).
        if client {
            if let Some(edge) = self.database_edge(span, &side) {
                return Some(edge);
            }
        } else if e.parent_span_id.is_none() {
            // A root server span: called by someone who sends no spans.
            let (_, peer) = self.peer(span);
            let client_name = if peer.is_empty() { "user" } else { &peer };
            return Some(Edge {
                client: client_name.to_string(),
                server: side.service.clone(),
                connection_type: CONNECTION_VIRTUAL,
                failed: side.failed,
                client_seconds: side.seconds,
                server_seconds: side.seconds,
                start_unix_nano: side.start_unix_nano,
                client_dimensions: vec![None; self.dimensions.len()],
                server_dimensions: side.dimensions,
                virtual_end: Some(("client", VirtualKind::External)),
            });
        }
        let key = (
            e.trace_id,
            if client {
                e.span_id
            } else {
                e.parent_span_id.unwrap_or_default()
            },
        );
        if !self.pending.contains_key(&key) && self.pending.len() >= self.max_items {
            self.dropped_spans += 1;
            return None;
        }
        let client_peer = client.then(|| self.peer(span));
        let pending = self.pending.entry(key).or_default();
        if let Some((peer_attribute, peer)) = client_peer {
            pending.client = Some(side);
            pending.peer_attribute = peer_attribute;
            pending.peer = peer;
        } else {
            pending.server = Some(side);
        }
        if pending.client.is_some() && pending.server.is_some() {
            let pending = self.pending.remove(&key)?;
            return Some(complete(pending.client?, pending.server?));
        }
        pending.expires.get_or_insert(now + self.wait);
        None
    }

    /// The first peer attribute present on the span (span attributes only, as Tempo).
    fn peer<'a>(&self, span: &impl SpanSource<'a>) -> (String, String) {
        for key in &self.peer_attributes {
            if let Some(value) = span.span_attribute(key) {
                return (key.clone(), value.into_owned());
            }
        }
        (String::new(), String::new())
    }

    /// A client span to a database names the database node (Tempo's `upsertDatabaseRequest`):
    /// `peer.service`, `server.address`, `network.peer.address[:port]`, then the database name.
    fn database_edge<'a>(&self, span: &impl SpanSource<'a>, side: &Side) -> Option<Edge> {
        let db_name = self
            .database_attributes
            .iter()
            .find_map(|k| span.attribute(k))?;
        let server = span
            .attribute("peer.service")
            .or_else(|| span.attribute("server.address"))
            .map(|v| v.into_owned())
            .or_else(|| {
                let host = span.attribute("network.peer.address")?;
                Some(match span.attribute("network.peer.port") {
                    Some(port) => format!("{host}:{port}"),
                    None => host.into_owned(),
                })
            })
            .unwrap_or_else(|| db_name.into_owned());
        Some(Edge {
            client: side.service.clone(),
            server,
            connection_type: CONNECTION_DATABASE,
            failed: side.failed,
            client_seconds: side.seconds,
            server_seconds: side.seconds,
            start_unix_nano: side.start_unix_nano,
            client_dimensions: side.dimensions.clone(),
            server_dimensions: vec![None; self.dimensions.len()],
            virtual_end: Some(("server", VirtualKind::Database)),
        })
    }

    /// Halves waiting past their time: an edge to the peer when the client half names one,
    /// else unpaired.
    pub fn expire(&mut self, now: Instant) -> Vec<Outcome> {
        let expired: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| p.expires.is_some_and(|at| at <= now))
            .map(|(k, _)| *k)
            .collect();
        let removed: Vec<_> = expired
            .into_iter()
            .filter_map(|k| self.pending.remove(&k))
            .collect();
        removed.into_iter().flat_map(|p| self.outcomes(p)).collect()
    }

    /// Everything still waiting, as if expired (the end of one stored trace).
    pub fn drain(&mut self) -> Vec<Outcome> {
        let all: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        all.into_iter().flat_map(|p| self.outcomes(p)).collect()
    }

    fn outcomes(&self, p: Pending) -> Vec<Outcome> {
        let mut out = Vec::new();
        let (side_name, side) = match (p.client, p.server) {
            (Some(client), None) => ("client", client),
            (None, Some(server)) => ("server", server),
            _ => return out,
        };
        out.push(Outcome::Unpaired(Unpaired {
            side: side_name,
            service: side.service.clone(),
            peer_attribute: p.peer_attribute.clone(),
            peer: p.peer.clone(),
        }));
        if side_name == "client" && !p.peer.is_empty() {
            let kind = if side.kind == KIND_PRODUCER {
                VirtualKind::MessagingSystem
            } else {
                VirtualKind::External
            };
            out.push(Outcome::Edge(Edge {
                client: side.service.clone(),
                server: p.peer,
                connection_type: CONNECTION_VIRTUAL,
                failed: side.failed,
                client_seconds: side.seconds,
                server_seconds: side.seconds,
                start_unix_nano: side.start_unix_nano,
                client_dimensions: side.dimensions,
                server_dimensions: vec![None; self.dimensions.len()],
                virtual_end: Some(("server", kind)),
            }));
        }
        out
    }
}

fn complete(client: Side, server: Side) -> Edge {
    let messaging = client.kind == KIND_PRODUCER || server.kind == KIND_CONSUMER;
    Edge {
        connection_type: if messaging {
            CONNECTION_MESSAGING
        } else {
            CONNECTION_NONE
        },
        failed: client.failed || server.failed,
        client_seconds: client.seconds,
        server_seconds: server.seconds,
        start_unix_nano: client.start_unix_nano,
        client: client.service,
        server: server.service,
        client_dimensions: client.dimensions,
        server_dimensions: server.dimensions,
        virtual_end: None,
    }
}
