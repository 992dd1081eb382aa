//! Engine.IO v4 / Socket.IO v5 spoken by hand, for the conformance tests:
//! an [`EioSocket`] (one WebSocket, one packet per frame) and an
//! [`EioPolling`] session (HTTP long-polling, packets joined by `\x1e`).
//!
//! Nothing here interprets more than it must: packets come back as the
//! text or bytes that were on the wire, so a test can say exactly what the
//! protocol documents say a server sends.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

/// The Engine.IO record separator between packets of one polling payload.
pub const SEPARATOR: char = '\x1e';

/// One thing read from an Engine.IO WebSocket.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire {
    /// A text frame: one Engine.IO packet.
    Text(String),
    /// A binary frame (a Socket.IO attachment).
    Binary(Vec<u8>),
    /// A close frame, with its code when it carried one.
    Close(Option<u16>),
    /// The connection ended without a close frame (reset or EOF).
    Dropped,
}

/// `/socket.io/?EIO=4&transport=…` plus `extra` query parameters.
pub fn path(transport: &str, extra: &str) -> String {
    let mut path = format!("/socket.io/?EIO=4&transport={transport}");
    if !extra.is_empty() {
        path.push('&');
        path.push_str(extra);
    }
    path
}

/// An Engine.IO WebSocket: a new session, or the upgrade of a polling one.
pub struct EioSocket {
    ws: WebSocket<TcpStream>,
    /// Everything read so far, in order, with when it came.
    pub seen: Vec<(Instant, Wire)>,
    cursor: usize,
    ended: bool,
    /// Answer the server's pings with pongs while waiting.
    pub auto_pong: bool,
}

