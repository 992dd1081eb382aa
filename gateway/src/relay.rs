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
use crate::state::AppState;
use crate::telemetry;
use bus::{Bus, BusError, BusMessage, Start, StreamKind, StreamLimits, Subscription};
use futures::StreamExt;
use protocol::{Channel, Route, SubjectScheme};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type QuoteKey = (String, Arc<str>);

/// How many missed entries one resume replays at most.
const MAX_REPLAY: usize = 100_000;

pub struct Relay {
    app: Arc<AppState>,
    bus: Bus,
    scheme: SubjectScheme,
    rooms: Arc<Rooms>,
    throttle: Duration,
    last_sent: HashMap<QuoteKey, Instant>,
    held: HashMap<QuoteKey, (Instant, Arc<Frame>)>,
    /// The newest event sequence read, to reopen the feed right after it.
    last_event_seq: Option<u64>,
}

impl Relay {
    pub fn new(app: Arc<AppState>) -> Self {
        Relay {
            bus: app.bus.clone(),
            scheme: app.scheme.clone(),
            rooms: app.rooms.clone(),
            throttle: app.config.quote_throttle(),
            app,
            last_sent: HashMap::new(),
            held: HashMap::new(),
            last_event_seq: None,
        }
    }

    /// Runs until `shutdown`. When the feed fails or ends it is reopened
    /// (the NATS client reconnects by itself; JetStream may need the
    /// streams made again after a server lost its store), events from just
    /// after the last one read, so nothing is skipped.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut retry = Duration::from_millis(200);
        let mut reconnects = match &self.bus {
            Bus::Nats(nats) => Some(nats.connections()),
            Bus::Memory(_) => None,
        };
        while !shutdown.is_cancelled() {
            if let Some(r) = &mut reconnects {
                r.borrow_and_update();
            }
            let mut feed = match self.open_feed().await {
                Ok(feed) => feed,
                Err(e) => {
                    self.app.set_feed_up(false);
                    tracing::warn!(error = %e, "relay cannot read the bus; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            retry = Duration::from_millis(200);
            self.app.set_feed_up(true);
            tracing::info!(bus = self.bus.kind(), "relay reading the bus");
            loop {
                let next_due = self.held.values().map(|(due, _)| *due).min();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = changed(&mut reconnects) => {
                        tracing::info!("bus reconnected; reopening the feed");
                        break;
                    }
                    _ = sleep_until(next_due) => self.release_due(),
                    msg = feed.next() => match msg {
                        Some(msg) => self.handle(msg),
                        None => {
                            tracing::warn!("relay feed ended; reopening");
                            self.app.set_feed_up(false);
                            break;
                        }
                    },
                }
            }
        }
    }

    async fn open_feed(&self) -> Result<Subscription, BusError> {
        match &self.bus {
            Bus::Memory(_) => self.bus.subscribe(&self.scheme.all()).await,
            Bus::Nats(nats) => {
                let prefix = self.scheme.prefix();
                nats.ensure_streams(prefix, &stream_limits(&self.app))
                    .await?;
                let mut feeds = Vec::new();
                for subject in bus::jetstream::stream_subjects(prefix, StreamKind::State) {
                    let state = nats
                        .consume(
                            prefix,
                            StreamKind::State,
                            Some(subject),
                            Start::LastPerSubject,
                        )
                        .await?;
                    feeds.push(state);
                }
                let start = match self.last_event_seq {
                    Some(seq) => Start::At(seq + 1),
                    None => Start::New,
                };
                feeds.push(
                    nats.consume(prefix, StreamKind::Events, None, start)
                        .await?,
                );
                Ok(futures::stream::select_all(feeds).boxed())
            }
        }
    }

    fn handle(&mut self, msg: BusMessage) {
        metrics::bus_message_received();
        let _span = telemetry::relay_span(&msg.subject, &msg.headers).entered();
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
            Ok(frame) => {
                if let (false, Some(seq)) = (route.channel.is_state(), msg.seq) {
                    self.last_event_seq = Some(seq);
                }
                Arc::new(frame)
            }
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

/// The stream limits the configuration asks for.
pub fn stream_limits(app: &AppState) -> StreamLimits {
    StreamLimits {
        events_max_age: Duration::from_secs(app.config.events_max_age_secs)
            .max(app.config.resume_window() * 2),
        events_max_messages: app.config.events_max_messages,
        ..StreamLimits::default()
    }
}

/// The `channel` entries of `account` after `after`, oldest first: from
/// JetStream, or from memory in standalone mode.
pub async fn history(
    app: &AppState,
    account: &str,
    channel: Channel,
    after: u64,
) -> Result<Vec<Arc<Frame>>, BusError> {
    let messages = match &app.bus {
        Bus::Memory(_) => return Ok(app.rooms.history_after(account, channel, after)),
        Bus::Nats(nats) => {
            let subject = app.scheme.channel(account, channel);
            nats.history(app.scheme.prefix(), &subject, after, MAX_REPLAY)
                .await?
        }
    };
    Ok(messages
        .into_iter()
        .filter_map(|m| Frame::from_bus(channel, None, &m.payload, m.seq).ok())
        .map(Arc::new)
        .collect())
}

/// Resolves when the bus has reconnected (never for the memory bus).
async fn changed(reconnects: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    let Some(r) = reconnects else {
        return std::future::pending().await;
    };
    if r.changed().await.is_err() {
        std::future::pending::<()>().await;
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
    use bus::{Headers, MemoryBus};

    fn setup(throttle_ms: u64) -> (MemoryBus, Arc<Rooms>, Arc<Outbox>, CancellationToken) {
        let mut config = crate::config::Config::for_tests();
        config.quote_throttle_ms = throttle_ms;
        let app = AppState::for_tests(config);
        let Bus::Memory(mem) = app.bus.clone() else {
            unreachable!("tests use the memory bus")
        };
        let rooms = app.rooms.clone();
        let outbox = Arc::new(Outbox::new(100, 0));
        rooms.join("demo", Channel::Quotes, 1, &outbox);
        rooms.join("demo", Channel::Logs, 1, &outbox);
        let shutdown = CancellationToken::new();
        tokio::spawn(Relay::new(app).run(shutdown.clone()));
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
