//! The Socket.IO endpoint (socketioxide): handshake auth, event dispatch to
//! [`Client`], acknowledgements, and the writer that feeds the socket.
//!
//! Authentication runs as a connect middleware, so a refused client gets a
//! `connect_error` whose `message` is the error code and no data at all.
//!
//! One order per client: socketioxide runs every event handler in a task
//! of its own, so two events sent back to back could run backwards. Its
//! extractors, though, run inline, in arrival order, before it spawns the
//! handler: our extractor ([`Queued`]) puts each event on the socket's one
//! inbound queue, and one task per socket drains it through
//! [`Client::handle`]. The acknowledgement goes into the client's outbox
//! right behind the reply event, so it is written after it.

use crate::app::AppState;
use crate::fanout::frame::Frame;
use crate::observability::metrics;
use crate::session::admission::Admission;
use crate::session::Client;
use crate::transport::credentials::{self, Credentials};
use crate::transport::writer::{self, FrameSink, Sent};
use protocol::ErrorCode;
use serde_json::Value;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, Event, SocketRef, State, TryData};
use socketioxide::handler::{ConnectHandler, FromConnectParts, FromMessage, FromMessageParts};
use socketioxide::socket::{DisconnectReason, Socket};
use socketioxide::{SendError, SocketError, SocketIo};
use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The `connect_error` a refused client sees: its message is the code.
#[derive(Debug)]
struct Refusal(&'static str);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The admission made by the connect middleware, taken by `on_connect`.
/// If the connection fails in between, the socket's extensions are dropped
/// with it, and so is the admission: its connection slot is given back.
#[derive(Clone)]
struct Pending(Arc<Mutex<Option<Admission>>>);

/// The connection's [`Client`], set once `on_connect` has made it.
#[derive(Clone, Default)]
struct ClientSlot(Arc<tokio::sync::SetOnce<Arc<Client>>>);

/// How long an early event waits for its client to be set up.
const CLIENT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
/// Events one socket may have waiting for its handler task; a client
/// that gets this far ahead is flooding, and is disconnected.
const INBOUND_QUEUE: usize = 1024;

/// One event off the wire, waiting for the socket's handler task.
struct Inbound {
    /// The event name.
    event: String,
    /// Its first argument, when it is JSON.
    data: Option<Value>,
    /// Its encoded size, for the payload limit.
    size: usize,
    /// The client's ack id, when it asked for one.
    ack: Option<u64>,
}

/// The sending side of a socket's inbound queue.
#[derive(Clone)]
struct InboundQueue(mpsc::Sender<Inbound>);

/// The extractor that queues an event in arrival order (see the module
/// doc); the handler it feeds does nothing.
struct Queued;

impl FromMessage<LocalAdapter> for Queued {
    type Error = Infallible;

    fn from_message(
        socket: Arc<Socket<LocalAdapter>>,
        mut value: socketioxide::handler::Value,
        ack: Option<i64>,
    ) -> Result<Self, Infallible> {
        let Some(queue) = socket.extensions.get::<InboundQueue>() else {
            return Ok(Queued);
        };
        let Ok(Event(event)) = Event::from_message_parts(&socket, &mut value, &ack) else {
            return Ok(Queued);
        };
        let Ok(TryData(data)) = TryData::<Value>::from_message_parts(&socket, &mut value, &ack);
        let data = data.ok();
        let size = data.as_ref().map(encoded_len).unwrap_or(0);
        let inbound = Inbound {
            event,
            data,
            size,
            ack: ack.and_then(|id| u64::try_from(id).ok()),
        };
        if queue.0.try_send(inbound).is_err() {
            tracing::debug!("inbound queue full or closed: disconnecting");
            let _ = SocketRef::from(socket.clone()).disconnect();
        }
        Ok(Queued)
    }
}

/// The socket itself, for the writer (acks are sent through it).
struct SocketArc(Arc<Socket<LocalAdapter>>);

impl FromConnectParts<LocalAdapter> for SocketArc {
    type Error = Infallible;

    fn from_connect_parts(
        socket: &Arc<Socket<LocalAdapter>>,
        _: &Option<socketioxide::handler::Value>,
    ) -> Result<Self, Infallible> {
        Ok(SocketArc(socket.clone()))
    }
}

pub fn attach(io: &SocketIo) {
    io.ns("/", on_connect.with(authenticate));
}

async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(app): State<Arc<AppState>>,
) -> Result<(), Refusal> {
    // A CONNECT whose data is not a JSON object is refused outright, not
    // taken as "no auth" (which would fall back to the query token).
    let auth = match auth {
        Ok(Value::Null) => None,
        Ok(object @ Value::Object(_)) => Some(object),
        Ok(_) | Err(_) => {
            let code = ErrorCode::InvalidPayload.as_str();
            metrics::auth_refused(code);
            return Err(Refusal(code));
        }
    };
    let parts = socket.req_parts();
    let credentials = Credentials::read(auth.as_ref(), parts.uri.query(), &parts.headers);
    match credentials::admit(&app, &credentials).await {
        Ok(admission) => {
            socket
                .extensions
                .insert(Pending(Arc::new(Mutex::new(Some(admission)))));
            // Events may arrive as soon as the client has its connect ack,
            // before `on_connect` has run: handlers go in now, and wait
            // for the client that `on_connect` creates.
            let slot = ClientSlot::default();
            socket.extensions.insert(slot.clone());
            let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
            socket.extensions.insert(InboundQueue(tx));
            tokio::spawn(handle_inbound(slot, rx));
            socket.on_fallback(async |_: Queued| {});
            socket.on_disconnect(on_disconnect);
            Ok(())
        }
        Err(refusal) => Err(Refusal(refusal.code.as_str())),
    }
}

