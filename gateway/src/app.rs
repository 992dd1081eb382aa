//! What every connection handler shares, as handles: the configuration,
//! the token verifier, the bus, the session handles (rooms, history, store,
//! registry, limits) and the relay's feed status. It holds no clients
//! itself: those are in the session registry.

use crate::config::Config;
use crate::fanout::history::History;
use crate::fanout::relay::FeedUp;
use crate::fanout::rooms::{HistoryLimits, Rooms};
use crate::http::edge::HandshakeLimits;
use crate::session::auth::Verifier;
use crate::session::limits::{LimitConfig, Limits};
use crate::session::registry::Registry;
use crate::session::revocation::Revocations;
use crate::session::store::SessionStore;
use crate::session::Handles;
use crate::transport::polling;
use bus::{Bus, BusHealth};
use protocol::SubjectScheme;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

pub struct AppState {
    /// The configuration the replica started with.
    pub config: Config,
    /// Checks connection tokens (shared with the clients, for `refresh`).
    pub verifier: Arc<Verifier>,
    /// NATS, or the memory bus of standalone mode.
    pub bus: Bus,
    /// Subject names under the configured prefix.
    pub scheme: SubjectScheme,
    /// What clients work with: rooms, history, store, registry, limits.
    pub sessions: Handles,
    /// Whether the relay is reading the bus.
    pub feed_up: Arc<FeedUp>,
    /// This replica's name.
    pub replica_id: String,
    /// When the replica started (for `/api/status`).
    pub started: Instant,
    /// Tokens cut off before they expire (`gateway revoke`).
    pub revocations: Arc<Revocations>,
    /// Per-address limits on session-opening requests.
    pub edge: HandshakeLimits,
    /// The fast path's Engine.IO sessions on long-polling, by sid.
    pub polling: polling::Table,
}

impl AppState {
    pub fn new(
        config: Config,
        verifier: Verifier,
        bus: Bus,
        store: SessionStore,
        replica_id: String,
    ) -> Arc<Self> {
        let rooms = Arc::new(Rooms::new(HistoryLimits {
            max_entries: 50_000,
            max_age: config.resume_window() + Duration::from_secs(30),
        }));
        let scheme = SubjectScheme::new(config.bus.subject_prefix.clone());
        let verifier = Arc::new(verifier);
        let sessions = Handles {
            verifier: verifier.clone(),
            history: History::new(bus.clone(), scheme.clone(), rooms.clone()),
            rooms,
            store: Arc::new(store),
            registry: Arc::new(Registry::new(replica_id.clone())),
            limits: limits(&config),
            tasks: TaskTracker::new(),
            access_log: config.edge.access_log,
        };
        let edge = HandshakeLimits::new(&config.edge);
        Arc::new(AppState {
            edge,
            config,
            verifier,
            bus,
            scheme,
            sessions,
            feed_up: Arc::default(),
            replica_id,
            started: Instant::now(),
            revocations: Arc::default(),
            polling: polling::Table::default(),
        })
    }

    /// Starts a drain: readiness fails, no client is admitted, and every
    /// client is told to go.
    pub fn drain(&self, reason: &str) {
        self.sessions.registry.drain(reason);
    }

    pub fn is_draining(&self) -> bool {
        self.sessions.registry.is_draining()
    }

    /// The bus is connected and the relay is reading it.
    pub fn bus_health(&self) -> BusHealth {
        match (self.bus.health(), self.feed_up.get()) {
            (BusHealth::Up, true) => BusHealth::Up,
            _ => BusHealth::Down,
        }
    }
}

/// The per-client numbers of the configuration.
fn limits(config: &Config) -> Limits {
    let l = &config.limits;
    Limits {
        inbound: LimitConfig {
            per_sec: l.rate_limit_per_sec,
            burst: l.rate_limit_burst,
            strikes: l.rate_limit_strikes,
            strike_decay: Duration::from_millis(l.rate_limit_strike_decay_ms),
            max_payload_bytes: l.max_payload_bytes,
        },
        queue_limit: l.client_queue_limit,
        state_backlog: l.state_backlog,
        connections_per_user: l.max_connections_per_user,
        resume_window: config.resume_window(),
        delivery_settle: config.delivery_settle(),
        transport_queue: l.socket_buffer as u64,
    }
}
