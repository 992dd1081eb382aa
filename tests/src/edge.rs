//! Hostile and low-level clients for the edge tests (`tests/security.rs`):
//! raw HTTP requests with any `Host`/`Origin`, a raw Engine.IO/Socket.IO
//! client on both transports (so a refusal is seen packet by packet), and
//! the attacks of issue 15 from one source address: abandoned polling
//! handshakes, oversized WebSocket frames before `CONNECT`, idle sockets.
//!
//! Attackers connect from `127.0.0.2` ([`ATTACKER`]) and honest clients from
//! `127.0.0.1`, so per-address limits cut the attacker and not the
//! bystander, as they would on the internet. [`MemoryJail`] puts the
//! gateway under the memory limit of `deploy/k8s/gateway.yaml` (a cgroup v1
//! memory group when this machine lets us make one) and reports the peak.

use crate::http::Response;
use crate::ws::WsClient;
use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The address every attack comes from (any 127/8 address is loopback).
pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A TCP connection to `dst` whose source address is `src` (bind before
/// connect, which `std` cannot do).
pub fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V4(dst) = dst else {
        return Err(io::Error::other("IPv4 only"));
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket(2)/bind(2)/connect(2) on a descriptor we own;
    // it is wrapped in a TcpStream (which closes it) right after creation.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(src, 0);
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sockaddr(*dst.ip(), dst.port());
        if libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Raises this process's open-file limit to its hard limit (the attacks
/// hold thousands of sockets).
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        lim.rlim_cur
    }
}

/// Sets the open-file limit of a running process (`prlimit --pid`), to
/// give the gateway the common default of 1024 that issue 15 ran out of.
pub fn set_fd_limit(pid: u32, limit: u64) {
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("running prlimit (util-linux)");
    assert!(status.success(), "prlimit --pid {pid} failed");
}

/// Writes a raw HTTP/1.1 request (`head` lines without the final blank
/// line, then `body`) and reads one response (`Connection: close`).
pub fn raw_request(
    stream: &mut TcpStream,
    head: &[String],
    body: &[u8],
) -> Result<Response, String> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut req = head.join("\r\n");
    req.push_str(&format!(
        "\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // A reset after a complete answer still counts as the answer.
        Err(_) if !raw.is_empty() => {}
        Err(e) => return Err(format!("reading the response: {e}")),
    }
    crate::http::parse(&raw)
        .ok_or_else(|| format!("malformed: {:?}", String::from_utf8_lossy(&raw)))
}

/// `METHOD path` with these headers (the `Host` among them: none is added).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let mut head = vec![format!("{method} {path} HTTP/1.1")];
    head.extend(headers.iter().map(|(k, v)| format!("{k}: {v}")));
    raw_request(&mut stream, &head, body)
}

/// The headers of a WebSocket upgrade request.
pub fn upgrade_headers<'a>(host: &'a str, origin: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    if let Some(o) = origin {
        h.push(("Origin", o));
    }
    h
}

/// How a Socket.IO connection attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SioOutcome {
    /// `CONNECT` answered: the `connected` event's data (if it came).
    Connected(Value),
    /// `CONNECT_ERROR` with this `message`.
    Refused(String),
    /// Refused before Socket.IO: HTTP status (or 0 when the connection was
    /// dropped) and body.
    Http(u16, String),
}

/// Splits an Engine.IO v4 polling payload into packets.
pub fn eio_packets(body: &str) -> Vec<String> {
    body.split('\u{1e}')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Interprets Socket.IO packets received after `CONNECT`; `None` if they
/// do not settle it yet.
fn settle(packets: &[String], connected: &mut bool) -> Option<SioOutcome> {
    for p in packets {
        if let Some(rest) = p.strip_prefix("44") {
            let msg = serde_json::from_str::<Value>(rest)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| rest.to_owned());
            return Some(SioOutcome::Refused(msg));
        }
        if p.starts_with("40") {
            *connected = true;
        }
        if let Some(rest) = p.strip_prefix("42") {
            if let Ok(Value::Array(a)) = serde_json::from_str::<Value>(rest) {
                if a.first().and_then(Value::as_str) == Some("connected") {
                    return Some(SioOutcome::Connected(
                        a.get(1).cloned().unwrap_or(Value::Null),
                    ));
                }
            }
        }
    }
    None
}

