//! What a trading system says while it runs: log lines and trading
//! signals with their validators.
//!
//! Messages quote the simulated market's current prices and the book's
//! tickets, so a dashboard's logs panel reads like one coherent system and
//! not like random text.

use super::market::Market;
use super::trading::{lots, Book, Event, STRATEGIES};
use protocol::payload::{LogEntry, Signal, Validator};
use protocol::time::{now_epoch_ms, rfc3339};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use serde_json::{json, Map, Value};

pub(crate) fn log_entry(event: Event) -> LogEntry {
    LogEntry {
        timestamp: protocol::time::now_rfc3339(),
        level: event.level.to_owned(),
        message: event.message,
        module: event.module.to_owned(),
        extra: match event.extra {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        seq: None,
    }
}

/// One routine log line: mostly INFO and DEBUG, some WARNING, a few ERROR.
pub(crate) fn random_event(market: &Market, book: &Book, rng: &mut StdRng) -> Event {
    let ins = market.get(market.random_index(rng));
    let symbol = ins.spec.name;
    let roll: f64 = rng.random();
    if roll < 0.30 {
        if rng.random_bool(0.5) {
            Event {
                level: "DEBUG",
                module: "market_data",
                message: format!(
                    "Tick received: {symbol} bid={} ask={}",
                    ins.bid(),
                    ins.ask()
                ),
                extra: json!({"symbol": symbol, "bid": ins.bid(), "ask": ins.ask()}),
            }
        } else {
            let value = (rng.random_range(15.0..85.0_f64) * 10.0).round() / 10.0;
            let tf = *["M5", "M15", "H1", "H4"].choose(rng).unwrap_or(&"M15");
            Event {
                level: "DEBUG",
                module: "strategy_engine",
                message: format!("RSI(14) on {symbol} {tf} = {value}"),
                extra: json!({"symbol": symbol, "indicator": "RSI", "period": 14, "timeframe": tf, "value": value}),
            }
        }
    } else if roll < 0.80 {
        match rng.random_range(0..4) {
            0 => {
                let ping = rng.random_range(8..60);
                Event {
                    level: "INFO",
                    module: "mt5_communication",
                    message: format!("Heartbeat OK, trade server ping {ping} ms"),
                    extra: json!({"ping_ms": ping, "server": "MetaQuotes-Demo"}),
                }
            }
            1 => {
                let a = book.account(market);
                Event {
                    level: "INFO",
                    module: "account_monitor",
                    message: format!(
                        "Equity {:.2} USD, margin level {:.1}%",
                        a.equity, a.margin_level
                    ),
                    extra: json!({"equity": a.equity, "margin_level": a.margin_level, "open_positions": book.positions.len()}),
                }
            }
            2 => match book.positions.choose(rng) {
                Some(p) => Event {
                    level: "INFO",
                    module: "risk_manager",
                    message: format!(
                        "Position #{} {} {} floating {:.2} USD, SL {} TP {}",
                        p.ticket,
                        p.symbol,
                        p.kind.to_uppercase(),
                        p.profit,
                        p.sl,
                        p.tp
                    ),
                    extra: json!({"ticket": p.ticket, "symbol": p.symbol, "profit": p.profit}),
                },
                None => no_entry(symbol, rng),
            },
            _ => no_entry(symbol, rng),
        }
    } else if roll < 0.95 {
        match rng.random_range(0..3) {
            0 => {
                let limit = ins.spec.spread * 3;
                let spread = limit + rng.random_range(1..=limit.max(1));
                Event {
                    level: "WARNING",
                    module: "risk_manager",
                    message: format!(
                        "Spread on {symbol} widened to {spread} points (limit {limit}), entries paused"
                    ),
                    extra: json!({"symbol": symbol, "spread": spread, "limit": limit}),
                }
            }
            1 => {
                let latency = rng.random_range(400..1500);
                Event {
                    level: "WARNING",
                    module: "mt5_communication",
                    message: format!("Slow response from trade server: {latency} ms"),
                    extra: json!({"latency_ms": latency, "threshold_ms": 300}),
                }
            }
            _ => {
                let attempt = rng.random_range(1..=3);
                Event {
                    level: "WARNING",
                    module: "order_executor",
                    message: format!("Requote on {symbol}, retrying (attempt {attempt}/3)"),
                    extra: json!({"symbol": symbol, "attempt": attempt, "retcode": 10004}),
                }
            }
        }
    } else if rng.random_bool(0.5) {
        let volume = lots(ins, rng);
        Event {
            level: "ERROR",
            module: "order_executor",
            message: format!(
                "Order send failed: {symbol} BUY {volume:.2}, retcode 10019 (not enough money)"
            ),
            extra: json!({"symbol": symbol, "volume": volume, "retcode": 10019, "code": "INSUFFICIENT_MARGIN"}),
        }
    } else {
        Event {
            level: "ERROR",
            module: "mt5_communication",
            message: "Connection to trade server lost, reconnecting".to_owned(),
            extra: json!({"server": "MetaQuotes-Demo", "attempt": rng.random_range(1..4)}),
        }
    }
}

fn no_entry(symbol: &str, rng: &mut StdRng) -> Event {
    let strategy = *STRATEGIES.choose(rng).unwrap_or(&"RSI_Strategy");
    Event {
        level: "INFO",
        module: "strategy_engine",
        message: format!("{strategy}: no entry on {symbol}, conditions not met"),
        extra: json!({"symbol": symbol, "strategy": strategy}),
    }
}

const AI_YES: &[&str] = &[
    "Strong bullish pattern detected",
    "Momentum and volume confirm the move",
    "Pattern matches high-probability setups",
];
const AI_NO: &[&str] = &[
    "Pattern confidence below threshold",
    "Conflicting signals across timeframes",
    "Low liquidity expected, setup unreliable",
];
const STRATEGY_YES: &[&str] = &[
    "RSI oversold + trend confirmation",
    "MACD crossover above signal line",
    "Breakout of H1 range confirmed",
];
const STRATEGY_NO: &[&str] = &["Trend filter disagrees", "Price inside consolidation range"];
const RISK_YES: &[&str] = &["Exposure within limits", "Risk per trade 1.0% of equity"];
const RISK_NO: &[&str] = &[
    "Max exposure on symbol reached",
    "Daily loss limit close",
    "Correlated position already open",
];

/// A signal from one of the strategies, checked by one to three validators;
/// it is approved only when all of them approve.
pub(crate) fn signal(market: &Market, rng: &mut StdRng, counter: u64) -> Signal {
    let ins = market.get(market.random_index(rng));
    let source = *STRATEGIES.choose(rng).unwrap_or(&"RSI_Strategy");
    let confidence = round2(rng.random_range(0.55..0.95));
    let now = now_epoch_ms();
    let mut kinds = ["ai", "strategy", "risk"];
    kinds.shuffle(rng);
    let count = rng.random_range(1..=3);
    let validators: Vec<Validator> = kinds[..count]
        .iter()
        .map(|&kind| {
            let (name, p_yes, yes, no) = match kind {
                "ai" => ("AI_Validator", confidence, AI_YES, AI_NO),
                "strategy" => (source, 0.85, STRATEGY_YES, STRATEGY_NO),
                _ => ("Risk_Manager", 0.8, RISK_YES, RISK_NO),
            };
            let approved = rng.random_bool(p_yes);
            let reasons = if approved { yes } else { no };
            Validator {
                name: name.to_owned(),
                kind: kind.to_owned(),
                approved,
                confidence: round2(rng.random_range(0.5..0.99)),
                reason: reasons.choose(rng).copied().unwrap_or("").to_owned(),
                timestamp: ms_to_rfc3339(now + rng.random_range(50..1500)),
            }
        })
        .collect();
    let status = if validators.iter().all(|v| v.approved) {
        "approved"
    } else {
        "rejected"
    };
    Signal {
        // Epoch ms plus a counter: unique within a run and across restarts,
        // and shaped like the spec's `signal_1234567890`.
        uuid: format!("signal_{now}{:03}", counter % 1000),
        symbol: ins.spec.name.to_owned(),
        side: if rng.random_bool(0.5) { "buy" } else { "sell" }.to_owned(),
        volume: lots(ins, rng),
        tp: rng.random_range(4..=30) as f64 * 5.0,
        sl: rng.random_range(2..=16) as f64 * 5.0,
        source: source.to_owned(),
        confidence,
        timestamp: ms_to_rfc3339(now),
        validators,
        status: status.to_owned(),
        seq: None,
    }
}

pub(crate) fn signal_event(s: &Signal) -> Event {
    let approvals = s.validators.iter().filter(|v| v.approved).count();
    Event {
        level: if s.status == "approved" {
            "INFO"
        } else {
            "WARNING"
        },
        module: "signal_validator",
        message: format!(
            "Signal {} {} {} {} ({approvals}/{} validators)",
            s.uuid,
            s.symbol,
            s.side.to_uppercase(),
            s.status,
            s.validators.len()
        ),
        extra: json!({"uuid": s.uuid, "symbol": s.symbol, "source": s.source, "status": s.status}),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(rfc3339)
        .unwrap_or_else(protocol::time::now_rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::HashSet;

    #[test]
    fn signals_are_consistent_and_unique() {
        let mut rng = StdRng::seed_from_u64(11);
        let market = Market::new(12, 50.0, &mut rng);
        let mut uuids = HashSet::new();
        let mut statuses = HashSet::new();
        for n in 0..500 {
            let s = signal(&market, &mut rng, n);
            assert!((1..=3).contains(&s.validators.len()));
            let all = s.validators.iter().all(|v| v.approved);
            assert_eq!(s.status, if all { "approved" } else { "rejected" });
            let kinds: HashSet<_> = s.validators.iter().map(|v| v.kind.as_str()).collect();
            assert_eq!(kinds.len(), s.validators.len());
            assert!(uuids.insert(s.uuid.clone()), "duplicate {}", s.uuid);
            statuses.insert(s.status);
            assert!(s.tp > 0.0 && s.sl > 0.0 && (0.0..=1.0).contains(&s.confidence));
        }
        assert_eq!(statuses.len(), 2);
    }

    #[test]
    fn logs_cover_every_level() {
        let mut rng = StdRng::seed_from_u64(2);
        let market = Market::new(12, 50.0, &mut rng);
        let book = Book::new(&market, &mut rng);
        let levels: HashSet<_> = (0..500)
            .map(|_| log_entry(random_event(&market, &book, &mut rng)).level)
            .collect();
        for l in ["DEBUG", "INFO", "WARNING", "ERROR"] {
            assert!(levels.contains(l), "{l} missing");
        }
    }
}
