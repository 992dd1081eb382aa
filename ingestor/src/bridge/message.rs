//! The bridge's wire format (one JSON object per line, see
//! `ingestor/mql5/PROTOCOL.md`) and its conversion into the spec's payloads.
//!
//! The EA sends what MQL5 has at hand: trade-server epoch milliseconds,
//! MT5's numeric enums, a point size. The spec wants RFC 3339 UTC strings,
//! lowercase type names and spreads in points. That translation lives here,
//! apart from the socket handling, so it can be tested (and fuzzed) line by
//! line and replayed from a raw capture. Input is accepted leniently where
//! MT5 itself varies (numbers or names for enums, seconds or milliseconds
//! for times) and rejected where a value would be a lie.

use super::clock::ServerClock;
use protocol::payload::{Account, LogEntry, Order, Position, Quote, Signal, Validator};
use protocol::time::rfc3339;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The protocol versions this ingestor speaks (`hello.protocol`).
pub const PROTOCOLS: [u32; 1] = [2];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MessageError {
    #[error("not a bridge message: {0}")]
    Json(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// One line from the EA, as sent.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Inbound {
    /// First line of every connection: who is speaking, with what key.
    Hello(Hello),
    /// Sent every `heartbeat_ms`; repeats the offset in force (DST moves it).
    Heartbeat {
        /// Trade-server time minus UTC, seconds.
        #[serde(default)]
        gmt_offset_s: Option<i64>,
    },
    Quote {
        symbol: String,
        bid: f64,
        ask: f64,
        #[serde(default)]
        point: Option<f64>,
        #[serde(default)]
        digits: Option<u32>,
        #[serde(default)]
        time: Option<Time>,
    },
    Positions {
        items: Vec<EaPosition>,
    },
    Orders {
        items: Vec<EaOrder>,
    },
    Account(EaAccount),
    Log(EaLog),
    Signal(EaSignal),
    Error(EaError),
    /// A line another MQL5 program wrote to the outbox, as a JSON string:
    /// only `log`, `signal` and `error` may be inside.
    Outbox {
        line: String,
    },
}

/// The `hello` line.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Hello {
    /// Protocol version the EA speaks (see [`PROTOCOLS`]).
    #[serde(default)]
    pub protocol: Option<u32>,
    /// The terminal's key (`BRIDGE_KEY` or its line of `BRIDGE_KEYS_FILE`).
    #[serde(default)]
    pub key: Option<String>,
    /// The account label to publish under (empty: the key's or the default).
    #[serde(default)]
    pub account: Option<String>,
    /// `ACCOUNT_LOGIN`.
    #[serde(default)]
    pub login: Option<Value>,
    /// `ACCOUNT_SERVER`.
    #[serde(default)]
    pub server: Option<String>,
    /// `ACCOUNT_COMPANY`.
    #[serde(default)]
    pub company: Option<String>,
    /// EA build.
    #[serde(default)]
    pub version: Option<String>,
    /// `TimeTradeServer() - TimeGMT()`, rounded to 15 minutes.
    #[serde(default)]
    pub gmt_offset_s: Option<i64>,
    /// How often the EA sends a heartbeat.
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
}

impl Hello {
    /// `login 123 on Broker-Server, EA 2.0` for log lines.
    pub fn about(&self) -> String {
        format!(
            "login {} on {}, EA {}",
            self.login
                .as_ref()
                .map(|l| l.to_string())
                .unwrap_or_else(|| "?".into()),
            self.server.as_deref().unwrap_or("?"),
            self.version.as_deref().unwrap_or("?")
        )
    }
}

/// A time as MQL5 gives it (epoch seconds or milliseconds on the trade
/// server's clock) or an RFC 3339 string with its own offset.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Time {
    Epoch(i64),
    Text(String),
}

/// An MT5 enum: its number (`POSITION_TYPE_SELL` is 1) or a name in any of
/// the usual spellings (`"sell"`, `"POSITION_TYPE_SELL"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Enum {
    Number(i64),
    Name(String),
}

