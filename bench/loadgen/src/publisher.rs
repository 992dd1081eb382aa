//! The quote publisher: plain NATS publishes on
//! `<prefix>.<account>.quotes.<SYMBOL>` at a steady total rate, symbols in
//! turn, each payload stamped with its send time and counters (see
//! [`eio::quote_payload`]). It runs on its own thread and runtime so that
//! thousands of busy client tasks cannot delay its ticks.
//!
//! A core publish reaches both servers: the Node peer subscribes to the
//! subject, and our gateway reads the `<PREFIX>_STATE` JetStream stream,
//! which captures every `*.quotes.*` subject.

use crate::eio::{self, Stamp};
use crate::stats::{now_us, Shared};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Twenty symbols with plausible prices; more are named `SYMnn`.
const SYMBOLS: [(&str, f64); 20] = [
    ("EURUSD", 1.08412),
    ("GBPUSD", 1.26530),
    ("USDJPY", 151.231),
    ("USDCHF", 0.90120),
    ("AUDUSD", 0.65810),
    ("USDCAD", 1.36020),
    ("NZDUSD", 0.60110),
    ("EURGBP", 0.85690),
    ("EURJPY", 163.950),
    ("GBPJPY", 191.340),
    ("XAUUSD", 2341.50),
    ("XAGUSD", 27.4150),
    ("US500", 5204.30),
    ("NAS100", 18123.4),
    ("GER40", 18390.2),
    ("UK100", 8020.10),
    ("BTCUSD", 67012.5),
    ("ETHUSD", 3480.20),
    ("EURCHF", 0.97610),
    ("AUDJPY", 99.5210),
];

pub struct Plan {
    pub nats_url: String,
    pub prefix: String,
    pub account: String,
    /// Quotes per second, all symbols together.
    pub rate: f64,
    pub symbols: usize,
    /// Publishing stops here (the end of the measured window).
    pub until: Instant,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Published {
    pub total: u64,
    pub in_window: u64,
    pub errors: u64,
}

pub fn symbol(i: usize) -> (String, f64) {
    match SYMBOLS.get(i) {
        Some((name, price)) => ((*name).to_owned(), *price),
        None => (format!("SYM{i:02}"), 100.0 + i as f64),
    }
}

/// Connects to NATS (so a bad URL fails before the run) and returns a
/// thread that publishes per `plan` and reports what it sent.
pub async fn start(
    plan: Plan,
    shared: Arc<Shared>,
) -> Result<std::thread::JoinHandle<Published>, String> {
    let client = async_nats::connect(&plan.nats_url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", plan.nats_url))?;
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime");
            rt.block_on(publish(client, plan, shared))
        })
        .map_err(|e| e.to_string())
}

async fn publish(client: async_nats::Client, plan: Plan, shared: Arc<Shared>) -> Published {
    let count = plan.symbols.max(1);
    let symbols: Vec<(String, f64, String)> = (0..count)
        .map(|i| {
            let (name, price) = symbol(i);
            let subject = format!("{}.{}.quotes.{name}", plan.prefix, plan.account);
            (name, price, subject)
        })
        .collect();
    let mut per_symbol = vec![0u64; count];
    let mut done = Published::default();
    let period = Duration::from_secs_f64(1.0 / plan.rate.max(0.001));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut global = 0u64;
    loop {
        ticks.tick().await;
        if Instant::now() >= plan.until {
            break;
        }
        let i = (global % count as u64) as usize;
        per_symbol[i] += 1;
        let n = per_symbol[i];
        let (name, price, subject) = &symbols[i];
        // A small deterministic walk around the base price.
        let bid = price * (1.0 + ((n % 200) as f64 - 100.0) * 0.00002);
        let sent_us = now_us();
        let timestamp = timestamp_ms(sent_us);
        let stamp = Stamp {
            sent_us,
            global,
            symbol: i,
            n,
        };
        let payload = eio::quote_payload(&stamp, name, bid, &timestamp);
        global += 1;
        match client.publish(subject.clone(), payload.into()).await {
            Ok(()) => {
                done.total += 1;
                if shared.in_window(sent_us) {
                    done.in_window += 1;
                }
            }
            Err(_) => done.errors += 1,
        }
    }
    let _ = client.flush().await;
    done
}

/// RFC 3339 UTC with milliseconds, as the contract's quotes carry.
fn timestamp_ms(micros: u64) -> String {
    let at = chrono::DateTime::from_timestamp_micros(micros as i64).unwrap_or_default();
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_milliseconds() {
        assert_eq!(
            timestamp_ms(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(symbol(0).0, "EURUSD");
        assert_eq!(symbol(25).0, "SYM25");
    }
}
