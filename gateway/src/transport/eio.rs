//! Our own Socket.IO path for WebSocket-only clients: Engine.IO v4 and
//! Socket.IO v5 over one WebSocket (`/socket.io/?EIO=4&transport=websocket`
//! without a `sid`, what `io(url, {transports: ["websocket"]})` opens).
//!
//! Why not socketioxide for these: its emit serialises every event once per
//! socket and pushes it through two more tasks and a 128-packet queue that
//! fails when full. Here a relayed message is one `Arc<Frame>` whose packet
//! text (`42["quotes",{…}]`) is built once for every recipient, the
//! client's conflating outbox sits right in front of the socket, and the
//! writer puts every queued frame into one write. Polling clients, and
//! clients that start on polling and upgrade, stay with socketioxide
//! (`SOCKETIO_FAST_PATH=false` sends everyone there).
//!
//! The protocol, as its two documents say: the open packet with the
//! configured timers; the server pings every `PING_INTERVAL_MS` and drops
//! a client that has not answered within `PING_TIMEOUT_MS`; a connection
//! that has not joined `/` within `CONNECT_TIMEOUT_MS` is closed; CONNECT
//! to another namespace gets `44/nsp,{"message":"Invalid namespace"}` and
//! the connection stays; `41` leaves `/` and keeps the connection; an
//! event with binary attachments gets one `error` (and its ack) once its
//! attachments are in; anything malformed (see `sio_packet`) closes the
//! connection, with a close frame. Events are handled in arrival order by
//! this one task, and each ack is queued right behind its reply event.
//!
//! While the client is joined its writer is the only one writing to the
//! socket (the reader queues pings and answers in the outbox); before and
//! after, the reader writes itself.

use crate::app::AppState;
use crate::fanout::frame::Frame;
use crate::observability::metrics;
use crate::session::admission::Admission;
use crate::session::store;
use crate::session::Client;
use crate::transport::credentials::{self, query_param, Credentials};
use crate::transport::sio_packet::{self, Packet};
use crate::transport::websocket::{self, await_close_answer};
use crate::transport::writer::{self, FrameSink, Sent};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use protocol::ErrorCode;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::time::Instant;

/// Routes a new Engine.IO WebSocket connection to [`serve`]; everything
/// else (polling, upgrades with a `sid`) goes on to socketioxide.
pub async fn intercept(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if !app.config.socketio_fast_path || !is_new_websocket(&request) {
        return next.run(request).await;
    }
    let query = request.uri().query().map(str::to_owned);
    let headers = request.headers().clone();
    let (mut parts, body) = request.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => websocket::sized(upgrade, app.config.hard_payload_limit())
            .on_upgrade(move |socket| serve(app, socket, query, headers)),
        Err(_) => next.run(Request::from_parts(parts, body)).await,
    }
}

fn is_new_websocket(request: &Request) -> bool {
    let query = request.uri().query();
    request.uri().path().trim_end_matches('/') == "/socket.io"
        && query_param(query, "EIO").as_deref() == Some("4")
        && query_param(query, "transport").as_deref() == Some("websocket")
        && query_param(query, "sid").is_none()
}

/// Close code for a client that broke the protocol.
const PROTOCOL_ERROR: u16 = 1002;
/// Close code for an ordinary end (timeouts, the client's own close).
const NORMAL: u16 = 1000;
/// Close code for a message past the transport's size limit.
const TOO_BIG: u16 = 1009;

/// The socket's sending half, handed between the reader (while no client
/// is joined) and the client's writer (while one is).
type SharedTx = Arc<tokio::sync::Mutex<SplitSink<WebSocket, Message>>>;

/// The heartbeat: when the next ping is due, or since when one waits for
/// its pong.
enum Heartbeat {
    /// The next ping goes out then.
    PingAt(Instant),
    /// A ping is out; without a pong by then, the client is dropped.
    PongBy(Instant),
}

/// A client joined to `/`: its state and the task writing its outbox.
struct Joined {
    /// The dashboard's state, shared with the fan-out.
    client: Arc<Client>,
    /// The task draining its outbox into the socket.
    writer: tokio::task::JoinHandle<()>,
}

/// An event whose binary attachments are still coming.
struct Pending {
    /// The event's name (named in the `error` it gets).
    name: String,
    /// The client's ack id, if it asked for one.
    ack: Option<u64>,
    /// Binary frames still to come.
    missing: usize,
}

