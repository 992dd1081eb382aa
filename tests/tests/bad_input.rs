//! Bad input on a live connection (contract sections 3, 8 and 9), over the
//! production path `ingestor sim` → `nats-server -js` → `gateway`.
//!
//! Every bad event gets an `error` event with the contract's code (or, past
//! the transport's hard size limit, a closed connection), the connection
//! that sent it stays usable (a heartbeat afterwards gets `heartbeat_ack`),
//! another client connected at the same time keeps receiving data, and the
//! gateway never panics. Sustained abuse of the rate limit ends with
//! `disconnected {"reconnect": false}`.

use chrono::{DateTime, Utc};
use e2e_tests::checks::{assert_error, assert_event};
use e2e_tests::sio::WAIT_MS;
use e2e_tests::{mint, Gateway, Plan, SimStack, SioClient, Transcript, WsClient, WsMsg, SECRET};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

/// A client that minds its own business on the same gateway: a plain
/// WebSocket subscribed to quotes and logs.
struct Bystander {
    ws: WsClient,
}

impl Bystander {
    fn start(stack: &SimStack) -> Bystander {
        let url = format!(
            "{}/ws?token={}",
            stack.gateway.ws_url(),
            stack.token("bystander")
        );
        let mut ws = WsClient::connect(&url).expect("bystander connect");
        ws.wait_event("connected", WAIT);
        ws.send_event("subscribe", json!({"channels": ["quotes", "logs"]}));
        ws.wait_event("subscribed", WAIT);
        ws.wait_event("quotes", WAIT);
        Bystander { ws }
    }

    /// Waits for `n` quotes and `n` logs made after `since` (by their own
    /// `timestamp`), and checks that nothing but data ever came.
    fn assert_unaffected(&mut self, since: DateTime<Utc>, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let fresh = |event: &str| {
                self.ws
                    .events()
                    .iter()
                    .filter(|(_, e, d)| {
                        *e == event
                            && d["timestamp"]
                                .as_str()
                                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                                .is_some_and(|t| t > since)
                    })
                    .count()
            };
            if fresh("quotes") >= n && fresh("logs_update") >= n {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero() && !self.ws.is_closed(),
                "the bystander stopped receiving data:\n{}",
                self.ws.dump()
            );
            self.ws.next(left);
        }
        let odd: Vec<&str> = self
            .ws
            .events()
            .iter()
            .map(|(_, e, _)| *e)
            .filter(|e| !matches!(*e, "connected" | "subscribed" | "quotes" | "logs_update"))
            .collect();
        assert!(
            odd.is_empty(),
            "the bystander got {odd:?}:\n{}",
            self.ws.dump()
        );
    }
}

/// What one emitted event should be answered with.
#[derive(Debug, Clone)]
enum Answer {
    /// An `error` event with this code, and nothing else.
    Error(&'static str),
    /// One `error` per code, then this `subscribed` payload.
    Subscribed(&'static [&'static str], Value),
    HeartbeatAck,
}

/// One bad (or mixed) input: the event, its payload (`None`: no argument
/// at all) and the expected answer.
struct Input {
    event: &'static str,
    data: Option<Value>,
    answer: Answer,
}

fn input(event: &'static str, data: Option<Value>, answer: Answer) -> Input {
    Input {
        event,
        data,
        answer,
    }
}

/// The bad inputs both transports get, for a token that allows every
/// channel but `forbidden_token_channels` (see [`forbidding_token`]).
fn inputs() -> Vec<Input> {
    use Answer::*;
    let invalid = || Error("INVALID_PAYLOAD");
    vec![
        input("subscribe", Some(json!("quotes")), invalid()),
        input("subscribe", Some(json!(42)), invalid()),
        input("subscribe", Some(json!(["quotes"])), invalid()),
        input("subscribe", Some(Value::Null), invalid()),
        input("subscribe", None, invalid()),
        input("subscribe", Some(json!({})), invalid()),
        input("subscribe", Some(json!({"channels": "quotes"})), invalid()),
        input(
            "subscribe",
            Some(json!({"channels": {"quotes": true}})),
            invalid(),
        ),
        input("unsubscribe", Some(json!("quotes")), invalid()),
        input("unsubscribe", Some(json!(7)), invalid()),
        input("unsubscribe", Some(json!([])), invalid()),
        input("unsubscribe", Some(Value::Null), invalid()),
        input("unsubscribe", None, invalid()),
        input("unsubscribe", Some(json!({"channels": null})), invalid()),
        input("heartbeat", Some(json!("now")), invalid()),
        input("heartbeat", Some(json!([1])), invalid()),
        input("heartbeat", Some(json!({"timestamp": "soon"})), invalid()),
        input(
            "subscribe",
            Some(json!({"channels": ["nope"]})),
            Subscribed(&["UNKNOWN_CHANNEL"], json!({"channels": []})),
        ),
        input(
            "subscribe",
            Some(json!({"channels": ["positions"]})),
            Subscribed(&["FORBIDDEN_CHANNEL"], json!({"channels": []})),
        ),
        input(
            "subscribe",
            Some(json!({"channels": ["quotes", "bogus", 7, "positions", "logs", "QUOTES"]})),
            Subscribed(
                &[
                    "UNKNOWN_CHANNEL",
                    "UNKNOWN_CHANNEL",
                    "FORBIDDEN_CHANNEL",
                    "UNKNOWN_CHANNEL",
                ],
                json!({"channels": ["quotes", "logs"]}),
            ),
        ),
        input("bogus_event", Some(json!({})), invalid()),
        input(
            "Subscribe",
            Some(json!({"channels": ["quotes"]})),
            invalid(),
        ),
        input(
            "heartbeat",
            Some(json!({"timestamp": 4242})),
            Answer::HeartbeatAck,
        ),
    ]
}

