//! The real-terminal source: a TCP (or TLS) server that the MQL5 Expert
//! Advisor (`ingestor/mql5/MT5Bridge.mq5`) connects to and streams NDJSON
//! into, as `ingestor/mql5/PROTOCOL.md` describes.
//!
//! MT5 can only open outgoing sockets, so the ingestor listens and the
//! terminal dials in. Each connection authenticates with its first line
//! ([`keys`], [`session`]), is read by its own task ([`conn`]) and hands
//! what it converted ([`message`], [`clock`]) to the [`outlet`], which
//! alone waits for NATS. [`capture`] keeps the raw lines for replay.

pub mod capture;
pub mod clock;
mod conn;
pub mod keys;
pub mod message;
pub mod outlet;
pub mod session;
pub mod tls;

use crate::metrics::Metrics;
use crate::publisher::{Prepared, PublishError, Publisher};
use keys::Keys;
use message::Outbound;
use outlet::OutletConfig;
use protocol::Channel;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Default longest line. A positions snapshot of a few hundred positions
/// is well under this; anything longer is a broken or hostile sender.
pub const MAX_LINE: usize = 1024 * 1024;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5555";

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
}

/// Everything the bridge needs, checked at start.
#[derive(Clone)]
pub struct BridgeConfig {
    /// Address terminals connect to.
    pub listen: SocketAddr,
    /// Terminal keys.
    pub keys: Keys,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Longest line accepted.
    pub max_line: usize,
    /// Outlet buffering and throttle.
    pub outlet: OutletConfig,
    /// How long a new connection has to send `hello`.
    pub hello_timeout: Duration,
    /// Directory for the raw capture, when on.
    pub raw_dir: Option<PathBuf>,
}

impl BridgeConfig {
    /// A plain-TCP configuration with the defaults and these keys (tests).
    pub fn new(listen: SocketAddr, keys: Keys) -> BridgeConfig {
        BridgeConfig {
            listen,
            keys,
            tls: None,
            max_line: MAX_LINE,
            outlet: OutletConfig {
                event_queue: 10_000,
                state_interval: Duration::from_millis(50),
            },
            hello_timeout: Duration::from_secs(10),
            raw_dir: None,
        }
    }
}

/// A converted line as the message to publish (`None` for `hello` and
/// heartbeats): the one mapping from terminal data to subjects, shared by
/// live connections and the replay of raw captures.
pub fn prepare(publisher: &Publisher, out: &Outbound) -> Result<Option<Prepared>, PublishError> {
    Ok(Some(match out {
        Outbound::Quote(q) => publisher.prepare_quote(q)?,
        Outbound::Positions(p) => publisher.prepare(Channel::Positions, p)?,
        Outbound::Orders(o) => publisher.prepare(Channel::Orders, o)?,
        Outbound::Account(a) => publisher.prepare(Channel::Account, a)?,
        Outbound::Log(l) | Outbound::Error(l) => publisher.prepare(Channel::Logs, l)?,
        Outbound::Signal(s) => publisher.prepare(Channel::Signals, s)?,
        Outbound::Hello(_) | Outbound::Heartbeat { .. } => return Ok(None),
    }))
}

/// Listens on `cfg.listen` and serves terminals until `shutdown`.
pub async fn run(
    publisher: Publisher,
    cfg: BridgeConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), BridgeError> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| BridgeError::Bind {
            addr: cfg.listen,
            source,
        })?;
    serve(publisher, listener, cfg, metrics, shutdown).await
}

/// Serves terminals on an already bound listener (tests bind port 0).
/// Returns after every connection has closed and what they sent has been
/// handed to NATS.
pub async fn serve(
    publisher: Publisher,
    listener: TcpListener,
    cfg: BridgeConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), BridgeError> {
    let local = listener.local_addr().ok();
    let (capture, capture_task) = match &cfg.raw_dir {
        Some(dir) => {
            let (c, task, _) = capture::Capture::open(dir, metrics.clone()).await?;
            (Some(c), Some(task))
        }
        None => (None, None),
    };
    let (outlet, outlet_tasks) = outlet::start(publisher.clone(), cfg.outlet, metrics.clone());
    let shared = Arc::new(conn::Shared {
        keys: cfg.keys.clone(),
        default_account: publisher.account_name().to_string(),
        publisher,
        outlet,
        metrics: metrics.clone(),
        clocks: clock::Clocks::default(),
        max_line: cfg.max_line,
        hello_timeout: cfg.hello_timeout,
        capture,
    });
    let scheme = if cfg.tls.is_some() { "tls" } else { "tcp" };
    tracing::info!(listen = ?local, keys = ?cfg.keys, %scheme, "bridge listening for MT5 terminals");
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                Metrics::add(&metrics.connections, 1);
                // Quotes are small and frequent: no Nagle delay on answers.
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                let tls = cfg.tls.clone();
                connections.spawn(async move {
                    match tls {
                        None => conn::serve(stream, peer, shared, shutdown).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => conn::serve(tls, peer, shared, shutdown).await,
                                Ok(Err(e)) => {
                                    tracing::warn!(%peer, error = %e, "bridge TLS handshake failed")
                                }
                                Err(_) => tracing::warn!(%peer, "bridge TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
            // Running out of file descriptors and the like is transient:
            // wait a little rather than spin or give up.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    connections.close();
    connections.wait().await;
    drop(shared);
    outlet_tasks.finish().await;
    if let Some(task) = capture_task {
        let _ = task.await;
    }
    tracing::info!("bridge stopped");
    Ok(())
}
