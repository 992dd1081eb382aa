//! The plain WebSocket endpoint (`/` and `/ws`), for wscat and the console
//! page: JSON text frames `{"event": …, "data": …}` both ways, with the same
//! events, payloads, auth and limits as Socket.IO.
//!
//! A bad token still gets the upgrade, then one `error` frame with the code
//! and a close frame (1008) whose reason is the code: wscat and browsers
//! show that, where a bare HTTP 401 would only say "unexpected response".
//!
//! Reading stops when the writer has closed the connection (after at most
//! a second for the client's close answer), so a client that never reads
//! or answers cannot keep its socket open.

use crate::client::{self, Admission, Client};
use crate::frame::Frame;
use crate::metrics;
use crate::socketio::query_param;
use crate::state::AppState;
use crate::writer::{self, FrameSink, Sent};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use protocol::error_code::ErrorPayload;
use protocol::ErrorCode;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// Close code for a policy violation (bad token).
const POLICY_VIOLATION: u16 = 1008;
/// Close code for a server going away (drain, slow consumer).
const GOING_AWAY: u16 = 1001;
/// How long a client has to answer the server's close.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Deserialize)]
struct Inbound {
    event: String,
    #[serde(default)]
    data: Option<Value>,
}

pub async fn upgrade(
    ws: WebSocketUpgrade,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    State(app): State<Arc<AppState>>,
) -> Response {
    let token = query_param(query.as_deref(), "token")
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(&headers))
        .unwrap_or_default();
    let resume = query_param(query.as_deref(), "session");
    let verdict = match app.verifier.verify(&token) {
        Ok(identity) => client::admit(&app, identity, resume.as_deref()).await,
        Err(e) => Err(ErrorPayload::new(
            e.code(),
            match e.code() {
                ErrorCode::TokenExpired => "Token expired",
                _ => "Authentication failed",
            },
            e.to_string(),
        )),
    };
    sized(ws, &app).on_upgrade(move |socket| async move {
        match verdict {
            Ok(admission) => serve(app, admission, socket).await,
            Err(refusal) => refuse(socket, refusal).await,
        }
    })
}

/// Buffer sizes for a dashboard's WebSocket. Inbound messages are small
/// (subscribe, heartbeat), so a 4 KiB read buffer (grown on demand) instead
/// of tungstenite's 128 KiB keeps idle connections cheap; frames queued
/// between flushes still go out in one write up to 64 KiB.
pub fn sized(upgrade: WebSocketUpgrade, app: &AppState) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(64 * 1024)
        .max_message_size(app.config.hard_payload_limit())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
}

async fn refuse(mut socket: WebSocket, refusal: ErrorPayload) {
    let code = refusal.code.as_str();
    metrics::auth_refused(code);
    let frame = Frame::control("error", &refusal);
    let _ = socket.send(Message::Text(frame.ws_text())).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: POLICY_VIOLATION,
            reason: Utf8Bytes::from(code),
        })))
        .await;
}

async fn serve(app: Arc<AppState>, admission: Admission, socket: WebSocket) {
    let client = Client::connect(&app, admission, "websocket");
    let (tx, mut rx) = socket.split();
    let mut writer = app
        .writers
        .spawn(writer::run(client.clone(), WsSink::plain(tx)));
    let max = app.config.max_payload_bytes;
    loop {
        let message = tokio::select! {
            message = rx.next() => message,
            // The writer has closed (or given up on) the connection: read
            // on until the client answers the close (so nothing unread
            // turns the close into a reset), but not forever.
            _ = &mut writer => {
                await_close_answer(&mut rx).await;
                break;
            }
        };
        let Some(Ok(message)) = message else { break };
        match message {
            Message::Text(text) if text.len() > max => {
                client.handle("message", None, text.len());
            }
            Message::Text(text) => match parse_inbound(&text) {
                Ok(inbound) => {
                    client.handle(&inbound.event, inbound.data.as_ref(), text.len());
                }
                Err(e) => {
                    client.error(
                        ErrorCode::InvalidPayload,
                        "Invalid message",
                        format!("expected {{\"event\": \"...\", \"data\": ...}}: {e}"),
                    );
                }
            },
            Message::Binary(_) => {
                client.error(
                    ErrorCode::InvalidPayload,
                    "Binary frames are not supported",
                    "send JSON text frames",
                );
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    client.gone();
}

/// A text frame as an event. Only a JSON object is one: serde alone would
/// also take an array `["subscribe", {...}]` as `{event, data}`.
fn parse_inbound(text: &str) -> Result<Inbound, serde_json::Error> {
    let object: serde_json::Map<String, Value> = serde_json::from_str(text)?;
    serde_json::from_value(Value::Object(object))
}

/// After the server's close: reads on until the client answers it (unread
/// input would turn the close into a reset that loses the goodbye), but
/// not longer than [`CLOSE_GRACE`].
pub async fn await_close_answer(rx: &mut SplitStream<WebSocket>) {
    let answered = async {
        while let Some(Ok(message)) = rx.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, answered).await;
}

/// A WebSocket's sending half as a [`FrameSink`], in one of the two
/// dialects: plain JSON events, or Socket.IO packets.
pub struct WsSink {
    tx: SplitSink<WebSocket, Message>,
    encode: fn(&Frame) -> Utf8Bytes,
    /// Sent before the close frame (Socket.IO's namespace disconnect).
    last_packet: Option<&'static str>,
}

impl WsSink {
    pub fn plain(tx: SplitSink<WebSocket, Message>) -> WsSink {
        WsSink {
            tx,
            encode: Frame::ws_text,
            last_packet: None,
        }
    }

    /// `41` before the close makes socket.io-client report "io server
    /// disconnect" (and not reconnect by itself).
    pub fn socket_io(tx: SplitSink<WebSocket, Message>) -> WsSink {
        WsSink {
            tx,
            encode: Frame::sio_text,
            last_packet: Some("41"),
        }
    }
}

impl FrameSink for WsSink {
    async fn send(&mut self, frame: &Frame) -> Sent {
        match self.tx.feed(Message::Text((self.encode)(frame))).await {
            Ok(()) => Sent::Ok,
            Err(_) => Sent::Closed,
        }
    }

    async fn flush(&mut self) -> Sent {
        match self.tx.flush().await {
            Ok(()) => Sent::Ok,
            Err(_) => Sent::Closed,
        }
    }

    async fn close(&mut self) {
        if let Some(packet) = self.last_packet {
            let _ = self
                .tx
                .feed(Message::Text(Utf8Bytes::from_static(packet)))
                .await;
        }
        let _ = self
            .tx
            .send(Message::Close(Some(CloseFrame {
                code: GOING_AWAY,
                reason: Utf8Bytes::from_static("disconnected"),
            })))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_inbound;

    #[test]
    fn only_an_object_with_an_event_name_is_an_event() {
        let e = parse_inbound(r#"{"event": "subscribe", "data": {"channels": []}}"#).unwrap();
        assert_eq!(e.event, "subscribe");
        assert!(e.data.is_some());
        assert!(parse_inbound(r#"{"event": "heartbeat"}"#)
            .unwrap()
            .data
            .is_none());
        for bad in [
            r#"["subscribe", {"channels": ["quotes"]}]"#,
            r#""subscribe""#,
            "null",
            r#"{"data": {}}"#,
            r#"{"event": 7}"#,
            "{",
        ] {
            assert!(parse_inbound(bad).is_err(), "{bad}");
        }
    }
}
