//! A dashboard on the plain WebSocket endpoint, pinned to one replica by
//! address (no balancer, so a test decides where it lands), that comes back
//! on another replica with `?session=` the way a dashboard resumes. It keeps
//! every message of every connection, in order.

use crate::ws::{WsClient, WsMsg};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub struct Dashboard {
    token: String,
    /// The session id of the last `connected`.
    pub session: String,
    /// Every `connected` payload, oldest first.
    pub hellos: Vec<Value>,
    /// The connection in use.
    pub ws: WsClient,
    /// Messages of the connections before this one.
    earlier: Vec<WsMsg>,
}

impl Dashboard {
    /// Connects to `addr` with `token` and waits for `connected`.
    pub fn connect(addr: SocketAddr, token: &str) -> Dashboard {
        let ws = WsClient::connect(&format!("ws://{addr}/ws?token={token}"))
            .unwrap_or_else(|e| panic!("dashboard cannot connect to {addr}: {e}"));
        let mut d = Dashboard {
            token: token.to_owned(),
            session: String::new(),
            hellos: Vec::new(),
            ws,
            earlier: Vec::new(),
        };
        d.greeted(Duration::from_secs(10));
        d
    }

    fn greeted(&mut self, timeout: Duration) -> Value {
        let hello = self.ws.wait_event("connected", timeout);
        self.session = hello["session"].as_str().unwrap_or_default().to_owned();
        self.hellos.push(hello.clone());
        hello
    }

    /// Subscribes and waits for `subscribed`.
    pub fn subscribe(&mut self, channels: &[&str]) -> Value {
        self.ws
            .send_event("subscribe", json!({ "channels": channels }));
        self.ws.wait_event("subscribed", Duration::from_secs(10))
    }

    /// Comes back on `addr` with the session id; returns its `connected`.
    /// What the old connection delivered is read first, as a dashboard
    /// reading all along would have (the gateway rightly counts it as
    /// delivered once the client's kernel has it).
    pub fn resume_on(&mut self, addr: SocketAddr, timeout: Duration) -> Value {
        self.resume_reporting(addr, timeout, "")
    }

    /// [`Dashboard::resume_on`] with more query parameters (e.g.
    /// `&last_logs=41`: the position the dashboard reports).
    pub fn resume_reporting(&mut self, addr: SocketAddr, timeout: Duration, extra: &str) -> Value {
        let drained = Instant::now() + Duration::from_secs(5);
        while !self.ws.is_closed() && Instant::now() < drained {
            self.ws.next(Duration::from_millis(100));
        }
        let url = format!(
            "ws://{addr}/ws?token={}&session={}{extra}",
            self.token, self.session
        );
        let deadline = Instant::now() + timeout;
        let ws = loop {
            match WsClient::connect(&url) {
                Ok(ws) => break ws,
                Err(e) if Instant::now() >= deadline => {
                    panic!("dashboard cannot reconnect to {addr}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let old = std::mem::replace(&mut self.ws, ws);
        self.earlier.extend(old.seen.into_iter().map(|(_, m)| m));
        self.greeted(timeout)
    }

    /// Reads until a log with a `seq` of at least `seq` arrives; panics
    /// with what was seen after `timeout`.
    pub fn read_log_at_least(&mut self, seq: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if self.logs().iter().any(|s| *s >= seq) {
            return;
        }
        // Only what arrives from here on needs looking at.
        while Instant::now() < deadline && !self.ws.is_closed() {
            if let Some(WsMsg::Event { event, data }) = self.ws.next(Duration::from_millis(200)) {
                if event == "logs_update" && data["seq"].as_u64().is_some_and(|s| s >= seq) {
                    return;
                }
            }
        }
        panic!(
            "no log with seq >= {seq} within {timeout:?}; last: {:?}\n{}",
            self.logs().last(),
            self.ws.dump()
        );
    }

    /// Every message so far, over every connection.
    pub fn messages(&self) -> Vec<&WsMsg> {
        self.earlier
            .iter()
            .chain(self.ws.seen.iter().map(|(_, m)| m))
            .collect()
    }

    /// The `seq` of every `logs_update`, in order received.
    pub fn logs(&self) -> Vec<u64> {
        self.events("logs_update")
            .iter()
            .filter_map(|d| d["seq"].as_u64())
            .collect()
    }

    /// The payloads of every `event`, in order.
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter_map(|m| match m.event() {
                Some((e, d)) if e == event => Some(d.clone()),
                _ => None,
            })
            .collect()
    }

    /// The `error` payloads with this `code`.
    pub fn errors(&self, code: &str) -> Vec<Value> {
        self.events("error")
            .into_iter()
            .filter(|e| e["code"] == code)
            .collect()
    }
}

/// How the received seqs of one channel compare with what was published in
/// `first..=last`: what is missing, how many came twice, and whether they
/// ever went backwards (duplicates aside).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub missing: Vec<u64>,
    pub duplicates: usize,
    pub out_of_order: usize,
}

pub fn compare(seqs: &[u64], expected: impl IntoIterator<Item = u64>) -> Received {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Received::default();
    let mut high = 0;
    for &s in seqs {
        if !seen.insert(s) {
            out.duplicates += 1;
            continue;
        }
        if s < high {
            out.out_of_order += 1;
        }
        high = high.max(s);
    }
    out.missing = expected.into_iter().filter(|s| !seen.contains(s)).collect();
    out
}
