//! Our own Socket.IO path (the "fast path", `SOCKETIO_FAST_PATH=true`):
//! Engine.IO v4 and Socket.IO v5 for every `/socket.io/` request, on both
//! transports. A WebSocket-only session (`transport=websocket` without a
//! `sid`, what `io(url, {transports: ["websocket"]})` opens), and a
//! long-polling one (`transport=polling`, socket.io-client's default),
//! which may then upgrade to a WebSocket (`transport=websocket&sid=…`,
//! `2probe`/`3probe`, `5`). The polling transport itself (sid table,
//! `GET`/`POST`, the 400s) is `polling`; what the packets mean is here,
//! once, for both.
//!
//! Why not socketioxide: its emit serialises every event once per
//! socket and pushes it through two more tasks and a 128-packet queue that
//! fails when full. Here a relayed message is one `Arc<Frame>` whose packet
//! text (`42["quotes",{…}]`) is built once for every recipient, the
//! client's conflating outbox sits right in front of the socket, and the
//! writer puts every queued frame into one write. And engineioxide 0.17
//! breaks the protocol in ways we cannot change (its first ping at once,
//! ack ids over i64 dropped, events in the CONNECT's POST dropped, closes
//! without a close frame). `SOCKETIO_FAST_PATH=false` sends everyone to
//! socketioxide (`socketio`).
//!
//! The protocol, as its two documents say: the open packet with the
//! configured timers; the server pings every `PING_INTERVAL_MS` (the first
//! time one interval after the open) and drops a client that has not
//! answered within `PING_TIMEOUT_MS`; a session that has not joined `/`
//! within `CONNECT_TIMEOUT_MS` is closed; CONNECT to another namespace
//! gets `44/nsp,{"message":"Invalid namespace"}` and the connection stays;
//! `41` leaves `/` and keeps the connection; an event with binary
//! attachments gets one `error` (and its ack) once its attachments are in;
//! anything malformed (see `sio_packet`) closes the session (a WebSocket
//! with a close frame; a pending `GET` gets `1`). Every inbound packet of
//! a session, whatever its transport, is handled in arrival order by the
//! session's one task, and each ack is queued right behind its reply
//! event.
//!
//! While the client is joined its writer is the only one writing to the
//! transport (the session queues pings and answers in the outbox); before
//! and after, the session writes itself.

use crate::app::AppState;
use crate::fanout::frame::Frame;
use crate::observability::metrics;
use crate::session::admission::Admission;
use crate::session::store;
use crate::session::Client;
use crate::transport::credentials::{self, query_param, Credentials};
use crate::transport::polling::{self, Broken, EioError, Input, Polling};
use crate::transport::sio_packet::{self, Packet};
use crate::transport::websocket::{
    self, await_close_answer, close_message, GOING_AWAY, NORMAL, PROTOCOL_ERROR, TOO_BIG,
};
use crate::transport::writer::{self, FrameSink, Sent};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use protocol::ErrorCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Takes every Engine.IO request when the fast path is on; everything
/// else (and everything with `SOCKETIO_FAST_PATH=false`) goes on, to
/// socketioxide and the other routes.
pub async fn intercept(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if !app.config.socketio_fast_path || request.uri().path().trim_end_matches('/') != "/socket.io"
    {
        return next.run(request).await;
    }
    let query = request.uri().query();
    if query_param(query, "EIO").as_deref() != Some("4") {
        return EioError::UnsupportedProtocolVersion.into_response();
    }
    let transport = query_param(query, "transport");
    let sid = query_param(query, "sid");
    match (transport.as_deref(), sid) {
        (Some("websocket"), None) => open_websocket(app, request).await,
        (Some("websocket"), Some(sid)) => upgrade(app, request, &sid).await,
        (Some("polling"), None) => open_polling(app, request),
        (Some("polling"), Some(sid)) => {
            let Some(polling) = app.polling.get(&sid) else {
                return EioError::SessionIdUnknown.into_response();
            };
            let limit = app.config.hard_payload_limit();
            let (parts, body) = request.into_parts();
            match parts.method {
                Method::GET => polling.get().await,
                Method::POST => polling.post(&parts.headers, body, limit).await,
                _ => EioError::BadRequest.into_response(),
            }
        }
        _ => EioError::TransportUnknown.into_response(),
    }
}