/// A Socket.IO v5 connection over Engine.IO v4 long-polling, by hand:
/// handshake, `CONNECT` with `auth`, and what came back.
pub fn sio_polling(addr: SocketAddr, auth: &Value, extra: &[(&str, &str)]) -> SioOutcome {
    let host = addr.to_string();
    let mut headers = vec![("Host", host.as_str())];
    headers.extend_from_slice(extra);
    let open = match request(
        addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &headers,
        b"",
    ) {
        Ok(r) if r.status == 200 => r,
        Ok(r) => return SioOutcome::Http(r.status, r.body),
        Err(e) => return SioOutcome::Http(0, e),
    };
    let Some(sid) = eio_packets(&open.body)
        .first()
        .and_then(|p| p.strip_prefix('0'))
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
        .and_then(|v| v["sid"].as_str().map(str::to_owned))
    else {
        return SioOutcome::Http(open.status, open.body);
    };
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let connect = format!("40{auth}");
    match request(addr, "POST", &path, &headers, connect.as_bytes()) {
        Ok(r) if r.status == 200 => {}
        Ok(r) => return SioOutcome::Http(r.status, r.body),
        Err(e) => return SioOutcome::Http(0, e),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut connected = false;
    while Instant::now() < deadline {
        let r = match request(addr, "GET", &path, &headers, b"") {
            Ok(r) => r,
            Err(e) => return SioOutcome::Http(0, e),
        };
        if r.status != 200 {
            return SioOutcome::Http(r.status, r.body);
        }
        if let Some(out) = settle(&eio_packets(&r.body), &mut connected) {
            return out;
        }
    }
    SioOutcome::Http(0, format!("no answer to CONNECT (connected: {connected})"))
}

/// A Socket.IO v5 connection over the Engine.IO WebSocket transport.
pub fn sio_websocket(addr: SocketAddr, auth: &Value, extra: &[(&str, &str)]) -> SioOutcome {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::Message;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let mut req = url.as_str().into_client_request().expect("a valid URL");
    for (k, v) in extra {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    let stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return SioOutcome::Http(0, e.to_string()),
    };
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut ws = match tungstenite::client(req, stream) {
        Ok((ws, _)) => ws,
        Err(tungstenite::handshake::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            let body = r
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            return SioOutcome::Http(r.status().as_u16(), body);
        }
        Err(e) => return SioOutcome::Http(0, e.to_string()),
    };
    let mut connected = false;
    let mut sent = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let text = match ws.read() {
            Ok(Message::Text(t)) => t.as_str().to_owned(),
            Ok(_) => continue,
            Err(e) => return SioOutcome::Http(0, format!("closed: {e}")),
        };
        if text.starts_with('0') && !sent {
            sent = true;
            if let Err(e) = ws.send(Message::text(format!("40{auth}"))) {
                return SioOutcome::Http(0, e.to_string());
            }
            continue;
        }
        if text == "2" {
            let _ = ws.send(Message::text("3"));
            continue;
        }
        if let Some(out) = settle(&[text], &mut connected) {
            let _ = ws.close(None);
            return out;
        }
    }
    SioOutcome::Http(0, format!("no answer to CONNECT (connected: {connected})"))
}

/// The auth object of a Socket.IO `CONNECT`.
pub fn auth(token: &str) -> Value {
    json!({ "token": token })
}

/// A plain WebSocket attempt on `/ws?token=…`: `Ok(connected data)` or
/// `Err(the error code or close reason)`.
pub fn ws_attempt(addr: SocketAddr, token: &str) -> Result<Value, String> {
    let url = format!("ws://{addr}/ws?token={token}");
    let mut ws = WsClient::connect(&url)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match ws.next(left) {
            Some(crate::WsMsg::Event { event, data }) if event == "connected" => return Ok(data),
            Some(crate::WsMsg::Event { event, data }) if event == "error" => {
                return Err(data["code"].as_str().unwrap_or("?").to_owned())
            }
            Some(crate::WsMsg::Close(frame)) => {
                return Err(frame.map(|f| f.1).unwrap_or_else(|| "closed".into()))
            }
            Some(_) => {}
            None => break,
        }
    }
    Err("no answer".into())
}

