//! One connected dashboard, whatever its transport: what it asked for, what
//! it may see, and the answers to its `subscribe` / `unsubscribe` /
//! `heartbeat` events. Socket.IO and plain WebSocket both call
//! [`Client::handle`], so the two endpoints behave identically by
//! construction.

use crate::auth::Identity;
use crate::delivery::Delivery;
use crate::frame::Frame;
use crate::limits::{InboundGuard, Verdict};
use crate::metrics;
use crate::outbox::{Closing, Outbox};
use crate::rooms::ClientId;
use crate::session::{self, SessionRecord};
use crate::state::AppState;
use protocol::error_code::ErrorPayload;
use protocol::{Channel, ErrorCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a connection counts against its user's cap without a refresh.
pub const CONNECTION_TTL: Duration = Duration::from_secs(30);
/// How long a replay waits for the writer to make room in the outbox.
const REPLAY_PAUSE: Duration = Duration::from_millis(5);

/// A connection that passed authentication and the connection cap, with
/// the session it starts or resumes. Made before the transport says yes.
#[derive(Debug, Clone)]
pub struct Admission {
    pub id: ClientId,
    pub identity: Identity,
    pub session: String,
    pub resumed: Option<SessionRecord>,
}

impl Admission {
    /// The key this connection is counted under in the per-user cap.
    pub fn connection_key(&self, replica: &str) -> String {
        format!("{replica}:{}", self.id)
    }
}

/// Checks the per-user connection cap and looks up a session to resume.
/// A session is resumed only by the user (`sub`) and account it belongs to.
/// If the store is unreachable the connection is let in without resume.
pub async fn admit(
    app: &Arc<AppState>,
    identity: Identity,
    requested: Option<&str>,
) -> Result<Admission, ErrorPayload> {
    if app.is_draining() {
        return Err(ErrorPayload::new(
            ErrorCode::UpstreamUnavailable,
            "Server is draining",
            "reconnect to another replica",
        ));
    }
    let mut admission = Admission {
        id: app.next_client_id(),
        identity,
        session: session::new_id(),
        resumed: None,
    };
    let key = admission.connection_key(&app.replica_id);
    let cap = app.config.max_connections_per_user;
    match app
        .sessions
        .acquire(&admission.identity.user, &key, cap, CONNECTION_TTL)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return Err(ErrorPayload::new(
                ErrorCode::RateLimited,
                "Too many connections",
                format!("at most {cap} concurrent connections per user"),
            ))
        }
        Err(e) => tracing::warn!(error = %e, "connection cap not checked (store unreachable)"),
    }
    if let Some(id) = requested.filter(|id| session::is_well_formed(id)) {
        match app.sessions.load(id).await {
            Ok(Some(record))
                if record.user == admission.identity.user
                    && record.account == admission.identity.account =>
            {
                admission.session = id.to_owned();
                admission.resumed = Some(record);
            }
            Ok(_) => tracing::debug!("session not resumable: unknown, expired or not this user's"),
            Err(e) => tracing::warn!(error = %e, "session not resumable (store unreachable)"),
        }
    }
    Ok(admission)
}

pub struct Client {
    pub id: ClientId,
    pub identity: Identity,
    pub session: String,
    pub transport: &'static str,
    pub outbox: Arc<Outbox>,
    joined: Mutex<[bool; 6]>,
    delivery: Mutex<Delivery>,
    guard: InboundGuard,
    app: Arc<AppState>,
}

