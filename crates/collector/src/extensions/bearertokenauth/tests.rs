//! `bearertokenauth`'s config as upstream writes it, and its checks.

use http::HeaderMap;

use super::*;
use crate::component::{decode_config, ExtensionFactory};

fn decode(text: &str) -> Result<BearerTokenAuthConfig, threadline_config::ConfigErrors> {
    decode_config(
        &serde_yaml_ng::from_str(text).unwrap(),
        "extensions::bearertokenauth",
    )
}

#[test]
fn decodes_the_upstream_style_sample_with_upstreams_defaults() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/extensions/bearertokenauth/testdata/config.yaml"
    ))
    .unwrap();
    let all: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text).unwrap();
    let one = |key: &str| {
        decode_config::<BearerTokenAuthConfig>(&all[key], "extensions::bearertokenauth").unwrap()
    };
    let plain = one("bearertokenauth");
    assert_eq!(
        (plain.scheme.as_str(), plain.header.as_str()),
        ("Bearer", "Authorization")
    );
    assert_eq!(plain.inline_tokens(), vec!["sometoken"]);
    let multiple = one("bearertokenauth/multiple");
    assert_eq!(multiple.inline_tokens(), vec!["token1", "token2"]);
    assert_eq!(multiple.header, "X-Auth");
    assert_eq!(
        one("bearertokenauth/file").filename(),
        Some("/var/run/secrets/token")
    );
}

#[test]
fn invalid_configs_name_the_key() {
    let err = decode("scheme: Bearer").unwrap_err().to_string();
    assert!(err.contains("no bearer token provided"), "{err}");
    let err = decode("token: a\ntokens: [b]").unwrap_err().to_string();
    assert!(
        err.contains("extensions::bearertokenauth::tokens") && err.contains("not both"),
        "{err}"
    );
    let err = decode("token: a\nheader: \"bad header\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("extensions::bearertokenauth::header"), "{err}");
    let err = decode("token: \"line\\nbreak\"").unwrap_err().to_string();
    assert!(err.contains("extensions::bearertokenauth::token"), "{err}");
    let err = decode("token: a\ntoken_file: x").unwrap_err().to_string();
    assert!(err.contains("token_file"), "{err}");
}

#[tokio::test]
async fn custom_scheme_and_header_are_sent_and_checked() {
    let auth = BearerTokenAuth::start(
        &decode("scheme: MyScheme\ntokens: [t1, t2]\nheader: X-Auth").unwrap(),
    )
    .unwrap();
    let client = auth.client_authenticator().unwrap();
    let server = auth.server_authenticator().unwrap();
    let mut headers = HeaderMap::new();
    client.apply(&mut headers, &ClientInfo::default()).unwrap();
    assert_eq!(headers["x-auth"], "MyScheme t1");
    assert!(server.authenticate(&mut headers).is_ok());
    headers.insert("x-auth", "MyScheme t2".parse().unwrap());
    assert!(server.authenticate(&mut headers).is_ok());
    headers.insert("x-auth", "Bearer t2".parse().unwrap());
    assert_eq!(
        server.authenticate(&mut headers),
        Err(AuthError::Unauthenticated(
            "scheme or token does not match".into()
        ))
    );
    let mut none = HeaderMap::new();
    let err = server.authenticate(&mut none).unwrap_err();
    assert!(err
        .to_string()
        .contains("missing or empty authorization header: x-auth"));
}

#[test]
fn a_missing_token_file_fails_the_start_naming_it() {
    let config = serde_yaml_ng::from_str("filename: /nonexistent/token").unwrap();
    let telemetry = crate::telemetry::Telemetry::new("test");
    let host = crate::component::Host::default();
    let id = "bearertokenauth".parse().unwrap();
    let ctx = CreateContext {
        id: &id,
        telemetry: &telemetry,
        host: &host,
    };
    let err = ExtensionFactory::create(&BearerTokenAuthFactory, &ctx, &config)
        .err()
        .unwrap();
    let text = format!("{err:#}");
    assert!(
        text.contains("extensions::bearertokenauth") && text.contains("/nonexistent/token"),
        "{text}"
    );
}