/// A trade server return code: `10019` or `"INSUFFICIENT_MARGIN"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Code {
    Number(i64),
    Name(String),
}

#[derive(Debug, Deserialize)]
pub struct EaPosition {
    pub ticket: u64,
    pub symbol: String,
    #[serde(rename = "type")]
    pub kind: Enum,
    pub volume: f64,
    pub price_open: f64,
    pub price_current: f64,
    #[serde(default)]
    pub sl: f64,
    #[serde(default)]
    pub tp: f64,
    #[serde(default)]
    pub profit: f64,
    #[serde(default)]
    pub swap: f64,
    #[serde(default)]
    pub commission: f64,
    pub time: Time,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Deserialize)]
pub struct EaOrder {
    pub ticket: u64,
    pub symbol: String,
    #[serde(rename = "type")]
    pub kind: Enum,
    pub volume: f64,
    pub price_open: f64,
    #[serde(default)]
    pub sl: f64,
    #[serde(default)]
    pub tp: f64,
    pub time_setup: Time,
    #[serde(default)]
    pub state: Option<Enum>,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Deserialize)]
pub struct EaAccount {
    pub balance: f64,
    pub equity: f64,
    pub margin: f64,
    #[serde(alias = "margin_free")]
    pub free_margin: f64,
    /// MT5 reports 0 when no margin is in use (the level is undefined).
    #[serde(default)]
    pub margin_level: f64,
    #[serde(default)]
    pub profit: f64,
    #[serde(default = "usd")]
    pub currency: String,
}

fn usd() -> String {
    "USD".to_owned()
}

#[derive(Debug, Deserialize)]
pub struct EaLog {
    #[serde(default, alias = "time")]
    pub timestamp: Option<Time>,
    #[serde(default = "info")]
    pub level: String,
    pub message: String,
    #[serde(default = "terminal")]
    pub module: String,
    #[serde(default)]
    pub extra: Option<Map<String, Value>>,
}

fn info() -> String {
    "INFO".to_owned()
}

fn terminal() -> String {
    "mt5_terminal".to_owned()
}

#[derive(Debug, Deserialize)]
pub struct EaError {
    pub error: String,
    #[serde(default)]
    pub details: String,
    #[serde(default)]
    pub code: Option<Code>,
    #[serde(default)]
    pub time: Option<Time>,
}

#[derive(Debug, Deserialize)]
pub struct EaSignal {
    #[serde(default)]
    pub uuid: Option<String>,
    pub symbol: String,
    pub side: String,
    pub volume: f64,
    #[serde(default)]
    pub tp: f64,
    #[serde(default)]
    pub sl: f64,
    #[serde(default = "terminal")]
    pub source: String,
    #[serde(default)]
    pub confidence: f64,
    #[serde(default, alias = "time")]
    pub timestamp: Option<Time>,
    #[serde(default)]
    pub validators: Vec<EaValidator>,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct EaValidator {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub approved: bool,
    #[serde(default)]
    pub confidence: f64,
    #[serde(default)]
    pub reason: String,
    #[serde(default, alias = "time")]
    pub timestamp: Option<Time>,
}

/// A line converted: what to publish, or what the connection must know.
#[derive(Debug, PartialEq)]
pub enum Outbound {
    Hello(Hello),
    Heartbeat {
        /// The offset in force, when the heartbeat carries one.
        gmt_offset_s: Option<i64>,
    },
    Quote(Quote),
    Positions(Vec<Position>),
    Orders(Vec<Order>),
    Account(Account),
    Log(LogEntry),
    Signal(Signal),
    /// A terminal error: published as an ERROR log entry whose `extra`
    /// holds the spec's `error` event (`error`, `details`, `code`).
    Error(LogEntry),
}

/// What a conversion needs besides the line: the terminal's clock and the
/// time the line arrived (for entries the terminal did not stamp).
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// Trade-server time to UTC.
    pub clock: &'a ServerClock,
    /// When the line arrived (UTC epoch ms).
    pub now_ms: i64,
}

