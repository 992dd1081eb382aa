//! The Socket.IO endpoint (socketioxide): handshake auth, event dispatch to
//! [`Client`], acknowledgements, and the writer that feeds the socket.
//!
//! Authentication runs as a connect middleware, so a refused client gets a
//! `connect_error` whose `message` is the error code and no data at all.

use crate::client::{self, Admission, Client};
use crate::frame::Frame;
use crate::metrics;
use crate::state::AppState;
use crate::writer::{self, FrameSink, Sent};
use serde::Deserialize;
use serde_json::Value;
use socketioxide::extract::{AckSender, Event, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use socketioxide::{SendError, SocketError, SocketIo};
use std::fmt;
use std::sync::Arc;

/// What a client may send in `auth` (socket.io-client's `auth` option).
#[derive(Debug, Default, Deserialize)]
struct Handshake {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    session: Option<String>,
}

/// The `connect_error` a refused client sees: its message is the code.
#[derive(Debug)]
struct Refusal(&'static str);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

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
    TryData(handshake): TryData<Handshake>,
    State(app): State<Arc<AppState>>,
) -> Result<(), Refusal> {
    let handshake = handshake.unwrap_or_default();
    let token = handshake
        .token
        .filter(|t| !t.is_empty())
        .or_else(|| query_param(socket.req_parts().uri.query(), "token"))
        .unwrap_or_default();
    let identity = match app.verifier.verify(&token) {
        Ok(identity) => identity,
        Err(e) => {
            let code = e.code().as_str();
            metrics::auth_refused(code);
            tracing::debug!(error = %e, "socket.io handshake refused");
            return Err(Refusal(code));
        }
    };
    let resume = handshake
        .session
        .or_else(|| query_param(socket.req_parts().uri.query(), "session"));
    match client::admit(&app, identity, resume.as_deref()).await {
        Ok(admission) => {
            socket.extensions.insert(admission);
            // Events may arrive as soon as the client has its connect ack,
            // before `on_connect` has run: handlers go in now, and wait
            // for the client that `on_connect` creates.
            socket.extensions.insert(ClientSlot::default());
            socket.on_fallback(on_event);
            socket.on_disconnect(on_disconnect);
            Ok(())
        }
        Err(refusal) => {
            metrics::auth_refused(refusal.code.as_str());
            Err(Refusal(refusal.code.as_str()))
        }
    }
}

async fn on_connect(socket: SocketRef, State(app): State<Arc<AppState>>) {
    let Some(admission) = socket.extensions.get::<Admission>() else {
        // The middleware always sets it; without it, refuse to guess.
        let _ = socket.disconnect();
        return;
    };
    let client = Client::connect(&app, admission, "socketio");
    if let Some(slot) = socket.extensions.get::<ClientSlot>() {
        let _ = slot.0.set(client.clone());
    }
    app.writers.spawn(writer::run(
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

struct SioSink {
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

/// One query parameter, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn reads_and_decodes_query_params() {
        let q = Some("EIO=4&token=a%2Bb.c&transport=websocket&session=");
        assert_eq!(query_param(q, "token").as_deref(), Some("a+b.c"));
        assert_eq!(query_param(q, "session").as_deref(), Some(""));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(None, "token"), None);
    }
}
