//! `headers_setter`'s config as upstream writes it, and its actions.

use super::*;
use crate::component::decode_config;

fn decode(text: &str) -> Result<HeadersSetterConfig, threadline_config::ConfigErrors> {
    decode_config(
        &serde_yaml_ng::from_str(text).unwrap(),
        "extensions::headers_setter",
    )
}

#[test]
fn decodes_the_upstream_style_sample() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/extensions/headers_setter/testdata/config.yaml"
    ))
    .unwrap();
    let all: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text).unwrap();
    let config: HeadersSetterConfig =
        decode_config(&all["headers_setter"], "extensions::headers_setter").unwrap();
    assert_eq!(config.headers.len(), 3);
    assert_eq!(config.headers[0].action, Action::Insert);
    assert_eq!(config.headers[0].from_context.as_deref(), Some("tenant_id"));
    assert_eq!(config.headers[1].action, Action::Upsert);
    assert_eq!(config.headers[2].action, Action::Delete);
}

#[test]
fn invalid_configs_name_the_entry_and_key() {
    let err = decode("headers: []").unwrap_err().to_string();
    assert!(err.contains("missing headers configuration"), "{err}");
    let err = decode("headers: [{value: x}]").unwrap_err().to_string();
    assert!(err.contains("headers::0::key"), "{err}");
    let err = decode("headers: [{key: a}]").unwrap_err().to_string();
    assert!(err.contains("missing header source"), "{err}");
    let err = decode("headers: [{key: a, value: x, from_context: y}]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid header source"), "{err}");
    let err = decode("headers: [{key: a, value: x, action: replace}]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("insert, update, upsert, delete"), "{err}");
    let err = decode("headers: [{key: a, from_attribute: username}]")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("headers::0::from_attribute") && err.contains("not supported"),
        "{err}"
    );
}

#[test]
fn actions_insert_update_upsert_and_delete_as_upstream() {
    let config = decode(
        "headers:\n\
         - {key: a, value: new, action: insert}\n\
         - {key: b, value: new, action: insert}\n\
         - {key: c, value: new, action: update}\n\
         - {key: d, value: new, action: update}\n\
         - {key: e, value: new}\n\
         - {key: f, action: delete}\n\
         - {key: g, from_context: tenant}\n",
    )
    .unwrap();
    let setter = HeadersSetter::new(&config).unwrap();
    let mut headers = HeaderMap::new();
    for key in ["a", "c", "e", "f"] {
        headers.insert(key, "old".parse().unwrap());
    }
    setter
        .client_authenticator()
        .unwrap()
        .apply(&mut headers, &ClientInfo::default())
        .unwrap();
    assert_eq!(headers["a"], "old");
    assert_eq!(headers["b"], "new");
    assert_eq!(headers["c"], "new");
    assert!(!headers.contains_key("d"));
    assert_eq!(headers["e"], "new");
    assert!(!headers.contains_key("f"));
    // from_context without a value and without default_value sets nothing.
    assert!(!headers.contains_key("g"));
}
