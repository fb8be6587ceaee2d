//! One test per rule of W3C Trace Context (levels 1 and 2).

use crate::w3c::{extract, valid_key, valid_value, TraceParent, TraceState, RANDOM, SAMPLED};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

fn tp(text: &str) -> Option<TraceParent> {
    TraceParent::parse(text)
}

#[test]
fn a_valid_version_00_traceparent_parses() {
    let parsed = tp(&format!("00-{TRACE}-{PARENT}-01")).unwrap();
    assert_eq!(hex::encode(parsed.trace_id), TRACE);
    assert_eq!(hex::encode(parsed.parent_id), PARENT);
    assert_eq!(parsed.flags, SAMPLED);
}

#[test]
fn version_ff_is_invalid() {
    assert!(tp(&format!("ff-{TRACE}-{PARENT}-01")).is_none());
}

#[test]
fn version_00_must_be_exactly_55_characters() {
    assert!(tp(&format!("00-{TRACE}-{PARENT}-01-extra")).is_none());
    assert!(tp(&format!("00-{TRACE}-{PARENT}-1")).is_none());
}

#[test]
fn future_versions_are_parsed_as_00_and_may_have_more_fields() {
    assert!(tp(&format!("cc-{TRACE}-{PARENT}-01")).is_some());
    assert!(tp(&format!("cc-{TRACE}-{PARENT}-01-what-the-future-holds")).is_some());
    // ...but the field after the flags must be separated by a dash.
    assert!(tp(&format!("cc-{TRACE}-{PARENT}-01x")).is_none());
}

#[test]
fn uppercase_or_non_hex_is_invalid() {
    assert!(tp(&format!("00-{}-{PARENT}-01", TRACE.to_uppercase())).is_none());
    assert!(tp(&format!("00-{TRACE}-{PARENT}-0g")).is_none());
    assert!(tp(&format!("0A-{TRACE}-{PARENT}-01")).is_none());
}

#[test]
fn all_zero_ids_are_invalid() {
    assert!(tp(&format!("00-{}-{PARENT}-01", "0".repeat(32))).is_none());
    assert!(tp(&format!("00-{TRACE}-{}-01", "0".repeat(16))).is_none());
}

#[test]
fn wrong_delimiters_and_lengths_are_invalid() {
    assert!(tp(&format!("00_{TRACE}-{PARENT}-01")).is_none());
    assert!(tp(&format!("00-{TRACE}{PARENT}-01-")).is_none());
    assert!(tp(&format!("00-{}-{PARENT}-01", &TRACE[..31])).is_none());
    assert!(tp("").is_none());
}

#[test]
fn surrounding_whitespace_is_tolerated() {
    assert!(tp(&format!("  00-{TRACE}-{PARENT}-01\t")).is_some());
}

