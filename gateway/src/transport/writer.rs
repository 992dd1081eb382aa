//! The per-client writer: drains a client's [`Outbox`] into its socket.
//!
//! One loop serves both transports through [`FrameSink`]. It writes every
//! queued frame and flushes once the queue is empty, so a busy client gets
//! many frames per syscall. When the socket cannot take more (Socket.IO's
//! bounded queue is full) the frame goes back to the outbox, where newer
//! state values replace it, and the writer retries shortly. When the client
//! must go, it gets `disconnected {reason, reconnect}` first.
//!
//! A client that stops reading fills the kernel's buffers, and a plain
//! WebSocket write then waits. Once such a client is told to go (its
//! outbox overflowed, or a drain), the write in progress and the goodbye
//! get [`GOODBYE_PATIENCE`] each: a client that reads again in time gets
//! everything written so far, then `disconnected`, then the close; one that
//! does not is dropped. Its outbox is closed meanwhile, so it holds no
//! more memory than the frames already handed to the socket.

use crate::fanout::frame::Frame;
use crate::fanout::outbox::Closing;
use crate::observability::metrics;
use crate::session::Client;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long to wait before retrying a socket whose queue is full.
const BUSY_RETRY: Duration = Duration::from_millis(5);
/// How long a client that must go is given to take the write in progress,
/// and then its goodbye, before it is dropped.
pub const GOODBYE_PATIENCE: Duration = Duration::from_secs(3);
/// How long closing the socket may take after the goodbye.
const CLOSE_PATIENCE: Duration = Duration::from_secs(1);

/// The outcome of handing one frame to a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Ok,
    /// No room right now; try again later.
    Busy,
    /// The socket is gone.
    Closed,
}

