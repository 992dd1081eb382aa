//! Socket.IO v5 packets as the fast path reads them: the text of one
//! Engine.IO MESSAGE (after its `4`) into a [`Packet`], or why it is not
//! one. Everything the protocol calls invalid is an error here, and the
//! caller closes the connection on it (the protocol's rule): an unknown
//! type, a namespace without its `,`, an ack id that is not a number or
//! does not fit, a payload that is not JSON or not of the type's shape.
//!
//! Format: `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`, the
//! namespace only when it is not `/`.

use serde_json::Value;

/// One Socket.IO packet from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// `0`: join `nsp`, with the `auth` object if any.
    Connect { nsp: String, auth: Option<Value> },
    /// `1`: leave `nsp`.
    Disconnect { nsp: String },
    /// `2` (or `5`, then `attachments` binary frames follow): an event.
    Event {
        nsp: String,
        ack: Option<u64>,
        name: String,
        /// The arguments after the name.
        args: Vec<Value>,
        /// Binary frames that belong to it (`5` only).
        attachments: usize,
    },
    /// `3` or `6`: the client's answer to a server ack request (this
    /// server never asks for one).
    Ack { nsp: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    #[error("a client may not send packet type {0}")]
    NotFromClient(char),
    #[error("bad attachment count")]
    BadAttachments,
    #[error("namespace without its ','")]
    BadNamespace,
    #[error("ack id out of range")]
    AckOverflow,
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    WrongShape(&'static str),
}

/// The longest attachment count or ack id read (u64 has 20 digits).
const MAX_DIGITS: usize = 20;

pub fn parse(text: &str) -> Result<Packet, PacketError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(PacketError::Empty)?;
    let mut rest = chars.as_str();
    let attachments = if matches!(kind, '5' | '6') {
        let (count, after) = leading_number(rest)?;
        let after = after.strip_prefix('-').ok_or(PacketError::BadAttachments)?;
        rest = after;
        count.ok_or(PacketError::BadAttachments)? as usize
    } else {
        0
    };
    let nsp = if rest.starts_with('/') {
        let end = rest.find(',');
        match (kind, end) {
            (_, Some(end)) => {
                let nsp = rest[..end].to_owned();
                rest = &rest[end + 1..];
                nsp
            }
            // `1/admin` and `0/admin` may end at the namespace.
            ('0' | '1', None) => std::mem::take(&mut rest).to_owned(),
            _ => return Err(PacketError::BadNamespace),
        }
    } else {
        "/".to_owned()
    };
    match kind {
        '0' => {
            let auth = match rest {
                "" => None,
                json => match serde_json::from_str::<Value>(json) {
                    Ok(object @ Value::Object(_)) => Some(object),
                    Ok(_) => return Err(PacketError::WrongShape("CONNECT data must be an object")),
                    Err(e) => return Err(PacketError::NotJson(e.to_string())),
                },
            };
            Ok(Packet::Connect { nsp, auth })
        }
        '1' => Ok(Packet::Disconnect { nsp }),
        '2' | '5' => {
            let (ack, json) = leading_number(rest)?;
            let args = match serde_json::from_str::<Value>(json) {
                Ok(Value::Array(args)) => args,
                Ok(_) => return Err(PacketError::WrongShape("EVENT data must be an array")),
                Err(e) => return Err(PacketError::NotJson(e.to_string())),
            };
            let mut args = args.into_iter();
            let name = match args.next() {
                Some(Value::String(name)) => name,
                _ => {
                    return Err(PacketError::WrongShape(
                        "EVENT data must start with its name",
                    ))
                }
            };
            Ok(Packet::Event {
                nsp,
                ack,
                name,
                args: args.collect(),
                attachments,
            })
        }
        '3' | '6' => {
            let (ack, json) = leading_number(rest)?;
            if ack.is_none() {
                return Err(PacketError::WrongShape("ACK without an id"));
            }
            match serde_json::from_str::<Value>(json) {
                Ok(Value::Array(_)) => Ok(Packet::Ack { nsp }),
                Ok(_) => Err(PacketError::WrongShape("ACK data must be an array")),
                Err(e) => Err(PacketError::NotJson(e.to_string())),
            }
        }
        '4' => Err(PacketError::NotFromClient(kind)),
        other => Err(PacketError::UnknownType(other)),
    }
}

