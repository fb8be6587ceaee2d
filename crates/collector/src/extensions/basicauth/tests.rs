//! `basicauth`'s config as upstream writes it, and its checks.

use super::*;
use crate::component::decode_config;
use crate::test_support::headers;

fn decode(text: &str) -> Result<BasicAuthConfig, threadline_config::ConfigErrors> {
    decode_config(
        &serde_yaml_ng::from_str(text).unwrap(),
        "extensions::basicauth",
    )
}

#[test]
fn decodes_the_upstream_style_sample() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/extensions/basicauth/testdata/config.yaml"
    ))
    .unwrap();
    let all: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text).unwrap();
    let server: BasicAuthConfig =
        decode_config(&all["basicauth/server"], "extensions::basicauth/server").unwrap();
    assert!(server.is_server());
    assert_eq!(server.htpasswd.unwrap().file, ".htpasswd");
    let client: BasicAuthConfig =
        decode_config(&all["basicauth/client"], "extensions::basicauth/client").unwrap();
    assert_eq!(client.client_auth.unwrap().username, "username2");
}

#[test]
fn invalid_configs_say_what_to_set() {
    let err = decode("{}").unwrap_err().to_string();
    assert!(err.contains("no credential source provided"), "{err}");
    let err = decode("htpasswd: {inline: \"a:b\"}\nclient_auth: {username: a, password: b}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not both"), "{err}");
    let err = decode("client_auth: {username: \"a:b\", password: c}")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("extensions::basicauth::client_auth::username"),
        "{err}"
    );
    let err = decode("htpasswd: {path: x}").unwrap_err().to_string();
    assert!(err.contains("path") && err.contains("inline"), "{err}");
}

#[test]
fn a_missing_htpasswd_file_fails_naming_it() {
    let config = decode("htpasswd: {file: /nonexistent/htpasswd}").unwrap();
    let err = BasicAuth::new(&config).err().unwrap();
    assert!(format!("{err:#}").contains("htpasswd::file"), "{err:#}");
}

#[test]
fn the_server_reads_the_file_then_inline() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, "alice:from-file\nbob:bob-pw\n").unwrap();
    let config = decode(&format!(
        "htpasswd: {{file: {}, inline: \"alice:from-inline\"}}",
        file.display()
    ))
    .unwrap();
    let server = BasicAuth::new(&config)
        .unwrap()
        .server_authenticator()
        .unwrap();
    let check = |user: &str, password: &str| {
        let mut headers = headers(&[("authorization", &basic_header(user, password))]);
        server.authenticate(&mut headers)
    };
    assert!(check("alice", "from-inline").is_ok());
    assert!(check("bob", "bob-pw").is_ok());
    assert_eq!(
        check("alice", "from-file"),
        Err(AuthError::Unauthenticated("invalid credentials".into()))
    );
    let mut none = HeaderMap::new();
    assert_eq!(
        server.authenticate(&mut none),
        Err(AuthError::Unauthenticated("no basic auth provided".into()))
    );
}
