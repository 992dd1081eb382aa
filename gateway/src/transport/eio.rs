//! Our own Socket.IO path for WebSocket-only clients: Engine.IO v4 and
//! Socket.IO v5 over one WebSocket (`/socket.io/?EIO=4&transport=websocket`
//! without a `sid`, what `io(url, {transports: ["websocket"]})` opens).
//!
//! Why not socketioxide for these: its emit serialises every event once per
//! socket and pushes it through two more tasks and a 128-packet queue that
//! fails when full. Here a relayed message is one `Arc<Frame>` whose packet
//! text (`42["quotes",{…}]`) is built once for every recipient, the
//! client's conflating outbox sits right in front of the socket, and the
//! writer puts every queued frame into one write. Polling clients, and
//! clients that start on polling and upgrade, stay with socketioxide
//! (`SOCKETIO_FAST_PATH=false` sends everyone there).
//!
//! The protocol subset: the server's open packet, namespace `/` connect
//! with `auth` (refused with `44{"message": CODE}`), EVENT packets with
//! optional ack ids both ways, ping/pong heartbeats, namespace and
//! transport close. No binary packets (the contract has none).

use crate::app::AppState;
use crate::fanout::frame::Frame;
use crate::session::admission::Admission;
use crate::session::store;
use crate::session::Client;
use crate::transport::credentials::{self, query_param, Credentials};
use crate::transport::websocket::{self, Dialect, Flow, WsSink};
use crate::transport::writer;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use protocol::ErrorCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, Interval};

const PING_INTERVAL: Duration = Duration::from_secs(25);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a client has after the open packet to connect to `/`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused client has to read its refusal before the close.
const REFUSAL_GRACE: Duration = Duration::from_millis(500);

/// Routes a new Engine.IO WebSocket connection to [`serve`]; everything
/// else (polling, upgrades with a `sid`) goes on to socketioxide.
pub async fn intercept(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if !app.config.socketio_fast_path || !is_new_websocket(&request) {
        return next.run(request).await;
    }
    let query = request.uri().query().map(str::to_owned);
    let headers = request.headers().clone();
    let (mut parts, body) = request.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => websocket::sized(upgrade, app.config.hard_payload_limit())
            .on_upgrade(move |socket| serve(app, socket, query, headers)),
        Err(_) => next.run(Request::from_parts(parts, body)).await,
    }
}

fn is_new_websocket(request: &Request) -> bool {
    let query = request.uri().query();
    request.uri().path().trim_end_matches('/') == "/socket.io"
        && query_param(query, "EIO").as_deref() == Some("4")
        && query_param(query, "transport").as_deref() == Some("websocket")
        && query_param(query, "sid").is_none()
}

async fn serve(app: Arc<AppState>, socket: WebSocket, query: Option<String>, headers: HeaderMap) {
    let (mut tx, mut rx) = socket.split();
    let sid = store::new_id();
    let open = json!({
        "sid": sid,
        "upgrades": [],
        "pingInterval": PING_INTERVAL.as_millis() as u64,
        "pingTimeout": PING_TIMEOUT.as_millis() as u64,
        "maxPayload": app.config.hard_payload_limit(),
    });
    if tx.send(text(format!("0{open}"))).await.is_err() {
        return;
    }
    let Ok(Some(auth)) = tokio::time::timeout(CONNECT_TIMEOUT, namespace_connect(&mut rx)).await
    else {
        let _ = tx.close().await;
        return;
    };
    let credentials = Credentials::read(Some(&auth), query.as_deref(), &headers);
    match credentials::admit(&app, &credentials).await {
        Ok(admission) => {
            let reply = format!("40{}", json!({ "sid": sid }));
            if tx.send(text(reply)).await.is_ok() {
                relay(app, admission, tx, rx).await;
            }
        }
        Err(refusal) => {
            let code = refusal.code.as_str();
            let _ = tx
                .send(text(format!("44{}", json!({ "message": code }))))
                .await;
            // Read on briefly so the refusal is not lost to a reset.
            let _ = tokio::time::timeout(REFUSAL_GRACE, async {
                while let Some(Ok(_)) = rx.next().await {}
            })
            .await;
            let _ = tx.close().await;
        }
    }
}

/// Waits for the client's `40` (namespace `/`), answering pings meanwhile;
/// the `auth` object it carries, or `Null`.
async fn namespace_connect(rx: &mut SplitStream<WebSocket>) -> Option<Value> {
    while let Some(Ok(message)) = rx.next().await {
        let Message::Text(packet) = message else {
            continue;
        };
        if let Some(auth) = packet.strip_prefix("40") {
            if auth.starts_with('/') {
                return None; // Only the main namespace exists here.
            }
            return Some(serde_json::from_str(auth).unwrap_or(Value::Null));
        }
        if packet.starts_with('1') {
            return None;
        }
    }
    None
}