/// A new WebSocket-only session.
async fn open_websocket(app: Arc<AppState>, request: Request) -> Response {
    let query = request.uri().query().map(str::to_owned);
    let headers = request.headers().clone();
    let (mut parts, _) = request.into_parts();
    let Ok(upgrade) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else {
        return EioError::BadRequest.into_response();
    };
    websocket::sized(upgrade, app.config.hard_payload_limit()).on_upgrade(
        move |socket| async move {
            let (tx, rx) = socket.split();
            let sid = store::new_id();
            let open = open_packet(&app, &sid, &[]);
            let mut tx = Tx::WebSocket(tx);
            if tx.send(Utf8Bytes::from(open)).await.is_err() {
                return;
            }
            let session = Session::new(app, tx, Source::WebSocket(rx), sid, query, headers);
            session.serve().await;
        },
    )
}

/// A new polling session: the open packet is the handshake's answer; the
/// session runs in a task of its own, fed by the session's requests.
fn open_polling(app: Arc<AppState>, request: Request) -> Response {
    if request.method() != Method::GET {
        return EioError::BadHandshakeMethod.into_response();
    }
    let query = request.uri().query().map(str::to_owned);
    let headers = request.headers().clone();
    let sid = store::new_id();
    let (transport, rx) = Polling::new();
    app.polling.insert(sid.clone(), transport.clone());
    let open = open_packet(&app, &sid, &["websocket"]);
    let tx = Tx::Polling(transport.clone());
    let source = Source::Polling { rx, transport };
    let session = Session::new(app, tx, source, sid, query, headers);
    tokio::spawn(session.serve());
    polling::text(open)
}

/// A WebSocket for a polling session: handed to the session, which runs
/// the probe and the switch. One for a session that has upgraded already
/// (or is gone meanwhile) is closed at once, as the protocol asks.
async fn upgrade(app: Arc<AppState>, request: Request, sid: &str) -> Response {
    let Some(transport) = app.polling.get(sid) else {
        return EioError::SessionIdUnknown.into_response();
    };
    let (mut parts, _) = request.into_parts();
    let Ok(upgrade) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else {
        return EioError::BadRequest.into_response();
    };
    websocket::sized(upgrade, app.config.hard_payload_limit()).on_upgrade(
        move |socket| async move {
            let refused = if transport.is_upgraded() {
                Some(socket)
            } else {
                transport.offer(socket).await
            };
            if let Some(mut socket) = refused {
                let _ = socket
                    .send(close_message(PROTOCOL_ERROR, "session already upgraded"))
                    .await;
            }
        },
    )
}

/// `0{…}`: the open packet, with the configured timers.
fn open_packet(app: &AppState, sid: &str, upgrades: &[&str]) -> String {
    let open = json!({
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": app.config.engineio.ping_interval_ms,
        "pingTimeout": app.config.engineio.ping_timeout_ms,
        "maxPayload": app.config.hard_payload_limit(),
    });
    format!("0{open}")
}

/// How long a WebSocket may take to complete an upgrade (`2probe`, `5`)
/// before it is dropped and the session stays on polling.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a session's packets go: a WebSocket, or the polling queue.
enum Tx {
    /// The WebSocket's sending half.
    WebSocket(SplitSink<WebSocket, Message>),
    /// The polling transport (packets wait for the next `GET`).
    Polling(Arc<Polling>),
}

impl Tx {
    /// Hands one packet over (buffered until `flush`); `capped`: the
    /// polling queue may say `Busy`.
    async fn feed(&mut self, packet: Utf8Bytes, capped: bool) -> Sent {
        match self {
            Tx::WebSocket(tx) => match tx.feed(Message::Text(packet)).await {
                Ok(()) => Sent::Ok,
                Err(_) => Sent::Closed,
            },
            Tx::Polling(transport) => transport.push(packet, capped),
        }
    }

