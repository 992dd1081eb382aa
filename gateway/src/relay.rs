//! The bus → rooms pump: one task that reads every subject under the prefix,
//! turns each message into a shared [`Frame`] and hands it to [`Rooms`].
//!
//! Quotes are throttled here, once per account and symbol rather than per
//! client: at most one per interval goes out, and the last one held back is
//! always sent when the interval ends, so clients see the latest price.
//! A malformed message is counted and dropped; it never reaches a client.

use crate::frame::Frame;
use crate::metrics;
use crate::rooms::Rooms;
use bus::{Bus, BusMessage};
use futures::StreamExt;
use protocol::{Channel, Route, SubjectScheme};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type QuoteKey = (String, Arc<str>);

pub struct Relay {
    bus: Bus,
    scheme: SubjectScheme,
    rooms: Arc<Rooms>,
    throttle: Duration,
    last_sent: HashMap<QuoteKey, Instant>,
    held: HashMap<QuoteKey, (Instant, Arc<Frame>)>,
}

impl Relay {
    pub fn new(bus: Bus, scheme: SubjectScheme, rooms: Arc<Rooms>, throttle: Duration) -> Self {
        Relay {
            bus,
            scheme,
            rooms,
            throttle,
            last_sent: HashMap::new(),
            held: HashMap::new(),
        }
    }

    /// Runs until `shutdown`. A failed or ended subscription is retried:
    /// the bus client reconnects by itself, so this only has to ask again.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let subject = self.scheme.all();
        while !shutdown.is_cancelled() {
            let mut sub = match self.bus.subscribe(&subject).await {
                Ok(sub) => sub,
                Err(e) => {
                    tracing::warn!(error = %e, "relay cannot subscribe; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            tracing::info!(%subject, bus = self.bus.kind(), "relay subscribed");
            loop {
                let next_due = self.held.values().map(|(due, _)| *due).min();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = sleep_until(next_due) => self.release_due(),
                    msg = sub.next() => match msg {
                        Some(msg) => self.handle(msg),
                        None => {
                            tracing::warn!("relay subscription ended; resubscribing");
                            break;
                        }
                    },
                }
            }
        }
    }

    fn handle(&mut self, msg: BusMessage) {
        metrics::bus_message_received();
        let Some(route) = self.scheme.parse(&msg.subject) else {
            metrics::bus_message_rejected("subject");
            tracing::debug!(subject = %msg.subject, "ignoring a subject outside the scheme");
            return;
        };
        let frame = match Frame::from_bus(
            route.channel,
            route.symbol.as_deref(),
            &msg.payload,
            msg.seq,
        ) {
            Ok(frame) => Arc::new(frame),
            Err(e) => {
                metrics::bus_message_rejected("payload");
                tracing::warn!(subject = %msg.subject, error = %e, "dropping a malformed bus message");
                return;
            }
        };
        match (&route, self.throttle.is_zero()) {
            (
                Route {
                    channel: Channel::Quotes,
                    symbol: Some(symbol),
                    ..
                },
                false,
            ) => self.quote(route.account.clone(), symbol.as_str().into(), frame),
            _ => {
                let n = self.rooms.publish(&route.account, route.channel, frame);
                metrics::frames_queued(n);
            }
        }
    }

    fn quote(&mut self, account: String, symbol: Arc<str>, frame: Arc<Frame>) {
        let now = Instant::now();
        let key = (account, symbol);
        match self.last_sent.get(&key) {
            Some(sent) if now.duration_since(*sent) < self.throttle => {
                self.rooms.remember(&key.0, Channel::Quotes, &frame);
                let due = *sent + self.throttle;
                self.held.insert(key, (due, frame));
            }
            _ => {
                let n = self.rooms.publish(&key.0, Channel::Quotes, frame);
                metrics::frames_queued(n);
                self.held.remove(&key);
                self.last_sent.insert(key, now);
            }
        }
    }

    fn release_due(&mut self) {
        let now = Instant::now();
        let due: Vec<QuoteKey> = self
            .held
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some((_, frame)) = self.held.remove(&key) {
                let n = self.rooms.fan_out(&key.0, Channel::Quotes, frame);
                metrics::frames_queued(n);
                self.last_sent.insert(key, now);
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;
    use crate::rooms::HistoryLimits;
    use bus::{Headers, MemoryBus};

    fn setup(throttle_ms: u64) -> (MemoryBus, Arc<Rooms>, Arc<Outbox>, CancellationToken) {
        let mem = MemoryBus::new();
        let rooms = Arc::new(Rooms::new(HistoryLimits {
            max_entries: 100,
            max_age: Duration::from_secs(60),
        }));
        let outbox = Arc::new(Outbox::new(100));
        rooms.join("demo", Channel::Quotes, 1, &outbox);
        rooms.join("demo", Channel::Logs, 1, &outbox);
        let shutdown = CancellationToken::new();
        let relay = Relay::new(
            Bus::Memory(mem.clone()),
            SubjectScheme::default(),
            rooms.clone(),
            Duration::from_millis(throttle_ms),
        );
        tokio::spawn(relay.run(shutdown.clone()));
        (mem, rooms, outbox, shutdown)
    }

    async fn next(outbox: &Outbox) -> Arc<Frame> {
        loop {
            if let Some(f) = outbox.pop() {
                return f;
            }
            tokio::time::timeout(Duration::from_secs(5), outbox.wait())
                .await
                .expect("a frame within 5 s");
        }
    }

    fn publish(mem: &MemoryBus, subject: &str, json: &str) {
        mem.publish(subject.into(), json.to_owned().into(), Headers::default());
    }

    #[tokio::test]
    async fn throttles_quotes_but_always_sends_the_latest() {
        let (mem, _rooms, outbox, shutdown) = setup(200);
        tokio::task::yield_now().await;
        // The relay subscribes asynchronously; publish until it is listening.
        while outbox.is_empty() {
            publish(&mem, "mt5.demo.quotes.EURUSD", r#"{"bid":0}"#);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _first = next(&outbox).await;
        for bid in 1..=50 {
            publish(
                &mem,
                "mt5.demo.quotes.EURUSD",
                &format!(r#"{{"bid":{bid}}}"#),
            );
        }
        let f = next(&outbox).await;
        assert_eq!(
            f.data.get(),
            r#"{"bid":50}"#,
            "the held-back quote is the latest"
        );
        assert!(outbox.is_empty());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn drops_malformed_and_foreign_messages() {
        let (mem, _rooms, outbox, shutdown) = setup(0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        publish(&mem, "mt5.demo.logs", "not json");
        publish(&mem, "mt5.demo.nope", "{}");
        publish(&mem, "mt5.demo.logs", r#"{"message":"ok"}"#);
        let f = next(&outbox).await;
        assert!(f.data.get().contains("\"ok\""));
        assert!(f.seq.is_some());
        shutdown.cancel();
    }
}
