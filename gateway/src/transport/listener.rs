//! Connections before HTTP: how many the replica holds in all and per
//! client address, how long a request head may take, and the serve loop
//! that applies both to plain and TLS listeners.
//!
//! Why here and not in a middleware: an attacker who opens sockets and
//! says nothing never reaches a middleware. Counting at accept time, and
//! a header-read deadline in hyper (which also closes idle keep-alive
//! connections), is what keeps file descriptors and memory for the
//! dashboards. Over a limit, the socket is closed at once: nothing is read
//! from it and nothing is allocated for it.

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tower::ServiceExt;

/// Connection limits shared by every listener of the replica.
#[derive(Debug)]
pub struct ConnLimits {
    /// Most connections held at once (`MAX_CONNECTIONS`).
    max_total: usize,
    /// Most connections held at once from one address (`MAX_CONNECTIONS_PER_IP`).
    max_per_ip: usize,
    /// Connections held now.
    total: AtomicUsize,
    /// Connections held now, per address (entries removed at zero).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was not admitted (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `MAX_CONNECTIONS` reached.
    Total,
    /// `MAX_CONNECTIONS_PER_IP` reached for this address.
    PerIp,
    /// `MAX_TLS_HANDSHAKES` in flight.
    TlsHandshakes,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
            Refusal::TlsHandshakes => "max_tls_handshakes",
        }
    }
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for a connection from `ip`, released when the permit
    /// drops.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, Refusal> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(Refusal::Total);
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(ConnPermit {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn release(&self, ip: IpAddr) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One admitted connection's slot.
#[derive(Debug)]
pub struct ConnPermit {
    /// Where the slot is given back.
    limits: Arc<ConnLimits>,
    /// The address it counts against.
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.limits.release(self.ip);
    }
}

/// A connection that holds its slot for as long as it lives.
pub struct Admitted<Io> {
    /// The socket (plain or TLS).
    io: Io,
    /// Its slot.
    _permit: ConnPermit,
}

impl<Io> Admitted<Io> {
    pub fn new(io: Io, permit: ConnPermit) -> Self {
        Admitted {
            io,
            _permit: permit,
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Admitted<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Admitted<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Where admitted connections come from (plain TCP or TLS).
pub trait Incoming: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next admitted connection and its peer.
    fn next(&mut self) -> impl Future<Output = (Admitted<Self::Io>, SocketAddr)> + Send;
}

/// Admitted plain TCP connections.
pub struct PlainIncoming {
    /// The listening socket.
    tcp: tokio::net::TcpListener,
    /// The limits to admit against.
    limits: Arc<ConnLimits>,
}

impl PlainIncoming {
    pub fn new(tcp: tokio::net::TcpListener, limits: Arc<ConnLimits>) -> Self {
        PlainIncoming { tcp, limits }
    }
}

impl Incoming for PlainIncoming {
    type Io = tokio::net::TcpStream;

    async fn next(&mut self) -> (Admitted<Self::Io>, SocketAddr) {
        loop {
            let (stream, peer) = match self.tcp.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.limits.admit(peer.ip()) {
                Ok(permit) => {
                    // Frames are small and already coalesced per write:
                    // never let Nagle hold one back waiting for an ACK.
                    let _ = stream.set_nodelay(true);
                    return (Admitted::new(stream, permit), peer);
                }
                Err(why) => refused(why, stream),
            }
        }
    }
}

/// Closes a connection over a limit at once (RST rather than a lingering
/// FIN-WAIT: the attacker gets no free kernel buffers either).
pub fn refused(why: Refusal, stream: tokio::net::TcpStream) {
    crate::observability::metrics::edge_refused(why.label());
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// HTTP settings of the serve loop.
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    /// A request head must arrive within this; also how long a keep-alive
    /// connection may sit idle between requests.
    pub header_read: Duration,
}

/// Serves `router` on connections from `incoming` until `stop` completes,
/// then asks every connection to finish (graceful) and waits for them.
pub async fn serve<I: Incoming>(
    mut incoming: I,
    router: axum::Router,
    timeouts: HttpTimeouts,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let (closing_tx, closing_rx) = watch::channel(false);
    let live = Arc::new(());
    // HTTP/1 only (WebSocket upgrades, Engine.IO polling): hyper's own
    // builder, whose header-read timer starts as soon as the connection is
    // served, before any byte arrives.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .keep_alive(true);
    let builder = Arc::new(builder);
    tokio::pin!(stop);
    loop {
        let (io, peer) = tokio::select! {
            _ = &mut stop => break,
            next = incoming.next() => next,
        };
        let service = router.clone().map_request(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(axum::body::Body::new)
            },
        );
        let hyper_service = TowerToHyperService::new(service);
        let mut closing = closing_rx.clone();
        let (builder, live) = (builder.clone(), live.clone());
        tokio::spawn(async move {
            let _live = live;
            let conn = builder
                .serve_connection(TokioIo::new(io), hyper_service)
                .with_upgrades();
            tokio::pin!(conn);
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::trace!(error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = closing.changed() => conn.as_mut().graceful_shutdown(),
                }
            }
        });
    }
    drop(incoming);
    let _ = closing_tx.send(true);
    // Every connection task holds a clone of `live`: wait for the last.
    while Arc::strong_count(&live) > 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_per_address_and_in_all() {
        let limits = ConnLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refusal::PerIp);
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), Refusal::Total);
        drop(a1);
        let _b2 = limits.admit(b).unwrap();
        assert_eq!(limits.held(), 3);
    }

    #[test]
    fn slots_are_given_back_and_entries_removed() {
        let limits = ConnLimits::new(10, 10);
        let ip: IpAddr = "::1".parse().unwrap();
        let permits: Vec<_> = (0..10).map(|_| limits.admit(ip).unwrap()).collect();
        drop(permits);
        assert_eq!(limits.held(), 0);
        assert!(limits.per_ip.lock().unwrap().is_empty());
    }
}
