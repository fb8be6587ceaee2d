//! Column names of Tempo's vParquet4 schema, as the Go struct tags in
//! `tempodb/encoding/vparquet4/schema.go` name them (grafana/tempo at the commit in
//! [`super::TEMPO_COMMIT`]). A field's name is its Go name unless the tag renames it (`rs`, `ss`).

// Trace
pub const TRACE_ID: &str = "TraceID";
pub const RESOURCE_SPANS: &str = "rs";
// ResourceSpans
pub const RESOURCE: &str = "Resource";
pub const SCOPE_SPANS: &str = "ss";
// Resource
pub const SERVICE_NAME: &str = "ServiceName";
pub const CLUSTER: &str = "Cluster";
pub const NAMESPACE: &str = "Namespace";
pub const POD: &str = "Pod";
pub const CONTAINER: &str = "Container";
pub const K8S_CLUSTER_NAME: &str = "K8sClusterName";
pub const K8S_NAMESPACE_NAME: &str = "K8sNamespaceName";
pub const K8S_POD_NAME: &str = "K8sPodName";
pub const K8S_CONTAINER_NAME: &str = "K8sContainerName";
pub const DEDICATED_ATTRIBUTES: &str = "DedicatedAttributes";
pub const DEDICATED_STRING_COLUMNS: [&str; 10] = [
    "String01", "String02", "String03", "String04", "String05", "String06", "String07", "String08",
    "String09", "String10",
];
// ScopeSpans
pub const SCOPE: &str = "Scope";
pub const SPANS: &str = "Spans";
// InstrumentationScope, Span, Event
pub const NAME: &str = "Name";
pub const VERSION: &str = "Version";
pub const ATTRS: &str = "Attrs";
pub const DROPPED_ATTRIBUTES_COUNT: &str = "DroppedAttributesCount";
// Span
pub const SPAN_ID: &str = "SpanID";
pub const PARENT_SPAN_ID: &str = "ParentSpanID";
pub const KIND: &str = "Kind";
pub const TRACE_STATE: &str = "TraceState";
pub const START_TIME_UNIX_NANO: &str = "StartTimeUnixNano";
pub const DURATION_NANO: &str = "DurationNano";
pub const STATUS_CODE: &str = "StatusCode";
pub const STATUS_MESSAGE: &str = "StatusMessage";
pub const EVENTS: &str = "Events";
pub const DROPPED_EVENTS_COUNT: &str = "DroppedEventsCount";
pub const LINKS: &str = "Links";
pub const DROPPED_LINKS_COUNT: &str = "DroppedLinksCount";
pub const HTTP_METHOD: &str = "HttpMethod";
pub const HTTP_URL: &str = "HttpUrl";
pub const HTTP_STATUS_CODE: &str = "HttpStatusCode";
// Event
pub const TIME_SINCE_START_NANO: &str = "TimeSinceStartNano";
// Attribute
pub const KEY: &str = "Key";
pub const IS_ARRAY: &str = "IsArray";
pub const VALUE: &str = "Value";
pub const VALUE_INT: &str = "ValueInt";
pub const VALUE_DOUBLE: &str = "ValueDouble";
pub const VALUE_BOOL: &str = "ValueBool";
pub const VALUE_UNSUPPORTED: &str = "ValueUnsupported";