/// How a connection ends.
enum End {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The writer has closed it already (goodbye sent).
    Closed,
    /// The client went away.
    Gone,
}

/// One Engine.IO connection, from the open packet to the close; it may
/// join and leave `/` more than once.
struct Session {
    /// The gateway's handles.
    app: Arc<AppState>,
    /// The socket's sending half.
    tx: SharedTx,
    /// The Engine.IO session id (also the namespace's socket id).
    sid: String,
    /// The upgrade request's query string (`?token=`, `?session=`).
    query: Option<String>,
    /// The upgrade request's headers (`Authorization: Bearer`).
    headers: HeaderMap,
    /// The client, while it is in `/`.
    joined: Option<Joined>,
    /// Whether the client ever joined (before that, only CONNECT is valid).
    ever_joined: bool,
    /// Where the ping/pong cycle stands.
    heartbeat: Heartbeat,
    /// An event waiting for its binary attachments.
    pending: Option<Pending>,
}

async fn serve(app: Arc<AppState>, socket: WebSocket, query: Option<String>, headers: HeaderMap) {
    let (tx, mut rx) = socket.split();
    let tx: SharedTx = Arc::new(tokio::sync::Mutex::new(tx));
    let sid = store::new_id();
    let open = json!({
        "sid": sid,
        "upgrades": [],
        "pingInterval": app.config.engineio.ping_interval_ms,
        "pingTimeout": app.config.engineio.ping_timeout_ms,
        "maxPayload": app.config.hard_payload_limit(),
    });
    if tx
        .lock()
        .await
        .send(text(format!("0{open}")))
        .await
        .is_err()
    {
        return;
    }
    let connect_by = Instant::now() + app.config.connect_timeout();
    let mut session = Session {
        heartbeat: Heartbeat::PingAt(Instant::now() + app.config.engineio.ping_interval()),
        app,
        tx,
        sid,
        query,
        headers,
        joined: None,
        ever_joined: false,
        pending: None,
    };
    let end = session.run(&mut rx, connect_by).await;
    session.finish(end, &mut rx).await;
}

