//! The HTTP surface: one axum router carrying Socket.IO (`/socket.io/`), the
//! plain WebSocket (`/`, `/ws`), the console page, health probes, metrics
//! and `/api/status`, behind the CORS, origin and draining policy
//! (`middleware`). Probes and status live in `probes`, the page in
//! `console`.

mod console;
mod middleware;
mod probes;

use crate::app::AppState;
use crate::transport::credentials::Credentials;
use crate::transport::{eio, ws};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use socketioxide::layer::SocketIoLayer;
use std::sync::Arc;

pub fn router(app: Arc<AppState>, socketio: SocketIoLayer) -> Router {
    let cors = middleware::cors_layer(&app.config.cors_origins);
    let router = Router::new()
        .route("/", get(root))
        .route("/ws", get(ws::upgrade))
        .route("/app.js", get(console::app_js))
        .route("/app.css", get(console::app_css))
        .route("/health/live", get(probes::live))
        .route("/health/ready", get(probes::ready))
        .route("/metrics", get(probes::prometheus))
        .route("/api/status", get(probes::status))
        .with_state(app.clone())
        .layer(socketio)
        .layer(from_fn_with_state(app.clone(), eio::intercept))
        .layer(from_fn_with_state(
            app.clone(),
            middleware::refuse_new_while_draining,
        ))
        .layer(from_fn_with_state(app, middleware::guard_origin));
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// `/` is the page for a browser and the plain WebSocket for wscat.
async fn root(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    credentials: Credentials,
    state: State<Arc<AppState>>,
) -> Response {
    match upgrade {
        Ok(upgrade) => ws::upgrade(upgrade, credentials, state).await,
        Err(_) => console::index().await.into_response(),
    }
}