    async fn flush(&mut self) -> Sent {
        match self {
            Tx::WebSocket(tx) => match tx.flush().await {
                Ok(()) => Sent::Ok,
                Err(_) => Sent::Closed,
            },
            Tx::Polling(transport) => {
                transport.wake();
                Sent::Ok
            }
        }
    }

    /// One packet, now.
    async fn send(&mut self, packet: Utf8Bytes) -> Result<(), ()> {
        match self.feed(packet, false).await {
            Sent::Ok => match self.flush().await {
                Sent::Ok => Ok(()),
                _ => Err(()),
            },
            _ => Err(()),
        }
    }
}

/// The transport's sending side, handed between the session (while no
/// client is joined) and the client's writer (while one is); an upgrade
/// swaps what is inside.
type SharedTx = Arc<tokio::sync::Mutex<Tx>>;

/// Where a session's packets come from.
enum Source {
    /// The WebSocket's receiving half.
    WebSocket(SplitStream<WebSocket>),
    /// The packets of the session's `POST`s, in order.
    Polling {
        /// What the `POST`s put in.
        rx: mpsc::Receiver<Input>,
        /// The transport (to hear that it broke).
        transport: Arc<Polling>,
    },
}

impl Source {
    /// The next packet, or how the transport ended.
    async fn next(&mut self) -> Result<Input, End> {
        match self {
            Source::WebSocket(rx) => loop {
                match rx.next().await {
                    Some(Ok(Message::Text(text))) => return Ok(Input::Text(text)),
                    Some(Ok(Message::Binary(_))) => return Ok(Input::Binary),
                    Some(Ok(Message::Close(_))) | None => return Err(End::Gone),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "socket.io websocket read failed");
                        return Err(End::Close(TOO_BIG, "message too big or unreadable"));
                    }
                }
            },
            Source::Polling { rx, transport } => tokio::select! {
                input = rx.recv() => input.ok_or(End::Gone),
                why = transport.broken() => Err(match why {
                    Broken::DuplicateGet => End::Close(PROTOCOL_ERROR, "a second GET"),
                    Broken::DuplicatePost => End::Close(PROTOCOL_ERROR, "a second POST"),
                    Broken::TooLarge => End::Close(TOO_BIG, "payload over maxPayload"),
                    Broken::NotText => End::Close(PROTOCOL_ERROR, "a POST that is not text"),
                    Broken::Shutdown => End::Close(GOING_AWAY, "server shutdown"),
                }),
            },
        }
    }
}

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
    /// The task draining its outbox into the transport.
    writer: tokio::task::JoinHandle<()>,
}

/// An event whose binary attachments are still coming.
struct Pending {
    /// The event's name (named in the `error` it gets).
    name: String,
    /// The client's ack id, if it asked for one.
    ack: Option<u64>,
    /// Binary packets still to come.
    missing: usize,
}

/// A WebSocket that asked to take over a polling session, until its `5`.
struct Probe {
    /// Its sending half.
    tx: SplitSink<WebSocket, Message>,
    /// Its receiving half.
    rx: SplitStream<WebSocket>,
    /// `2probe` has been answered.
    probed: bool,
    /// The upgrade is given up then.
    until: Instant,
}

/// What the probing WebSocket did.
enum ProbeStep {
    /// A message (or its end).
    Message(Option<Result<Message, axum::Error>>),
    /// [`UPGRADE_TIMEOUT`] passed.
    Expired,
}

