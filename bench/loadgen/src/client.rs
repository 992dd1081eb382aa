//! One benchmark client: a Socket.IO v5 connection over WebSocket or over
//! Engine.IO long-polling, spoken by hand.
//!
//! Life of a client: TCP connect, Engine.IO handshake (`0{...}`), namespace
//! connect with `{"token": ...}` (`40` back, or `44` when refused), then
//! optionally `subscribe` to quotes and wait for `subscribed`. From then on
//! it answers pings (`2` → `3`) and tallies quotes until the run tells it to
//! flush or stop through a `watch` channel. A "slow" client stops reading
//! right after `subscribed` (with a small receive buffer, so the server
//! feels it quickly). Failures are counted, never panicked on.

use crate::eio::{self, Packet, Sio};
use crate::stats::{now_us, Shared, Tally};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The value of the control channel that tells clients to stop; any other
/// change means "flush your tally now".
pub const STOP: u64 = u64::MAX;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Receive buffer of a slow client's socket, so its backlog lands on the server.
const SLOW_RCVBUF: u32 = 4096;

// SUBSCRIBE_AFTER: clients send `subscribe` after the `connected` event,
// not right after the namespace `40` ack. socketioxide sends `40` and then
// *spawns* an async connect handler; our gateway registers its event
// handler inside that handler, so an event arriving in between is dropped
// without a trace (seen as ~10% of clients never getting `subscribed` on
// a busy machine). `connected` is written only after registration.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Websocket,
    Polling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Subscribes and has its quotes measured.
    Measured,
    /// Subscribes, then never reads again.
    Slow,
    /// Subscribes and just holds the connection (idle mode).
    Idle,
    /// Only connects and authenticates (connect-rate mode).
    HandshakeOnly,
}

pub struct Ctx {
    pub addr: SocketAddr,
    pub host: String,
    pub transport: Transport,
    pub shared: Arc<Shared>,
    pub symbols: usize,
    pub control: watch::Receiver<u64>,
    /// Send `subscribe` right after the `40` ack instead of after the
    /// `connected` event (WebSocket only; see `SUBSCRIBE_AFTER`).
    pub subscribe_early: bool,
}

enum Failure {
    Auth,
    Connect(&'static str),
}

type Ws = WebSocketStream<TcpStream>;

fn ws_config() -> WebSocketConfig {
    // Small buffers: 10,000 clients at the 128 KiB defaults would need 2.5 GB.
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Runs one client to the end of the run. `permit` bounds the handshakes in
/// flight and is released once this client is ready (or has failed).
pub async fn run(
    ctx: Arc<Ctx>,
    id: usize,
    token: String,
    role: Role,
    permit: OwnedSemaphorePermit,
) {
    match ctx.transport {
        Transport::Websocket => websocket(ctx, id, token, role, permit).await,
        Transport::Polling => polling(ctx, id, token, role, permit).await,
    }
}

/// Counts a failed setup; with `LOADGEN_DEBUG` set, the first few are
/// explained on stderr (`stage` is where a timed-out setup was waiting).
fn count_failure(shared: &Shared, failure: Option<Failure>, stage: &str) {
    let n = match &failure {
        Some(Failure::Auth) => shared.counters.auth_failures.fetch_add(1, Relaxed),
        _ => shared.counters.connect_failures.fetch_add(1, Relaxed),
    };
    if n < 5 && std::env::var_os("LOADGEN_DEBUG").is_some() {
        let why = match failure {
            Some(Failure::Auth) => "refused (connect_error)",
            Some(Failure::Connect(why)) => why,
            None => "timed out",
        };
        eprintln!("loadgen: client setup failed: {why} (stage: {stage})");
    }
}

// ---------------------------------------------------------------- WebSocket

async fn websocket(
    ctx: Arc<Ctx>,
    id: usize,
    token: String,
    role: Role,
    permit: OwnedSemaphorePermit,
) {
    let shared = &ctx.shared;
    let mut control = ctx.control.clone();
    let started = Instant::now();
    let mut stage = "start";
    let setup = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        ws_setup(&ctx, &token, role, started, &mut stage),
    );
    let mut ws = match setup.await {
        Ok(Ok(ws)) => ws,
        Ok(Err(f)) => return count_failure(shared, Some(f), stage),
        Err(_) => return count_failure(shared, None, stage),
    };
    shared.counters.ready.fetch_add(1, Relaxed);
    if role == Role::Measured {
        shared.counters.ready_measured.fetch_add(1, Relaxed);
    }
    drop(permit);

    if matches!(role, Role::Slow | Role::HandshakeOnly) {
        // Hold the socket without reading it until the run ends.
        while *control.borrow_and_update() != STOP {
            if control.changed().await.is_err() {
                break;
            }
        }
        drop(ws);
        return;
    }

    let mut tally = Tally::new(id, ctx.symbols);
    let measured = role == Role::Measured;
    loop {
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => {
                        if *control.borrow() != STOP {
                            shared.counters.disconnects.fetch_add(1, Relaxed);
                        }
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) => {
                        if *control.borrow() != STOP {
                            shared.counters.errors.fetch_add(1, Relaxed);
                            shared.counters.disconnects.fetch_add(1, Relaxed);
                        }
                        break;
                    }
                };
                match on_packet(shared, &mut tally, measured, text.as_str()) {
                    Action::None => {}
                    Action::Pong => {
                        if ws.send(Message::text(eio::PONG)).await.is_err() {
                            shared.counters.errors.fetch_add(1, Relaxed);
                            break;
                        }
                        shared.counters.pongs.fetch_add(1, Relaxed);
                    }
                    Action::Closed => {
                        shared.counters.disconnects.fetch_add(1, Relaxed);
                        break;
                    }
                }
            }
            changed = control.changed() => {
                tally.flush(shared);
                if changed.is_err() || *control.borrow() == STOP {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    return;
                }
            }
        }
    }
    tally.flush(shared);
}

