//! W3C Trace Context, levels 1 and 2: parsing and forwarding `traceparent` and `tracestate`
//! exactly as the specification says (https://www.w3.org/TR/trace-context-2/).
//!
//! * `traceparent` is `version-traceid-parentid-flags` in lowercase hex. Version `ff` is invalid.
//!   Version `00` is exactly 55 characters; a higher version may be longer, with a `-` after the
//!   flags, and is parsed as version 00 (its extra fields ignored). An all-zero trace id or
//!   parent id is invalid. Invalid: the receiver starts a new trace and drops `tracestate`.
//! * `tracestate` is a comma-separated list (several headers are one list, joined by `,`) of at
//!   most 32 `key=value` members; empty and whitespace-only members are skipped, spaces and tabs
//!   around a member are ignored. A key is 1 to 256 characters `[a-z0-9][a-z0-9_\-*/@]{0,255}`
//!   (the current grammar: `@` is an ordinary key character, so `foo@`, `foo@@bar` and
//!   `t@` + 15 characters are keys; `@foo` is not). A value is 1 to 256 printable ASCII
//!   characters except `,` and `=`, not ending in a space; its leading spaces are part of it.
//!   A malformed member or more than 32 members make the whole header invalid: it is dropped.
//!   A repeated key keeps its first member; later ones are dropped (the spec lets a vendor keep
//!   duplicates or discard them, never the whole header).
//! * Forwarding: the version written is `00`; the trace id is kept; the parent id is the new
//!   span's; the sampled (0x01) and, at level 2, random (0x02) flags are kept. This vendor's entry
//!   moves to the front of `tracestate` (updated), the list staying within 32 members by dropping
//!   the rightmost.

use std::fmt;

/// Trace flags this vendor propagates: sampled and (level 2) random.
pub const SAMPLED: u8 = 0x01;
pub const RANDOM: u8 = 0x02;
pub const MAX_MEMBERS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

fn lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

impl TraceParent {
    /// Parses a `traceparent` header value; None when invalid.
    pub fn parse(header: &str) -> Option<TraceParent> {
        // Leading/trailing whitespace is tolerated (OWS), nothing inside.
        let header = header.trim_matches(|c| c == ' ' || c == '\t');
        if header.len() < 55 {
            return None;
        }
        let version = lower_hex::<1>(header.get(0..2)?)?[0];
        if version == 0xff {
            return None;
        }
        if version == 0x00 && header.len() != 55 {
            return None;
        }
        if header.len() > 55 && header.as_bytes()[55] != b'-' {
            return None;
        }
        let bytes = header.as_bytes();
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = lower_hex::<16>(&header[3..35])?;
        let parent_id = lower_hex::<8>(&header[36..52])?;
        let flags = lower_hex::<1>(&header[53..55])?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The header for a child span `span_id` of this context, as version 00.
    pub fn child(&self, span_id: [u8; 8]) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            parent_id: span_id,
            flags: self.flags & (SAMPLED | RANDOM),
        }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

/// Longest key and longest value, in characters (all ASCII).
pub const MAX_KEY_LEN: usize = 256;
pub const MAX_VALUE_LEN: usize = 256;

/// Whether `key` is a valid tracestate key:
/// `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`, `keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"`.
pub fn valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    bytes.len() <= MAX_KEY_LEN
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
        })
}

/// Whether `value` is a valid tracestate value: `value = 0*255(chr) nblk-chr`, where `chr` is
/// 0x20-0x7E except `,` and `=`, and `nblk-chr` is a `chr` other than space.
pub fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE_LEN
        && value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && !value.ends_with(' ')
}

/// A validated tracestate list, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceState {
    pub members: Vec<(String, String)>,
}

impl TraceState {
    /// Parses every `tracestate` header of a request (one list); None when invalid.
    pub fn parse<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<TraceState> {
        let mut members: Vec<(String, String)> = Vec::new();
        let mut count = 0usize;
        for header in headers {
            for member in header.split(',') {
                let member = member.trim_matches(|c| c == ' ' || c == '\t');
                if member.is_empty() {
                    continue;
                }
                let (key, value) = member.split_once('=')?;
                if !valid_key(key) || !valid_value(value) {
                    return None;
                }
                // The limit counts the members sent, duplicates included.
                count += 1;
                if count > MAX_MEMBERS {
                    return None;
                }
                if !members.iter().any(|(k, _)| k == key) {
                    members.push((key.to_string(), value.to_string()));
                }
            }
        }
        Some(TraceState { members })
    }

    /// Puts `key=value` first (replacing an earlier entry of `key`), keeping at most 32 members.
    pub fn upsert_front(&mut self, key: &str, value: &str) {
        self.members.retain(|(k, _)| k != key);
        self.members.insert(0, (key.to_string(), value.to_string()));
        self.members.truncate(MAX_MEMBERS);
    }

    pub fn header(&self) -> String {
        self.members
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The incoming context of a request: a valid traceparent, and its tracestate (empty when the
/// tracestate was absent or invalid).
pub fn extract<'a>(
    traceparent: Option<&str>,
    tracestate: impl IntoIterator<Item = &'a str>,
) -> Option<(TraceParent, TraceState)> {
    let parent = TraceParent::parse(traceparent?)?;
    let state = TraceState::parse(tracestate).unwrap_or_default();
    Some((parent, state))
}

/// The incoming context of an HTTP request's headers (names are case-insensitive): exactly one
/// valid `traceparent`, and every `tracestate` header as one list. Two `traceparent` headers are
/// as invalid as a malformed one.
pub fn from_headers(headers: &http::HeaderMap) -> Option<(TraceParent, TraceState)> {
    let mut parents = headers.get_all("traceparent").iter();
    let (Some(parent), None) = (parents.next(), parents.next()) else {
        return None;
    };
    let states = headers
        .get_all("tracestate")
        .iter()
        .filter_map(|v| v.to_str().ok());
    extract(parent.to_str().ok(), states)
}

/// The context an outgoing request of span `span_id` carries: the incoming trace continued (or,
/// without a valid one, a new trace with a random id, sampled and flagged random), and this
/// vendor's `key` set to the span id at the front of the tracestate.
pub fn forward(
    incoming: Option<&(TraceParent, TraceState)>,
    span_id: [u8; 8],
    new_trace_id: [u8; 16],
    key: &str,
) -> (TraceParent, TraceState) {
    let (parent, mut state) = match incoming {
        Some((parent, state)) => (parent.child(span_id), state.clone()),
        None => (
            TraceParent {
                trace_id: new_trace_id,
                parent_id: span_id,
                flags: SAMPLED | RANDOM,
            },
            TraceState::default(),
        ),
    };
    state.upsert_front(key, &hex::encode(span_id));
    (parent, state)
}
