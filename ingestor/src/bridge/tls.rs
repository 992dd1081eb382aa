//! TLS for the bridge port (`BRIDGE_TLS_CERT_FILE` / `BRIDGE_TLS_KEY_FILE`):
//! terminals on other machines send keys and account data across a network.
//! The EA's `InpTls` input makes it call `SocketTlsHandshake`; the terminal
//! checks the certificate against the Windows certificate store, so a
//! private CA must be imported there (see the README).

use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("BRIDGE_TLS_CERT_FILE / BRIDGE_TLS_KEY_FILE: {0}")]
    Files(#[from] server_tls::PemError),
    #[error("set both BRIDGE_TLS_CERT_FILE and BRIDGE_TLS_KEY_FILE, or neither")]
    Half,
}

/// The acceptor for a certificate chain and key in PEM files.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let config = server_tls::server_config(cert_file, key_file, &[])?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
