//! Engine.IO v4 long-polling for the fast path: the transport alone, as
//! its protocol document describes it. Which sessions exist (the sid
//! table), the packets waiting for a client's next `GET`, its `POST`s
//! turned into the session's inbound packets, and the HTTP 400 answers
//! with the Engine.IO error codes. What the packets mean (heartbeat,
//! CONNECT, events, the upgrade) is the session's, in `eio`, the same for
//! both transports.
//!
//! The rules kept here: one `GET` and one `POST` at a time per session (a
//! second one gets 400 and closes the session); a `POST` body is packets
//! joined by `\x1e`, a binary one base64 with a `b` in front; a body over
//! `maxPayload` gets 413 and closes the session; a `GET` waits until
//! something is queued (the heartbeat's ping comes every `pingInterval`)
//! and takes everything queued at once. Packets reach the session through
//! one bounded queue, so a client's packets are handled in the order they
//! came, by the session's one task; a `POST` is answered `ok` once they
//! are handled (400 if they closed the session).

use crate::transport::writer::Sent;
use axum::body::Body;
use axum::extract::ws::{Utf8Bytes, WebSocket};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

/// The Engine.IO record separator between the packets of one payload.
pub const SEPARATOR: char = '\x1e';
/// Packets a session may have waiting to be handled; a `POST` with more
/// waits for the session to catch up.
const INBOUND_QUEUE: usize = 1024;
/// Bytes of packets waiting for a `GET` past which the client's writer is
/// told to wait (its outbox conflates and cuts off a client that is too
/// far behind, as on a WebSocket).
const QUEUE_BYTES: usize = 1024 * 1024;

/// The Engine.IO errors a request can get (HTTP 400 with
/// `{"code", "message"}`, as Engine.IO servers answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EioError {
    /// `transport` is missing or not `polling`/`websocket`.
    TransportUnknown,
    /// No session with that `sid`.
    SessionIdUnknown,
    /// A handshake that is not a `GET`.
    BadHandshakeMethod,
    /// Anything else the transport does not allow (a second `GET`, a
    /// method other than `GET`/`POST`, a second upgrade).
    BadRequest,
    /// `EIO` is missing or not `4`.
    UnsupportedProtocolVersion,
}

impl EioError {
    fn code(self) -> u8 {
        match self {
            EioError::TransportUnknown => 0,
            EioError::SessionIdUnknown => 1,
            EioError::BadHandshakeMethod => 2,
            EioError::BadRequest => 3,
            EioError::UnsupportedProtocolVersion => 5,
        }
    }

    fn message(self) -> &'static str {
        match self {
            EioError::TransportUnknown => "Transport unknown",
            EioError::SessionIdUnknown => "Session ID unknown",
            EioError::BadHandshakeMethod => "Bad handshake method",
            EioError::BadRequest => "Bad request",
            EioError::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }
}

impl IntoResponse for EioError {
    fn into_response(self) -> Response {
        let body = json!({ "code": self.code(), "message": self.message() });
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    }
}

/// One thing for a polling session to handle, in arrival order.
pub enum Input {
    /// A text packet (`40{…}`, `3`, `42[…]`…).
    Text(Utf8Bytes),
    /// A binary packet (a Socket.IO attachment); its bytes are not used.
    Binary,
    /// A WebSocket with this session's `sid`, asking to take over.
    Upgrade(Box<WebSocket>),
    /// The end of a `POST`: answered once everything before it is
    /// handled (dropped unanswered if the session closed on it).
    Handled(oneshot::Sender<()>),
}

/// Why the transport closes the session by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// A second `GET` while one was waiting.
    DuplicateGet,
    /// A second `POST` while one was being read.
    DuplicatePost,
    /// A `POST` body over `maxPayload`.
    TooLarge,
    /// A `POST` body that is not UTF-8 text.
    NotText,
    /// The replica is shutting down.
    Shutdown,
}

