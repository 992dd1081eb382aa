//! Engine.IO v4 and Socket.IO v5 packets in their text form, and the
//! quote payload the benchmark publishes.
//!
//! Over WebSocket every Engine.IO packet is one text frame; over HTTP
//! long-polling a response carries several packets separated by `\x1e`.
//! An Engine.IO `4` (message) packet carries one Socket.IO packet: `40`
//! connect (with the auth object), `41` disconnect, `42` event
//! (`["name",data]`, optionally with an ack id before the array), `44`
//! connect error. Nothing here allocates on the receive path.

/// The Engine.IO packet types the benchmark cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0{...}`: the handshake object (sid, pingInterval, ...).
    Open(&'a str),
    /// `1`
    Close,
    /// `2` (or `2probe`): the server's heartbeat, to be answered with `3`.
    Ping,
    /// `3`
    Pong,
    /// `4...`: a Socket.IO packet.
    Message(Sio<'a>),
    /// `5`, `6` or anything else.
    Other,
}

/// Socket.IO packets (default namespace only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sio<'a> {
    /// `40{"sid":...}`: namespace joined.
    Connect(&'a str),
    /// `41`: the server left the namespace.
    Disconnect,
    /// `42["name",data]`: `data` is the raw JSON after the name (may be empty).
    Event {
        name: &'a str,
        data: &'a str,
    },
    /// `44{"message":...}`: the namespace refused us (auth).
    ConnectError(&'a str),
    Other,
}

pub fn parse(packet: &str) -> Packet<'_> {
    let bytes = packet.as_bytes();
    match bytes.first() {
        Some(b'0') => Packet::Open(&packet[1..]),
        Some(b'1') => Packet::Close,
        Some(b'2') => Packet::Ping,
        Some(b'3') => Packet::Pong,
        Some(b'4') => Packet::Message(parse_sio(&packet[1..])),
        _ => Packet::Other,
    }
}

fn parse_sio(packet: &str) -> Sio<'_> {
    let bytes = packet.as_bytes();
    match bytes.first() {
        Some(b'0') => Sio::Connect(&packet[1..]),
        Some(b'1') => Sio::Disconnect,
        Some(b'2') => parse_event(&packet[1..]),
        Some(b'4') => Sio::ConnectError(&packet[1..]),
        _ => Sio::Other,
    }
}

/// `[ackid]["name",data]` → name and data. Event names never contain
/// quotes or escapes in this protocol, so the name ends at the next `"`.
fn parse_event(packet: &str) -> Sio<'_> {
    let body = packet.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = body.strip_prefix("[\"") else {
        return Sio::Other;
    };
    let Some(end) = rest.find('"') else {
        return Sio::Other;
    };
    let name = &rest[..end];
    let after = &rest[end + 1..];
    let Some(after) = after.strip_suffix(']') else {
        return Sio::Other;
    };
    let data = after.strip_prefix(',').unwrap_or(after);
    Sio::Event { name, data }
}

/// Splits a long-polling response body into its packets.
pub fn split_payload(body: &str) -> impl Iterator<Item = &str> {
    body.split('\u{1e}').filter(|p| !p.is_empty())
}

/// `40{"token":"..."}`: join the default namespace with this auth object.
pub fn connect_packet(token: &str) -> String {
    format!("40{}", serde_json::json!({ "token": token }))
}

pub const SUBSCRIBE_QUOTES: &str = r#"42["subscribe",{"channels":["quotes"]}]"#;
pub const PONG: &str = "3";

/// The benchmark fields of a quote: when it was published (µs since the
/// Unix epoch), a global counter, the symbol's index and its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sent_us: u64,
    pub global: u64,
    pub symbol: usize,
    pub n: u64,
}

/// Builds a quote: the contract's fields (symbol, bid, ask, spread,
/// timestamp RFC 3339 with milliseconds) plus the benchmark's stamp. The
/// stamp comes first so the receiver finds it without scanning the rest;
/// both servers keep key order (ours relays the bytes, Node re-serialises
/// the parsed object in insertion order).
pub fn quote_payload(stamp: &Stamp, symbol: &str, bid: f64, timestamp: &str) -> String {
    let spread = 13u32;
    let ask = bid + f64::from(spread) * 0.00001;
    format!(
        r#"{{"sent_us":{},"g":{},"i":{},"n":{},"symbol":"{symbol}","bid":{bid:.5},"ask":{ask:.5},"spread":{spread},"timestamp":"{timestamp}"}}"#,
        stamp.sent_us, stamp.global, stamp.symbol, stamp.n
    )
}