async fn ws_setup(
    ctx: &Ctx,
    token: &str,
    role: Role,
    started: Instant,
    stage: &mut &'static str,
) -> Result<Ws, Failure> {
    *stage = "tcp connect";
    let socket = TcpSocket::new_v4().map_err(|_| Failure::Connect("socket"))?;
    if role == Role::Slow {
        let _ = socket.set_recv_buffer_size(SLOW_RCVBUF);
    }
    let stream = socket
        .connect(ctx.addr)
        .await
        .map_err(|_| Failure::Connect("tcp connect"))?;
    let _ = stream.set_nodelay(true);
    *stage = "websocket upgrade";
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", ctx.host);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .map_err(|_| Failure::Connect("websocket upgrade"))?;
    let mut sent_connect = false;
    let mut connected = false;
    *stage = "engine.io open";
    while let Some(msg) = ws.next().await {
        let Ok(Message::Text(text)) = msg else {
            match msg {
                Ok(Message::Close(_)) | Err(_) => {
                    return Err(Failure::Connect("closed during setup"))
                }
                _ => continue,
            }
        };
        match eio::parse(text.as_str()) {
            Packet::Open(_) if !sent_connect => {
                send(&mut ws, eio::connect_packet(token)).await?;
                sent_connect = true;
                *stage = "namespace connect";
            }
            Packet::Ping => send(&mut ws, eio::PONG.to_owned()).await?,
            Packet::Close => return Err(Failure::Connect("engine.io close during setup")),
            Packet::Message(Sio::ConnectError(_)) => return Err(Failure::Auth),
            Packet::Message(Sio::Connect(_)) if !connected => {
                connected = true;
                ctx.shared
                    .record_handshake(started.elapsed().as_micros() as u64);
                if role == Role::HandshakeOnly {
                    return Ok(ws);
                }
                if ctx.subscribe_early {
                    send(&mut ws, eio::SUBSCRIBE_QUOTES.to_owned()).await?;
                    *stage = "subscribed (sent right after 40)";
                } else {
                    *stage = "connected event";
                }
            }
            // Subscribe once the server says `connected`, as the README's
            // clients do: see `SUBSCRIBE_AFTER` for why not right after `40`.
            Packet::Message(Sio::Event {
                name: "connected", ..
            }) if connected && !ctx.subscribe_early => {
                send(&mut ws, eio::SUBSCRIBE_QUOTES.to_owned()).await?;
                *stage = "subscribed";
            }
            Packet::Message(Sio::Event {
                name: "subscribed", ..
            }) if connected => return Ok(ws),
            Packet::Message(Sio::Disconnect) => {
                return Err(Failure::Connect("socket.io disconnect during setup"))
            }
            _ => {}
        }
    }
    Err(Failure::Connect("stream ended during setup"))
}

