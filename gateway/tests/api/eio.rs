//! Our Engine.IO v4 / Socket.IO v5 path (the fast path), over a WebSocket
//! and over long-polling: handshake, namespace connect with auth, pings,
//! events with acks, and a drain that ends polling sessions.

use crate::support::{request, spawn_app, within, Eio};
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

/// A polling session: the handshake offers the upgrade, a CONNECT and an
/// event in one POST are handled in order (the event's ack comes after
/// the CONNECT answer and the greeting), and a drain answers a waiting GET
/// with the goodbye and `1` and lets the gateway stop in time.
#[tokio::test]
async fn polling_session_and_drain() {
    let app = spawn_app(&[]).await;
    let (status, open) = request(
        app.addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{open}");
    let open: Value = serde_json::from_str(open.strip_prefix('0').expect("open packet"))
        .expect("open packet JSON");
    assert_eq!(open["upgrades"], json!(["websocket"]));
    let path = format!(
        "/socket.io/?EIO=4&transport=polling&sid={}",
        open["sid"].as_str().expect("sid")
    );
    let auth = json!({"token": app.token("alice")});
    let body = format!("40{auth}\u{1e}427[\"heartbeat\",{{\"timestamp\":5}}]");
    assert_eq!(
        request(app.addr, "POST", &path, &[], &body).await,
        (200, "ok".to_owned())
    );
    let mut packets: Vec<String> = Vec::new();
    while !packets.iter().any(|p| p.starts_with("437[")) {
        let (status, body) = request(app.addr, "GET", &path, &[], "").await;
        assert_eq!(status, 200, "{body}");
        packets.extend(body.split('\u{1e}').map(str::to_owned));
    }
    assert!(packets[0].starts_with("40{"), "{packets:?}");
    assert!(packets[1].starts_with("42[\"connected\""), "{packets:?}");

    let waiting = {
        let addr = app.addr;
        let path = path.clone();
        tokio::spawn(async move { request(addr, "GET", &path, &[], "").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    app.shutdown.cancel();
    let (status, body) = within("the waiting GET", waiting)
        .await
        .expect("the GET task");
    assert_eq!(status, 200, "{body}");
    // The goodbye, then `41` and the close packet, over as many GETs as
    // the client needs.
    let mut packets: Vec<String> = body.split('\u{1e}').map(str::to_owned).collect();
    while packets.last().map(String::as_str) != Some("1") {
        let (status, body) = request(app.addr, "GET", &path, &[], "").await;
        assert_eq!(status, 200, "{body}; so far {packets:?}");
        packets.extend(body.split('\u{1e}').map(str::to_owned));
    }
    assert!(
        packets.iter().any(|p| p.starts_with("42[\"disconnected\"")),
        "{packets:?}"
    );
    assert_eq!(packets[packets.len() - 2], "41", "{packets:?}");
    app.stop().await;
}