impl EioSocket {
    /// Opens `ws://addr{path}` (a path from [`path`]).
    pub fn open(addr: SocketAddr, path: &str) -> Result<EioSocket, String> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).ok();
        let url = format!("ws://{addr}{path}");
        let (ws, _) = tungstenite::client(url.as_str(), stream)
            .map_err(|e| format!("websocket handshake with {url}: {e}"))?;
        Ok(EioSocket {
            ws,
            seen: Vec::new(),
            cursor: 0,
            ended: false,
            auto_pong: true,
        })
    }

    /// A new WebSocket-only session: opens it and reads the open packet.
    pub fn handshake(addr: SocketAddr, extra: &str, timeout: Duration) -> (EioSocket, Value) {
        let mut socket = EioSocket::open(addr, &path("websocket", extra))
            .unwrap_or_else(|e| panic!("engine.io websocket: {e}"));
        let open = socket.expect_text(timeout, "the open packet");
        let value = open_payload(&open);
        (socket, value)
    }

    pub fn send(&mut self, packet: &str) {
        self.try_send(packet)
            .unwrap_or_else(|e| panic!("send {packet:?}: {e}"));
    }

    /// Sends, reporting failure (the server may have closed already).
    pub fn try_send(&mut self, packet: &str) -> Result<(), String> {
        self.ws
            .send(Message::text(packet.to_owned()))
            .map_err(|e| e.to_string())
    }

    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .unwrap_or_else(|e| panic!("send binary: {e}"));
    }

    /// Sends several packets in one TCP write (back to back, as a client
    /// that emits in a loop does).
    pub fn send_burst(&mut self, packets: &[String]) {
        for packet in packets {
            self.ws
                .write(Message::text(packet.clone()))
                .unwrap_or_else(|e| panic!("write {packet:?}: {e}"));
        }
        self.ws.flush().unwrap_or_else(|e| panic!("flush: {e}"));
    }

    /// Reads the next frame (at most `timeout`); `None` on timeout or once
    /// the connection has ended.
    fn read(&mut self, timeout: Duration) -> Option<Wire> {
        if self.ended {
            return None;
        }
        let timeout = timeout.max(Duration::from_millis(1));
        self.ws.get_ref().set_read_timeout(Some(timeout)).ok();
        loop {
            let wire = match self.ws.read() {
                Ok(Message::Text(text)) => Wire::Text(text.as_str().to_owned()),
                Ok(Message::Binary(bytes)) => Wire::Binary(bytes.to_vec()),
                Ok(Message::Close(frame)) => {
                    self.ended = true;
                    // Answer the close, as a browser does.
                    let _ = self.ws.flush();
                    Wire::Close(frame.map(|f| u16::from(f.code)))
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if crate::http::timed_out(&e) => return None,
                Err(_) => {
                    self.ended = true;
                    Wire::Dropped
                }
            };
            if self.auto_pong && wire == Wire::Text("2".into()) {
                let _ = self.try_send("3");
            }
            self.seen.push((Instant::now(), wire.clone()));
            return Some(wire);
        }
    }

    /// The next frame not yet returned (pings included), within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Wire> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.cursor < self.seen.len() {
                self.cursor += 1;
                return Some(self.seen[self.cursor - 1].1.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.read(left)?;
        }
    }

    /// The next frame that is not a ping.
    pub fn next_packet(&mut self, timeout: Duration) -> Option<Wire> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left)? {
                Wire::Text(t) if t == "2" => continue,
                other => return Some(other),
            }
        }
    }

    /// The next text packet that is not a ping; panics (with everything
    /// seen) on anything else.
    pub fn expect_text(&mut self, timeout: Duration, what: &str) -> String {
        match self.next_packet(timeout) {
            Some(Wire::Text(text)) => text,
            other => panic!("expected {what}, got {other:?}; seen:\n{}", self.dump()),
        }
    }

    /// Skips frames until one satisfies `pred`; `None` if the connection
    /// ends or `timeout` passes first.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Wire) -> bool) -> Option<Wire> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wire = self.next(left)?;
            if pred(&wire) {
                return Some(wire);
            }
        }
    }

    /// The next Socket.IO packet starting with `prefix`, skipping others.
    pub fn wait_text(&mut self, timeout: Duration, prefix: &str) -> String {
        match self.wait_for(
            timeout,
            |w| matches!(w, Wire::Text(t) if t.starts_with(prefix)),
        ) {
            Some(Wire::Text(t)) => t,
            _ => panic!(
                "no packet starting with {prefix:?} within {timeout:?}; seen:\n{}",
                self.dump()
            ),
        }
    }

    /// Reads until the connection ends; how it ended (a close frame or a
    /// drop), or `None` if it is still open after `timeout`.
    pub fn wait_end(&mut self, timeout: Duration) -> Option<Wire> {
        self.wait_for(timeout, |w| matches!(w, Wire::Close(_) | Wire::Dropped))
    }

    /// When the frame at `index` of [`EioSocket::seen`] came.
    pub fn when(&self, wire: &Wire) -> Option<Instant> {
        self.seen.iter().find(|(_, w)| w == wire).map(|(at, _)| *at)
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Text packets seen so far, pings and the probe's answer left out.
    pub fn texts(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|(_, w)| match w {
                Wire::Text(t) if t != "2" && t != "3probe" => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn close(&mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }

    pub fn dump(&self) -> String {
        let start = self.seen.first().map(|(at, _)| *at);
        self.seen
            .iter()
            .map(|(at, w)| {
                let ms = start.map_or(0.0, |s| at.duration_since(s).as_secs_f64() * 1000.0);
                let mut line = format!("{ms:>8.1} {w:?}");
                line.truncate(300);
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The JSON of an open packet (`0{…}`).
pub fn open_payload(packet: &str) -> Value {
    let json = packet
        .strip_prefix('0')
        .unwrap_or_else(|| panic!("not an open packet: {packet:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("open packet {packet:?}: {e}"))
}

/// The JSON payload of a Socket.IO packet after its `prefix`
/// (`42["name",…]` → the array; `43N[…]` → the array).
pub fn payload(packet: &str, prefix: &str) -> Value {
    let json = packet
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{packet:?} does not start with {prefix:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{packet:?}: {e}"))
}

/// The event name of an EVENT packet (`42["name",…]`), if it is one.
pub fn event_name(packet: &str) -> Option<String> {
    let json = packet.strip_prefix("42")?;
    let value: Value = serde_json::from_str(json).ok()?;
    value.get(0)?.as_str().map(str::to_owned)
}

/// An HTTP response: status and body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

impl HttpReply {
    /// The packets of a polling payload.
    pub fn packets(&self) -> Vec<String> {
        if self.body.is_empty() {
            return Vec::new();
        }
        self.body.split(SEPARATOR).map(str::to_owned).collect()
    }
}

/// One HTTP/1.1 request (`Connection: close`), waiting at most `timeout`
/// for the whole answer. `Err` when the server closed without one.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<HttpReply, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body))
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: no answer ({} bytes)", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {path}: bad status line in {head:?}"))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = crate::http::dechunk(&body)
            .ok_or_else(|| format!("{method} {path}: bad chunked body"))?;
    }
    Ok(HttpReply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// An Engine.IO long-polling session.
#[derive(Debug, Clone)]
pub struct EioPolling {
    pub addr: SocketAddr,
    pub sid: String,
    /// The open packet's payload.
    pub open: Value,
    /// Query parameters sent with every request (`token=…`).
    pub extra: String,
}

impl EioPolling {
    /// `GET /socket.io/?EIO=4&transport=polling` and the open packet.
    pub fn handshake(addr: SocketAddr, extra: &str) -> EioPolling {
        let reply = request(
            addr,
            "GET",
            &path("polling", extra),
            b"",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("polling handshake: {e}"));
        assert_eq!(reply.status, 200, "polling handshake: {reply:?}");
        let open = open_payload(&reply.body);
        let sid = open["sid"].as_str().expect("sid is a string").to_owned();
        EioPolling {
            addr,
            sid,
            open,
            extra: extra.to_owned(),
        }
    }

    fn url(&self) -> String {
        let mut extra = format!("sid={}", self.sid);
        if !self.extra.is_empty() {
            extra = format!("{}&{extra}", self.extra);
        }
        path("polling", &extra)
    }

    /// A GET: what the server has for this session (waits while it has
    /// nothing, at most `timeout`).
    pub fn get(&self, timeout: Duration) -> Result<HttpReply, String> {
        request(self.addr, "GET", &self.url(), b"", timeout)
    }

    /// A POST of `packets` joined by the record separator.
    pub fn post(&self, packets: &[&str]) -> Result<HttpReply, String> {
        let body = packets.join(&SEPARATOR.to_string());
        request(
            self.addr,
            "POST",
            &self.url(),
            body.as_bytes(),
            Duration::from_secs(10),
        )
    }

    /// Polls until `done` holds for the packets gathered so far (pings are
    /// answered and left out); panics at the deadline or on a non-200.
    pub fn poll_until(&self, timeout: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut packets = Vec::new();
        while !done(&packets) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "polling: gave up; gathered {packets:?}");
            let reply = self
                .get(left)
                .unwrap_or_else(|e| panic!("poll: {e}; gathered {packets:?}"));
            assert_eq!(reply.status, 200, "poll: {reply:?}; gathered {packets:?}");
            for packet in reply.packets() {
                if packet == "2" {
                    let _ = self.post(&["3"]);
                } else {
                    packets.push(packet);
                }
            }
        }
        packets
    }

    /// Upgrades to a WebSocket: probe, `3probe`, the pending GET answered
    /// with a noop, then `5`. Returns the socket and what that GET got.
    pub fn upgrade(&self, timeout: Duration) -> (EioSocket, HttpReply) {
        let pending = {
            let me = self.clone();
            std::thread::spawn(move || me.get(timeout))
        };
        // The GET is in before the probe (as the client's pause waits for
        // it): give it a moment to reach the server.
        std::thread::sleep(Duration::from_millis(50));
        let mut extra = format!("sid={}", self.sid);
        if !self.extra.is_empty() {
            extra = format!("{}&{extra}", self.extra);
        }
        let mut socket = EioSocket::open(self.addr, &path("websocket", &extra))
            .unwrap_or_else(|e| panic!("upgrade websocket: {e}"));
        socket.send("2probe");
        let probe = socket.expect_text(timeout, "3probe");
        assert_eq!(probe, "3probe", "probe answer; seen:\n{}", socket.dump());
        let got = pending
            .join()
            .expect("the pending GET")
            .unwrap_or_else(|e| panic!("the pending GET: {e}"));
        if got.packets().iter().any(|p| p == "2") {
            // A ping that came on polling is answered there, as clients do.
            let _ = self.post(&["3"]);
        }
        socket.send("5");
        (socket, got)
    }
}