/// A plain WebSocket client subscribed to quotes on another thread,
/// counting what it receives: the honest dashboard next to an attack.
pub struct Bystander {
    quotes: Arc<Mutex<Vec<Instant>>>,
    closed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bystander {
    /// Connects to `/ws` with `token`, subscribes to quotes and waits for
    /// the first one.
    pub fn start(addr: SocketAddr, token: &str) -> Bystander {
        let mut ws = WsClient::connect(&format!("ws://{addr}/ws?token={token}"))
            .expect("the bystander connects");
        ws.wait_event("connected", Duration::from_secs(10));
        ws.send_event("subscribe", json!({"channels": ["quotes"]}));
        ws.wait_event("quotes", Duration::from_secs(15));
        let quotes = Arc::new(Mutex::new(vec![Instant::now()]));
        let closed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, c, s) = (quotes.clone(), closed.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match ws.next(Duration::from_millis(200)) {
                    Some(crate::WsMsg::Event { event, .. }) if event == "quotes" => {
                        q.lock().unwrap().push(Instant::now());
                    }
                    Some(crate::WsMsg::Event { event, .. }) if event == "heartbeat_ack" => {}
                    Some(crate::WsMsg::Close(_)) => {
                        c.store(true, Ordering::Relaxed);
                        return;
                    }
                    _ => {}
                }
                if ws.is_closed() {
                    c.store(true, Ordering::Relaxed);
                    return;
                }
            }
            ws.close();
        });
        Bystander {
            quotes,
            closed,
            stop,
            thread: Some(thread),
        }
    }

    /// Quotes received at or after `since`.
    pub fn quotes_since(&self, since: Instant) -> usize {
        self.quotes
            .lock()
            .unwrap()
            .iter()
            .filter(|t| **t >= since)
            .count()
    }

    /// The longest time between two quotes (or since the last one).
    pub fn longest_gap(&self) -> Duration {
        let q = self.quotes.lock().unwrap();
        let mut gap = q.last().map(|t| t.elapsed()).unwrap_or_default();
        for w in q.windows(2) {
            gap = gap.max(w[1] - w[0]);
        }
        gap
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a flood of polling handshakes came to.
#[derive(Debug, Default, Clone)]
pub struct FloodStats {
    /// Handshakes answered with an Engine.IO open packet.
    pub opened: usize,
    /// Other answers, by HTTP status.
    pub refused: std::collections::BTreeMap<u16, usize>,
    /// Connections the gateway closed or refused (we reconnected).
    pub dropped: usize,
    /// Requests sent.
    pub sent: usize,
    /// The session id of one handshake that was opened (and abandoned).
    pub sample_sid: Option<String>,
}

/// Sends `total` Engine.IO polling handshakes (`GET
/// /socket.io/?EIO=4&transport=polling`) from [`ATTACKER`] over `conns`
/// keep-alive connections and never comes back for them.
pub fn polling_flood(addr: SocketAddr, total: usize, conns: usize) -> FloodStats {
    let next = Arc::new(AtomicUsize::new(0));
    let stats = Arc::new(Mutex::new(FloodStats::default()));
    std::thread::scope(|scope| {
        for _ in 0..conns {
            let (next, stats) = (next.clone(), stats.clone());
            scope.spawn(move || {
                let mut local = FloodStats::default();
                let mut conn: Option<io::BufReader<TcpStream>> = None;
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    local.sent += 1;
                    if conn.is_none() {
                        match connect_from(ATTACKER, addr) {
                            Ok(s) => {
                                s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                                conn = Some(io::BufReader::new(s));
                            }
                            Err(_) => {
                                local.dropped += 1;
                                std::thread::sleep(Duration::from_millis(5));
                                continue;
                            }
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    match keepalive_get(c, addr, "/socket.io/?EIO=4&transport=polling") {
                        Ok((200, body, close)) if body.starts_with('0') => {
                            local.opened += 1;
                            if local.sample_sid.is_none() {
                                local.sample_sid = serde_json::from_str::<Value>(&body[1..])
                                    .ok()
                                    .and_then(|v| v["sid"].as_str().map(str::to_owned));
                            }
                            if close {
                                conn = None;
                            }
                        }
                        Ok((status, _, close)) => {
                            *local.refused.entry(status).or_default() += 1;
                            if close {
                                conn = None;
                            }
                        }
                        Err(_) => {
                            local.dropped += 1;
                            conn = None;
                        }
                    }
                }
                let mut s = stats.lock().unwrap();
                s.opened += local.opened;
                s.dropped += local.dropped;
                s.sent += local.sent;
                if s.sample_sid.is_none() {
                    s.sample_sid = local.sample_sid;
                }
                for (k, v) in local.refused {
                    *s.refused.entry(k).or_default() += v;
                }
            });
        }
    });
    let s = stats.lock().unwrap().clone();
    s
}

/// One GET on a keep-alive connection: (status, body, server closes).
fn keepalive_get(
    c: &mut io::BufReader<TcpStream>,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, String, bool), String> {
    use std::io::BufRead;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    c.get_mut()
        .write_all(req.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    c.read_line(&mut line).map_err(|e| e.to_string())?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {line:?}"))?;
    let (mut len, mut close, mut chunked) = (0usize, false, false);
    loop {
        line.clear();
        c.read_line(&mut line).map_err(|e| e.to_string())?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => len = v.parse().unwrap_or(0),
                "connection" if v == "close" => close = true,
                "transfer-encoding" if v == "chunked" => chunked = true,
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            c.read_line(&mut line).map_err(|e| e.to_string())?;
            let n = usize::from_str_radix(line.trim(), 16).map_err(|e| e.to_string())?;
            let mut chunk = vec![0; n + 2];
            c.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(len, 0);
        c.read_exact(&mut body).map_err(|e| e.to_string())?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned(), close))
}

/// How one oversized frame ended.
#[derive(Debug, Clone)]
pub struct FrameOutcome {
    /// Whether the WebSocket upgrade was accepted at all.
    pub upgraded: bool,
    /// Payload bytes written before the gateway stopped reading.
    pub written: usize,
    /// The close code the gateway sent, if any.
    pub close_code: Option<u16>,
}

/// Opens `n` WebSockets on `path` from [`ATTACKER`] (no token, so nothing
/// past the Engine.IO open packet) and on each streams one masked binary
/// frame announcing `frame_len` bytes, as fast as the gateway reads it.
pub fn oversized_frames(
    addr: SocketAddr,
    path: &str,
    n: usize,
    frame_len: usize,
) -> Vec<FrameOutcome> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|_| scope.spawn(move || oversized_frame(addr, path, frame_len)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a frame thread panicked"))
            .collect()
    })
}