/// Leading decimal digits as a number (none: `None`), and the rest.
fn leading_number(text: &str) -> Result<(Option<u64>, &str), PacketError> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Ok((None, text));
    }
    if digits > MAX_DIGITS {
        return Err(PacketError::AckOverflow);
    }
    let number = text[..digits]
        .parse()
        .map_err(|_| PacketError::AckOverflow)?;
    Ok((Some(number), &text[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(nsp: &str, ack: Option<u64>, name: &str, args: Vec<Value>, n: usize) -> Packet {
        Packet::Event {
            nsp: nsp.into(),
            ack,
            name: name.into(),
            args,
            attachments: n,
        }
    }

    #[test]
    fn connects_and_disconnects() {
        assert_eq!(
            parse("0"),
            Ok(Packet::Connect {
                nsp: "/".into(),
                auth: None
            })
        );
        assert_eq!(
            parse(r#"0{"token":"t"}"#),
            Ok(Packet::Connect {
                nsp: "/".into(),
                auth: Some(json!({"token": "t"}))
            })
        );
        assert_eq!(
            parse("0/admin,"),
            Ok(Packet::Connect {
                nsp: "/admin".into(),
                auth: None
            })
        );
        assert_eq!(
            parse("0/admin"),
            Ok(Packet::Connect {
                nsp: "/admin".into(),
                auth: None
            })
        );
        assert_eq!(
            parse(r#"0/admin,{"a":1}"#),
            Ok(Packet::Connect {
                nsp: "/admin".into(),
                auth: Some(json!({"a": 1}))
            })
        );
        assert_eq!(parse("1"), Ok(Packet::Disconnect { nsp: "/".into() }));
        assert_eq!(
            parse("1/admin,"),
            Ok(Packet::Disconnect {
                nsp: "/admin".into()
            })
        );
    }

    #[test]
    fn events_with_acks_namespaces_and_attachments() {
        assert_eq!(
            parse(r#"2["subscribe",{"channels":[]}]"#),
            Ok(event(
                "/",
                None,
                "subscribe",
                vec![json!({"channels": []})],
                0
            ))
        );
        assert_eq!(
            parse(r#"217["heartbeat"]"#),
            Ok(event("/", Some(17), "heartbeat", vec![], 0))
        );
        assert_eq!(
            parse(r#"2/admin,3["x",1,2]"#),
            Ok(event("/admin", Some(3), "x", vec![json!(1), json!(2)], 0))
        );
        assert_eq!(
            parse(r#"51-7["heartbeat",{"_placeholder":true,"num":0}]"#),
            Ok(event(
                "/",
                Some(7),
                "heartbeat",
                vec![json!({"_placeholder": true, "num": 0})],
                1
            ))
        );
        assert_eq!(
            parse("3/admin,5[]"),
            Ok(Packet::Ack {
                nsp: "/admin".into()
            })
        );
        assert_eq!(
            parse(&format!("2{}[\"x\"]", u64::MAX)),
            Ok(event("/", Some(u64::MAX), "x", vec![], 0))
        );
    }

    #[test]
    fn invalid_packets_are_errors() {
        for bad in [
            "",
            "abc",
            "2{}",
            "2[]",
            "2[1]",
            "2abc[\"x\"]",
            "2",
            "2[\"x\",",
            "2/admin[\"x\"]",
            "299999999999999999999999[\"x\"]",
            "218446744073709551616[\"x\"]",
            "0{\"token\":",
            "0\"token\"",
            "4{\"message\":\"x\"}",
            "3[]",
            "5[\"x\"]",
            "5x-[\"x\"]",
            "7",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed as {:?}", parse(bad));
        }
        assert_eq!(
            parse("299999999999999999999999[\"x\"]"),
            Err(PacketError::AckOverflow)
        );
    }
}