/// A token for every channel but positions (for `FORBIDDEN_CHANNEL`).
fn forbidding_token() -> String {
    mint(
        SECRET,
        "mallory",
        None,
        Some(&["quotes", "orders", "logs", "signals", "account"]),
        3600,
    )
}

/// Takes the next reply, which must be `event` (with `code`, for errors) in
/// the spec's shape; a problem is noted otherwise.
fn next_reply<'a>(
    replies: &mut impl Iterator<Item = &'a (String, Value)>,
    problems: &mut Vec<String>,
    what: &str,
    event: &str,
    code: Option<&str>,
) -> Option<Value> {
    match replies.next() {
        Some((e, data)) if e == event => {
            if let Err(p) = e2e_tests::checks::check_event(e, data) {
                problems.push(format!("{what}: {p}"));
            }
            if code.is_some_and(|c| data["code"] != c) {
                problems.push(format!("{what}: expected code {code:?}, got {data}"));
            }
            Some(data.clone())
        }
        other => {
            problems.push(format!("{what}: expected `{event}`, got {other:?}"));
            None
        }
    }
}

/// Checks the answers a client got, in order: `replies` are the control
/// events it received (`error`, `subscribed`, `heartbeat_ack`) and `acks`
/// its acknowledgements (one per input), if it asked for them.
fn check_answers(inputs: &[Input], replies: &[(String, Value)], acks: Option<&[Value]>) {
    let mut replies = replies.iter();
    let mut problems = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let what = format!("#{i} {} {:?}", input.event, input.data);
        let p = &mut problems;
        let r = &mut replies;
        let last = match &input.answer {
            Answer::Error(code) => next_reply(r, p, &what, "error", Some(code)),
            Answer::Subscribed(codes, payload) => {
                for code in *codes {
                    next_reply(r, p, &what, "error", Some(code));
                }
                let got = next_reply(r, p, &what, "subscribed", None);
                // (`live_after` comes with a first join of logs/signals.)
                if got
                    .as_ref()
                    .is_some_and(|g| g["channels"] != payload["channels"])
                {
                    p.push(format!(
                        "{what}: expected subscribed {payload}, got {got:?}"
                    ));
                }
                got
            }
            Answer::HeartbeatAck => {
                let got = next_reply(r, p, &what, "heartbeat_ack", None);
                if got
                    .as_ref()
                    .is_some_and(|g| g["client_timestamp"] != json!(4242))
                {
                    p.push(format!("{what}: heartbeat_ack does not echo: {got:?}"));
                }
                got
            }
        };
        if let (Some(acks), Some(last)) = (acks, last) {
            match acks.get(i) {
                Some(ack) if *ack == last => {}
                other => problems.push(format!(
                    "{what}: the ack should equal the reply {last}, got {other:?}"
                )),
            }
        }
    }
    let rest: Vec<_> = replies.collect();
    if !rest.is_empty() {
        problems.push(format!("unexpected extra replies: {rest:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The control events of a Socket.IO transcript, and its acks in order.
fn sio_answers(t: &Transcript) -> (Vec<(String, Value)>, Vec<Value>) {
    let replies = t
        .lines
        .iter()
        .filter(|l| matches!(l.event.as_str(), "error" | "subscribed" | "heartbeat_ack"))
        .map(|l| (l.event.clone(), l.data.clone()))
        .collect();
    let acks = t
        .lines
        .iter()
        .filter(|l| l.event.starts_with("ack:"))
        .map(|l| l.data.clone())
        .collect();
    (replies, acks)
}

/// socket.io-client (websocket and polling) sends every bad input with an
/// acknowledgement, one at a time: each gets its `error` (codes per
/// contract section 9), the ack carries the same payload, valid channels in
/// a mixed request are still joined, the final heartbeat is answered and
/// the joined channels deliver. Meanwhile another client is unaffected.
#[test]
fn socketio_bad_payloads_get_errors_and_the_connection_stays() {
    let stack = SimStack::busy("demo");
    let mut bystander = Bystander::start(&stack);
    let inputs = inputs();
    let plan_for = |transport: &str| {
        let mut plan = Plan::new(&stack.gateway.http_url())
            .token(&forbidding_token())
            .transports(&[transport])
            .connected();
        for input in &inputs {
            plan = match &input.data {
                Some(data) => plan.emit_ack(input.event, data.clone()),
                None => plan.emit_bare(input.event, true),
            };
            plan = plan.wait_for(&format!("ack:{}", input.event), WAIT_MS);
        }
        // Acks overtake the events queued before them: wait for the last
        // reply event too (replies are queued in order).
        plan.wait_for("heartbeat_ack", WAIT_MS)
            .wait_for("quotes", WAIT_MS)
            .wait_for("logs_update", WAIT_MS)
    };
    let clients = [
        SioClient::node(&plan_for("websocket")),
        SioClient::node(&plan_for("polling")),
    ];
    for client in clients {
        let t = client.finish(Duration::from_secs(30));
        t.assert_completed();
        let (replies, acks) = sio_answers(&t);
        check_answers(&inputs, &replies, Some(&acks));
        assert!(t.find("disconnected").is_none(), "{}", t.dump());
        assert!(t
            .find("disconnect")
            .is_none_or(|l| l.data["reason"] == "io client disconnect"));
    }
    bystander.assert_unaffected(Utc::now(), 5);
    stack.gateway.assert_no_panic();
}

/// The plain WebSocket gets the same answers, plus `INVALID_PAYLOAD` for
/// frames that are not `{"event": "...", "data": ...}` JSON text.
#[test]
fn plain_websocket_bad_frames_get_errors_and_the_connection_stays() {
    let stack = SimStack::busy("demo");
    let mut bystander = Bystander::start(&stack);
    let url = format!("{}/ws?token={}", stack.gateway.ws_url(), forbidding_token());
    let mut ws = WsClient::connect(&url).expect("connect");
    ws.wait_event("connected", WAIT);

    // Frames that are not events at all.
    let not_events = [
        "hello",
        "",
        "\"subscribe\"",
        "42",
        "null",
        "[\"subscribe\", {\"channels\": [\"quotes\"]}]",
        "{\"data\": {\"channels\": [\"quotes\"]}}",
        "{\"event\": 7, \"data\": {}}",
        "{\"event\": \"subscribe\", \"data\": {\"channels\": [\"quotes\"]}",
    ];
    for text in not_events {
        ws.send_text(text);
        let error = ws.wait_event("error", WAIT);
        assert_error(&error, "INVALID_PAYLOAD");
    }
    ws.send_binary(b"\x00\x01binary");
    assert_error(&ws.wait_event("error", WAIT), "INVALID_PAYLOAD");

    let inputs = inputs();
    for input in &inputs {
        let mut frame = json!({ "event": input.event });
        if let Some(data) = &input.data {
            frame["data"] = data.clone();
        }
        ws.send_text(&frame.to_string());
        // Wait for the last reply of this input before the next one.
        let last = match input.answer {
            Answer::Error(_) => "error",
            Answer::Subscribed(..) => "subscribed",
            Answer::HeartbeatAck => "heartbeat_ack",
        };
        if ws.try_wait_event(last, WAIT).is_none() {
            panic!(
                "no `{last}` for {frame}; replies so far:\n{}",
                control_events(&ws)
            );
        }
    }
    ws.wait_event("quotes", WAIT);
    ws.wait_event("logs_update", WAIT);
    let replies: Vec<(String, Value)> = ws
        .events()
        .iter()
        .skip_while(|(_, e, _)| *e != "connected")
        .skip(1)
        .filter(|(_, e, _)| matches!(*e, "error" | "subscribed" | "heartbeat_ack"))
        .skip(not_events.len() + 1)
        .map(|(_, e, d)| (e.to_string(), (*d).clone()))
        .collect();
    check_answers(&inputs, &replies, None);
    assert!(!ws.is_closed());
    bystander.assert_unaffected(Utc::now(), 5);
    stack.gateway.assert_no_panic();
}

/// The events of a plain WebSocket client other than data, one a line.
fn control_events(ws: &WsClient) -> String {
    ws.events()
        .iter()
        .filter(|(_, e, _)| !e2e_tests::DATA_EVENTS.contains(e))
        .map(|(t, e, d)| format!("{t:>8.1} {e} {d}\n"))
        .collect()
}

/// A minimal Socket.IO client speaking Engine.IO v4 over a WebSocket by
/// hand: socket.io-client takes its plan on the command line, which cannot
/// carry a megabyte, and this one can also send more than the transport
/// accepts.
struct RawSocketIo {
    ws: WsClient,
}

impl RawSocketIo {
    fn connect(gw: &Gateway, token: &str) -> RawSocketIo {
        let url = format!("{}/socket.io/?EIO=4&transport=websocket", gw.ws_url());
        let mut ws = WsClient::connect(&url).expect("engine.io websocket");
        match ws.next(WAIT) {
            Some(WsMsg::Text(open)) if open.starts_with('0') => {}
            other => panic!("expected the engine.io open packet, got {other:?}"),
        }
        ws.send_text(&format!("40{}", json!({ "token": token })));
        let mut client = RawSocketIo { ws };
        client.wait_packet(WAIT, |p| p.starts_with("40"));
        client
    }

    /// Reads packets (answering pings) until `pred` holds for one.
    fn wait_packet(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.try_wait_packet(timeout, pred)
            .unwrap_or_else(|| panic!("socket.io: no such packet; seen:\n{}", self.ws.dump()))
    }

    fn try_wait_packet(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.ws.next(left)? {
                WsMsg::Text(p) if p == "2" => self.ws.send_text("3"),
                WsMsg::Text(p) if pred(&p) => return Some(p),
                WsMsg::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The data of the next `event` (`42["event", data]`).
    fn wait_event(&mut self, event: &str) -> Value {
        let prefix = format!("42[{}", json!(event));
        let packet = self.wait_packet(WAIT, |p| p.starts_with(&prefix));
        let args: Value = serde_json::from_str(&packet[2..]).expect("event JSON");
        args[1].clone()
    }

    /// Sends `42["event", data]`; an error if the connection is gone.
    fn emit(&mut self, event: &str, data: &Value) -> Result<(), String> {
        self.ws
            .try_send_text(&format!("42{}", json!([event, data])))
    }

    fn is_closed(&mut self) -> bool {
        self.ws.is_closed()
    }
}

/// `{"channels": ["quotes"], "padding": "xxx…"}` of about `bytes` bytes.
fn padded(bytes: usize) -> Value {
    json!({"channels": ["quotes"], "padding": "x".repeat(bytes)})
}

/// A 1 MB event (over `MAX_PAYLOAD_BYTES`, under the transport's hard
/// limit) is refused with `PAYLOAD_TOO_LARGE` and the connection stays, on
/// Socket.IO and on the plain WebSocket. A 3 MB one (over the hard limit)
/// closes that connection. Either way the gateway goes on serving everyone
/// else and new connections.
#[test]
fn oversized_payloads_are_refused_cleanly() {
    let stack = SimStack::busy("demo");
    let mut bystander = Bystander::start(&stack);
    let token = stack.token("big");
    let megabyte = padded(1024 * 1024);

    let mut sio = RawSocketIo::connect(&stack.gateway, &token);
    sio.wait_event("connected");
    sio.emit("subscribe", &megabyte).expect("send 1 MB");
    assert_error(&sio.wait_event("error"), "PAYLOAD_TOO_LARGE");
    sio.emit("heartbeat", &json!({"timestamp": 1}))
        .expect("send heartbeat");
    assert_event("heartbeat_ack", &sio.wait_event("heartbeat_ack"));

    let url = format!("{}/ws?token={token}", stack.gateway.ws_url());
    let mut ws = WsClient::connect(&url).expect("connect");
    ws.wait_event("connected", WAIT);
    ws.send_text(&json!({"event": "subscribe", "data": megabyte}).to_string());
    assert_error(&ws.wait_event("error", WAIT), "PAYLOAD_TOO_LARGE");
    ws.send_event("heartbeat", json!({"timestamp": 1}));
    assert_event("heartbeat_ack", &ws.wait_event("heartbeat_ack", WAIT));
    // Neither joined anything with the refused subscribe.
    assert!(!ws.events().iter().any(|(_, e, _)| *e == "subscribed"));

    // Past the hard limit the transport closes the connection.
    let huge = padded(3 * 1024 * 1024);
    let _ = sio.emit("subscribe", &huge);
    assert!(
        sio.try_wait_packet(WAIT, |_| false).is_none() && sio.is_closed(),
        "a 3 MB socket.io packet did not close the connection:\n{}",
        sio.ws.dump()
    );
    let _ = ws.try_send_text(&json!({"event": "subscribe", "data": huge}).to_string());
    assert!(
        ws.wait_close(WAIT).is_some(),
        "a 3 MB WebSocket message did not close the connection:\n{}",
        ws.dump()
    );

    // Everyone else is fine, and newcomers are served.
    bystander.assert_unaffected(Utc::now(), 5);
    let mut again = RawSocketIo::connect(&stack.gateway, &token);
    again.wait_event("connected");
    stack.gateway.assert_no_panic();
}

/// Over the rate limit (burst 40, then 20 per second by default) events
/// are answered `RATE_LIMITED` and not acted on; the connection stays, and
/// once the client slows down its heartbeat is answered again.
#[test]
fn rate_limited_events_get_rate_limited_and_the_connection_stays() {
    let stack = SimStack::busy("demo");
    let mut bystander = Bystander::start(&stack);
    let burst = 60;
    let plan = Plan::new(&stack.gateway.http_url())
        .token(&stack.token("hasty"))
        .transports(&["websocket"])
        .connected()
        .emit_repeat("heartbeat", json!({"timestamp": 1}), burst)
        .wait_for("error", WAIT_MS)
        // The bucket refills at 20 per second: slow down for a moment.
        .wait_ms(500)
        .emit_ack("heartbeat", json!({"timestamp": 2}))
        .wait_for("ack:heartbeat", WAIT_MS);
    let t = SioClient::node(&plan).finish(WAIT);
    t.assert_completed();
    let limited = t.all("error");
    assert!(!limited.is_empty(), "{}", t.dump());
    for e in &limited {
        assert_error(&e.data, "RATE_LIMITED");
    }
    // The rest of the burst was answered (allow a moment for the last ones).
    let acks = t.count("heartbeat_ack");
    assert!(
        acks + limited.len() >= burst,
        "{acks} acks + {} errors for {burst} heartbeats:\n{}",
        limited.len(),
        t.dump()
    );
    let ack = &t.first("ack:heartbeat").data;
    assert_event("heartbeat_ack", ack);
    assert_eq!(ack["client_timestamp"], 2);
    assert!(t.find("disconnected").is_none(), "{}", t.dump());
    bystander.assert_unaffected(Utc::now(), 5);
    stack.gateway.assert_no_panic();
}

/// Sustained abuse (hundreds of events back to back): `RATE_LIMITED`, then
/// `disconnected {"reconnect": false}` and the connection is closed, on
/// Socket.IO and on the plain WebSocket, while another client keeps its
/// data.
#[test]
fn sustained_abuse_is_disconnected_without_reconnect() {
    let stack = SimStack::busy("demo");
    let mut bystander = Bystander::start(&stack);
    let flood = 400;
    let plan = Plan::new(&stack.gateway.http_url())
        .token(&stack.token("flood"))
        .transports(&["websocket"])
        .connected()
        .emit_repeat("heartbeat", json!({}), flood)
        .wait_for("disconnected", WAIT_MS)
        .wait_for("disconnect", WAIT_MS);
    let sio = SioClient::node(&plan);

    let url = format!(
        "{}/ws?token={}",
        stack.gateway.ws_url(),
        stack.token("flood")
    );
    let mut ws = WsClient::connect(&url).expect("connect");
    ws.wait_event("connected", WAIT);
    let frame = json!({"event": "heartbeat", "data": {}}).to_string();
    for _ in 0..flood {
        if ws.try_send_text(&frame).is_err() {
            break;
        }
    }
    assert_error(&ws.wait_event("error", WAIT), "RATE_LIMITED");
    let bye = ws.wait_event("disconnected", WAIT);
    assert_eq!(bye["reconnect"], false, "{bye}");
    assert_event("disconnected", &bye);
    assert!(
        ws.wait_close(WAIT).is_some(),
        "the abusive WebSocket was not closed:\n{}",
        ws.dump()
    );

    let t = sio.finish(WAIT);
    t.assert_completed();
    assert_error(&t.first("error").data, "RATE_LIMITED");
    let bye = &t.first("disconnected").data;
    assert_event("disconnected", bye);
    assert_eq!(bye["reconnect"], false, "{bye}");
    assert_eq!(
        t.first("disconnect").data["reason"],
        "io server disconnect",
        "{}",
        t.dump()
    );
    bystander.assert_unaffected(Utc::now(), 5);
    stack.gateway.assert_no_panic();
}
