//! The plain WebSocket endpoint (`/` and `/ws`), for wscat and the console
//! page: JSON text frames `{"event": …, "data": …}` both ways, with the same
//! events, payloads, auth and limits as Socket.IO.
//!
//! A bad token still gets the upgrade, then one `error` frame with the code
//! and a close frame (1008) whose reason is the code: wscat and browsers
//! show that, where a bare HTTP 401 would only say "unexpected response".

use crate::app::AppState;
use crate::fanout::frame::Frame;
use crate::observability::metrics;
use crate::session::admission::Admission;
use crate::session::Client;
use crate::transport::credentials::{self, Credentials};
use crate::transport::websocket::{self, close_message, Dialect, Flow, WsSink, POLICY_VIOLATION};
use crate::transport::writer;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::StreamExt;
use protocol::error_code::ErrorPayload;
use protocol::ErrorCode;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

#[derive(Deserialize)]
pub(crate) struct Inbound {
    /// The event name.
    event: String,
    /// Its payload, if any.
    #[serde(default)]
    data: Option<Value>,
}

pub async fn upgrade(
    ws: WebSocketUpgrade,
    credentials: Credentials,
    State(app): State<Arc<AppState>>,
) -> Response {
    let verdict = credentials::admit(&app, &credentials).await;
    websocket::sized(ws, app.config.hard_payload_limit()).on_upgrade(move |socket| async move {
        match verdict {
            Ok(admission) => serve(app, admission, socket).await,
            Err(refusal) => refuse(socket, refusal).await,
        }
    })
}

async fn refuse(mut socket: WebSocket, refusal: ErrorPayload) {
    let frame = Frame::control("error", &refusal);
    let _ = socket.send(Message::Text(frame.ws_text())).await;
    let _ = socket
        .send(close_message(POLICY_VIOLATION, refusal.code.as_str()))
        .await;
}

async fn serve(app: Arc<AppState>, admission: Admission, socket: WebSocket) {
    let client = Client::connect(&app.sessions, admission, metrics::WEBSOCKET);
    let (tx, mut rx) = socket.split();
    let mut writer = app
        .sessions
        .tasks
        .spawn(writer::run(client.clone(), WsSink::plain(tx)));
    let mut dialect = Plain {
        max: app.config.limits.max_payload_bytes,
    };
    websocket::read(&client, &mut rx, &mut writer, &mut dialect).await;
    client.gone();
}

/// `{"event": …, "data": …}` text frames.
struct Plain {
    /// Largest payload handled; a bigger one gets `PAYLOAD_TOO_LARGE`.
    max: usize,
}

impl Dialect for Plain {
    fn text(&mut self, client: &Client, text: &str) -> Flow {
        if text.len() > self.max {
            client.handle("message", None, text.len());
            return Flow::Continue;
        }
        match parse_inbound(text) {
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
        }
        Flow::Continue
    }

    fn binary(&mut self, client: &Client) {
        client.error(
            ErrorCode::InvalidPayload,
            "Binary frames are not supported",
            "send JSON text frames",
        );
    }
}

/// A text frame as an event. Only a JSON object is one: serde alone would
/// also take an array `["subscribe", {...}]` as `{event, data}`.
pub(crate) fn parse_inbound(text: &str) -> Result<Inbound, serde_json::Error> {
    let object: serde_json::Map<String, Value> = serde_json::from_str(text)?;
    serde_json::from_value(Value::Object(object))
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
