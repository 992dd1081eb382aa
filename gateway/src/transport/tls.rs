//! TLS served directly (WSS and HTTPS) when `TLS_CERT_FILE` and
//! `TLS_KEY_FILE` are set, for deployments without a TLS-terminating proxy.
//!
//! [`TlsListener`] plugs into `axum::serve` like a `TcpListener`, so the
//! rest of the server (routes, drain) is the same with or without TLS.
//! Handshakes run in their own tasks: a client that stalls mid-handshake
//! holds up nobody, and gives up after `TLS_HANDSHAKE_TIMEOUT_SECS`; at
//! most `MAX_TLS_HANDSHAKES` run at once, and connections are counted
//! against the edge limits before their handshake starts.

use crate::transport::listener::{refused, Admitted, ConnLimits, Incoming, Refusal};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Finished handshakes waiting for the server to pick them up.
const READY_BACKLOG: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS_CERT_FILE / TLS_KEY_FILE: {0}")]
    Files(#[from] server_tls::PemError),
}

/// Builds the acceptor from PEM files (a certificate chain, a private key).
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let config = server_tls::server_config(cert_file, key_file, &[b"http/1.1"])?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How the TLS listener bounds handshakes.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeBounds {
    /// How long one handshake may take.
    pub timeout: Duration,
    /// Handshakes in flight at once; connections past it are closed.
    pub in_flight: usize,
}

/// TCP accept loop plus handshakes, yielding finished TLS streams. The
/// loop runs until the server stops taking connections (it drops this),
/// not when a drain starts: a draining replica still answers 503 over TLS.
pub struct TlsListener {
    /// Streams whose handshake finished, with their slots.
    ready: mpsc::Receiver<(Admitted<TlsStream<TcpStream>>, SocketAddr)>,
}

impl TlsListener {
    /// Accepts on `tcp`, admitting against `limits`.
    pub fn new(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        limits: Arc<ConnLimits>,
        bounds: HandshakeBounds,
    ) -> TlsListener {
        let (tx, ready) = mpsc::channel(READY_BACKLOG);
        tokio::spawn(accept_loop(tcp, acceptor, tx, limits, bounds));
        TlsListener { ready }
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(Admitted<TlsStream<TcpStream>>, SocketAddr)>,
    limits: Arc<ConnLimits>,
    bounds: HandshakeBounds,
) {
    let in_flight = Arc::new(Semaphore::new(bounds.in_flight));
    loop {
        let (stream, peer) = tokio::select! {
            _ = tx.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match limits.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(why) => {
                refused(why, stream);
                continue;
            }
        };
        let Ok(handshaking) = in_flight.clone().try_acquire_owned() else {
            refused(Refusal::TlsHandshakes, stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = tokio::time::timeout(bounds.timeout, acceptor.accept(stream)).await;
            drop(handshaking);
            match result {
                Ok(Ok(tls)) => {
                    let _ = tx.send((Admitted::new(tls, permit), peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl Incoming for TlsListener {
    type Io = TlsStream<TcpStream>;

    async fn next(&mut self) -> (Admitted<Self::Io>, SocketAddr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The accept loop ended: accept nothing more.
            None => std::future::pending().await,
        }
    }
}
