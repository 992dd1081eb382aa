//! A message on its way to clients, encoded once and shared by all of them.
//!
//! A bus message becomes one `Arc<Frame>` whatever the number of recipients:
//! the payload is validated once, `seq` is spliced in once, and the plain
//! WebSocket text (`{"event":…,"data":…}`) is built once, on first use, and
//! then cloned by reference count for every socket. The same goes for the
//! Socket.IO packet (`42["event",data]`) our own WebSocket path writes.

use axum::extract::ws::Utf8Bytes;
use protocol::Channel;
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::{Arc, OnceLock};

/// What last-value conflation works on: one pending value per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StateKey {
    Quote(Arc<str>),
    Positions,
    Orders,
    Account,
}

#[derive(Debug)]
pub struct Frame {
    /// The event name clients see (`quotes`, `subscribed`, …).
    pub event: &'static str,
    /// The data channel this frame belongs to; `None` for replies.
    pub channel: Option<Channel>,
    /// Set for state channels: a newer frame with the same key replaces
    /// this one in a client's queue if it has not been written yet.
    pub key: Option<StateKey>,
    /// Set for logs and signals: their position in the bus history.
    pub seq: Option<u64>,
    /// The event's data, validated JSON.
    pub data: Box<RawValue>,
    /// Set for an acknowledgement: the client's ack id (`data` is the
    /// ack's one argument).
    pub ack: Option<u64>,
    /// The plain WebSocket text, built on first use.
    ws_text: OnceLock<Utf8Bytes>,
    /// The Socket.IO packet text, built on first use.
    sio_text: OnceLock<Utf8Bytes>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("{channel} payload must be a JSON {expected}")]
    WrongShape {
        channel: Channel,
        expected: &'static str,
    },
}

impl Frame {
    /// Builds the frame for a bus payload. The payload is checked to be JSON
    /// of the channel's shape (an array for positions and orders, an object
    /// otherwise) so that nothing malformed ever reaches a dashboard.
    pub fn from_bus(
        channel: Channel,
        symbol: Option<&str>,
        payload: &[u8],
        seq: Option<u64>,
    ) -> Result<Frame, FrameError> {
        let text = std::str::from_utf8(payload).map_err(|e| FrameError::NotJson(e.to_string()))?;
        let text = text.trim();
        let expected = match channel {
            Channel::Positions | Channel::Orders => ("array", b'['),
            _ => ("object", b'{'),
        };
        if text.as_bytes().first() != Some(&expected.1) {
            return Err(FrameError::WrongShape {
                channel,
                expected: expected.0,
            });
        }
        let data = match (channel.is_state(), seq) {
            (false, Some(seq)) => with_seq(text, seq),
            _ => text.to_owned(),
        };
        let data = RawValue::from_string(data).map_err(|e| FrameError::NotJson(e.to_string()))?;
        let key = match channel {
            Channel::Quotes => Some(StateKey::Quote(Arc::from(symbol.unwrap_or_default()))),
            Channel::Positions => Some(StateKey::Positions),
            Channel::Orders => Some(StateKey::Orders),
            Channel::Account => Some(StateKey::Account),
            Channel::Logs | Channel::Signals => None,
        };
        Ok(Frame {
            event: channel.event(),
            channel: Some(channel),
            key,
            seq: if channel.is_state() { None } else { seq },
            data,
            ack: None,
            ws_text: OnceLock::new(),
            sio_text: OnceLock::new(),
        })
    }

