//! One connected dashboard, whatever its transport: who it is, what it
//! joined, its queue, and the entry point for its inbound events.
//! Socket.IO and plain WebSocket both call [`Client::handle`], so the two
//! endpoints behave identically by construction; the events themselves are
//! answered in `commands`, a resumed session is replayed in `replay`.

use crate::fanout::frame::Frame;
use crate::fanout::outbox::{Closing, Outbox};
use crate::fanout::rooms::ClientId;
use crate::observability::metrics;
use crate::session::admission::{Admission, Resume};
use crate::session::auth::Identity;
use crate::session::delivery::Delivery;
use crate::session::limits::{InboundGuard, Verdict};
use crate::session::store::SessionRecord;
use crate::session::Handles;
use protocol::error_code::ErrorPayload;
use protocol::{Channel, ErrorCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub struct Client {
    /// This replica's id for the connection.
    pub id: ClientId,
    /// Who it is and what it may see.
    pub identity: Identity,
    /// The session id (sent in `connected`, used to resume).
    pub session: String,
    /// The metrics label of its transport.
    pub transport: &'static str,
    /// Frames waiting for its writer.
    pub outbox: Arc<Outbox>,
    /// The channels it joined (indexed by `Channel::index`).
    pub(super) joined: Mutex<[bool; 6]>,
    /// Which logs and signals it surely received.
    pub(super) delivery: Mutex<Delivery>,
    /// Its inbound rate and size limits.
    guard: InboundGuard,
    /// When its token expires (epoch seconds); `refresh` moves it, and a
    /// watcher closes the connection on time.
    pub(super) expires_at: watch::Sender<i64>,
    /// Rooms, history, store, registry and limits.
    pub(super) handles: Handles,
    /// When it connected (for the access line when it goes).
    connected_at: Instant,
}

impl Client {
    /// Registers an admitted client, queues its `connected` greeting and,
    /// for a resumed session, rejoins its channels and replays what it
    /// missed.
    pub fn connect(
        handles: &Handles,
        admission: Admission,
        transport: &'static str,
    ) -> Arc<Client> {
        Self::connect_queued(handles, admission, transport, 0)
    }

    /// [`Client::connect`] for a transport that queues up to
    /// `transport_queue` frames of its own past the outbox (socketioxide):
    /// an entry counts as delivered only once that many followed it.
    pub fn connect_queued(
        handles: &Handles,
        admission: Admission,
        transport: &'static str,
        transport_queue: u64,
    ) -> Arc<Client> {
        let limits = handles.limits;
        let Admission {
            id,
            identity,
            session,
            resume,
            slot,
        } = admission;
        // From here on the client gives the slot back when it goes.
        slot.keep();
        let identity_expiry = identity.expires_at;
        let client = Arc::new(Client {
            id,
            identity,
            session,
            transport,
            outbox: Arc::new(Outbox::new(limits.queue_limit, limits.state_backlog)),
            joined: Mutex::new([false; 6]),
            delivery: Mutex::new(Delivery::new(limits.delivery_settle, transport_queue)),
            guard: InboundGuard::new(limits.inbound),
            expires_at: watch::Sender::new(identity_expiry),
            handles: handles.clone(),
            connected_at: Instant::now(),
        });
        client.watch_expiry();
        handles.registry.register(client.clone());
        metrics::client_connected(transport);
        client.outbox.push(Arc::new(Frame::control(
            "connected",
            &json!({
                "message": "Connected to MT5 Trading Dashboard",
                "server_time": protocol::time::now_rfc3339(),
                "session": client.session,
                "resumed": matches!(resume, Resume::Resumed(_)),
                "expires_at": rfc3339(identity_expiry),
                "replica": handles.registry.replica(),
            }),
        )));
        match resume {
            Resume::Resumed(record) => client.resume(record),
            Resume::Unanswered => {
                client.error(
                    ErrorCode::UpstreamUnavailable,
                    "Session not resumed",
                    "the session store did not answer: this is a new session; reload what you missed",
                );
            }
            Resume::New => {}
        }
        client
    }

    /// Closes the connection when its token expires (as moved by
    /// `refresh`), on time, whether or not its queue ever empties. Ends
    /// with the client (the sender goes with it).
    fn watch_expiry(&self) {
        let mut expiry = self.expires_at.subscribe();
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            loop {
                let at = *expiry.borrow_and_update();
                // In milliseconds: whole seconds of "now" made the cut up
                // to a second late.
                let left = at
                    .saturating_mul(1000)
                    .saturating_sub(chrono::Utc::now().timestamp_millis());
                let left = Duration::from_millis(left.clamp(0, 10 * 365 * 24 * 3600 * 1000) as u64);
                tokio::select! {
                    _ = tokio::time::sleep(left) => {
                        // `exp` is a whole second: expired once it has passed.
                        if *expiry.borrow() == at {
                            if outbox.close(Closing::Expired) {
                                metrics::client_cut_off("token_expired");
                            }
                            return;
                        }
                    }
                    changed = expiry.changed() => if changed.is_err() {
                        return;
                    },
                }
            }
        });
    }

    pub(super) fn joined(&self) -> MutexGuard<'_, [bool; 6]> {
        self.joined.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn delivery(&self) -> MutexGuard<'_, Delivery> {
        self.delivery.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the writer for every frame it hands to the socket.
    pub fn wrote(&self, frame: &Frame) {
        self.delivery().wrote(frame, Instant::now());
    }

    /// What to store for this session now.
    pub fn checkpoint(&self) -> SessionRecord {
        let channels = {
            let joined = self.joined();
            Channel::ALL
                .into_iter()
                .filter(|c| joined[c.index()])
                .map(|c| c.name().to_owned())
                .collect()
        };
        let mut delivery = self.delivery();
        let (logs_seq, signals_seq) = delivery.safe(Instant::now());
        let (logs_floor, signals_floor) = delivery.floors();
        SessionRecord {
            user: self.identity.user.clone(),
            account: self.identity.account.to_string(),
            channels,
            logs_seq,
            signals_seq,
            logs_floor,
            signals_floor,
        }
    }

    /// Every inbound frame goes through here first, before it is parsed
    /// (malformed frames and pings included): the rate limit. `None` to go
    /// on; otherwise the frame is dropped and this is the payload sent
    /// instead (`RATE_LIMITED`), or the client is cut off as abusive.
    pub fn admit(&self) -> Option<Value> {
        match self.guard.check_rate() {
            Verdict::Allow => None,
            Verdict::Limited => Some(self.error(
                ErrorCode::RateLimited,
                "Too many events",
                "slow down: that message was not processed",
            )),
            Verdict::Abusive => {
                let first = self.outbox.close(Closing::Told {
                    reason: "Rate limit exceeded".into(),
                    reconnect: false,
                });
                if first {
                    metrics::client_cut_off("abuse");
                }
                Some(json!({"error": "Rate limit exceeded", "code": ErrorCode::RateLimited}))
            }
        }
    }

    /// Handles one inbound event that [`Client::admit`] let through. `size`
    /// is the payload's encoded length. Returns the reply payload, which
    /// Socket.IO also sends as the acknowledgement when the client asked
    /// for one.
    pub fn handle(&self, event: &str, data: Option<&Value>, size: usize) -> Value {
        if self.guard.too_large(size) {
            return self.error(
                ErrorCode::PayloadTooLarge,
                "Payload too large",
                format!(
                    "{event} payload is {size} bytes; the limit is {}",
                    self.handles.limits.inbound.max_payload_bytes
                ),
            );
        }
        match event {
            "subscribe" => self.subscribe(data),
            "unsubscribe" => self.unsubscribe(data),
            "heartbeat" => self.heartbeat(data),
            "refresh" => self.refresh(data),
            other => self.error(
                ErrorCode::InvalidPayload,
                "Unknown event",
                format!(
                    "`{}` is not an event this server handles (subscribe, unsubscribe, heartbeat, refresh)",
                    super::commands::truncate(other)
                ),
            ),
        }
    }

    /// The client went away: leave every room, forget it, store its last
    /// checkpoint and free its slot in the user's connection cap.
    pub fn gone(&self) {
        let handles = &self.handles;
        handles.rooms.leave_all(&self.identity.account, self.id);
        // Why it ended: what the gateway told it, or nothing (it left).
        let ended = self.outbox.closing();
        self.outbox.close(Closing::Gone);
        if !handles.registry.unregister(self.id) {
            return;
        }
        metrics::client_disconnected(self.transport);
        if handles.access_log {
            // The connection's own line (the upgrade request has one too);
            // client-controlled values are escaped (`?`), no token.
            tracing::info!(
                target: "access",
                transport = self.transport,
                user = ?self.identity.user,
                account = %self.identity.account,
                session = %self.session,
                secs = self.connected_at.elapsed().as_secs_f64(),
                ended = ?ended.unwrap_or(Closing::Gone),
                "connection closed"
            );
        }
        let record = self.checkpoint();
        let store = handles.store.clone();
        let session = self.session.clone();
        let key = handles.registry.slot_key(self.id);
        let ttl = handles.limits.resume_window;
        // Tracked, so a drain waits for it before the process exits.
        handles.tasks.spawn(async move {
            if let Err(e) = store.save(&session, &record, ttl).await {
                tracing::warn!(error = %e, "session not saved");
            }
            if let Err(e) = store.release(&record.user, &key).await {
                tracing::debug!(error = %e, "connection slot not released; it will expire");
            }
        });
    }

    pub(super) fn reply(&self, event: &'static str, payload: &Value) {
        self.outbox.push(Arc::new(Frame::control(event, payload)));
    }

    /// Queues an `error` event and returns its payload (for the ack).
    pub fn error(&self, code: ErrorCode, error: &str, details: impl Into<String>) -> Value {
        metrics::client_error(code.as_str());
        let payload = ErrorPayload::new(code, error, details);
        self.outbox
            .push(Arc::new(Frame::control("error", &payload)));
        serde_json::to_value(&payload).unwrap_or(Value::Null)
    }
}

