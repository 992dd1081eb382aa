//! The Socket.IO endpoint (socketioxide): handshake auth, event dispatch to
//! [`Client`], acknowledgements, and the writer that feeds the socket.
//!
//! Authentication runs as a connect middleware, so a refused client gets a
//! `connect_error` whose `message` is the error code and no data at all.

use crate::app::AppState;
use crate::fanout::frame::Frame;
use crate::session::admission::Admission;
use crate::session::Client;
use crate::transport::credentials::{self, Credentials};
use crate::transport::writer::{self, FrameSink, Sent};
use serde_json::Value;
use socketioxide::extract::{AckSender, Event, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use socketioxide::{SendError, SocketError, SocketIo};
use std::fmt;
use std::sync::{Arc, Mutex};

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

pub fn attach(io: &SocketIo) {
    io.ns("/", on_connect.with(authenticate));
}

async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(app): State<Arc<AppState>>,
) -> Result<(), Refusal> {
    let parts = socket.req_parts();
    let credentials = Credentials::read(auth.ok().as_ref(), parts.uri.query(), &parts.headers);
    match credentials::admit(&app, &credentials).await {
        Ok(admission) => {
            socket
                .extensions
                .insert(Pending(Arc::new(Mutex::new(Some(admission)))));
            // Events may arrive as soon as the client has its connect ack,
            // before `on_connect` has run: handlers go in now, and wait
            // for the client that `on_connect` creates.
            socket.extensions.insert(ClientSlot::default());
            socket.on_fallback(on_event);
            socket.on_disconnect(on_disconnect);
            Ok(())
        }
        Err(refusal) => Err(Refusal(refusal.code.as_str())),
    }
}

async fn on_connect(socket: SocketRef, State(app): State<Arc<AppState>>) {
    let admission = socket
        .extensions
        .get::<Pending>()
        .and_then(|pending| pending.0.lock().unwrap_or_else(|p| p.into_inner()).take());
    let Some(admission) = admission else {
        // The middleware always sets it; without it, refuse to guess.
        let _ = socket.disconnect();
        return;
    };
    let client = Client::connect(&app.sessions, admission, "socketio");
    if let Some(slot) = socket.extensions.get::<ClientSlot>() {
        let _ = slot.0.set(client.clone());
    }
    app.sessions.tasks.spawn(writer::run(
        client,
        SioSink {
            socket: socket.clone(),
        },
    ));
}

async fn on_event(
    socket: SocketRef,
    Event(event): Event,
    TryData(data): TryData<Value>,
    ack: AckSender,
) {
    let Some(slot) = socket.extensions.get::<ClientSlot>() else {
        return;
    };
    let Ok(client) = tokio::time::timeout(CLIENT_PATIENCE, slot.0.wait()).await else {
        return;
    };
    let data = data.ok();
    let size = data.as_ref().map(encoded_len).unwrap_or(0);
    let reply = client.handle(&event, data.as_ref(), size);
    // Without an ack id this is a no-op; a full queue only loses the ack,
    // the reply event is queued in the outbox either way.
    let _ = ack.send(&reply);
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
    socket: SocketRef,
}

impl FrameSink for SioSink {
    async fn send(&mut self, frame: &Frame) -> Sent {
        match self.socket.emit(frame.event, &*frame.data) {
            Ok(()) => Sent::Ok,
            Err(SendError::Socket(SocketError::InternalChannelFull)) => Sent::Busy,
            Err(SendError::Socket(SocketError::Closed)) => Sent::Closed,
            Err(e) => {
                tracing::warn!(error = %e, event = frame.event, "cannot encode a frame; skipped");
                Sent::Ok
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
        let _ = self.socket.clone().disconnect();
    }
}

/// How long a client is given to read its `disconnected`.
const GOODBYE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

async fn wait_closed(socket: &SocketRef) {
    while socket.connected() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn encoded_len(value: &Value) -> usize {
    serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}
