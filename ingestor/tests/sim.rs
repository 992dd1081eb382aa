//! The simulator as the gateway's standalone mode uses it: in-process, on a
//! memory bus. Checks that every kind flows and that payloads have exactly
//! the spec's fields with the spec's types.

use bus::{Bus, BusMessage, MemoryBus};
use futures::StreamExt;
use ingestor::sim::{self, SimConfig};
use ingestor::Publisher;
use protocol::payload::{Account, LogEntry, Order, Position, Quote, Signal};
use protocol::SubjectScheme;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

async fn run_for(cfg: SimConfig, how_long: Duration) -> Vec<BusMessage> {
    let mem = MemoryBus::new();
    let mut sub = mem.subscribe("mt5.>");
    let publisher = Publisher::new(
        Bus::Memory(mem),
        SubjectScheme::default(),
        "demo".parse().unwrap(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(sim::run(publisher, cfg, stop.clone()));
    let deadline = Instant::now() + how_long;
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        sub.next(),
    )
    .await
    {
        got.push(m);
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    got
}

#[tokio::test]
async fn every_kind_flows_with_the_spec_fields() {
    let cfg = SimConfig {
        quotes_per_sec: 500.0,
        positions_interval: Duration::from_millis(200),
        orders_interval: Duration::from_millis(300),
        account_interval: Duration::from_millis(200),
        logs_per_sec: 20.0,
        signals_per_sec: 10.0,
        seed: Some(1),
        ..SimConfig::default()
    };
    let got = run_for(cfg, Duration::from_millis(1500)).await;
    let mut by_kind: HashMap<&str, Vec<Value>> = HashMap::new();
    for m in &got {
        let kind = match m.subject.split('.').nth(2) {
            Some(k) => k,
            None => panic!("bad subject {}", m.subject),
        };
        assert!(m.subject.starts_with("mt5.demo."), "{}", m.subject);
        assert!(m.headers.msg_id.is_some() && m.headers.traceparent.is_some());
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        by_kind.entry(kind).or_default().push(v);
    }

    let quotes = &by_kind["quotes"];
    // 12 initial quotes, then ~500/s for 1.5 s.
    assert!(
        (450..=900).contains(&quotes.len()),
        "{} quotes",
        quotes.len()
    );
    let symbols: BTreeSet<_> = quotes
        .iter()
        .map(|q| q["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(symbols.len(), 12, "{symbols:?}");
    for q in quotes {
        assert_eq!(
            keys(q),
            set(&["symbol", "bid", "ask", "spread", "timestamp"])
        );
        assert!(
            q["bid"].is_f64() && q["ask"].is_f64() && q["spread"].is_i64(),
            "{q}"
        );
        assert!(is_rfc3339_utc(&q["timestamp"]));
        let q: Quote = serde_json::from_value(q.clone()).unwrap();
        assert!(q.ask > q.bid && q.spread > 0);
    }

    let position_fields = set(&[
        "ticket",
        "symbol",
        "type",
        "volume",
        "price_open",
        "price_current",
        "sl",
        "tp",
        "profit",
        "swap",
        "commission",
        "time",
        "comment",
    ]);
    let snapshots = &by_kind["positions"];
    assert!(
        snapshots.len() >= 6,
        "{} positions snapshots",
        snapshots.len()
    );
    for snap in snapshots {
        let list = snap.as_array().expect("positions are an array");
        assert!((3..=6).contains(&list.len()));
        for p in list {
            assert_eq!(keys(p), position_fields);
            assert!(p["ticket"].is_u64() && is_rfc3339_utc(&p["time"]));
            assert!(["buy", "sell"].contains(&p["type"].as_str().unwrap()));
        }
        let _: Vec<Position> = serde_json::from_value(snap.clone()).unwrap();
    }

    let order_fields = set(&[
        "ticket",
        "symbol",
        "type",
        "volume",
        "price_open",
        "sl",
        "tp",
        "time_setup",
        "state",
        "comment",
    ]);
    for snap in &by_kind["orders"] {
        for o in snap.as_array().expect("orders are an array") {
            assert_eq!(keys(o), order_fields);
            assert_eq!(o["state"], "pending");
            assert!(is_rfc3339_utc(&o["time_setup"]));
        }
        let _: Vec<Order> = serde_json::from_value(snap.clone()).unwrap();
    }

    for a in &by_kind["account"] {
        assert_eq!(
            keys(a),
            set(&[
                "balance",
                "equity",
                "margin",
                "free_margin",
                "margin_level",
                "profit",
                "currency"
            ])
        );
        let a: Account = serde_json::from_value(a.clone()).unwrap();
        assert!((a.free_margin - (a.equity - a.margin)).abs() < 0.011);
        assert_eq!(a.currency, "USD");
    }

    for l in &by_kind["logs"] {
        assert_eq!(
            keys(l),
            set(&["timestamp", "level", "message", "module", "extra"])
        );
        assert!(l["extra"].is_object() && is_rfc3339_utc(&l["timestamp"]));
        let _: LogEntry = serde_json::from_value(l.clone()).unwrap();
    }

    let signals = &by_kind["signals"];
    assert!(signals.len() >= 10, "{} signals", signals.len());
    for s in signals {
        assert_eq!(
            keys(s),
            set(&[
                "uuid",
                "symbol",
                "side",
                "volume",
                "tp",
                "sl",
                "source",
                "confidence",
                "timestamp",
                "validators",
                "status"
            ])
        );
        for v in s["validators"].as_array().unwrap() {
            assert_eq!(
                keys(v),
                set(&[
                    "name",
                    "type",
                    "approved",
                    "confidence",
                    "reason",
                    "timestamp"
                ])
            );
        }
        let _: Signal = serde_json::from_value(s.clone()).unwrap();
    }
}

#[tokio::test]
async fn first_values_are_immediate_and_zero_rates_switch_kinds_off() {
    let cfg = SimConfig {
        quotes_per_sec: 0.0,
        logs_per_sec: 0.0,
        signals_per_sec: 0.0,
        orders_interval: Duration::ZERO,
        positions_interval: Duration::from_secs(60),
        account_interval: Duration::from_secs(60),
        ..SimConfig::default()
    };
    let got = run_for(cfg, Duration::from_millis(300)).await;
    let subjects: Vec<_> = got.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["mt5.demo.positions", "mt5.demo.account"]);
}

#[tokio::test]
async fn high_rates_are_met() {
    let cfg = SimConfig {
        quotes_per_sec: 5000.0,
        seed: Some(3),
        ..SimConfig::default()
    };
    let got = run_for(cfg, Duration::from_millis(1000)).await;
    let quotes = got
        .iter()
        .filter(|m| m.subject.contains(".quotes."))
        .count();
    // Loose lower bound: CI machines are shared; the pacer catches up on
    // short stalls but a long one is dropped by design.
    assert!((3000..=5600).contains(&quotes), "{quotes} quotes in 1 s");
}

#[tokio::test]
async fn bad_config_is_refused() {
    for cfg in [
        SimConfig {
            symbols: 0,
            ..SimConfig::default()
        },
        SimConfig {
            quotes_per_sec: f64::NAN,
            ..SimConfig::default()
        },
        SimConfig {
            account: "a.b".into(),
            ..SimConfig::default()
        },
    ] {
        let publisher = Publisher::new(
            Bus::Memory(MemoryBus::new()),
            SubjectScheme::default(),
            "demo".parse().unwrap(),
        );
        assert!(sim::run(publisher, cfg, CancellationToken::new())
            .await
            .is_err());
    }
}
