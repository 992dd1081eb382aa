//! Keeps what a crash would lose small: every second, each live session's
//! checkpoint (channels, last surely-delivered log/signal `seq`) is written
//! to the session store if it changed, and this replica's connections are
//! re-counted in the per-user cap so that they do not expire while alive.

use crate::session::admission::CONNECTION_TTL;
use crate::session::registry::Registry;
use crate::session::store::{SessionRecord, SessionStore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(1);
/// Unchanged sessions are still re-saved this often, to renew their TTL.
const RENEW: Duration = Duration::from_secs(20);

/// Saves checkpoints every second until `shutdown`; `ttl` is how long a
/// saved session stays resumable.
pub async fn run(
    registry: Arc<Registry>,
    store: Arc<SessionStore>,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let mut saved: HashMap<String, (SessionRecord, Instant)> = HashMap::new();
    let mut last_refresh = Instant::now();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        store.ping().await;
        let clients = registry.clients();
        let now = Instant::now();
        let mut live = HashMap::with_capacity(clients.len());
        for client in &clients {
            let record = client.checkpoint();
            let fresh = saved
                .get(&client.session)
                .is_some_and(|(r, at)| *r == record && now.duration_since(*at) < RENEW);
            if !fresh {
                match store.save(&client.session, &record, ttl).await {
                    Ok(()) => {
                        live.insert(client.session.clone(), (record, now));
                        continue;
                    }
                    Err(e) => tracing::debug!(error = %e, "checkpoint not saved"),
                }
            }
            if let Some(entry) = saved.remove(&client.session) {
                live.insert(client.session.clone(), entry);
            }
        }
        saved = live;
        if now.duration_since(last_refresh) >= CONNECTION_TTL / 3 {
            last_refresh = now;
            let conns: Vec<(String, String)> = clients
                .iter()
                .map(|c| (c.identity.user.clone(), registry.slot_key(c.id)))
                .collect();
            if let Err(e) = store.refresh(&conns, CONNECTION_TTL).await {
                tracing::debug!(error = %e, "connection counts not refreshed");
            }
        }
    }
}