    /// A reply or notice for one client (`subscribed`, `error`, …).
    pub fn control<T: Serialize + ?Sized>(event: &'static str, data: &T) -> Frame {
        let json = serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned());
        let data = RawValue::from_string(json).unwrap_or_else(|_| null());
        Frame {
            event,
            channel: None,
            key: None,
            seq: None,
            data,
            ack: None,
            ws_text: OnceLock::new(),
            sio_text: OnceLock::new(),
        }
    }

    /// A ready-made Engine.IO/Socket.IO packet for one client (an ack, a
    /// ping): written as is by the Socket.IO WebSocket path, never relayed.
    pub fn packet(text: String) -> Frame {
        let frame = Frame {
            event: "",
            channel: None,
            key: None,
            seq: None,
            data: null(),
            ack: None,
            ws_text: OnceLock::new(),
            sio_text: OnceLock::new(),
        };
        let _ = frame.sio_text.set(Utf8Bytes::from(text));
        frame
    }

    /// The acknowledgement of the client's event `id`, answered with
    /// `reply`: queued behind the reply event, so it is written after it.
    pub fn ack<T: Serialize + ?Sized>(id: u64, reply: &T) -> Frame {
        let mut frame = Frame::control("", reply);
        frame.ack = Some(id);
        let text = format!("43{id}[{}]", frame.data.get());
        let _ = frame.sio_text.set(Utf8Bytes::from(text));
        frame
    }

    /// `42["event",data]`: a Socket.IO EVENT packet in an Engine.IO MESSAGE.
    pub fn sio_text(&self) -> Utf8Bytes {
        self.sio_text
            .get_or_init(|| {
                let data = self.data.get();
                let mut s = String::with_capacity(data.len() + self.event.len() + 8);
                s.push_str("42[\"");
                s.push_str(self.event);
                s.push_str("\",");
                s.push_str(data);
                s.push(']');
                Utf8Bytes::from(s)
            })
            .clone()
    }

    /// `{"event":"…","data":…}` for the plain WebSocket endpoint.
    pub fn ws_text(&self) -> Utf8Bytes {
        self.ws_text
            .get_or_init(|| {
                let data = self.data.get();
                let mut s = String::with_capacity(data.len() + self.event.len() + 21);
                s.push_str("{\"event\":\"");
                s.push_str(self.event);
                s.push_str("\",\"data\":");
                s.push_str(data);
                s.push('}');
                Utf8Bytes::from(s)
            })
            .clone()
    }
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

/// Puts `"seq":N` first in a JSON object without parsing it: the bus
/// sequence is known only to the gateway, and this runs once per message.
fn with_seq(object: &str, seq: u64) -> String {
    let body = object[1..].trim_start();
    let sep = if body.starts_with('}') { "" } else { "," };
    format!("{{\"seq\":{seq}{sep}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_spliced_into_event_objects() {
        let f = Frame::from_bus(Channel::Logs, None, br#" {"level":"INFO"} "#, Some(7)).unwrap();
        assert_eq!(f.data.get(), r#"{"seq":7,"level":"INFO"}"#);
        let f = Frame::from_bus(Channel::Signals, None, b"{ }", Some(8)).unwrap();
        assert_eq!(f.data.get(), r#"{"seq":8}"#);
        let v: serde_json::Value = serde_json::from_str(f.data.get()).unwrap();
        assert_eq!(v["seq"], 8);
    }

    #[test]
    fn state_frames_have_keys_and_no_seq() {
        let f = Frame::from_bus(Channel::Quotes, Some("EURUSD"), br#"{"bid":1}"#, Some(3)).unwrap();
        assert_eq!(f.key, Some(StateKey::Quote("EURUSD".into())));
        assert_eq!(f.seq, None);
        assert_eq!(f.data.get(), r#"{"bid":1}"#);
        let f = Frame::from_bus(Channel::Positions, None, b"[]", None).unwrap();
        assert_eq!(f.key, Some(StateKey::Positions));
        assert_eq!(f.event, "positions_update");
    }

    #[test]
    fn rejects_malformed_and_misshapen_payloads() {
        assert!(Frame::from_bus(Channel::Logs, None, b"{nope", None).is_err());
        assert!(Frame::from_bus(Channel::Logs, None, b"\xff", None).is_err());
        assert!(Frame::from_bus(Channel::Positions, None, b"{}", None).is_err());
        assert!(Frame::from_bus(Channel::Account, None, b"[]", None).is_err());
        assert!(Frame::from_bus(Channel::Account, None, b"", None).is_err());
        assert!(Frame::from_bus(Channel::Logs, None, br#"{"a":1} {"b":2}"#, Some(1)).is_err());
    }

    #[test]
    fn sio_text_is_an_event_packet() {
        let f = Frame::from_bus(Channel::Quotes, Some("X"), br#"{"bid":1}"#, None).unwrap();
        assert_eq!(f.sio_text().as_str(), r#"42["quotes",{"bid":1}]"#);
        assert_eq!(Frame::packet("2".into()).sio_text().as_str(), "2");
        let ack = Frame::ack(7, &serde_json::json!({"channels": []}));
        assert_eq!(ack.sio_text().as_str(), r#"437[{"channels":[]}]"#);
        assert_eq!(ack.ack, Some(7));
    }

    #[test]
    fn ws_text_is_the_event_envelope() {
        let f = Frame::control("subscribed", &serde_json::json!({"channels": ["quotes"]}));
        let v: serde_json::Value = serde_json::from_str(&f.ws_text()).unwrap();
        assert_eq!(v["event"], "subscribed");
        assert_eq!(v["data"]["channels"][0], "quotes");
    }
}
