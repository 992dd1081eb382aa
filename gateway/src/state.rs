//! What every connection handler shares: configuration, the verifier, the
//! rooms, the bus, and the registry of live clients that a drain walks.

use crate::auth::Verifier;
use crate::config::Config;
use crate::limits::LimitConfig;
use crate::outbox::{Closing, Outbox};
use crate::rooms::{ClientId, HistoryLimits, Rooms};
use bus::{Bus, BusHealth};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct AppState {
    pub config: Config,
    pub verifier: Verifier,
    pub rooms: Arc<Rooms>,
    pub bus: Bus,
    pub replica_id: String,
    pub started: Instant,
    /// Cancelled when the replica starts draining.
    pub shutdown: CancellationToken,
    /// Every client writer task, so a drain can wait for their goodbyes.
    pub writers: TaskTracker,
    ready: AtomicBool,
    next_id: AtomicU64,
    clients: Mutex<HashMap<ClientId, Arc<Outbox>>>,
}

impl AppState {
    pub fn new(config: Config, verifier: Verifier, bus: Bus, replica_id: String) -> Arc<Self> {
        let rooms = Arc::new(Rooms::new(HistoryLimits {
            max_entries: 50_000,
            max_age: config.resume_window() + Duration::from_secs(30),
        }));
        Arc::new(AppState {
            config,
            verifier,
            rooms,
            bus,
            replica_id,
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            writers: TaskTracker::new(),
            ready: AtomicBool::new(true),
            next_id: AtomicU64::new(1),
            clients: Mutex::new(HashMap::new()),
        })
    }

    #[cfg(test)]
    pub fn for_tests(config: Config) -> Arc<Self> {
        let verifier = Verifier::from_secret(b"test", &config.default_account);
        Self::new(
            config,
            verifier,
            Bus::Memory(bus::MemoryBus::new()),
            "test".into(),
        )
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

    pub fn register(&self, id: ClientId, outbox: Arc<Outbox>) {
        self.lock_clients().insert(id, outbox);
    }

    /// True if the client was still registered.
    pub fn unregister(&self, id: ClientId) -> bool {
        self.lock_clients().remove(&id).is_some()
    }

    pub fn client_count(&self) -> usize {
        self.lock_clients().len()
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Arc<Outbox>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a drain: readiness fails and every client is told to go.
    pub fn drain(&self, reason: &str) {
        self.ready.store(false, Ordering::Relaxed);
        self.shutdown.cancel();
        for outbox in self.lock_clients().values() {
            outbox.close(Closing::Told {
                reason: reason.to_owned(),
                reconnect: true,
            });
        }
    }

    pub fn is_draining(&self) -> bool {
        !self.ready.load(Ordering::Relaxed)
    }

    pub fn bus_health(&self) -> BusHealth {
        self.bus.health()
    }
}
