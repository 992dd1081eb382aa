//! The HTTP policies that run before any token is checked: who the client
//! is (its address, from `X-Forwarded-For` only behind a trusted proxy),
//! how fast one address may open sessions, which `Host` and `Origin` a
//! browser may come from, the console page's security headers, and the
//! access log.
//!
//! Requests that open a session (an Engine.IO handshake without `sid`, a
//! WebSocket upgrade) are the expensive ones for an attacker to repeat:
//! each allocates a session and its buffers. They are limited per address
//! by rate (`HANDSHAKES_PER_SEC_PER_IP`, burst twice) and, for Engine.IO,
//! by how many may be waiting to authenticate (`MAX_PENDING_SESSIONS_PER_IP`
//! per `PENDING_SESSION_TIMEOUT_SECS`, after which an unauthenticated
//! session is closed). Over a limit: 429 with `Retry-After`, nothing
//! allocated.

use crate::app::AppState;
use crate::config::EdgeConfig;
use crate::observability::metrics;
use crate::transport::credentials::query_param;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::MonotonicClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The client's address as the edge limits see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The client's address: the peer, or, when the peer is a trusted proxy,
/// the right-most address of `X-Forwarded-For` that is not itself a
/// trusted proxy (the left part of the header is the client's to forge).
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, edge: &EdgeConfig) -> IpAddr {
    if !edge.is_trusted_proxy(peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        for part in text.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                Err(_) => return peer,
            }
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !edge.is_trusted_proxy(*ip))
        .unwrap_or(peer)
}

/// A per-address GCRA on the OS monotonic clock (see `session::limits`:
/// quanta's clock can go back between cores).
type PerAddress = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, MonotonicClock>;

/// Per-address limits on session-opening requests.
pub struct HandshakeLimits {
    /// Handshakes and upgrades per second per address.
    rate: PerAddress,
    /// Engine.IO sessions opened per pending-timeout window per address.
    pending: PerAddress,
}

impl HandshakeLimits {
    pub fn new(edge: &EdgeConfig) -> Self {
        let per_sec = NonZeroU32::new(edge.handshakes_per_sec_per_ip).unwrap_or(NonZeroU32::MIN);
        let burst = per_sec.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        let pending = NonZeroU32::new(edge.max_pending_sessions_per_ip).unwrap_or(NonZeroU32::MIN);
        let window = edge.pending_session_timeout().max(Duration::from_secs(1));
        let replenish = window / pending.get();
        let pending_quota = Quota::with_period(replenish.max(Duration::from_millis(1)))
            .unwrap_or_else(|| Quota::per_second(pending))
            .allow_burst(pending);
        HandshakeLimits {
            rate: RateLimiter::dashmap_with_clock(
                Quota::per_second(per_sec).allow_burst(burst),
                MonotonicClock,
            ),
            pending: RateLimiter::dashmap_with_clock(pending_quota, MonotonicClock),
        }
    }

    /// Forgets addresses whose buckets are full again (called every few
    /// seconds, so the maps stay as small as the set of recent clients).
    pub fn forget_idle(&self) {
        self.rate.retain_recent();
        self.pending.retain_recent();
        self.rate.shrink_to_fit();
        self.pending.shrink_to_fit();
    }
}

/// Resolves the client address (for the limits and the access log) and
/// applies the handshake limits to requests that open a session.
pub async fn limit_handshakes(
    State(app): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let Some(peer) = peer else {
        return next.run(request).await;
    };
    let ip = client_addr(peer, request.headers(), &app.config.edge);
    request.extensions_mut().insert(ClientAddr(ip));
    if super::middleware::opens_connection(&request) {
        let limits = &app.edge;
        if limits.rate.check_key(&ip).is_err() {
            metrics::edge_refused("handshakes_per_sec_per_ip");
            return too_many("too many new connections from this address");
        }
        let engine_io = request.uri().path().starts_with("/socket.io");
        if engine_io && limits.pending.check_key(&ip).is_err() {
            metrics::edge_refused("max_pending_sessions_per_ip");
            return too_many("too many unauthenticated sessions from this address");
        }
    }
    next.run(request).await
}

fn too_many(details: &'static str) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "1")],
        details,
    )
        .into_response()
}

/// The host part of a `Host` header or an origin's authority (no port,
/// no brackets, lower case).
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
        _ => a,
    }
}

