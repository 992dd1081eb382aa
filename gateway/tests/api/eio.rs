//! Our Engine.IO v4 / Socket.IO v5 path for WebSocket-only clients:
//! handshake, namespace connect with auth, pings, events with acks.

use crate::support::{spawn_app, Eio};
use serde_json::{json, Value};

#[tokio::test]
async fn handshake_connect_event_and_ack() {
    let app = spawn_app(&[]).await;
    let mut eio = Eio::open(&app, "", None).await;
    assert_eq!(eio.open["upgrades"], json!([]));
    assert_eq!(eio.open["pingInterval"], 25_000);
    assert_eq!(eio.open["pingTimeout"], 20_000);
    let sid = eio.open["sid"].as_str().expect("sid").to_owned();

    let auth = json!({"token": app.token("alice")});
    eio.ws.send_text(&format!("40{auth}")).await;
    assert_eq!(eio.packet().await, format!("40{}", json!({"sid": sid})));
    let hello = eio.event("connected").await;
    assert_eq!(hello["resumed"], false);

    // An event with an ack id gets its reply as the ack (and as an event).
    eio.ws
        .send_text(r#"427["heartbeat",{"timestamp":5}]"#)
        .await;
    let ack = loop {
        let packet = eio.packet().await;
        if let Some(body) = packet.strip_prefix("437") {
            break body.to_owned();
        }
    };
    let ack: Vec<Value> = serde_json::from_str(&ack).expect("ack JSON");
    assert_eq!(ack[0]["client_timestamp"], 5);

    eio.ws
        .send_text(r#"42["subscribe",{"channels":["quotes"]}]"#)
        .await;
    assert_eq!(
        eio.event("subscribed").await,
        json!({"channels": ["quotes"]})
    );
    assert!(eio.event("quotes").await["symbol"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn a_client_ping_gets_a_pong() {
    let app = spawn_app(&[]).await;
    let mut eio = Eio::open(&app, "", None).await;
    let auth = json!({"token": app.token("alice")});
    eio.ws.send_text(&format!("40{auth}")).await;
    assert!(eio.packet().await.starts_with("40"));
    eio.ws.send_text("2").await;
    loop {
        if eio.packet().await == "3" {
            break;
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn credentials_from_query_and_bearer_header_like_every_endpoint() {
    let app = spawn_app(&[]).await;
    let query = format!("&token={}", app.token("alice"));
    let mut by_query = Eio::open(&app, &query, None).await;
    by_query.ws.send_text("40").await;
    assert!(by_query.packet().await.starts_with("40{"));

    let bearer = format!("Bearer {}", app.token("bob"));
    let mut by_header = Eio::open(&app, "", Some(&bearer)).await;
    by_header.ws.send_text("40").await;
    assert!(by_header.packet().await.starts_with("40{"));
    app.stop().await;
}

#[tokio::test]
async fn a_bad_token_gets_a_connect_error_with_the_code() {
    let app = spawn_app(&[]).await;
    let mut eio = Eio::open(&app, "", None).await;
    eio.ws.send_text(r#"40{"token":"garbage"}"#).await;
    assert_eq!(eio.packet().await, r#"44{"message":"UNAUTHORIZED"}"#);
    app.stop().await;
}