/// How a session ends.
#[derive(Debug, Clone, Copy)]
enum End {
    /// Close with this code and reason (a pending `GET` gets `1`).
    Close(u16, &'static str),
    /// The client sent `1` (a pending `GET` gets a noop).
    ClientClosed,
    /// The writer has closed it already (goodbye sent).
    Closed,
    /// The client went away.
    Gone,
}

/// One Engine.IO session, from the open packet to the close; it may join
/// and leave `/` more than once, and move from polling to a WebSocket.
struct Session {
    /// The gateway's handles.
    app: Arc<AppState>,
    /// The transport's sending side.
    tx: SharedTx,
    /// The transport's receiving side.
    source: Source,
    /// The Engine.IO session id (also the namespace's socket id).
    sid: String,
    /// The opening request's query string (`?token=`, `?session=`).
    query: Option<String>,
    /// The opening request's headers (`Authorization: Bearer`).
    headers: HeaderMap,
    /// The client, while it is in `/`.
    joined: Option<Joined>,
    /// Whether the client ever joined (before that, only CONNECT is valid).
    ever_joined: bool,
    /// Where the ping/pong cycle stands.
    heartbeat: Heartbeat,
    /// An event waiting for its binary attachments.
    pending: Option<Pending>,
    /// A WebSocket on its way to take over from polling.
    probe: Option<Probe>,
}

impl Session {
    fn new(
        app: Arc<AppState>,
        tx: Tx,
        source: Source,
        sid: String,
        query: Option<String>,
        headers: HeaderMap,
    ) -> Session {
        Session {
            heartbeat: Heartbeat::PingAt(Instant::now() + app.config.engineio.ping_interval()),
            app,
            tx: Arc::new(tokio::sync::Mutex::new(tx)),
            source,
            sid,
            query,
            headers,
            joined: None,
            ever_joined: false,
            pending: None,
            probe: None,
        }
    }

    /// Runs the session to its end.
    async fn serve(mut self) {
        let connect_by = Instant::now() + self.app.config.connect_timeout();
        let end = self.run(connect_by).await;
        self.finish(end).await;
    }

    async fn run(&mut self, connect_by: Instant) -> End {
        enum Next {
            Input(Result<Input, End>),
            Probe(ProbeStep),
            Heartbeat,
            ConnectTimeout,
            WriterDone,
        }
        loop {
            let timer = match self.heartbeat {
                Heartbeat::PingAt(at) | Heartbeat::PongBy(at) => at,
            };
            let connect_by = (!self.ever_joined).then_some(connect_by);
            let next = tokio::select! {
                input = self.source.next() => Next::Input(input),
                step = probe_step(&mut self.probe) => Next::Probe(step),
                _ = tokio::time::sleep_until(timer) => Next::Heartbeat,
                _ = sleep_until_some(connect_by) => Next::ConnectTimeout,
                _ = writer_done(&mut self.joined) => Next::WriterDone,
            };
            let outcome = match next {
                Next::Input(Ok(input)) => self.on_input(input).await,
                Next::Input(Err(end)) => Err(end),
                Next::Probe(step) => self.on_probe(step).await,
                Next::Heartbeat => match self.heartbeat {
                    Heartbeat::PingAt(_) => {
                        let timeout = self.app.config.engineio.ping_timeout();
                        self.heartbeat = Heartbeat::PongBy(Instant::now() + timeout);
                        self.send("2".to_owned()).await.map_err(|_| End::Gone)
                    }
                    Heartbeat::PongBy(_) => Err(End::Close(NORMAL, "ping timeout")),
                },
                Next::ConnectTimeout => Err(End::Close(NORMAL, "connect timeout")),
                Next::WriterDone => Err(End::Closed),
            };
            if let Err(end) = outcome {
                return end;
            }
        }
    }

    /// One packet from the client, or a WebSocket for the upgrade.
    async fn on_input(&mut self, input: Input) -> Result<(), End> {
        match input {
            Input::Text(packet) => self.on_text(packet.as_str()).await,
            Input::Binary => {
                if let Some(joined) = self.joined.as_ref() {
                    if joined.client.admit().is_some() {
                        return Ok(());
                    }
                }
                self.on_binary()
            }
            Input::Upgrade(socket) => {
                self.start_probe(*socket).await;
                Ok(())
            }
            Input::Handled(done) => {
                let _ = done.send(());
                Ok(())
            }
        }
    }