fn oversized_frame(addr: SocketAddr, path: &str, frame_len: usize) -> FrameOutcome {
    let mut out = FrameOutcome {
        upgraded: false,
        written: 0,
        close_code: None,
    };
    let Ok(mut s) = connect_from(ATTACKER, addr) else {
        return out;
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.set_write_timeout(Some(Duration::from_secs(10))).ok();
    let host = addr.to_string();
    let mut head = format!("GET {path} HTTP/1.1\r\n");
    for (k, v) in upgrade_headers(&host, None) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if s.write_all(head.as_bytes()).is_err() {
        return out;
    }
    // The response head, byte by byte up to the blank line.
    let mut resp = Vec::new();
    let mut byte = [0u8; 1];
    while !resp.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => resp.push(byte[0]),
            _ => return out,
        }
    }
    out.upgraded = resp.starts_with(b"HTTP/1.1 101");
    if !out.upgraded {
        return out;
    }
    // FIN + binary, masked, 64-bit length.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(frame_len as u64).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    if s.write_all(&frame).is_err() {
        return out;
    }
    let chunk = vec![0x5au8; 64 * 1024];
    while out.written < frame_len {
        let n = chunk.len().min(frame_len - out.written);
        match s.write(&chunk[..n]) {
            Ok(0) | Err(_) => break,
            Ok(k) => out.written += k,
        }
    }
    // Whatever the gateway answered: look for a close frame (0x88).
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => seen.extend_from_slice(&buf[..k]),
        }
        if let Some(code) = close_code(&seen) {
            out.close_code = Some(code);
            break;
        }
    }
    out
}

/// The status code of the first close frame in server-to-client bytes.
fn close_code(bytes: &[u8]) -> Option<u16> {
    let mut i = 0;
    while i + 2 <= bytes.len() {
        let op = bytes[i] & 0x0f;
        let mut len = (bytes[i + 1] & 0x7f) as usize;
        let mut at = i + 2;
        if len == 126 {
            len = u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as usize;
            at += 2;
        } else if len == 127 {
            len = u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?) as usize;
            at += 8;
        }
        if op == 0x8 {
            let p = bytes.get(at..at + len.max(2))?;
            return Some(u16::from_be_bytes([p[0], p[1]]));
        }
        i = at + len;
    }
    None
}

/// Sockets from [`ATTACKER`] that connect and say nothing.
pub struct IdleSockets {
    /// The connections that were made.
    pub streams: Vec<TcpStream>,
    /// Connections refused at `connect` (the listener's backlog or a limit).
    pub refused: usize,
}

