//! `gateway --standalone`: what a person gets from the README's first
//! command on a fresh machine.

use e2e_tests::checks::{assert_event, is_rfc3339_utc};
use e2e_tests::http::get;
use e2e_tests::{Gateway, Plan, SioClient, WsClient, CHANNELS, DATA_EVENTS};
use serde_json::json;
use std::time::{Duration, Instant};

/// Subscribed to all six channels, a socket.io-client gets a snapshot of
/// each state channel (quotes, positions, orders, account) right after
/// `subscribed`, before any live log or signal, then the live logs and
/// signals; each event in the spec's shape. (Ordered, not timed: the
/// machine is shared. Without the snapshot, orders would wait for the
/// simulator's next 2 s tick, behind several logs.)
#[test]
fn every_data_event_follows_subscribing_state_first() {
    let gw = Gateway::standalone(&[]);
    let mut plan = Plan::new(&gw.http_url())
        .token(gw.standalone_token())
        .transports(&["websocket"])
        .connected()
        .subscribe(&CHANNELS);
    for event in DATA_EVENTS {
        plan = plan.wait_for(event, 10_000);
    }
    let t = SioClient::node(&plan).finish(Duration::from_secs(30));
    t.assert_completed();
    let connected = t.first("connected");
    assert_event("connected", &connected.data);
    let names = t.names();
    let index = |event: &str| {
        names
            .iter()
            .position(|n| *n == event)
            .unwrap_or_else(|| panic!("no `{event}`\n{}", t.dump()))
    };
    let subscribed = index("subscribed");
    let first_live = index("logs_update").min(index("signals_update"));
    for event in [
        "quotes",
        "positions_update",
        "orders_update",
        "account_update",
    ] {
        let at = index(event);
        assert!(
            subscribed < at && at < first_live,
            "`{event}` is not in the snapshot between `subscribed` and the first live log or signal\n{}",
            t.dump()
        );
    }
    for event in DATA_EVENTS {
        for line in t.all(event) {
            assert_event(event, &line.data);
        }
    }
    gw.assert_no_panic();
}

/// The console page, the probes, the metrics and `/api/status`.
#[test]
fn http_surface() {
    let gw = Gateway::standalone(&[]);
    let page = get(gw.addr(), "/", &[]);
    assert_eq!(page.status, 200, "GET /: {page:?}");
    assert!(
        page.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "GET / content-type: {:?}",
        page.header("content-type")
    );
    assert!(
        page.body.to_ascii_lowercase().contains("<html"),
        "GET / is not an HTML page: {:.200}",
        page.body
    );
    for path in ["/health/live", "/health/ready"] {
        let r = get(gw.addr(), path, &[]);
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
    }
    let ready = get(gw.addr(), "/health/ready", &[]).json();
    assert_eq!(ready["ready"], true, "{ready}");

    let metrics = get(gw.addr(), "/metrics", &[]);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .lines()
            .any(|l| !l.starts_with('#') && l.starts_with("gateway_")),
        "no gateway_ metric in /metrics:\n{}",
        metrics.body
    );

    let auth = format!("Bearer {}", gw.standalone_token());
    let status = get(gw.addr(), "/api/status", &[("Authorization", &auth)]);
    assert_eq!(status.status, 200, "{status:?}");
    let status = status.json();
    assert_eq!(status["mode"], "standalone", "{status}");
    assert!(status["clients"].is_u64(), "{status}");
    gw.assert_no_panic();
}

/// SIGTERM: every client is told `disconnected {"reason": "Server
/// shutdown", "reconnect": true}` (Socket.IO over websocket and polling,
/// python-socketio, plain WebSocket), then the process exits 0 within the
/// drain timeout.
#[test]
fn sigterm_tells_every_client_and_exits_zero() {
    let mut gw = Gateway::standalone(&[("DRAIN_TIMEOUT_SECS", "5")]);
    let token = gw.standalone_token().to_owned();
    let plan = |transport: &str| {
        Plan::new(&gw.http_url())
            .token(&token)
            .transports(&[transport])
            .connected()
            .subscribe(&["quotes", "logs"])
            .wait_for("disconnected", 30_000)
            .wait_for("disconnect", 10_000)
    };
    let mut clients = vec![
        SioClient::node(&plan("websocket")),
        SioClient::node(&plan("polling")),
        SioClient::python(&plan("websocket")),
    ];
    for c in &mut clients {
        c.wait_event("subscribed", Duration::from_secs(15));
        c.wait_event("quotes", Duration::from_secs(5));
    }
    let mut ws = WsClient::connect(&format!("{}/?token={token}", gw.ws_url())).expect("ws");
    ws.wait_event("connected", Duration::from_secs(5));
    ws.send_event("subscribe", json!({"channels": ["quotes"]}));
    ws.wait_event("subscribed", Duration::from_secs(5));

    let sent = Instant::now();
    let status = gw.terminate(Duration::from_secs(5 + 5));
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(7), "exit took {took:?}");

    let mut problems = Vec::new();
    for c in clients {
        let t = c.finish(Duration::from_secs(10));
        let transport = t
            .find("connect")
            .map(|l| l.data["transport"].to_string())
            .unwrap_or_default();
        match t.find("disconnected") {
            Some(bye) if bye.data == json!({"reason": "Server shutdown", "reconnect": true}) => {}
            _ => problems.push(format!(
                "{:?} client over {transport}: no `disconnected {{\"reason\": \"Server shutdown\", \"reconnect\": true}}` before the connection closed:\n{}",
                t.lang,
                t.dump()
            )),
        }
    }
    let bye = ws.wait_event("disconnected", Duration::from_secs(5));
    assert_eq!(bye, json!({"reason": "Server shutdown", "reconnect": true}));
    assert!(
        ws.wait_close(Duration::from_secs(5)).is_some(),
        "the plain WebSocket was not closed:\n{}",
        ws.dump()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    gw.assert_no_panic();
}

/// The demo greeting carries an RFC 3339 UTC server time close to ours.
#[test]
fn connected_greeting_over_plain_websocket() {
    let gw = Gateway::standalone(&[]);
    let mut ws = WsClient::connect(&format!("{}/?token={}", gw.ws_url(), gw.standalone_token()))
        .expect("ws");
    let hello = ws.wait_event("connected", Duration::from_secs(5));
    assert_event("connected", &hello);
    assert_eq!(hello["message"], "Connected to MT5 Trading Dashboard");
    let server_time = hello["server_time"].as_str().unwrap();
    assert!(is_rfc3339_utc(server_time));
    let skew = chrono::DateTime::parse_from_rfc3339(server_time)
        .unwrap()
        .timestamp_millis()
        - e2e_tests::now_ms();
    assert!(skew.abs() < 60_000, "server_time is {skew} ms off");
}
