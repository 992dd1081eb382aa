//! The bus → rooms pump: one task that reads every subject under the prefix,
//! turns each message into a shared [`Frame`] and hands it to [`Rooms`].
//!
//! Quotes go through the [`Throttle`] first (once per account and symbol,
//! not per client). When the feed fails or ends it is reopened, events from
//! just after the last one read, so nothing is skipped; it is also reopened
//! when the stall watch (`stall`) finds it silent while its stream moved on.
//! A malformed message is counted and dropped; it never reaches a client.

use crate::fanout::frame::Frame;
use crate::fanout::rooms::Rooms;
use crate::fanout::stall::{self, ReadMarks};
use crate::fanout::throttle::{Offer, Throttle};
use crate::observability::{metrics, telemetry};
use bus::{Bus, BusError, BusMessage, Start, StreamKind, StreamLimits, Subscription};
use futures::StreamExt;
use protocol::{Channel, Route, SubjectScheme};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Whether the relay is reading the bus right now (readiness needs it, and
/// standalone mode's simulator waits for it: the memory bus keeps nothing,
/// so a value published before the relay reads would never be seen).
pub struct FeedUp(watch::Sender<bool>);

impl Default for FeedUp {
    fn default() -> Self {
        FeedUp(watch::Sender::new(false))
    }
}

impl FeedUp {
    fn set(&self, up: bool) {
        self.0.send_replace(up);
    }

    /// True while the feed is open.
    pub fn get(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the feed is open (at once if it is).
    pub async fn opened(&self) {
        // The sender is `self`, so the channel cannot close while waiting.
        let _ = self.0.subscribe().wait_for(|up| *up).await;
    }
}

pub struct Relay {
    /// Where the messages come from.
    bus: Bus,
    /// Subject names, parsed back into routes.
    scheme: SubjectScheme,
    /// Where the frames go.
    rooms: Arc<Rooms>,
    /// Holds back quotes per symbol.
    throttle: Throttle,
    /// JetStream retention, for when the streams must be (re)made.
    limits: StreamLimits,
    /// Set while the feed is open.
    feed_up: Arc<FeedUp>,
    /// Whether the events stream's position is known (the first open asks
    /// for its end); from then on the feed reopens right after the newest
    /// entry in `marks`.
    events_start_known: bool,
    /// The newest sequence read from each stream (also for the stall
    /// watch).
    marks: Arc<ReadMarks>,
}

impl Relay {
    /// A relay from `bus` to `rooms`; `limits` are the JetStream
    /// retention it ensures, `feed_up` reports whether it is reading.
    pub fn new(
        bus: Bus,
        scheme: SubjectScheme,
        rooms: Arc<Rooms>,
        throttle: Duration,
        limits: StreamLimits,
        feed_up: Arc<FeedUp>,
    ) -> Self {
        Relay {
            bus,
            scheme,
            rooms,
            throttle: Throttle::new(throttle),
            limits,
            feed_up,
            events_start_known: false,
            marks: Arc::default(),
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
        // The sender stays here too, so that `changed()` never fails (on
        // the memory bus no watch runs).
        let (stall_tx, mut stalled) = watch::channel(0);
        if let Bus::Nats(nats) = &self.bus {
            tokio::spawn(stall::watch(
                nats.clone(),
                self.scheme.prefix().to_string(),
                self.marks.clone(),
                stall_tx.clone(),
                shutdown.child_token(),
            ));
        }
        while !shutdown.is_cancelled() {
            if let Some(r) = &mut reconnects {
                r.borrow_and_update();
            }
            let mut feed = match self.open_feed().await {
                Ok(feed) => feed,
                Err(e) => {
                    self.feed_up.set(false);
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
            let feed_no = self.marks.opened();
            stalled.borrow_and_update();
            self.feed_up.set(true);
            tracing::info!(bus = self.bus.kind(), "relay reading the bus");
            let why = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = changed(&mut reconnects) => {
                        tracing::info!("bus reconnected; reopening the feed");
                        break "reconnect";
                    }
                    // The watch logged why (a request about an older feed
                    // is stale).
                    Ok(()) = stalled.changed() => {
                        if *stalled.borrow_and_update() == feed_no {
                            break "stall";
                        }
                    }
                    ((account, _), frame) = self.throttle.released() => {
                        let n = self.rooms.fan_out(&account, Channel::Quotes, frame);
                        metrics::frames_queued(n);
                    }
                    msg = feed.next() => match msg {
                        Some(msg) => self.handle(msg),
                        None => {
                            tracing::warn!("relay feed ended; reopening");
                            self.feed_up.set(false);
                            break "ended";
                        }
                    },
                }
            };
            metrics::feed_reopened(why);
        }
    }

    async fn open_feed(&mut self) -> Result<Subscription, BusError> {
        match &self.bus {
            Bus::Memory(memory) => {
                let feed = self.bus.subscribe(&self.scheme.all()).await?;
                self.rooms.set_feed_start(memory.last_seq());
                Ok(feed)
            }
            Bus::Nats(nats) => {
                let prefix = self.scheme.prefix();
                nats.ensure_streams(prefix, &self.limits).await?;
                // Right after the last entry read; the first time, right
                // after the stream's end: that is where every room's
                // sequence, and the memory ring, start.
                if !self.events_start_known {
                    let end = nats.events_position(prefix).await?.last;
                    self.rooms.set_feed_start(end);
                    self.marks.read(StreamKind::Events, end);
                    self.events_start_known = true;
                }
                let after = self.marks.newest(StreamKind::Events);
                // Every consumer asked for at once: while a cluster
                // re-elects after losing a node, a request can go
                // unanswered until its timeout and be retried, and one
                // after the other those waits added up (logs came back
                // ~19 s after a node died in compose, most of it spent
                // waiting on the state consumers before the events one).
                let events = nats.consume(prefix, StreamKind::Events, None, Start::At(after + 1));
                let states = bus::jetstream::stream_subjects(prefix, StreamKind::State)
                    .into_iter()
                    .map(|subject| {
                        nats.consume(
                            prefix,
                            StreamKind::State,
                            Some(subject),
                            Start::LastPerSubject,
                        )
                    });
                let feeds =
                    futures::future::try_join_all(std::iter::once(events).chain(states)).await?;
                // One feed ending (the events one: see `NatsBus::consume`)
                // ends them all, so the whole feed is reopened; otherwise
                // quotes would go on while logs had stopped for good.
                let feeds = feeds
                    .into_iter()
                    .map(|feed| feed.map(Some).chain(futures::stream::iter([None])));
                Ok(futures::stream::select_all(feeds)
                    .take_while(|msg| futures::future::ready(msg.is_some()))
                    .filter_map(futures::future::ready)
                    .boxed())
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
        if let Some(seq) = msg.seq {
            let kind = match route.channel.is_state() {
                true => StreamKind::State,
                false => StreamKind::Events,
            };
            self.marks.read(kind, seq);
        }
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
        match (&route, self.throttle.is_off()) {
            (
                Route {
                    channel: Channel::Quotes,
                    symbol: Some(symbol),
                    ..
                },
                false,
            ) => {
                let key = (route.account.clone(), Arc::from(symbol.as_str()));
                match self.throttle.offer(key, frame) {
                    Offer::Send(frame) => {
                        let n = self.rooms.publish(&route.account, Channel::Quotes, frame);
                        metrics::frames_queued(n);
                    }
                    Offer::Held(frame) => {
                        self.rooms.remember(&route.account, Channel::Quotes, &frame)
                    }
                }
            }
            _ => {
                let n = self.rooms.publish(&route.account, route.channel, frame);
                metrics::frames_queued(n);
                if route.channel == Channel::Logs {
                    if let Some(notice) = terminal_error(&msg.payload) {
                        // Not remembered: a resume replays the log entry,
                        // which carries the same error in `extra`.
                        self.rooms
                            .fan_out(&route.account, Channel::Logs, Arc::new(notice));
                    }
                }
            }
        }
    }
}

/// The spec's `error` event for a log entry that relays a terminal error
/// (the bridge publishes those as ERROR logs whose `extra` holds
/// `event: "error"`, `error`, `details` and `code`), so dashboards on
/// `logs` get both the entry and the error.
fn terminal_error(payload: &[u8]) -> Option<Frame> {
    // Most log entries are not errors: skip the parse for them.
    if !payload.windows(7).any(|w| w == b"\"error\"") {
        return None;
    }
    let entry: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let extra = entry.get("extra")?;
    if extra.get("event")?.as_str()? != "error" {
        return None;
    }
    let text = |key: &str| extra.get(key).and_then(|v| v.as_str()).unwrap_or_default();
    Some(Frame::control(
        "error",
        &serde_json::json!({
            "error": text("error"),
            "details": text("details"),
            "code": text("code"),
        }),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::outbox::Outbox;
    use crate::fanout::rooms::HistoryLimits;
    use bus::{Headers, MemoryBus};

    fn setup(throttle_ms: u64) -> (MemoryBus, Arc<Rooms>, Arc<Outbox>, CancellationToken) {
        let mem = MemoryBus::new();
        let rooms = Arc::new(Rooms::new(HistoryLimits {
            max_entries: 100,
            max_age: Duration::from_secs(60),
        }));
        let outbox = Arc::new(Outbox::new(100, 0));
        crate::fanout::rooms::tests::join1(&rooms, "demo", Channel::Quotes, 1, &outbox);
        crate::fanout::rooms::tests::join1(&rooms, "demo", Channel::Logs, 1, &outbox);
        let shutdown = CancellationToken::new();
        let relay = Relay::new(
            Bus::Memory(mem.clone()),
            SubjectScheme::new("mt5".to_owned()),
            rooms.clone(),
            Duration::from_millis(throttle_ms),
            StreamLimits::default(),
            Arc::default(),
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

    #[tokio::test]
    async fn feed_up_wakes_a_waiter_and_answers_at_once_when_open() {
        let up = Arc::new(FeedUp::default());
        let waiter = tokio::spawn({
            let up = up.clone();
            async move { up.opened().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "resolved before the feed opened");
        up.set(true);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken within 5 s")
            .expect("waiter task");
        tokio::time::timeout(Duration::from_secs(5), up.opened())
            .await
            .expect("an open feed answers at once");
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

    #[test]
    fn a_terminal_error_log_is_also_an_error_event() {
        let log = br#"{"level":"ERROR","message":"order refused","extra":{"event":"error","error":"Not enough money","details":"EURUSD buy 1.0","code":"INSUFFICIENT_MARGIN"}}"#;
        let frame = terminal_error(log).expect("an error event");
        let text = frame.ws_text();
        assert!(text.contains(r#""event":"error""#), "{text}");
        assert!(text.contains(r#""code":"INSUFFICIENT_MARGIN""#), "{text}");
        assert!(terminal_error(br#"{"level":"ERROR","message":"error","extra":{}}"#).is_none());
        assert!(terminal_error(br#"{"level":"INFO","message":"hi"}"#).is_none());
        assert!(terminal_error(br#"not json "error""#).is_none());
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
