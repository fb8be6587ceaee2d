//! Every case of the official W3C Trace Context test suite (`test/test.py` of
//! `w3c/trace-context` at commit acab820be9db7b3433668baa5cdd43f57f4c4be0, `STRICT_LEVEL=2`,
//! level 2), restated against [`crate::w3c::from_headers`] and [`crate::w3c::forward`], which the
//! demo's `POST /test` runs. CI cannot fetch the suite; these keep its rules. Each outgoing
//! `tracestate` is read back as the harness reads it: it must parse, or the harness errors.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::w3c::{forward, from_headers, TraceParent, TraceState, RANDOM};

const TRACE: &str = "12345678901234567890123456789012";
const PARENT: &str = "1234567890123456";
const OUR_KEY: &str = "threadline";

/// What the harness sees in one callback.
struct Callback {
    parent: TraceParent,
    state: TraceState,
}

impl Callback {
    fn trace_id(&self) -> String {
        hex::encode(self.parent.trace_id)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.state
            .members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The forwarded list without this vendor's own member.
    fn others(&self) -> String {
        let mut state = self.state.clone();
        state.members.retain(|(k, _)| k != OUR_KEY);
        state.header()
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        map.append(name, HeaderValue::from_str(value).unwrap());
    }
    map
}

/// Sends `pairs` as one request's headers and returns the callback, as `POST /test` does.
fn call(pairs: &[(&str, &str)]) -> Callback {
    let incoming = from_headers(&headers(pairs));
    let (parent, state) = forward(incoming.as_ref(), [0x42; 8], [0x77; 16], OUR_KEY);
    let written = state.header();
    let state = TraceState::parse([written.as_str()])
        .unwrap_or_else(|| panic!("forwarded an invalid tracestate {written:?}"));
    let reparsed = TraceParent::parse(&parent.to_string()).expect("forwarded traceparent parses");
    assert_eq!(reparsed, parent);
    Callback { parent, state }
}

fn tp(flags: &str) -> String {
    format!("00-{TRACE}-{PARENT}-{flags}")
}

fn assert_restarted(pairs: &[(&str, &str)]) {
    let out = call(pairs);
    assert_ne!(out.trace_id(), TRACE, "{pairs:?} must start a new trace");
}

fn assert_continued(pairs: &[(&str, &str)]) {
    let out = call(pairs);
    assert_eq!(out.trace_id(), TRACE, "{pairs:?} must continue the trace");
    assert_ne!(hex::encode(out.parent.parent_id), PARENT);
}

#[test]
fn test_both_traceparent_and_tracestate_missing() {
    let out = call(&[]);
    assert_ne!(out.parent.trace_id, [0; 16]);
    assert_eq!(out.others(), "");
}

#[test]
fn test_traceparent_included_tracestate_missing() {
    assert_continued(&[("traceparent", &tp("01"))]);
}

#[test]
fn test_traceparent_duplicated() {
    assert_restarted(&[
        (
            "traceparent",
            "00-12345678901234567890123456789011-1234567890123456-01",
        ),
        ("traceparent", &tp("01")),
    ]);
}

#[test]
fn test_traceparent_header_name() {
    assert_restarted(&[("trace-parent", &tp("01"))]);
    assert_restarted(&[("trace.parent", &tp("01"))]);
}

#[test]
fn test_traceparent_header_name_valid_casing() {
    for name in ["TraceParent", "TrAcEpArEnT", "TRACEPARENT"] {
        assert_continued(&[(name, &tp("01"))]);
    }
}

#[test]
fn test_traceparent_version_0x00() {
    assert_restarted(&[("traceparent", &format!("{}.", tp("01")))]);
    assert_restarted(&[(
        "traceparent",
        &format!("{}-what-the-future-will-be-like", tp("01")),
    )]);
}

#[test]
fn test_traceparent_version_0xcc() {
    let future = format!("cc-{TRACE}-{PARENT}-01");
    assert_continued(&[("traceparent", &future)]);
    assert_continued(&[(
        "traceparent",
        &format!("{future}-what-the-future-will-be-like"),
    )]);
    assert_restarted(&[(
        "traceparent",
        &format!("{future}.what-the-future-will-be-like"),
    )]);
}

#[test]
fn test_traceparent_version_0xff() {
    assert_restarted(&[("traceparent", &format!("ff-{TRACE}-{PARENT}-01"))]);
}

#[test]
fn test_traceparent_version_illegal_characters() {
    assert_restarted(&[("traceparent", &format!(".0-{TRACE}-{PARENT}-01"))]);
    assert_restarted(&[("traceparent", &format!("0.-{TRACE}-{PARENT}-01"))]);
}

#[test]
fn test_traceparent_version_too_long() {
    assert_restarted(&[("traceparent", &format!("000-{TRACE}-{PARENT}-01"))]);
    assert_restarted(&[("traceparent", &format!("0000-{TRACE}-{PARENT}-01"))]);
}

#[test]
fn test_traceparent_version_too_short() {
    assert_restarted(&[("traceparent", &format!("0-{TRACE}-{PARENT}-01"))]);
}

#[test]
fn test_traceparent_trace_id_all_zero() {
    let header = format!("00-{}-{PARENT}-01", "0".repeat(32));
    let out = call(&[("traceparent", &header)]);
    assert_ne!(out.parent.trace_id, [0; 16]);
}

#[test]
fn test_traceparent_trace_id_illegal_characters() {
    assert_restarted(&[(
        "traceparent",
        &format!("00-.2345678901234567890123456789012-{PARENT}-01"),
    )]);
    assert_restarted(&[(
        "traceparent",
        &format!("00-1234567890123456789012345678901.-{PARENT}-01"),
    )]);
}

#[test]
fn test_traceparent_trace_id_too_long() {
    assert_restarted(&[("traceparent", &format!("00-{TRACE}3-{PARENT}-01"))]);
}

#[test]
fn test_traceparent_trace_id_too_short() {
    assert_restarted(&[("traceparent", &format!("00-{}-{PARENT}-01", &TRACE[..31]))]);
}

#[test]
fn test_traceparent_parent_id_all_zero() {
    assert_restarted(&[("traceparent", &format!("00-{TRACE}-{}-01", "0".repeat(16)))]);
}

#[test]
fn test_traceparent_parent_id_illegal_characters() {
    assert_restarted(&[("traceparent", &format!("00-{TRACE}-.234567890123456-01"))]);
    assert_restarted(&[("traceparent", &format!("00-{TRACE}-123456789012345.-01"))]);
}

#[test]
fn test_traceparent_parent_id_too_long() {
    assert_restarted(&[("traceparent", &format!("00-{TRACE}-{PARENT}7-01"))]);
}

#[test]
fn test_traceparent_parent_id_too_short() {
    assert_restarted(&[("traceparent", &format!("00-{TRACE}-{}-01", &PARENT[..15]))]);
}

#[test]
fn test_traceparent_trace_flags_illegal_characters() {
    assert_restarted(&[("traceparent", &tp(".0"))]);
    assert_restarted(&[("traceparent", &tp("0."))]);
}

#[test]
fn test_traceparent_trace_flags_too_long() {
    assert_restarted(&[("traceparent", &tp("001"))]);
}

#[test]
fn test_traceparent_trace_flags_too_short() {
    assert_restarted(&[("traceparent", &tp("1"))]);
}

#[test]
fn test_traceparent_ows_handling() {
    for header in [
        format!(" {}", tp("01")),
        format!("\t{}", tp("01")),
        format!("{} ", tp("01")),
        format!("{}\t", tp("01")),
        format!("\t {} \t", tp("01")),
    ] {
        assert_continued(&[("traceparent", &header)]);
    }
}

#[test]
fn test_tracestate_included_traceparent_missing() {
    let one = call(&[("tracestate", "foo=1")]);
    let two = call(&[("tracestate", "foo=1,bar=2")]);
    assert_eq!(one.state.members.len(), two.state.members.len());
    assert_eq!(
        one.others(),
        "",
        "no traceparent: the tracestate is discarded"
    );
}

#[test]
fn test_tracestate_included_traceparent_included() {
    let out = call(&[("traceparent", &tp("00")), ("tracestate", "foo=1,bar=2")]);
    assert_eq!(out.trace_id(), TRACE);
    assert_eq!(out.get("foo"), Some("1"));
    assert_eq!(out.get("bar"), Some("2"));
}

#[test]
fn test_tracestate_header_name() {
    for name in ["trace-state", "trace.state"] {
        let out = call(&[("traceparent", &tp("00")), (name, "foo=1")]);
        assert_eq!(out.get("foo"), None, "{name} is not tracestate");
    }
}

#[test]
fn test_tracestate_header_name_valid_casing() {
    for name in ["TraceState", "TrAcEsTaTe", "TRACESTATE"] {
        let out = call(&[("traceparent", &tp("00")), (name, "foo=1")]);
        assert_eq!(out.get("foo"), Some("1"), "{name}");
    }
}

#[test]
fn test_tracestate_empty_header() {
    let out = call(&[("traceparent", &tp("00")), ("tracestate", "")]);
    assert_eq!(out.trace_id(), TRACE);
    assert_eq!(out.others(), "");
    for pairs in [
        [("tracestate", "foo=1"), ("tracestate", "")],
        [("tracestate", ""), ("tracestate", "foo=1")],
    ] {
        let mut all = vec![("traceparent", tp("00"))];
        all.extend(pairs.iter().map(|(n, v)| (*n, v.to_string())));
        let borrowed: Vec<(&str, &str)> = all.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let out = call(&borrowed);
        assert_eq!(out.trace_id(), TRACE);
        assert_eq!(out.get("foo"), Some("1"));
    }
}

#[test]
fn test_tracestate_multiple_headers_different_keys() {
    let out = call(&[
        ("traceparent", &tp("00")),
        ("tracestate", "foo=1,bar=2"),
        ("tracestate", "rojo=1,congo=2"),
        ("tracestate", "baz=3"),
    ]);
    assert_eq!(out.trace_id(), TRACE);
    assert_eq!(out.others(), "foo=1,bar=2,rojo=1,congo=2,baz=3");
}

#[test]
fn test_tracestate_duplicated_keys() {
    let cases: [&[(&str, &str)]; 4] = [
        &[("tracestate", "foo=1,foo=1")],
        &[("tracestate", "foo=1,foo=2")],
        &[("tracestate", "foo=1"), ("tracestate", "foo=1")],
        &[("tracestate", "foo=1"), ("tracestate", "foo=2")],
    ];
    for states in cases {
        let parent = tp("00");
        let mut pairs = vec![("traceparent", parent.as_str())];
        pairs.extend_from_slice(states);
        let out = call(&pairs);
        assert_eq!(out.trace_id(), TRACE);
        // Kept, one of the duplicates dropped: the first one stays.
        assert_eq!(out.others(), "foo=1", "{states:?}");
    }
}

#[test]
fn test_tracestate_all_allowed_characters() {
    let key_without_vendor: String = ('a'..='z').chain('0'..='9').chain("_-*/".chars()).collect();
    let key_with_vendor = format!("{key_without_vendor}@a-z0-9_-*/");
    let value: String = (0x20u8..=0x2b)
        .chain(0x2d..=0x3c)
        .chain(0x3e..=0x7e)
        .map(char::from)
        .collect();
    for key in [&key_without_vendor, &key_with_vendor] {
        let member = format!("{key}={value}");
        let out = call(&[("traceparent", &tp("00")), ("tracestate", &member)]);
        assert_eq!(out.get(key), Some(value.as_str()), "{key}");
    }
}

#[test]
fn test_tracestate_ows_handling() {
    for header in [
        "foo=1 \t , \t bar=2, \t baz=3",
        "foo=1\t \t,\t \tbar=2,\t \tbaz=3",
    ] {
        let out = call(&[("traceparent", &tp("00")), ("tracestate", header)]);
        assert_eq!(out.others(), "foo=1,bar=2,baz=3", "{header:?}");
    }
    for header in [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"] {
        let out = call(&[("traceparent", &tp("00")), ("tracestate", header)]);
        assert_eq!(out.trace_id(), TRACE);
        assert_eq!(out.get("foo"), Some("1"), "{header:?}");
    }
}

#[test]
fn test_tracestate_key_illegal_characters() {
    for (header, key) in [
        ("foo =1", "foo "),
        ("FOO=1", "FOO"),
        ("foo.bar=1", "foo.bar"),
    ] {
        let out = call(&[("traceparent", &tp("00")), ("tracestate", header)]);
        assert_eq!(out.get(key), None);
        assert_eq!(out.others(), "", "{header:?} is discarded");
    }
}

#[test]
fn test_tracestate_key_illegal_vendor_format() {
    for key in ["foo@", "foo@@bar", "foo@bar@baz"] {
        let header = format!("{key}=1,bar=2");
        let out = call(&[("traceparent", &tp("00")), ("tracestate", &header)]);
        assert_eq!(out.get(key), Some("1"), "{key} follows the key grammar");
        assert_eq!(out.get("bar"), Some("2"));
    }
    let out = call(&[("traceparent", &tp("00")), ("tracestate", "@foo=1,bar=2")]);
    assert_eq!(
        out.get("bar"),
        None,
        "a key starting with `@` drops the list"
    );
}

#[test]
fn test_tracestate_member_count_limit() {
    let members: Vec<String> = (1..=33).map(|i| format!("bar{i:02}={i:02}")).collect();
    let headers_of = |n: usize| -> Vec<String> {
        members[..n]
            .chunks(10)
            .map(|chunk| chunk.join(","))
            .collect()
    };
    let parent = tp("00");
    let thirty_two = headers_of(32);
    let mut pairs = vec![("traceparent", parent.as_str())];
    pairs.extend(thirty_two.iter().map(|h| ("tracestate", h.as_str())));
    let out = call(&pairs);
    assert_eq!(out.get("bar01"), Some("01"));
    // Ours goes first and the rightmost is dropped: still 32.
    assert_eq!(out.state.members.len(), 32);

    let thirty_three = headers_of(33);
    let mut pairs = vec![("traceparent", parent.as_str())];
    pairs.extend(thirty_three.iter().map(|h| ("tracestate", h.as_str())));
    let out = call(&pairs);
    assert_eq!(out.get("bar01"), None, "33 members: discarded");
}

#[test]
fn test_tracestate_key_length_limit() {
    let accepted = [
        "z".repeat(256),
        format!("{}@{}", "t".repeat(241), "v".repeat(14)),
        format!("{}@v", "t".repeat(242)),
        format!("t@{}", "v".repeat(15)),
    ];
    for key in &accepted {
        let member = format!("{key}=1");
        let out = call(&[
            ("traceparent", &tp("00")),
            ("tracestate", "foo=1"),
            ("tracestate", &member),
        ]);
        assert_eq!(out.get("foo"), Some("1"));
        assert_eq!(out.get(key), Some("1"), "a key of {} characters", key.len());
    }
    let member = format!("{}=1", "z".repeat(257));
    let out = call(&[
        ("traceparent", &tp("00")),
        ("tracestate", "foo=1"),
        ("tracestate", &member),
    ]);
    assert_eq!(out.get("foo"), None, "a 257-character key drops the list");
}

#[test]
fn test_tracestate_value_illegal_characters() {
    let out = call(&[("traceparent", &tp("00")), ("tracestate", "foo=bar=baz")]);
    assert_eq!(out.get("foo"), None);
    let out = call(&[("traceparent", &tp("00")), ("tracestate", "foo=,bar=3")]);
    assert_eq!(out.get("foo"), None, "an empty value is not forwarded");
    assert_eq!(out.get("bar"), None, "and drops the list");
}

#[test]
fn test_multiple_requests_with_valid_traceparent() {
    let incoming = from_headers(&headers(&[("traceparent", &tp("01"))]));
    let spans = [[1u8; 8], [2; 8], [3; 8]];
    let parents: Vec<TraceParent> = spans
        .iter()
        .map(|span| forward(incoming.as_ref(), *span, [0x77; 16], OUR_KEY).0)
        .collect();
    assert!(parents.iter().all(|p| hex::encode(p.trace_id) == TRACE));
    let ids: std::collections::HashSet<_> = parents.iter().map(|p| p.parent_id).collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn test_multiple_requests_with_illegal_traceparent() {
    let header = format!("00-{}-{PARENT}-01", "0".repeat(32));
    let incoming = from_headers(&headers(&[("traceparent", &header)]));
    assert!(incoming.is_none());
    let out = forward(incoming.as_ref(), [1; 8], [0x77; 16], OUR_KEY).0;
    assert_ne!(out.trace_id, [0; 16]);
}

#[test]
fn test_propagates_random_flag() {
    let out = call(&[("traceparent", &tp("02"))]);
    assert_eq!(out.trace_id(), TRACE);
    assert_ne!(out.parent.flags & RANDOM, 0, "random flag kept");
}

#[test]
fn test_multiple_requests_without_traceparent() {
    let spans = [[1u8; 8], [2; 8], [3; 8]];
    let ids: std::collections::HashSet<_> = spans
        .iter()
        .map(|span| forward(None, *span, rand::random(), OUR_KEY).0.parent_id)
        .collect();
    assert_eq!(ids.len(), 3, "a new parent id for every callback");
}
