//! `/metrics` and `/health` for operators, on `INGESTOR_HTTP_ADDR`.
//!
//! `/metrics` is Prometheus text; `/health` is JSON with NATS's state and
//! every connected terminal, answering 503 while NATS is down so a load
//! balancer or orchestrator can tell.

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use bus::{Bus, BusHealth};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the handlers read.
#[derive(Clone)]
struct Ctx {
    /// The counters.
    metrics: Arc<Metrics>,
    /// For the NATS connection state.
    bus: Bus,
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    bus: Bus,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .with_state(Ctx { metrics, bus });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

fn nats_up(bus: &Bus) -> bool {
    bus.health() == BusHealth::Up
}

async fn metrics_text(State(ctx): State<Ctx>) -> impl IntoResponse {
    let body = ctx
        .metrics
        .render(nats_up(&ctx.bus), protocol::time::now_epoch_ms());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn health(State(ctx): State<Ctx>) -> impl IntoResponse {
    let up = nats_up(&ctx.bus);
    let body = ctx.metrics.health(up, protocol::time::now_epoch_ms());
    let status = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
