//! Server certificates that follow their files (`tls::reload_interval`, as upstream `configtls`):
//! cert-manager and the like rewrite `cert_file`/`key_file` in place, and new TLS handshakes
//! pick the new pair up without a restart. Connections already open keep the session they
//! negotiated; nothing is closed.
//!
//! As upstream, the check is lazy: a handshake that finds the last check older than the
//! interval re-reads both files (a few KiB) and, if they changed and parse as a matching pair,
//! serves them from then on. A pair that does not parse or match (a half-written rotation) is
//! logged and the previous one kept, then tried again an interval later.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::tls::{certified_key, read_source, PemSource, TlsError};

/// A certificate resolver that re-reads its files at most once per `interval`.
pub struct ReloadingCert {
    files: Files,
    interval: Duration,
    provider: Arc<CryptoProvider>,
    state: RwLock<State>,
}

struct State {
    key: Arc<CertifiedKey>,
    /// What `key` was built from, so that unchanged files are not parsed again.
    source: (PemSource, PemSource),
    checked: Instant,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.files.cert_file)
            .field("key_file", &self.files.key_file)
            .field("interval", &self.interval)
            .finish()
    }
}

impl ReloadingCert {
    /// Loads the pair once; an error here fails the server's start, as without reloading.
    pub fn new(
        cert: (&Option<String>, &Option<String>),
        key: (&Option<String>, &Option<String>),
        interval: Duration,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let files = Files {
            cert_file: cert.0.clone(),
            cert_pem: cert.1.clone(),
            key_file: key.0.clone(),
            key_pem: key.1.clone(),
        };
        let source = files.read()?;
        let key = files.parse(&source, &provider)?;
        Ok(ReloadingCert {
            files,
            interval,
            provider,
            state: RwLock::new(State {
                key,
                source,
                checked: Instant::now(),
            }),
        })
    }

    /// The pair to serve now, re-reading the files when the last check is `interval` old.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        {
            let state = self.state.read().ok()?;
            if state.checked.elapsed() < self.interval {
                return Some(state.key.clone());
            }
        }
        let mut state = self.state.write().ok()?;
        if state.checked.elapsed() < self.interval {
            return Some(state.key.clone());
        }
        state.checked = Instant::now();
        let reloaded = self.files.read().and_then(|source| {
            if source == state.source {
                return Ok(None);
            }
            let key = self.files.parse(&source, &self.provider)?;
            Ok(Some((key, source)))
        });
        match reloaded {
            Ok(None) => {}
            Ok(Some((key, source))) => {
                tracing::info!(cert_file = ?self.files.cert_file, "reloaded the TLS certificate");
                state.key = key;
                state.source = source;
            }
            Err(error) => tracing::warn!(
                %error,
                "cannot reload the TLS certificate; still serving the previous one"
            ),
        }
        Some(state.key.clone())
    }
}

/// Where the pair comes from.
struct Files {
    cert_file: Option<String>,
    cert_pem: Option<String>,
    key_file: Option<String>,
    key_pem: Option<String>,
}

impl Files {
    fn read(&self) -> Result<(PemSource, PemSource), TlsError> {
        let cert = read_source(&self.cert_file, &self.cert_pem, "cert_file", "cert_pem")?.ok_or(
            TlsError::Missing("a TLS server needs a certificate: set cert_file (or cert_pem)"),
        )?;
        let key = read_source(&self.key_file, &self.key_pem, "key_file", "key_pem")?.ok_or(
            TlsError::Missing("a TLS server needs a private key: set key_file (or key_pem)"),
        )?;
        Ok((cert, key))
    }

    fn parse(
        &self,
        (cert, key): &(PemSource, PemSource),
        provider: &CryptoProvider,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        certified_key(cert, key, provider).map(Arc::new)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}
