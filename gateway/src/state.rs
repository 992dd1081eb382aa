//! What every connection handler shares: configuration, the verifier, the
//! rooms, the bus, the session store, and the registry of live clients
//! that a drain and the checkpoint task walk.

use crate::auth::Verifier;
use crate::client::Client;
use crate::config::Config;
use crate::limits::LimitConfig;
use crate::outbox::Closing;
use crate::rooms::{ClientId, HistoryLimits, Rooms};
use crate::session::SessionStore;
use bus::{Bus, BusHealth};
use protocol::SubjectScheme;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct AppState {
    pub config: Config,
    pub verifier: Verifier,
    pub rooms: Arc<Rooms>,
    pub bus: Bus,
    pub scheme: SubjectScheme,
    pub sessions: SessionStore,
    pub replica_id: String,
    pub started: Instant,
    /// Cancelled when the replica starts draining.
    pub shutdown: CancellationToken,
    /// Client writers and their final session saves, so a drain can wait.
    pub writers: TaskTracker,
    ready: AtomicBool,
    /// Whether the relay is currently reading the bus.
    feed_up: AtomicBool,
    next_id: AtomicU64,
    clients: Mutex<HashMap<ClientId, Arc<Client>>>,
}

impl AppState {
    pub fn new(
        config: Config,
        verifier: Verifier,
        bus: Bus,
        sessions: SessionStore,
        replica_id: String,
    ) -> Arc<Self> {
        let rooms = Arc::new(Rooms::new(HistoryLimits {
            max_entries: 50_000,
            max_age: config.resume_window() + Duration::from_secs(30),
        }));
        let scheme = SubjectScheme::new(config.subject_prefix.clone());
        Arc::new(AppState {
            config,
            verifier,
            rooms,
            bus,
            scheme,
            sessions,
            replica_id,
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            writers: TaskTracker::new(),
            ready: AtomicBool::new(true),
            feed_up: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            clients: Mutex::new(HashMap::new()),
        })
    }

    #[cfg(test)]
    pub fn for_tests(config: Config) -> Arc<Self> {
        let verifier = Verifier::from_secret(b"test", &config.default_account);
        let bus = Bus::Memory(bus::MemoryBus::new());
        Self::new(config, verifier, bus, SessionStore::memory(), "test".into())
    }

    pub fn limits(&self) -> LimitConfig {
        LimitConfig {
            per_sec: self.config.rate_limit_per_sec,
            burst: self.config.rate_limit_burst,
            strikes: self.config.rate_limit_strikes,
            max_payload_bytes: self.config.max_payload_bytes,
        }
    }

    pub fn next_client_id(&self) -> ClientId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn register(&self, client: Arc<Client>) {
        self.lock_clients().insert(client.id, client);
    }

    /// True if the client was still registered.
    pub fn unregister(&self, id: ClientId) -> bool {
        self.lock_clients().remove(&id).is_some()
    }

    pub fn client_count(&self) -> usize {
        self.lock_clients().len()
    }

    pub fn clients(&self) -> Vec<Arc<Client>> {
        self.lock_clients().values().cloned().collect()
    }

    fn lock_clients(&self) -> MutexGuard<'_, HashMap<ClientId, Arc<Client>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_feed_up(&self, up: bool) {
        self.feed_up.store(up, Ordering::Relaxed);
    }

    /// Starts a drain: readiness fails and every client is told to go.
    pub fn drain(&self, reason: &str) {
        self.ready.store(false, Ordering::Relaxed);
        self.shutdown.cancel();
        for client in self.lock_clients().values() {
            client.outbox.close(Closing::Told {
                reason: reason.to_owned(),
                reconnect: true,
            });
        }
    }

    pub fn is_draining(&self) -> bool {
        !self.ready.load(Ordering::Relaxed)
    }

    /// The bus is connected and the relay is reading it.
    pub fn bus_health(&self) -> BusHealth {
        match (self.bus.health(), self.feed_up.load(Ordering::Relaxed)) {
            (BusHealth::Up, true) => BusHealth::Up,
            _ => BusHealth::Down,
        }
    }
}
