//! Tempo rows to OTLP: every field of schema.go's model lands where Tempo's own reader puts it.

use threadline_otlp::proto::tonic::common::v1::{any_value::Value, KeyValue};

use super::convert::{attributes, trace_to_otlp, Dedicated};
use super::model::*;

fn attr(key: &str) -> Attribute {
    Attribute {
        key: key.to_string(),
        ..Default::default()
    }
}

fn value_of<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn names(list: &[&str]) -> [Option<String>; 10] {
    let mut names: [Option<String>; 10] = Default::default();
    for (slot, name) in names.iter_mut().zip(list) {
        *slot = Some(name.to_string());
    }
    names
}

#[test]
fn attribute_values_of_every_column() {
    let converted = attributes(&[
        Attribute {
            value: vec!["GET".into()],
            ..attr("s")
        },
        Attribute {
            value_int: vec![-7],
            ..attr("i")
        },
        Attribute {
            value_double: vec![2.5],
            ..attr("d")
        },
        Attribute {
            value_bool: vec![true],
            ..attr("b")
        },
        Attribute {
            is_array: true,
            value: vec!["a".into(), "b".into()],
            ..attr("sa")
        },
        Attribute {
            is_array: true,
            value_int: vec![1, 2, 3],
            ..attr("ia")
        },
        Attribute {
            is_array: true,
            ..attr("empty")
        },
        Attribute {
            value_unsupported: Some(
                r#"{"kvlistValue":{"values":[{"key":"k","value":{"intValue":"5"}}]}}"#.into(),
            ),
            ..attr("kv")
        },
    ]);
    assert_eq!(
        value_of(&converted, "s"),
        Some(&Value::StringValue("GET".into()))
    );
    assert_eq!(value_of(&converted, "i"), Some(&Value::IntValue(-7)));
    assert_eq!(value_of(&converted, "d"), Some(&Value::DoubleValue(2.5)));
    assert_eq!(value_of(&converted, "b"), Some(&Value::BoolValue(true)));
    let Some(Value::ArrayValue(strings)) = value_of(&converted, "sa") else {
        panic!("sa is not an array: {converted:?}");
    };
    assert_eq!(
        strings
            .values
            .iter()
            .map(|v| v.value.clone())
            .collect::<Vec<_>>(),
        vec![
            Some(Value::StringValue("a".into())),
            Some(Value::StringValue("b".into()))
        ]
    );
    let Some(Value::ArrayValue(ints)) = value_of(&converted, "ia") else {
        panic!("ia is not an array");
    };
    assert_eq!(ints.values.len(), 3);
    let Some(Value::ArrayValue(empty)) = value_of(&converted, "empty") else {
        panic!("an empty array attribute stays an array, as Tempo reads it");
    };
    assert!(empty.values.is_empty());
    let Some(Value::KvlistValue(kvlist)) = value_of(&converted, "kv") else {
        panic!("the unsupported value is not decoded: {converted:?}");
    };
    assert_eq!(kvlist.values[0].key, "k");
    assert_eq!(
        kvlist.values[0]
            .value
            .as_ref()
            .and_then(|v| v.value.clone()),
        Some(Value::IntValue(5))
    );
}

fn sample_trace() -> Trace {
    let mut resource_dedicated: DedicatedAttributes = Default::default();
    resource_dedicated[0] = Some("10.0.0.1".into());
    let mut span_dedicated: DedicatedAttributes = Default::default();
    span_dedicated[1] = Some("v1.2".into());
    Trace {
        trace_id: (1..=16).collect(),
        resource_spans: vec![ResourceSpans {
            resource: Resource {
                attrs: vec![Attribute {
                    value: vec!["prod".into()],
                    ..attr("deployment.environment")
                }],
                dropped_attributes_count: 1,
                service_name: "checkout".into(),
                namespace: Some("shop".into()),
                k8s_pod_name: Some("checkout-7f9".into()),
                dedicated: resource_dedicated,
                ..Default::default()
            },
            scope_spans: vec![ScopeSpans {
                scope: Scope {
                    name: "io.opentelemetry.http".into(),
                    version: "1.2.3".into(),
                    attrs: vec![Attribute {
                        value_bool: vec![false],
                        ..attr("scope.flag")
                    }],
                    dropped_attributes_count: 2,
                },
                spans: vec![Span {
                    span_id: vec![1, 1, 1, 1, 1, 1, 1, 1],
                    parent_span_id: vec![2, 2, 2, 2, 2, 2, 2, 2],
                    name: "GET /cart".into(),
                    kind: 2,
                    trace_state: "vendor=1".into(),
                    start_time_unix_nano: 1_000_000_000,
                    duration_nano: 250_000,
                    status_code: 2,
                    status_message: "boom".into(),
                    attrs: vec![Attribute {
                        value_int: vec![42],
                        ..attr("retries")
                    }],
                    dropped_attributes_count: 3,
                    events: vec![Event {
                        time_since_start_nano: 5_000,
                        name: "exception".into(),
                        attrs: vec![Attribute {
                            value: vec!["oops".into()],
                            ..attr("exception.message")
                        }],
                        dropped_attributes_count: 4,
                    }],
                    dropped_events_count: 5,
                    links: vec![Link {
                        trace_id: vec![9; 16],
                        span_id: vec![8; 8],
                        trace_state: "l=1".into(),
                        attrs: vec![Attribute {
                            value_double: vec![0.5],
                            ..attr("weight")
                        }],
                        dropped_attributes_count: 6,
                    }],
                    dropped_links_count: 7,
                    http_method: Some("GET".into()),
                    http_url: Some("http://shop/cart".into()),
                    http_status_code: Some(500),
                    dedicated: span_dedicated,
                }],
            }],
        }],
    }
}

