//! A plain WebSocket client (what wscat does): JSON text frames
//! `{"event": …, "data": …}` both ways. Blocking, with read timeouts.

use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

/// Something that came from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum WsMsg {
    /// A JSON text frame `{"event", "data"}`.
    Event {
        event: String,
        data: Value,
    },
    /// A text frame that is not such an object.
    Text(String),
    Binary(usize),
    /// A close frame (code, reason), or `None` for a bare close / dropped
    /// connection.
    Close(Option<(u16, String)>),
}

impl WsMsg {
    pub fn event(&self) -> Option<(&str, &Value)> {
        match self {
            WsMsg::Event { event, data } => Some((event, data)),
            _ => None,
        }
    }
}

pub struct WsClient {
    ws: WebSocket<TcpStream>,
    /// Everything received so far, in order.
    pub seen: Vec<(Instant, WsMsg)>,
    cursor: usize,
    closed: bool,
    started: Instant,
}

impl WsClient {
    /// Connects to `url` (`ws://127.0.0.1:PORT/ws?token=…`).
    pub fn connect(url: &str) -> Result<WsClient, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("not a ws:// url: {url}"))?;
        let host = rest.split('/').next().unwrap_or(rest);
        let stream = TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
        stream.set_nodelay(true).ok();
        let (ws, _response) =
            tungstenite::client(url, stream).map_err(|e| format!("handshake with {url}: {e}"))?;
        Ok(WsClient {
            ws,
            seen: Vec::new(),
            cursor: 0,
            closed: false,
            started: Instant::now(),
        })
    }

    /// A dashboard on `{base}/ws` (`ws://host:port`) with `token`,
    /// resuming `session` if given: connected, then subscribed to logs,
    /// signals and quotes, each step within `patience`.
    pub fn dashboard(
        base: &str,
        token: &str,
        session: Option<&str>,
        patience: Duration,
    ) -> WsClient {
        let mut url = format!("{base}/ws?token={token}");
        if let Some(id) = session {
            url.push_str(&format!("&session={id}"));
        }
        let mut ws = WsClient::connect(&url)
            .unwrap_or_else(|e| panic!("dashboard cannot connect to {base}: {e}"));
        ws.wait_event("connected", patience);
        ws.send_event(
            "subscribe",
            json!({"channels": ["logs", "signals", "quotes"]}),
        );
        ws.wait_event("subscribed", patience);
        ws
    }

    pub fn send_event(&mut self, event: &str, data: Value) {
        self.send_text(&json!({"event": event, "data": data}).to_string());
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .unwrap_or_else(|e| panic!("websocket send failed: {e}"));
    }

    /// Sends, reporting failure instead of panicking (for frames the
    /// server may refuse by closing).
    pub fn try_send_text(&mut self, text: &str) -> Result<(), String> {
        self.ws
            .send(Message::text(text.to_owned()))
            .map_err(|e| e.to_string())
    }

    /// A WebSocket ping frame; false if the connection is gone.
    pub fn try_send_ping(&mut self) -> bool {
        self.ws.send(Message::Ping(Vec::new().into())).is_ok()
    }

    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .unwrap_or_else(|e| panic!("websocket send failed: {e}"));
    }

    /// Reads one message, waiting at most `timeout`; `None` on timeout or
    /// after the connection has closed.
    pub fn next(&mut self, timeout: Duration) -> Option<WsMsg> {
        if self.closed {
            return None;
        }
        let timeout = timeout.max(Duration::from_millis(1));
        self.ws.get_ref().set_read_timeout(Some(timeout)).ok();
        loop {
            let msg = match self.ws.read() {
                Ok(Message::Text(text)) => match serde_json::from_str::<Value>(text.as_str()) {
                    Ok(Value::Object(mut map))
                        if map.get("event").is_some_and(Value::is_string) =>
                    {
                        let event = map["event"].as_str().unwrap_or_default().to_owned();
                        let data = map.remove("data").unwrap_or(Value::Null);
                        WsMsg::Event { event, data }
                    }
                    _ => WsMsg::Text(text.as_str().to_owned()),
                },
                Ok(Message::Binary(b)) => WsMsg::Binary(b.len()),
                Ok(Message::Close(frame)) => {
                    self.closed = true;
                    WsMsg::Close(frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())))
                }
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => continue,
                Err(tungstenite::Error::Io(e)) if crate::http::timed_out(&e) => return None,
                Err(_) => {
                    self.closed = true;
                    WsMsg::Close(None)
                }
            };
            self.seen.push((Instant::now(), msg.clone()));
            return Some(msg);
        }
    }

    /// The data of the next `event` after the last one this returned;
    /// panics with everything seen if none comes within `timeout`.
    pub fn wait_event(&mut self, event: &str, timeout: Duration) -> Value {
        self.try_wait_event(event, timeout).unwrap_or_else(|| {
            panic!(
                "websocket: no `{event}` within {timeout:?}; seen:\n{}",
                self.dump()
            )
        })
    }

    pub fn try_wait_event(&mut self, event: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            while self.cursor < self.seen.len() {
                let i = self.cursor;
                self.cursor += 1;
                if let WsMsg::Event { event: e, data } = &self.seen[i].1 {
                    if e == event {
                        return Some(data.clone());
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline || self.closed {
                return None;
            }
            self.next(deadline - now);
        }
    }

    /// Reads until the connection closes (at most `timeout`); returns the
    /// close frame, or `None` if it stayed open.
    pub fn wait_close(&mut self, timeout: Duration) -> Option<Option<(u16, String)>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((_, WsMsg::Close(frame))) =
                self.seen.iter().find(|(_, m)| matches!(m, WsMsg::Close(_)))
            {
                return Some(frame.clone());
            }
            let now = Instant::now();
            if now >= deadline || self.closed {
                return None;
            }
            self.next(deadline - now);
        }
    }

    /// Reads everything that comes within `duration`.
    pub fn drain_for(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if self.closed {
                break;
            }
            self.next(left);
        }
    }

    /// `(ms since connect, event, data)` of every event received.
    pub fn events(&self) -> Vec<(f64, &str, &Value)> {
        self.seen
            .iter()
            .filter_map(|(at, m)| {
                m.event()
                    .map(|(e, d)| (at.duration_since(self.started).as_secs_f64() * 1000.0, e, d))
            })
            .collect()
    }

    /// The data of the first `event` received so far, if any.
    pub fn first_event(&self, event: &str) -> Option<Value> {
        self.events()
            .into_iter()
            .find(|(_, e, _)| *e == event)
            .map(|(_, _, d)| d.clone())
    }

    /// Whether a `disconnected` or an `error` event arrived.
    pub fn was_sent_away(&self) -> bool {
        self.events()
            .iter()
            .any(|(_, e, _)| *e == "disconnected" || *e == "error")
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn close(&mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }

    /// The first 20 and the last 60 messages (a failure is often at the
    /// start: what came before the goodbye).
    pub fn dump(&self) -> String {
        let n = self.seen.len();
        let head = n.min(20);
        let tail_from = n.saturating_sub(60).max(head);
        let mut lines: Vec<String> = self
            .seen
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < head || *i >= tail_from)
            .map(|(_, (at, m))| {
                let mut s = format!(
                    "{:>8.1} {:?}",
                    at.duration_since(self.started).as_secs_f64() * 1000.0,
                    m
                );
                if s.len() > 300 {
                    let mut end = 300;
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    s.truncate(end);
                }
                s
            })
            .collect();
        if tail_from > head {
            lines.insert(head, format!("... {} more ...", tail_from - head));
        }
        lines.join("\n")
    }
}
