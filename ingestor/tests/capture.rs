//! Raw capture and replay: what terminals sent goes through the bridge's
//! conversion again. `data/utc2-dst.raw.ndjson` is a hand-made capture of
//! a UTC+2 trade server moving to UTC+3 (US DST, 2025-03-09 07:00 UTC),
//! with field lists as the MQL5 reference gives them (`MqlTick`,
//! `POSITION_*`, `ORDER_*`, `ACCOUNT_*`).

use bus::{Bus, BusMessage, MemoryBus, Subscription};
use futures::StreamExt;
use ingestor::bridge::keys::Keys;
use ingestor::bridge::{self, BridgeConfig};
use ingestor::replay::{self, ReplayOptions};
use ingestor::{Metrics, Publisher};
use protocol::SubjectScheme;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn capture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/utc2-dst.raw.ndjson")
}

/// Everything published until the bus stays quiet for 300 ms.
async fn drain(sub: &mut Subscription) -> Vec<BusMessage> {
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        out.push(m);
    }
    out
}

fn json(m: &BusMessage) -> Value {
    serde_json::from_slice(&m.payload).unwrap()
}

async fn replay_file(
    file: PathBuf,
    account: Option<String>,
) -> (Vec<BusMessage>, replay::ReplaySummary) {
    let mem = MemoryBus::new();
    let mut sub = mem.subscribe("mt5.>");
    let publisher = Publisher::new(
        Bus::Memory(mem),
        SubjectScheme::default(),
        "demo".parse().unwrap(),
    );
    let opts = ReplayOptions {
        file,
        speed: 0.0,
        looping: false,
        retime: false,
        account,
    };
    let summary = replay::run(publisher, opts, CancellationToken::new())
        .await
        .unwrap();
    (drain(&mut sub).await, summary)
}

#[tokio::test]
async fn the_shipped_capture_replays_in_true_utc_across_dst() {
    let (got, summary) = replay_file(capture(), None).await;
    // The forged quote inside an outbox line is the one line skipped.
    assert_eq!(summary.skipped, 1, "{summary:?}");
    let on = |suffix: &str| -> Vec<Value> {
        got.iter()
            .filter(|m| m.subject.starts_with("mt5.live-eu.") && m.subject.ends_with(suffix))
            .map(json)
            .collect()
    };
    let quotes: Vec<String> = on(".quotes.BTCUSD")
        .iter()
        .map(|q| q["timestamp"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        quotes,
        [
            "2025-03-09T06:59:50.120Z",
            "2025-03-09T06:59:58.500Z",
            "2025-03-09T07:00:01.250Z"
        ]
    );
    // Before and after the change, the positions keep their true times.
    let positions = on(".positions");
    assert_eq!(positions.len(), 2);
    for p in &positions {
        assert_eq!(p[0]["time"], "2025-03-07T14:30:00.123Z", "{p}");
        assert_eq!(p[1]["time"], "2025-03-06T09:15:42.500Z", "{p}");
        assert_eq!(
            (p[0]["type"].as_str(), p[1]["type"].as_str()),
            (Some("buy"), Some("sell"))
        );
    }
    assert_eq!(
        on(".orders")[0][0]["time_setup"],
        "2025-03-07T20:00:05.250Z"
    );
    assert_eq!(on(".account")[0]["margin_level"], 1950.71);
    let signals = on(".signals");
    assert_eq!(
        (signals.len(), signals[0]["symbol"].as_str()),
        (1, Some("BTCUSD"))
    );
    let logs = on(".logs");
    assert_eq!(logs.len(), 2);
    // A log without a time is stamped with its arrival, as it was live.
    assert_eq!(logs[0]["timestamp"], "2025-03-09T06:59:50.215Z");
    assert_eq!(logs[1]["extra"]["code"], "INSUFFICIENT_MARGIN");
    assert_eq!(got.len(), 3 + 2 + 1 + 1 + 1 + 2);

    // Re-targeted to another account.
    let (got, _) = replay_file(capture(), Some("copy".into())).await;
    assert!(got.iter().all(|m| m.subject.starts_with("mt5.copy.")));
}

#[tokio::test]
async fn a_live_capture_replays_to_the_same_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let mem = MemoryBus::new();
    let mut sub = mem.subscribe("mt5.>");
    let publisher = Publisher::new(
        Bus::Memory(mem),
        SubjectScheme::default(),
        "demo".parse().unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let key = "capture-key-0123456789abc";
    let mut cfg = BridgeConfig::new(addr, Keys::load(Some(key), None).unwrap());
    cfg.raw_dir = Some(dir.path().to_owned());
    cfg.outlet.state_interval = Duration::ZERO;
    let stop = CancellationToken::new();
    let task = tokio::spawn(bridge::serve(
        publisher,
        listener,
        cfg,
        Metrics::new(),
        stop.clone(),
    ));

    let mut ea = TcpStream::connect(addr).await.unwrap();
    ea.write_all(format!("{{\"type\":\"hello\",\"protocol\":2,\"key\":\"{key}\",\"account\":\"cap\",\"gmt_offset_s\":10800}}\n").as_bytes())
        .await
        .unwrap();
    let mut r = BufReader::new(ea);
    let mut welcome = String::new();
    r.read_line(&mut welcome).await.unwrap();
    // One line at a time, each published before the next, so the state
    // outlet (latest wins) publishes them all.
    let mut live = Vec::new();
    for line in [
        r#"{"type":"quote","symbol":"EURUSD","bid":1.08512,"ask":1.08524,"point":0.00001,"digits":5,"time":1717182517123}"#,
        r#"{"type":"log","level":"WARN","message":"Requote","module":"order_executor"}"#,
        r#"{"type":"orders","items":[{"ticket":9,"symbol":"EURUSD","type":5,"volume":0.05,"price_open":1.08,"time_setup":1717180000456,"state":1}]}"#,
    ] {
        r.get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap();
        live.push(m.expect("bus open"));
    }
    drop(r);
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(drain(&mut sub).await.is_empty(), "all were awaited above");

    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".raw.ndjson"))
        .expect("a raw capture");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(key), "the key was captured");
    assert_eq!(text.lines().count(), 4);
    let (replayed, summary) = replay_file(file, None).await;
    assert_eq!((summary.published, summary.skipped), (3, 0));
    // The same conversion: byte-for-byte the same payloads, log time included.
    let subjects = |v: &[BusMessage]| v.iter().map(|m| m.subject.clone()).collect::<Vec<_>>();
    assert_eq!(subjects(&replayed), subjects(&live));
    for (a, b) in live.iter().zip(&replayed) {
        assert_eq!(a.payload, b.payload, "{}", a.subject);
    }
    assert_eq!(json(&replayed[0])["timestamp"], "2024-05-31T16:08:37.123Z");
    assert_eq!(json(&replayed[2])[0]["type"], "sell_stop");
}