/// Parses and converts one line.
pub fn parse(line: &[u8], ctx: Ctx<'_>) -> Result<Outbound, MessageError> {
    convert(decode(line)?, ctx)
}

/// Parses one line without converting it.
pub fn decode(line: &[u8]) -> Result<Inbound, MessageError> {
    serde_json::from_slice(line).map_err(|e| MessageError::Json(e.to_string()))
}

pub fn convert(msg: Inbound, ctx: Ctx<'_>) -> Result<Outbound, MessageError> {
    Ok(match msg {
        Inbound::Hello(hello) => Outbound::Hello(hello),
        Inbound::Heartbeat { gmt_offset_s } => Outbound::Heartbeat { gmt_offset_s },
        Inbound::Quote {
            symbol,
            bid,
            ask,
            point,
            digits,
            time,
        } => Outbound::Quote(quote(symbol, bid, ask, point, digits, time, ctx)?),
        Inbound::Positions { items } => Outbound::Positions(
            items
                .into_iter()
                .map(|p| position(p, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Inbound::Orders { items } => Outbound::Orders(
            items
                .into_iter()
                .map(|o| order(o, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Inbound::Account(a) => Outbound::Account(account(a)?),
        Inbound::Log(l) => Outbound::Log(log(l, ctx)?),
        Inbound::Signal(s) => Outbound::Signal(signal(s, ctx)?),
        Inbound::Error(e) => Outbound::Error(error(e, ctx)?),
        Inbound::Outbox { line } => match decode(line.as_bytes())? {
            Inbound::Log(l) => Outbound::Log(log(l, ctx)?),
            Inbound::Signal(s) => Outbound::Signal(signal(s, ctx)?),
            Inbound::Error(e) => Outbound::Error(error(e, ctx)?),
            _ => {
                return Err(invalid(
                    "outbox line",
                    "only log, signal and error lines may come from the outbox",
                ))
            }
        },
    })
}

fn log(l: EaLog, ctx: Ctx<'_>) -> Result<LogEntry, MessageError> {
    Ok(LogEntry {
        timestamp: time_or_now(l.timestamp, ctx)?,
        level: level(&l.level),
        message: l.message,
        module: l.module,
        extra: l.extra.unwrap_or_default(),
        seq: None,
    })
}

/// The six channels have no room for terminal errors of their own, so they
/// travel as ERROR logs whose `extra` carries the spec's `error` event
/// (`event: "error"`, `error`, `details`, `code` with MT5's meaning).
fn error(e: EaError, ctx: Ctx<'_>) -> Result<LogEntry, MessageError> {
    let mut extra = Map::new();
    extra.insert("event".into(), Value::String("error".into()));
    extra.insert("error".into(), Value::String(e.error.clone()));
    extra.insert("details".into(), Value::String(e.details.clone()));
    let code = e
        .code
        .map(code_name)
        .unwrap_or_else(|| "TERMINAL_ERROR".into());
    extra.insert("code".into(), Value::String(code));
    let message = if e.details.is_empty() {
        e.error
    } else {
        format!("{}: {}", e.error, e.details)
    };
    Ok(LogEntry {
        timestamp: time_or_now(e.time, ctx)?,
        level: "ERROR".into(),
        message,
        module: terminal(),
        extra,
        seq: None,
    })
}

fn quote(
    symbol: String,
    bid: f64,
    ask: f64,
    point: Option<f64>,
    digits: Option<u32>,
    time: Option<Time>,
    ctx: Ctx<'_>,
) -> Result<Quote, MessageError> {
    check_symbol(&symbol)?;
    let digits = digits.filter(|d| *d <= 10);
    let point = match (point.filter(|p| p.is_finite() && *p > 0.0), digits) {
        (Some(p), _) => p,
        (None, Some(d)) => 10f64.powi(-(d as i32)),
        (None, None) => {
            return Err(MessageError::Invalid {
                field: "point",
                reason: "a quote needs `point` or `digits` to express its spread".into(),
            })
        }
    };
    let round = |x: f64| match digits {
        Some(d) => {
            let scale = 10f64.powi(d as i32);
            (x * scale).round() / scale
        }
        None => x,
    };
    // Checked after rounding: a price that rounds to 0 is not a price.
    let bid = price("bid", round(bid))?;
    let ask = price("ask", round(ask))?;
    Ok(Quote {
        symbol,
        bid,
        ask,
        spread: ((ask - bid) / point).round() as i64,
        timestamp: time_or_now(time, ctx)?,
    })
}

fn position(p: EaPosition, ctx: Ctx<'_>) -> Result<Position, MessageError> {
    check_symbol(&p.symbol)?;
    Ok(Position {
        ticket: p.ticket,
        symbol: p.symbol,
        kind: position_type(&p.kind)?,
        volume: number("volume", p.volume)?,
        price_open: number("price_open", p.price_open)?,
        price_current: number("price_current", p.price_current)?,
        sl: number("sl", p.sl)?,
        tp: number("tp", p.tp)?,
        profit: number("profit", p.profit)?,
        swap: number("swap", p.swap)?,
        commission: number("commission", p.commission)?,
        time: time_string(p.time, ctx)?,
        comment: p.comment,
    })
}

fn order(o: EaOrder, ctx: Ctx<'_>) -> Result<Order, MessageError> {
    check_symbol(&o.symbol)?;
    Ok(Order {
        ticket: o.ticket,
        symbol: o.symbol,
        kind: order_type(&o.kind)?,
        volume: number("volume", o.volume)?,
        price_open: number("price_open", o.price_open)?,
        sl: number("sl", o.sl)?,
        tp: number("tp", o.tp)?,
        time_setup: time_string(o.time_setup, ctx)?,
        state: o
            .state
            .as_ref()
            .map(order_state)
            .transpose()?
            .unwrap_or_else(|| "pending".into()),
        comment: o.comment,
    })
}

fn account(a: EaAccount) -> Result<Account, MessageError> {
    Ok(Account {
        balance: number("balance", a.balance)?,
        equity: number("equity", a.equity)?,
        margin: number("margin", a.margin)?,
        free_margin: number("free_margin", a.free_margin)?,
        margin_level: number("margin_level", a.margin_level)?,
        profit: number("profit", a.profit)?,
        currency: a.currency,
    })
}

fn signal(s: EaSignal, ctx: Ctx<'_>) -> Result<Signal, MessageError> {
    check_symbol(&s.symbol)?;
    let side = s.side.to_ascii_lowercase();
    if side != "buy" && side != "sell" {
        return Err(invalid("side", format!("`{}` is not buy or sell", s.side)));
    }
    let timestamp = time_or_now(s.timestamp, ctx)?;
    let validators = s
        .validators
        .into_iter()
        .map(|v| {
            Ok(Validator {
                name: v.name,
                kind: v.kind,
                approved: v.approved,
                confidence: number("validator confidence", v.confidence)?,
                reason: v.reason,
                timestamp: match v.timestamp {
                    Some(t) => time_string(t, ctx)?,
                    None => timestamp.clone(),
                },
            })
        })
        .collect::<Result<Vec<_>, MessageError>>()?;
    // Without an explicit status, the validators decide, as in the spec.
    let status = s.status.unwrap_or_else(|| {
        if validators.is_empty() {
            "pending"
        } else if validators.iter().all(|v| v.approved) {
            "approved"
        } else {
            "rejected"
        }
        .to_owned()
    });
    Ok(Signal {
        uuid: s
            .uuid
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("signal_{}", ctx.now_ms)),
        symbol: s.symbol,
        side,
        volume: number("volume", s.volume)?,
        tp: number("tp", s.tp)?,
        sl: number("sl", s.sl)?,
        source: s.source,
        confidence: number("confidence", s.confidence)?,
        timestamp,
        validators,
        status,
        seq: None,
    })
}

fn invalid(field: &'static str, reason: impl Into<String>) -> MessageError {
    MessageError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn check_symbol(symbol: &str) -> Result<(), MessageError> {
    if symbol.is_empty() || symbol.len() > 64 {
        return Err(invalid("symbol", "must be 1 to 64 characters"));
    }
    Ok(())
}

/// NaN and infinities are not JSON numbers and would not survive the trip.
fn number(field: &'static str, x: f64) -> Result<f64, MessageError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(invalid(field, "not a finite number"))
    }
}

fn price(field: &'static str, x: f64) -> Result<f64, MessageError> {
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(invalid(field, format!("{x} is not a price")))
    }
}

fn time_or_now(t: Option<Time>, ctx: Ctx<'_>) -> Result<String, MessageError> {
    match t {
        Some(t) => time_string(t, ctx),
        None => chrono::DateTime::from_timestamp_millis(ctx.now_ms)
            .map(rfc3339)
            .ok_or_else(|| invalid("time", "arrival time out of range")),
    }
}

/// Epoch values are trade-server time, converted to UTC with the
/// terminal's clock. Values below 10^11 are taken as seconds (MQL5's
/// `datetime`), above as milliseconds (`time_msc`): 10^11 seconds is the
/// year 5138, 10^11 milliseconds is 1973, so the two never meet in
/// practice. Strings carry their own offset and are absolute.
fn time_string(t: Time, ctx: Ctx<'_>) -> Result<String, MessageError> {
    match t {
        Time::Epoch(n) => {
            let server_ms = if n.abs() < 100_000_000_000 {
                n.saturating_mul(1000)
            } else {
                n
            };
            chrono::DateTime::from_timestamp_millis(ctx.clock.to_utc(server_ms))
                .map(rfc3339)
                .ok_or_else(|| invalid("time", format!("{n} is out of range")))
        }
        Time::Text(s) => chrono::DateTime::parse_from_rfc3339(&s)
            .map(|t| rfc3339(t.with_timezone(&chrono::Utc)))
            .map_err(|e| invalid("time", format!("`{s}`: {e}"))),
    }
}

/// `"POSITION_TYPE_BUY"`, `"Buy"` and `"buy"` are all `buy`.
fn enum_name(name: &str, prefix: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    lower
        .strip_prefix(prefix)
        .map(str::to_owned)
        .unwrap_or(lower)
}

fn position_type(e: &Enum) -> Result<String, MessageError> {
    let name = match e {
        Enum::Number(0) => "buy".to_owned(),
        Enum::Number(1) => "sell".to_owned(),
        Enum::Number(n) => return Err(invalid("position type", format!("unknown value {n}"))),
        Enum::Name(s) => enum_name(s, "position_type_"),
    };
    match name.as_str() {
        "buy" | "sell" => Ok(name),
        _ => Err(invalid("position type", format!("unknown value `{name}`"))),
    }
}

/// MT5's `ENUM_ORDER_TYPE`, in its numeric order.
const ORDER_TYPES: [&str; 9] = [
    "buy",
    "sell",
    "buy_limit",
    "sell_limit",
    "buy_stop",
    "sell_stop",
    "buy_stop_limit",
    "sell_stop_limit",
    "close_by",
];

fn order_type(e: &Enum) -> Result<String, MessageError> {
    let name = match e {
        Enum::Number(n) => usize::try_from(*n)
            .ok()
            .and_then(|i| ORDER_TYPES.get(i))
            .map(|s| (*s).to_owned())
            .ok_or_else(|| invalid("order type", format!("unknown value {n}")))?,
        Enum::Name(s) => enum_name(s, "order_type_"),
    };
    if ORDER_TYPES.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(invalid("order type", format!("unknown value `{name}`")))
    }
}

/// MT5's `ENUM_ORDER_STATE`, in its numeric order. `placed` (accepted and
/// waiting) is what the spec calls `pending`.
const ORDER_STATES: [&str; 10] = [
    "started",
    "pending",
    "canceled",
    "partial",
    "filled",
    "rejected",
    "expired",
    "request_add",
    "request_modify",
    "request_cancel",
];

fn order_state(e: &Enum) -> Result<String, MessageError> {
    let name = match e {
        Enum::Number(n) => usize::try_from(*n)
            .ok()
            .and_then(|i| ORDER_STATES.get(i))
            .map(|s| (*s).to_owned())
            .ok_or_else(|| invalid("order state", format!("unknown value {n}")))?,
        Enum::Name(s) => match enum_name(s, "order_state_").as_str() {
            "placed" => "pending".to_owned(),
            other => other.to_owned(),
        },
    };
    Ok(name)
}

fn level(l: &str) -> String {
    match l.trim().to_ascii_uppercase().as_str() {
        "WARN" => "WARNING".to_owned(),
        "ERR" => "ERROR".to_owned(),
        "FATAL" => "CRITICAL".to_owned(),
        other => other.to_owned(),
    }
}

/// Trade server return codes the dashboard knows by name; others keep
/// their number.
fn code_name(code: Code) -> String {
    match code {
        Code::Name(s) => s,
        Code::Number(n) => match n {
            10004 => "REQUOTE",
            10006 => "REQUEST_REJECTED",
            10013 => "INVALID_REQUEST",
            10014 => "INVALID_VOLUME",
            10015 => "INVALID_PRICE",
            10016 => "INVALID_STOPS",
            10018 => "MARKET_CLOSED",
            10019 => "INSUFFICIENT_MARGIN",
            10031 => "NO_CONNECTION",
            _ => return n.to_string(),
        }
        .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Converts with a UTC server clock, arriving at 2024-01-01T12:00:00Z.
    fn p(line: &[u8]) -> Result<Outbound, MessageError> {
        let clock = ServerClock::new(0);
        parse(
            line,
            Ctx {
                clock: &clock,
                now_ms: 1_704_110_400_000,
            },
        )
    }

    fn ok(line: &str) -> Outbound {
        p(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn quote_gets_spread_in_points_and_rfc3339_time() {
        let Outbound::Quote(q) = ok(
            r#"{"type":"quote","symbol":"EURUSD","bid":1.085,"ask":1.0852,"point":0.00001,"digits":5,"time":1704110400000}"#,
        ) else {
            panic!()
        };
        assert_eq!(q.spread, 20);
        assert_eq!(q.timestamp, "2024-01-01T12:00:00.000Z");
        let Outbound::Quote(q) = ok(
            r#"{"type":"quote","symbol":"USDJPY","bid":151.2501,"ask":151.2649,"digits":3,"time":1704110400}"#,
        ) else {
            panic!()
        };
        assert_eq!((q.bid, q.ask, q.spread), (151.25, 151.265, 15));
        assert_eq!(q.timestamp, "2024-01-01T12:00:00.000Z");
    }

    #[test]
    fn quote_needs_a_point_and_real_prices() {
        for bad in [
            r#"{"type":"quote","symbol":"EURUSD","bid":1.085,"ask":1.0852}"#,
            r#"{"type":"quote","symbol":"EURUSD","bid":0,"ask":1.0852,"digits":5}"#,
            r#"{"type":"quote","symbol":"","bid":1,"ask":1.1,"digits":5}"#,
            r#"{"type":"quote","symbol":"EURUSD","bid":"1.0","ask":1.1,"digits":5}"#,
            r#"{"type":"quote","symbol":"EURUSD","bid":1.0,"ask":1.1,"digits":5,"time":"yesterday"}"#,
        ] {
            assert!(p(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn positions_accept_numbers_or_names() {
        let Outbound::Positions(ps) = ok(r#"{"type":"positions","items":[
            {"ticket":1,"symbol":"EURUSD","type":0,"volume":0.1,"price_open":1.085,"price_current":1.0855,
             "sl":1.082,"tp":1.09,"profit":5.0,"swap":-0.5,"commission":-0.7,"time":1704103200000,"comment":"RSI_Strategy"},
            {"ticket":2,"symbol":"GBPUSD","type":"POSITION_TYPE_SELL","volume":0.2,"price_open":1.27,"price_current":1.269,
             "time":"2024-01-01T10:00:00+02:00"},
            {"ticket":3,"symbol":"XAUUSD","type":"Buy","volume":0.01,"price_open":2300,"price_current":2301,"time":1704103200}
        ]}"#) else {
            panic!()
        };
        let kinds: Vec<_> = ps.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds, ["buy", "sell", "buy"]);
        assert_eq!(ps[0].time, "2024-01-01T10:00:00.000Z");
        assert_eq!(ps[1].time, "2024-01-01T08:00:00.000Z");
        assert_eq!((ps[1].sl, ps[1].comment.as_str()), (0.0, ""));
        assert!(p(br#"{"type":"positions","items":[{"ticket":1,"symbol":"EURUSD","type":7,"volume":0.1,"price_open":1,"price_current":1,"time":0}]}"#).is_err());
    }

    #[test]
    fn orders_map_mt5_enums() {
        let Outbound::Orders(os) = ok(r#"{"type":"orders","items":[
            {"ticket":9,"symbol":"GBPUSD","type":2,"volume":0.05,"price_open":1.27,"sl":1.265,"tp":1.28,
             "time_setup":1704106800000,"state":1,"comment":"Manual order"},
            {"ticket":10,"symbol":"EURUSD","type":"ORDER_TYPE_SELL_STOP","volume":0.05,"price_open":1.08,
             "time_setup":1704106800000,"state":"ORDER_STATE_PLACED"},
            {"ticket":11,"symbol":"EURUSD","type":"buy_stop","volume":0.05,"price_open":1.09,"time_setup":1704106800000}
        ]}"#) else {
            panic!()
        };
        let got: Vec<_> = os
            .iter()
            .map(|o| (o.kind.as_str(), o.state.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("buy_limit", "pending"),
                ("sell_stop", "pending"),
                ("buy_stop", "pending")
            ]
        );
        assert_eq!(os[0].time_setup, "2024-01-01T11:00:00.000Z");
    }

    #[test]
    fn account_log_signal_and_error() {
        let Outbound::Account(a) = ok(
            r#"{"type":"account","balance":10000,"equity":10250.5,"margin":500,"margin_free":9750.5,"margin_level":2050.1,"profit":250.5,"currency":"EUR"}"#,
        ) else {
            panic!()
        };
        assert_eq!((a.free_margin, a.currency.as_str()), (9750.5, "EUR"));

        let Outbound::Log(l) = ok(
            r#"{"type":"log","level":"warn","message":"Requote","module":"order_executor","extra":{"symbol":"EURUSD"},"time":1704110400000}"#,
        ) else {
            panic!()
        };
        assert_eq!(l.level, "WARNING");
        assert_eq!(l.extra["symbol"], "EURUSD");
        assert_eq!(l.timestamp, "2024-01-01T12:00:00.000Z");

        let Outbound::Signal(s) = ok(
            r#"{"type":"signal","uuid":"signal_1","symbol":"EURUSD","side":"BUY","volume":0.01,"tp":50,"sl":30,
            "source":"RSI_Strategy","confidence":0.85,"time":1704110400000,"validators":[
            {"name":"AI_Validator","type":"ai","approved":true,"confidence":0.9,"reason":"ok","time":1704110401000},
            {"name":"Risk","type":"risk","approved":false,"confidence":0.4,"reason":"exposure"}]}"#,
        ) else {
            panic!()
        };
        assert_eq!((s.side.as_str(), s.status.as_str()), ("buy", "rejected"));
        assert_eq!(s.validators[0].timestamp, "2024-01-01T12:00:01.000Z");
        assert_eq!(s.validators[1].timestamp, s.timestamp);

        let Outbound::Error(e) = ok(
            r#"{"type":"error","error":"Failed to place order","details":"Insufficient margin","code":10019}"#,
        ) else {
            panic!()
        };
        assert_eq!(e.level, "ERROR");
        assert_eq!(e.extra["code"], "INSUFFICIENT_MARGIN");
        assert_eq!(e.message, "Failed to place order: Insufficient margin");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "not json",
            "{}",
            "[]",
            r#"{"type":"nope"}"#,
            r#"{"type":"positions","items":{}}"#,
            r#"{"type":"account","balance":1}"#,
            "{\"type\":\"quote\",\"symbol\":\"\u{0}\"",
        ] {
            assert!(p(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(
            ok(r#"{"type":"heartbeat"}"#),
            Outbound::Heartbeat { gmt_offset_s: None }
        );
        let Outbound::Hello(h) =
            ok(r#"{"type":"hello","account":"live-1","login":123,"server":"X"}"#)
        else {
            panic!()
        };
        assert_eq!(h.account.as_deref(), Some("live-1"));
    }

    /// Lines exactly as `mql5/MT5Bridge.mq5` and `MT5BridgeOutbox.mqh` write
    /// them (EnumToString names, DoubleToString numbers, no log time).
    #[test]
    fn lines_as_the_ea_writes_them() {
        let lines = [
            r#"{"type":"hello","account":"","login":5012345,"server":"MetaQuotes-Demo","company":"MetaQuotes Ltd.","version":"1.0"}"#,
            r#"{"type":"quote","symbol":"EURUSD","bid":1.08512,"ask":1.08524,"point":0.00001,"digits":5,"time":1717171717123}"#,
            r#"{"type":"positions","items":[{"ticket":123456789,"symbol":"EURUSD","type":"POSITION_TYPE_BUY","volume":0.10,"price_open":1.08500,"price_current":1.08550,"sl":1.08200,"tp":1.09000,"profit":5.00,"swap":-0.50,"commission":-0.70,"time":1717171000123,"comment":"RSI_Strategy"}]}"#,
            r#"{"type":"positions","items":[]}"#,
            r#"{"type":"orders","items":[{"ticket":987654321,"symbol":"GBPUSD","type":"ORDER_TYPE_BUY_LIMIT","volume":0.05,"price_open":1.27000,"sl":1.26500,"tp":1.28000,"time_setup":1717170000456,"state":"ORDER_STATE_PLACED","comment":"Manual order"}]}"#,
            r#"{"type":"account","balance":10000.00,"equity":10250.50,"margin":500.00,"free_margin":9750.50,"margin_level":2050.10,"profit":250.50,"currency":"USD"}"#,
            r#"{"type":"log","level":"INFO","message":"Deal #1 EURUSD BUY 0.10 at 1.08524","module":"mt5_communication","extra":{"deal":1,"order":2,"position":3,"symbol":"EURUSD"}}"#,
            r#"{"type":"error","error":"Failed to place order","details":"EURUSD BUY 1.00: No money","code":"INSUFFICIENT_MARGIN"}"#,
            r#"{"type":"signal","uuid":"signal_1717171717123","symbol":"EURUSD","side":"buy","volume":0.01,"tp":50.0,"sl":30.0,"source":"RSI_Strategy","confidence":0.85,"validators":[]}"#,
            r#"{"type":"heartbeat"}"#,
        ];
        for line in lines {
            ok(line);
        }
        let Outbound::Orders(o) = ok(lines[4]) else {
            panic!()
        };
        assert_eq!(
            (o[0].kind.as_str(), o[0].state.as_str()),
            ("buy_limit", "pending")
        );
        let Outbound::Signal(s) = ok(lines[8]) else {
            panic!()
        };
        assert_eq!(s.status, "pending");
        let Outbound::Hello(h) = ok(lines[0]) else {
            panic!()
        };
        assert_eq!(h.account.as_deref(), Some(""));
    }
}
