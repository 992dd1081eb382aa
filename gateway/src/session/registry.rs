//! The live clients of this replica: ids, the map a drain and the
//! checkpoint task walk, the draining gate that refuses new clients, and
//! the key each connection is counted under in its user's cap.

use crate::fanout::outbox::Closing;
use crate::fanout::rooms::ClientId;
use crate::session::client::Client;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub struct Registry {
    /// This replica's name, part of every connection key.
    replica: String,
    /// The next client id.
    next_id: AtomicU64,
    /// Set once a drain started: no new client is admitted.
    draining: AtomicBool,
    /// The clients connected now.
    clients: Mutex<HashMap<ClientId, Arc<Client>>>,
}

impl Registry {
    /// An empty registry for the replica named `replica`.
    pub fn new(replica: String) -> Self {
        Registry {
            replica,
            next_id: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The key a connection is counted under in its user's cap (the one
    /// place it is spelled).
    pub fn slot_key(&self, id: ClientId) -> String {
        format!("{}:{id}", self.replica)
    }

    pub fn next_id(&self) -> ClientId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn register(&self, client: Arc<Client>) {
        self.lock().insert(client.id, client);
    }

    /// True if the client was still registered.
    pub fn unregister(&self, id: ClientId) -> bool {
        self.lock().remove(&id).is_some()
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    pub fn clients(&self) -> Vec<Arc<Client>> {
        self.lock().values().cloned().collect()
    }

    /// Starts a drain: no client is admitted any more, and every client
    /// is told to go (and to reconnect, to another replica).
    pub fn drain(&self, reason: &str) {
        self.draining.store(true, Ordering::Relaxed);
        for client in self.lock().values() {
            client.outbox.close(Closing::Told {
                reason: reason.to_owned(),
                reconnect: true,
            });
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClientId, Arc<Client>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}
