//! Hand-written prost messages of Tempo's `tempopb` package, with the field numbers of
//! grafana/tempo ad33aa8 `pkg/tempopb/tempo.proto`: the protobuf answers of the HTTP API and the
//! messages of the gRPC streaming API. There is no protoc at build time; `proto/tempo_streaming.proto`
//! is the same subset as a .proto file (clients generate from it) and a test checks that each
//! message there has the fields, numbers and types written here. The one field beyond Tempo's
//! today is `prom_labels` (number 3 of the series), which Tempo retired and reserved: older
//! clients read it, newer ones skip it.
//!
//! Attributes are OTLP's `KeyValue`: Tempo's `tempopb.common.v1` is OTLP's common.proto under
//! another package name, the same wire format.

pub use threadline_otlp::proto::tonic::common::v1::KeyValue;

// Metrics: `QueryRangeResponse`, `QueryInstantResponse` and what they hold.

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<KeyValue>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<KeyValue>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Tempo's former `prom_labels` (the number is reserved now); older clients read it.
    #[prost(string, tag = "3")]
    pub prom_labels: String,
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<Exemplar>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchMetrics {
    #[prost(uint32, tag = "1")]
    pub inspected_traces: u32,
    #[prost(uint64, tag = "2")]
    pub inspected_bytes: u64,
    #[prost(uint32, tag = "3")]
    pub total_blocks: u32,
    #[prost(uint32, tag = "4")]
    pub completed_jobs: u32,
    #[prost(uint32, tag = "5")]
    pub total_jobs: u32,
    #[prost(uint64, tag = "6")]
    pub total_block_bytes: u64,
    #[prost(uint64, tag = "7")]
    pub inspected_spans: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryRangeResponse {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<TimeSeries>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<SearchMetrics>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InstantSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<KeyValue>,
    #[prost(double, tag = "2")]
    pub value: f64,
    /// As [`TimeSeries::prom_labels`].
    #[prost(string, tag = "3")]
    pub prom_labels: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryInstantResponse {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<InstantSeries>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<SearchMetrics>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryRangeRequest {
    #[prost(string, tag = "1")]
    pub query: String,
    /// Unix nanoseconds.
    #[prost(uint64, tag = "2")]
    pub start: u64,
    #[prost(uint64, tag = "3")]
    pub end: u64,
    /// Nanoseconds.
    #[prost(uint64, tag = "4")]
    pub step: u64,
    #[prost(uint32, tag = "16")]
    pub exemplars: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryInstantRequest {
    #[prost(string, tag = "1")]
    pub query: String,
    #[prost(uint64, tag = "2")]
    pub start: u64,
    #[prost(uint64, tag = "3")]
    pub end: u64,
}

// Search.

#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchRequest {
    #[prost(map = "string, string", tag = "1")]
    pub tags: std::collections::HashMap<String, String>,
    #[prost(uint32, tag = "2")]
    pub min_duration_ms: u32,
    #[prost(uint32, tag = "3")]
    pub max_duration_ms: u32,
    #[prost(uint32, tag = "4")]
    pub limit: u32,
    /// Unix seconds.
    #[prost(uint32, tag = "5")]
    pub start: u32,
    #[prost(uint32, tag = "6")]
    pub end: u32,
    #[prost(string, tag = "8")]
    pub query: String,
    #[prost(uint32, tag = "9")]
    pub spans_per_span_set: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchResponse {
    #[prost(message, repeated, tag = "1")]
    pub traces: Vec<TraceSearchMetadata>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<SearchMetrics>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceSearchMetadata {
    #[prost(string, tag = "1")]
    pub trace_id: String,
    #[prost(string, tag = "2")]
    pub root_service_name: String,
    #[prost(string, tag = "3")]
    pub root_trace_name: String,
    #[prost(uint64, tag = "4")]
    pub start_time_unix_nano: u64,
    #[prost(uint32, tag = "5")]
    pub duration_ms: u32,
    #[prost(message, optional, tag = "6")]
    pub span_set: Option<SpanSet>,
    #[prost(message, repeated, tag = "7")]
    pub span_sets: Vec<SpanSet>,
    #[prost(btree_map = "string, message", tag = "8")]
    pub service_stats: std::collections::BTreeMap<String, ServiceStats>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceStats {
    #[prost(uint32, tag = "1")]
    pub span_count: u32,
    #[prost(uint32, tag = "2")]
    pub error_count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SpanSet {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<Span>,
    #[prost(uint32, tag = "2")]
    pub matched: u32,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(string, tag = "1")]
    pub span_id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(uint64, tag = "3")]
    pub start_time_unix_nano: u64,
    #[prost(uint64, tag = "4")]
    pub duration_nanos: u64,
    #[prost(message, repeated, tag = "5")]
    pub attributes: Vec<KeyValue>,
}

// Tags.

#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchTagsRequest {
    #[prost(string, tag = "1")]
    pub scope: String,
    #[prost(string, tag = "2")]
    pub query: String,
    #[prost(uint32, tag = "3")]
    pub start: u32,
    #[prost(uint32, tag = "4")]
    pub end: u32,
    #[prost(uint32, tag = "5")]
    pub max_tags_per_scope: u32,
    #[prost(uint32, tag = "6")]
    pub stale_values_threshold: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetadataMetrics {
    #[prost(uint64, tag = "1")]
    pub inspected_bytes: u64,
    #[prost(uint32, tag = "2")]
    pub total_jobs: u32,
    #[prost(uint32, tag = "3")]
    pub completed_jobs: u32,
    #[prost(uint32, tag = "4")]
    pub total_blocks: u32,
    #[prost(uint64, tag = "5")]
    pub total_block_bytes: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchTagsResponse {
    #[prost(string, repeated, tag = "1")]
    pub tag_names: Vec<String>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<MetadataMetrics>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchTagsV2Response {
    #[prost(message, repeated, tag = "1")]
    pub scopes: Vec<SearchTagsV2Scope>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<MetadataMetrics>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchTagsV2Scope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, repeated, tag = "2")]
    pub tags: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchTagValuesRequest {
    #[prost(string, tag = "1")]
    pub tag_name: String,
    #[prost(string, tag = "2")]
    pub query: String,
    #[prost(uint32, tag = "4")]
    pub start: u32,
    #[prost(uint32, tag = "5")]
    pub end: u32,
    #[prost(uint32, tag = "6")]
    pub max_tag_values: u32,
    #[prost(uint32, tag = "7")]
    pub stale_value_threshold: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchTagValuesResponse {
    #[prost(string, repeated, tag = "1")]
    pub tag_values: Vec<String>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<MetadataMetrics>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TagValue {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchTagValuesV2Response {
    #[prost(message, repeated, tag = "1")]
    pub tag_values: Vec<TagValue>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<MetadataMetrics>,
}

/// `proto/tempo_streaming.proto` and the messages above agree: same message names, and for
/// each field of a Rust message a field of the .proto message with the same number, name and
/// type (both files read as text; the e2e test decodes every RPC with a client generated from
/// the .proto).
#[cfg(test)]
mod proto_matches {
    use std::collections::BTreeMap;

    /// message -> field number -> (name without `_`, lowercase; kind; repeated).
    type Fields = BTreeMap<String, BTreeMap<u32, (String, String, bool)>>;

    const RESERVED: &str = "(reserved)";

    fn name(text: &str) -> String {
        text.trim_start_matches("r#")
            .replace('_', "")
            .to_lowercase()
    }

    fn rust_fields(source: &str) -> Fields {
        let mut fields = Fields::new();
        let mut message = String::new();
        let mut attribute: Option<(String, bool, u32)> = None;
        for line in source.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("pub struct ") {
                message = rest.trim_end_matches(" {").to_string();
            } else if let Some(attr) = line.strip_prefix("#[prost(") {
                let kind = attr.split([',', ' ']).next().unwrap_or("");
                let kind = if kind.ends_with("map") { "map" } else { kind };
                let tag = attr
                    .split("tag = \"")
                    .nth(1)
                    .and_then(|t| t.split('"').next());
                let tag = tag.and_then(|t| t.parse().ok()).expect(attr);
                attribute = Some((kind.to_string(), attr.contains("repeated"), tag));
            } else if let (Some(rest), Some((kind, repeated, tag))) =
                (line.strip_prefix("pub "), attribute.take())
            {
                let field = rest.split(':').next().unwrap_or("");
                fields
                    .entry(message.clone())
                    .or_default()
                    .insert(tag, (name(field), kind, repeated));
            }
        }
        fields
    }

    fn proto_fields(source: &str) -> Fields {
        const SCALARS: &[&str] = &["double", "uint32", "uint64", "int64", "string", "bool"];
        let mut fields = Fields::new();
        let mut message = String::new();
        for line in source
            .lines()
            .map(|l| l.split("//").next().unwrap_or("").trim())
        {
            if let Some(rest) = line.strip_prefix("message ") {
                message = rest.trim_end_matches(" {").to_string();
                continue;
            }
            if line.starts_with("enum ") || line.starts_with("service ") {
                message = format!("({line})");
                continue;
            }
            // A number Tempo retired: the Rust side may still send the old field there.
            if let Some(number) = line.strip_prefix("reserved ") {
                if let Ok(number) = number.trim_end_matches(';').parse::<u32>() {
                    let retired = (RESERVED.to_string(), String::new(), false);
                    fields
                        .entry(message.clone())
                        .or_default()
                        .insert(number, retired);
                }
                continue;
            }
            let Some((declaration, number)) = line.split_once(" = ") else {
                continue;
            };
            let Ok(number) = number.trim_end_matches(';').parse::<u32>() else {
                continue;
            };
            let words: Vec<&str> = declaration.split_whitespace().collect();
            let (repeated, words) = match words.split_first() {
                Some((&"repeated", rest)) => (true, rest),
                Some((&"optional", rest)) => (false, rest),
                _ => (false, &words[..]),
            };
            let (Some(field), Some(kind)) = (words.last(), words.first()) else {
                continue;
            };
            let kind = if kind.starts_with("map<") {
                "map"
            } else if SCALARS.contains(kind) {
                kind
            } else {
                "message"
            };
            fields
                .entry(message.clone())
                .or_default()
                .insert(number, (name(field), kind.to_string(), repeated));
        }
        fields
    }

    #[test]
    fn every_rust_field_is_in_the_proto_with_its_number_and_type() {
        let rust = rust_fields(include_str!("tempopb.rs"));
        let proto = proto_fields(include_str!("../proto/tempo_streaming.proto"));
        assert!(rust.len() >= 20, "{:?}", rust.keys());
        for (message, fields) in &rust {
            let Some(declared) = proto.get(message) else {
                panic!("{message} is not in tempo_streaming.proto");
            };
            for (number, field) in fields {
                let found = declared.get(number);
                if found.is_some_and(|(name, _, _)| name == RESERVED) {
                    continue;
                }
                assert_eq!(found, Some(field), "{message} field {number}");
            }
        }
        // And the service's request and response messages are all here.
        for message in [
            "SearchRequest",
            "SearchTagsV2Response",
            "QueryInstantRequest",
        ] {
            assert!(rust.contains_key(message), "{message}");
        }
    }
}
