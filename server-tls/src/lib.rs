//! A TLS server configuration read from PEM files (a certificate chain and
//! a private key), shared by the gateway (`TLS_CERT_FILE`/`TLS_KEY_FILE`)
//! and the ingestor's bridge port (`BRIDGE_TLS_*`), so both read keys and
//! pick protocol versions the same way. Each caller wraps [`PemError`]
//! with the names of its own settings.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Why the files did not make a server configuration.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read the certificate file {path}: {source}")]
    Cert {
        /// The certificate file.
        path: String,
        /// What the PEM reader said.
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot read the private key file {path}: {source}")]
    Key {
        /// The key file.
        path: String,
        /// What the PEM reader said.
        source: rustls::pki_types::pem::Error,
    },
    #[error("the certificate file {0} holds no certificate")]
    NoCert(String),
    #[error("invalid certificate or key: {0}")]
    Config(#[from] rustls::Error),
}

/// A server configuration for the chain in `cert_file` and the key in
/// `key_file`: safe default protocol versions, no client certificates,
/// the given ALPN protocols.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, PemError> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| PemError::Cert {
            path: cert_file.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCert(cert_file.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| PemError::Key {
        path: key_file.display().to_string(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
