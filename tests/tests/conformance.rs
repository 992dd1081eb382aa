//! Engine.IO v4 and Socket.IO v5 conformance, written from the two protocol
//! documents (the `Readme.md` of `socketio/engine.io-protocol` and of
//! `socketio/socket.io-protocol`), against the gateway binary.
//!
//! Every Socket.IO behaviour runs four ways ([`Via`]): a WebSocket-only
//! client and a client that starts on long-polling and upgrades to a
//! WebSocket, each on the fast path (`SOCKETIO_FAST_PATH=true`, the
//! default: our own Engine.IO serves both transports) and on socketioxide
//! (`SOCKETIO_FAST_PATH=false`). Polling-only behaviour (the handshake over
//! HTTP, the 400s, batched POSTs, the upgrade itself) runs on both
//! settings.
//!
//! The timers are short here (`PING_INTERVAL_MS`, `PING_TIMEOUT_MS`,
//! `CONNECT_TIMEOUT_MS`), so heartbeats and timeouts take about a second.
//! A row the gateway cannot pass is `#[ignore]`d with the exact reason:
//! what is left is in socketioxide itself (the early first ping, acks ids
//! that overflow, events batched with their CONNECT, closes without a
//! close frame), only with `SOCKETIO_FAST_PATH=false`; see the README's
//! protocol notes.

use e2e_tests::eio::{event_name, payload, EioPolling, EioSocket, Wire};
use e2e_tests::Gateway;
use serde_json::json;
use std::time::{Duration, Instant};

const PING_INTERVAL_MS: u64 = 1000;
const PING_TIMEOUT_MS: u64 = 300;
const CONNECT_TIMEOUT_MS: u64 = 1000;
/// The largest event payload the gateway handles (it answers
/// `PAYLOAD_TOO_LARGE` above it, and closes past the transport's limit).
const MAX_PAYLOAD_BYTES: usize = 4096;
/// How long anything that should happen may take.
const WAIT: Duration = Duration::from_secs(10);
/// How long a close that the protocol asks for at once may take (less
/// than the connect timeout's default, so that a server that only gives
/// up at its timeout does not pass).
const SOON: Duration = Duration::from_secs(4);

/// How a client reaches the gateway's Socket.IO endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    /// `transport=websocket` without `sid`, `SOCKETIO_FAST_PATH=true`.
    Fast,
    /// `transport=websocket` without `sid`, `SOCKETIO_FAST_PATH=false`.
    Sio,
    /// `transport=polling`, then the upgrade to a WebSocket,
    /// `SOCKETIO_FAST_PATH=true` (socket.io-client's default).
    Upgraded,
    /// The same, `SOCKETIO_FAST_PATH=false`.
    UpgradedSio,
}

impl Via {
    /// Whether this way reaches our own Engine.IO (the fast path).
    fn fast(self) -> bool {
        matches!(self, Via::Fast | Via::Upgraded)
    }
}

/// A standalone gateway with the short timers; `fast` sets
/// `SOCKETIO_FAST_PATH`.
fn gateway(fast: bool) -> Gateway {
    let ping_interval = PING_INTERVAL_MS.to_string();
    let ping_timeout = PING_TIMEOUT_MS.to_string();
    let connect_timeout = CONNECT_TIMEOUT_MS.to_string();
    let max_payload = MAX_PAYLOAD_BYTES.to_string();
    Gateway::standalone(&[
        ("SOCKETIO_FAST_PATH", if fast { "true" } else { "false" }),
        ("PING_INTERVAL_MS", &ping_interval),
        ("PING_TIMEOUT_MS", &ping_timeout),
        ("CONNECT_TIMEOUT_MS", &connect_timeout),
        ("MAX_PAYLOAD_BYTES", &max_payload),
        ("MAX_CONNECTIONS_PER_USER", "500"),
    ])
}

fn gateway_for(via: Via) -> Gateway {
    gateway(via.fast())
}

/// An Engine.IO session over a WebSocket, opened `via` (for `Upgraded`:
/// the polling handshake, then the upgrade); no namespace joined yet.
fn open(gw: &Gateway, via: Via) -> EioSocket {
    match via {
        Via::Fast | Via::Sio => EioSocket::handshake(gw.addr(), "", WAIT).0,
        Via::Upgraded | Via::UpgradedSio => EioPolling::handshake(gw.addr(), "").upgrade(WAIT).0,
    }
}

/// `40{"token": …}`: the CONNECT to `/`, its answer and the `connected`
/// greeting. Returns the Socket.IO sid.
fn join(socket: &mut EioSocket, token: &str) -> String {
    socket.send(&format!("40{}", json!({ "token": token })));
    let answer = socket.expect_text(WAIT, "the CONNECT answer");
    let sid = payload(&answer, "40")["sid"]
        .as_str()
        .unwrap_or_else(|| panic!("CONNECT answer without sid: {answer:?}"))
        .to_owned();
    let greeting = socket.wait_text(WAIT, "42");
    assert_eq!(
        event_name(&greeting).as_deref(),
        Some("connected"),
        "{greeting}"
    );
    sid
}

