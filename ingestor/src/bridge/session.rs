//! One terminal's conversation, as a state machine over lines: the `hello`
//! that must come first, then data converted with the terminal's clock.
//!
//! No sockets here: the live connection ([`super::conn`]) and the replay of
//! a raw capture ([`crate::replay`]) feed the same lines through the same
//! code, so a capture reproduces exactly what the terminal's lines became.

use super::clock::{checked_offset, Clocks, ServerClock};
use super::message::{self, Ctx, Hello, MessageError, Outbound, PROTOCOLS};
use std::time::Duration;

/// Heartbeat period assumed when `hello` names none (the EA's default).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Bounds on the heartbeat period a terminal may announce.
const HEARTBEAT_RANGE: (u64, u64) = (100, 300_000);

/// Why a connection is closed. Each is logged and counted by its code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the first line must be a hello ({0})")]
    NotHello(String),
    #[error("invalid hello: {0}")]
    InvalidHello(String),
    #[error("hello.protocol {0:?} is not supported (supported: {PROTOCOLS:?})")]
    Protocol(Option<u32>),
    #[error("hello carries no key")]
    NoKey,
    #[error("wrong key")]
    BadKey,
    #[error("this key may not publish as account `{asked}`")]
    AccountNotAllowed {
        /// The label the terminal asked for.
        asked: String,
    },
    #[error("a second hello on the same connection")]
    SecondHello,
    #[error("a line longer than {max} bytes")]
    LineTooLong {
        /// The configured maximum.
        max: usize,
    },
    #[error("no hello within {0:?}")]
    HelloTimeout(Duration),
    #[error("silent for {0:?} (three heartbeats)")]
    Silent(Duration),
}

impl Refusal {
    /// The code sent to the terminal, logged and used as a metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotHello(_) => "NOT_HELLO",
            Refusal::InvalidHello(_) => "INVALID_HELLO",
            Refusal::Protocol(_) => "UNSUPPORTED_PROTOCOL",
            Refusal::NoKey => "NO_KEY",
            Refusal::BadKey => "BAD_KEY",
            Refusal::AccountNotAllowed { .. } => "ACCOUNT_NOT_ALLOWED",
            Refusal::SecondHello => "SECOND_HELLO",
            Refusal::LineTooLong { .. } => "LINE_TOO_LONG",
            Refusal::HelloTimeout(_) => "HELLO_TIMEOUT",
            Refusal::Silent(_) => "SILENT",
        }
    }

    /// Every code, for metrics that show zeros before the first refusal.
    pub const CODES: [&'static str; 10] = [
        "NOT_HELLO",
        "INVALID_HELLO",
        "UNSUPPORTED_PROTOCOL",
        "NO_KEY",
        "BAD_KEY",
        "ACCOUNT_NOT_ALLOWED",
        "SECOND_HELLO",
        "LINE_TOO_LONG",
        "HELLO_TIMEOUT",
        "SILENT",
    ];
}

/// Reads the first line: it must be a well-formed `hello` of a protocol we
/// speak, with a plausible `gmt_offset_s`. The key is checked by the caller.
pub fn read_hello(line: &[u8]) -> Result<Hello, Refusal> {
    let hello = match message::decode(line) {
        Ok(message::Inbound::Hello(h)) => h,
        Ok(_) => return Err(Refusal::NotHello("another message type".into())),
        Err(MessageError::Json(e)) if looks_like_hello(line) => {
            return Err(Refusal::InvalidHello(e))
        }
        Err(e) => return Err(Refusal::NotHello(e.to_string())),
    };
    match hello.protocol {
        Some(v) if PROTOCOLS.contains(&v) => {}
        other => return Err(Refusal::Protocol(other)),
    }
    let offset = hello
        .gmt_offset_s
        .ok_or_else(|| Refusal::InvalidHello("gmt_offset_s is required".into()))?;
    checked_offset(offset).map_err(|e| Refusal::InvalidHello(e.to_string()))?;
    Ok(hello)
}

fn looks_like_hello(line: &[u8]) -> bool {
    const TAG: &[u8] = b"\"type\":\"hello\"";
    line.windows(TAG.len()).any(|w| w == TAG)
}

/// Why a line after `hello` was not used.
#[derive(Debug, PartialEq)]
pub enum LineFault {
    /// A bad line: counted, logged, skipped; the connection goes on.
    Skip(MessageError),
    /// The connection must close.
    Refuse(Refusal),
}