impl IdleSockets {
    pub fn open(addr: SocketAddr, n: usize) -> IdleSockets {
        let mut streams = Vec::with_capacity(n);
        let mut refused = 0;
        for _ in 0..n {
            match connect_from(ATTACKER, addr) {
                Ok(s) => {
                    s.set_nonblocking(true).ok();
                    streams.push(s);
                }
                Err(_) => refused += 1,
            }
        }
        IdleSockets { streams, refused }
    }

    /// How many the gateway has not closed (a read that would block).
    pub fn still_open(&self) -> usize {
        let mut buf = [0u8; 512];
        self.streams
            .iter()
            .filter(|s| match (&**s).read(&mut buf) {
                Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                // Data (an error page) is not a close yet; EOF is.
                Ok(n) => n > 0,
            })
            .count()
    }
}

/// The memory limit of `deploy/k8s/gateway.yaml`, in bytes (read from the
/// manifest, so the test follows it).
pub fn k8s_memory_limit() -> u64 {
    let path = crate::workspace_root().join("deploy/k8s/gateway.yaml");
    let text = std::fs::read_to_string(&path).expect("reading deploy/k8s/gateway.yaml");
    let limit = text
        .lines()
        .find(|l| l.contains("limits:") && l.contains("memory:"))
        .and_then(|l| l.split("memory:").nth(1))
        .map(|v| v.trim().trim_end_matches('}').trim().to_owned())
        .expect("a `limits: { memory: … }` line in the gateway manifest");
    let (num, unit) = limit.split_at(
        limit
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(limit.len()),
    );
    let n: u64 = num.parse().expect("a number of bytes");
    n * match unit {
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "" => 1,
        other => panic!("unit {other:?} in the manifest's memory limit"),
    }
}

/// A process under a memory limit: a cgroup v1 memory group when one can
/// be made here, otherwise only watched (peak RSS from `/proc`).
pub struct MemoryJail {
    pid: u32,
    limit: u64,
    group: Option<PathBuf>,
}

impl MemoryJail {
    /// Moves `pid` into a new memory cgroup limited to `limit` bytes (swap
    /// included when the kernel accounts it).
    pub fn confine(pid: u32, limit: u64) -> MemoryJail {
        let root = PathBuf::from("/sys/fs/cgroup/memory");
        let group = root.join(format!("e2e-gateway-{pid}"));
        let made = std::fs::create_dir(&group).is_ok()
            && std::fs::write(group.join("memory.limit_in_bytes"), limit.to_string()).is_ok()
            && {
                let _ =
                    std::fs::write(group.join("memory.memsw.limit_in_bytes"), limit.to_string());
                std::fs::write(group.join("cgroup.procs"), pid.to_string()).is_ok()
            };
        if !made {
            let _ = std::fs::remove_dir(&group);
        }
        MemoryJail {
            pid,
            limit,
            group: made.then_some(group),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether the limit is enforced (a cgroup) or only watched.
    pub fn enforced(&self) -> bool {
        self.group.is_some()
    }

    /// The peak memory: the cgroup's `max_usage_in_bytes`, or the
    /// process's `VmHWM` (peak RSS).
    pub fn peak(&self) -> u64 {
        if let Some(g) = &self.group {
            if let Some(v) = read_u64(&g.join("memory.max_usage_in_bytes")) {
                return v;
            }
        }
        self.peak_rss()
    }

    /// The process's peak resident set (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        status_kib(self.pid, "VmHWM:").unwrap_or(0) * 1024
    }

    /// The process's resident set now (`VmRSS`), in bytes.
    pub fn rss(&self) -> u64 {
        status_kib(self.pid, "VmRSS:").unwrap_or(0) * 1024
    }

    /// Times the cgroup refused memory (0 when not enforced).
    pub fn failcnt(&self) -> u64 {
        self.group
            .as_ref()
            .and_then(|g| read_u64(&g.join("memory.failcnt")))
            .unwrap_or(0)
    }
}

impl Drop for MemoryJail {
    fn drop(&mut self) {
        let Some(g) = &self.group else { return };
        // Hand any remaining process back to the parent group, then remove.
        if let Ok(procs) = std::fs::read_to_string(g.join("cgroup.procs")) {
            let parent = g.parent().map(|p| p.join("cgroup.procs"));
            for pid in procs.lines() {
                if let Some(p) = &parent {
                    let _ = std::fs::write(p, pid);
                }
            }
        }
        let _ = std::fs::remove_dir(g);
    }
}

fn read_u64(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Bytes as MiB with one decimal, for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
