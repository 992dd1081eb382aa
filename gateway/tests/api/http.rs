//! Probes, status and the console page.

use crate::support::{get, spawn_app};
use serde_json::Value;

#[tokio::test]
async fn probes_and_the_page() {
    let app = spawn_app(&[]).await;
    assert_eq!(get(&app, "/health/live", &[]).await, (200, "ok".into()));
    let (status, body) = get(&app, "/health/ready", &[]).await;
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["redis"], "disabled");
    let (status, page) = get(&app, "/", &[]).await;
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "the console page");
    let (status, metrics) = get(&app, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("gateway_up{replica=\""), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn status_needs_a_token_from_the_query_or_a_bearer_header() {
    let app = spawn_app(&[]).await;
    let (status, body) = get(&app, "/api/status", &[]).await;
    assert_eq!(status, 401);
    assert!(body.contains("UNAUTHORIZED"), "{body}");
    let token = app.token("alice");
    let (status, body) = get(&app, &format!("/api/status?token={token}"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {token}");
    let (status, body) = get(&app, "/api/status", &[("Authorization", &bearer)]).await;
    assert_eq!(status, 200, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["mode"], "standalone");
    assert_eq!(status["draining"], false);
    app.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_cannot_open_a_websocket() {
    let app = spawn_app(&[]).await;
    let (status, _) = get(
        &app,
        "/ws",
        &[
            ("Origin", "http://evil.example"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    app.stop().await;
}
