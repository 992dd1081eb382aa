//! Keeps what a crash would lose small, and a slow Redis from holding
//! anything up. Two independent loops:
//!
//! - checkpoints: every [`EVERY`], each live session's checkpoint
//!   (channels, last surely-delivered log/signal `seq`) that changed (or is
//!   due for its TTL renewal) is saved, in pipelined batches of [`BATCH`],
//!   within a deadline of [`DEADLINE`] per pass; what the deadline cut off
//!   is saved by the next pass. While the store is down the passes are
//!   skipped (one ping each) and everything is caught up once it is back;
//! - the connection-cap refresh: every third of [`CONNECTION_TTL`], this
//!   replica's live connections are re-counted in their users' caps (one
//!   pipeline, with its own deadline), so that they never expire while
//!   alive, however slow the checkpoints are.

use crate::observability::metrics;
use crate::session::admission::CONNECTION_TTL;
use crate::session::registry::Registry;
use crate::session::store::{SessionRecord, SessionStore, StoreHealth};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// How often checkpoints are saved: with the settle time of `delivery`,
/// what a crash re-sends stays under a second of traffic.
pub const EVERY: Duration = Duration::from_millis(500);
/// A pass never runs longer than this.
pub const DEADLINE: Duration = Duration::from_millis(400);
/// Sessions saved per pipeline.
const BATCH: usize = 500;
/// Unchanged sessions are still re-saved this often, to renew their TTL.
const RENEW: Duration = Duration::from_secs(20);
/// How long one connection-cap refresh may take.
const REFRESH_DEADLINE: Duration = Duration::from_secs(2);

/// Runs both loops until `shutdown`; `ttl` is how long a saved session
/// stays resumable.
pub async fn run(
    registry: Arc<Registry>,
    store: Arc<SessionStore>,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    tokio::join!(
        checkpoints(registry.clone(), store.clone(), ttl, shutdown.clone()),
        cap_refresh(registry, store, shutdown),
    );
}

async fn checkpoints(
    registry: Arc<Registry>,
    store: Arc<SessionStore>,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let mut saved: HashMap<String, (SessionRecord, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let deadline = started + DEADLINE;
        if store.health() == StoreHealth::Down {
            let up = tokio::time::timeout(DEADLINE, store.ping()).await;
            if !matches!(up, Ok(StoreHealth::Up)) {
                metrics::checkpoint_pass("skipped", elapsed(started), DEADLINE.as_secs_f64());
                continue;
            }
        }
        let (due, live) = due(&registry, &saved, started);
        saved.retain(|id, _| live.contains_key(id));
        if due.is_empty() {
            // Nothing to save: still keep the store's health current.
            let _ = tokio::time::timeout(DEADLINE, store.ping()).await;
        }
        let mut outcome = "saved";
        for batch in due.chunks(BATCH) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, store.save_many(batch, ttl)).await {
                Ok(Ok(())) => {
                    for (id, record) in batch {
                        saved.insert(id.clone(), (record.clone(), started));
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "checkpoints not saved");
                    outcome = "failed";
                    break;
                }
                Err(_) => {
                    outcome = "cut";
                    break;
                }
            }
        }
        metrics::checkpoint_pass(outcome, elapsed(started), DEADLINE.as_secs_f64());
    }
}

/// The checkpoints to save now (changed, or due for renewal), and every
/// live session id.
fn due(
    registry: &Registry,
    saved: &HashMap<String, (SessionRecord, Instant)>,
    now: Instant,
) -> (Vec<(String, SessionRecord)>, HashMap<String, ()>) {
    let clients = registry.clients();
    let mut live = HashMap::with_capacity(clients.len());
    let mut due = Vec::new();
    for client in &clients {
        live.insert(client.session.clone(), ());
        let record = client.checkpoint();
        let fresh = saved
            .get(&client.session)
            .is_some_and(|(r, at)| *r == record && now.duration_since(*at) < RENEW);
        if !fresh {
            due.push((client.session.clone(), record));
        }
    }
    (due, live)
}

async fn cap_refresh(
    registry: Arc<Registry>,
    store: Arc<SessionStore>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(CONNECTION_TTL / 3);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let conns: Vec<(String, String)> = registry
            .clients()
            .iter()
            .map(|c| (c.identity.user.clone(), registry.slot_key(c.id)))
            .collect();
        match tokio::time::timeout(REFRESH_DEADLINE, store.refresh(&conns, CONNECTION_TTL)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "connection counts not refreshed"),
            Err(_) => tracing::debug!("connection counts not refreshed in time"),
        }
    }
}

fn elapsed(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::{admission, handles};
    use crate::session::Client;
    use protocol::Channel;

    /// Every live session is saved by the first pass, and nothing past the
    /// deadline.
    #[tokio::test]
    async fn a_pass_saves_every_session_within_its_deadline() {
        let h = handles();
        let clients: Vec<_> = (0..1200)
            .map(|_| Client::connect(&h, admission(&h, Channel::ALL.to_vec(), None), "test"))
            .collect();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            h.registry.clone(),
            h.store.clone(),
            Duration::from_secs(60),
            shutdown.clone(),
        ));
        let session = clients[0].session.clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.store.load(&session).await.unwrap().is_none() {
            assert!(Instant::now() < deadline, "never saved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        task.await.unwrap();
    }
}
