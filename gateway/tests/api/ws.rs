//! The plain WebSocket dialect on `/ws` and `/`.

use crate::support::{spawn_app, Read, Ws};
use serde_json::json;

#[tokio::test]
async fn a_token_in_the_query_gets_connected_then_data_after_subscribe() {
    let app = spawn_app(&[]).await;
    let url = app.ws_url(&format!("/ws?token={}", app.token("alice")));
    let mut ws = Ws::connect(&url, None).await;
    let hello = ws.event("connected").await;
    assert_eq!(hello["resumed"], false);
    assert_eq!(hello["session"].as_str().map(str::len), Some(32));
    ws.send_event("subscribe", json!({"channels": ["quotes"]}))
        .await;
    assert_eq!(
        ws.event("subscribed").await,
        json!({"channels": ["quotes"]})
    );
    let quote = ws.event("quotes").await;
    assert!(quote["symbol"].is_string(), "{quote}");
    ws.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_bearer_header_works_at_the_root_too() {
    let app = spawn_app(&[]).await;
    let bearer = format!("Bearer {}", app.token("alice"));
    let mut ws = Ws::connect(&app.ws_url("/"), Some(&bearer)).await;
    ws.event("connected").await;
    ws.send_event("heartbeat", json!({"timestamp": 42})).await;
    let ack = ws.event("heartbeat_ack").await;
    assert_eq!(ack["client_timestamp"], 42);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_token_gets_one_error_and_a_policy_close() {
    let app = spawn_app(&[]).await;
    let mut ws = Ws::connect(&app.ws_url("/ws?token=garbage"), None).await;
    let error: serde_json::Value = serde_json::from_str(&ws.text().await).unwrap();
    assert_eq!(error["event"], "error");
    assert_eq!(error["data"]["code"], "UNAUTHORIZED");
    assert_eq!(
        ws.read().await,
        Read::Close(Some((1008, "UNAUTHORIZED".into())))
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_stays() {
    let app = spawn_app(&[]).await;
    let url = app.ws_url(&format!("/ws?token={}", app.token("alice")));
    let mut ws = Ws::connect(&url, None).await;
    ws.event("connected").await;
    for bad in ["{", r#"["subscribe", {}]"#, r#"{"event": "nope"}"#] {
        ws.send_text(bad).await;
        let error = ws.event("error").await;
        assert_eq!(error["code"], "INVALID_PAYLOAD", "{bad}: {error}");
    }
    ws.send_event("subscribe", json!({"channels": ["logs", "bogus"]}))
        .await;
    assert_eq!(ws.event("error").await["code"], "UNKNOWN_CHANNEL");
    let subscribed = ws.event("subscribed").await;
    assert_eq!(subscribed["channels"], json!(["logs"]));
    assert!(subscribed["live_after"]["logs"].is_u64(), "{subscribed}");
    app.stop().await;
}

#[tokio::test]
async fn a_drain_says_goodbye_and_run_returns() {
    let app = spawn_app(&[]).await;
    let url = app.ws_url(&format!("/ws?token={}", app.token("alice")));
    let mut ws = Ws::connect(&url, None).await;
    ws.event("connected").await;
    app.shutdown.cancel();
    let bye = ws.event("disconnected").await;
    assert_eq!(bye, json!({"reason": "Server shutdown", "reconnect": true}));
    assert!(matches!(ws.read().await, Read::Close(Some((1001, _)))));
    ws.close().await;
    app.stop().await;
}
