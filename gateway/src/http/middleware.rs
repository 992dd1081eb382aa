//! The policies in front of every route: CORS for cross-origin browsers,
//! the origin check on WebSocket and Socket.IO requests, and the 503s a
//! draining replica answers so that a load balancer tries another one.
//!
//! A draining replica answers 503 to every request that would open a new
//! connection (a WebSocket upgrade, an Engine.IO handshake without `sid`),
//! and to Engine.IO requests for sessions it does not hold (instead of
//! 400), so a load balancer hands them to another replica; requests of the
//! polling sessions it still has go through, so those clients get their
//! goodbye.

use crate::app::AppState;
use crate::transport::credentials::query_param;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<&String> = origins.iter().filter(|o| !o.trim().is_empty()).collect();
    if origins.is_empty() {
        return None;
    }
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    if origins.iter().any(|o| o.trim() == "*") {
        return Some(base.allow_origin(AllowOrigin::any()));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim().trim_end_matches('/')).ok())
        .collect();
    Some(base.allow_origin(list).allow_credentials(true))
}

/// While draining, new connections are refused with 503 (and `Retry-After`)
/// before any handshake, so the load balancer retries another replica.
/// Engine.IO requests for a session this replica does not hold (400,
/// "Session ID unknown") also become 503: a client whose session another
/// replica took while this one drains may be sent here by a balancer that
/// pins client addresses to replicas, and must be passed on, not failed.
pub async fn refuse_new_while_draining(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if !app.is_draining() {
        return next.run(request).await;
    }
    if opens_connection(&request) {
        return draining();
    }
    let engine_session = request.uri().path().starts_with("/socket.io");
    let response = next.run(request).await;
    if engine_session && response.status() == StatusCode::BAD_REQUEST {
        return draining();
    }
    response
}

fn draining() -> Response {
    let body = Json(json!({
        "error": "Server is draining",
        "details": "reconnect to another replica",
        "code": protocol::ErrorCode::UpstreamUnavailable,
    }));
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        body,
    )
        .into_response()
}

/// A WebSocket upgrade, or an Engine.IO request that starts a session (no
/// `sid` yet).
fn opens_connection(request: &Request) -> bool {
    let path = request.uri().path();
    if path.starts_with("/socket.io") {
        return query_param(request.uri().query(), "sid").is_none();
    }
    request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Browsers do not apply CORS to WebSocket upgrades, so a page on another
/// site could open one with a user's token. Refuse upgrades and Socket.IO
/// requests from origins that are neither this host nor allowed.
pub async fn guard_origin(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let guarded = path.starts_with("/socket.io") || path == "/" || path == "/ws";
    if guarded {
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            let host = request.headers().get(header::HOST);
            if !origin_allowed(origin, host, &app.config.cors_origins) {
                return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
            }
        }
    }
    next.run(request).await
}

fn origin_allowed(origin: &HeaderValue, host: Option<&HeaderValue>, allowed: &[String]) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    let same_host = host
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| origin.split_once("://").is_some_and(|(_, rest)| rest == h));
    same_host
        || allowed
            .iter()
            .any(|a| a.trim() == "*" || a.trim().trim_end_matches('/') == origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_connections_are_told_apart_from_live_ones() {
        let req = |uri: &str, upgrade: bool| {
            let mut b = axum::http::Request::builder().uri(uri);
            if upgrade {
                b = b.header(header::UPGRADE, "websocket");
            }
            b.body(axum::body::Body::empty()).unwrap()
        };
        assert!(opens_connection(&req(
            "/socket.io/?EIO=4&transport=polling",
            false
        )));
        assert!(opens_connection(&req(
            "/socket.io/?EIO=4&transport=websocket",
            true
        )));
        assert!(!opens_connection(&req(
            "/socket.io/?EIO=4&transport=polling&sid=abc",
            false
        )));
        assert!(!opens_connection(&req(
            "/socket.io/?EIO=4&transport=websocket&sid=abc",
            true
        )));
        assert!(opens_connection(&req("/ws?token=x", true)));
        assert!(opens_connection(&req("/?token=x", true)));
        assert!(!opens_connection(&req("/health/ready", false)));
        assert!(!opens_connection(&req("/", false)));
    }

    #[test]
    fn origin_policy() {
        let o = |s: &'static str| HeaderValue::from_static(s);
        let host = o("127.0.0.1:9090");
        assert!(origin_allowed(
            &o("http://127.0.0.1:9090"),
            Some(&host),
            &[]
        ));
        assert!(!origin_allowed(&o("http://evil.example"), Some(&host), &[]));
        let list = vec!["https://dash.example".to_owned()];
        assert!(origin_allowed(
            &o("https://dash.example"),
            Some(&host),
            &list
        ));
        assert!(origin_allowed(
            &o("https://x.example"),
            None,
            &["*".to_owned()]
        ));
    }
}
