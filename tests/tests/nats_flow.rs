//! The production data path end to end: `ingestor sim` → `nats-server -js`
//! → `gateway`, with every kind of client a dashboard uses: socket.io-client
//! over websocket only and over polling only, python-socketio (polling with
//! upgrade), and a plain WebSocket at `/` and at `/ws`.
//!
//! Each client goes through the whole basic flow of the contract: the
//! `connected` greeting, `subscribe` → `subscribed`, the six data events in
//! the spec's shapes, `heartbeat` → `heartbeat_ack`, acknowledgements equal
//! to the reply events, and `unsubscribe` → `unsubscribed` after which the
//! channel's events stop while the other channels keep flowing.

use e2e_tests::checks::{assert_event, check_event, is_rfc3339_utc};
use e2e_tests::sio::WAIT_MS;
use e2e_tests::{Line, Plan, SimStack, SioClient, WsClient, CHANNELS, DATA_EVENTS};
use serde_json::{json, Value};
use std::time::Duration;

/// What a client sends as its heartbeat's `timestamp`, echoed back.
const CLIENT_TS: i64 = 1_700_000_000_123;

/// How many events of the channels still subscribed a client must see
/// after `unsubscribed` while the unsubscribed one stays silent.
const AFTER_UNSUBSCRIBE: &[(&str, usize)] = &[
    ("logs_update", 10),
    ("positions_update", 4),
    ("account_update", 4),
];

const WAIT: Duration = Duration::from_secs(15);

/// Asserts the `connected` greeting: the contract's message, an RFC 3339
/// UTC `server_time` close to ours, a session id.
fn assert_greeting(hello: &Value) {
    assert_event("connected", hello);
    assert_eq!(hello["message"], "Connected to MT5 Trading Dashboard");
    let server_time = hello["server_time"].as_str().unwrap_or_default();
    assert!(is_rfc3339_utc(server_time), "server_time {server_time:?}");
    let skew = chrono::DateTime::parse_from_rfc3339(server_time)
        .map(|t| t.timestamp_millis() - e2e_tests::now_ms())
        .unwrap_or(i64::MAX);
    assert!(skew.abs() < 60_000, "server_time is {skew} ms off");
    assert!(
        !hello["session"].as_str().unwrap_or_default().is_empty(),
        "empty session in {hello}"
    );
}

fn assert_heartbeat_ack(ack: &Value) {
    assert_event("heartbeat_ack", ack);
    assert_eq!(ack["client_timestamp"], CLIENT_TS, "{ack}");
    let skew = ack["timestamp"].as_i64().unwrap_or(0) - e2e_tests::now_ms();
    assert!(skew.abs() < 60_000, "heartbeat_ack timestamp {skew} ms off");
}

/// The whole basic flow for a Socket.IO client (Node or Python): the plan
/// runs up to `unsubscribe`, then holds the connection open while the test
/// counts events of the other channels.
fn socketio_flow(spawn: fn(&Plan) -> SioClient, transports: Option<&[&str]>) {
    let stack = SimStack::busy("demo");
    let mut plan = Plan::new(&stack.gateway.http_url()).token(&stack.token("alice"));
    if let Some(transports) = transports {
        plan = plan.transports(transports);
    }
    plan = plan
        .connected()
        .subscribe(&CHANNELS)
        .wait_for("ack:subscribe", WAIT_MS);
    for event in DATA_EVENTS {
        plan = plan.wait_for(event, WAIT_MS);
    }
    let plan = plan
        .emit_ack("heartbeat", json!({ "timestamp": CLIENT_TS }))
        .wait_for("heartbeat_ack", WAIT_MS)
        .wait_for("ack:heartbeat", WAIT_MS)
        .emit_ack("unsubscribe", json!({"channels": ["quotes"]}))
        .wait_for("unsubscribed", WAIT_MS)
        .wait_for("ack:unsubscribe", WAIT_MS)
        .wait_stdin();

    let mut client = spawn(&plan);
    client.wait_event("unsubscribed", WAIT);
    // The cursor is now just past `unsubscribed`: these are all later ones.
    for (event, n) in AFTER_UNSUBSCRIBE {
        for _ in 0..*n {
            client.wait_event(event, WAIT);
        }
    }
    client.release();
    let t = client.finish(WAIT);
    t.assert_completed();

    if let Some(transports) = transports {
        assert_eq!(
            t.first("connect").data["transport"],
            transports[0],
            "{}",
            t.dump()
        );
    }
    assert_greeting(&t.first("connected").data);
    let subscribed = &t.first("subscribed").data;
    assert_eq!(subscribed["channels"], json!(CHANNELS));
    // Where the logs and signals subscriptions start: every entry after it
    // comes live, none at or before it.
    for (channel, event) in [("logs", "logs_update"), ("signals", "signals_update")] {
        let after = subscribed["live_after"][channel]
            .as_u64()
            .unwrap_or_else(|| panic!("no live_after.{channel}: {subscribed}"));
        let first = t.first(event).data["seq"].as_u64().expect("seq");
        assert!(
            first > after,
            "{event} {first} is at or before live_after {after}"
        );
    }
    assert_eq!(t.first("ack:subscribe").data, *subscribed, "ack = reply");
    let heartbeat_ack = &t.first("heartbeat_ack").data;
    assert_heartbeat_ack(heartbeat_ack);
    assert_eq!(t.first("ack:heartbeat").data, *heartbeat_ack, "ack = reply");
    let unsubscribed = &t.first("unsubscribed").data;
    assert_eq!(*unsubscribed, json!({"channels": ["quotes"]}));
    assert_eq!(
        t.first("ack:unsubscribe").data,
        *unsubscribed,
        "ack = reply"
    );
    assert_eq!(t.count("error"), 0, "{}", t.dump());
    assert_eq!(t.count("disconnected"), 0, "{}", t.dump());

    check_data_shapes(&t.lines);
    assert_silent_after(&t.lines, "unsubscribed", "quotes", &t.dump());
    stack.gateway.assert_no_panic();
}