/// Reads the stamp back from a quote's JSON. Fast path for the layout
/// [`quote_payload`] writes; falls back to searching for each key, so a
/// server that reorders keys is still measured correctly.
pub fn read_stamp(json: &str) -> Option<Stamp> {
    fast_stamp(json).or_else(|| {
        Some(Stamp {
            sent_us: field(json, "\"sent_us\":")?,
            global: field(json, "\"g\":")?,
            symbol: usize::try_from(field(json, "\"i\":")?).ok()?,
            n: field(json, "\"n\":")?,
        })
    })
}

fn fast_stamp(json: &str) -> Option<Stamp> {
    let rest = json.strip_prefix("{\"sent_us\":")?;
    let (sent_us, rest) = leading_u64(rest)?;
    let rest = rest.strip_prefix(",\"g\":")?;
    let (global, rest) = leading_u64(rest)?;
    let rest = rest.strip_prefix(",\"i\":")?;
    let (symbol, rest) = leading_u64(rest)?;
    let rest = rest.strip_prefix(",\"n\":")?;
    let (n, _) = leading_u64(rest)?;
    Some(Stamp {
        sent_us,
        global,
        symbol: usize::try_from(symbol).ok()?,
        n,
    })
}

fn field(json: &str, key: &str) -> Option<u64> {
    let at = json.find(key)? + key.len();
    leading_u64(json[at..].trim_start()).map(|(v, _)| v)
}

/// The unsigned integer at the start of `s` and what follows it.
fn leading_u64(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let value = s[..digits].parse().ok()?;
    Some((value, &s[digits..]))
}

/// The `sid` of an Engine.IO open packet's JSON.
pub fn open_sid(json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get("sid")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_engine_and_socket_packets() {
        assert_eq!(parse("0{\"sid\":\"a\"}"), Packet::Open("{\"sid\":\"a\"}"));
        assert_eq!(parse("2"), Packet::Ping);
        assert_eq!(parse("2probe"), Packet::Ping);
        assert_eq!(
            parse("40{\"sid\":\"x\"}"),
            Packet::Message(Sio::Connect("{\"sid\":\"x\"}"))
        );
        assert_eq!(
            parse("44{\"message\":\"UNAUTHORIZED\"}"),
            Packet::Message(Sio::ConnectError("{\"message\":\"UNAUTHORIZED\"}"))
        );
        assert_eq!(
            parse(r#"42["quotes",{"a":[1,2]}]"#),
            Packet::Message(Sio::Event {
                name: "quotes",
                data: r#"{"a":[1,2]}"#
            })
        );
        assert_eq!(
            parse(r#"4217["subscribed",{"channels":[]}]"#),
            Packet::Message(Sio::Event {
                name: "subscribed",
                data: r#"{"channels":[]}"#
            })
        );
        assert_eq!(
            parse(r#"42["ping"]"#),
            Packet::Message(Sio::Event {
                name: "ping",
                data: ""
            })
        );
        assert_eq!(parse("42nope"), Packet::Message(Sio::Other));
        assert_eq!(parse(""), Packet::Other);
    }

    #[test]
    fn stamps_round_trip_in_both_layouts() {
        let stamp = Stamp {
            sent_us: 1_732_000_000_123_456,
            global: 99,
            symbol: 7,
            n: 5,
        };
        let json = quote_payload(&stamp, "EURUSD", 1.08412, "2026-01-01T00:00:00.000Z");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["symbol"], "EURUSD");
        assert_eq!(v["spread"], 13);
        assert_eq!(read_stamp(&json), Some(stamp));
        let reordered = r#"{"symbol":"X","n":5,"i":7,"g":99,"sent_us":1732000000123456}"#;
        assert_eq!(read_stamp(reordered), Some(stamp));
        assert_eq!(read_stamp(r#"{"symbol":"X"}"#), None);
    }

    #[test]
    fn splits_polling_payloads() {
        let body = "2\u{1e}42[\"a\",1]\u{1e}42[\"b\",2]";
        assert_eq!(
            split_payload(body).collect::<Vec<_>>(),
            ["2", "42[\"a\",1]", "42[\"b\",2]"]
        );
        assert_eq!(
            open_sid(r#"{"sid":"abc","pingInterval":25000}"#).as_deref(),
            Some("abc")
        );
    }
}
