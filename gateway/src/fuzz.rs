//! Property tests over everything a client can put on the wire before and
//! after it authenticates: Engine.IO/Socket.IO packets, plain-WebSocket
//! frames (tungstenite with the limits we configure) and text frames, and
//! the vetting of event payloads. None may panic, and an oversized input
//! must be refused without being parsed.
//!
//! The suite runs a few hundred cases per property; a long run for a
//! report: `PROPTEST_CASES=200000 cargo test -p gateway --release fuzz`.

use proptest::prelude::*;
use serde_json::Value;

/// Text that looks like our protocol often enough to reach deep branches:
/// packet prefixes, JSON punctuation, event and channel names, digits.
fn protocolish() -> impl Strategy<Value = String> {
    let atoms = prop_oneof![
        Just("4".to_owned()),
        Just("42".to_owned()),
        Just("43".to_owned()),
        Just("40".to_owned()),
        Just("2".to_owned()),
        Just("3".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("\"".to_owned()),
        Just("\"event\"".to_owned()),
        Just("\"data\"".to_owned()),
        Just("\"subscribe\"".to_owned()),
        Just("\"channels\"".to_owned()),
        Just("\"quotes\"".to_owned()),
        Just("null".to_owned()),
        Just("1e999".to_owned()),
        Just("/admin,".to_owned()),
        "[0-9]{1,25}",
        "\\PC{0,8}",
    ];
    prop::collection::vec(atoms, 0..40).prop_map(|parts| parts.concat())
}

/// Deeply nested JSON arrays/objects (stack depth) as text.
fn nested() -> impl Strategy<Value = String> {
    (1usize..400, any::<bool>()).prop_map(|(depth, obj)| {
        let (open, close) = if obj { ("{\"a\":", "}") } else { ("[", "]") };
        format!("42[\"x\",{}1{}]", open.repeat(depth), close.repeat(depth))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn engine_io_packets_never_panic(packet in prop_oneof![protocolish(), nested(), any::<String>()]) {
        // The fast path reads a Socket.IO packet from an Engine.IO MESSAGE.
        let text = packet.strip_prefix('4').unwrap_or(&packet);
        let _ = crate::transport::sio_packet::parse(text);
        let _ = crate::transport::eio::oversize_event(text);
    }

    #[test]
    fn oversized_packets_are_not_parsed(ack in proptest::option::of(0u64..1_000_000), pad in 1usize..4096) {
        // Valid JSON past the limit: refused on its size alone.
        let ack_text = ack.map(|a| a.to_string()).unwrap_or_default();
        // Its ack id is read without parsing the JSON (the size check
        // comes first on the fast path).
        let packet = format!("2{ack_text}[\"subscribe\",\"{}\"]", "x".repeat(pad));
        prop_assert_eq!(crate::transport::eio::oversize_event(&packet), Some(ack));
    }

    #[test]
    fn plain_websocket_text_frames_never_panic(text in prop_oneof![protocolish(), nested(), any::<String>()]) {
        let _ = crate::transport::ws::parse_inbound(&text);
    }

    #[test]
    fn websocket_frames_never_panic_and_stay_bounded(bytes in prop::collection::vec(any::<u8>(), 0..4096), header in frame_header()) {
        // What the gateway's WebSocket sees: the handshake is done, then
        // arbitrary bytes, read with the limits we configure.
        let mut wire = header;
        wire.extend_from_slice(&bytes);
        let limit = 1024;
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit));
        let mut ws = tungstenite::WebSocket::from_raw_socket(
            Wire(std::io::Cursor::new(wire)),
            tungstenite::protocol::Role::Server,
            Some(config),
        );
        for _ in 0..64 {
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    prop_assert!(t.len() <= limit);
                    let _ = crate::transport::ws::parse_inbound(t.as_str());
                }
                Ok(tungstenite::Message::Binary(b)) => prop_assert!(b.len() <= limit),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }

    #[test]
    fn event_payload_vetting_never_panics(data in json_value()) {
        let _ = crate::session::commands::channel_list(Some(&data));
        let _ = crate::session::commands::truncate(&data.to_string());
    }
}

/// Bytes from a client; what the server writes back is dropped.
struct Wire(std::io::Cursor<Vec<u8>>);

impl std::io::Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::io::Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A masked frame header with any opcode, flags and (often huge) length.
fn frame_header() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), 0u8..128, any::<u64>(), any::<[u8; 4]>()).prop_map(
        |(first, len7, len64, mask)| {
            let mut h = vec![first, 0x80 | len7];
            match len7 {
                126 => h.extend_from_slice(&(len64 as u16).to_be_bytes()),
                127 => h.extend_from_slice(&len64.to_be_bytes()),
                _ => {}
            }
            h.extend_from_slice(&mask);
            h
        },
    )
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        "\\PC{0,80}".prop_map(Value::String),
        prop_oneof![Just("quotes"), Just("logs"), Just("nope")]
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![Just("channels".to_owned()), "\\PC{0,8}"],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