/// Epoch seconds as RFC 3339 UTC (`null` for a time no date can show).
pub(super) fn rfc3339(epoch_secs: i64) -> Value {
    chrono::DateTime::from_timestamp(epoch_secs, 0)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::{admission, handles};

    fn client(allowed: Vec<Channel>) -> (Handles, Arc<Client>) {
        let h = handles();
        let c = Client::connect(&h, admission(&h, allowed, None), "test");
        (h, c)
    }

    fn drain(c: &Client) -> Vec<(String, Value)> {
        std::iter::from_fn(|| c.outbox.pop())
            .map(|f| {
                (
                    f.event.to_owned(),
                    serde_json::from_str(f.data.get()).unwrap(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_replay_longer_than_the_queue_is_paced_not_cut_off() {
        let mut h = handles();
        h.limits.queue_limit = 10;
        let log = |seq| Arc::new(Frame::from_bus(Channel::Logs, None, b"{}", Some(seq)).unwrap());
        for seq in 1..=100 {
            h.rooms.publish("demo", Channel::Logs, log(seq));
        }
        let resumed = SessionRecord {
            user: "alice".into(),
            account: "demo".into(),
            channels: vec!["logs".into()],
            logs_seq: 20,
            signals_seq: 0,
            logs_floor: 0,
            signals_floor: 0,
        };
        let c = Client::connect(
            &h,
            admission(&h, Channel::ALL.to_vec(), Some(resumed)),
            "test",
        );
        // A slow reader, while new entries keep arriving.
        let mut seqs = Vec::new();
        let mut next = 101;
        while seqs.last() != Some(&130) {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if next <= 130 {
                h.rooms.publish("demo", Channel::Logs, log(next));
                next += 1;
            }
            if let Some(f) = c.outbox.pop() {
                seqs.extend(f.seq);
            }
            assert_eq!(c.outbox.closing(), None, "cut off while catching up");
        }
        assert_eq!(seqs, (21..=130).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_resume_the_store_did_not_answer_is_announced_after_connected() {
        let h = handles();
        let mut a = admission(&h, Channel::ALL.to_vec(), None);
        a.resume = Resume::Unanswered;
        let c = Client::connect(&h, a, "test");
        let events = drain(&c);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].0, "connected");
        assert_eq!(events[0].1["resumed"], false);
        assert_eq!(events[1].0, "error");
        assert_eq!(events[1].1["code"], "UPSTREAM_UNAVAILABLE");
    }

    #[tokio::test]
    async fn connected_then_subscribed_with_errors_per_bad_channel() {
        let (_h, c) = client(vec![Channel::Quotes, Channel::Logs]);
        let data = json!({"channels": ["quotes", "nope", "orders", 7, "quotes"]});
        let reply = c.handle("subscribe", Some(&data), 10);
        assert_eq!(reply, json!({"channels": ["quotes"]}));
        let events = drain(&c);
        let names: Vec<_> = events.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(
            names,
            ["connected", "error", "error", "error", "subscribed"]
        );
        let codes: Vec<_> = events[1..4]
            .iter()
            .map(|(_, d)| d["code"].clone())
            .collect();
        assert_eq!(
            codes,
            ["UNKNOWN_CHANNEL", "FORBIDDEN_CHANNEL", "UNKNOWN_CHANNEL"]
        );
        assert!(events[0].1["server_time"].as_str().unwrap().ends_with('Z'));
    }

    #[tokio::test]
    async fn thousands_of_bogus_channels_get_a_few_errors_and_a_summary() {
        let (_h, c) = client(vec![Channel::Quotes]);
        drain(&c);
        let mut names: Vec<Value> = (0..5000).map(|i| json!(format!("x{i}"))).collect();
        names.extend((0..100).map(|i| json!(format!("x{i}"))));
        names.push(json!("orders"));
        names.push(json!("orders"));
        names.push(json!("quotes"));
        let reply = c.handle("subscribe", Some(&json!({ "channels": names })), 10);
        assert_eq!(reply, json!({"channels": ["quotes"]}));
        let errors: Vec<Value> = drain(&c)
            .into_iter()
            .filter(|(e, _)| e == "error")
            .map(|(_, d)| d)
            .collect();
        assert_eq!(errors.len(), 7, "{errors:?}");
        assert!(
            errors[6]["details"]
                .as_str()
                .unwrap()
                .contains("4,995 more"),
            "{}",
            errors[6]
        );
    }

    #[tokio::test]
    async fn invalid_payloads_get_invalid_payload() {
        let (_h, c) = client(Channel::ALL.to_vec());
        drain(&c);
        for (event, data) in [
            ("subscribe", json!("quotes")),
            ("subscribe", json!({"channels": "quotes"})),
            ("unsubscribe", json!(null)),
            ("heartbeat", json!([1])),
            ("heartbeat", json!({"timestamp": "x"})),
            ("bogus", json!({})),
        ] {
            let reply = c.handle(event, Some(&data), 10);
            assert_eq!(reply["code"], "INVALID_PAYLOAD", "{event} {data}");
        }
        assert!(c.outbox.closing().is_none(), "the connection stays up");
    }

    #[tokio::test]
    async fn heartbeat_echoes_and_unsubscribe_leaves() {
        let (_h, c) = client(Channel::ALL.to_vec());
        let ack = c.handle("heartbeat", Some(&json!({"timestamp": 42})), 10);
        assert_eq!(ack["client_timestamp"], 42);
        assert!(ack["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
        c.handle("subscribe", Some(&json!({"channels": ["logs"]})), 10);
        let left = c.handle("unsubscribe", Some(&json!({"channels": ["logs"]})), 10);
        assert_eq!(left, json!({"channels": ["logs"]}));
    }

    #[tokio::test]
    async fn oversized_payloads_are_refused() {
        let (h, c) = client(Channel::ALL.to_vec());
        let big = h.limits.inbound.max_payload_bytes + 1;
        let reply = c.handle("subscribe", Some(&json!({"channels": []})), big);
        assert_eq!(reply["code"], "PAYLOAD_TOO_LARGE");
    }
}