/// A socket joined to `/`.
fn connected(gw: &Gateway, via: Via) -> EioSocket {
    let mut socket = open(gw, via);
    join(&mut socket, gw.standalone_token());
    socket
}

/// Asserts the connection is still usable: a heartbeat gets its ack.
fn assert_usable(socket: &mut EioSocket, ack_id: u32) {
    socket.send(&format!(
        "42{ack_id}[\"heartbeat\",{{\"timestamp\":{ack_id}}}]"
    ));
    let ack = socket.wait_text(WAIT, &format!("43{ack_id}["));
    assert_eq!(
        payload(&ack, &format!("43{ack_id}"))[0]["client_timestamp"],
        ack_id
    );
}

/// Asserts the server ends the connection within [`SOON`]: with a close
/// frame on the fast path; socketioxide (engineioxide 0.17) ends its
/// WebSocket without one, which the crate does not let us change.
fn assert_closed(socket: &mut EioSocket, via: Via, why: &str) {
    match socket.wait_end(SOON) {
        Some(Wire::Close(_)) => {}
        Some(Wire::Dropped) if !via.fast() => {}
        Some(Wire::Dropped) => panic!(
            "{why}: the connection was dropped without a close frame; seen:\n{}",
            socket.dump()
        ),
        _ => panic!(
            "{why}: the connection stayed open; seen:\n{}",
            socket.dump()
        ),
    }
}

/// The control packets (not data events, not pings) in `packets`.
fn control(packets: &[String]) -> Vec<String> {
    packets
        .iter()
        .filter(|p| !event_name(p).is_some_and(|e| e2e_tests::DATA_EVENTS.contains(&e.as_str())))
        .cloned()
        .collect()
}

