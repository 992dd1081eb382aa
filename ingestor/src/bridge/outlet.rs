//! Between the terminals' sockets and NATS: the bridge never waits for NATS.
//!
//! If a connection awaited each publish, a slow or paused NATS would stop
//! it reading, the TCP buffers would fill and the EA would block inside
//! `SocketSend`, in the terminal's own event loop. So connections only hand
//! prepared messages to the outlet, which never blocks them:
//!
//! - state (quotes per symbol, positions, orders, account) keeps only the
//!   latest value per subject; a value replaced before it was published is
//!   counted as superseded. Publishing a pass and then pausing
//!   `state_interval` makes this the per-symbol throttle (latest wins).
//! - events (logs, signals) go through a bounded queue, in order; when it
//!   is full the entry is dropped and counted as overflow.
//!
//! One task publishes state, another events, so a JetStream acknowledgement
//! that takes long never delays prices.

use crate::metrics::Metrics;
use crate::publisher::{FailureLog, Prepared, Publisher};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How the outlet buffers.
#[derive(Debug, Clone, Copy)]
pub struct OutletConfig {
    /// Log and signal entries waiting for NATS before new ones are dropped.
    pub event_queue: usize,
    /// Pause after each state pass: at most one value per subject per
    /// interval reaches NATS.
    pub state_interval: Duration,
}

/// The latest value per state subject, waiting to be published.
#[derive(Default)]
struct StateSlot {
    /// Subject → latest prepared value.
    latest: Mutex<HashMap<String, Prepared>>,
    /// Wakes the state task when something arrives.
    wake: Notify,
}

/// The connections' handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Outlet {
    /// Latest state values.
    state: Arc<StateSlot>,
    /// Events, bounded.
    events: mpsc::Sender<Prepared>,
    /// Counters.
    metrics: Arc<Metrics>,
}

/// The two publishing tasks; [`OutletTasks::finish`] publishes what is
/// left and stops them.
pub struct OutletTasks {
    /// Tells the state task to do a last pass and stop.
    closing: CancellationToken,
    /// Publishes state.
    state: JoinHandle<()>,
    /// Publishes events until every [`Outlet`] is dropped.
    events: JoinHandle<()>,
}

/// Starts the publishing tasks.
pub fn start(
    publisher: Publisher,
    cfg: OutletConfig,
    metrics: Arc<Metrics>,
) -> (Outlet, OutletTasks) {
    let slot = Arc::new(StateSlot::default());
    let (tx, rx) = mpsc::channel(cfg.event_queue.max(1));
    let closing = CancellationToken::new();
    let state = tokio::spawn(publish_state(
        publisher.clone(),
        slot.clone(),
        cfg.state_interval,
        metrics.clone(),
        closing.clone(),
    ));
    let events = tokio::spawn(publish_events(publisher, rx, metrics.clone()));
    (
        Outlet {
            state: slot,
            events: tx,
            metrics,
        },
        OutletTasks {
            closing,
            state,
            events,
        },
    )
}

impl Outlet {
    /// Keeps `p` as the latest value of its subject.
    pub fn state(&self, p: Prepared) {
        let replaced = {
            let mut map = self.state.latest.lock().unwrap_or_else(|e| e.into_inner());
            map.insert(p.subject.clone(), p).is_some()
        };
        if replaced {
            Metrics::add(&self.metrics.superseded, 1);
        }
        self.state.wake.notify_one();
    }