/// The sessions that started on polling, by sid. An upgraded one stays
/// until it ends (a polling request for it gets 400, a second WebSocket
/// is accepted and closed, as the protocol asks).
#[derive(Default)]
pub struct Table {
    /// The sessions.
    sessions: Mutex<HashMap<String, Arc<Polling>>>,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Polling>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, sid: String, polling: Arc<Polling>) {
        self.lock().insert(sid, polling);
    }

    pub fn get(&self, sid: &str) -> Option<Arc<Polling>> {
        self.lock().get(sid).cloned()
    }

    pub fn remove(&self, sid: &str) {
        self.lock().remove(sid);
    }

    /// Closes every session still on polling (at the end of a drain: a
    /// waiting `GET` would otherwise hold its connection until the next
    /// ping).
    pub fn close_all(&self) {
        let sessions: Vec<Arc<Polling>> = self.lock().values().cloned().collect();
        for polling in sessions {
            polling.set_broken(Broken::Shutdown);
        }
    }

    /// Waits until no session is left on polling (each leaves once a `GET`
    /// has taken its last packets, or its goodbye patience is over).
    pub async fn emptied(&self) {
        while !self.lock().values().all(|p| p.is_upgraded()) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// What the session's requests share, under one lock.
#[derive(Default)]
struct State {
    /// Packets for the next `GET`, in order.
    queue: Vec<Utf8Bytes>,
    /// Their total length.
    bytes: usize,
    /// A `GET` is waiting.
    get: bool,
    /// A `POST` is being read.
    post: bool,
    /// An upgrade has been probed: a `GET` gets a noop (`6`) at once.
    upgrading: bool,
    /// The transport is over: the last packet a `GET` gets (`1` close,
    /// `6` noop), after what is queued.
    last: Option<&'static str>,
    /// A `GET` has taken `last`.
    delivered: bool,
    /// The session has moved to a WebSocket: polling requests get 400.
    upgraded: bool,
    /// Why the transport broke, if it did.
    broken: Option<Broken>,
}

/// One polling session's transport.
pub struct Polling {
    /// Queue and flags.
    state: Mutex<State>,
    /// Wakes the waiting `GET` (and whoever waits for `last` to go out).
    ready: Notify,
    /// The session's inbound packets.
    inbound: mpsc::Sender<Input>,
    /// Cancelled when the transport breaks (see [`Broken`]).
    broken: CancellationToken,
}

impl Polling {
    /// A new transport and the receiving end of its inbound packets.
    pub fn new() -> (Arc<Polling>, mpsc::Receiver<Input>) {
        let (inbound, rx) = mpsc::channel(INBOUND_QUEUE);
        let polling = Arc::new(Polling {
            state: Mutex::default(),
            ready: Notify::new(),
            inbound,
            broken: CancellationToken::new(),
        });
        (polling, rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a packet for the next `GET` (seen by it after [`wake`]).
    /// `capped`: refuse (`Busy`) when too much is waiting already, for
    /// the client's writer, whose outbox holds what waits meanwhile.
    ///
    /// [`wake`]: Polling::wake
    pub fn push(&self, packet: Utf8Bytes, capped: bool) -> Sent {
        let mut state = self.lock();
        if state.last.is_some() {
            return Sent::Closed;
        }
        if capped && state.bytes >= QUEUE_BYTES {
            return Sent::Busy;
        }
        state.bytes += packet.len() + 1;
        state.queue.push(packet);
        Sent::Ok
    }

    /// Lets a waiting `GET` take what is queued.
    pub fn wake(&self) {
        self.ready.notify_waiters();
    }

    /// Ends the transport: a waiting or the next `GET` gets what is
    /// queued, then `last`.
    pub fn end(&self, last: &'static str) {
        self.lock().last.get_or_insert(last);
        self.wake();
    }

    /// Waits until a `GET` has taken the last packet.
    pub async fn delivered(&self) {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().delivered {
                return;
            }
            notified.await;
        }
    }

    /// The probe answered: a waiting `GET` (and any other until the upgrade
    /// completes) gets a noop, so the client can pause polling.
    pub fn probed(&self, upgrading: bool) {
        self.lock().upgrading = upgrading;
        self.wake();
    }

    /// The upgrade is done: what was queued (for the WebSocket now), and
    /// a waiting `GET` gets a noop.
    pub fn upgraded(&self) -> Vec<Utf8Bytes> {
        let mut state = self.lock();
        state.upgraded = true;
        state.last.get_or_insert("6");
        state.bytes = 0;
        let queued = std::mem::take(&mut state.queue);
        drop(state);
        self.wake();
        queued
    }

    /// Completes when the transport breaks, with why.
    pub async fn broken(&self) -> Broken {
        self.broken.cancelled().await;
        self.lock().broken.unwrap_or(Broken::DuplicateGet)
    }

    fn set_broken(&self, why: Broken) {
        self.lock().broken.get_or_insert(why);
        self.broken.cancel();
    }

    /// Whether the session has moved to a WebSocket.
    pub fn is_upgraded(&self) -> bool {
        self.lock().upgraded
    }

    /// Hands the session a WebSocket that asks to take over; it comes
    /// back if the session is gone.
    pub async fn offer(&self, socket: WebSocket) -> Option<WebSocket> {
        match self.inbound.send(Input::Upgrade(Box::new(socket))).await {
            Ok(()) => None,
            Err(mpsc::error::SendError(Input::Upgrade(socket))) => Some(*socket),
            Err(_) => None,
        }
    }

    /// Marks a `GET` or `POST` as under way, until the returned flag is
    /// dropped. An upgraded session refuses it (400); a second one of the
    /// same kind breaks the session and gets 400.
    fn claim(&self, request: Request) -> Result<Flag<'_>, EioError> {
        let mut state = self.lock();
        if state.upgraded {
            return Err(EioError::BadRequest);
        }
        let busy = match request {
            Request::Get => &mut state.get,
            Request::Post => &mut state.post,
        };
        if std::mem::replace(busy, true) {
            drop(state);
            self.set_broken(match request {
                Request::Get => Broken::DuplicateGet,
                Request::Post => Broken::DuplicatePost,
            });
            return Err(EioError::BadRequest);
        }
        Ok(Flag {
            polling: self,
            request,
        })
    }

    /// `GET` with this sid: waits for packets, then returns all of them.
    pub async fn get(&self) -> Response {
        let _waiting = match self.claim(Request::Get) {
            Ok(flag) => flag,
            Err(refused) => return refused.into_response(),
        };
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(body) = self.take() {
                return text(body);
            }
            notified.await;
        }
    }

    /// Everything a `GET` may take now, joined; `None` if nothing.
    fn take(&self) -> Option<String> {
        let mut state = self.lock();
        if state.queue.is_empty() && state.last.is_none() && !state.upgrading {
            return None;
        }
        let mut packets: Vec<&str> = state.queue.iter().map(|p| p.as_str()).collect();
        // `last` goes out alone, in the GET after the queued packets:
        // socket.io-client handles the packets of a payload a tick later
        // than a close (`1`), so a goodbye (`42["disconnected",…]`, `41`)
        // sharing its payload would be dropped as "transport close".
        let ended = packets.is_empty() && state.last.is_some();
        match state.last {
            Some(last) if ended => packets.push(last),
            Some(_) => {}
            None if state.upgrading => packets.push("6"),
            None => {}
        }
        let body = packets.join("\u{1e}");
        state.queue.clear();
        state.bytes = 0;
        state.delivered |= ended;
        drop(state);
        if ended {
            // The session may be waiting for its goodbye to go out.
            self.wake();
        }
        Some(body)
    }

    /// `POST` with this sid: its packets, in order, to the session.
    pub async fn post(&self, headers: &HeaderMap, body: Body, limit: usize) -> Response {
        let _reading = match self.claim(Request::Post) {
            Ok(flag) => flag,
            Err(refused) => return refused.into_response(),
        };
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let body = match announced {
            Some(length) if length > limit => None,
            _ => axum::body::to_bytes(body, limit).await.ok(),
        };
        let Some(body) = body else {
            self.set_broken(Broken::TooLarge);
            return (StatusCode::PAYLOAD_TOO_LARGE, "payload over maxPayload").into_response();
        };
        let Ok(body) = std::str::from_utf8(&body) else {
            self.set_broken(Broken::NotText);
            return EioError::BadRequest.into_response();
        };
        for packet in body.split(SEPARATOR) {
            if self.inbound.send(decode(packet)).await.is_err() {
                return EioError::SessionIdUnknown.into_response();
            }
        }
        // `ok` once the session has handled them all, so that a client
        // whose packets closed the session hears it here (400), and its
        // next request finds the session gone.
        // A client that closed the session itself (`1`) gets its `ok`.
        let (done, handled) = oneshot::channel();
        let handled =
            self.inbound.send(Input::Handled(done)).await.is_ok() && handled.await.is_ok();
        if !handled && !body.split(SEPARATOR).any(|p| p == "1") {
            return EioError::BadRequest.into_response();
        }
        text("ok".to_owned())
    }
}

