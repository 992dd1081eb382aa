//! Serving WSS/HTTPS directly, without a TLS-terminating proxy.

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsConfig {
    /// Serve WSS/HTTPS directly with this certificate (PEM)...
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// ...and this private key (PEM).
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
}
