//! TLS builders against real certificates generated here and written to files, checked with
//! real handshakes between the built client and server configs.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};
use threadline_config::settings::{TlsClientSettings, TlsError, TlsServerSettings, TlsVersion};

/// A CA and certificates it issued, written as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// A self-signed CA; returns its certificate file and what is needed to issue from it.
    fn ca(&self, name: &str) -> (PathBuf, rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let path = self.write(&format!("{name}.crt"), &cert.pem());
        (path, cert, key)
    }

    fn issue(
        &self,
        name: &str,
        purpose: ExtendedKeyUsagePurpose,
        ca: &rcgen::Certificate,
        ca_key: &KeyPair,
    ) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, ca, ca_key).unwrap();
        Issued {
            cert: self.write(&format!("{name}.crt"), &cert.pem()),
            key: self.write(&format!("{name}.key"), &key.serialize_pem()),
        }
    }
}

fn text(path: &Path) -> Option<String> {
    Some(path.to_string_lossy().into_owned())
}

fn server_settings(issued: &Issued) -> TlsServerSettings {
    TlsServerSettings {
        cert_file: text(&issued.cert),
        key_file: text(&issued.key),
        ..Default::default()
    }
}

/// Moves TLS records from one side to the other and processes them.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut records = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut records).unwrap();
    }
    let mut pending = &records[..];
    while !pending.is_empty() {
        to.read_tls(&mut pending).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

/// Runs a handshake in memory and sends one message from client to server.
fn handshake(
    client: rustls::ClientConfig,
    server: rustls::ServerConfig,
    server_name: ServerName<'static>,
) -> Result<(), rustls::Error> {
    let mut client = Connection::Client(ClientConnection::new(Arc::new(client), server_name)?);
    let mut server = Connection::Server(ServerConnection::new(Arc::new(server))?);
    client.writer().write_all(b"ping").unwrap();
    for _ in 0..10 {
        transfer(&mut client, &mut server)?;
        transfer(&mut server, &mut client)?;
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    let mut received = [0u8; 4];
    server.reader().read_exact(&mut received).unwrap();
    assert_eq!(&received, b"ping");
    Ok(())
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

#[test]
fn server_and_client_built_from_files_complete_a_handshake() {
    let pki = Pki::new();
    let (ca_file, ca, ca_key) = pki.ca("ca");
    let server = pki.issue("server", ExtendedKeyUsagePurpose::ServerAuth, &ca, &ca_key);

    let server_config = server_settings(&server).build_rustls().unwrap();
    let client = TlsClientSettings {
        ca_file: text(&ca_file),
        ..Default::default()
    };
    let client_config = client
        .build_rustls()
        .unwrap()
        .expect("TLS is on unless insecure");
    handshake(
        client_config,
        server_config,
        client.server_name("localhost").unwrap(),
    )
    .unwrap();
}

#[test]
fn pem_text_works_like_files() {
    let pki = Pki::new();
    let (ca_file, ca, ca_key) = pki.ca("ca");
    let server = pki.issue("server", ExtendedKeyUsagePurpose::ServerAuth, &ca, &ca_key);
    let read = |p: &Path| Some(std::fs::read_to_string(p).unwrap());
    let server_config = TlsServerSettings {
        cert_pem: read(&server.cert),
        key_pem: read(&server.key),
        ..Default::default()
    }
    .build_rustls()
    .unwrap();
    let client_config = TlsClientSettings {
        ca_pem: read(&ca_file),
        ..Default::default()
    }
    .build_rustls()
    .unwrap()
    .unwrap();
    handshake(client_config, server_config, localhost()).unwrap();
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let pki = Pki::new();
    let (ca_file, ca, ca_key) = pki.ca("ca");
    let server = pki.issue("server", ExtendedKeyUsagePurpose::ServerAuth, &ca, &ca_key);
    let (client_ca_file, client_ca, client_ca_key) = pki.ca("client-ca");
    let client_cert = pki.issue(
        "client",
        ExtendedKeyUsagePurpose::ClientAuth,
        &client_ca,
        &client_ca_key,
    );
    // Issued by the server's CA, which the server does not trust for clients.
    let stranger = pki.issue(
        "stranger",
        ExtendedKeyUsagePurpose::ClientAuth,
        &ca,
        &ca_key,
    );

    let server_settings = TlsServerSettings {
        client_ca_file: text(&client_ca_file),
        ..server_settings(&server)
    };
    let client_with = |cert: Option<&Issued>| {
        TlsClientSettings {
            ca_file: text(&ca_file),
            cert_file: cert.and_then(|c| text(&c.cert)),
            key_file: cert.and_then(|c| text(&c.key)),
            ..Default::default()
        }
        .build_rustls()
        .unwrap()
        .unwrap()
    };

    let anonymous = handshake(
        client_with(None),
        server_settings.build_rustls().unwrap(),
        localhost(),
    );
    assert!(
        matches!(anonymous, Err(rustls::Error::NoCertificatesPresented)),
        "{anonymous:?}"
    );
    let untrusted = handshake(
        client_with(Some(&stranger)),
        server_settings.build_rustls().unwrap(),
        localhost(),
    );
    assert!(
        matches!(untrusted, Err(rustls::Error::InvalidCertificate(_))),
        "{untrusted:?}"
    );
    handshake(
        client_with(Some(&client_cert)),
        server_settings.build_rustls().unwrap(),
        localhost(),
    )
    .unwrap();
}

#[test]
fn insecure_and_skip_verify() {
    assert!(TlsClientSettings {
        insecure: true,
        ..Default::default()
    }
    .build_rustls()
    .unwrap()
    .is_none());

    let pki = Pki::new();
    let (_, ca, ca_key) = pki.ca("ca");
    let (other_ca_file, _, _) = pki.ca("other-ca");
    let server = pki.issue("server", ExtendedKeyUsagePurpose::ServerAuth, &ca, &ca_key);

    let verified_against_other_ca = TlsClientSettings {
        ca_file: text(&other_ca_file),
        ..Default::default()
    };
    let result = handshake(
        verified_against_other_ca.build_rustls().unwrap().unwrap(),
        server_settings(&server).build_rustls().unwrap(),
        localhost(),
    );
    assert!(
        matches!(result, Err(rustls::Error::InvalidCertificate(_))),
        "{result:?}"
    );

    let skip_verify = TlsClientSettings {
        ca_file: text(&other_ca_file),
        insecure_skip_verify: true,
        ..Default::default()
    };
    handshake(
        skip_verify.build_rustls().unwrap().unwrap(),
        server_settings(&server).build_rustls().unwrap(),
        ServerName::try_from("any-name.example").unwrap(),
    )
    .unwrap();
}

#[test]
fn server_name_override_is_what_gets_verified() {
    let pki = Pki::new();
    let (ca_file, ca, ca_key) = pki.ca("ca");
    let server = pki.issue("server", ExtendedKeyUsagePurpose::ServerAuth, &ca, &ca_key);
    let client = TlsClientSettings {
        ca_file: text(&ca_file),
        server_name_override: Some("localhost".into()),
        ..Default::default()
    };
    let name = client.server_name("10.0.0.7").unwrap();
    assert_eq!(name, localhost());
    handshake(
        client.build_rustls().unwrap().unwrap(),
        server_settings(&server).build_rustls().unwrap(),
        name,
    )
    .unwrap();
    let plain = TlsClientSettings::default();
    assert_eq!(
        plain.server_name("[::1]").unwrap(),
        ServerName::try_from("::1").unwrap()
    );
}

#[test]
fn versions_are_enforced() {
    let pki = Pki::new();
    let (ca_file, ca, ca_key) = pki.ca("ca");
    let server = pki.issue("server", ExtendedKeyUsagePurpose::ServerAuth, &ca, &ca_key);
    let tls13_only = TlsServerSettings {
        min_version: Some(TlsVersion::V1_3),
        ..server_settings(&server)
    };
    let tls12_client = TlsClientSettings {
        ca_file: text(&ca_file),
        max_version: Some(TlsVersion::V1_2),
        ..Default::default()
    };
    let result = handshake(
        tls12_client.build_rustls().unwrap().unwrap(),
        tls13_only.build_rustls().unwrap(),
        localhost(),
    );
    assert!(
        result.is_err(),
        "a TLS 1.2-only client must not reach a TLS 1.3-only server"
    );

    let tls12_server = TlsServerSettings {
        max_version: Some(TlsVersion::V1_2),
        cipher_suites: vec!["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".into()],
        curve_preferences: vec!["P256".into()],
        ..server_settings(&server)
    };
    handshake(
        tls12_client.build_rustls().unwrap().unwrap(),
        tls12_server.build_rustls().unwrap(),
        localhost(),
    )
    .unwrap();

    let err = TlsClientSettings {
        min_version: Some(TlsVersion::V1_0),
        ..Default::default()
    }
    .build_rustls()
    .unwrap_err();
    assert!(
        err.to_string().contains("TLS 1.0 is not supported"),
        "{err}"
    );
    let err = TlsServerSettings {
        min_version: Some(TlsVersion::V1_3),
        max_version: Some(TlsVersion::V1_2),
        ..server_settings(&server)
    }
    .build_rustls()
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "min_version 1.3 is greater than max_version 1.2"
    );
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let pki = Pki::new();
    let (ca_file, ca, ca_key) = pki.ca("ca");
    let server = pki.issue("server", ExtendedKeyUsagePurpose::ServerAuth, &ca, &ca_key);
    let other = pki.issue("other", ExtendedKeyUsagePurpose::ServerAuth, &ca, &ca_key);
    let not_pem = pki.write("notes.txt", "just some text\n");
    let missing = pki.path("missing.crt");

    let err = TlsServerSettings {
        cert_file: text(&missing),
        ..server_settings(&server)
    }
    .build_rustls()
    .unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::ReadFile {
                field: "cert_file",
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.starts_with("cannot read cert_file \""), "{message}");
    assert!(message.contains("missing.crt"), "{message}");

    let err = TlsServerSettings {
        cert_file: text(&not_pem),
        ..server_settings(&server)
    }
    .build_rustls()
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("no PEM certificate found in cert_file"),
        "{err}"
    );
    assert!(err.contains("notes.txt"), "{err}");

    let err = TlsServerSettings {
        key_file: text(&server.cert),
        ..server_settings(&server)
    }
    .build_rustls()
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("no private key found in key_file"), "{err}");

    let err = TlsServerSettings {
        key_file: text(&other.key),
        ..server_settings(&server)
    }
    .build_rustls()
    .unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("other.key") && message.contains("server.crt"),
        "{message}"
    );
    assert!(message.contains("does not match"), "{message}");

    let err = TlsServerSettings::default()
        .build_rustls()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a TLS server needs a certificate: set cert_file"),
        "{err}"
    );

    let err = TlsClientSettings {
        cert_file: text(&server.cert),
        ..Default::default()
    }
    .build_rustls()
    .unwrap_err()
    .to_string();
    assert!(err.contains("needs its private key"), "{err}");

    let err = TlsClientSettings {
        ca_file: text(&ca_file),
        ca_pem: Some("-----BEGIN CERTIFICATE-----".into()),
        ..Default::default()
    }
    .build_rustls()
    .unwrap_err()
    .to_string();
    assert_eq!(err, "both ca_file and ca_pem are set; set only one of them");

    let err = TlsClientSettings {
        ca_file: text(&not_pem),
        ..Default::default()
    }
    .build_rustls()
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("no PEM certificate found in ca_file"),
        "{err}"
    );

    let err = TlsClientSettings {
        cipher_suites: vec!["TLS_RSA_WITH_RC4_128_SHA".into()],
        ..Default::default()
    }
    .build_rustls()
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("unsupported cipher suite \"TLS_RSA_WITH_RC4_128_SHA\"; supported: "),
        "{err}"
    );
    assert!(
        err.contains("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        "{err}"
    );

    let err = TlsClientSettings {
        curve_preferences: vec!["P521".into()],
        ..Default::default()
    }
    .build_rustls()
    .unwrap_err()
    .to_string();
    assert!(err.contains("unsupported curve \"P521\""), "{err}");
}