/// One packet of a `POST` body: `b` + base64 is binary; anything else is
/// a text packet (a `b` whose base64 is broken stays text, and the session
/// closes on it as an unknown packet).
fn decode(packet: &str) -> Input {
    match packet.strip_prefix('b') {
        Some(b64)
            if base64::engine::general_purpose::STANDARD
                .decode(b64)
                .is_ok() =>
        {
            Input::Binary
        }
        _ => Input::Text(Utf8Bytes::from(packet)),
    }
}

/// A polling answer: plain text, never cached.
pub fn text(body: String) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=UTF-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// The two requests of a polling session, one of each at a time.
#[derive(Debug, Clone, Copy)]
enum Request {
    Get,
    Post,
}

/// Clears the `GET`/`POST` flag when the request ends, answered or not
/// (a client that goes away while its `GET` waits may poll again).
struct Flag<'a> {
    /// The transport whose flag it is.
    polling: &'a Polling,
    /// Which flag.
    request: Request,
}

impl Drop for Flag<'_> {
    fn drop(&mut self) {
        let mut state = self.polling.lock();
        match self.request {
            Request::Get => state.get = false,
            Request::Post => state.post = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_packets_are_text_or_binary() {
        assert!(matches!(decode("42[\"x\"]"), Input::Text(t) if t.as_str() == "42[\"x\"]"));
        assert!(matches!(decode("bAQID"), Input::Binary));
        assert!(matches!(decode("b!!"), Input::Text(_)));
    }

    #[tokio::test]
    async fn a_get_takes_everything_queued_then_the_last_packet() {
        let (polling, _rx) = Polling::new();
        assert_eq!(polling.push(Utf8Bytes::from("2"), true), Sent::Ok);
        assert_eq!(polling.push(Utf8Bytes::from("42[\"x\"]"), true), Sent::Ok);
        assert_eq!(polling.take().as_deref(), Some("2\u{1e}42[\"x\"]"));
        assert_eq!(polling.take(), None);
        polling.end("1");
        assert_eq!(polling.push(Utf8Bytes::from("2"), true), Sent::Closed);
        assert_eq!(polling.take().as_deref(), Some("1"));
        polling.delivered().await;
    }

    #[tokio::test]
    async fn the_close_packet_never_shares_a_payload_with_a_goodbye() {
        let (polling, _rx) = Polling::new();
        polling.push(Utf8Bytes::from("42[\"disconnected\",{}]"), false);
        polling.push(Utf8Bytes::from("41"), false);
        polling.end("1");
        assert_eq!(
            polling.take().as_deref(),
            Some("42[\"disconnected\",{}]\u{1e}41")
        );
        assert!(!polling.lock().delivered, "the close is still to go");
        assert_eq!(polling.take().as_deref(), Some("1"));
        polling.delivered().await;
    }

    #[tokio::test]
    async fn a_second_get_breaks_the_session() {
        let (polling, _rx) = Polling::new();
        let first = {
            let polling = polling.clone();
            tokio::spawn(async move { polling.get().await.status() })
        };
        while !polling.lock().get {
            tokio::task::yield_now().await;
        }
        assert_eq!(polling.get().await.status(), StatusCode::BAD_REQUEST);
        assert_eq!(polling.broken().await, Broken::DuplicateGet);
        polling.end("1");
        assert_eq!(first.await.unwrap(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_second_post_breaks_the_session() {
        let (polling, _rx) = Polling::new();
        // A body that never ends keeps the first POST reading.
        let endless = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        let first = {
            let polling = polling.clone();
            tokio::spawn(async move {
                let body = Body::from_stream(endless);
                polling.post(&HeaderMap::new(), body, 1024).await.status()
            })
        };
        while !polling.lock().post {
            tokio::task::yield_now().await;
        }
        let second = polling.post(&HeaderMap::new(), Body::from("3"), 1024).await;
        assert_eq!(second.status(), StatusCode::BAD_REQUEST);
        assert_eq!(polling.broken().await, Broken::DuplicatePost);
        first.abort();
    }

    #[tokio::test]
    async fn bodies_that_are_too_big_or_not_text_break_the_session() {
        let (polling, _rx) = Polling::new();
        let big = polling
            .post(&HeaderMap::new(), Body::from("4".repeat(20)), 10)
            .await;
        assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(polling.broken().await, Broken::TooLarge);
        let (polling, _rx) = Polling::new();
        let binary = polling
            .post(&HeaderMap::new(), Body::from(vec![0xff, 0xfe]), 10)
            .await;
        assert_eq!(binary.status(), StatusCode::BAD_REQUEST);
        assert_eq!(polling.broken().await, Broken::NotText);
    }

    #[tokio::test]
    async fn an_upgraded_session_refuses_polling_requests() {
        let (polling, _rx) = Polling::new();
        polling.push(Utf8Bytes::from("2"), false);
        assert_eq!(polling.upgraded().len(), 1, "the queue moves to the socket");
        assert_eq!(polling.get().await.status(), StatusCode::BAD_REQUEST);
        let post = polling.post(&HeaderMap::new(), Body::from("3"), 10).await;
        assert_eq!(post.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_full_queue_makes_the_writer_wait() {
        let (polling, _rx) = Polling::new();
        let big = Utf8Bytes::from("4".repeat(QUEUE_BYTES));
        assert_eq!(polling.push(big, true), Sent::Ok);
        assert_eq!(polling.push(Utf8Bytes::from("42"), true), Sent::Busy);
        assert_eq!(polling.push(Utf8Bytes::from("2"), false), Sent::Ok);
    }
}