    /// One Engine.IO packet.
    async fn on_text(&mut self, packet: &str) -> Result<(), End> {
        // Every packet of a joined client, pings and malformed ones
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
            Some(b'1') if packet.len() == 1 => Err(End::ClientClosed),
            _ => Err(End::Close(PROTOCOL_ERROR, "not an Engine.IO v4 packet")),
        }
    }

    /// A binary packet: an attachment of the pending event, or a protocol
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
        // Packets wait in the polling queue until the client's next GET:
        // counted like socketioxide's queue, an entry is delivered only
        // once that many frames followed it.
        let queue = match self.source {
            Source::Polling { .. } => self.app.sessions.limits.transport_queue,
            Source::WebSocket(_) => 0,
        };
        let client =
            Client::connect_queued(&self.app.sessions, admission, metrics::SOCKETIO_FAST, queue);
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
    /// writer owns the transport then), directly otherwise.
    async fn send(&self, packet: String) -> Result<(), ()> {
        match &self.joined {
            Some(joined) => {
                joined.client.outbox.push(Arc::new(Frame::packet(packet)));
                Ok(())
            }
            None => self.tx.lock().await.send(Utf8Bytes::from(packet)).await,
        }
    }

    /// A WebSocket for this session: it becomes the probe, unless the
    /// session is not on polling or has a probe already.
    async fn start_probe(&mut self, socket: WebSocket) {
        let (mut tx, rx) = socket.split();
        if self.probe.is_some() || !matches!(self.source, Source::Polling { .. }) {
            let _ = tx
                .send(close_message(PROTOCOL_ERROR, "already upgrading"))
                .await;
            return;
        }
        self.probe = Some(Probe {
            tx,
            rx,
            probed: false,
            until: Instant::now() + UPGRADE_TIMEOUT,
        });
    }