impl Client {
    /// Registers an admitted client, queues its `connected` greeting and,
    /// for a resumed session, rejoins its channels and replays what it
    /// missed.
    pub fn connect(
        app: &Arc<AppState>,
        admission: Admission,
        transport: &'static str,
    ) -> Arc<Client> {
        let client = Arc::new(Client {
            id: admission.id,
            identity: admission.identity,
            session: admission.session,
            transport,
            outbox: Arc::new(Outbox::new(
                app.config.client_queue_limit,
                app.config.state_backlog,
            )),
            joined: Mutex::new([false; 6]),
            delivery: Mutex::new(Delivery::new(
                app.config.delivery_settle(),
                app.config.socket_buffer as u64,
            )),
            guard: InboundGuard::new(app.limits()),
            app: app.clone(),
        });
        app.register(client.clone());
        metrics::client_connected(transport);
        client.outbox.push(Arc::new(Frame::control(
            "connected",
            &json!({
                "message": "Connected to MT5 Trading Dashboard",
                "server_time": protocol::time::now_rfc3339(),
                "session": client.session,
                "resumed": admission.resumed.is_some(),
                "replica": app.replica_id,
            }),
        )));
        if let Some(record) = admission.resumed {
            client.resume(record);
        }
        client
    }

    /// Rejoins a resumed session's channels: state channels get their
    /// snapshot, event channels replay every entry after the checkpoint and
    /// then go live without a gap.
    fn resume(self: &Arc<Self>, record: SessionRecord) {
        let channels: Vec<Channel> = record
            .channels
            .iter()
            .filter_map(|n| n.parse().ok())
            .filter(|c| self.identity.may_see(*c))
            .collect();
        self.reply(
            "subscribed",
            &json!({ "channels": channels.iter().map(|c| c.name()).collect::<Vec<_>>(), "resumed": true }),
        );
        let account = &self.identity.account;
        let mut replays = Vec::new();
        {
            let mut joined = self.joined();
            let mut delivery = self.delivery();
            for &channel in &channels {
                joined[channel.index()] = true;
                if channel.is_state() {
                    self.app.rooms.join(account, channel, self.id, &self.outbox);
                } else {
                    let after = match channel {
                        Channel::Logs => record.logs_seq,
                        _ => record.signals_seq,
                    };
                    delivery.start_at(channel, after);
                    self.app
                        .rooms
                        .join_catching_up(account, channel, self.id, &self.outbox);
                    replays.push((channel, after));
                }
            }
        }
        metrics::session_resumed();
        let client = self.clone();
        tokio::spawn(async move {
            for (channel, after) in replays {
                if !client.replay(channel, after).await {
                    return;
                }
            }
        });
    }

    /// Queues a channel's entries after `after`: first from the store, then
    /// those held back meanwhile, batch by batch, never filling more than
    /// half the outbox, so that a long absence is caught up at the socket's
    /// pace instead of overflowing the queue; then the member goes live.
    /// False if the client left meanwhile.
    async fn replay(&self, channel: Channel, after: u64) -> bool {
        let account = &self.identity.account;
        let room = (self.app.config.client_queue_limit / 2).max(1);
        let mut upto = after;
        let mut batch = match crate::relay::history(&self.app, account, channel, after).await {
            Ok(frames) => frames,
            Err(e) => {
                tracing::warn!(error = %e, %channel, "cannot replay missed entries");
                self.error(
                    ErrorCode::UpstreamUnavailable,
                    "Missed entries could not be replayed",
                    format!("{channel} history is unavailable right now"),
                );
                Vec::new()
            }
        };
        loop {
            // A big batch took a while: more may have been held back.
            let more = batch.len() >= room;
            for frame in batch {
                if frame.seq.is_some_and(|s| s <= upto) {
                    continue;
                }
                upto = upto.max(frame.seq.unwrap_or(0));
                while self.outbox.len() >= room {
                    if self.outbox.closing().is_some() {
                        return false;
                    }
                    tokio::time::sleep(REPLAY_PAUSE).await;
                }
                if !self.outbox.push(frame) {
                    return false;
                }
            }
            if !more {
                break;
            }
            batch = self.app.rooms.take_held(account, channel, self.id);
        }
        self.app
            .rooms
            .finish_catch_up(account, channel, self.id, upto);
        true
    }