#[test]
fn system_roots_are_used_without_a_ca() {
    // This machine has a CA bundle, so a default client builds with the system's roots.
    let client = TlsClientSettings::default().build_rustls().unwrap();
    assert!(client.is_some());
}

#[test]
fn reload_interval_serves_a_rotated_certificate_to_new_handshakes() {
    let pki = Pki::new();
    let (old_ca_file, old_ca, old_ca_key) = pki.ca("old-ca");
    let (new_ca_file, new_ca, new_ca_key) = pki.ca("new-ca");
    let server = pki.issue(
        "server",
        ExtendedKeyUsagePurpose::ServerAuth,
        &old_ca,
        &old_ca_key,
    );
    let server_config = TlsServerSettings {
        reload_interval: Some(threadline_config::settings::GoDuration::from_millis(50)),
        ..server_settings(&server)
    }
    .build_rustls()
    .unwrap();
    let client = |ca: &Path| {
        TlsClientSettings {
            ca_file: text(ca),
            ..Default::default()
        }
        .build_rustls()
        .unwrap()
        .unwrap()
    };
    handshake(client(&old_ca_file), server_config.clone(), localhost()).unwrap();

    // cert-manager rewrites both files in place; the same server config serves the new pair.
    let rotated = pki.issue(
        "rotated",
        ExtendedKeyUsagePurpose::ServerAuth,
        &new_ca,
        &new_ca_key,
    );
    std::fs::copy(&rotated.cert, &server.cert).unwrap();
    std::fs::copy(&rotated.key, &server.key).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(80));
    handshake(client(&new_ca_file), server_config.clone(), localhost()).unwrap();
    assert!(handshake(client(&old_ca_file), server_config.clone(), localhost()).is_err());

    // A half-written rotation (a key that does not match) keeps the last good pair.
    let other = pki.issue(
        "other",
        ExtendedKeyUsagePurpose::ServerAuth,
        &old_ca,
        &old_ca_key,
    );
    std::fs::copy(&other.key, &server.key).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(80));
    handshake(client(&new_ca_file), server_config, localhost()).unwrap();
}
