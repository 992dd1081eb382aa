//! The bridge end to end: a TCP client speaking like the MQL5 EA, the
//! bridge publishing to a memory bus. Garbage and an over-long line must be
//! skipped without losing the connection.

use bus::{Bus, BusMessage, MemoryBus, Subscription};
use futures::StreamExt;
use ingestor::{bridge, Publisher};
use protocol::payload::{LogEntry, Order, Position, Quote};
use protocol::SubjectScheme;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

async fn next(sub: &mut Subscription) -> BusMessage {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a message within 5 s")
        .expect("bus open")
}

async fn start() -> (
    Subscription,
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let mem = MemoryBus::new();
    let sub = mem.subscribe("mt5.>");
    let publisher = Publisher::new(Bus::Memory(mem), SubjectScheme::default(), "demo");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { bridge::serve(publisher, listener, stop).await.unwrap() }
    });
    (sub, addr, stop, task)
}

#[tokio::test]
async fn ea_lines_become_spec_payloads() {
    let (mut sub, addr, stop, task) = start().await;
    let mut ea = TcpStream::connect(addr).await.unwrap();

    ea.write_all(b"{\"type\":\"quote\",\"symbol\":\"EURUSD\",\"bid\":1.085,\"ask\":1.0852,\"point\":0.00001,\"digits\":5,\"time\":1704110400000}\n")
        .await
        .unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.subject, "mt5.demo.quotes.EURUSD");
    let q: Quote = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(
        (q.spread, q.timestamp.as_str()),
        (20, "2024-01-01T12:00:00.000Z")
    );
    assert!(m.headers.msg_id.is_some() && m.headers.traceparent.is_some());

    // Garbage, an unknown type, a bad field and a 2 MiB line: all skipped.
    ea.write_all(b"this is not json\n{\"type\":\"launch_rockets\"}\n{\"type\":\"quote\",\"symbol\":\"X\",\"bid\":-1,\"ask\":1,\"digits\":2}\n")
        .await
        .unwrap();
    let long = vec![b'x'; 2 * 1024 * 1024];
    ea.write_all(&long).await.unwrap();
    ea.write_all(b"\n\r\n").await.unwrap();

    // The same connection still works.
    ea.write_all(br#"{"type":"positions","items":[{"ticket":7,"symbol":"GBPUSD","type":1,"volume":0.1,"price_open":1.27,"price_current":1.269,"sl":1.275,"tp":1.26,"profit":10,"swap":-0.2,"commission":-0.7,"time":1704103200000,"comment":"MACD_Cross"}]}
{"type":"orders","items":[{"ticket":8,"symbol":"EURUSD","type":3,"volume":0.05,"price_open":1.09,"sl":1.095,"tp":1.08,"time_setup":1704106800000,"state":1,"comment":"Manual order"}]}
{"type":"account","balance":10000,"equity":10010,"margin":270,"free_margin":9740,"margin_level":3707.4,"profit":10,"currency":"USD"}
{"type":"error","error":"Failed to place order","details":"Insufficient margin","code":"INSUFFICIENT_MARGIN"}
"#)
    .await
    .unwrap();

    let m = next(&mut sub).await;
    assert_eq!(m.subject, "mt5.demo.positions");
    let p: Vec<Position> = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!((p[0].kind.as_str(), p[0].ticket), ("sell", 7));
    let m = next(&mut sub).await;
    assert_eq!(m.subject, "mt5.demo.orders");
    let o: Vec<Order> = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(
        (o[0].kind.as_str(), o[0].state.as_str()),
        ("sell_limit", "pending")
    );
    let m = next(&mut sub).await;
    assert_eq!(m.subject, "mt5.demo.account");
    let m = next(&mut sub).await;
    assert_eq!(m.subject, "mt5.demo.logs");
    let l: LogEntry = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(
        (l.level.as_str(), l.extra["code"].as_str()),
        ("ERROR", Some("INSUFFICIENT_MARGIN"))
    );

    // A terminal that names its account publishes under it.
    let mut ea2 = TcpStream::connect(addr).await.unwrap();
    ea2.write_all(b"{\"type\":\"hello\",\"account\":\"live-7\",\"login\":123}\n{\"type\":\"heartbeat\"}\n{\"type\":\"log\",\"level\":\"INFO\",\"message\":\"hi\",\"module\":\"ea\"}\n")
        .await
        .unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.subject, "mt5.live-7.logs");

    // Closing the connection and stopping the server are both clean.
    drop(ea);
    drop(ea2);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("bridge stops")
        .unwrap();
}

#[tokio::test]
async fn shutdown_closes_open_connections() {
    let (_sub, addr, stop, task) = start().await;
    let _ea = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("bridge stops with a client still connected")
        .unwrap();
}

#[tokio::test]
async fn run_reports_a_taken_port() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let publisher = Publisher::new(
        Bus::Memory(MemoryBus::new()),
        SubjectScheme::default(),
        "demo",
    );
    let err = bridge::run(publisher, addr, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