async fn send(ws: &mut Ws, text: String) -> Result<(), Failure> {
    ws.send(Message::text(text))
        .await
        .map_err(|_| Failure::Connect("send during setup"))
}

enum Action {
    None,
    Pong,
    Closed,
}

/// Handles one received packet of a ready client.
fn on_packet(shared: &Shared, tally: &mut Tally, measured: bool, packet: &str) -> Action {
    // The hot path: a quote event. Check its prefix before anything else.
    if let Some(rest) = packet.strip_prefix("42[\"quotes\",") {
        if measured {
            let data = rest.strip_suffix(']').unwrap_or(rest);
            tally.quote(shared, eio::read_stamp(data), now_us());
        }
        return Action::None;
    }
    match eio::parse(packet) {
        Packet::Ping => Action::Pong,
        Packet::Close | Packet::Message(Sio::Disconnect) => Action::Closed,
        Packet::Message(Sio::Event {
            name: "disconnected",
            ..
        }) => {
            shared.counters.told_to_leave.fetch_add(1, Relaxed);
            Action::None
        }
        _ => Action::None,
    }
}

// ------------------------------------------------------------- long-polling

/// One HTTP/1.1 keep-alive connection.
struct Http {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Http {
    async fn connect(addr: SocketAddr, host: &str) -> Result<Http, Failure> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|_| Failure::Connect("http"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect("http"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Http {
            sender,
            host: host.to_owned(),
        })
    }

