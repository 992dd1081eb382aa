//! The live clients of this replica: ids, the map a drain and the
//! checkpoint task walk, the draining gate that refuses new clients, and
//! the key each connection is counted under in its user's cap.

use crate::fanout::outbox::Closing;
use crate::fanout::rooms::ClientId;
use crate::session::client::Client;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a client that registers during a drain is told.
const DRAIN_REASON: &str = "Server shutdown";

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

    /// Adds a client. One admitted just before a drain began but
    /// registered after it is told to go at once, like the others.
    pub fn register(&self, client: Arc<Client>) {
        let mut clients = self.lock();
        if self.is_draining() {
            client.outbox.close(Closing::Told {
                reason: DRAIN_REASON.to_owned(),
                reconnect: true,
            });
        }
        clients.insert(client.id, client);
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
        // Set under the lock: a client registers either before (and is
        // told here) or after (and is told by `register`).
        let clients = self.lock();
        self.draining.store(true, Ordering::Relaxed);
        for client in clients.values() {
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

#[cfg(test)]
mod tests {
    use crate::fanout::outbox::Closing;
    use crate::session::tests::{admission, handles};
    use crate::session::Client;
    use protocol::Channel;

    /// Admitted before the drain began, registered after it: still told.
    #[tokio::test]
    async fn a_client_registered_during_a_drain_is_told_to_go() {
        let h = handles();
        let late = admission(&h, Channel::ALL.to_vec(), None);
        h.registry.drain("Server shutdown");
        let c = Client::connect(&h, late, "test");
        assert_eq!(
            c.outbox.closing(),
            Some(Closing::Told {
                reason: "Server shutdown".into(),
                reconnect: true
            })
        );
    }
}