impl Session {
    async fn run(&mut self, rx: &mut SplitStream<WebSocket>, connect_by: Instant) -> End {
        loop {
            let timer = match self.heartbeat {
                Heartbeat::PingAt(at) | Heartbeat::PongBy(at) => at,
            };
            let connect_by = (!self.ever_joined).then_some(connect_by);
            let message = tokio::select! {
                message = rx.next() => message,
                _ = tokio::time::sleep_until(timer) => {
                    match self.heartbeat {
                        Heartbeat::PingAt(_) => {
                            self.heartbeat = Heartbeat::PongBy(Instant::now() + self.app.config.engineio.ping_timeout());
                            if self.send("2".to_owned()).await.is_err() {
                                return End::Gone;
                            }
                            continue;
                        }
                        Heartbeat::PongBy(_) => return End::Close(NORMAL, "ping timeout"),
                    }
                }
                _ = sleep_until_some(connect_by) => return End::Close(NORMAL, "connect timeout"),
                _ = writer_done(&mut self.joined) => return End::Closed,
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "socket.io websocket read failed");
                    return End::Close(TOO_BIG, "message too big or unreadable");
                }
                None => return End::Gone,
            };
            let outcome = match message {
                Message::Text(packet) => self.on_text(&packet).await,
                Message::Binary(_) => self.on_binary(),
                Message::Close(_) => return End::Gone,
                Message::Ping(_) | Message::Pong(_) => Ok(()),
            };
            if let Err(end) = outcome {
                return end;
            }
        }
    }

    /// One Engine.IO packet.
    async fn on_text(&mut self, packet: &str) -> Result<(), End> {
        // Every frame of a joined client, pings and malformed ones
        // included, passes the rate limit before it is parsed.
        if let Some(joined) = self.joined.as_ref() {
            if joined.client.admit().is_some() {
                return Ok(());
            }
        }
        match packet.as_bytes().first() {
            Some(b'4') => self.on_message(&packet[1..]).await,
            Some(b'3') if packet.len() == 1 => {
                if let Heartbeat::PongBy(_) = self.heartbeat {
                    self.heartbeat = Heartbeat::PingAt(
                        Instant::now() + self.app.config.engineio.ping_interval(),
                    );
                }
                Ok(())
            }
            Some(b'2') if packet.len() == 1 => {
                self.send("3".to_owned()).await.map_err(|_| End::Gone)
            }
            Some(b'1') if packet.len() == 1 => Err(End::Close(NORMAL, "closed by the client")),
            _ => Err(End::Close(PROTOCOL_ERROR, "not an Engine.IO v4 packet")),
        }
    }

    /// A binary frame: an attachment of the pending event, or a protocol
    /// error.
    fn on_binary(&mut self) -> Result<(), End> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(End::Close(PROTOCOL_ERROR, "unexpected binary frame"));
        };
        pending.missing -= 1;
        if pending.missing == 0 {
            if let (Some(pending), Some(joined)) = (self.pending.take(), self.joined.as_ref()) {
                let reply = joined.client.error(
                    ErrorCode::InvalidPayload,
                    "Binary attachments are not supported",
                    format!("`{}` was not processed: send JSON", pending.name),
                );
                if let Some(id) = pending.ack {
                    joined.client.outbox.push(Arc::new(Frame::ack(id, &reply)));
                }
            }
        }
        Ok(())
    }

    /// A Socket.IO packet (an Engine.IO MESSAGE without its `4`).
    async fn on_message(&mut self, text: &str) -> Result<(), End> {
        if self.pending.is_some() {
            return Err(End::Close(PROTOCOL_ERROR, "attachments missing"));
        }
        let max = self.app.config.limits.max_payload_bytes;
        if text.len() > max {
            if let (Some(joined), Some(ack)) = (self.joined.as_ref(), oversize_event(text)) {
                let reply = joined.client.handle("message", None, text.len());
                if let Some(id) = ack {
                    joined.client.outbox.push(Arc::new(Frame::ack(id, &reply)));
                }
                return Ok(());
            }
        }
        let packet = match sio_packet::parse(text) {
            Ok(packet) => packet,
            Err(e) => {
                tracing::debug!(error = %e, "invalid socket.io packet: closing");
                if text.starts_with('0') && self.joined.is_none() {
                    // A CONNECT we cannot read: refused, as socketioxide does.
                    let refusal = json!({ "message": ErrorCode::InvalidPayload.as_str() });
                    let _ = self.send(format!("44{refusal}")).await;
                }
                return Err(End::Close(PROTOCOL_ERROR, "invalid Socket.IO packet"));
            }
        };
        match packet {
            Packet::Connect { nsp, .. } if nsp != "/" => {
                let refusal = json!({ "message": "Invalid namespace" });
                self.send(format!("44{nsp},{refusal}"))
                    .await
                    .map_err(|_| End::Gone)
            }
            Packet::Connect { auth, .. } => self.join(auth).await,
            Packet::Disconnect { nsp } => {
                if nsp == "/" {
                    self.leave().await;
                }
                Ok(())
            }
            Packet::Event { .. } | Packet::Ack { .. } if !self.ever_joined => {
                Err(End::Close(PROTOCOL_ERROR, "no CONNECT first"))
            }
            Packet::Event {
                nsp,
                ack,
                name,
                args,
                attachments,
            } => {
                let Some(joined) = self.joined.as_ref().filter(|_| nsp == "/") else {
                    // Not (or no longer) in that namespace: ignored.
                    return Ok(());
                };
                if attachments > 0 {
                    self.pending = Some(Pending {
                        name,
                        ack,
                        missing: attachments,
                    });
                    return Ok(());
                }
                let reply = joined.client.handle(&name, args.first(), text.len());
                if let Some(id) = ack {
                    joined.client.outbox.push(Arc::new(Frame::ack(id, &reply)));
                }
                Ok(())
            }
            Packet::Ack { .. } => Ok(()),
        }
    }

    /// CONNECT to `/`: admission, then `40{"sid"}`, the client and its
    /// writer; a refusal is `44{"message": CODE}` and the connection stays.
    async fn join(&mut self, auth: Option<Value>) -> Result<(), End> {
        if self.joined.is_some() {
            return Ok(()); // Already in: nothing to do.
        }
        let credentials = Credentials::read(auth.as_ref(), self.query.as_deref(), &self.headers);
        let admission = match credentials::admit(&self.app, &credentials).await {
            Ok(admission) => admission,
            Err(refusal) => {
                let refusal = json!({ "message": refusal.code.as_str() });
                return self
                    .send(format!("44{refusal}"))
                    .await
                    .map_err(|_| End::Gone);
            }
        };
        let reply = format!("40{}", json!({ "sid": self.sid }));
        self.send(reply).await.map_err(|_| End::Gone)?;
        self.start(admission);
        Ok(())
    }

    /// The joined client and the task writing its outbox.
    fn start(&mut self, admission: Admission) {
        let client = Client::connect(&self.app.sessions, admission, metrics::SOCKETIO_FAST);
        let sink = EioSink {
            tx: self.tx.clone(),
        };
        let writer = self
            .app
            .sessions
            .tasks
            .spawn(writer::run(client.clone(), sink));
        self.joined = Some(Joined { client, writer });
        self.ever_joined = true;
    }

    /// `41`: the client leaves `/`; the connection stays.
    async fn leave(&mut self) {
        if let Some(joined) = self.joined.take() {
            joined.client.gone();
            let _ = tokio::time::timeout(writer::GOODBYE_PATIENCE, joined.writer).await;
        }
    }

    /// Sends a packet: through the outbox while a client is joined (its
    /// writer owns the socket then), directly otherwise.
    async fn send(&self, packet: String) -> Result<(), ()> {
        match &self.joined {
            Some(joined) => {
                joined.client.outbox.push(Arc::new(Frame::packet(packet)));
                Ok(())
            }
            None => self
                .tx
                .lock()
                .await
                .send(text(packet))
                .await
                .map_err(|_| ()),
        }
    }

    /// Ends the connection as `end` says.
    async fn finish(mut self, end: End, rx: &mut SplitStream<WebSocket>) {
        let writer_closed = matches!(end, End::Closed);
        if let Some(joined) = self.joined.take() {
            joined.client.gone();
            if !writer_closed {
                // The writer may be mid-write: give it the time it may take.
                let _ = tokio::time::timeout(writer::GOODBYE_PATIENCE * 2, joined.writer).await;
            }
        }
        match end {
            End::Close(code, reason) => {
                let frame = Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                }));
                let sent = tokio::time::timeout(writer::GOODBYE_PATIENCE, async {
                    self.tx.lock().await.send(frame).await
                })
                .await;
                if matches!(sent, Ok(Ok(()))) {
                    await_close_answer(rx).await;
                }
            }
            End::Closed => await_close_answer(rx).await,
            End::Gone => {}
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Completes when the joined client's writer has ended by itself (it said
/// goodbye and closed); never without a joined client.
async fn writer_done(joined: &mut Option<Joined>) {
    match joined {
        Some(joined) => {
            let _ = (&mut joined.writer).await;
        }
        None => std::future::pending().await,
    }
}