    async fn request(&mut self, post: Option<String>, uri: &str) -> Result<Bytes, Failure> {
        self.sender
            .ready()
            .await
            .map_err(|_| Failure::Connect("http"))?;
        let builder = hyper::Request::builder()
            .uri(uri)
            .header(hyper::header::HOST, &self.host);
        let request = match post {
            Some(body) => builder
                .method(hyper::Method::POST)
                .header(hyper::header::CONTENT_TYPE, "text/plain;charset=UTF-8")
                .body(Full::new(Bytes::from(body))),
            None => builder
                .method(hyper::Method::GET)
                .body(Full::new(Bytes::new())),
        }
        .map_err(|_| Failure::Connect("http"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|_| Failure::Connect("http"))?;
        let ok = response.status().is_success();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| Failure::Connect("http"))?
            .to_bytes();
        if ok {
            Ok(body)
        } else {
            Err(Failure::Connect("http"))
        }
    }
}

/// GETs `path` from the server (for its `/metrics`); None on any failure.
pub async fn http_get(addr: SocketAddr, host: &str, path: &str) -> Option<String> {
    let fetch = async {
        let mut http = Http::connect(addr, host).await.ok()?;
        let body = http.request(None, path).await.ok()?;
        String::from_utf8(body.to_vec()).ok()
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
}

/// A polling session: one connection for the long GETs, one for POSTs.
struct PollSession {
    get: Http,
    post: Http,
    uri: String,
}

impl PollSession {
    async fn send(&mut self, packet: String) -> Result<(), Failure> {
        self.post.request(Some(packet), &self.uri).await.map(|_| ())
    }
}

async fn polling(
    ctx: Arc<Ctx>,
    id: usize,
    token: String,
    role: Role,
    permit: OwnedSemaphorePermit,
) {
    let shared = &ctx.shared;
    let started = Instant::now();
    let setup = tokio::time::timeout(HANDSHAKE_TIMEOUT, poll_setup(&ctx, &token, role, started));
    let mut session = match setup.await {
        Ok(Ok(s)) => s,
        Ok(Err(f)) => return count_failure(shared, Some(f), "polling setup"),
        Err(_) => return count_failure(shared, None, "polling setup"),
    };
    shared.counters.ready.fetch_add(1, Relaxed);
    if role == Role::Measured {
        shared.counters.ready_measured.fetch_add(1, Relaxed);
    }
    drop(permit);

    let mut control = ctx.control.clone();
    let mut tally = Tally::new(id, ctx.symbols);
    let measured = role == Role::Measured;
    loop {
        let uri = session.uri.clone();
        let body = {
            let get = session.get.request(None, &uri);
            tokio::pin!(get);
            loop {
                tokio::select! {
                    body = &mut get => break body,
                    changed = control.changed() => {
                        tally.flush(shared);
                        if changed.is_err() || *control.borrow() == STOP {
                            return;
                        }
                    }
                }
            }
        };
        let Ok(body) = body else {
            if *control.borrow() != STOP {
                shared.counters.errors.fetch_add(1, Relaxed);
                shared.counters.disconnects.fetch_add(1, Relaxed);
            }
            break;
        };
        let Ok(text) = std::str::from_utf8(&body) else {
            shared.counters.errors.fetch_add(1, Relaxed);
            continue;
        };
        let mut pongs = 0;
        let mut closed = false;
        for packet in eio::split_payload(text) {
            match on_packet(shared, &mut tally, measured, packet) {
                Action::None => {}
                Action::Pong => pongs += 1,
                Action::Closed => closed = true,
            }
        }
        if closed {
            shared.counters.disconnects.fetch_add(1, Relaxed);
            break;
        }
        for _ in 0..pongs {
            if session.send(eio::PONG.to_owned()).await.is_err() {
                shared.counters.errors.fetch_add(1, Relaxed);
            } else {
                shared.counters.pongs.fetch_add(1, Relaxed);
            }
        }
    }
    tally.flush(shared);
}

async fn poll_setup(
    ctx: &Ctx,
    token: &str,
    role: Role,
    started: Instant,
) -> Result<PollSession, Failure> {
    let mut get = Http::connect(ctx.addr, &ctx.host).await?;
    let base = "/socket.io/?EIO=4&transport=polling";
    let open = get.request(None, base).await?;
    let open = std::str::from_utf8(&open).map_err(|_| Failure::Connect("http"))?;
    let sid = eio::split_payload(open)
        .find_map(|p| match eio::parse(p) {
            Packet::Open(json) => eio::open_sid(json),
            _ => None,
        })
        .ok_or(Failure::Connect("http"))?;
    let post = Http::connect(ctx.addr, &ctx.host).await?;
    let mut session = PollSession {
        get,
        post,
        uri: format!("{base}&sid={sid}"),
    };
    session.send(eio::connect_packet(token)).await?;
    let mut connected = false;
    loop {
        let uri = session.uri.clone();
        let body = session.get.request(None, &uri).await?;
        let text = std::str::from_utf8(&body).map_err(|_| Failure::Connect("http"))?;
        let mut reply = Vec::new();
        for packet in eio::split_payload(text) {
            match eio::parse(packet) {
                Packet::Ping => reply.push(eio::PONG.to_owned()),
                Packet::Close => return Err(Failure::Connect("engine.io close during setup")),
                Packet::Message(Sio::ConnectError(_)) => return Err(Failure::Auth),
                Packet::Message(Sio::Connect(_)) if !connected => {
                    connected = true;
                    ctx.shared
                        .record_handshake(started.elapsed().as_micros() as u64);
                    if role == Role::HandshakeOnly {
                        return Ok(session);
                    }
                }
                Packet::Message(Sio::Event {
                    name: "connected", ..
                }) if connected => reply.push(eio::SUBSCRIBE_QUOTES.to_owned()),
                Packet::Message(Sio::Event {
                    name: "subscribed", ..
                }) if connected => return Ok(session),
                _ => {}
            }
        }
        for packet in reply {
            session.send(packet).await?;
        }
    }
}
