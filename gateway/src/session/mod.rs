//! One dashboard's session, whatever its transport: who it is (`auth`),
//! whether it may connect and what it resumes (`admission`), its events and
//! their answers (`client`, `commands`), the replay of what it missed
//! (`replay`), which entries it surely received (`delivery`), the periodic
//! save of that (`checkpoint`), its limits (`limits`), the live clients of
//! this replica (`registry`) and the store that outlives them (`store`,
//! with the Redis primary found through Sentinel in `sentinel`).
//!
//! Depends on `fanout` (rooms, outboxes, history), never on a transport or
//! on the application state: a [`Client`] holds the narrow [`Handles`].

pub mod admission;
pub mod auth;
pub mod checkpoint;
pub mod client;
pub(crate) mod commands;
mod delivery;
pub mod limits;
pub mod registry;
mod replay;
pub mod revocation;
pub mod sentinel;
pub mod store;

use crate::fanout::history::History;
use crate::fanout::rooms::Rooms;
use limits::Limits;
use registry::Registry;
use std::sync::Arc;
use store::SessionStore;
use tokio_util::task::TaskTracker;

pub use client::Client;

/// What a client needs from the rest of the gateway, and nothing more.
#[derive(Clone)]
pub struct Handles {
    /// Membership, last values and the memory history.
    pub rooms: Arc<Rooms>,
    /// Where missed entries are read back from.
    pub history: History,
    /// Sessions and connection counts that outlive a connection.
    pub store: Arc<SessionStore>,
    /// This replica's live clients.
    pub registry: Arc<Registry>,
    /// The numbers each client is built with.
    pub limits: Limits,
    /// Checks the tokens a client renews its connection with (`refresh`).
    pub verifier: Arc<auth::Verifier>,
    /// Client writers and final session saves, so a drain can wait for them.
    pub tasks: TaskTracker,
    /// Whether a connection's end is written to the `access` log
    /// (`ACCESS_LOG`).
    pub access_log: bool,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fanout::rooms::HistoryLimits;
    use crate::session::admission::Admission;
    use crate::session::auth::Identity;
    use crate::session::limits::LimitConfig;
    use crate::session::store::SessionRecord;
    use bus::{Bus, MemoryBus};
    use protocol::{Channel, SubjectScheme};
    use std::time::Duration;

    /// Handles on a memory bus and store, with the default limits.
    pub fn handles() -> Handles {
        let rooms = Arc::new(Rooms::new(HistoryLimits {
            max_entries: 50_000,
            max_age: Duration::from_secs(150),
        }));
        let bus = Bus::Memory(MemoryBus::new());
        Handles {
            verifier: Arc::new(auth::Verifier::from_secret(b"test", "demo")),
            history: History::new(bus, SubjectScheme::new("mt5"), rooms.clone()),
            rooms,
            store: Arc::new(SessionStore::memory()),
            registry: Arc::new(Registry::new("test".into())),
            limits: Limits {
                inbound: LimitConfig {
                    per_sec: 20,
                    burst: 40,
                    strikes: 50,
                    strike_decay: Duration::from_secs(10),
                    max_payload_bytes: 64 * 1024,
                },
                queue_limit: 4096,
                state_backlog: 64,
                connections_per_user: 20,
                resume_window: Duration::from_secs(120),
                delivery_settle: Duration::from_secs(2),
                transport_queue: 128,
            },
            tasks: TaskTracker::new(),
            access_log: false,
        }
    }

    /// An admission for `alice` on `demo` (no cap taken), resuming `resumed`.
    pub fn admission(
        handles: &Handles,
        allowed: Vec<Channel>,
        resumed: Option<SessionRecord>,
    ) -> Admission {
        let identity = Identity {
            user: "alice".into(),
            account: "demo".parse().unwrap(),
            allowed,
            expires_at: i64::MAX,
            jti: None,
            issued_at: None,
        };
        let id = handles.registry.next_id();
        Admission {
            id,
            identity,
            session: "s1".into(),
            resume: resumed.map_or(admission::Resume::New, admission::Resume::Resumed),
            slot: admission::Slot::for_tests(handles, id),
        }
    }
}