    fn joined(&self) -> MutexGuard<'_, [bool; 6]> {
        self.joined.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn delivery(&self) -> MutexGuard<'_, Delivery> {
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
                    self.app.config.max_payload_bytes
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
                    truncate(other)
                ),
            ),
        }
    }

    /// The client went away: leave every room, forget it, store its last
    /// checkpoint and free its slot in the user's connection cap.
    pub fn gone(&self) {
        self.app.rooms.leave_all(&self.identity.account, self.id);
        self.outbox.close(Closing::Gone);
        if !self.app.unregister(self.id) {
            return;
        }
        metrics::client_disconnected(self.transport);
        let record = self.checkpoint();
        let app = self.app.clone();
        let session = self.session.clone();
        let key = format!("{}:{}", app.replica_id, self.id);
        // Tracked, so a drain waits for it before the process exits.
        self.app.writers.spawn(async move {
            let ttl = app.config.resume_window();
            if let Err(e) = app.sessions.save(&session, &record, ttl).await {
                tracing::warn!(error = %e, "session not saved");
            }
            if let Err(e) = app.sessions.release(&record.user, &key).await {
                tracing::debug!(error = %e, "connection slot not released; it will expire");
            }
        });
    }

    fn subscribe(&self, data: Option<&Value>) -> Value {
        let names = match channel_list(data) {
            Ok(names) => names,
            Err(details) => {
                return self.error(
                    ErrorCode::InvalidPayload,
                    "Invalid subscribe payload",
                    details,
                )
            }
        };
        let wanted = self.vet(names);
        let payload = json!({ "channels": wanted.iter().map(|c| c.name()).collect::<Vec<_>>() });
        // The reply goes out before the snapshots the joins queue.
        self.reply("subscribed", &payload);
        let mut joined = self.joined();
        for channel in wanted {
            if !joined[channel.index()] {
                joined[channel.index()] = true;
                // Held across the join so that nothing written meanwhile
                // is counted before the session's starting point.
                let mut delivery = self.delivery();
                let last =
                    self.app
                        .rooms
                        .join(&self.identity.account, channel, self.id, &self.outbox);
                if !channel.is_state() {
                    // Entries up to the join are not this session's.
                    delivery.start_at(channel, last);
                }
            }
        }
        payload
    }

    fn unsubscribe(&self, data: Option<&Value>) -> Value {
        let names = match channel_list(data) {
            Ok(names) => names,
            Err(details) => {
                return self.error(
                    ErrorCode::InvalidPayload,
                    "Invalid unsubscribe payload",
                    details,
                )
            }
        };
        let leaving = self.vet(names);
        {
            let mut joined = self.joined();
            for channel in &leaving {
                if std::mem::take(&mut joined[channel.index()]) {
                    self.app
                        .rooms
                        .leave(&self.identity.account, *channel, self.id);
                }
            }
        }
        let payload = json!({ "channels": leaving.iter().map(|c| c.name()).collect::<Vec<_>>() });
        self.reply("unsubscribed", &payload);
        payload
    }

    fn heartbeat(&self, data: Option<&Value>) -> Value {
        let client_timestamp = match data {
            None | Some(Value::Null) => Value::Null,
            Some(Value::Object(map)) => match map.get("timestamp") {
                None | Some(Value::Null) => Value::Null,
                Some(ts @ Value::Number(_)) => ts.clone(),
                Some(_) => {
                    return self.error(
                        ErrorCode::InvalidPayload,
                        "Invalid heartbeat payload",
                        "`timestamp` must be a number (epoch milliseconds)",
                    )
                }
            },
            Some(_) => {
                return self.error(
                    ErrorCode::InvalidPayload,
                    "Invalid heartbeat payload",
                    "expected {\"timestamp\": <epoch ms>}",
                )
            }
        };
        let payload = json!({
            "timestamp": protocol::time::now_epoch_ms(),
            "client_timestamp": client_timestamp,
        });
        self.reply("heartbeat_ack", &payload);
        payload
    }

    /// Known, allowed channels in request order without repeats; one
    /// `error` event for each name that is unknown or not allowed.
    fn vet(&self, names: &[Value]) -> Vec<Channel> {
        let mut ok = Vec::new();
        for name in names {
            let text = name.as_str().unwrap_or_default();
            match text.parse::<Channel>() {
                Ok(c) if !self.identity.may_see(c) => {
                    self.error(
                        ErrorCode::ForbiddenChannel,
                        "Channel not allowed",
                        format!("your token does not allow `{c}`"),
                    );
                }
                Ok(c) => {
                    if !ok.contains(&c) {
                        ok.push(c)
                    }
                }
                Err(_) => {
                    self.error(
                        ErrorCode::UnknownChannel,
                        "Unknown channel",
                        format!(
                            "{} is not one of quotes, positions, orders, logs, signals, account",
                            truncate(&name.to_string())
                        ),
                    );
                }
            }
        }
        ok
    }

    fn reply(&self, event: &'static str, payload: &Value) {
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

/// `{"channels": [...]}` → the list, or why not.
fn channel_list(data: Option<&Value>) -> Result<&[Value], String> {
    match data {
        Some(Value::Object(map)) => match map.get("channels") {
            Some(Value::Array(list)) => Ok(list),
            Some(_) => Err("`channels` must be a list of channel names".into()),
            None => Err("expected {\"channels\": [...]}".into()),
        },
        _ => Err("expected {\"channels\": [...]}".into()),
    }
}

/// Client-supplied text echoed in errors is cut short.
fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn client(allowed: Vec<Channel>) -> (Arc<AppState>, Arc<Client>) {
        let app = AppState::for_tests(Config::for_tests());
        let identity = Identity {
            user: "alice".into(),
            account: "demo".into(),
            allowed,
            expires_at: i64::MAX,
        };
        let admission = Admission {
            id: app.next_client_id(),
            identity,
            session: "s1".into(),
            resumed: None,
        };
        let c = Client::connect(&app, admission, "test");
        (app, c)
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
        let mut config = Config::for_tests();
        config.client_queue_limit = 10;
        let app = AppState::for_tests(config);
        let log = |seq| Arc::new(Frame::from_bus(Channel::Logs, None, b"{}", Some(seq)).unwrap());
        for seq in 1..=100 {
            app.rooms.publish("demo", Channel::Logs, log(seq));
        }
        let admission = Admission {
            id: app.next_client_id(),
            identity: Identity {
                user: "alice".into(),
                account: "demo".into(),
                allowed: Channel::ALL.to_vec(),
                expires_at: i64::MAX,
            },
            session: "s1".into(),
            resumed: Some(SessionRecord {
                user: "alice".into(),
                account: "demo".into(),
                channels: vec!["logs".into()],
                logs_seq: 20,
                signals_seq: 0,
            }),
        };
        let c = Client::connect(&app, admission, "test");
        // A slow reader, while new entries keep arriving.
        let mut seqs = Vec::new();
        let mut next = 101;
        while seqs.last() != Some(&130) {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if next <= 130 {
                app.rooms.publish("demo", Channel::Logs, log(next));
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
        let (_app, c) = client(vec![Channel::Quotes, Channel::Logs]);
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
        let (_app, c) = client(Channel::ALL.to_vec());
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
        let (_app, c) = client(Channel::ALL.to_vec());
        let ack = c.handle("heartbeat", Some(&json!({"timestamp": 42})), 10);
        assert_eq!(ack["client_timestamp"], 42);
        assert!(ack["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
        c.handle("subscribe", Some(&json!({"channels": ["logs"]})), 10);
        let left = c.handle("unsubscribe", Some(&json!({"channels": ["logs"]})), 10);
        assert_eq!(left, json!({"channels": ["logs"]}));
    }

    #[test]
    fn oversized_payloads_are_refused() {
        let (app, c) = client(Channel::ALL.to_vec());
        let big = app.config.max_payload_bytes + 1;
        let reply = c.handle("subscribe", Some(&json!({"channels": []})), big);
        assert_eq!(reply["code"], "PAYLOAD_TOO_LARGE");
    }
}
