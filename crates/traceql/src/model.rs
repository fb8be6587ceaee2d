//! The decoded span model that queries run on. The store decodes only the traces a query may
//! match into this shape.

/// An attribute value: OTLP's scalar `AnyValue` kinds (bytes as hex), and arrays of them
/// (TraceQL compares an array element-wise). Key-value lists have no TraceQL form.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Value>),
}

impl Value {
    /// Tempo's type name for the value (`string`, `int`, `float`, `bool`, `array`), as the tag
    /// APIs report it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
            Value::Array(_) => "array",
        }
    }

    /// The value as plain text (an array as its elements joined by ", " in brackets).
    pub fn text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(items) => {
                let inner: Vec<String> = items.iter().map(Value::text).collect();
                format!("[{}]", inner.join(", "))
            }
        }
    }
}

/// Span kinds with OTLP's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpanKind {
    #[default]
    Unspecified = 0,
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

/// Span status codes with OTLP's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusCode {
    #[default]
    Unset = 0,
    Ok = 1,
    Error = 2,
}

/// A span event (`event.` scope, `event:name`, `event:timeSinceStart`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub name: String,
    pub time_unix_nano: u64,
    pub attributes: Vec<(String, Value)>,
}

/// A span link (`link.` scope, `link:traceID`, `link:spanID`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Link {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub attributes: Vec<(String, Value)>,
}

/// The instrumentation scope that produced a span (`instrumentation.` scope,
/// `instrumentation:name`, `instrumentation:version`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstrumentationScope {
    pub name: String,
    pub version: String,
    pub attributes: Vec<(String, Value)>,
}

/// One span with what TraceQL can ask about it. Build one in tests as
/// `Span { name: ..., ..Default::default() }`: fields are added as TraceQL grows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// None for a root span.
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    pub kind: SpanKind,
    pub status: StatusCode,
    pub status_message: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// Span attributes (`span.` scope).
    pub attributes: Vec<(String, Value)>,
    /// Resource attributes (`resource.` scope), including `service.name`.
    pub resource_attributes: Vec<(String, Value)>,
    pub events: Vec<Event>,
    pub links: Vec<Link>,
    /// Shared by the spans of one `ScopeSpans` (decoded once per trace).
    pub scope: std::sync::Arc<InstrumentationScope>,
}

impl Span {
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }

    /// `resource.service.name`, or "" when absent.
    pub fn service_name(&self) -> &str {
        self.resource_attributes
            .iter()
            .find(|(k, _)| k == "service.name")
            .and_then(|(_, v)| match v {
                Value::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("")
    }
}

/// All stored spans of one trace, in no particular order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    pub trace_id: [u8; 16],
    pub spans: Vec<Span>,
}
