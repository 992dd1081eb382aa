//! The real-terminal source: a TCP server that the MQL5 Expert Advisor
//! (`ingestor/mql5/MT5Bridge.mq5`) connects to and streams NDJSON into.
//!
//! MT5 can only open outgoing sockets, so the ingestor listens and the
//! terminal dials in. Each connection is read line by line with a length
//! bound; a bad line is counted, logged and skipped, so one buggy EA build
//! cannot stop the stream or the process.

pub mod message;

use crate::ndjson::{Line, LineReader};
use crate::publisher::{FailureLog, Publisher};
use message::Outbound;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest accepted line. A positions snapshot of a few hundred positions is
/// well under this; anything longer is a broken sender.
pub const MAX_LINE: usize = 1024 * 1024;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5555";

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Listens on `listen` and serves EA connections until `shutdown`.
pub async fn run(
    publisher: Publisher,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), BridgeError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| BridgeError::Bind {
            addr: listen,
            source,
        })?;
    serve(publisher, listener, shutdown).await
}

/// Serves EA connections on an already bound listener (tests bind port 0).
pub async fn serve(
    publisher: Publisher,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), BridgeError> {
    let local = listener.local_addr().ok();
    tracing::info!(listen = ?local, account = publisher.account_name(), "bridge listening for MT5 terminals");
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(connection(
                    stream,
                    peer,
                    publisher.clone(),
                    shutdown.clone(),
                ));
            }
            // Running out of file descriptors and the like is transient:
            // wait a little rather than spin or give up.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    connections.close();
    connections.wait().await;
    tracing::info!("bridge stopped");
    Ok(())
}

/// Counts what a connection did, for its closing log line.
#[derive(Debug, Default)]
struct Stats {
    published: u64,
    malformed: u64,
}

impl Stats {
    /// Every malformed line is counted; only the first few and then every
    /// thousandth are logged, so a peer sending garbage cannot flood logs.
    fn malformed(&mut self, peer: SocketAddr, reason: &str) {
        self.malformed += 1;
        if self.malformed <= 10 || self.malformed.is_multiple_of(1000) {
            tracing::warn!(%peer, malformed = self.malformed, reason, "skipped malformed bridge line");
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    mut publisher: Publisher,
    shutdown: CancellationToken,
) {
    tracing::info!(%peer, "MT5 bridge connected");
    // Quotes are small and frequent: don't let Nagle batch the EA's acks.
    let _ = stream.set_nodelay(true);
    let mut reader = LineReader::new(stream, MAX_LINE);
    let mut stats = Stats::default();
    let mut failures = FailureLog::default();
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            n = reader.next() => n,
        };
        let line = match next {
            Ok(Some(Line::Text(line))) => line,
            Ok(Some(Line::TooLong { len })) => {
                stats.malformed(peer, &format!("line of {len} bytes exceeds {MAX_LINE}"));
                continue;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "bridge connection read failed");
                break;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let out = match message::parse(&line) {
            Ok(out) => out,
            Err(e) => {
                stats.malformed(peer, &e.to_string());
                continue;
            }
        };
        let result = match out {
            Outbound::Hello { account, about } => {
                match account.map(protocol::Account::new) {
                    Some(Ok(a)) => {
                        publisher = publisher.with_account(a.into_string());
                    }
                    Some(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "EA account label is not a valid subject token, keeping the default");
                    }
                    None => {}
                }
                tracing::info!(%peer, account = publisher.account_name(), terminal = %about, "MT5 terminal identified");
                continue;
            }
            Outbound::Heartbeat => continue,
            Outbound::Quote(q) => publisher.quote(&q).await,
            Outbound::Positions(p) => publisher.positions(&p).await,
            Outbound::Orders(o) => publisher.orders(&o).await,
            Outbound::Account(a) => publisher.account(&a).await,
            Outbound::Log(l) => publisher.log(&l).await,
            Outbound::Signal(s) => publisher.signal(&s).await,
        };
        match result {
            Ok(()) => stats.published += 1,
            Err(e) => failures.record("bridge", &e),
        }
    }
    tracing::info!(
        %peer,
        published = stats.published,
        malformed = stats.malformed,
        publish_failures = failures.failures(),
        "MT5 bridge disconnected"
    );
}
