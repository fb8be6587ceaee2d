//! Tempo's vParquet4 row model (`tempodb/encoding/vparquet4/schema.go` at the pinned commit),
//! one struct per Go struct, holding only what the conversion to OTLP needs. The reader fills
//! these from parquet rows; [`super::convert`] turns them into OTLP.

/// Tempo's `Attribute`: a key and one typed value list (one element unless `is_array`), or the
/// value as protobuf JSON when the type has no column (maps, bytes, mixed arrays).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attribute {
    pub key: String,
    pub is_array: bool,
    pub value: Vec<String>,
    pub value_int: Vec<i64>,
    pub value_double: Vec<f64>,
    pub value_bool: Vec<bool>,
    pub value_unsupported: Option<String>,
}

/// Tempo's `DedicatedAttributes`: spare string columns `String01`..`String10`, assigned to
/// attribute names per block by `meta.json`'s `dedicatedColumns`.
pub type DedicatedAttributes = [Option<String>; 10];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub time_since_start_nano: u64,
    pub name: String,
    pub attrs: Vec<Attribute>,
    pub dropped_attributes_count: i32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Link {
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub trace_state: String,
    pub attrs: Vec<Attribute>,
    pub dropped_attributes_count: i32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub span_id: Vec<u8>,
    pub parent_span_id: Vec<u8>,
    pub name: String,
    pub kind: i64,
    pub trace_state: String,
    pub start_time_unix_nano: u64,
    pub duration_nano: u64,
    pub status_code: i64,
    pub status_message: String,
    pub attrs: Vec<Attribute>,
    pub dropped_attributes_count: i32,
    pub events: Vec<Event>,
    pub dropped_events_count: i32,
    pub links: Vec<Link>,
    pub dropped_links_count: i32,
    pub http_method: Option<String>,
    pub http_url: Option<String>,
    pub http_status_code: Option<i64>,
    pub dedicated: DedicatedAttributes,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    pub name: String,
    pub version: String,
    pub attrs: Vec<Attribute>,
    pub dropped_attributes_count: i32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeSpans {
    pub scope: Scope,
    pub spans: Vec<Span>,
}

/// Tempo's `Resource`: generic attributes plus the well-known ones in columns of their own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resource {
    pub attrs: Vec<Attribute>,
    pub dropped_attributes_count: i32,
    pub service_name: String,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub k8s_cluster_name: Option<String>,
    pub k8s_namespace_name: Option<String>,
    pub k8s_pod_name: Option<String>,
    pub k8s_container_name: Option<String>,
    pub dedicated: DedicatedAttributes,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSpans {
    pub resource: Resource,
    pub scope_spans: Vec<ScopeSpans>,
}

/// One row of `data.parquet`: a whole trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    pub trace_id: Vec<u8>,
    pub resource_spans: Vec<ResourceSpans>,
}