async fn on_connect(
    socket: SocketRef,
    SocketArc(arc): SocketArc,
    State(app): State<Arc<AppState>>,
) {
    let admission = socket
        .extensions
        .get::<Pending>()
        .and_then(|pending| pending.0.lock().unwrap_or_else(|p| p.into_inner()).take());
    let Some(admission) = admission else {
        // The middleware always sets it; without it, refuse to guess.
        let _ = socket.disconnect();
        return;
    };
    let queue = app.sessions.limits.transport_queue;
    let client = Client::connect_queued(&app.sessions, admission, metrics::SOCKETIOXIDE, queue);
    if let Some(slot) = socket.extensions.get::<ClientSlot>() {
        let _ = slot.0.set(client.clone());
    }
    app.sessions
        .tasks
        .spawn(writer::run(client, SioSink { socket: arc }));
}

/// The socket's one handler task: its events, in arrival order, each
/// answered (reply event, then ack) before the next one runs. Ends when
/// the socket is gone (the queue's sender goes with it).
async fn handle_inbound(slot: ClientSlot, mut rx: mpsc::Receiver<Inbound>) {
    let Ok(client) = tokio::time::timeout(CLIENT_PATIENCE, slot.0.wait()).await else {
        return;
    };
    let client = client.clone();
    while let Some(inbound) = rx.recv().await {
        // socketioxide has parsed the packet already; the limit still comes
        // before anything acts on it.
        let reply = match client.admit() {
            Some(refused) => refused,
            None => client.handle(&inbound.event, inbound.data.as_ref(), inbound.size),
        };
        if let Some(id) = inbound.ack {
            client.outbox.push(Arc::new(Frame::ack(id, &reply)));
        }
    }
}

async fn on_disconnect(socket: SocketRef, reason: DisconnectReason) {
    if let Some(client) = socket
        .extensions
        .get::<ClientSlot>()
        .and_then(|slot| slot.0.get().cloned())
    {
        tracing::debug!(client = client.id, %reason, "socket.io client disconnected");
        client.gone();
    }
}

/// A socketioxide socket as a [`FrameSink`].
struct SioSink {
    /// The socket emitted to.
    socket: Arc<Socket<LocalAdapter>>,
}

impl SioSink {
    /// Sends the acknowledgement `frame` (socketioxide sends acks only
    /// through an `AckSender`, made here for the id).
    fn ack(&self, id: u64, frame: &Frame) -> Result<(), SendError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(());
        };
        let mut none = socketioxide::handler::Value::Str("".into(), None);
        let Ok(sender) = AckSender::from_message_parts(&self.socket, &mut none, &Some(id));
        sender.send(&*frame.data)
    }
}

impl FrameSink for SioSink {
    async fn send(&mut self, frame: &Frame) -> Sent {
        let sent = match frame.ack {
            Some(id) => self.ack(id, frame),
            None => self.socket.emit(frame.event, &*frame.data),
        };
        match sent {
            Ok(()) => Sent::Ok,
            Err(SendError::Socket(SocketError::InternalChannelFull)) => Sent::Busy,
            Err(SendError::Socket(SocketError::Closed)) => Sent::Closed,
            Err(e) => {
                tracing::warn!(error = %e, event = frame.event, "cannot encode a frame; skipped");
                Sent::Dropped
            }
        }
    }

    async fn flush(&mut self) -> Sent {
        // engineioxide flushes its websocket when its own queue is empty.
        Sent::Ok
    }

    async fn close(&mut self) {
        // Give the client a moment to read its goodbye before the
        // connection goes (it returns as soon as the client leaves). A
        // polling client only sees what a later GET fetches, and closing
        // forgets the queue. A websocket client loses it too when the
        // connection is closed while some of its own frames are still
        // unread on our side (a client cut off for flooding): the kernel
        // then resets the connection, and the reset makes the client's
        // kernel drop what the client has not read yet. Engine.IO keeps
        // reading, and we keep discarding, meanwhile.
        let grace = tokio::time::sleep(GOODBYE_GRACE);
        tokio::pin!(grace);
        tokio::select! {
            _ = &mut grace => {}
            _ = wait_closed(&self.socket) => return,
        }
        let _ = SocketRef::from(self.socket.clone()).disconnect();
    }
}

/// How long a client is given to read its `disconnected`.
const GOODBYE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

async fn wait_closed(socket: &Socket<LocalAdapter>) {
    while socket.connected() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn encoded_len(value: &Value) -> usize {
    serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}