#[test]
fn forwarding_writes_version_00_keeps_trace_and_sampled_and_random_flags() {
    let parsed = tp(&format!("cc-{TRACE}-{PARENT}-ff-extra")).unwrap();
    let child = parsed.child([1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(child.to_string(), format!("00-{TRACE}-0102030405060708-03"));
    assert_eq!(child.flags, SAMPLED | RANDOM);
    let unsampled = tp(&format!("00-{TRACE}-{PARENT}-00"))
        .unwrap()
        .child([9; 8]);
    assert_eq!(unsampled.flags, 0);
}

#[test]
fn tracestate_keys_follow_the_current_grammar() {
    assert!(valid_key("vendor"));
    assert!(valid_key("a1_-*/"));
    assert!(valid_key("tenant@system"));
    assert!(valid_key("0tenant@sys"));
    assert!(valid_key("1vendor"), "a key may start with a digit");
    assert!(valid_key("foo@"), "`@` is an ordinary key character");
    assert!(valid_key("foo@@bar"));
    assert!(valid_key("foo@bar@baz"));
    assert!(
        valid_key("tenant@0sys"),
        "no separate system grammar any more"
    );
    assert!(
        valid_key(&format!("t@{}", "v".repeat(15))),
        "what follows `@` is not limited to 14 characters"
    );
    assert!(valid_key(&format!("{}@v", "t".repeat(242))));
    assert!(!valid_key("@foo"), "a key starts with a letter or digit");
    assert!(!valid_key("Vendor"), "uppercase");
    assert!(!valid_key("foo "));
    assert!(!valid_key("foo.bar"));
    assert!(!valid_key("_foo"));
    assert!(valid_key(&"a".repeat(256)));
    assert!(!valid_key(&"a".repeat(257)), "at most 256 characters");
    assert!(!valid_key(""));
}

#[test]
fn tracestate_values() {
    assert!(valid_value("00f067aa0ba902b7"));
    assert!(valid_value("a b"));
    assert!(
        valid_value(" leading"),
        "leading spaces are part of the value"
    );
    assert!(
        !valid_value(""),
        "a value has at least one non-space character"
    );
    assert!(!valid_value(" "));
    assert!(!valid_value("a b "), "no trailing space");
    assert!(!valid_value("a,b"));
    assert!(!valid_value("a=b"));
    assert!(!valid_value("a\tb"), "tabs are not printable");
    assert!(!valid_value("é"));
    assert!(valid_value(&"x".repeat(256)));
    assert!(!valid_value(&"x".repeat(257)));
}

#[test]
fn tracestate_headers_combine_and_skip_empty_members() {
    let state = TraceState::parse(["foo=1,  ,bar=2", "baz=3", "", " \t "]).unwrap();
    assert_eq!(state.header(), "foo=1,bar=2,baz=3");
    assert_eq!(TraceState::parse([""]).unwrap().members, vec![]);
}

#[test]
fn a_duplicate_key_keeps_its_first_member() {
    let state = TraceState::parse(["foo=1,bar=2,foo=3"]).unwrap();
    assert_eq!(state.header(), "foo=1,bar=2");
    let state = TraceState::parse(["foo=1", "foo=2"]).unwrap();
    assert_eq!(state.header(), "foo=1");
}

#[test]
fn a_malformed_member_drops_the_whole_tracestate() {
    assert!(TraceState::parse(["foo=1,bar"]).is_none());
    assert!(TraceState::parse(["foo=1", "Foo=2"]).is_none());
    assert!(TraceState::parse(["foo=,bar=3"]).is_none(), "empty value");
    assert!(TraceState::parse(["foo=bar=baz"]).is_none());
    assert!(TraceState::parse(["@foo=1,bar=2"]).is_none());
}

#[test]
fn at_most_32_members() {
    let members: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
    assert_eq!(
        TraceState::parse([members.join(",").as_str()])
            .unwrap()
            .members
            .len(),
        32
    );
    let too_many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    assert!(TraceState::parse([too_many.join(",").as_str()]).is_none());
    // Duplicates count: 33 members sent are too many even if one repeats a key.
    let with_duplicate = format!("{},k0=again", members.join(","));
    assert!(TraceState::parse([with_duplicate.as_str()]).is_none());
}

#[test]
fn updating_moves_our_entry_first_and_keeps_32_members() {
    let members: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
    let mut state = TraceState::parse([members.join(",").as_str()]).unwrap();
    state.upsert_front("threadline", "x");
    assert_eq!(state.members.len(), 32);
    assert_eq!(state.members[0], ("threadline".into(), "x".into()));
    assert_eq!(
        state.members[31].0, "k30",
        "the rightmost member was dropped"
    );
    let mut state = TraceState::parse(["a=1,threadline=old,b=2"]).unwrap();
    state.upsert_front("threadline", "new");
    assert_eq!(state.header(), "threadline=new,a=1,b=2");
}

#[test]
fn an_invalid_traceparent_discards_the_tracestate_too() {
    assert!(extract(Some("00-bad"), ["foo=1"]).is_none());
    let (parent, state) =
        extract(Some(&format!("00-{TRACE}-{PARENT}-01")), ["foo=1,Bad=2"]).unwrap();
    assert_eq!(hex::encode(parent.trace_id), TRACE);
    assert!(
        state.members.is_empty(),
        "an invalid tracestate is dropped, the traceparent kept"
    );
}

#[test]
fn the_propagator_keeps_members_the_opentelemetry_crate_accepts_when_it_rejects_one() {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    // `foo@bar@baz` is a key by the current grammar but not by the `opentelemetry` crate's.
    let carrier = std::collections::HashMap::from([
        ("traceparent".to_string(), format!("00-{TRACE}-{PARENT}-01")),
        ("tracestate".to_string(), "foo@bar@baz=1,bar=2".to_string()),
    ]);
    let cx = crate::propagation::W3cPropagator.extract(&carrier);
    let span = cx.span();
    let state = span.span_context().trace_state();
    assert_eq!(state.get("bar"), Some("2"));
    assert_eq!(state.get("foo@bar@baz"), None);
}
