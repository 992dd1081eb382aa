//! The whole server as a story: configuration in, connections made,
//! background tasks started (relay, checkpoints, the simulator in
//! standalone mode), HTTP served on a listener the caller bound (plain or
//! TLS), and a graceful drain when `shutdown` fires. Taking the listener
//! and the shutdown token as arguments lets tests run a gateway on port 0
//! and stop it when they like.

use crate::app::AppState;
use crate::config::{Config, ConfigError};
use crate::fanout::relay::Relay;
use crate::http;
use crate::observability::metrics;
use crate::session::auth::{KeyError, Verifier};
use crate::session::checkpoint;
use crate::session::revocation;
use crate::session::store::{self, SessionError, SessionStore};
use crate::transport::listener::{self, ConnLimits, HttpTimeouts};
use crate::transport::socketio;
use crate::transport::tls::{self, TlsError};
use bus::{Bus, BusError, MemoryBus, NatsBus, NatsOptions, StreamLimits};
use socketioxide::SocketIo;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Why the gateway could not start (or stopped serving).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to start: NATS_URL is not set. A production replica must never stream \
         simulated prices; run `gateway --standalone` for the demo, or set NATS_URL"
    )]
    NoBus,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("server error: {0}")]
    Serve(#[from] std::io::Error),
    #[error("DEFAULT_ACCOUNT {0}")]
    Account(#[from] protocol::TokenError),
}

/// A replica name for when `REPLICA_ID` is not set.
pub fn default_replica_id() -> String {
    format!("gw-{}", &store::new_id()[..8])
}

/// Builds the token verifier the configuration asks for.
pub fn verifier(config: &Config) -> Result<Verifier, KeyError> {
    let auth = &config.auth;
    let verifier = match (&auth.jwt_public_key_file, &auth.jwt_secret) {
        (Some(path), _) => Verifier::from_public_key_file(path, &auth.default_account)?,
        (None, Some(secret)) => Verifier::from_secret(secret.as_bytes(), &auth.default_account),
        (None, None) => return Err(KeyError::NotConfigured),
    };
    Ok(verifier
        .with_issuer(auth.jwt_issuer.clone())
        .with_audience(auth.jwt_audience.clone())
        .with_leeway(auth.jwt_leeway_secs)
        .with_max_lifetime(auth.max_token_lifetime_secs))
}

/// Serves until `shutdown` is cancelled, then drains and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    // Connections.
    config.validate()?;
    let verifier = verifier(&config)?;
    let send_buffer = config.limits.tcp_send_buffer;
    if send_buffer > 0 {
        // Accepted connections inherit the listener's buffer size.
        if let Err(e) = socket2::SockRef::from(&listener).set_send_buffer_size(send_buffer) {
            tracing::warn!(error = %e, "TCP_SEND_BUFFER not applied");
        }
    }
    let tls = match (&config.tls.tls_cert_file, &config.tls.tls_key_file) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let bus = connect_bus(&config).await?;
    let replica_id = config.replica_id.clone().unwrap_or_else(default_replica_id);
    let sentinels = config.session.sentinels().map_err(SessionError::from)?;
    let store = match (&config.session.redis_url, sentinels) {
        (_, Some(sentinels)) => SessionStore::redis_sentinel(sentinels, &config.bus.subject_prefix),
        (Some(url), None) => SessionStore::redis(url, &config.bus.subject_prefix)?,
        (None, None) => SessionStore::memory(),
    };
    metrics::install(&replica_id);
    let app = AppState::new(config, verifier, bus.clone(), store, replica_id);

    // Background tasks, all stopped by the same token.
    let tasks = tokio_util::task::TaskTracker::new();
    let relay = Relay::new(
        bus.clone(),
        app.scheme.clone(),
        app.sessions.rooms.clone(),
        app.config.quote_throttle(),
        stream_limits(&app.config),
        app.feed_up.clone(),
    );
    tasks.spawn(relay.run(shutdown.clone()));
    tasks.spawn(checkpoint::run(
        app.sessions.registry.clone(),
        app.sessions.store.clone(),
        app.config.resume_window(),
        shutdown.clone(),
    ));
    if app.config.standalone {
        let account = app.config.auth.default_account.clone();
        // Checked by `Config::validate`; refused here too rather than assumed.
        let label = protocol::Account::new(account.as_str())?;
        let publisher = sim::Publisher::new(bus, app.scheme.clone(), label);
        let rates = &app.config.sim;
        let simulated = sim::SimConfig {
            account,
            quotes_per_sec: rates.sim_quotes_per_sec,
            logs_per_sec: rates.sim_logs_per_sec,
            signals_per_sec: rates.sim_signals_per_sec,
            ..Default::default()
        };
        let stop = shutdown.clone();
        let feed_up = app.feed_up.clone();
        tasks.spawn(async move {
            // The simulator publishes every value once at start; the memory
            // bus keeps nothing, so the relay must be reading first.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = feed_up.opened() => {}
            }
            if let Err(e) = sim::run(publisher, simulated, stop).await {
                tracing::error!(error = %e, "simulator stopped");
            }
        });
    }
    tasks.close();

    // Serve.
    let hard_limit = app.config.hard_payload_limit() as u64;
    let (socketio_layer, io) = SocketIo::builder()
        .with_state(app.clone())
        .max_buffer_size(app.config.limits.socket_buffer)
        .max_payload(hard_limit)
        .ws_max_message_size(hard_limit as usize)
        // Before CONNECT nothing is authenticated: no 16 MiB frames, and
        // a session that never connects is gone within seconds.
        .ws_max_frame_size(hard_limit as usize)
        .ping_interval(app.config.engineio.ping_interval())
        .ping_timeout(app.config.engineio.ping_timeout())
        .connect_timeout(app.config.connect_timeout())
        .build_layer();
    socketio::attach(&io);
    let router = http::router(app.clone(), socketio_layer);
    tracing::info!(
        addr = %listener.local_addr()?,
        replica = %app.replica_id,
        mode = if app.config.standalone { "standalone" } else { "nats" },
        "gateway serving"
    );
    let edge = &app.config.edge;
    let limits = ConnLimits::new(
        connection_limit(edge.max_connections),
        edge.max_connections_per_ip,
    );
    let timeouts = HttpTimeouts {
        header_read: edge.header_read_timeout(),
    };
    if let Some(addr) = edge.metrics_addr {
        let internal = TcpListener::bind(addr).await?;
        println!("metrics listening on http://{}", internal.local_addr()?);
        let stop = shutdown.clone();
        tasks_spawn_metrics(internal, stop);
    }
    tokio::spawn(forget_idle_addresses(app.clone(), shutdown.clone()));
    revocation::load_at_start(
        app.config.session.redis_url.as_deref(),
        &app.config.bus.subject_prefix,
        &app.revocations,
        Duration::from_secs(2),
    )
    .await;
    tokio::spawn(revocation::watch(
        app.bus.clone(),
        app.config.bus.subject_prefix.clone(),
        app.config.session.redis_url.clone(),
        app.revocations.clone(),
        app.sessions.registry.clone(),
        shutdown.clone(),
    ));
    if app.verifier.source().is_some() {
        tokio::spawn(reload_keys(app.clone(), shutdown.clone()));
    }
    let drain_timeout = app.config.drain_timeout();
    let draining = drain(app.clone(), io, shutdown.clone(), drain_timeout);
    let server = async {
        match tls {
            Some(acceptor) => {
                let bounds = tls::HandshakeBounds {
                    timeout: edge.tls_handshake_timeout(),
                    in_flight: edge.max_tls_handshakes,
                };
                let incoming = tls::TlsListener::new(listener, acceptor, limits, bounds);
                listener::serve(incoming, router, timeouts, draining).await
            }
            None => {
                let incoming = listener::PlainIncoming::new(listener, limits);
                listener::serve(incoming, router, timeouts, draining).await
            }
        }
        Ok::<(), std::io::Error>(())
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

/// `MAX_CONNECTIONS`, kept below the open-file limit (less a margin for
/// NATS, Redis, files and the listeners), so that the limit refuses a
/// connection before `accept` fails for everyone.
fn connection_limit(configured: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit on our own process with a valid, owned struct.
    let files = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    let margin = 64;
    let bound = files.saturating_sub(margin).max(1);
    if bound < configured {
        tracing::warn!(
            configured,
            open_files = files,
            used = bound,
            "MAX_CONNECTIONS lowered to fit the open-file limit"
        );
    }
    configured.min(bound)
}

/// `/metrics` alone on the internal listener of `METRICS_ADDR`.
fn tasks_spawn_metrics(listener: TcpListener, stop: CancellationToken) {
    let router = http::metrics_router::<()>();
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .into_future()
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "metrics listener stopped");
        }
    });
}