/// Where a writer writes: one transport's socket.
pub trait FrameSink: Send {
    /// Hands one frame to the socket (buffered until `flush`).
    fn send(&mut self, frame: &Frame) -> impl Future<Output = Sent> + Send;
    /// Writes out what `send` buffered.
    fn flush(&mut self) -> impl Future<Output = Sent> + Send;
    /// Closes the socket (after any goodbye).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

pub async fn run<S: FrameSink>(client: Arc<Client>, mut sink: S) {
    let expires_in = token_lifetime(client.identity.expires_at);
    let expiry = tokio::time::sleep(expires_in);
    tokio::pin!(expiry);
    loop {
        let open = drain_queue(&client, &mut sink).await;
        if let Some(closing) = client.outbox.closing() {
            let farewell = match closing {
                Closing::Gone => None,
                Closing::SlowConsumer => {
                    tracing::info!(
                        client = client.id,
                        user = %client.identity.user,
                        transport = client.transport,
                        "slow consumer cut off"
                    );
                    Some(("Slow consumer: too far behind".to_owned(), true))
                }
                Closing::Told { reason, reconnect } => Some((reason, reconnect)),
            };
            match farewell {
                Some((reason, reconnect)) if open => goodbye(&mut sink, &reason, reconnect).await,
                Some(_) => close(&mut sink).await,
                None => {}
            }
            client.gone();
            return;
        }
        if !open {
            client.gone();
            return;
        }
        // A wake-up may have been taken by `unless_stuck` while the last
        // frames were written: only sleep on a queue that is really empty.
        if !client.outbox.is_empty() {
            continue;
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

/// Writes until the outbox is empty. False when the socket is gone, or
/// stuck past the patience given to a client that must go.
async fn drain_queue<S: FrameSink>(client: &Client, sink: &mut S) -> bool {
    let mut wrote = false;
    let mut busy_since = None;
    while let Some(frame) = client.outbox.pop() {
        match unless_stuck(client, sink.send(&frame)).await {
            Some(Sent::Ok) => {
                client.wrote(&frame);
                wrote = true;
                busy_since = None;
            }
            Some(Sent::Closed) | None => return false,
            Some(Sent::Busy) => {
                client.outbox.unpop(frame);
                if wrote && unless_stuck(client, sink.flush()).await != Some(Sent::Ok) {
                    return false;
                }
                wrote = false;
                if client.outbox.closing().is_some() {
                    let since = *busy_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= GOODBYE_PATIENCE {
                        return false;
                    }
                }
                tokio::time::sleep(BUSY_RETRY).await;
            }
        }
    }
    !wrote || unless_stuck(client, sink.flush()).await == Some(Sent::Ok)
}

/// Runs a socket operation. If the client is told to go while it waits (a
/// full socket), the operation gets [`GOODBYE_PATIENCE`] more; `None` if
/// it does not finish within it.
async fn unless_stuck<T>(client: &Client, operation: impl Future<Output = T>) -> Option<T> {
    tokio::pin!(operation);
    loop {
        tokio::select! {
            done = &mut operation => return Some(done),
            _ = client.outbox.wait() => {
                if client.outbox.closing().is_some() {
                    return tokio::time::timeout(GOODBYE_PATIENCE, operation).await.ok();
                }
            }
        }
    }
}

/// Sends `disconnected` (retrying a full Socket.IO queue, waiting for a
/// full socket) for at most [`GOODBYE_PATIENCE`], then closes.
async fn goodbye<S: FrameSink>(sink: &mut S, reason: &str, reconnect: bool) {
    let frame = Frame::control(
        "disconnected",
        &json!({ "reason": reason, "reconnect": reconnect }),
    );
    let said = tokio::time::timeout(GOODBYE_PATIENCE, async {
        loop {
            match sink.send(&frame).await {
                Sent::Busy => tokio::time::sleep(BUSY_RETRY).await,
                Sent::Ok => return sink.flush().await == Sent::Ok,
                Sent::Closed => return false,
            }
        }
    })
    .await;
    if said.is_err() {
        tracing::debug!(reason, "goodbye not delivered in time; closing anyway");
    }
    close(sink).await;
}

async fn close<S: FrameSink>(sink: &mut S) {
    let _ = tokio::time::timeout(CLOSE_PATIENCE, sink.close()).await;
}

fn token_lifetime(expires_at: i64) -> Duration {
    let left = expires_at.saturating_sub(chrono::Utc::now().timestamp());
    Duration::from_secs(left.clamp(0, 10 * 365 * 24 * 3600) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::{admission, handles};
    use crate::session::Handles;
    use protocol::Channel;
    use std::sync::Mutex;
    use tokio::sync::watch;

    /// A socket whose reader can stop: sends wait while `reading` is false.
    struct Socket {
        reading: watch::Receiver<bool>,
        events: Arc<Mutex<Vec<String>>>,
    }

    impl FrameSink for Socket {
        async fn send(&mut self, frame: &Frame) -> Sent {
            let _ = self.reading.wait_for(|r| *r).await;
            self.events.lock().unwrap().push(frame.event.to_owned());
            Sent::Ok
        }
        async fn flush(&mut self) -> Sent {
            Sent::Ok
        }
        async fn close(&mut self) {
            let _ = self.reading.wait_for(|r| *r).await;
            self.events.lock().unwrap().push("close".to_owned());
        }
    }

    struct Setup {
        handles: Handles,
        client: Arc<Client>,
        reading: watch::Sender<bool>,
        events: Arc<Mutex<Vec<String>>>,
        writer: tokio::task::JoinHandle<()>,
    }

    /// A client (queue limit 5) whose writer runs on a [`Socket`] that is
    /// not read yet.
    fn setup() -> Setup {
        let mut handles = handles();
        handles.limits.queue_limit = 5;
        let admission = admission(&handles, Channel::ALL.to_vec(), None);
        let client = Client::connect(&handles, admission, "test");
        let (reading, rx) = watch::channel(false);
        let events = Arc::new(Mutex::new(Vec::new()));
        let socket = Socket {
            reading: rx,
            events: events.clone(),
        };
        let writer = tokio::spawn(run(client.clone(), socket));
        Setup {
            handles,
            client,
            reading,
            events,
            writer,
        }
    }

    fn overflow(client: &Client) {
        for seq in 1..=10 {
            let log = Frame::from_bus(Channel::Logs, None, b"{}", Some(seq)).unwrap();
            client.outbox.push(Arc::new(log));
        }
        assert_eq!(client.outbox.closing(), Some(Closing::SlowConsumer));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_consumer_that_reads_again_gets_its_goodbye() {
        let s = setup();
        tokio::time::sleep(Duration::from_millis(10)).await;
        overflow(&s.client);
        tokio::time::sleep(GOODBYE_PATIENCE / 2).await;
        s.reading.send_replace(true);
        s.writer.await.unwrap();
        let events = s.events.lock().unwrap().clone();
        assert_eq!(events, ["connected", "disconnected", "close"]);
        assert_eq!(s.handles.registry.count(), 0, "the client is gone");
    }

    /// A socket that takes frames at once but whose flush waits for the
    /// reader, as a full kernel buffer does.
    struct SlowFlush {
        reading: watch::Receiver<bool>,
        events: Arc<Mutex<Vec<String>>>,
    }

    impl FrameSink for SlowFlush {
        async fn send(&mut self, frame: &Frame) -> Sent {
            self.events.lock().unwrap().push(frame.event.to_owned());
            Sent::Ok
        }
        async fn flush(&mut self) -> Sent {
            let _ = self.reading.wait_for(|r| *r).await;
            Sent::Ok
        }
        async fn close(&mut self) {}
    }

    /// A frame queued while the writer's last flush waits on the socket is
    /// written once the socket takes data again: the wake-up is not lost.
    #[tokio::test(start_paused = true)]
    async fn a_frame_queued_during_a_blocked_flush_is_not_forgotten() {
        let s = setup();
        s.writer.abort();
        let (reading, rx) = watch::channel(false);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = SlowFlush {
            reading: rx,
            events: events.clone(),
        };
        let writer = tokio::spawn(run(s.client.clone(), sink));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let quote = Frame::from_bus(Channel::Quotes, Some("X"), b"{}", None).unwrap();
        s.client.outbox.push(Arc::new(quote));
        tokio::time::sleep(Duration::from_millis(10)).await;
        reading.send_replace(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*events.lock().unwrap(), ["connected", "quotes"]);
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_consumer_that_never_reads_is_dropped() {
        let s = setup();
        tokio::time::sleep(Duration::from_millis(10)).await;
        overflow(&s.client);
        let started = tokio::time::Instant::now();
        s.writer.await.unwrap();
        assert!(started.elapsed() <= GOODBYE_PATIENCE + CLOSE_PATIENCE);
        assert!(s.events.lock().unwrap().is_empty(), "nothing got through");
        assert_eq!(s.handles.registry.count(), 0, "the client is gone");
    }
}
