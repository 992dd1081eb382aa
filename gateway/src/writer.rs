//! The per-client writer: drains a client's [`Outbox`] into its socket.
//!
//! One loop serves both transports through [`FrameSink`]. It writes every
//! queued frame and flushes once the queue is empty, so a busy client gets
//! many frames per syscall. When the socket cannot take more (Socket.IO's
//! bounded queue is full) the frame goes back to the outbox, where newer
//! state values replace it, and the writer retries shortly. When the client
//! must go, it gets `disconnected {reason, reconnect}` first.

use crate::client::Client;
use crate::frame::Frame;
use crate::metrics;
use crate::outbox::Closing;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long to wait before retrying a socket whose queue is full.
const BUSY_RETRY: Duration = Duration::from_millis(5);
/// How long a goodbye may wait for room in a full socket queue.
const GOODBYE_PATIENCE: Duration = Duration::from_secs(1);

/// The outcome of handing one frame to a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Ok,
    /// No room right now; try again later.
    Busy,
    /// The socket is gone.
    Closed,
}

pub trait FrameSink: Send {
    fn send(&mut self, frame: &Frame) -> impl Future<Output = Sent> + Send;
    fn flush(&mut self) -> impl Future<Output = Sent> + Send;
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

pub async fn run<S: FrameSink>(client: Arc<Client>, mut sink: S) {
    let expires_in = token_lifetime(client.identity.expires_at);
    let expiry = tokio::time::sleep(expires_in);
    tokio::pin!(expiry);
    loop {
        if !drain_queue(&client, &mut sink).await {
            client.gone();
            return;
        }
        if let Some(closing) = client.outbox.closing() {
            match closing {
                Closing::Gone => {}
                Closing::SlowConsumer => {
                    metrics::client_cut_off("slow_consumer");
                    goodbye(&mut sink, "Slow consumer: too far behind", true).await;
                }
                Closing::Told { reason, reconnect } => {
                    goodbye(&mut sink, &reason, reconnect).await;
                }
            }
            client.gone();
            return;
        }
        tokio::select! {
            _ = client.outbox.wait() => {}
            _ = &mut expiry => {
                metrics::client_cut_off("token_expired");
                client.outbox.close(Closing::Told { reason: "Token expired".into(), reconnect: true });
            }
        }
    }
}

/// Writes until the outbox is empty. False when the socket is gone.
async fn drain_queue<S: FrameSink>(client: &Client, sink: &mut S) -> bool {
    let mut wrote = false;
    while let Some(frame) = client.outbox.pop() {
        match sink.send(&frame).await {
            Sent::Ok => {
                client.wrote(&frame);
                wrote = true;
            }
            Sent::Closed => return false,
            Sent::Busy => {
                client.outbox.unpop(frame);
                if wrote && sink.flush().await == Sent::Closed {
                    return false;
                }
                wrote = false;
                tokio::time::sleep(BUSY_RETRY).await;
            }
        }
    }
    !wrote || sink.flush().await != Sent::Closed
}

async fn goodbye<S: FrameSink>(sink: &mut S, reason: &str, reconnect: bool) {
    let frame = Frame::control(
        "disconnected",
        &json!({ "reason": reason, "reconnect": reconnect }),
    );
    let deadline = tokio::time::Instant::now() + GOODBYE_PATIENCE;
    while sink.send(&frame).await == Sent::Busy && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(BUSY_RETRY).await;
    }
    sink.flush().await;
    sink.close().await;
}

fn token_lifetime(expires_at: i64) -> Duration {
    let left = expires_at.saturating_sub(chrono::Utc::now().timestamp());
    Duration::from_secs(left.clamp(0, 10 * 365 * 24 * 3600) as u64)
}