/// For an event too large to parse: `Some(ack id)` if it looks like an
/// EVENT to `/` (`2[<id>][…`), so the client still gets its answer.
pub(crate) fn oversize_event(text: &str) -> Option<Option<u64>> {
    let rest = text.strip_prefix('2')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if !rest[digits..].starts_with('[') {
        return None;
    }
    Some(rest[..digits].parse().ok())
}

/// The client's writer end of the socket: Socket.IO packets, `41` and a
/// close frame to end.
struct EioSink {
    /// The socket's sending half, shared with the session.
    tx: SharedTx,
}

impl FrameSink for EioSink {
    async fn send(&mut self, frame: &Frame) -> Sent {
        match self
            .tx
            .lock()
            .await
            .feed(Message::Text(frame.sio_text()))
            .await
        {
            Ok(()) => Sent::Ok,
            Err(_) => Sent::Closed,
        }
    }

    async fn flush(&mut self) -> Sent {
        match self.tx.lock().await.flush().await {
            Ok(()) => Sent::Ok,
            Err(_) => Sent::Closed,
        }
    }

    async fn close(&mut self) {
        // `41` before the close makes socket.io-client report "io server
        // disconnect" (and not reconnect by itself).
        let mut tx = self.tx.lock().await;
        let _ = tx.feed(text("41".to_owned())).await;
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code: GOING_AWAY,
                reason: Utf8Bytes::from_static("disconnected"),
            })))
            .await;
    }
}

/// Close code for a server that sends the client away (drain, slow
/// consumer, token expiry).
const GOING_AWAY: u16 = 1001;

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

#[cfg(test)]
mod tests {
    use super::oversize_event;

    #[test]
    fn oversize_events_keep_their_ack_id() {
        assert_eq!(oversize_event(r#"27["x",1]"#), Some(Some(7)));
        assert_eq!(oversize_event(r#"2["x",1]"#), Some(None));
        assert_eq!(oversize_event(r#"0{"token":1}"#), None);
        assert_eq!(oversize_event("2/admin,["), None);
    }
}