/// Whether a request's `Host` names this gateway: an IP address,
/// `localhost`, or the host of one of `CORS_ORIGINS`. A DNS-rebinding page
/// reaches us under its own name, which is none of these.
pub fn host_allowed(host: Option<&HeaderValue>, origins: &[String]) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = host_name(host);
    if name.parse::<IpAddr>().is_ok() || name == "localhost" {
        return true;
    }
    origins.iter().any(|o| {
        let o = o.trim();
        o == "*"
            || o.split_once("://")
                .is_some_and(|(_, auth)| host_name(auth.trim_end_matches('/')) == name)
    })
}

/// Whether a browser's `Origin` may open a connection: one of
/// `CORS_ORIGINS`, or the same origin as the request (the console page),
/// whose `Host` [`host_allowed`] has already vouched for.
pub fn origin_allowed(
    origin: &HeaderValue,
    host: Option<&HeaderValue>,
    allowed: &[String],
) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    let same = host.and_then(|h| h.to_str().ok()).is_some_and(|h| {
        origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(h))
    });
    same || allowed
        .iter()
        .map(|a| a.trim().trim_end_matches('/'))
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// `Content-Security-Policy` of the console page: its own script, style and
/// connections only, never framed.
pub const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Adds the security headers to every response (harmless on JSON and on
/// upgrades, needed on the page).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONSOLE_CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// One `access` line per request: method, path (never the query, which
/// may carry a token), status, client address, duration. Every value is
/// written with `?` (escaped), so a path cannot forge a line.
pub async fn access_log(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if !app.config.edge.access_log {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let transport = query_param(request.uri().query(), "transport");
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| client_addr(c.0.ip(), request.headers(), &app.config.edge));
    let response = next.run(request).await;
    tracing::info!(
        target: "access",
        method = %method,
        path = ?path,
        transport = ?transport.as_deref().unwrap_or("-"),
        status = response.status().as_u16(),
        client = ?client,
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "access"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(trusted: &[&str]) -> EdgeConfig {
        let mut args = vec!["gateway".to_owned()];
        if !trusted.is_empty() {
            args.push(format!("--trusted-proxies={}", trusted.join(",")));
        }
        crate::config::Cli::from_args(args).unwrap().config.edge
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4"),
        );
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(client_addr(proxy, &h, &edge(&[])), proxy);
        let trusted = edge(&["10.0.0.0/8"]);
        // The right-most untrusted hop: what our proxy saw.
        assert_eq!(
            client_addr(proxy, &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 10.0.0.9"),
        );
        assert_eq!(
            client_addr(proxy, &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_addr(proxy, &h, &trusted), proxy);
        let stranger: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(client_addr(stranger, &h, &trusted), stranger);
    }

    #[test]
    fn host_policy_stops_rebinding() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        let none: Vec<String> = vec![];
        assert!(host_allowed(Some(&v("127.0.0.1:9090")), &none));
        assert!(host_allowed(Some(&v("[::1]:9090")), &none));
        assert!(host_allowed(Some(&v("localhost:9090")), &none));
        assert!(!host_allowed(Some(&v("rebind.example:9090")), &none));
        assert!(!host_allowed(None, &none));
        let dash = vec!["https://dash.example.com".to_owned()];
        assert!(host_allowed(Some(&v("dash.example.com")), &dash));
        assert!(host_allowed(Some(&v("DASH.example.com:443")), &dash));
        assert!(!host_allowed(Some(&v("evil.example")), &dash));
    }

    #[test]
    fn origin_policy() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        let host = v("127.0.0.1:9090");
        assert!(origin_allowed(
            &v("http://127.0.0.1:9090"),
            Some(&host),
            &[]
        ));
        assert!(!origin_allowed(&v("http://evil.example"), Some(&host), &[]));
        let list = vec!["https://dash.example".to_owned()];
        assert!(origin_allowed(
            &v("https://dash.example"),
            Some(&host),
            &list
        ));
        // The console page (same origin) still works with a list.
        assert!(origin_allowed(
            &v("http://127.0.0.1:9090"),
            Some(&host),
            &list
        ));
        assert!(!origin_allowed(
            &v("https://evil.example"),
            Some(&host),
            &list
        ));
        assert!(origin_allowed(
            &v("https://x.example"),
            None,
            &["*".to_owned()]
        ));
    }
}