/// Drops per-address state of addresses not seen lately.
async fn forget_idle_addresses(app: Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => app.edge.forget_idle(),
        }
    }
}

/// Re-reads the key file when it changes (checked every 2 s) or on
/// SIGHUP; a bad file keeps the last good keys.
async fn reload_keys(app: Arc<AppState>, shutdown: CancellationToken) {
    let Some(path) = app.verifier.source().map(|p| p.to_owned()) else {
        return;
    };
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p).ok().map(|m| {
            (
                m.modified().ok(),
                m.len(),
                std::os::unix::fs::MetadataExt::ino(&m),
            )
        })
    };
    let mut seen = stamp(&path);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        let asked = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            _ = async {
                match hup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => true,
        };
        let now = stamp(&path);
        if !asked && now == seen {
            continue;
        }
        seen = now;
        match app.verifier.reload() {
            Ok(()) => tracing::info!(file = ?path, sighup = asked, "JWT keys reloaded"),
            Err(e) => {
                tracing::warn!(error = %e, "JWT key file not reloaded; keeping the current keys")
            }
        }
    }
}

/// Waits for `shutdown`, then tells every client to go, waits (at most
/// `timeout`) for their goodbyes to be written, and closes what is left.
async fn drain(app: Arc<AppState>, io: SocketIo, shutdown: CancellationToken, timeout: Duration) {
    shutdown.cancelled().await;
    let registry = &app.sessions.registry;
    tracing::info!(clients = registry.count(), "draining");
    app.drain("Server shutdown");
    let writers = &app.sessions.tasks;
    writers.close();
    if tokio::time::timeout(timeout, writers.wait()).await.is_err() {
        tracing::warn!(left = registry.count(), "drain timeout; closing anyway");
    }
    // Long-polling clients of the fast path take their goodbye with their
    // next GET: the listener stays open until they have, or have given up.
    app.polling.close_all();
    if tokio::time::timeout(timeout, app.polling.emptied())
        .await
        .is_err()
    {
        tracing::warn!("polling sessions left after the drain timeout");
    }
    io.close().await;
}

/// The JetStream retention the configuration asks for: events are kept at
/// least twice the resume window.
fn stream_limits(config: &Config) -> StreamLimits {
    StreamLimits {
        events_max_age: Duration::from_secs(config.bus.events_max_age_secs)
            .max(config.resume_window() * 2),
        events_max_messages: config.bus.events_max_messages,
        replicas: config.bus.stream_replicas,
        ..StreamLimits::default()
    }
}

async fn connect_bus(config: &Config) -> Result<Bus, StartError> {
    if config.standalone {
        return Ok(Bus::Memory(MemoryBus::new()));
    }
    let url = config.bus.nats_url.clone().ok_or(StartError::NoBus)?;
    let nats = NatsBus::connect(&NatsOptions {
        url,
        name: "mt5-gateway".into(),
    })
    .await?;
    Ok(Bus::Nats(nats))
}