#[test]
fn a_trace_row_becomes_otlp_field_for_field() {
    let dedicated = Dedicated {
        resource: names(&["ip"]),
        span: names(&["instance", "version"]),
    };
    let rs = trace_to_otlp(&sample_trace(), &dedicated);
    assert_eq!(rs.len(), 1);
    let resource = rs[0].resource.as_ref().expect("a resource");
    assert_eq!(resource.dropped_attributes_count, 1);
    let r = &resource.attributes;
    assert_eq!(
        value_of(r, "deployment.environment"),
        Some(&Value::StringValue("prod".into()))
    );
    assert_eq!(
        value_of(r, "service.name"),
        Some(&Value::StringValue("checkout".into()))
    );
    assert_eq!(
        value_of(r, "namespace"),
        Some(&Value::StringValue("shop".into()))
    );
    assert_eq!(
        value_of(r, "k8s.pod.name"),
        Some(&Value::StringValue("checkout-7f9".into()))
    );
    assert_eq!(
        value_of(r, "ip"),
        Some(&Value::StringValue("10.0.0.1".into()))
    );
    // Columns that are null are no attributes.
    assert_eq!(value_of(r, "cluster"), None);
    assert_eq!(r.len(), 5);

    let scope_spans = &rs[0].scope_spans[0];
    let scope = scope_spans.scope.as_ref().expect("a scope");
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("io.opentelemetry.http", "1.2.3")
    );
    assert_eq!(scope.dropped_attributes_count, 2);
    assert_eq!(
        value_of(&scope.attributes, "scope.flag"),
        Some(&Value::BoolValue(false))
    );

    let span = &scope_spans.spans[0];
    assert_eq!(span.trace_id, (1..=16).collect::<Vec<u8>>());
    assert_eq!(span.span_id, vec![1; 8]);
    assert_eq!(span.parent_span_id, vec![2; 8]);
    assert_eq!(span.name, "GET /cart");
    assert_eq!(span.kind, 2);
    assert_eq!(span.trace_state, "vendor=1");
    assert_eq!(span.start_time_unix_nano, 1_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_000_250_000);
    let status = span.status.as_ref().expect("a status");
    assert_eq!((status.code, status.message.as_str()), (2, "boom"));
    assert_eq!(span.dropped_attributes_count, 3);
    assert_eq!(span.dropped_events_count, 5);
    assert_eq!(span.dropped_links_count, 7);
    let a = &span.attributes;
    assert_eq!(value_of(a, "retries"), Some(&Value::IntValue(42)));
    assert_eq!(
        value_of(a, "http.method"),
        Some(&Value::StringValue("GET".into()))
    );
    assert_eq!(
        value_of(a, "http.url"),
        Some(&Value::StringValue("http://shop/cart".into()))
    );
    assert_eq!(value_of(a, "http.status_code"), Some(&Value::IntValue(500)));
    // Spare column 2 is "version"; column 1 ("instance") is null in this row.
    assert_eq!(
        value_of(a, "version"),
        Some(&Value::StringValue("v1.2".into()))
    );
    assert_eq!(value_of(a, "instance"), None);
    assert_eq!(a.len(), 5);

    let event = &span.events[0];
    assert_eq!(event.time_unix_nano, 1_000_005_000);
    assert_eq!(event.name, "exception");
    assert_eq!(event.dropped_attributes_count, 4);
    assert_eq!(
        value_of(&event.attributes, "exception.message"),
        Some(&Value::StringValue("oops".into()))
    );

    let link = &span.links[0];
    assert_eq!(
        (link.trace_id.clone(), link.span_id.clone()),
        (vec![9; 16], vec![8; 8])
    );
    assert_eq!(link.trace_state, "l=1");
    assert_eq!(link.dropped_attributes_count, 6);
    assert_eq!(
        value_of(&link.attributes, "weight"),
        Some(&Value::DoubleValue(0.5))
    );
}

/// A check by hand against a block Tempo wrote: `TEMPO_BLOCK_DIR` names a block folder (such as
/// grafana/tempo's tempodb/encoding/vparquet4/test-data/single-tenant/<id>), whose every trace
/// must read, with as many traces as its meta.json says.
#[test]
#[ignore = "needs TEMPO_BLOCK_DIR: a block Tempo wrote"]
fn reads_a_block_tempo_wrote() {
    let Ok(dir) = std::env::var("TEMPO_BLOCK_DIR") else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    let meta = std::fs::read(dir.join("meta.json")).expect("meta.json");
    let meta = super::TempoMeta::parse_supported(&meta).expect("a vParquet4 meta");
    let data = std::fs::read(dir.join("data.parquet")).expect("data.parquet");
    let dedicated = Dedicated {
        resource: meta.dedicated_names("resource"),
        span: meta.dedicated_names("span"),
    };
    let reader = super::TempoBlockReader::new(data.into(), dedicated).expect("a parquet file");
    let mut traces = Vec::new();
    for group in 0..reader.row_groups() {
        let read = reader.read_row_group(group).expect("a row group");
        assert!(read.rejected.is_empty(), "{:?}", read.rejected);
        assert_eq!(read.rejected_spans, 0);
        traces.extend(read.traces);
    }
    let spans: usize = traces.iter().map(|(_, t)| t.span_count()).sum();
    eprintln!(
        "{} row groups, {} traces, {spans} spans",
        reader.row_groups(),
        traces.len()
    );
    assert_eq!(traces.len() as u64, meta.total_objects);
    let (id, first) = &traces[traces.len() / 2];
    let found = reader
        .find_trace(id)
        .expect("reading")
        .expect("found by id");
    assert_eq!(&found, first);
    let request = first.to_request().expect("valid OTLP");
    eprintln!("{request:#?}");
}