/// One `#[test]` per [`Via`] for a function `fn name(via: Via)`; each case
/// may carry attributes (an `#[ignore = "why"]` while it fails).
macro_rules! on_every_path {
    ($name:ident: $($(#[$attr:meta])* $via:ident),+ $(,)?) => {
        mod $name {
            $(
                $(#[$attr])*
                #[test]
                #[allow(non_snake_case)]
                fn $via() {
                    super::$name(super::Via::$via)
                }
            )+
        }
    };
}

/// The same for polling-only behaviour: `fn name(fast: bool)`, run with the
/// fast path on and off.
macro_rules! on_both_settings {
    ($name:ident: $($(#[$attr:meta])* $setting:ident),+ $(,)?) => {
        mod $name {
            $(
                $(#[$attr])*
                #[test]
                fn $setting() {
                    super::$name(stringify!($setting) == "fast")
                }
            )+
        }
    };
}

// ---------------------------------------------------------------- handshake

/// The open packet carries exactly the five fields, with the configured
/// timers; a WebSocket-only session offers no upgrade, a polling one
/// offers `websocket`.
fn handshake_fields(via: Via) {
    let gw = gateway_for(via);
    let open = match via {
        Via::Fast | Via::Sio => EioSocket::handshake(gw.addr(), "", WAIT).1,
        Via::Upgraded | Via::UpgradedSio => EioPolling::handshake(gw.addr(), "").open,
    };
    let mut keys: Vec<&str> = open
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ],
        "{open}"
    );
    assert!(
        open["sid"].as_str().is_some_and(|s| !s.is_empty()),
        "{open}"
    );
    let upgrades = if matches!(via, Via::Upgraded | Via::UpgradedSio) {
        json!(["websocket"])
    } else {
        json!([])
    };
    assert_eq!(open["upgrades"], upgrades, "{open}");
    assert_eq!(open["pingInterval"], PING_INTERVAL_MS, "{open}");
    assert_eq!(open["pingTimeout"], PING_TIMEOUT_MS, "{open}");
    assert!(
        open["maxPayload"]
            .as_u64()
            .is_some_and(|m| m as usize >= MAX_PAYLOAD_BYTES),
        "{open}"
    );
}
on_every_path!(handshake_fields:
    Fast,
    Sio,
    Upgraded,
    UpgradedSio);

/// A request that is not Engine.IO v4 gets HTTP 400: a missing or wrong
/// `EIO` or `transport`, a handshake that is not a GET, an unknown `sid`.
fn bad_requests_get_400(fast: bool) {
    let gw = gateway(fast);
    let addr = gw.addr();
    let status = |method: &str, path: &str| {
        e2e_tests::eio::request(addr, method, path, b"", WAIT)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
            .status
    };
    for path in [
        "/socket.io/?transport=polling",
        "/socket.io/?EIO=abc&transport=polling",
        "/socket.io/?EIO=4",
        "/socket.io/?EIO=4&transport=abc",
        "/socket.io/?EIO=4&transport=polling&sid=NoSuchSession",
    ] {
        assert_eq!(status("GET", path), 400, "GET {path}");
    }
    for method in ["POST", "PUT"] {
        assert_eq!(
            status(method, "/socket.io/?EIO=4&transport=polling"),
            400,
            "{method} handshake"
        );
    }
    assert_eq!(
        status(
            "POST",
            "/socket.io/?EIO=4&transport=polling&sid=NoSuchSession"
        ),
        400,
        "POST to an unknown sid"
    );
    // A WebSocket without a valid EIO gets no session.
    for path in [
        "/socket.io/?transport=websocket",
        "/socket.io/?EIO=abc&transport=websocket",
    ] {
        if let Ok(mut socket) = EioSocket::open(addr, path) {
            let first = socket.next(WAIT);
            assert!(
                !matches!(&first, Some(Wire::Text(t)) if t.starts_with('0')),
                "{path} opened a session: {first:?}"
            );
        }
    }
}
on_both_settings!(bad_requests_get_400:
    fast,
    sio);

// ---------------------------------------------------------------- heartbeat

/// The server pings every `pingInterval` (the first one too, not at once);
/// a client that answers stays connected.
fn ping_pong(via: Via) {
    let gw = gateway_for(via);
    let mut socket = open(&gw, via);
    let opened = Instant::now();
    join(&mut socket, gw.standalone_token());
    let mut last = opened;
    for n in 0..3 {
        let ping = socket
            .wait_for(WAIT, |w| *w == Wire::Text("2".into()))
            .unwrap_or_else(|| panic!("ping {n} never came; seen:\n{}", socket.dump()));
        let at = socket
            .seen
            .iter()
            .rev()
            .find(|(_, w)| *w == ping)
            .map(|(t, _)| *t);
        let at = at.unwrap_or_else(Instant::now);
        if n > 0 {
            // (The first ping's timing is `first_ping_waits_an_interval`.)
            let gap = at.duration_since(last);
            assert!(
                gap >= Duration::from_millis(PING_INTERVAL_MS * 7 / 10),
                "ping {n} came {gap:?} after the previous one (pingInterval {PING_INTERVAL_MS} ms)"
            );
        }
        last = at;
    }
    assert_usable(&mut socket, 1);
}
on_every_path!(ping_pong:
    Fast,
    Sio,
    Upgraded,
    UpgradedSio);

/// The first ping comes `pingInterval` after the open packet, not at once.
fn first_ping_waits_an_interval(via: Via) {
    let gw = gateway_for(via);
    let opened = Instant::now();
    let mut socket = open(&gw, via);
    join(&mut socket, gw.standalone_token());
    socket
        .wait_for(WAIT, |w| *w == Wire::Text("2".into()))
        .unwrap_or_else(|| panic!("no ping; seen:\n{}", socket.dump()));
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(PING_INTERVAL_MS * 7 / 10),
        "the first ping came {after:?} after the open (pingInterval {PING_INTERVAL_MS} ms)"
    );
}
// (No `UpgradedSio` row: there socketioxide's early ping answers the
// pending GET before the upgrade, where this test cannot see it; see
// `polling_heartbeat::sio`.)
on_every_path!(first_ping_waits_an_interval:
    Fast,
    #[ignore = "socketioxide sends its first ping at once (engineioxide 0.17 heartbeat)"] Sio,
    Upgraded);

/// A client that stops answering pings is dropped `pingTimeout` after the
/// unanswered ping (not a whole interval later), with a close frame.
fn ping_timeout(via: Via) {
    let gw = gateway_for(via);
    let mut socket = connected(&gw, via);
    socket.auto_pong = false;
    let ping = socket
        .wait_for(WAIT, |w| *w == Wire::Text("2".into()))
        .unwrap_or_else(|| panic!("no ping; seen:\n{}", socket.dump()));
    let pinged = socket
        .seen
        .iter()
        .rev()
        .find(|(_, w)| *w == ping)
        .map(|(t, _)| *t);
    let pinged = pinged.unwrap_or_else(Instant::now);
    assert_closed(&mut socket, via, "no pong");
    let after = socket.seen.last().map(|(t, _)| t.duration_since(pinged));
    let after = after.unwrap_or_default();
    assert!(
        after < Duration::from_millis(PING_TIMEOUT_MS + (PING_INTERVAL_MS - PING_TIMEOUT_MS) / 2),
        "closed {after:?} after the unanswered ping (pingTimeout {PING_TIMEOUT_MS} ms)"
    );
}
on_every_path!(ping_timeout:
    Fast,
    Sio,
    Upgraded,
    UpgradedSio);

/// Over long-polling: a GET gets the ping (after `pingInterval`), the pong
/// is a POST; a session that stops answering is gone after
/// `pingInterval + pingTimeout` (its sid gets 400).
fn polling_heartbeat(fast: bool) {
    let gw = gateway(fast);
    let session = EioPolling::handshake(gw.addr(), "");
    let opened = Instant::now();
    // Joined, so that the CONNECT timeout does not end the session first.
    let connect = format!("40{}", json!({ "token": gw.standalone_token() }));
    let post = session.post(&[&connect]).expect("CONNECT");
    assert_eq!((post.status, post.body.as_str()), (200, "ok"));
    // The next ping, by GETs (the CONNECT's answers may come first).
    let next_ping = |n: usize| loop {
        let reply = session.get(WAIT).expect("poll");
        assert_eq!(reply.status, 200, "poll for ping {n}: {reply:?}");
        let packets = reply.packets();
        if packets.iter().any(|p| p == "2") {
            assert_eq!(packets.last().map(String::as_str), Some("2"), "{reply:?}");
            return Instant::now();
        }
    };
    let mut previous = opened;
    for n in 0..2 {
        let pinged = next_ping(n);
        let gap = pinged.duration_since(previous);
        assert!(
            gap >= Duration::from_millis(PING_INTERVAL_MS * 7 / 10),
            "ping {n} came {gap:?} after the previous one"
        );
        previous = pinged;
        let pong = session.post(&["3"]).expect("pong");
        assert_eq!((pong.status, pong.body.as_str()), (200, "ok"));
    }
    // No more pongs: after the next ping and its timeout the sid is gone.
    next_ping(2);
    std::thread::sleep(Duration::from_millis(PING_TIMEOUT_MS * 2));
    let gone = session.get(WAIT).expect("poll after the timeout");
    assert_eq!(gone.status, 400, "{gone:?}");
}
on_both_settings!(polling_heartbeat:
    fast,
    #[ignore = "socketioxide sends its first ping at once (engineioxide 0.17 heartbeat), which answers the first GET"] sio);

/// A session that never joins a namespace is closed after
/// `CONNECT_TIMEOUT_MS`, with a close frame.
fn no_connect_closes(via: Via) {
    let gw = gateway_for(via);
    let mut socket = open(&gw, via);
    let opened = Instant::now();
    assert_closed(&mut socket, via, "no CONNECT");
    assert!(
        opened.elapsed() >= Duration::from_millis(CONNECT_TIMEOUT_MS / 2),
        "closed after {:?}",
        opened.elapsed()
    );
}
on_every_path!(no_connect_closes:
    Fast,
    Sio,
    Upgraded,
    UpgradedSio);

// ------------------------------------------------------------------ upgrade

/// The upgrade: `2probe` answered `3probe`, the pending GET ends with a
/// noop, `5` completes it; afterwards the old polling sid gets 400 and a
/// second WebSocket with the same sid is turned away, while the upgraded
/// socket works.
fn upgrade_from_polling(fast: bool) {
    let gw = gateway(fast);
    let session = EioPolling::handshake(gw.addr(), "");
    let token = gw.standalone_token();
    let post = session
        .post(&[&format!("40{}", json!({ "token": token }))])
        .expect("CONNECT");
    assert_eq!((post.status, post.body.as_str()), (200, "ok"));
    let got = session.poll_until(WAIT, |p| {
        p.iter()
            .any(|p| event_name(p).as_deref() == Some("connected"))
    });
    assert!(got[0].starts_with("40{"), "{got:?}");
    let (mut socket, pending) = session.upgrade(WAIT);
    assert_eq!(pending.status, 200);
    assert!(
        pending.packets().last().is_some_and(|p| p == "6"),
        "the pending GET ends with a noop: {pending:?}"
    );
    assert_usable(&mut socket, 1);
    let old = session.get(WAIT).expect("GET after the upgrade");
    assert_eq!(old.status, 400, "{old:?}");
    let path = e2e_tests::eio::path("websocket", &format!("sid={}", session.sid));
    if let Ok(mut second) = EioSocket::open(gw.addr(), &path) {
        second.send("2probe");
        let answer = second.wait_for(WAIT, |w| {
            matches!(w, Wire::Close(_) | Wire::Dropped) || *w == Wire::Text("3probe".into())
        });
        assert!(
            matches!(answer, Some(Wire::Close(_) | Wire::Dropped)),
            "a second websocket for the sid: {answer:?}"
        );
    }
    assert_usable(&mut socket, 2);
}
on_both_settings!(upgrade_from_polling:
    fast,
    #[ignore = "socketioxide sends its first ping at once (engineioxide 0.17 heartbeat), which answers the first GET (a race)"] sio);

// -------------------------------------------------------------- namespaces

/// A refused CONNECT gets CONNECT_ERROR with the code as its message.
fn bad_token_gets_connect_error(via: Via) {
    let gw = gateway_for(via);
    let mut socket = open(&gw, via);
    socket.send(r#"40{"token":"not-a-token"}"#);
    let answer = socket.expect_text(WAIT, "CONNECT_ERROR");
    assert_eq!(payload(&answer, "44"), json!({"message": "UNAUTHORIZED"}));
}
on_every_path!(bad_token_gets_connect_error:
    Fast,
    Sio,
    Upgraded,
    UpgradedSio);

/// A namespace other than `/` gets `44/nsp,{"message":"Invalid namespace"}`
/// and the Engine.IO connection stays: a CONNECT to `/` then works.
fn invalid_namespace_keeps_the_connection(via: Via) {
    let gw = gateway_for(via);
    let token = gw.standalone_token();
    let mut socket = open(&gw, via);
    for nsp in ["/admin", "/socket.io"] {
        socket.send(&format!("40{nsp},{}", json!({ "token": token })));
        let answer = socket.expect_text(WAIT, "CONNECT_ERROR");
        assert_eq!(
            answer,
            format!(r#"44{nsp},{{"message":"Invalid namespace"}}"#),
            "seen:\n{}",
            socket.dump()
        );
    }
    join(&mut socket, token);
    assert_usable(&mut socket, 1);
}
on_every_path!(invalid_namespace_keeps_the_connection:
    Fast,
    Sio,
    Upgraded,
    UpgradedSio);

/// `41` leaves the namespace but not the connection: pings go on, and a
/// new `40` joins again.
fn leave_namespace(via: Via) {
    let gw = gateway_for(via);
    let mut socket = connected(&gw, via);
    socket.send("41");
    socket
        .wait_for(WAIT, |w| {
            matches!(w, Wire::Close(_) | Wire::Dropped) || *w == Wire::Text("2".into())
        })
        .filter(|w| *w == Wire::Text("2".into()))
        .unwrap_or_else(|| panic!("the connection ended after 41; seen:\n{}", socket.dump()));
    join(&mut socket, gw.standalone_token());
    assert_usable(&mut socket, 1);
}
on_every_path!(leave_namespace:
    Fast,
    Sio,
    Upgraded,
    UpgradedSio);

/// A CONNECT whose JSON is broken is refused (CONNECT_ERROR or a close),
/// never accepted on the strength of the query token.
fn invalid_connect_json_is_refused(via: Via) {
    let gw = gateway_for(via);
    let path_token = format!("token={}", gw.standalone_token());
    let mut socket = match via {
        Via::Fast | Via::Sio => EioSocket::handshake(gw.addr(), &path_token, WAIT).0,
        Via::Upgraded | Via::UpgradedSio => {
            EioPolling::handshake(gw.addr(), &path_token)
                .upgrade(WAIT)
                .0
        }
    };
    socket.send(r#"40{"token":"#);
    let answer = socket.next_packet(WAIT);
    match &answer {
        Some(Wire::Text(t)) if t.starts_with("44") => {}
        Some(Wire::Close(_) | Wire::Dropped) => {}
        other => panic!(
            "a broken CONNECT was answered {other:?}; seen:\n{}",
            socket.dump()
        ),
    }
}
on_every_path!(invalid_connect_json_is_refused:
    Fast,
    Sio,
    Upgraded,
    UpgradedSio);

/// Before a CONNECT, anything else closes the connection.
fn packets_before_connect_close(via: Via) {
    let gw = gateway_for(via);
    for packet in [r#"42["heartbeat",{}]"#, "4abc"] {
        let mut socket = open(&gw, via);
        socket.send(packet);
        assert_closed(&mut socket, via, packet);
    }
}
on_every_path!(packets_before_connect_close:
    Fast,
    Sio,
    Upgraded,
    UpgradedSio);

// ------------------------------------------------------------------ packets

/// Malformed packets close the connection, with a close frame: an unknown
/// Engine.IO type, an unknown Socket.IO type, a payload that is not a
/// non-empty array, a bad ack id, an ack id that overflows.
fn invalid_packets_close(via: Via) {
    let gw = gateway_for(via);
    for packet in [
        "abc",
        "4abc",
        "42{}",
        "42[]",
        r#"42abc["heartbeat",{}]"#,
        r#"42999999999999999999999999["heartbeat",{}]"#,
    ] {
        let mut socket = connected(&gw, via);
        socket.send(packet);
        assert_closed(&mut socket, via, packet);
    }
}
on_every_path!(invalid_packets_close:
    Fast,
    #[ignore = "socketioxide drops an ack id that overflows (its parser), the event runs without ack"] Sio,
    Upgraded,
    #[ignore = "socketioxide drops an ack id that overflows (its parser), the event runs without ack"] UpgradedSio);

/// An event with a binary attachment gets one answer (its reply or one
/// `error` naming the event) and its ack; the connection stays usable.
fn binary_attachment(via: Via) {
    let gw = gateway_for(via);
    let mut socket = connected(&gw, via);
    socket.send(r#"451-7["heartbeat",{"_placeholder":true,"num":0}]"#);
    socket.send_binary(&[1, 2, 3]);
    let ack = socket.wait_text(WAIT, "437[");
    assert!(ack.len() > 4, "{ack}");
    // A later event's answer shows that everything for this one came.
    assert_usable(&mut socket, 8);
    let answers: Vec<String> = control(&socket.texts())
        .into_iter()
        .filter(|p| p.starts_with("42") && event_name(p).as_deref() != Some("connected"))
        .filter(|p| !p.contains(r#""client_timestamp":8"#))
        .collect();
    assert_eq!(answers.len(), 1, "one answer for one event: {answers:?}");
    let answer = &answers[0];
    match event_name(answer).as_deref() {
        Some("heartbeat_ack") => {}
        Some("error") => assert!(answer.contains("heartbeat"), "{answer}"),
        _ => panic!("unexpected answer {answer}"),
    }
}
on_every_path!(binary_attachment:
    Fast,
    Sio,
    Upgraded,
    UpgradedSio);

/// An event over `MAX_PAYLOAD_BYTES` gets `PAYLOAD_TOO_LARGE` (and its
/// ack) and the connection stays; a message past the advertised
/// `maxPayload` closes the connection.
fn oversize_payloads(via: Via) {
    let gw = gateway_for(via);
    let mut socket = open(&gw, via);
    join(&mut socket, gw.standalone_token());
    let pad = "x".repeat(MAX_PAYLOAD_BYTES + 10);
    socket.send(&format!(
        r#"421["heartbeat",{{"timestamp":1,"pad":"{pad}"}}]"#
    ));
    let ack = socket.wait_text(WAIT, "431[");
    assert_eq!(
        payload(&ack, "431")[0]["code"],
        "PAYLOAD_TOO_LARGE",
        "{ack}"
    );
    assert_usable(&mut socket, 2);
    let huge = "x".repeat(3 * 1024 * 1024);
    let _ = socket.try_send(&format!(r#"423["heartbeat",{{"pad":"{huge}"}}]"#));
    match socket.wait_end(WAIT) {
        Some(Wire::Close(_) | Wire::Dropped) => {}
        _ => panic!("a message past maxPayload kept the connection"),
    }
}
on_every_path!(oversize_payloads:
    Fast,
    Sio,
    Upgraded,
    UpgradedSio);

/// `1` (close) ends the session.
fn close_packet(via: Via) {
    let gw = gateway_for(via);
    let mut socket = connected(&gw, via);
    socket.send("1");
    match socket.wait_end(WAIT) {
        Some(Wire::Close(_) | Wire::Dropped) => {}
        _ => panic!("still open after 1; seen:\n{}", socket.dump()),
    }
}
on_every_path!(close_packet:
    Fast,
    Sio,
    Upgraded,
    UpgradedSio);

/// Over long-polling, `1` in a POST answers the pending GET with a noop and
/// ends the session; a second GET while one is pending is refused and ends
/// the session too.
fn polling_close_and_duplicate_get(fast: bool) {
    let gw = gateway(fast);
    let session = EioPolling::handshake(gw.addr(), "");
    let pending = {
        let s = session.clone();
        std::thread::spawn(move || s.get(WAIT))
    };
    std::thread::sleep(Duration::from_millis(100));
    let post = session.post(&["1"]).expect("POST 1");
    assert_eq!(post.status, 200);
    let got = pending.join().expect("pending GET").expect("pending GET");
    assert_eq!((got.status, got.body.as_str()), (200, "6"));
    assert_eq!(session.get(WAIT).expect("GET").status, 400);

    let session = EioPolling::handshake(gw.addr(), "");
    let first = {
        let s = session.clone();
        std::thread::spawn(move || s.get(WAIT))
    };
    std::thread::sleep(Duration::from_millis(100));
    let second = session.get(WAIT);
    assert!(
        second
            .as_ref()
            .map_or(true, |r| r.status == 400 || r.status == 500),
        "duplicate GET: {second:?}"
    );
    let first = first.join().expect("first GET").expect("first GET");
    assert_eq!((first.status, first.body.as_str()), (200, "1"));
    assert_eq!(session.get(WAIT).expect("GET").status, 400);
}
on_both_settings!(polling_close_and_duplicate_get:
    fast,
    #[ignore = "socketioxide sends its first ping at once (engineioxide 0.17 heartbeat), which answers the first GET"] sio);

// -------------------------------------------------------------------- order

/// The events of one burst, each with an ack id: subscribe, unsubscribe,
/// then six heartbeats.
fn burst() -> Vec<String> {
    let mut packets = vec![
        r#"421["subscribe",{"channels":["quotes"]}]"#.to_owned(),
        r#"422["unsubscribe",{"channels":["quotes"]}]"#.to_owned(),
    ];
    for n in 3..=8 {
        packets.push(format!(r#"42{n}["heartbeat",{{"timestamp":{n}}}]"#));
    }
    packets
}

/// What the burst must get back, control packets only: each reply event,
/// then its ack, in the order the events were sent.
fn assert_burst_answered(packets: &[String]) {
    let control = control(packets);
    let shape: Vec<String> = control
        .iter()
        .filter(|p| {
            !p.starts_with('0')
                && !p.starts_with("40")
                && event_name(p).as_deref() != Some("connected")
        })
        .map(|p| match event_name(p) {
            Some(name) if name == "heartbeat_ack" => {
                format!("{name}:{}", payload(p, "42")[1]["client_timestamp"])
            }
            Some(name) => name,
            None => p.chars().take_while(|c| *c != '[').collect(),
        })
        .collect();
    let mut expected = vec![
        "subscribed".to_owned(),
        "431".to_owned(),
        "unsubscribed".to_owned(),
        "432".to_owned(),
    ];
    for n in 3..=8 {
        expected.push(format!("heartbeat_ack:{n}"));
        expected.push(format!("43{n}"));
    }
    assert_eq!(shape, expected, "all packets:\n{}", packets.join("\n"));
}

/// Back-to-back events are handled in order, and each ack comes right
/// after its reply event.
fn events_and_acks_in_order(via: Via) {
    let gw = gateway_for(via);
    let mut socket = connected(&gw, via);
    socket.send_burst(&burst());
    socket.wait_text(WAIT, "438[");
    assert_burst_answered(&socket.texts());
}
on_every_path!(events_and_acks_in_order:
    Fast,
    Sio,
    Upgraded,
    UpgradedSio);

/// A polling session joined to `/` (its CONNECT in a POST of its own).
fn polling_connected(gw: &Gateway) -> EioPolling {
    let session = EioPolling::handshake(gw.addr(), "");
    let connect = format!("40{}", json!({ "token": gw.standalone_token() }));
    let post = session.post(&[&connect]).expect("POST");
    assert_eq!((post.status, post.body.as_str()), (200, "ok"));
    let got = session.poll_until(WAIT, |p| {
        p.iter()
            .any(|p| event_name(p).as_deref() == Some("connected"))
    });
    assert!(got[0].starts_with("40{"), "{got:?}");
    session
}

/// Packets batched in one POST are handled in order.
fn batched_post_in_order(fast: bool) {
    let gw = gateway(fast);
    let session = polling_connected(&gw);
    let packets = burst();
    let refs: Vec<&str> = packets.iter().map(String::as_str).collect();
    let post = session.post(&refs).expect("POST");
    assert_eq!((post.status, post.body.as_str()), (200, "ok"));
    let got = session.poll_until(WAIT, |p| p.iter().any(|p| p.starts_with("438[")));
    assert_burst_answered(&got);
}

/// A CONNECT and events in the same POST: the events are handled after
/// the CONNECT, in order (the session is not lost).
fn connect_and_events_in_one_post(fast: bool) {
    let gw = gateway(fast);
    let session = EioPolling::handshake(gw.addr(), "");
    let connect = format!("40{}", json!({ "token": gw.standalone_token() }));
    let mut packets: Vec<String> = vec![connect];
    packets.extend(burst());
    let refs: Vec<&str> = packets.iter().map(String::as_str).collect();
    let post = session.post(&refs).expect("POST");
    assert_eq!((post.status, post.body.as_str()), (200, "ok"));
    let got = session.poll_until(WAIT, |p| p.iter().any(|p| p.starts_with("438[")));
    assert!(got[0].starts_with("40{"), "{got:?}");
    assert_burst_answered(&got);
}
on_both_settings!(connect_and_events_in_one_post:
    fast,
    #[ignore = "socketioxide makes the socket after the async CONNECT; an event in the same POST finds none and the session is dropped"] sio);
on_both_settings!(batched_post_in_order:
    fast,
    sio);

/// Over long-polling, a binary attachment is a `b`-prefixed base64 packet
/// in the POST: the event gets one answer and its ack, and the next event
/// in the same POST is handled after it.
fn binary_attachment_over_polling(fast: bool) {
    let gw = gateway(fast);
    let session = polling_connected(&gw);
    let post = session
        .post(&[
            r#"451-7["heartbeat",{"_placeholder":true,"num":0}]"#,
            "bAQID",
            r#"428["heartbeat",{"timestamp":8}]"#,
        ])
        .expect("POST");
    assert_eq!((post.status, post.body.as_str()), (200, "ok"));
    let got = session.poll_until(WAIT, |p| p.iter().any(|p| p.starts_with("438[")));
    let first_ack = got.iter().position(|p| p.starts_with("437["));
    let second_ack = got.iter().position(|p| p.starts_with("438["));
    assert!(first_ack < second_ack, "acks out of order: {got:?}");
    assert!(first_ack.is_some(), "no ack for the binary event: {got:?}");
    let answers: Vec<String> = control(&got)
        .into_iter()
        .filter(|p| p.starts_with("42") && !p.contains(r#""client_timestamp":8"#))
        .filter(|p| event_name(p).as_deref() != Some("connected"))
        .collect();
    assert_eq!(answers.len(), 1, "one answer for one event: {answers:?}");
    match event_name(&answers[0]).as_deref() {
        Some("heartbeat_ack") => {}
        Some("error") => assert!(answers[0].contains("heartbeat"), "{}", answers[0]),
        _ => panic!("unexpected answer {}", answers[0]),
    }
}
on_both_settings!(binary_attachment_over_polling:
    fast,
    sio);

/// The 400s of the polling transport say which Engine.IO error they are
/// (`{"code", "message"}`): 0 unknown transport, 1 unknown sid, 2 a
/// handshake that is not a GET, 5 a version other than 4.
fn polling_errors_carry_engine_io_codes(fast: bool) {
    let gw = gateway(fast);
    let addr = gw.addr();
    for (method, path, code) in [
        ("GET", "/socket.io/?EIO=4&transport=abc", 0),
        (
            "GET",
            "/socket.io/?EIO=4&transport=polling&sid=NoSuchSession",
            1,
        ),
        (
            "POST",
            "/socket.io/?EIO=4&transport=polling&sid=NoSuchSession",
            1,
        ),
        ("PUT", "/socket.io/?EIO=4&transport=polling", 2),
        ("GET", "/socket.io/?EIO=3&transport=polling", 5),
    ] {
        let reply = e2e_tests::eio::request(addr, method, path, b"", WAIT)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(reply.status, 400, "{method} {path}: {reply:?}");
        let body: serde_json::Value = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {reply:?}"));
        // (engineioxide writes the code as a string.)
        let said = body["code"].to_string().trim_matches('"').to_owned();
        assert_eq!(said, code.to_string(), "{method} {path}: {reply:?}");
        assert!(body["message"].is_string(), "{method} {path}: {reply:?}");
    }
}
on_both_settings!(polling_errors_carry_engine_io_codes:
    fast,
    sio);

/// A POST past the advertised `maxPayload` is refused (413) and closes the
/// session: its sid is unknown afterwards.
fn oversize_post_closes_the_session(fast: bool) {
    let gw = gateway(fast);
    let session = polling_connected(&gw);
    let max = session.open["maxPayload"].as_u64().expect("maxPayload") as usize;
    let huge = format!(r#"42["heartbeat",{{"pad":"{}"}}]"#, "x".repeat(max + 10));
    let post = session.post(&[&huge]);
    assert!(
        post.as_ref()
            .map_or(true, |r| r.status == 413 || r.status == 400),
        "oversize POST: {post:?}"
    );
    let closed = e2e_tests::eventually(SOON, || {
        let reply = session.get(WAIT).ok()?;
        (reply.status == 400).then_some(())
    });
    assert!(closed.is_some(), "the session outlived an oversize POST");
}
on_both_settings!(oversize_post_closes_the_session:
    fast,
    sio);

/// After an upgrade of a joined session, the heartbeat goes on over the
/// WebSocket (what was queued for polling meanwhile moves there) and the
/// client is the same: its events are answered.
fn heartbeat_and_client_survive_the_upgrade(fast: bool) {
    let gw = gateway(fast);
    let session = polling_connected(&gw);
    let (mut socket, pending) = session.upgrade(WAIT);
    assert_eq!(pending.status, 200, "{pending:?}");
    // The next ping arrives on the WebSocket within one interval.
    socket
        .wait_for(WAIT, |w| *w == Wire::Text("2".into()))
        .unwrap_or_else(|| panic!("no ping after the upgrade; seen:\n{}", socket.dump()));
    assert_usable(&mut socket, 1);
    socket.send(r#"42["subscribe",{"channels":["quotes"]}]"#);
    socket.wait_text(WAIT, r#"42["subscribed""#);
}
on_both_settings!(heartbeat_and_client_survive_the_upgrade:
    fast,
    sio);
