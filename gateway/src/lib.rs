//! The MT5 dashboard gateway.
//!
//! [`run`] is the whole server as a story: configuration in, connections
//! made, background tasks started, HTTP served on a listener the caller
//! bound, and a graceful drain when `shutdown` fires. Taking the listener
//! and the shutdown token as arguments lets tests run a gateway on port 0
//! and stop it when they like.
//!
//! Modules, by concern:
//! - `config`: the typed configuration; `auth`: JWT verify and mint;
//! - `relay`: bus → rooms; `rooms`: membership, last values, history;
//! - `frame`: a message encoded once; `outbox`: a client's conflating queue;
//!   `writer`: outbox → socket;
//! - `client`: one dashboard's events, shared by both transports;
//!   `socketio` and `ws`: the two transports; `http`: routes and probes;
//! - `limits`, `session`, `metrics`, `state`, `web`.

pub mod auth;
pub mod checkpoint;
pub mod client;
pub mod config;
pub mod delivery;
pub mod eio;
pub mod frame;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod relay;
pub mod rooms;
pub mod session;
pub mod socketio;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod web;
pub mod writer;
pub mod ws;

use crate::auth::{KeyError, Verifier};
use crate::config::Config;
use crate::relay::Relay;
use crate::session::SessionStore;
use crate::state::AppState;
use axum::serve::ListenerExt;
use bus::{Bus, BusError, MemoryBus, NatsBus, NatsOptions};
use socketioxide::SocketIo;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to start: NATS_URL is not set. A production replica must never stream \
         simulated prices; run `gateway --standalone` for the demo, or set NATS_URL"
    )]
    NoBus,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("server error: {0}")]
    Serve(#[from] std::io::Error),
}

/// A replica name for when `REPLICA_ID` is not set.
pub fn default_replica_id() -> String {
    format!("gw-{}", &session::new_id()[..8])
}

/// Builds the token verifier the configuration asks for.
pub fn verifier(config: &Config) -> Result<Verifier, KeyError> {
    let verifier = match (&config.jwt_public_key_file, &config.jwt_secret) {
        (Some(path), _) => Verifier::from_public_key_file(path, &config.default_account)?,
        (None, Some(secret)) => Verifier::from_secret(secret.as_bytes(), &config.default_account),
        (None, None) => return Err(KeyError::NotConfigured),
    };
    Ok(verifier
        .with_issuer(config.jwt_issuer.clone())
        .with_audience(config.jwt_audience.clone()))
}

/// Serves until `shutdown` is cancelled, then drains and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    // Connections.
    let verifier = verifier(&config)?;
    if config.tcp_send_buffer > 0 {
        // Accepted connections inherit the listener's buffer size.
        if let Err(e) =
            socket2::SockRef::from(&listener).set_send_buffer_size(config.tcp_send_buffer)
        {
            tracing::warn!(error = %e, "TCP_SEND_BUFFER not applied");
        }
    }
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let bus = connect_bus(&config).await?;
    let replica_id = config.replica_id.clone().unwrap_or_else(default_replica_id);
    let sessions = match &config.redis_url {
        Some(url) => SessionStore::redis(url, &config.subject_prefix)?,
        None => SessionStore::memory(),
    };
    metrics::install();
    let app = AppState::new(config, verifier, bus.clone(), sessions, replica_id);
    let scheme = app.scheme.clone();

    // Background tasks, all stopped by the same token.
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(Relay::new(app.clone()).run(shutdown.clone()));
    tasks.spawn(checkpoint::run(app.clone(), shutdown.clone()));
    if app.config.standalone {
        let publisher = ingestor::Publisher::new(bus, scheme, app.config.default_account.clone());
        let sim = ingestor::sim::SimConfig {
            account: app.config.default_account.clone(),
            quotes_per_sec: app.config.sim_quotes_per_sec,
            logs_per_sec: app.config.sim_logs_per_sec,
            signals_per_sec: app.config.sim_signals_per_sec,
            ..Default::default()
        };
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = ingestor::sim::run(publisher, sim, stop).await {
                tracing::error!(error = %e, "simulator stopped");
            }
        });
    }
    tasks.close();

    // Serve.
    let hard_limit = app.config.hard_payload_limit() as u64;
    let (socketio_layer, io) = SocketIo::builder()
        .with_state(app.clone())
        .max_buffer_size(app.config.socket_buffer)
        .max_payload(hard_limit)
        .ws_max_message_size(hard_limit as usize)
        .build_layer();
    socketio::attach(&io);
    let router = http::router(app.clone(), socketio_layer);
    tracing::info!(
        addr = %listener.local_addr()?,
        replica = %app.replica_id,
        mode = if app.config.standalone { "standalone" } else { "nats" },
        "gateway serving"
    );
    let drain_timeout = app.config.drain_timeout();
    let draining = drain(app.clone(), io, shutdown.clone(), drain_timeout);
    let server = async {
        match tls {
            Some(acceptor) => {
                let listener = tls::TlsListener::new(listener, acceptor, shutdown.clone())?;
                serve(listener, router, draining).await
            }
            None => {
                // Frames are small and already coalesced per write: never
                // let Nagle hold one back waiting for an ACK.
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                serve(listener, router, draining).await
            }
        }
    };
    let overdue = async {
        shutdown.cancelled().await;
        tokio::time::sleep(drain_timeout + Duration::from_secs(1)).await;
    };
    tokio::select! {
        result = server => result?,
        _ = overdue => tracing::warn!("connections still open after the drain timeout; exiting"),
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Serves `router` on any listener (plain TCP or TLS) until `draining`
/// completes.
async fn serve<L>(
    listener: L,
    router: axum::Router,
    draining: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(draining)
        .into_future()
        .await
}

/// Waits for `shutdown`, then tells every client to go, waits (at most
/// `timeout`) for their goodbyes to be written, and closes what is left.
async fn drain(app: Arc<AppState>, io: SocketIo, shutdown: CancellationToken, timeout: Duration) {
    shutdown.cancelled().await;
    tracing::info!(clients = app.client_count(), "draining");
    app.drain("Server shutdown");
    app.writers.close();
    if tokio::time::timeout(timeout, app.writers.wait())
        .await
        .is_err()
    {
        tracing::warn!(left = app.client_count(), "drain timeout; closing anyway");
    }
    io.close().await;
}

async fn connect_bus(config: &Config) -> Result<Bus, StartError> {
    if config.standalone {
        return Ok(Bus::Memory(MemoryBus::new()));
    }
    let url = config.nats_url.clone().ok_or(StartError::NoBus)?;
    let nats = NatsBus::connect(&NatsOptions {
        url,
        name: "mt5-gateway".into(),
    })
    .await?;
    Ok(Bus::Nats(nats))
}
