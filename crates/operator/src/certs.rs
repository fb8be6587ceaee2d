//! The webhook's TLS: a self-generated CA and a serving certificate for the webhook Service's DNS
//! names, valid one year and renewed by the operator 30 days before expiry (or cert-manager's,
//! when installed with `--cert-manager`).

use std::sync::{Arc, RwLock};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// How long a generated certificate is valid.
pub const VALIDITY: Duration = Duration::days(365);
/// Renew when less than this is left.
pub const RENEW_BEFORE: Duration = Duration::days(30);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the webhook certificate or key is not valid PEM: {0}")]
    Pem(String),
    #[error("the webhook certificate is not usable by TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A CA and the serving certificate it signed, PEM encoded.
#[derive(Clone, Debug)]
pub struct WebhookCertificate {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// RFC 3339; kept beside the PEMs (in the Secret's annotations) so renewal needs no parsing.
    pub not_after: OffsetDateTime,
}

/// The DNS names a Service `service` in `namespace` is reached by.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Generates a new CA and a serving certificate for `dns_names`, valid from now for [`VALIDITY`].
pub fn generate(dns_names: &[String]) -> Result<WebhookCertificate, CertError> {
    let now = OffsetDateTime::now_utc();
    let not_after = now + VALIDITY;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "threadline-operator-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now - Duration::minutes(5);
    ca_params.not_after = not_after + Duration::days(1);
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;

    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    params.not_before = now - Duration::minutes(5);
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    Ok(WebhookCertificate {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// Whether a certificate expiring at `not_after` is due for renewal.
pub fn needs_renewal(not_after: OffsetDateTime) -> bool {
    not_after - OffsetDateTime::now_utc() < RENEW_BEFORE
}

/// A rustls certificate from PEM chain and key.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Pem(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::Pem("no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| CertError::Pem(e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(CertifiedKey::from_der(chain, key, &provider)?)
}

/// The serving certificate, replaceable while the server runs (rotation without a restart).
#[derive(Debug)]
pub struct ReloadableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(key)),
        })
    }

    pub fn replace(&self, key: CertifiedKey) {
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|k| Arc::clone(&k))
    }
}
