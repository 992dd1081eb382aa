//! The six data payloads, field for field as the original spec shows them.
//!
//! Timestamps are RFC 3339 UTC strings. Extra fields are allowed by the
//! contract; `seq` on logs and signals is added by the gateway (the bus
//! sequence), so it is optional here.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub symbol: String,
    pub bid: f64,
    pub ask: f64,
    /// In points: `(ask - bid) / point`.
    pub spread: i64,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub ticket: u64,
    pub symbol: String,
    /// `buy` or `sell`.
    #[serde(rename = "type")]
    pub kind: String,
    pub volume: f64,
    pub price_open: f64,
    pub price_current: f64,
    pub sl: f64,
    pub tp: f64,
    pub profit: f64,
    pub swap: f64,
    pub commission: f64,
    pub time: String,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub ticket: u64,
    pub symbol: String,
    /// `buy_limit`, `sell_limit`, `buy_stop`, `sell_stop`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub volume: f64,
    pub price_open: f64,
    pub sl: f64,
    pub tp: f64,
    pub time_setup: String,
    /// `pending`, `placed`, `partial`, …
    pub state: String,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub timestamp: String,
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`.
    pub level: String,
    pub message: String,
    pub module: String,
    pub extra: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validator {
    pub name: String,
    /// `ai`, `strategy`, `risk`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub approved: bool,
    pub confidence: f64,
    pub reason: String,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub uuid: String,
    pub symbol: String,
    pub side: String,
    pub volume: f64,
    /// Take profit distance in pips, as in the spec's example.
    pub tp: f64,
    pub sl: f64,
    pub source: String,
    pub confidence: f64,
    pub timestamp: String,
    pub validators: Vec<Validator>,
    /// `pending`, `approved`, `rejected`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub balance: f64,
    pub equity: f64,
    pub margin: f64,
    pub free_margin: f64,
    pub margin_level: f64,
    pub profit: f64,
    pub currency: String,
}

/// The spec's own examples parse into these types: the field names and
/// types here are the contract.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples_parse() {
        let q: Quote = serde_json::from_str(
            r#"{"symbol":"EURUSD","bid":1.085,"ask":1.0852,"spread":20,"timestamp":"2024-01-01T12:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(q.spread, 20);
        let p: Vec<Position> = serde_json::from_str(
            r#"[{"ticket":123456789,"symbol":"EURUSD","type":"buy","volume":0.10,"price_open":1.08500,
            "price_current":1.08550,"sl":1.08200,"tp":1.09000,"profit":50.00,"swap":-0.50,
            "commission":-2.00,"time":"2024-01-01T10:00:00Z","comment":"RSI_Strategy"}]"#,
        )
        .unwrap();
        assert_eq!(p[0].kind, "buy");
        let o: Vec<Order> = serde_json::from_str(
            r#"[{"ticket":987654321,"symbol":"GBPUSD","type":"buy_limit","volume":0.05,
            "price_open":1.27000,"sl":1.26500,"tp":1.28000,"time_setup":"2024-01-01T11:00:00Z",
            "state":"pending","comment":"Manual order"}]"#,
        )
        .unwrap();
        assert_eq!(o[0].state, "pending");
        let l: LogEntry = serde_json::from_str(
            r#"{"timestamp":"2024-01-01T12:00:00Z","level":"INFO","message":"m",
            "module":"mt5_communication","extra":{"ticket":1,"symbol":"EURUSD"}}"#,
        )
        .unwrap();
        assert_eq!(l.seq, None);
        let s: Signal = serde_json::from_str(
            r#"{"uuid":"signal_1","symbol":"EURUSD","side":"buy","volume":0.01,"tp":50,"sl":30,
            "source":"RSI_Strategy","confidence":0.85,"timestamp":"2024-01-01T12:00:00Z",
            "validators":[{"name":"AI_Validator","type":"ai","approved":true,"confidence":0.92,
            "reason":"r","timestamp":"2024-01-01T12:00:01Z"}],"status":"approved"}"#,
        )
        .unwrap();
        assert!(s.validators[0].approved);
        let a: Account = serde_json::from_str(
            r#"{"balance":10000.00,"equity":10250.50,"margin":500.00,"free_margin":9750.50,
            "margin_level":2050.10,"profit":250.50,"currency":"USD"}"#,
        )
        .unwrap();
        assert_eq!(a.currency, "USD");
    }

    #[test]
    fn seq_is_left_out_when_absent() {
        let l = LogEntry {
            timestamp: "t".into(),
            level: "INFO".into(),
            message: "m".into(),
            module: "x".into(),
            extra: Default::default(),
            seq: None,
        };
        assert!(!serde_json::to_string(&l).unwrap().contains("seq"));
    }
}
