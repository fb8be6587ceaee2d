//! TLS settings (upstream `configtls`) and builders for rustls client and server configs.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedProtocolVersion};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Deserializer};

use super::duration::GoDuration;

/// What went wrong building a TLS configuration. Messages name the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {field} {path:?}: {source}")]
    ReadFile {
        field: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no PEM certificate found in {origin}")]
    NoCertificate { origin: String },
    #[error(
        "no private key found in {origin}: expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \
         \"EC PRIVATE KEY\" block"
    )]
    NoPrivateKey { origin: String },
    #[error("invalid PEM in {origin}: {reason}")]
    InvalidPem { origin: String, reason: String },
    #[error("invalid private key in {origin}: {reason}")]
    InvalidKey { origin: String, reason: String },
    #[error("invalid CA certificate in {origin}: {reason}")]
    InvalidCaCertificate { origin: String, reason: String },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: String, key: String },
    #[error("both {0} and {1} are set; set only one of them")]
    Conflict(&'static str, &'static str),
    #[error("{0}")]
    Missing(&'static str),
    #[error(
        "TLS {0} is not supported: only TLS 1.2 and 1.3 are implemented; use min_version \"1.2\" \
         or \"1.3\""
    )]
    UnsupportedVersion(TlsVersion),
    #[error("min_version {min} is greater than max_version {max}")]
    VersionRange { min: TlsVersion, max: TlsVersion },
    #[error("unsupported cipher suite {name:?}; supported: {supported}")]
    UnsupportedCipherSuite { name: String, supported: String },
    #[error("unsupported curve {0:?} in curve_preferences; supported: X25519, P256, P384")]
    UnsupportedCurve(String),
    #[error("cannot load the system's CA certificates: {0}")]
    SystemRoots(String),
    #[error("invalid server name {0:?} for TLS")]
    InvalidServerName(String),
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS protocol version as upstream writes it: `"1.0"`, `"1.1"`, `"1.2"` or `"1.3"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_0,
    V1_1,
    V1_2,
    V1_3,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_0 => "1.0",
            TlsVersion::V1_1 => "1.1",
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TlsVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "1.0" | "1" => Ok(TlsVersion::V1_0),
            "1.1" => Ok(TlsVersion::V1_1),
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            other => Err(format!(
                "unknown TLS version {other:?}; expected one of: \"1.0\", \"1.1\", \"1.2\", \"1.3\""
            )),
        }
    }
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Unquoted `1.2` in YAML is a number; the lenient decoder hands it over as text.
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Client-side TLS (upstream `configtls.ClientConfig`), used under an exporter's `tls:`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientSettings {
    /// Do not use TLS at all (plaintext gRPC/HTTP). Default false.
    pub insecure: bool,
    /// Use TLS but do not verify the server's certificate chain and host name. Default false.
    /// For testing only.
    pub insecure_skip_verify: bool,
    /// Path to the CA certificate(s) (PEM) that verify the server. Default: the system's CAs.
    pub ca_file: Option<String>,
    /// The CA certificate(s) as PEM text, instead of `ca_file`.
    pub ca_pem: Option<String>,
    /// Path to this client's certificate (PEM), for mutual TLS. Needs `key_file`.
    pub cert_file: Option<String>,
    /// This client's certificate as PEM text, instead of `cert_file`.
    pub cert_pem: Option<String>,
    /// Path to this client's private key (PEM), for mutual TLS.
    pub key_file: Option<String>,
    /// This client's private key as PEM text, instead of `key_file`.
    pub key_pem: Option<String>,
    /// Server name to verify and send as SNI instead of the endpoint's host.
    pub server_name_override: Option<String>,
    /// Lowest TLS version offered: "1.2" (default) or "1.3".
    pub min_version: Option<TlsVersion>,
    /// Highest TLS version offered: "1.2" or "1.3" (default).
    pub max_version: Option<TlsVersion>,
    /// TLS 1.2 cipher suites to offer, by Go name (e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256).
    /// Default: a safe built-in list. TLS 1.3 suites are always offered.
    pub cipher_suites: Vec<String>,
    /// Also allow insecure cipher suites. Accepted for compatibility; none are implemented.
    pub include_insecure_cipher_suites: bool,
    /// Key exchange groups in order of preference: X25519, P256, P384. Default: all of them.
    pub curve_preferences: Vec<String>,
    /// Trust the system's CAs in addition to `ca_file`/`ca_pem`. Default false.
    pub include_system_ca_certs_pool: bool,
    /// How often to reload the certificates. Accepted; certificates are read at start-up.
    pub reload_interval: Option<GoDuration>,
}

/// Server-side TLS (upstream `configtls.ServerConfig`), used under a receiver's `tls:`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsServerSettings {
    /// Path to the server certificate chain (PEM). Required unless `cert_pem` is set.
    pub cert_file: Option<String>,
    /// The server certificate chain as PEM text, instead of `cert_file`.
    pub cert_pem: Option<String>,
    /// Path to the server's private key (PEM). Required unless `key_pem` is set.
    pub key_file: Option<String>,
    /// The server's private key as PEM text, instead of `key_file`.
    pub key_pem: Option<String>,
    /// Path to the CA certificate(s) (PEM) that client certificates must chain to. Setting it
    /// turns on mutual TLS: clients without a valid certificate are refused.
    pub client_ca_file: Option<String>,
    /// Reload `client_ca_file` when it changes. Accepted; it is read at start-up.
    pub client_ca_file_reload: bool,
    /// Accepted for compatibility with upstream; a server verifies clients with
    /// `client_ca_file`.
    pub ca_file: Option<String>,
    /// Accepted for compatibility with upstream; see `ca_file`.
    pub ca_pem: Option<String>,
    /// Accepted for compatibility with upstream; see `ca_file`.
    pub include_system_ca_certs_pool: bool,
    /// Lowest TLS version accepted: "1.2" (default) or "1.3".
    pub min_version: Option<TlsVersion>,
    /// Highest TLS version accepted: "1.2" or "1.3" (default).
    pub max_version: Option<TlsVersion>,
    /// TLS 1.2 cipher suites to accept, by Go name. Default: a safe built-in list.
    pub cipher_suites: Vec<String>,
    /// Also allow insecure cipher suites. Accepted for compatibility; none are implemented.
    pub include_insecure_cipher_suites: bool,
    /// Key exchange groups in order of preference: X25519, P256, P384. Default: all of them.
    pub curve_preferences: Vec<String>,
    /// How often to re-read `cert_file` and `key_file` (e.g. `1m`), so that a rotated
    /// certificate (cert-manager) is served to new connections without a restart; open
    /// connections stay up. Unset or `0`: read once at start-up, as upstream.
    pub reload_interval: Option<GoDuration>,
}

/// `Some("")` is written by configs that clear a setting; it means unset.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

impl TlsClientSettings {
    /// The rustls client configuration, or `None` when `insecure` is set (plaintext).
    ///
    /// Server certificates are verified against `ca_file`/`ca_pem`, or the system's CAs when
    /// neither is set (plus the system's when `include_system_ca_certs_pool`), unless
    /// `insecure_skip_verify`. A client certificate is presented when `cert_*` and `key_*` are
    /// set. ALPN is left to the caller.
    pub fn build_rustls(&self) -> Result<Option<rustls::ClientConfig>, TlsError> {
        if self.insecure {
            return Ok(None);
        }
        let provider = crypto_provider(&self.cipher_suites, &self.curve_preferences)?;
        let versions = protocol_versions(self.min_version, self.max_version)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipServerVerification { provider }))
        } else {
            builder.with_root_certificates(self.root_store()?)
        };
        let cert = read_source(&self.cert_file, &self.cert_pem, "cert_file", "cert_pem")?;
        let key = read_source(&self.key_file, &self.key_pem, "key_file", "key_pem")?;
        let config = match (cert, key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let (chain, private_key) = parse_cert_and_key(&cert, &key)?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|e| key_error(e, &cert, &key))?
            }
            (Some(_), None) => {
                return Err(TlsError::Missing(
                    "a client certificate (cert_file or cert_pem) needs its private key: set \
                     key_file or key_pem",
                ))
            }
            (None, Some(_)) => {
                return Err(TlsError::Missing(
                    "a client private key (key_file or key_pem) needs its certificate: set \
                     cert_file or cert_pem",
                ))
            }
        };
        Ok(Some(config))
    }

    /// The name to verify the server certificate against: `server_name_override` if set, else
    /// `host` (a DNS name or an IP address).
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = set(&self.server_name_override).unwrap_or(host);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(name.to_string())
            .map_err(|_| TlsError::InvalidServerName(name.to_string()))
    }

    fn root_store(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        let ca = read_source(&self.ca_file, &self.ca_pem, "ca_file", "ca_pem")?;
        let has_ca = ca.is_some();
        if let Some(ca) = ca {
            add_ca_certificates(&mut roots, &ca)?;
        }
        if !has_ca || self.include_system_ca_certs_pool {
            add_system_roots(&mut roots)?;
        }
        Ok(roots)
    }
}

impl TlsServerSettings {
    /// The rustls server configuration. With `client_ca_file`, clients must present a
    /// certificate that chains to it (mutual TLS). ALPN is left to the caller.
    pub fn build_rustls(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = crypto_provider(&self.cipher_suites, &self.curve_preferences)?;
        let versions = protocol_versions(self.min_version, self.max_version)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)?;
        let builder = match set(&self.client_ca_file) {
            Some(path) => {
                let source = read_file("client_ca_file", path)?;
                let mut roots = RootCertStore::empty();
                add_ca_certificates(&mut roots, &source)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsError::InvalidCaCertificate {
                            origin: source.origin.clone(),
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let interval = self
            .reload_interval
            .and_then(GoDuration::non_zero)
            // Only files change; PEM text in the config does not.
            .filter(|_| set(&self.cert_file).is_some() || set(&self.key_file).is_some());
        let Some(interval) = interval else {
            let (cert, key) = (
                read_source(&self.cert_file, &self.cert_pem, "cert_file", "cert_pem")?,
                read_source(&self.key_file, &self.key_pem, "key_file", "key_pem")?,
            );
            let cert = cert.ok_or(TlsError::Missing(
                "a TLS server needs a certificate: set cert_file (or cert_pem)",
            ))?;
            let key = key.ok_or(TlsError::Missing(
                "a TLS server needs a private key: set key_file (or key_pem)",
            ))?;
            let (chain, private_key) = parse_cert_and_key(&cert, &key)?;
            return builder
                .with_single_cert(chain, private_key)
                .map_err(|e| key_error(e, &cert, &key));
        };
        let resolver = super::tls_reload::ReloadingCert::new(
            (&self.cert_file, &self.cert_pem),
            (&self.key_file, &self.key_pem),
            interval,
            provider,
        )?;
        Ok(builder.with_cert_resolver(Arc::new(resolver)))
    }
}

/// PEM bytes and a description of where they came from, for error messages. Equal when the
/// bytes are (the origin names the same setting).
#[derive(PartialEq, Eq)]
pub(super) struct PemSource {
    pub(super) bytes: Vec<u8>,
    pub(super) origin: String,
}

fn read_file(field: &'static str, path: &str) -> Result<PemSource, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::ReadFile {
        field,
        path: path.to_string(),
        source,
    })?;
    Ok(PemSource {
        bytes,
        origin: format!("{field} {path:?}"),
    })
}

pub(super) fn read_source(
    file: &Option<String>,
    pem: &Option<String>,
    file_field: &'static str,
    pem_field: &'static str,
) -> Result<Option<PemSource>, TlsError> {
    match (set(file), set(pem)) {
        (Some(_), Some(_)) => Err(TlsError::Conflict(file_field, pem_field)),
        (Some(path), None) => read_file(file_field, path).map(Some),
        (None, Some(pem)) => Ok(Some(PemSource {
            bytes: pem.as_bytes().to_vec(),
            origin: pem_field.to_string(),
        })),
        (None, None) => Ok(None),
    }
}

fn parse_certificates(source: &PemSource) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&source.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::InvalidPem {
            origin: source.origin.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            origin: source.origin.clone(),
        });
    }
    Ok(certs)
}

fn parse_private_key(source: &PemSource) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&source.bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            origin: source.origin.clone(),
        },
        other => TlsError::InvalidPem {
            origin: source.origin.clone(),
            reason: other.to_string(),
        },
    })
}

/// The pair as rustls serves it, checked to match.
pub(super) fn certified_key(
    cert: &PemSource,
    key: &PemSource,
    provider: &CryptoProvider,
) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let (chain, private_key) = parse_cert_and_key(cert, key)?;
    rustls::sign::CertifiedKey::from_der(chain, private_key, provider)
        .map_err(|e| key_error(e, cert, key))
}

fn parse_cert_and_key(
    cert: &PemSource,
    key: &PemSource,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    Ok((parse_certificates(cert)?, parse_private_key(key)?))
}

/// Turns rustls' key errors into ones that name the files.
fn key_error(error: rustls::Error, cert: &PemSource, key: &PemSource) -> TlsError {
    match error {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert.origin.clone(),
            key: key.origin.clone(),
        },
        rustls::Error::General(reason) => TlsError::InvalidKey {
            origin: key.origin.clone(),
            reason,
        },
        other => TlsError::Rustls(other),
    }
}

fn add_ca_certificates(roots: &mut RootCertStore, source: &PemSource) -> Result<(), TlsError> {
    for cert in parse_certificates(source)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::InvalidCaCertificate {
                origin: source.origin.clone(),
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

fn add_system_roots(roots: &mut RootCertStore) -> Result<(), TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 && !found.errors.is_empty() {
        let reasons: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(TlsError::SystemRoots(reasons.join("; ")));
    }
    Ok(())
}

fn protocol_versions(
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    let min = min.unwrap_or(TlsVersion::V1_2);
    let max = max.unwrap_or(TlsVersion::V1_3);
    for version in [min, max] {
        if version < TlsVersion::V1_2 {
            return Err(TlsError::UnsupportedVersion(version));
        }
    }
    if min > max {
        return Err(TlsError::VersionRange { min, max });
    }
    let mut versions = Vec::new();
    if max == TlsVersion::V1_3 {
        versions.push(&rustls::version::TLS13);
    }
    if min == TlsVersion::V1_2 {
        versions.push(&rustls::version::TLS12);
    }
    Ok(versions)
}

/// rustls names TLS 1.3 suites `TLS13_*`; Go and upstream configs write `TLS_*`.
fn go_suite_name(suite: &rustls::SupportedCipherSuite) -> String {
    let name = suite
        .suite()
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:?}", suite.suite()));
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// Go also accepts the legacy names without `_SHA256` for the ChaCha20 suites.
fn normalize_suite_name(name: &str) -> String {
    let name = name.trim().to_ascii_uppercase();
    if name.ends_with("CHACHA20_POLY1305") {
        format!("{name}_SHA256")
    } else {
        name
    }
}

/// ring's provider restricted to the configured TLS 1.2 suites and key exchange groups.
fn crypto_provider(
    cipher_suites: &[String],
    curves: &[String],
) -> Result<Arc<CryptoProvider>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !cipher_suites.is_empty() {
        let all = provider.cipher_suites.clone();
        let mut chosen: Vec<rustls::SupportedCipherSuite> = all
            .iter()
            .filter(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)))
            .copied()
            .collect();
        for name in cipher_suites {
            let wanted = normalize_suite_name(name);
            let suite = all
                .iter()
                .find(|s| go_suite_name(s) == wanted)
                .ok_or_else(|| TlsError::UnsupportedCipherSuite {
                    name: name.clone(),
                    supported: all.iter().map(go_suite_name).collect::<Vec<_>>().join(", "),
                })?;
            if !chosen.contains(suite) {
                chosen.push(*suite);
            }
        }
        provider.cipher_suites = chosen;
    }
    if !curves.is_empty() {
        let mut groups: Vec<&'static dyn SupportedKxGroup> = Vec::new();
        for curve in curves {
            let group = match curve.trim().to_ascii_uppercase().as_str() {
                "X25519" => rustls::crypto::ring::kx_group::X25519,
                "P256" | "P-256" | "CURVEP256" => rustls::crypto::ring::kx_group::SECP256R1,
                "P384" | "P-384" | "CURVEP384" => rustls::crypto::ring::kx_group::SECP384R1,
                _ => return Err(TlsError::UnsupportedCurve(curve.clone())),
            };
            groups.push(group);
        }
        provider.kx_groups = groups;
    }
    Ok(Arc::new(provider))
}

/// Accepts any server certificate (`insecure_skip_verify`), while still checking that the
/// handshake is signed by the key in that certificate.
#[derive(Debug)]
struct SkipServerVerification {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SkipServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
