//! The order clients: `tests/clients/node/order.mjs` (socket.io-client)
//! and `tests/clients/python/order.py` (python-socketio) open many
//! connections, each sending `subscribe`, `unsubscribe` and six
//! `heartbeat`s back to back with acks, and report the order in which the
//! replies and acks came back ([`OrderReport`]).

use crate::procs::workspace_root;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Which client library, and which transports it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderClient {
    /// socket.io-client with `transports: ["websocket"]`.
    NodeWebSocket,
    /// socket.io-client with its default (polling, then the upgrade).
    NodeDefault,
    /// python-socketio's `socketio.Client` with its default transports.
    Python,
}

/// What one connection saw.
#[derive(Debug, Clone)]
pub struct OrderReport {
    pub client: u64,
    /// The transport in use at the end (`websocket` after an upgrade).
    pub transport: String,
    /// Replies and acks in arrival order (`connected`, `subscribed`,
    /// `ack:subscribe`, …, `heartbeat_ack:6`, `ack:heartbeat:6`).
    pub sequence: Vec<String>,
    /// Quotes that came after `unsubscribed` (plus the settle time).
    pub quotes_after_unsubscribed: u64,
    /// Why the client gave up, if it did.
    pub error: Option<String>,
}

/// The sequence every connection must see: each reply, then its ack, in
/// the order the events were sent.
pub fn expected_sequence() -> Vec<String> {
    let mut expected: Vec<String> = [
        "connected",
        "subscribed",
        "ack:subscribe",
        "unsubscribed",
        "ack:unsubscribe",
    ]
    .map(str::to_owned)
    .to_vec();
    for n in 1..=6 {
        expected.push(format!("heartbeat_ack:{n}"));
        expected.push(format!("ack:heartbeat:{n}"));
    }
    expected
}

/// Runs `clients` connections of `kind` against `url` with `token`; panics
/// if the script does not finish within `timeout`.
pub fn run_order_clients(
    kind: OrderClient,
    url: &str,
    token: &str,
    clients: usize,
    timeout: Duration,
) -> Vec<OrderReport> {
    let dir = workspace_root().join("tests/clients");
    let mut plan = json!({"url": url, "token": token, "clients": clients, "settle_ms": 1000});
    let mut cmd = match kind {
        OrderClient::NodeWebSocket | OrderClient::NodeDefault => {
            assert!(
                dir.join("node/node_modules/socket.io-client").is_dir(),
                "socket.io-client is not installed: run `npm ci` in tests/clients/node"
            );
            if kind == OrderClient::NodeWebSocket {
                plan["transports"] = json!(["websocket"]);
            }
            let mut cmd = Command::new("node");
            cmd.arg(dir.join("node/order.mjs"));
            cmd
        }
        OrderClient::Python => {
            let mut cmd = Command::new("python3");
            cmd.arg(dir.join("python/order.py"));
            cmd
        }
    };
    let mut child = cmd
        .arg(plan.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {kind:?} order client: {e}"));
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut reports = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{kind:?} order client did not finish within {timeout:?} ({} reports)",
                    reports.len()
                );
            }
        };
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{kind:?} order client printed {line:?}: {e}"));
        if value["done"] == true {
            break;
        }
        reports.push(OrderReport {
            client: value["client"].as_u64().unwrap_or(u64::MAX),
            transport: value["transport"].as_str().unwrap_or_default().to_owned(),
            sequence: value["sequence"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .map(|v| v.as_str().unwrap_or("?").to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            quotes_after_unsubscribed: value["quotes_after_unsubscribed"].as_u64().unwrap_or(0),
            error: value["error"].as_str().map(str::to_owned),
        });
    }
    let _ = child.wait();
    reports
}