async fn relay(
    app: Arc<AppState>,
    admission: Admission,
    tx: SplitSink<WebSocket, Message>,
    mut rx: SplitStream<WebSocket>,
) {
    let client = Client::connect(&app.sessions, admission, "socketio");
    let mut writer = app
        .sessions
        .tasks
        .spawn(writer::run(client.clone(), WsSink::socket_io(tx)));
    let mut dialect = EngineIo {
        max: app.config.limits.max_payload_bytes,
        heartbeat: tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL),
        awaiting_pong: None,
    };
    let writer_done = websocket::read(&client, &mut rx, &mut writer, &mut dialect).await;
    client.gone();
    if !writer_done {
        // The writer says goodbye and closes; give it the time it may take.
        let _ = tokio::time::timeout(writer::GOODBYE_PATIENCE * 2, writer).await;
    }
}

/// Engine.IO v4 packets carrying Socket.IO v5 packets, with heartbeats.
struct EngineIo {
    /// Largest payload handled; a bigger one gets `PAYLOAD_TOO_LARGE`.
    max: usize,
    /// When to send the next ping.
    heartbeat: Interval,
    /// Since when a pong is awaited, if one is.
    awaiting_pong: Option<Instant>,
}

impl Dialect for EngineIo {
    fn text(&mut self, client: &Client, packet: &str) -> Flow {
        match packet.as_bytes().first() {
            Some(b'3') => self.awaiting_pong = None,
            Some(b'2') => {
                client.outbox.push(Arc::new(Frame::packet("3".into())));
            }
            Some(b'1') => return Flow::Stop,
            Some(b'4') => {
                if packet.starts_with("41") {
                    return Flow::Stop;
                }
                on_message(client, packet, self.max);
            }
            _ => {
                client.error(
                    ErrorCode::InvalidPayload,
                    "Invalid packet",
                    "not an Engine.IO v4 packet",
                );
            }
        }
        Flow::Continue
    }

    fn binary(&mut self, client: &Client) {
        client.error(
            ErrorCode::InvalidPayload,
            "Binary packets are not supported",
            "send JSON events",
        );
    }

    /// Pings every [`PING_INTERVAL`]; stops when a pong is overdue.
    async fn tick(&mut self, client: &Client) -> Flow {
        self.heartbeat.tick().await;
        if self
            .awaiting_pong
            .is_some_and(|since| since.elapsed() >= PING_TIMEOUT)
        {
            tracing::debug!(client = client.id, "no pong: closing");
            return Flow::Stop;
        }
        self.awaiting_pong.get_or_insert_with(Instant::now);
        client.outbox.push(Arc::new(Frame::packet("2".into())));
        Flow::Continue
    }
}

/// A Socket.IO packet in an Engine.IO MESSAGE: an EVENT is handled by the
/// client, with an ACK packet when the client asked for one.
fn on_message(client: &Client, packet: &str, max: usize) {
    let Some(event) = parse_event(packet) else {
        client.error(
            ErrorCode::InvalidPayload,
            "Invalid packet",
            "expected an EVENT packet: 42[\"event\", data]",
        );
        return;
    };
    let reply = if packet.len() > max {
        client.handle("message", None, packet.len())
    } else {
        match event.body {
            Ok((name, data)) => client.handle(&name, data.as_ref(), packet.len()),
            Err(e) => client.error(ErrorCode::InvalidPayload, "Invalid event", e),
        }
    };
    if let Some(id) = event.ack {
        client
            .outbox
            .push(Arc::new(Frame::packet(format!("43{id}[{reply}]"))));
    }
}

struct Event {
    ack: Option<u64>,
    body: Result<(String, Option<Value>), String>,
}

/// `42[ack id]["name", data]` (namespace `/` only). The ack id is read
/// even when the body is bad or too large, so the client's callback still
/// gets its answer.
fn parse_event(packet: &str) -> Option<Event> {
    let rest = packet.strip_prefix("42")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = rest[..digits].parse().ok();
    let json = &rest[digits..];
    if !json.starts_with('[') {
        return None;
    }
    let body = match serde_json::from_str::<Vec<Value>>(json) {
        Ok(args) => {
            let mut args = args.into_iter();
            match args.next() {
                Some(Value::String(name)) => Ok((name, args.next())),
                _ => Err("the first argument must be the event name".to_owned()),
            }
        }
        Err(e) => Err(format!("not JSON: {e}")),
    };
    Some(Event { ack, body })
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

#[cfg(test)]
mod tests {
    use super::parse_event;
    use serde_json::json;

    #[test]
    fn events_with_and_without_acks() {
        let e = parse_event(r#"42["subscribe",{"channels":["quotes"]}]"#).unwrap();
        assert_eq!(e.ack, None);
        let (name, data) = e.body.unwrap();
        assert_eq!(name, "subscribe");
        assert_eq!(data, Some(json!({"channels": ["quotes"]})));

        let e = parse_event(r#"4217["heartbeat"]"#).unwrap();
        assert_eq!(e.ack, Some(17));
        assert_eq!(e.body.unwrap(), ("heartbeat".to_owned(), None));
    }

    #[test]
    fn bad_events_keep_their_ack_id() {
        let e = parse_event("423[7]").unwrap();
        assert_eq!(e.ack, Some(3));
        assert!(e.body.is_err());
        let e = parse_event("425[\"x\",").unwrap();
        assert_eq!(e.ack, Some(5));
        assert!(e.body.is_err());
        assert!(parse_event("43[]").is_none());
        assert!(parse_event("42/admin,[\"x\"]").is_none());
        assert!(parse_event("42").is_none());
    }
}