    /// What the probing WebSocket did: `2probe` is answered `3probe` (and
    /// the pending `GET` a noop), `5` completes the upgrade; anything
    /// else, its end or the timeout drop it, and the session stays on
    /// polling.
    async fn on_probe(&mut self, step: ProbeStep) -> Result<(), End> {
        let Some(probe) = self.probe.as_mut() else {
            return Ok(());
        };
        let text = match step {
            ProbeStep::Message(Some(Ok(Message::Text(text)))) => Some(text),
            ProbeStep::Message(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => return Ok(()),
            _ => None,
        };
        match text.as_ref().map(Utf8Bytes::as_str) {
            Some("2probe") if !probe.probed => {
                let answered = probe.tx.send(text_message("3probe")).await.is_ok();
                if answered {
                    probe.probed = true;
                    if let Some(transport) = self.polling() {
                        transport.probed(true);
                    }
                    return Ok(());
                }
            }
            Some("5") if probe.probed => return self.complete_upgrade().await,
            _ => {}
        }
        if let Some(mut probe) = self.probe.take() {
            let _ = probe
                .tx
                .send(close_message(PROTOCOL_ERROR, "upgrade failed"))
                .await;
        }
        if let Some(transport) = self.polling() {
            transport.probed(false);
        }
        Ok(())
    }

    /// The polling transport, while the session is on it.
    fn polling(&self) -> Option<Arc<Polling>> {
        match &self.source {
            Source::Polling { transport, .. } => Some(transport.clone()),
            Source::WebSocket(_) => None,
        }
    }

    /// `5`: what the last `POST` brought is handled, what waited for a
    /// `GET` goes out on the WebSocket, and the WebSocket is the
    /// transport from now on (polling requests for the sid get 400).
    async fn complete_upgrade(&mut self) -> Result<(), End> {
        let Some(probe) = self.probe.take() else {
            return Ok(());
        };
        let mut early = Vec::new();
        if let Source::Polling { rx, .. } = &mut self.source {
            while let Ok(input) = rx.try_recv() {
                early.push(input);
            }
        }
        for input in early {
            self.on_input(input).await?;
        }
        let Some(transport) = self.polling() else {
            return Ok(());
        };
        let Probe { tx: mut ws, rx, .. } = probe;
        {
            // Under the lock, so the writer cannot slip a frame in between.
            let mut tx = self.tx.lock().await;
            for packet in transport.upgraded() {
                if ws.feed(Message::Text(packet)).await.is_err() {
                    return Err(End::Gone);
                }
            }
            if ws.flush().await.is_err() {
                return Err(End::Gone);
            }
            *tx = Tx::WebSocket(ws);
        }
        self.source = Source::WebSocket(rx);
        Ok(())
    }

    /// Ends the session as `end` says.
    async fn finish(mut self, end: End) {
        let writer_closed = matches!(end, End::Closed);
        if let Some(joined) = self.joined.take() {
            joined.client.gone();
            if !writer_closed {
                // The writer may be mid-write: give it the time it may take.
                let _ = tokio::time::timeout(writer::GOODBYE_PATIENCE * 2, joined.writer).await;
            }
        }
        if let Some(mut probe) = self.probe.take() {
            let _ = probe.tx.send(close_message(NORMAL, "session closed")).await;
        }
        match &mut self.source {
            Source::Polling { transport, .. } => {
                transport.end(if matches!(end, End::ClientClosed) {
                    "6"
                } else {
                    "1"
                });
                let shutdown = matches!(end, End::Close(GOING_AWAY, _));
                if writer_closed || shutdown {
                    // The goodbye is queued: let the next GET fetch it.
                    let _ =
                        tokio::time::timeout(writer::GOODBYE_PATIENCE, transport.delivered()).await;
                }
                self.app.polling.remove(&self.sid);
            }
            Source::WebSocket(rx) => {
                // (A session that started on polling stays in the table
                // until now.)
                self.app.polling.remove(&self.sid);
                let (code, reason) = match end {
                    End::Close(code, reason) => (code, reason),
                    End::ClientClosed => (NORMAL, "closed by the client"),
                    End::Closed => {
                        await_close_answer(rx).await;
                        return;
                    }
                    End::Gone => return,
                };
                let sent = tokio::time::timeout(writer::GOODBYE_PATIENCE, async {
                    match &mut *self.tx.lock().await {
                        Tx::WebSocket(tx) => tx.send(close_message(code, reason)).await.is_ok(),
                        Tx::Polling(_) => false,
                    }
                })
                .await;
                if matches!(sent, Ok(true)) {
                    await_close_answer(rx).await;
                }
            }
        }
    }
}

/// The probe's next step; never without a probe.
async fn probe_step(probe: &mut Option<Probe>) -> ProbeStep {
    match probe {
        Some(probe) => tokio::select! {
            message = probe.rx.next() => ProbeStep::Message(message),
            _ = tokio::time::sleep_until(probe.until) => ProbeStep::Expired,
        },
        None => std::future::pending().await,
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

/// The client's writer end of the transport: Socket.IO packets, then `41`
/// and (on a WebSocket) a close frame to end.
struct EioSink {
    /// The transport's sending side, shared with the session.
    tx: SharedTx,
}

impl FrameSink for EioSink {
    async fn send(&mut self, frame: &Frame) -> Sent {
        self.tx.lock().await.feed(frame.sio_text(), true).await
    }

    async fn flush(&mut self) -> Sent {
        self.tx.lock().await.flush().await
    }

    async fn close(&mut self) {
        // `41` before the close makes socket.io-client report "io server
        // disconnect" (and not reconnect by itself). On polling, the
        // session ends the transport (`1`) once the writer is done.
        let mut tx = self.tx.lock().await;
        let _ = tx.feed(Utf8Bytes::from_static("41"), false).await;
        match &mut *tx {
            Tx::WebSocket(ws) => {
                let _ = ws.send(close_message(GOING_AWAY, "disconnected")).await;
            }
            Tx::Polling(transport) => transport.wake(),
        }
    }
}

fn text_message(s: &'static str) -> Message {
    Message::Text(Utf8Bytes::from_static(s))
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