/// An authenticated terminal.
#[derive(Debug)]
pub struct Session {
    /// The account it publishes under.
    account: String,
    /// Its trade server's clock, as far as known.
    clock: ServerClock,
    /// Where the clock is shared with the account's later connections.
    clocks: Clocks,
    /// How often it promised a heartbeat.
    heartbeat: Duration,
}

impl Session {
    /// Starts a session for a checked `hello` publishing as `account`.
    pub fn start(hello: &Hello, account: String, clocks: &Clocks, now_ms: i64) -> Session {
        let offset = hello
            .gmt_offset_s
            .and_then(|o| checked_offset(o).ok())
            .unwrap_or(0);
        let clock = clocks.update(&account, offset, now_ms);
        let heartbeat = hello
            .heartbeat_ms
            .map(|ms| Duration::from_millis(ms.clamp(HEARTBEAT_RANGE.0, HEARTBEAT_RANGE.1)))
            .unwrap_or(DEFAULT_HEARTBEAT);
        Session {
            account,
            clock,
            clocks: clocks.clone(),
            heartbeat,
        }
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The offset in force, seconds.
    pub fn gmt_offset_s(&self) -> i64 {
        self.clock.offset_s()
    }

    /// After three heartbeats without a line the terminal is down.
    pub fn silence_limit(&self) -> Duration {
        self.heartbeat * 3
    }

    /// One line after `hello`: data to publish, `None` for a heartbeat.
    pub fn on_line(&mut self, line: &[u8], now_ms: i64) -> Result<Option<Outbound>, LineFault> {
        let ctx = Ctx {
            clock: &self.clock,
            now_ms,
        };
        match message::parse(line, ctx) {
            Ok(Outbound::Hello(_)) => Err(LineFault::Refuse(Refusal::SecondHello)),
            Ok(Outbound::Heartbeat { gmt_offset_s }) => {
                if let Some(offset) = gmt_offset_s {
                    let offset = checked_offset(offset).map_err(|e| {
                        LineFault::Skip(MessageError::Invalid {
                            field: "gmt_offset_s",
                            reason: e.to_string(),
                        })
                    })?;
                    if offset != self.clock.offset_s() {
                        tracing::info!(
                            account = %self.account,
                            from = self.clock.offset_s(),
                            to = offset,
                            "trade server offset changed (DST)"
                        );
                    }
                    self.clock = self.clocks.update(&self.account, offset, now_ms);
                }
                Ok(None)
            }
            Ok(data) => Ok(Some(data)),
            Err(e) => Err(LineFault::Skip(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_704_110_400_000; // 2024-01-01T12:00:00Z
    const H: i64 = 3_600_000;

    fn hello(offset: i64) -> String {
        format!(
            r#"{{"type":"hello","protocol":2,"key":"k","account":"a","login":1,"gmt_offset_s":{offset},"heartbeat_ms":1000}}"#
        )
    }

    #[test]
    fn the_first_line_must_be_a_good_hello() {
        assert!(read_hello(hello(7200).as_bytes()).is_ok());
        for (line, code) in [
            (
                r#"{"type":"quote","symbol":"X","bid":1,"ask":1,"digits":1}"#,
                "NOT_HELLO",
            ),
            ("garbage", "NOT_HELLO"),
            (
                r#"{"type":"hello","protocol":2,"key":"k"}"#,
                "INVALID_HELLO",
            ),
            (
                r#"{"type":"hello","protocol":2,"gmt_offset_s":"x"}"#,
                "INVALID_HELLO",
            ),
            (
                r#"{"type":"hello","protocol":2,"gmt_offset_s":99999}"#,
                "INVALID_HELLO",
            ),
            (
                r#"{"type":"hello","gmt_offset_s":0}"#,
                "UNSUPPORTED_PROTOCOL",
            ),
            (
                r#"{"type":"hello","protocol":1,"gmt_offset_s":0}"#,
                "UNSUPPORTED_PROTOCOL",
            ),
        ] {
            assert_eq!(
                read_hello(line.as_bytes()).unwrap_err().code(),
                code,
                "{line}"
            );
        }
    }

    #[test]
    fn times_become_utc_and_follow_dst() {
        let clocks = Clocks::default();
        let h = read_hello(hello(7200).as_bytes()).unwrap();
        let mut s = Session::start(&h, "a".into(), &clocks, T0);
        assert_eq!(s.silence_limit(), Duration::from_secs(3));
        // A tick stamped 14:00 on a UTC+2 server happened at 12:00 UTC.
        let quote = |server_ms: i64| {
            format!(
                r#"{{"type":"quote","symbol":"EURUSD","bid":1.1,"ask":1.1002,"digits":5,"time":{server_ms}}}"#
            )
        };
        let Ok(Some(Outbound::Quote(q))) = s.on_line(quote(T0 + 2 * H).as_bytes(), T0) else {
            panic!()
        };
        assert_eq!(q.timestamp, "2024-01-01T12:00:00.000Z");
        // DST: the server moves to UTC+3 at T0 + 1 h.
        assert_eq!(
            s.on_line(br#"{"type":"heartbeat","gmt_offset_s":10800}"#, T0 + H),
            Ok(None)
        );
        assert_eq!(s.gmt_offset_s(), 10_800);
        let Ok(Some(Outbound::Quote(q))) = s.on_line(quote(T0 + 5 * H).as_bytes(), T0 + 2 * H)
        else {
            panic!()
        };
        assert_eq!(q.timestamp, "2024-01-01T14:00:00.000Z");
        // A position opened before the change keeps its true time.
        let line = format!(
            r#"{{"type":"positions","items":[{{"ticket":1,"symbol":"EURUSD","type":0,"volume":1,"price_open":1,"price_current":1,"time":{}}}]}}"#,
            T0 + 2 * H + H / 2
        );
        let Ok(Some(Outbound::Positions(p))) = s.on_line(line.as_bytes(), T0 + 2 * H) else {
            panic!()
        };
        assert_eq!(p[0].time, "2024-01-01T12:30:00.000Z");
        // A reconnect of the same account still knows the winter offset.
        let h3 = read_hello(hello(10_800).as_bytes()).unwrap();
        let mut s2 = Session::start(&h3, "a".into(), &clocks, T0 + 3 * H);
        let Ok(Some(Outbound::Positions(p))) = s2.on_line(line.as_bytes(), T0 + 3 * H) else {
            panic!()
        };
        assert_eq!(p[0].time, "2024-01-01T12:30:00.000Z");
    }

    #[test]
    fn second_hello_refuses_bad_lines_skip() {
        let clocks = Clocks::default();
        let h = read_hello(hello(0).as_bytes()).unwrap();
        let mut s = Session::start(&h, "a".into(), &clocks, T0);
        assert_eq!(
            s.on_line(hello(0).as_bytes(), T0),
            Err(LineFault::Refuse(Refusal::SecondHello))
        );
        assert!(matches!(s.on_line(b"nope", T0), Err(LineFault::Skip(_))));
        assert!(matches!(
            s.on_line(br#"{"type":"heartbeat","gmt_offset_s":86400}"#, T0),
            Err(LineFault::Skip(_))
        ));
        assert_eq!(s.gmt_offset_s(), 0);
    }

    #[test]
    fn outbox_lines_cannot_become_data() {
        let clocks = Clocks::default();
        let h = read_hello(hello(0).as_bytes()).unwrap();
        let mut s = Session::start(&h, "a".into(), &clocks, T0);
        let wrap = |inner: &str| serde_json::json!({"type": "outbox", "line": inner}).to_string();
        for forged in [
            hello(0),
            r#"{"type":"quote","symbol":"X","bid":1,"ask":1,"digits":1}"#.into(),
            r#"{"type":"positions","items":[]}"#.into(),
            r#"{"type":"outbox","line":"{}"}"#.into(),
            "not json".into(),
        ] {
            assert!(
                matches!(
                    s.on_line(wrap(&forged).as_bytes(), T0),
                    Err(LineFault::Skip(_))
                ),
                "{forged}"
            );
        }
        let Ok(Some(Outbound::Log(l))) = s.on_line(
            wrap(r#"{"type":"log","level":"INFO","message":"hi","module":"strategy"}"#).as_bytes(),
            T0,
        ) else {
            panic!()
        };
        assert_eq!(
            (l.module.as_str(), l.timestamp.as_str()),
            ("strategy", "2024-01-01T12:00:00.000Z")
        );
        let Ok(Some(Outbound::Error(e))) = s.on_line(
            wrap(r#"{"type":"error","error":"Failed","details":"No money","code":10019}"#)
                .as_bytes(),
            T0,
        ) else {
            panic!()
        };
        assert_eq!(e.extra["code"], "INSUFFICIENT_MARGIN");
        assert_eq!(e.extra["event"], "error");
    }
}
