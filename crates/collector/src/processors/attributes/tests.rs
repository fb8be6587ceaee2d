//! Every action and the include/exclude selection, through a real downstream recorder.

use std::sync::Arc;

use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use threadline_otlp::proto::tonic::resource::v1::Resource;
use threadline_otlp::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use threadline_otlp::TraceData;

use super::{AttributesConfig, AttributesProcessor};
use crate::component::decode_config;
use crate::consumer::TracesConsumer;
use crate::test_support::Recorder;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn get<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn data(service: &str, spans: Vec<Span>) -> TraceData {
    TraceData::from_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn span(name: &str, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        attributes,
        ..Default::default()
    }
}

async fn run(yaml: &str, service: &str, spans: Vec<Span>) -> Vec<Span> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    let config: AttributesConfig = decode_config(&value, "processors::attributes").unwrap();
    let recorder = Arc::new(Recorder::default());
    let processor = AttributesProcessor::new(&config, recorder.clone()).unwrap();
    processor.consume(data(service, spans)).await.unwrap();
    recorder.spans()
}

#[tokio::test]
async fn insert_update_upsert_follow_upstream_rules() {
    let yaml = r#"
actions:
  - {key: present, value: new, action: insert}
  - {key: absent, value: 7, action: insert}
  - {key: missing, value: x, action: update}
  - {key: other, value: 1.5, action: update}
  - {key: deployment.environment, value: production, action: upsert}
  - {key: copy, from_attribute: present, action: upsert}
"#;
    let spans = run(
        yaml,
        "orders",
        vec![span(
            "s",
            vec![string("present", "old"), string("other", "o")],
        )],
    )
    .await;
    let s = &spans[0];
    assert_eq!(
        get(s, "present"),
        Some(&any_value::Value::StringValue("old".into()))
    );
    assert_eq!(get(s, "absent"), Some(&any_value::Value::IntValue(7)));
    assert_eq!(get(s, "missing"), None);
    assert_eq!(get(s, "other"), Some(&any_value::Value::DoubleValue(1.5)));
    assert_eq!(
        get(s, "deployment.environment"),
        Some(&any_value::Value::StringValue("production".into()))
    );
    assert_eq!(
        get(s, "copy"),
        Some(&any_value::Value::StringValue("old".into()))
    );
}

#[tokio::test]
async fn delete_hash_extract_convert() {
    let yaml = r#"
actions:
  - {key: password, action: delete}
  - {pattern: ^secret\..*, action: delete}
  - {key: user.email, action: hash}
  - {key: http.url, pattern: '^(?P<scheme>\w+)://(?P<host>[^/]+)/', action: extract}
  - {key: retries, converted_type: int, action: convert}
"#;
    let attributes = vec![
        string("password", "hunter2"),
        string("secret.a", "1"),
        string("secret.b", "2"),
        string("user.email", "a@example.com"),
        string("http.url", "https://shop.example.com/cart"),
        string("retries", "3"),
    ];
    let spans = run(yaml, "orders", vec![span("s", attributes)]).await;
    let s = &spans[0];
    assert_eq!(get(s, "password"), None);
    assert!(get(s, "secret.a").is_none() && get(s, "secret.b").is_none());
    // sha256("a@example.com"), as `sha256sum` prints it
    assert_eq!(
        get(s, "user.email"),
        Some(&any_value::Value::StringValue(
            "08168cd80dfd534ab0f10af10f1303fe00af2d43ab5c1432360d137f8197e17a".into()
        ))
    );
    assert_eq!(
        get(s, "scheme"),
        Some(&any_value::Value::StringValue("https".into()))
    );
    assert_eq!(
        get(s, "host"),
        Some(&any_value::Value::StringValue("shop.example.com".into()))
    );
    assert_eq!(get(s, "retries"), Some(&any_value::Value::IntValue(3)));
}

#[tokio::test]
async fn include_and_exclude_select_spans() {
    let yaml = r#"
include: {match_type: regexp, services: ["^auth.*"]}
exclude: {match_type: strict, span_names: ["login"]}
actions:
  - {key: touched, value: true, action: insert}
"#;
    let spans = run(
        yaml,
        "auth-service",
        vec![span("login", vec![]), span("logout", vec![])],
    )
    .await;
    assert_eq!(get(&spans[0], "touched"), None, "excluded by name");
    assert_eq!(
        get(&spans[1], "touched"),
        Some(&any_value::Value::BoolValue(true))
    );
    let spans = run(yaml, "orders", vec![span("logout", vec![])]).await;
    assert_eq!(get(&spans[0], "touched"), None, "service not included");
}

#[test]
fn invalid_actions_name_their_position_and_field() {
    for (yaml, path) in [
        (
            "actions: [{key: a, action: insert}]",
            "processors::attributes::actions[0]::value",
        ),
        (
            "actions: [{key: a, action: extract, pattern: 'no groups'}]",
            "processors::attributes::actions[0]::pattern",
        ),
        (
            "actions: [{key: a, action: convert}]",
            "processors::attributes::actions[0]::converted_type",
        ),
        ("actions: []", "processors::attributes::actions"),
    ] {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let errors =
            decode_config::<AttributesConfig>(&value, "processors::attributes").unwrap_err();
        assert!(errors.0.iter().any(|e| e.path == path), "{yaml}: {errors}");
    }
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str("actions: [{key: a, action: explode}]").unwrap();
    let errors = decode_config::<AttributesConfig>(&value, "processors::attributes").unwrap_err();
    assert!(
        errors.to_string().contains("insert"),
        "allowed actions listed: {errors}"
    );
}

#[test]
fn testdata_decodes() {
    let all: serde_yaml_ng::Mapping =
        serde_yaml_ng::from_str(include_str!("testdata/config.yaml")).unwrap();
    for (key, value) in all {
        let key = key.as_str().unwrap().to_string();
        decode_config::<AttributesConfig>(&value, &key).unwrap();
    }
}
