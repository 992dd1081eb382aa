//! Health probes (`/health/live`, `/health/ready`), Prometheus metrics
//! and the console's `/api/status`.

use crate::app::AppState;
use crate::observability::metrics;
use crate::transport::credentials::Credentials;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bus::BusHealth;
use serde_json::json;
use std::sync::Arc;

pub async fn live() -> &'static str {
    "ok"
}

pub async fn ready(State(app): State<Arc<AppState>>) -> Response {
    let bus = app.bus_health() == BusHealth::Up;
    let draining = app.is_draining();
    // Redis is reported but does not fail readiness: without it a replica
    // still serves (sessions just cannot resume), and failing every
    // replica at once would turn a degraded service into an outage.
    let body = Json(json!({
        "ready": bus && !draining,
        "bus": health_word(bus),
        "redis": app.sessions.store.health().word(),
        "draining": draining,
    }));
    if bus && !draining {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

pub async fn prometheus() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(),
    )
        .into_response()
}

/// What the console's status strip shows; needs a valid token.
pub async fn status(State(app): State<Arc<AppState>>, credentials: Credentials) -> Response {
    if let Err(e) = app.verifier.verify(&credentials.token) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Authentication failed", "details": e.to_string(), "code": e.code()})),
        )
            .into_response();
    }
    let nats = match (&app.bus, app.bus_health()) {
        (bus::Bus::Memory(_), _) => "disabled",
        (_, BusHealth::Up) => "up",
        (_, BusHealth::Down) => "down",
    };
    Json(json!({
        "replica": app.replica_id,
        "clients": app.sessions.registry.count(),
        "nats": nats,
        "redis": app.sessions.store.health().word(),
        "mode": if app.config.standalone { "standalone" } else { "nats" },
        "uptime_s": app.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "draining": app.is_draining(),
    }))
    .into_response()
}

fn health_word(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}