    /// Queues an event; false (and counted) when the queue is full.
    pub fn event(&self, p: Prepared) -> bool {
        match self.events.try_send(p) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(p)) => {
                let n = self
                    .metrics
                    .overflow
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                if n <= 10 || n.is_multiple_of(1000) {
                    tracing::warn!(subject = %p.subject, overflow = n, "event queue full (NATS slow?), entry dropped");
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

impl OutletTasks {
    /// Call after every [`Outlet`] clone is gone: publishes the last state
    /// values and the queued events, then returns.
    pub async fn finish(self) {
        self.closing.cancel();
        let _ = self.state.await;
        let _ = self.events.await;
    }
}

async fn publish_state(
    publisher: Publisher,
    slot: Arc<StateSlot>,
    interval: Duration,
    metrics: Arc<Metrics>,
    closing: CancellationToken,
) {
    let mut failures = FailureLog::default();
    loop {
        let last = tokio::select! {
            _ = slot.wake.notified() => false,
            _ = closing.cancelled() => true,
        };
        let batch = std::mem::take(&mut *slot.latest.lock().unwrap_or_else(|e| e.into_inner()));
        for p in batch.into_values() {
            send(&publisher, p, &metrics, &mut failures).await;
        }
        if last {
            return;
        }
        if !interval.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = closing.cancelled() => {}
            }
        }
    }
}

async fn publish_events(
    publisher: Publisher,
    mut rx: mpsc::Receiver<Prepared>,
    metrics: Arc<Metrics>,
) {
    let mut failures = FailureLog::default();
    while let Some(p) = rx.recv().await {
        send(&publisher, p, &metrics, &mut failures).await;
    }
}

async fn send(publisher: &Publisher, p: Prepared, metrics: &Metrics, failures: &mut FailureLog) {
    let kind = p.kind;
    match publisher.send(p).await {
        Ok(()) => Metrics::add(&metrics.published, 1),
        Err(e) => {
            Metrics::add(&metrics.publish_failures, 1);
            failures.record(kind, &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::{Bus, MemoryBus};
    use futures::StreamExt;
    use protocol::payload::Quote;
    use protocol::{Channel, SubjectScheme};
    use std::sync::atomic::Ordering;

    fn quote(bid: f64) -> Quote {
        Quote {
            symbol: "EURUSD".into(),
            bid,
            ask: bid + 0.0001,
            spread: 10,
            timestamp: "2024-01-01T00:00:00.000Z".into(),
        }
    }

    #[tokio::test]
    async fn state_keeps_the_latest_and_events_overflow_counted() {
        let mem = MemoryBus::new();
        let mut sub = mem.subscribe("mt5.>");
        let publisher = Publisher::new(
            Bus::Memory(mem),
            SubjectScheme::default(),
            "a".parse().unwrap(),
        );
        let metrics = Metrics::new();
        let cfg = OutletConfig {
            event_queue: 2,
            state_interval: Duration::from_millis(10),
        };
        // Nothing runs until we yield (current-thread runtime), so the
        // outlet sees every value before its tasks do.
        let (outlet, tasks) = start(publisher.clone(), cfg, metrics.clone());
        for i in 0..100 {
            outlet.state(publisher.prepare_quote(&quote(1.0 + i as f64)).unwrap());
        }
        let log = protocol::payload::LogEntry {
            timestamp: "2024-01-01T00:00:00.000Z".into(),
            level: "INFO".into(),
            message: "m".into(),
            module: "x".into(),
            extra: Default::default(),
            seq: None,
        };
        let accepted: Vec<bool> = (0..5)
            .map(|_| outlet.event(publisher.prepare(Channel::Logs, &log).unwrap()))
            .collect();
        assert_eq!(accepted, [true, true, false, false, false]);
        assert_eq!(metrics.overflow.load(Ordering::Relaxed), 3);
        assert_eq!(metrics.superseded.load(Ordering::Relaxed), 99);
        drop(outlet);
        tasks.finish().await;
        let mut got = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            got.push(m);
        }
        let quotes: Vec<Quote> = got
            .iter()
            .filter(|m| m.subject.contains(".quotes."))
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect();
        assert_eq!(quotes.len(), 1);
        assert_eq!(quotes[0].bid, 100.0);
        assert_eq!(
            got.iter().filter(|m| m.subject.ends_with(".logs")).count(),
            2
        );
        assert_eq!(metrics.published.load(Ordering::Relaxed), 3);
    }
}
