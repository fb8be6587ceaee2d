//! Span-name cardinality, PII and secrets.

use super::*;

#[test]
fn route_templates() {
    assert_eq!(
        template("GET /api/v2/orders/12345").as_deref(),
        Some("GET /api/v2/orders/{orderId}")
    );
    assert_eq!(
        template("GET /api/v2/orders"),
        None,
        "a numeric version is not an id"
    );
    assert_eq!(template("GET /api/v1.2/status"), None);
    assert_eq!(
        template("GET /users/3f2b8c1e-9d4a-4c6b-8e2f-1a2b3c4d5e6f/categories/77").as_deref(),
        Some("GET /users/{userId}/categories/{categoryId}")
    );
    assert_eq!(
        template("GET /blobs/9f86d081884c7d65").as_deref(),
        Some("GET /blobs/{blobId}")
    );
    assert_eq!(
        template("POST /invite/jane.doe@example.com").as_deref(),
        Some("POST /invite/{email}")
    );
    assert_eq!(
        template("GET /search?q=shoes").as_deref(),
        Some("GET /search")
    );
    assert_eq!(template("payments.Payments/Charge"), None);
    assert_eq!(template("SELECT orders"), None);
    assert_eq!(id_kind("oauth2"), None);
    assert_eq!(id_kind("base64"), None);
    assert_eq!(id_kind("v2"), None);
}

#[test]
fn span_names_with_ids_get_their_template() {
    let mut traces = Vec::new();
    for i in 0..30u32 {
        traces.push(trace(
            i,
            vec![
                span(
                    "catalog",
                    &format!("GET /api/v2/products/{}", 1000 + i),
                    SpanKind::Server,
                    1,
                    None,
                ),
                span(
                    "catalog",
                    "GET /api/v2/health",
                    SpanKind::Server,
                    2,
                    Some(1),
                ),
            ],
        ));
    }
    let findings = analyze(&traces);
    assert_eq!(kinds(&findings), vec!["span_name_has_ids"]);
    let f = &findings[0];
    assert_eq!(
        f.attribute.as_deref(),
        Some("GET /api/v2/products/{productId}")
    );
    assert_eq!(f.services, vec!["catalog".to_string()]);
    assert_eq!((f.count, f.total), (30, 60));
    assert!(f
        .fix_config
        .as_deref()
        .unwrap()
        .contains("replace_pattern(name"));
}

#[test]
fn too_many_distinct_names_without_ids() {
    let traces: Vec<Trace> = (0..250u32)
        .map(|i| {
            let word: String = (0..3)
                .map(|k| (b'a' + ((i / 26u32.pow(k)) % 26) as u8) as char)
                .collect();
            trace(
                i,
                vec![span(
                    "cms",
                    &format!("render {word}"),
                    SpanKind::Internal,
                    1,
                    None,
                )],
            )
        })
        .collect();
    let findings = analyze(&traces);
    assert_eq!(kinds(&findings), vec!["span_name_cardinality"]);
}

#[test]
fn card_numbers_need_a_valid_checksum_and_brand() {
    assert!(luhn_valid(&[
        4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
    ]));
    assert!(contains_card_number("4111 1111 1111 1111"));
    assert!(contains_card_number("card=5500-0000-0000-0004"));
    assert!(contains_card_number("378282246310005"));
    assert!(!contains_card_number("4111111111111112"), "Luhn fails");
    assert!(
        !contains_card_number("1234567812345670"),
        "no brand starts with 1"
    );
    assert!(
        !contains_card_number("order 41111111111111111111"),
        "too long"
    );
}

#[test]
fn iban_phone_tokens_and_keys() {
    assert!(is_iban("GB82WEST12345698765432"));
    assert!(is_iban("DE89 3704 0044 0532 0130 00"));
    assert!(!is_iban("GB83WEST12345698765432"), "checksum");
    assert_eq!(classify_value("+44 20 7946 0958"), Some(PiiKind::Phone));
    assert_eq!(classify_value("+1"), None);
    assert_eq!(classify_value("Bearer abc.def"), Some(PiiKind::BearerToken));
    assert_eq!(
        classify_value("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"),
        Some(PiiKind::Jwt)
    );
    assert_eq!(
        classify_value("sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        Some(PiiKind::ApiKey)
    );
    assert_eq!(
        classify_value("AKIAIOSFODNN7EXAMPLE"),
        Some(PiiKind::ApiKey)
    );
    assert_eq!(classify_value("jane.doe@example.com"), Some(PiiKind::Email));
    assert_eq!(classify_value("user@localhost"), None);
    assert_eq!(classify_value("GET /api/v2/orders"), None);
    assert_eq!(classify_value("1.45.2"), None);
    assert!(crate::pii::secret_key_name("db.password"));
    assert!(crate::pii::secret_key_name(
        "http.request.header.authorization"
    ));
    assert!(!crate::pii::secret_key_name("gen_ai.usage.input_tokens"));
}

#[test]
fn pii_in_attributes_is_reported_masked_with_a_processor_snippet() {
    let traces: Vec<Trace> = (0..3u32)
        .map(|i| {
            trace(
                i,
                vec![span("profile", "GET /profile", SpanKind::Server, 1, None)
                    .attr("user.email", "jane.doe@example.com")
                    // A test card in a test environment still counts.
                    .attr("payment.card", "4111111111111111")
                    .attr("db.password", "hunter2hunter2")
                    .attr("order.id", "1234567812345678")
                    .resource("deployment.environment", "test")],
            )
        })
        .collect();
    let findings = analyze(&traces);
    assert_eq!(
        kinds(&findings),
        vec!["pii_card_number", "pii_email", "pii_secret_key"]
    );
    let json = serde_json::to_string(&findings).unwrap();
    for secret in ["jane.doe", "example.com", "4111111111111111", "hunter2"] {
        assert!(!json.contains(secret), "{secret} leaked: {json}");
    }
    let email = findings.iter().find(|f| f.kind == "pii_email").unwrap();
    assert_eq!(email.attribute.as_deref(), Some("user.email"));
    assert_eq!(email.count, 3);
    let snippet = email.fix_config.as_deref().unwrap();
    assert!(
        snippet.contains("attributes/redact")
            && snippet.contains("key: user.email")
            && snippet.contains("action: hash")
    );
    let secret = findings
        .iter()
        .find(|f| f.kind == "pii_secret_key")
        .unwrap();
    assert!(secret
        .fix_config
        .as_deref()
        .unwrap()
        .contains("action: delete"));
}

#[test]
fn pii_inside_array_attributes_is_found_under_the_arrays_key() {
    let traces: Vec<Trace> = (0..2u32)
        .map(|i| {
            let mut b = span("mailer", "send", SpanKind::Producer, 1, None);
            b.span.attributes.push((
                "mail.recipients".into(),
                Value::Array(vec![
                    Value::Str("ops".into()),
                    Value::Str("john.smith@example.org".into()),
                ]),
            ));
            // Numbers and flags in arrays are no PII.
            b.span.attributes.push((
                "retry.delays".into(),
                Value::Array(vec![Value::Int(100), Value::Float(0.5), Value::Bool(true)]),
            ));
            trace(i, vec![b])
        })
        .collect();
    let findings = analyze(&traces);
    assert_eq!(kinds(&findings), vec!["pii_email"]);
    assert_eq!(findings[0].attribute.as_deref(), Some("mail.recipients"));
    assert_eq!(findings[0].count, 2);
    let json = serde_json::to_string(&findings).unwrap();
    assert!(!json.contains("john.smith"), "leaked: {json}");
}
