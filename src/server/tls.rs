//! TLS termination: certificates loaded from PEM files and chosen by SNI.
//!
//! A TLS listener serves whatever `Arc<ServerConfig>` its `Mode`
//! holds; a reload builds a new one here and swaps it in, so a bad file keeps
//! the old certificates serving.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::config::{CertFiles, Config, ConfigError, TlsSettings};

/// ALPN protocols offered, in preference order.
pub(crate) const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Builds the rustls configuration of a TLS listener: TLS 1.2 and 1.3 only,
/// ALPN `h2` then `http/1.1`, a certificate per SNI name.
///
/// Errors point at the `cert` or `key` value in the config file that names the bad file.
pub(crate) fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = Arc::new(ring::default_provider());
    let certs = settings
        .certs
        .iter()
        .map(|files| certified_key(files, &provider))
        .collect::<Result<Vec<_>, _>>()?;
    let at = settings
        .certs
        .first()
        .map(|c| c.cert_at.clone())
        .unwrap_or_default();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError::at_location(&at, format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs }));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Loads every TLS listener's certificates once, as `weir run` would: for
/// `weir check`, which reports the same errors without binding anything.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    for listener in &config.server.listen {
        if let Some(tls) = &listener.tls {
            server_config(tls)?;
        }
    }
    Ok(())
}

/// Loads one certificate chain and its key and checks that they belong together.
fn certified_key(
    files: &CertFiles,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, ConfigError> {
    let cert_err = |message: String| ConfigError::at_location(&files.cert_at, message);
    let key_err = |message: String| ConfigError::at_location(&files.key_at, message);

    let pem = read(&files.cert).map_err(cert_err)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("{}: bad PEM: {e}", files.cert.display())))?;
    let Some(leaf) = chain.first() else {
        return Err(cert_err(format!(
            "{}: no CERTIFICATE block found",
            files.cert.display()
        )));
    };
    webpki::EndEntityCert::try_from(leaf).map_err(|e| {
        cert_err(format!(
            "{}: not a valid X.509 certificate: {e}",
            files.cert.display()
        ))
    })?;

    let pem = read(&files.key).map_err(key_err)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        key_err(format!(
            "{}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            files.key.display()
        ))
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        key_err(format!(
            "{}: does not fit {}: {e}",
            files.key.display(),
            files.cert.display()
        ))
    })?;
    Ok(Arc::new(certified))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Picks the first certificate valid for the client's SNI name; the first
/// certificate of the listener when none is, or when the client sent no name.
///
/// Names come from the certificates themselves (their SANs, wildcards
/// included, as webpki checks them), so the config needs no name list.
#[derive(Debug)]
struct SniResolver {
    /// Never empty (validation requires a certificate).
    certs: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn find(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        let name = ServerName::try_from(sni).ok()?;
        // A linear scan parsing each leaf: a listener has a handful of
        // certificates and this costs far less than the handshake itself.
        self.certs.iter().find(|ck| {
            ck.end_entity_cert()
                .ok()
                .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|sni| self.find(sni))
            .or_else(|| self.certs.first())
            .cloned()
    }
}
