//! TLS for the bridge port (`BRIDGE_TLS_CERT_FILE` / `BRIDGE_TLS_KEY_FILE`):
//! terminals on other machines send keys and account data across a network.
//! The EA's `InpTls` input makes it call `SocketTlsHandshake`; the terminal
//! checks the certificate against the Windows certificate store, so a
//! private CA must be imported there (see the README).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read BRIDGE_TLS_CERT_FILE {path}: {source}")]
    Cert {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot read BRIDGE_TLS_KEY_FILE {path}: {source}")]
    Key {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("BRIDGE_TLS_CERT_FILE {0} holds no certificate")]
    NoCert(String),
    #[error("set both BRIDGE_TLS_CERT_FILE and BRIDGE_TLS_KEY_FILE, or neither")]
    Half,
    #[error("invalid bridge TLS certificate or key: {0}")]
    Config(#[from] rustls::Error),
}

/// The acceptor for a certificate chain and key in PEM files.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: cert_file.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(cert_file.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Key {
        path: key_file.display().to_string(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
