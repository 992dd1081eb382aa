//! OpenTelemetry: a message published to NATS with a W3C `traceparent`
//! header is relayed inside a span of the same trace, exported over
//! OTLP/HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT`.
//!
//! The collector here is a few lines of HTTP that keep each request body
//! (OTLP protobuf); the trace id's 16 raw bytes must show up in one.

use e2e_tests::{mint, Gateway, NatsServer, WsClient, SECRET};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Bodies = Arc<Mutex<Vec<Vec<u8>>>>;

/// Accepts OTLP/HTTP posts on a free port, answering 200 to each.
fn collector() -> (u16, Bodies) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let bodies: Bodies = Arc::default();
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let kept = kept.clone();
            std::thread::spawn(move || serve_posts(stream, kept));
        }
    });
    (port, bodies)
}

fn serve_posts(stream: TcpStream, bodies: Bodies) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        bodies.lock().expect("lock").push(body);
        let _ = writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    }
}

/// Publishes one message with headers using the NATS text protocol.
fn nats_hpub(port: u16, subject: &str, headers: &str, payload: &str) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("nats");
    let mut info = String::new();
    BufReader::new(conn.try_clone().expect("clone"))
        .read_line(&mut info)
        .expect("INFO");
    let head = format!("NATS/1.0\r\n{headers}\r\n");
    let frame = format!(
        "CONNECT {{\"verbose\":false,\"headers\":true}}\r\nHPUB {subject} {} {}\r\n{head}{payload}\r\nPING\r\n",
        head.len(),
        head.len() + payload.len()
    );
    conn.write_all(frame.as_bytes()).expect("publish");
    let mut reply = String::new();
    BufReader::new(conn).read_line(&mut reply).expect("PONG");
    assert!(reply.starts_with("PONG"), "NATS answered {reply:?}");
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn relay_span_joins_the_publishers_trace() {
    let (collector_port, bodies) = collector();
    let nats = NatsServer::start();
    let endpoint = format!("http://127.0.0.1:{collector_port}");
    let mut gw = Gateway::start(
        &[
            ("NATS_URL", &nats.url()),
            ("JWT_SECRET", SECRET),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ],
        false,
    );
    // Ready means the relay reads NATS: what is published now is relayed.
    let ready = e2e_tests::eventually(Duration::from_secs(20), || {
        (e2e_tests::http::get(gw.addr(), "/health/ready", &[]).status == 200).then_some(())
    });
    assert!(ready.is_some(), "gateway never became ready");
    let token = mint(SECRET, "tracer", Some("demo"), None, 600);
    let mut ws = WsClient::connect(&format!("{}/ws?token={token}", gw.ws_url())).expect("ws");
    ws.wait_event("connected", Duration::from_secs(10));
    ws.send_event("subscribe", json!({"channels": ["quotes"]}));
    ws.wait_event("subscribed", Duration::from_secs(10));

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let quote = json!({"symbol": "EURUSD", "bid": 1.1, "ask": 1.1002, "spread": 2,
                       "timestamp": "2026-11-24T12:00:00.000Z"});
    nats_hpub(
        nats.port(),
        "mt5.demo.quotes.EURUSD",
        &format!("traceparent: 00-{trace_id}-00f067aa0ba902b7-01\r\n"),
        &quote.to_string(),
    );
    let got = ws.wait_event("quotes", Duration::from_secs(10));
    assert_eq!(got["symbol"], "EURUSD");

    // Shutting down flushes the batch of spans.
    assert!(gw.terminate(Duration::from_secs(15)).success());
    let wanted = hex_bytes(trace_id);
    let found = e2e_tests::eventually(Duration::from_secs(10), || {
        bodies
            .lock()
            .expect("lock")
            .iter()
            .any(|b| b.windows(wanted.len()).any(|w| w == wanted))
            .then_some(())
    });
    assert!(
        found.is_some(),
        "no exported span carries trace id {trace_id}; {} OTLP posts received",
        bodies.lock().expect("lock").len()
    );
    gw.assert_no_panic();
}