/// Every data event a client saw has the spec's fields and types.
fn check_data_shapes(lines: &[Line]) {
    let problems: Vec<String> = lines
        .iter()
        .filter(|l| DATA_EVENTS.contains(&l.event.as_str()))
        .filter_map(|l| check_event(&l.event, &l.data).err())
        .collect();
    assert!(
        problems.is_empty(),
        "{} malformed data events, first ones:\n{}",
        problems.len(),
        problems[..problems.len().min(5)].join("\n")
    );
}

/// Nothing named `silent` after the first `boundary` line, while the
/// channels still subscribed went on (counted by the caller).
fn assert_silent_after(lines: &[Line], boundary: &str, silent: &str, dump: &str) {
    let at = lines
        .iter()
        .position(|l| l.event == boundary)
        .unwrap_or_else(|| panic!("no `{boundary}`:\n{dump}"));
    let before = lines[..at].iter().filter(|l| l.event == silent).count();
    assert!(before > 0, "no `{silent}` before `{boundary}`:\n{dump}");
    let after = lines[at..].iter().filter(|l| l.event == silent).count();
    assert_eq!(
        after, 0,
        "`{silent}` kept coming after `{boundary}`:\n{dump}"
    );
}

/// socket.io-client over the websocket transport only.
#[test]
fn node_websocket_full_flow() {
    socketio_flow(SioClient::node, Some(&["websocket"]));
}

/// socket.io-client over HTTP long-polling only.
#[test]
fn node_polling_full_flow() {
    socketio_flow(SioClient::node, Some(&["polling"]));
}

/// python-socketio with its default transports (polling, then the upgrade
/// to websocket).
#[test]
fn python_full_flow() {
    socketio_flow(SioClient::python, None);
}

/// The same flow with `{"event", "data"}` JSON frames, at `path`.
fn plain_websocket_flow(path: &str) {
    let stack = SimStack::busy("demo");
    let url = format!(
        "{}{path}?token={}",
        stack.gateway.ws_url(),
        stack.token("alice")
    );
    let mut ws = WsClient::connect(&url).expect("websocket connect");
    assert_greeting(&ws.wait_event("connected", WAIT));

    ws.send_event("subscribe", json!({ "channels": CHANNELS }));
    let subscribed = ws.wait_event("subscribed", WAIT);
    assert_eq!(subscribed["channels"], json!(CHANNELS));
    assert!(subscribed["live_after"]["logs"].is_u64(), "{subscribed}");
    for event in DATA_EVENTS {
        ws.wait_event(event, WAIT);
    }
    ws.send_event("heartbeat", json!({ "timestamp": CLIENT_TS }));
    assert_heartbeat_ack(&ws.wait_event("heartbeat_ack", WAIT));

    ws.send_event("unsubscribe", json!({"channels": ["quotes"]}));
    let unsubscribed = ws.wait_event("unsubscribed", WAIT);
    assert_eq!(unsubscribed, json!({"channels": ["quotes"]}));
    for (event, n) in AFTER_UNSUBSCRIBE {
        for _ in 0..*n {
            ws.wait_event(event, WAIT);
        }
    }

    let events = ws.events();
    let lines: Vec<Line> = events
        .iter()
        .map(|(t, event, data)| Line {
            t: *t,
            event: event.to_string(),
            data: (*data).clone(),
            raw: String::new(),
        })
        .collect();
    let dump = ws.dump();
    assert!(
        !lines.iter().any(|l| l.event == "error"),
        "unexpected error:\n{dump}"
    );
    check_data_shapes(&lines);
    assert_silent_after(&lines, "unsubscribed", "quotes", &dump);
    ws.close();
    stack.gateway.assert_no_panic();
}

#[test]
fn plain_websocket_at_root_full_flow() {
    plain_websocket_flow("/");
}

#[test]
fn plain_websocket_at_ws_full_flow() {
    plain_websocket_flow("/ws");
}
