//! A trivial Socket.IO fan-out server, to measure the load generator's own
//! ceiling on this machine (`loadgen ceiling-server`).
//!
//! It does the least a server can do for the same workload: accept the
//! WebSocket transport only, accept any token, answer `subscribe`, and for
//! every NATS quote build `42["quotes",<payload>]` once and hand the same
//! bytes to every subscriber's bounded queue (a full queue drops the quote),
//! drained by one task per client that flushes once per burst. No rooms per
//! account, no conflation, no auth, no metrics. When the load generator
//! measures this server at a given load and gets full delivery, the load
//! generator is not what limits the other measurements at that load.

use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

const QUEUE: usize = 1024;

type Subscribers = Arc<Mutex<Vec<mpsc::Sender<Utf8Bytes>>>>;

pub async fn serve(addr: SocketAddr, nats_url: &str, prefix: &str) -> Result<(), String> {
    let nats = async_nats::connect(nats_url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {nats_url}: {e}"))?;
    let mut quotes = nats
        .subscribe(format!("{prefix}.*.quotes.>"))
        .await
        .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(addr).await.map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("{}", serde_json::json!({ "listening": local.to_string() }));

    let subscribers: Subscribers = Arc::default();
    let dropped = Arc::new(AtomicU64::new(0));
    let fan_out = {
        let subscribers = subscribers.clone();
        let dropped = dropped.clone();
        tokio::spawn(async move {
            while let Some(msg) = quotes.next().await {
                let Ok(payload) = std::str::from_utf8(&msg.payload) else {
                    continue;
                };
                let frame = Utf8Bytes::from(format!("42[\"quotes\",{payload}]"));
                let mut subs = subscribers.lock().unwrap_or_else(|p| p.into_inner());
                subs.retain(|tx| match tx.try_send(frame.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropped.fetch_add(1, Relaxed);
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
            }
        })
    };
    let mut next_sid = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                next_sid += 1;
                tokio::spawn(connection(stream, next_sid, subscribers.clone()));
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    fan_out.abort();
    eprintln!(
        "ceiling server: {} quotes dropped on full queues",
        dropped.load(Relaxed)
    );
    Ok(())
}

async fn connection(stream: TcpStream, sid: u64, subscribers: Subscribers) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let open = format!(
        r#"0{{"sid":"c{sid}","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}"#
    );
    if ws.send(Message::text(open)).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(QUEUE);
    let mut tx = Some(tx);
    let mut ping = tokio::time::interval(std::time::Duration::from_secs(25));
    ping.tick().await;
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { return };
                if ws.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
                while let Ok(frame) = rx.try_recv() {
                    if ws.feed(Message::Text(frame)).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { return };
                let Message::Text(text) = msg else { continue };
                let replies = match text.as_str() {
                    t if t.starts_with("40") => vec![
                        format!(r#"40{{"sid":"n{sid}"}}"#),
                        r#"42["connected",{"message":"ceiling"}]"#.to_owned(),
                    ],
                    t if t.starts_with("42[\"subscribe\"") => {
                        if let Some(tx) = tx.take() {
                            subscribers.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
                        }
                        vec![r#"42["subscribed",{"channels":["quotes"]}]"#.to_owned()]
                    }
                    _ => Vec::new(),
                };
                for reply in replies {
                    if ws.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
            }
            _ = ping.tick() => {
                if ws.send(Message::text("2")).await.is_err() {
                    return;
                }
            }
        }
    }
}
