//! What the two WebSocket dialects (plain JSON events on `/ws`, Socket.IO
//! packets on our Engine.IO path) share: buffer sizes, the sending half as
//! a [`FrameSink`], the one reader loop, and the wait for the client's
//! answer to our close.
//!
//! Reading stops when the writer has closed the connection (after at most
//! [`CLOSE_GRACE`] for the client's close answer), so a client that never
//! reads or answers cannot keep its socket open.

use crate::fanout::frame::Frame;
use crate::session::Client;
use crate::transport::writer::{FrameSink, Sent};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Close code for an ordinary end (timeouts, the client's own close).
pub const NORMAL: u16 = 1000;
/// Close code for a server that sends the client away (drain, slow
/// consumer, token expiry).
pub const GOING_AWAY: u16 = 1001;
/// Close code for a client that broke the protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// Close code for a policy violation (a refused token).
pub const POLICY_VIOLATION: u16 = 1008;
/// Close code for a message past the transport's size limit.
pub const TOO_BIG: u16 = 1009;

/// A close frame with `code` and `reason`.
pub fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}
/// How long a client has to answer the server's close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Buffer sizes for a dashboard's WebSocket. Inbound messages are small
/// (subscribe, heartbeat), so a 4 KiB read buffer (grown on demand) instead
/// of tungstenite's 128 KiB keeps idle connections cheap; frames queued
/// between flushes still go out in one write up to 64 KiB. A frame, like
/// a message, may not exceed the payload limit: tungstenite would otherwise
/// buffer frames up to 16 MiB before anything is authenticated.
pub fn sized(upgrade: WebSocketUpgrade, max_message: usize) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(64 * 1024)
        .max_message_size(max_message)
        .max_frame_size(max_message)
}

/// Whether the reader goes on after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// How one dialect reads: its text messages, binary ones, and anything it
/// does on its own time (Engine.IO's pings).
pub trait Dialect: Send {
    /// One text message from the client.
    fn text(&mut self, client: &Client, text: &str) -> Flow;
    /// One binary message (neither dialect has any).
    fn binary(&mut self, client: &Client);
    /// Resolves when the dialect wants to act by itself; never, by default.
    fn tick(&mut self, _client: &Client) -> impl Future<Output = Flow> + Send {
        std::future::pending()
    }
}

/// Reads `rx` into `dialect` until the client leaves, the dialect stops,
/// or the writer ends (then waits for the client's close answer). True
/// when the writer ended.
pub async fn read(
    client: &Client,
    rx: &mut SplitStream<WebSocket>,
    writer: &mut JoinHandle<()>,
    dialect: &mut impl Dialect,
) -> bool {
    enum Next {
        Message(Option<Result<Message, axum::Error>>),
        WriterDone,
        Tick(Flow),
    }
    loop {
        let next = tokio::select! {
            message = rx.next() => Next::Message(message),
            // The writer has closed (or given up on) the connection.
            _ = &mut *writer => Next::WriterDone,
            flow = dialect.tick(client) => Next::Tick(flow),
        };
        let message = match next {
            Next::Message(message) => message,
            Next::WriterDone => {
                await_close_answer(rx).await;
                return true;
            }
            Next::Tick(Flow::Continue) => continue,
            Next::Tick(Flow::Stop) => return false,
        };
        let Some(Ok(message)) = message else {
            return false;
        };
        // The rate limit sees every frame before anything parses it.
        if matches!(
            message,
            Message::Text(_) | Message::Binary(_) | Message::Ping(_)
        ) && client.admit().is_some()
        {
            continue;
        }
        match message {
            Message::Text(text) => {
                if dialect.text(client, &text) == Flow::Stop {
                    return false;
                }
            }
            Message::Binary(_) => dialect.binary(client),
            Message::Close(_) => return false,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
}

/// After the server's close: reads on until the client answers it (unread
/// input would turn the close into a reset that loses the goodbye), but
/// not longer than [`CLOSE_GRACE`].
pub async fn await_close_answer(rx: &mut SplitStream<WebSocket>) {
    let answered = async {
        while let Some(Ok(message)) = rx.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, answered).await;
}

/// A plain WebSocket's sending half as a [`FrameSink`]: JSON events. (The
/// Socket.IO fast path has its own, see `eio`: its socket outlives a
/// client that leaves the namespace.)
pub struct WsSink {
    /// The socket's sending half.
    tx: SplitSink<WebSocket, Message>,
}

impl WsSink {
    pub fn plain(tx: SplitSink<WebSocket, Message>) -> WsSink {
        WsSink { tx }
    }
}

impl FrameSink for WsSink {
    async fn send(&mut self, frame: &Frame) -> Sent {
        match self.tx.feed(Message::Text(frame.ws_text())).await {
            Ok(()) => Sent::Ok,
            Err(_) => Sent::Closed,
        }
    }

    async fn flush(&mut self) -> Sent {
        match self.tx.flush().await {
            Ok(()) => Sent::Ok,
            Err(_) => Sent::Closed,
        }
    }

    async fn close(&mut self) {
        let _ = self
            .tx
            .send(close_message(GOING_AWAY, "disconnected"))
            .await;
    }
}
