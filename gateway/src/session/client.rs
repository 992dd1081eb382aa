//! One connected dashboard, whatever its transport: who it is, what it
//! joined, its queue, and the entry point for its inbound events.
//! Socket.IO and plain WebSocket both call [`Client::handle`], so the two
//! endpoints behave identically by construction; the events themselves are
//! answered in `commands`, a resumed session is replayed in `replay`.

use crate::fanout::frame::Frame;
use crate::fanout::outbox::{Closing, Outbox};
use crate::fanout::rooms::ClientId;
use crate::observability::metrics;
use crate::session::admission::Admission;
use crate::session::auth::Identity;
use crate::session::delivery::Delivery;
use crate::session::limits::{InboundGuard, Verdict};
use crate::session::store::SessionRecord;
use crate::session::Handles;
use protocol::error_code::ErrorPayload;
use protocol::{Channel, ErrorCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

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
    /// Rooms, history, store, registry and limits.
    pub(super) handles: Handles,
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
        let limits = handles.limits;
        let Admission {
            id,
            identity,
            session,
            resumed,
            slot,
        } = admission;
        // From here on the client gives the slot back when it goes.
        slot.keep();
        let client = Arc::new(Client {
            id,
            identity,
            session,
            transport,
            outbox: Arc::new(Outbox::new(limits.queue_limit, limits.state_backlog)),
            joined: Mutex::new([false; 6]),
            delivery: Mutex::new(Delivery::new(
                limits.delivery_settle,
                limits.transport_queue,
            )),
            guard: InboundGuard::new(limits.inbound),
            handles: handles.clone(),
        });
        handles.registry.register(client.clone());
        metrics::client_connected(transport);
        client.outbox.push(Arc::new(Frame::control(
            "connected",
            &json!({
                "message": "Connected to MT5 Trading Dashboard",
                "server_time": protocol::time::now_rfc3339(),
                "session": client.session,
                "resumed": resumed.is_some(),
                "replica": handles.registry.replica(),
            }),
        )));
        if let Some(record) = resumed {
            client.resume(record);
        }
        client
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
        let (logs_seq, signals_seq) = self.delivery().safe(Instant::now());
        SessionRecord {
            user: self.identity.user.clone(),
            account: self.identity.account.clone(),
            channels,
            logs_seq,
            signals_seq,
        }
    }

    /// Handles one inbound event. `size` is the payload's encoded length.
    /// Returns the reply payload, which Socket.IO also sends as the
    /// acknowledgement when the client asked for one.
    pub fn handle(&self, event: &str, data: Option<&Value>, size: usize) -> Value {
        match self.guard.check_rate() {
            Verdict::Allow => {}
            Verdict::Limited => {
                return self.error(
                    ErrorCode::RateLimited,
                    "Too many events",
                    format!("slow down: {event} was not processed"),
                )
            }
            Verdict::Abusive => {
                let first = self.outbox.close(Closing::Told {
                    reason: "Rate limit exceeded".into(),
                    reconnect: false,
                });
                if first {
                    metrics::client_cut_off("abuse");
                }
                return json!({"error": "Rate limit exceeded", "code": ErrorCode::RateLimited});
            }
        }
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
            other => self.error(
                ErrorCode::InvalidPayload,
                "Unknown event",
                format!(
                    "`{}` is not an event this server handles (subscribe, unsubscribe, heartbeat)",
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
        self.outbox.close(Closing::Gone);
        if !handles.registry.unregister(self.id) {
            return;
        }
        metrics::client_disconnected(self.transport);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::{admission, handles};
    use std::time::Duration;

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

    #[test]
    fn connected_then_subscribed_with_errors_per_bad_channel() {
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

    #[test]
    fn invalid_payloads_get_invalid_payload() {
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

    #[test]
    fn heartbeat_echoes_and_unsubscribe_leaves() {
        let (_h, c) = client(Channel::ALL.to_vec());
        let ack = c.handle("heartbeat", Some(&json!({"timestamp": 42})), 10);
        assert_eq!(ack["client_timestamp"], 42);
        assert!(ack["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
        c.handle("subscribe", Some(&json!({"channels": ["logs"]})), 10);
        let left = c.handle("unsubscribe", Some(&json!({"channels": ["logs"]})), 10);
        assert_eq!(left, json!({"channels": ["logs"]}));
    }

    #[test]
    fn oversized_payloads_are_refused() {
        let (h, c) = client(Channel::ALL.to_vec());
        let big = h.limits.inbound.max_payload_bytes + 1;
        let reply = c.handle("subscribe", Some(&json!({"channels": []})), big);
        assert_eq!(reply["code"], "PAYLOAD_TOO_LARGE");
    }
}
