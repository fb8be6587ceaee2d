//! What a search matches: a TraceQL query (`q=`), or Tempo's older `tags=` (logfmt), which is the
//! TraceQL filter `{ .k1 = "v1" && .k2 = "v2" }` (`name` and `status` being the intrinsics).

use threadline_traceql::model::{StatusCode, Trace, Value};
use threadline_traceql::{Query, SpanMatch};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    Query(String),
}

pub enum Matcher {
    TraceQl(Query),
    Tags(Vec<(String, String)>),
}

impl Matcher {
    /// From the API's `q` and `tags` parameters (`q` wins when both are given).
    pub fn parse(q: Option<&str>, tags: Option<&str>) -> Result<Matcher, SearchError> {
        if let Some(q) = q.map(str::trim).filter(|q| !q.is_empty()) {
            let query = threadline_traceql::parse(q)
                .map_err(|e| SearchError::Query(format!("invalid TraceQL query: {e}")))?;
            if query.is_metrics() {
                return Err(SearchError::Query(
                    "a TraceQL metrics query (| rate(), ...) is answered by /api/metrics/query_range and /api/metrics/query, not by search".into(),
                ));
            }
            return Ok(Matcher::TraceQl(query));
        }
        Ok(Matcher::Tags(parse_logfmt(tags.unwrap_or(""))?))
    }

    pub fn service_hint(&self) -> Option<String> {
        match self {
            Matcher::TraceQl(q) => q.hints().0,
            Matcher::Tags(tags) => tags
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone()),
        }
    }

    pub fn error_hint(&self) -> bool {
        match self {
            Matcher::TraceQl(q) => q.hints().1,
            Matcher::Tags(tags) => tags.iter().any(|(k, v)| k == "status" && v == "error"),
        }
    }

    /// The matched spans, or None when the trace does not match.
    pub fn matches(&self, trace: &Trace) -> Option<Vec<SpanMatch>> {
        match self {
            Matcher::TraceQl(q) => q.evaluate(trace),
            Matcher::Tags(tags) => {
                let matched: Vec<SpanMatch> = trace
                    .spans
                    .iter()
                    .enumerate()
                    .filter(|(_, span)| tags.iter().all(|(k, v)| tag_matches(span, k, v)))
                    .map(|(i, span)| SpanMatch {
                        span: i,
                        attributes: tags
                            .iter()
                            .filter_map(|(k, _)| {
                                span.attributes
                                    .iter()
                                    .chain(&span.resource_attributes)
                                    .find(|(key, _)| key == k)
                                    .cloned()
                            })
                            .collect(),
                        intrinsics: Vec::new(),
                    })
                    .collect();
                (!matched.is_empty()).then_some(matched)
            }
        }
    }
}

fn tag_matches(span: &threadline_traceql::model::Span, key: &str, value: &str) -> bool {
    match key {
        "name" => span.name == value,
        "status" => {
            let status = match span.status {
                StatusCode::Error => "error",
                StatusCode::Ok => "ok",
                StatusCode::Unset => "unset",
            };
            status == value
        }
        _ => span
            .attributes
            .iter()
            .chain(&span.resource_attributes)
            .any(|(k, v)| k == key && tag_value_matches(v, value)),
    }
}

/// A `tags=` value matches a scalar by its text, and an array when one element does.
fn tag_value_matches(stored: &Value, wanted: &str) -> bool {
    match stored {
        Value::Array(items) => items.iter().any(|item| tag_value_matches(item, wanted)),
        other => other.text() == wanted,
    }
}

/// `key=value key2="quoted value"` pairs.
pub fn parse_logfmt(text: &str) -> Result<Vec<(String, String)>, SearchError> {
    let mut pairs = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().map(|(_, c)| c) != Some('=') || key.is_empty() {
            return Err(SearchError::Query(format!(
                "invalid tags at character {}: expected key=value",
                start + 1
            )));
        }
        let mut value = String::new();
        if chars.peek().map(|(_, c)| *c) == Some('"') {
            chars.next();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => {
                        if let Some((_, c)) = chars.next() {
                            value.push(c);
                        }
                    }
                    Some((_, c)) => value.push(c),
                    None => {
                        return Err(SearchError::Query(format!(
                            "invalid tags: unterminated quote in the value of {key:?}"
                        )))
                    }
                }
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}
